// ws-ticket.mjs — a seed 000 ticket answer over WebSocket, through a web
// server's proxy to the real bridge (parley-ws), timed like sse-times.mjs.
//
//   node ws-ticket.mjs ws://127.0.0.1:PORT/api/websocket/chat/TICKET BODY \
//        [--stop-after N] [--min-spread MS] [--max-spread MS]
//
// Sends {"ticketBody": BODY} once open, records when each "stream" message
// arrives, and leaves after N of them (default: at "done"). Prints one line;
// exits 0 when N stream messages arrived within the spread bounds, 1
// otherwise (an "error" message, a close, a timeout), saying why.
import WebSocket from 'ws';

const [url, body] = process.argv.slice(2);
const opt = (name, def) => {
  const i = process.argv.indexOf(name);
  return i > 0 ? Number(process.argv[i + 1]) : def;
};
const stopAfter = opt('--stop-after', Infinity), minSpread = opt('--min-spread', -1),
  maxSpread = opt('--max-spread', Infinity);

const t0 = performance.now();
const arrivals = [];
const seen = [];
const ws = new WebSocket(url);
const fail = (msg) => { console.log(`${msg}; messages: ${seen.join(', ')}`); process.exit(1); };
setTimeout(() => fail('timeout'), 20000).unref();

function finish() {
  const spread = arrivals.length ? arrivals[arrivals.length - 1] - arrivals[0] : 0;
  console.log(`${arrivals.length} stream messages at (ms) ${arrivals.join(', ')}; spread ${spread} ms`);
  ws.terminate();
  if (spread < minSpread) fail(`bunched together (spread ${spread} < ${minSpread} ms): the proxy buffered`);
  if (spread > maxSpread) fail(`spread ${spread} > ${maxSpread} ms`);
  process.exit(0);
}

ws.on('open', () => ws.send(JSON.stringify({ ticketBody: body })));
ws.on('message', (raw) => {
  let m;
  try { m = JSON.parse(raw.toString()); } catch { fail(`not JSON: ${raw}`); }
  seen.push(m.type);
  if (m.type === 'stream') {
    arrivals.push(Math.round(performance.now() - t0));
    if (arrivals.length >= stopAfter) finish();
  } else if (m.type === 'done') {
    if (arrivals.length < Math.min(stopAfter, 1)) fail('done before any stream message');
    finish();
  } else if (m.type === 'error') {
    fail(`error: ${m.message}`);
  }
});
ws.on('unexpected-response', (req, res) => fail(`HTTP ${res.statusCode} instead of an upgrade`));
ws.on('error', (e) => fail(`connection error: ${e.message}`));
ws.on('close', (code) => fail(`closed (${code}) after ${arrivals.length} stream messages`));
