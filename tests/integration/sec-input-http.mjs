// sec-input-http.mjs — the HTTP client of sec-input.mjs and
// sec-input-scale.mjs (node:http, not fetch).
//
// Why not fetch: its pool reuses a kept-alive connection that may have sat
// idle as long as the web server's keep-alive timeout (lighttpd: 5 s); on
// a loaded machine the server's close and the next request cross, and a
// POST then fails with "other side closed" (seen: 974 bytes written, 440
// read — the second request on a connection after one answer). So here a
// request that changes something (POST) always has a connection of its
// own; GET and DELETE (idempotent, RFC 9110 9.2.2) share kept-alive
// connections and are sent again once when a reused one turns out closed.
import { Agent, request } from 'node:http';

const shared = new Agent({ keepAlive: true, maxSockets: 64 });

function once(url, { method, headers, body, agent, timeoutMs }) {
  return new Promise((resolve, reject) => {
    const h = { ...headers };
    if (body !== undefined) h['Content-Length'] = Buffer.byteLength(body);
    const req = request(url, { method, headers: h, agent, timeout: timeoutMs }, (res) => {
      const chunks = [];
      res.on('data', (d) => chunks.push(d));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, text: Buffer.concat(chunks).toString('utf8'),
        reused: req.reusedSocket }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(Object.assign(new Error(`no answer within ${timeoutMs} ms`), { code: 'TIMEOUT' })));
    req.on('error', (e) => { e.reused = req.reusedSocket; reject(e); });
    req.end(body);
  });
}

// One request: { status, type, text, json }. body: a string or Buffer.
export async function httpCall(url, { method = 'GET', headers = {}, body, timeoutMs = 60000 } = {}) {
  const idem = method === 'GET' || method === 'DELETE' || method === 'HEAD';
  for (let attempt = 1; ; attempt++) {
    let r;
    try {
      r = await once(url, { method, headers, body, agent: idem ? shared : false, timeoutMs });
    } catch (e) {
      if (idem && attempt === 1 && e.reused && ['ECONNRESET', 'EPIPE'].includes(e.code)) {
        process.stderr.write(`# ${method} ${String(url).slice(0, 100)}: ${e.code} on a reused connection, sent again\n`);
        continue;
      }
      throw new Error(`${method} ${String(url).slice(0, 140)}: ${e.message} (${e.code})`);
    }
    let json = null;
    try { json = JSON.parse(r.text); } catch { /* not JSON */ }
    return { status: r.status, type: r.headers['content-type'] || '', text: r.text, json, headers: r.headers };
  }
}

// Closes the kept-alive connections (at the end of a file).
export function httpClose() { shared.destroy(); }
