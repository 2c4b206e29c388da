// sse-times.mjs — measures when the events of a Server-Sent Events response
// arrive, to tell a streaming web-server configuration from a buffering one.
//
//   node sse-times.mjs URL [--post JSON] [--events N | --min-events N]
//                          [--min-spread MS] [--max-spread MS] [--stop-after N]
//
// GETs URL (or POSTs the JSON body) and prints one line: status, content
// type, and each event's arrival time in ms since the request was sent (and
// the sender's own "sent_ms" when the event carries one). Exits 0 when
// exactly N (or at least N) events arrived, every "data:" line is JSON, and
// the first-to-last arrival spread is within [min, max] (defaults: no
// bounds); 1 otherwise, saying why. --stop-after N disconnects after N
// events (the web server's streaming is then measured on those alone).
const url = process.argv[2];
const opt = (name, def) => {
  const i = process.argv.indexOf(name);
  return i > 0 ? Number(process.argv[i + 1]) : def;
};
const want = opt('--events', -1), minEvents = opt('--min-events', 1), minSpread = opt('--min-spread', -1), maxSpread = opt('--max-spread', Infinity);

const stopAfter = opt('--stop-after', Infinity);
const t0 = performance.now();
const fail = (msg) => { console.log(msg); process.exit(1); };
const ac = new AbortController();
setTimeout(() => ac.abort(), Number(process.env.SSE_TIMES_TIMEOUT_MS || 20000)).unref();

let res;
try {
  const i = process.argv.indexOf('--post');
  res = await fetch(url, i > 0
    ? { method: 'POST', body: process.argv[i + 1], signal: ac.signal,
        headers: { accept: 'text/event-stream', 'content-type': 'application/json' } }
    : { signal: ac.signal, headers: { accept: 'text/event-stream' } });
} catch (e) { fail(`request failed: ${e.message}`); }

const arrivals = [];
let buf = '';
const dec = new TextDecoder();
try {
  for await (const chunk of res.body) {
    const now = Math.round(performance.now() - t0);
    buf += dec.decode(chunk, { stream: true });
    let k;
    while ((k = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, k);
      buf = buf.slice(k + 2);
      const data = block.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trim());
      if (!data.length) continue;          // a comment (heartbeat) or id-only block
      let parsed;
      try { parsed = JSON.parse(data.join('\n')); } catch { fail(`data is not JSON: ${data.join('\\n')}`); }
      arrivals.push({ at: now, sent: parsed?.sent_ms });
      if (arrivals.length >= stopAfter) break;
    }
    if (arrivals.length >= stopAfter) { ac.abort(); break; }
  }
} catch (e) {
  if (arrivals.length < stopAfter) fail(`stream broke after ${arrivals.length} events: ${e.message}`);
}

const spread = arrivals.length ? arrivals[arrivals.length - 1].at - arrivals[0].at : 0;
const line = `status ${res.status} ${res.headers.get('content-type')}; arrivals (ms) ` +
  arrivals.map((a) => (a.sent === undefined ? `${a.at}` : `${a.at} (sent ${a.sent})`)).join(', ') +
  `; spread ${spread} ms`;
console.log(line);
if (res.status !== 200) process.exit(1);
if (want >= 0 && arrivals.length !== want) fail(`expected ${want} events, got ${arrivals.length}`);
if (arrivals.length < minEvents) fail(`expected at least ${minEvents} events, got ${arrivals.length}`);
if (spread < minSpread) fail(`events arrived bunched together (spread ${spread} < ${minSpread} ms): the server buffered the stream`);
if (spread > maxSpread) fail(`spread ${spread} > ${maxSpread} ms`);
