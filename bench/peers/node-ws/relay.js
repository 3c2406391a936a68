// A minimal broadcast relay on the Node `ws` package: every text or binary
// message goes, verbatim, to every other open connection. No rooms, no
// envelope, no acks: the same job as examples/relay.rs, for bench/fanout.sh.
//
//   node bench/peers/node-ws/relay.js 127.0.0.1:9001
'use strict';
const { WebSocketServer, WebSocket } = require('ws');

const [host, port] = (process.argv[2] || '127.0.0.1:9001').split(':');
const wss = new WebSocketServer({ host, port: Number(port), perMessageDeflate: false, clientTracking: true });

wss.on('connection', (ws) => {
  ws.on('error', () => ws.terminate());
  ws.on('message', (data, isBinary) => {
    for (const other of wss.clients) {
      if (other !== ws && other.readyState === WebSocket.OPEN) {
        other.send(data, { binary: isBinary });
      }
    }
  });
});
wss.on('listening', () => console.error(`node ws relay listening on ws://${host}:${wss.address().port}/`));
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => process.exit(0));
}
