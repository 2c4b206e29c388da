// tenant.mjs — tickets scoped to a tenant (docs/tenants.md, issue 13 item 4)
// through a real web server with PARLEY_TENANT_CLAIM=org and
// PARLEY_ADMIN_CLAIM=role=helpdesk-admin, run by t0890-tenant.sh once per
// setup. Users of two tenants (org "acme" and "globex") use ONE ticket id
// on every transport that serves seed 000 — WebSocket (the bridge behind the
// server's proxy), long-poll (/api/poll), REST and SSE (parley.fcgi) — and
// never see each other's answer; the simulated LLM's request log shows one
// upstream request per tenant.
//
//   BASE=http://127.0.0.1:PORT FAKE_LLM_URL=... SECRET=... RUN=tag \
//     node --test --test-reporter=tap tests/integration/tenant.mjs
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { api as apiCall, connect } from '../node/clients.mjs';

const BASE = process.env.BASE;
const WS = BASE.replace(/^http/, 'ws');
const FAKE = process.env.FAKE_LLM_URL;
const SECRET = process.env.SECRET;
const RUN = process.env.RUN || `r${process.pid}`;
const SLOWLY = '[[fake tokens=600 token_ms=10]]';

// An HS256 JWT for sub with claims, valid an hour.
function jwt(sub, claims = {}) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const head = b64({ alg: 'HS256', typ: 'JWT' });
  const body = b64({ sub, exp: Math.floor(Date.now() / 1000) + 3600, ...claims });
  const sig = createHmac('sha256', SECRET).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}
const ACME_1 = jwt('alice', { org: 'acme' });
const ACME_2 = jwt('carol', { org: 'acme' });
const ACME_ADMIN = jwt('anna', { org: 'acme', role: 'helpdesk-admin' });
const GLOBEX_1 = jwt('bob', { org: 'globex' });
const GLOBEX_2 = jwt('dave', { org: 'globex' });
const GLOBEX_ADMIN = jwt('gina', { org: 'globex', role: 'helpdesk-admin' });
const GLOBEX_ROOT = jwt('root', { org: 'globex', role: 'admin' });
const NO_ORG = jwt('eve');
const NUM_ORG = jwt('mallory', { org: 42 });
const api = (method, path, token, body) => apiCall(BASE, method, path, { token, body });

async function fakeRequests(tag) {
  const r = await fetch(`${FAKE}/_fake/requests`);
  return (await r.json()).requests.filter((q) => q.prompt?.startsWith(tag));
}
const count = (msgs, type) => msgs.filter((m) => m.type === type).length;
const has = (type) => (msgs) => msgs.some((m) => m.type === type);
const ended = (m) => m.some((x) => x.type === 'done' || x.type === 'error');
const text = (msgs) => msgs.filter((m) => m.type === 'stream').map((m) => m.content).join('')
  + msgs.filter((m) => m.type === 'cached').map((m) => m.response).join('');

// A long-poll client for path with a token (Authorization: Bearer).
class Poll {
  constructor(path, token) { this.path = path; this.token = token; this.cursor = 0; this.msgs = []; }
  h(extra = {}) { return { authorization: `Bearer ${this.token}`, ...extra }; }
  async open() {
    const r = await apiCall(BASE, 'POST', '/api/poll/open', { token: this.token, body: { path: this.path } });
    assert.equal(r.status, 200, r.text);
    this.sid = r.json.sid;
  }
  async send(frame) {
    const r = await fetch(`${BASE}/api/poll/${this.sid}`, { method: 'POST',
      headers: this.h({ 'content-type': 'application/json' }), body: JSON.stringify(frame) });
    assert.equal(r.status, 202, await r.clone().text());
  }
  async until(pred, ms = 15000) {
    const t0 = Date.now();
    while (!pred(this.msgs)) {
      assert.ok(Date.now() - t0 < ms, `long-poll timeout; got ${JSON.stringify(this.msgs).slice(0, 1000)}`);
      const r = await fetch(`${BASE}/api/poll/${this.sid}?cursor=${this.cursor}&wait=5`, { headers: this.h() });
      assert.equal(r.status, 200);
      const j = await r.json();
      this.msgs.push(...j.messages);
      this.cursor = j.cursor;
    }
    return this.msgs;
  }
}

