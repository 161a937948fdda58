// The client side of ebb's chat app (`ebb-node --app chat`), in Node.js with Debian's node-ws
// (the same code runs in a browser with its own WebSocket). It resumes on any node from the
// last seq it has, so a rolling restart loses it nothing and repeats nothing:
//
//   node examples/chat/client.js ws://127.0.0.1:8080/ws,ws://127.0.0.1:8081/ws lobby ann
//
// Lines typed on stdin are posted; every room message is printed as `seq name: text`.
'use strict';
module.paths.push('/usr/share/nodejs');
const WebSocket = require('ws');

const [urls, room, me] = [process.argv[2].split(','), process.argv[3], process.argv[4]];
let last = null;          // the last seq we have
let next = 0;             // our next post's number
const unacked = new Map(); // id -> text, resent after a reconnect

function connect(attempt) {
  const after = last === null ? '' : `&after=${last}`;
  const ws = new WebSocket(`${urls[attempt % urls.length]}?room=${room}${after}`);
  ws.on('open', () => unacked.forEach((text, id) => ws.send(JSON.stringify({ id, text }))));
  ws.on('message', (data) => {
    const m = JSON.parse(data);
    if (m.ack !== undefined) return unacked.delete(m.ack);
    if (m.gap_from !== undefined) return console.log(`(messages before ${m.gap_from} are gone)`);
    if (m.seq !== undefined && (last === null || m.seq > last)) {
      last = m.seq;
      console.log(`${m.seq} ${m.id.split('-')[0]}: ${m.text}`);
    }
  });
  ws.on('close', () => setTimeout(() => connect(attempt + 1), 100 + Math.random() * 400));
  ws.on('error', () => {});
  client.ws = ws;
}

const client = { ws: null };
connect(0);
require('readline').createInterface({ input: process.stdin }).on('line', (text) => {
  const id = `${me}-${next++}`;
  unacked.set(id, text);
  if (client.ws.readyState === WebSocket.OPEN) client.ws.send(JSON.stringify({ id, text }));
});
