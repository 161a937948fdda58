// A WebSocket server written after the seed article ("graceful shutdown of WebSocket servers"),
// in Node.js with Debian's `ws` package (apt-get install node-ws): an echo, a /health endpoint
// with the live connection count, and a graceful drain on SIGTERM. Nothing in it knows ebb:
// `ebb-agent` registers it and drains it on command (see the README, "Any WebSocket server").
//
//   PORT=8080 node examples/node-ws/server.js
//   ebb-agent --name app-1 --advertise-url ws://127.0.0.1:8080/ \
//             --health-url http://127.0.0.1:8080/health -- node examples/node-ws/server.js
//
// PORT and HOST (default 127.0.0.1) say where it listens. Also: GET /metrics (Prometheus
// text, `app_connections`) and POST /drain (the same drain as SIGTERM), for ebb-agent's
// --metrics-url and --drain-url. For the tests: HEALTH_GARBAGE=1 makes /health answer
// something that is not a count; IGNORE_SIGTERM=1 leaves POST /drain (or the agent's
// --drain-deadline) as the only way to end it.
'use strict';
module.paths.push('/usr/share/nodejs'); // where Debian's node-ws lives
const http = require('http');
const WebSocket = require('ws');

const PORT = Number(process.env.PORT || 8080);
const HOST = process.env.HOST || '127.0.0.1';
const CLOSE_TIMEOUT_MS = 5000;
const clients = new Set();
let shuttingDown = false;

const httpServer = http.createServer((req, res) => {
  if (req.url === '/metrics') {
    res.writeHead(200, { 'Content-Type': 'text/plain; version=0.0.4' });
    return res.end(`# TYPE app_connections gauge\napp_connections ${clients.size}\n`);
  }
  if (req.url === '/drain' && req.method === 'POST') {
    res.writeHead(202);
    res.end();
    return gracefulShutdown('POST /drain');
  }
  if (req.url !== '/health') {
    res.writeHead(404);
    return res.end();
  }
  if (process.env.HEALTH_GARBAGE) {
    res.writeHead(200, { 'Content-Type': 'application/json' });
    return res.end('{"status":"healthy","connections":"lots"}');
  }
  const body = JSON.stringify({
    status: shuttingDown ? 'draining' : 'healthy',
    connections: clients.size,
  });
  res.writeHead(shuttingDown ? 503 : 200, { 'Content-Type': 'application/json' });
  res.end(body);
});

const wss = new WebSocket.Server({ server: httpServer });
wss.on('connection', (ws) => {
  if (shuttingDown) {
    return ws.close(1001, 'Server is shutting down');
  }
  clients.add(ws);
  ws.on('message', (message) => ws.send(`Echo: ${message}`));
  ws.on('close', () => clients.delete(ws));
  ws.on('error', () => clients.delete(ws));
});

function closeGracefully(ws) {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      ws.terminate();
      resolve();
    }, CLOSE_TIMEOUT_MS);
    ws.once('close', () => {
      clearTimeout(timer);
      resolve();
    });
    ws.close(1001, 'Server is shutting down');
  });
}

async function gracefulShutdown(signal) {
  if (shuttingDown) return;
  shuttingDown = true;
  console.error(`received ${signal}: draining ${clients.size} client(s)`);
  // The listener closes first, as in the article: /health stops answering from here on.
  httpServer.close();
  await Promise.allSettled([...clients].map(closeGracefully));
  console.error('all clients closed; exiting');
  process.exit(0);
}

process.on('SIGTERM', () => process.env.IGNORE_SIGTERM || gracefulShutdown('SIGTERM'));
process.on('SIGINT', () => gracefulShutdown('SIGINT'));
httpServer.listen(PORT, HOST, () => console.error(`listening on ${HOST}:${PORT}`));
