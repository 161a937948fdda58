// The baseline of the fan-out benchmark (tests/benches/fanout.rs): a Node.js `ws` server written
// after the seed article, broadcasting every message it receives to every client,
// `wss.clients.forEach(c => c.send(m))`. Debian's node-ws; PORT (default 8080).
'use strict';
module.paths.push('/usr/share/nodejs');
const WebSocket = require('ws');

const wss = new WebSocket.Server({ host: '127.0.0.1', port: Number(process.env.PORT || 8080) });
wss.on('connection', (ws) => {
  ws.on('message', (m) => wss.clients.forEach((c) => c.send(m.toString())));
});
wss.on('listening', () => console.log(`listening on 127.0.0.1:${wss.address().port}`));