// The frames of an SSE stream until done/error (or the end), at most 15 s.
async function sse(path, token) {
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(), 15000);
  const r = await fetch(`${BASE}${path}`, { headers: { authorization: `Bearer ${token}` }, signal: ac.signal });
  const out = { status: r.status, msgs: [], text: '' };
  if (r.status !== 200) {
    out.text = await r.text();
    clearTimeout(timer);
    return out;
  }
  const dec = new TextDecoder();
  let buf = '';
  try {
    for await (const chunk of r.body) {
      buf += dec.decode(chunk, { stream: true });
      let i;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const ev = buf.slice(0, i);
        buf = buf.slice(i + 2);
        for (const line of ev.split('\n'))
          if (line.startsWith('data: ')) out.msgs.push(JSON.parse(line.slice(6)));
      }
      if (ended(out.msgs)) break;
    }
  } finally {
    clearTimeout(timer);
    ac.abort();
  }
  return out;
}

// One WebSocket opener of ticket: sends body, returns the frames to the end.
async function wsAsk(ticket, token, body) {
  const c = await connect(`${WS}/api/websocket/chat/${ticket}?token=${token}`);
  c.ws.send(JSON.stringify({ ticketBody: body }));
  const msgs = await c.until(ended, 15000);
  c.ws.close();
  return msgs;
}

test('one ticket id, two tenants: two generations, one upstream request per tenant, each sees its own answer on every transport', async () => {
  const ticket = `T-${RUN}`;
  const tag = `tenant-${RUN}-same`;
  const body = `${tag} the printer is on fire`;
  // acme over WebSocket, globex over long-poll: both stream (no cached answer)
  const a = await wsAsk(ticket, ACME_1, body);
  assert.equal(count(a, 'cached'), 0, JSON.stringify(a).slice(0, 300));
  assert.ok(count(a, 'stream') > 0);
  const lp = new Poll(`/api/websocket/chat/${ticket}`, GLOBEX_1);
  await lp.open();
  await lp.send({ ticketBody: body });
  const g = await lp.until(ended);
  assert.equal(count(g, 'cached'), 0, `globex got acme's cached answer: ${JSON.stringify(g).slice(0, 300)}`);
  assert.ok(count(g, 'stream') > 0);
  assert.equal((await fakeRequests(tag)).length, 2, 'one upstream request per tenant');
  // each tenant's second user: its tenant's cached answer, WebSocket and SSE
  const a2 = await wsAsk(ticket, ACME_2, body);
  assert.equal(count(a2, 'cached'), 1);
  const g2 = await sse(`/api/tickets/${ticket}/ai/stream`, GLOBEX_2);
  assert.equal(g2.status, 200, g2.text);
  assert.equal(count(g2.msgs, 'cached'), 1, JSON.stringify(g2.msgs).slice(0, 300));
  assert.equal((await fakeRequests(tag)).length, 2, 'no more upstream requests');
});

test('different questions on one ticket id: REST, SSE, WebSocket and long-poll never show the other tenant\'s answer', async () => {
  const ticket = `D-${RUN}`;
  const tagA = `tenant-${RUN}-acme`;
  const tagG = `tenant-${RUN}-globex`;
  const ansA = text(await wsAsk(ticket, ACME_1, `${tagA} my laptop will not boot`));
  const lp = new Poll(`/api/websocket/chat/${ticket}`, GLOBEX_1);
  await lp.open();
  await lp.send({ ticketBody: `${tagG} the VPN drops every hour` });
  const ansG = text(await lp.until(ended));
  assert.ok(ansA.length > 0 && ansG.length > 0);
  assert.notEqual(ansA, ansG, 'the simulated LLM answers the two questions differently');
  // REST GET: each tenant its own, under the client's id
  const ra = await api('GET', `/api/tickets/${ticket}/ai`, ACME_2);
  assert.equal(ra.status, 200, ra.text);
  assert.equal(ra.json.ticketId, ticket);
  assert.equal(ra.json.response, ansA);
  const rg = await api('GET', `/api/tickets/${ticket}/ai`, GLOBEX_2);
  assert.equal(rg.status, 200, rg.text);
  assert.equal(rg.json.ticketId, ticket);
  assert.equal(rg.json.response, ansG);
  // SSE: the cached answer of the caller's tenant
  const sa = await sse(`/api/tickets/${ticket}/ai/stream`, ACME_2);
  assert.equal(text(sa.msgs), ansA);
  const sg = await sse(`/api/tickets/${ticket}/ai/stream`, GLOBEX_2);
  assert.equal(text(sg.msgs), ansG);
  // a third tenant: nothing at all
  const other = jwt('zed', { org: 'initech' });
  const ro = await api('GET', `/api/tickets/${ticket}/ai`, other);
  assert.equal(ro.status, 200, ro.text);
  assert.equal(ro.json.status, 'none');
  const so = await sse(`/api/tickets/${ticket}/ai/stream`, other);
  assert.equal(so.status, 404, so.text);
});

