// body-limit.mjs — a request body over Parley's limit (1 MB, HTTP_MAX_BODY)
// gets the API's own 413 answer, {"success":false,"message":...} as JSON,
// whichever web server setup is in front (issue 8 defect g: a 10 MB body
// got Apache's HTML 500 from FcgidMaxRequestLen). Run by
// tests/integration/t0535-body-limit.sh with PARLEY_BASE, PARLEY_SETUP and
// BODY_LIMIT (the setup's limit: Parley's 1 MB, or on shared hosting the
// host's default FcgidMaxRequestLen, 128 KB, which only the host can raise).
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { test } from 'node:test';

const BASE = process.env.PARLEY_BASE;
const SETUP = process.env.PARLEY_SETUP || '?';
const LIMIT = Number(process.env.BODY_LIMIT || 1024 * 1024);
// Shared hosting: a body of unknown length (chunked) cannot be checked
// before mod_fcgid buffers it into its 500, so the .htaccess refuses it
// with 411 (JSON too) and asks for a Content-Length.
const CHUNKED_STATUS = SETUP === 'htaccess' ? 411 : 413;
if (!BASE) throw new Error('PARLEY_BASE must be set');

// POST body (a Buffer) to path; chunked: no Content-Length. Resolves with
// { status, type, text } — also when the server answers before it has
// read the whole body and closes (EPIPE/ECONNRESET after the answer).
function post(path, body, { chunked = false } = {}) {
  return new Promise((resolve, reject) => {
    const u = new URL(path, BASE);
    const headers = { 'Content-Type': 'application/json' };
    if (!chunked) headers['Content-Length'] = body.length;
    const req = request({ host: u.hostname, port: u.port, path: u.pathname, method: 'POST', headers,
      timeout: 60000 });
    let answered = null;
    req.on('response', (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { text += d; });
      res.on('end', () => { answered = { status: res.statusCode, type: res.headers['content-type'] || '', text }; resolve(answered); });
      res.on('error', (e) => (answered ? null : reject(e)));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (e) => { if (!answered) reject(e); });
    // write in pieces, as a browser upload would; stop when answered
    const piece = 64 * 1024;
    let off = 0;
    const more = () => {
      while (off < body.length && !answered && !req.destroyed) {
        const ok = req.write(body.subarray(off, off + piece));
        off += piece;
        if (!ok) { req.once('drain', more); return; }
      }
      if (!req.destroyed) req.end();
    };
    more();
  });
}

// A JSON body of exactly n bytes.
function jsonBody(n) {
  const overhead = JSON.stringify({ conversationId: 'c', content: '' }).length;
  return Buffer.from(JSON.stringify({ conversationId: 'c', content: 'x'.repeat(n - overhead) }));
}

function assert413(r, what, status = 413) {
  assert.equal(r.status, status, `${what}: ${r.status} ${r.type} ${r.text.slice(0, 300)}`);
  assert.match(r.type, /^application\/json/, `${what}: Content-Type ${r.type}: ${r.text.slice(0, 300)}`);
  const j = JSON.parse(r.text);
  assert.equal(j.success, false, r.text);
  assert.equal(typeof j.message, 'string');
  assert.match(j.message, status === 413 ? /too large/i : /Content-Length/, r.text);
}

for (const [name, size] of [['10 MB', 10 * 1024 * 1024], ['3 MB', 3 * 1024 * 1024], ['1.5 MB', 1536 * 1024],
  ['limit + 1 byte', LIMIT + 1]]) {
  test(`${SETUP}: a ${name} body gets the API's 413 JSON`, async () => {
    assert413(await post('/api/chat/send', jsonBody(size)), name);
  });
}

test(`${SETUP}: a 10 MB body to another API path (/api/chat/sessions) gets the 413 JSON too`, async () => {
  assert413(await post('/api/chat/sessions', jsonBody(10 * 1024 * 1024)), '/api/chat/sessions');
});

test(`${SETUP}: a 10 MB chunked body (no Content-Length) gets the ${CHUNKED_STATUS} JSON`, async () => {
  assert413(await post('/api/chat/send', jsonBody(10 * 1024 * 1024), { chunked: true }), 'chunked',
    CHUNKED_STATUS);
});

test(`${SETUP}: a body of exactly the limit still reaches Parley (not a 413)`, async () => {
  const r = await post('/api/chat/send', jsonBody(LIMIT));
  assert.equal(jsonBody(LIMIT).length, LIMIT);
  assert.notEqual(r.status, 413, r.text.slice(0, 300));
  assert.notEqual(r.status, 500, r.text.slice(0, 300));
  assert.match(r.type, /^application\/json/, r.text.slice(0, 300));
});
