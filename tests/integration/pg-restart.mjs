// pg-restart.mjs — a seed 000 ticket over WebSocket while PostgreSQL
// restarts (t0790-two-nodes.sh restarts it once this prints "streaming").
//
//   node pg-restart.mjs ws://127.0.0.1:PORT/api/websocket/chat/TICKET BODY TIMEOUT_MS
//
// Prints "streaming" at the first stream frame, then one JSON line when the
// ticket ends: {"end": "done"|"error"|"closed"|"timeout", "message", "ms"
// (from "streaming" to the end), "streams" (stream frames seen)}. Exit 0
// unless the client itself failed (bad arguments, no connection).
import WebSocket from 'ws';

const [url, body, limit] = process.argv.slice(2);
if (!url || !body) { console.error('usage: pg-restart.mjs URL BODY [TIMEOUT_MS]'); process.exit(2); }
let t0 = 0, streams = 0, over = false;
const finish = (end, message = '') => {
  if (over) return;
  over = true;
  console.log(JSON.stringify({ end, message, ms: t0 ? Date.now() - t0 : -1, streams }));
  ws.terminate();
  process.exit(0);
};
setTimeout(() => finish('timeout'), Number(limit || 60000)).unref();
const ws = new WebSocket(url);
ws.on('open', () => ws.send(JSON.stringify({ ticketBody: body })));
ws.on('message', (raw) => {
  const m = JSON.parse(raw.toString());
  if (m.type === 'stream') {
    if (!streams++) { t0 = Date.now(); console.log('streaming'); }
  } else if (m.type === 'done') finish('done');
  else if (m.type === 'error') finish('error', m.message);
});
ws.on('close', (code) => finish('closed', `close ${code}`));
ws.on('error', (e) => { console.error(`connection error: ${e.message}`); process.exit(1); });