test('a token without the tenant claim is refused on every transport: 403, error frame forbidden, close 4403', async () => {
  const ticket = `N-${RUN}`;
  for (const tok of [NO_ORG, NUM_ORG]) {
    for (const [method, path] of [['GET', `/api/tickets/${ticket}/ai`], ['DELETE', `/api/tickets/${ticket}/ai`],
      ['GET', `/api/tickets/${ticket}/ai/stream`], ['POST', `/api/tickets/${ticket}/ai/stop`]]) {
      const r = await api(method, path, tok);
      assert.equal(r.status, 403, `${method} ${path}: ${r.text}`);
      assert.equal(r.json.code, 'forbidden');
    }
    const c = await connect(`${WS}/api/websocket/chat/${ticket}?token=${tok}`);
    const info = await c.closed;
    assert.equal(info.code, 4403, JSON.stringify(info));
    assert.equal(c.msgs[0]?.type, 'error');
    assert.equal(c.msgs[0]?.code, 'forbidden');
    const lp = new Poll(`/api/websocket/chat/${ticket}`, tok);
    await lp.open();
    const m = await lp.until(has('error'));
    assert.equal(m.find((x) => x.type === 'error').code, 'forbidden');
  }
});

test('DELETE needs PARLEY_ADMIN_CLAIM and reaches only the caller\'s tenant; a stop from another tenant finds nothing', async () => {
  const ticket = `X-${RUN}`;
  const tag = `tenant-${RUN}-del`;
  await wsAsk(ticket, ACME_1, `${tag} outlook crashes`);
  assert.equal((await api('GET', `/api/tickets/${ticket}/ai`, ACME_1)).json.status, 'cached');
  const plain = await api('DELETE', `/api/tickets/${ticket}/ai`, ACME_1);
  assert.equal(plain.status, 403, plain.text);
  const root = await api('DELETE', `/api/tickets/${ticket}/ai`, GLOBEX_ROOT);   // role admin is not it
  assert.equal(root.status, 403, root.text);
  const g = await api('DELETE', `/api/tickets/${ticket}/ai`, GLOBEX_ADMIN);
  assert.equal(g.status, 200, g.text);
  assert.equal(g.json.deleted, 0, 'globex has no answer on that id');
  assert.equal((await api('GET', `/api/tickets/${ticket}/ai`, ACME_1)).json.status, 'cached', 'acme\'s answer is intact');
  const a = await api('DELETE', `/api/tickets/${ticket}/ai`, ACME_ADMIN);
  assert.equal(a.status, 200, a.text);
  assert.equal(a.json.deleted, 1);
  assert.equal((await api('GET', `/api/tickets/${ticket}/ai`, ACME_1)).json.status, 'none');
  // a running acme generation: globex cannot reach it (REST 404, WebSocket
  // stop frame: nothing to stop), acme's stop ends it
  const slow = `${tag}-slow ${SLOWLY}`;
  const w = await connect(`${WS}/api/websocket/chat/${ticket}?token=${ACME_1}`);
  w.ws.send(JSON.stringify({ ticketBody: slow }));
  await w.until((m) => count(m, 'stream') >= 3);
  const st = await api('POST', `/api/tickets/${ticket}/ai/stop`, GLOBEX_ROOT);
  assert.equal(st.status, 404, st.text);
  const gw = await connect(`${WS}/api/websocket/chat/${ticket}?token=${GLOBEX_ROOT}`);
  gw.ws.send(JSON.stringify({ type: 'stop' }));
  const e = (await gw.until(has('error'))).find((m) => m.type === 'error');
  assert.equal(e.message, 'No generation to stop');
  gw.ws.close();
  assert.equal((await api('GET', `/api/tickets/${ticket}/ai`, GLOBEX_1)).json.status, 'none');
  assert.equal((await fakeRequests(`${tag}-slow`)).at(-1).ended_at, null, 'still streaming');
  const ok = await api('POST', `/api/tickets/${ticket}/ai/stop`, ACME_1);
  assert.equal(ok.status, 202, ok.text);
  assert.deepEqual((await w.until(has('done'))).at(-1), { type: 'done', stopped: true });
  w.ws.close();
  await sleep(50);
});
