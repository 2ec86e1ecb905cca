// Speaks to a netpoll echo engine with the npm "ws" client: connect, send a
// text message and check the echo, ping and check the pong, then close with
// 1000 and check that the server echoes it. Exit code 0 means all held.
'use strict';
const WebSocket = require('ws');

const url = process.argv[2];
if (!url) {
  console.error('usage: node client.js ws://host:port/path');
  process.exit(2);
}
const fail = (msg) => {
  console.error('FAIL: ' + msg);
  process.exit(1);
};
setTimeout(() => fail('timeout'), 10000).unref();

const ws = new WebSocket(url);
const message = 'hello from node ✓';
const pingPayload = Buffer.from('node-ping');
let step = 'open';

ws.on('error', (err) => fail(`error during ${step}: ${err.message}`));
ws.on('open', () => {
  step = 'echo';
  ws.send(message);
});
ws.on('message', (data, isBinary) => {
  if (step !== 'echo') fail(`unexpected message during ${step}`);
  if (isBinary || data.toString() !== message) fail(`echo mismatch: ${data}`);
  step = 'pong';
  ws.ping(pingPayload);
});
ws.on('pong', (data) => {
  if (step !== 'pong') return; // server heartbeats are pings, not pongs
  if (!data.equals(pingPayload)) fail(`pong payload ${data}`);
  step = 'close';
  ws.close(1000, 'bye');
});
ws.on('close', (code) => {
  if (step !== 'close') fail(`closed during ${step} with ${code}`);
  if (code !== 1000) fail(`close code ${code}`);
  console.log('OK echo ping close');
  process.exit(0);
});
