// anonymous-protocols.mjs — anonymous visitors (docs/anonymous.md) of the
// ticket (seed 000), chat (seed 001) and send (seed 004) protocols through a
// real web server (BASE: lighttpd with the shipped snippet in front of
// parley.fcgi, WebSocket paths proxied to parley-ws), with
// PARLEY_JWT_SECRET=SECRET and PARLEY_ANONYMOUS=ticket,chat,send. Run by
// t0821-anonymous-protocols.sh. The simulated LLM's request log
// (FAKE_LLM_URL/_fake/requests) is the witness of what reached the upstream.
//
// For each protocol, on each of its transports (ticket: WebSocket,
// long-poll, REST + SSE /ai/stream; chat: WebSocket, long-poll, REST;
// send: POST /api/chat/send as SSE): a visitor without a token is served
// and told its token (HTTP: Set-Cookie HttpOnly SameSite=Lax and
// X-Parley-Visitor; long-poll open: also the body; WebSocket: the first
// frame's "visitor"), keeps its identity when it sends the token back
// (header, query or cookie), cannot reach another visitor's or a user's
// sessions and conversations (REST 404, WebSocket 4404, long-poll 404/410;
// a ticket's answer is the ticket's, not an owner's — docs/anonymous.md's
// caution — so there the test is who may stop its generation); a forged
// visitor token is a new visitor, a JWT naming a visitor is refused, a JWT
// user still works; brand (not listed) refuses a missing token.
//
// The send visitor's conversation is created by POST /api/chat/sessions,
// a chat route: with PARLEY_ANONYMOUS=send alone a visitor gets 401 there
// and so can never use /api/chat/send (reported; here chat is listed too).
//
// The tests run in order and share what they created (S).
//
//   BASE=http://127.0.0.1:PORT FAKE_LLM_URL=... SECRET=... RUN=tag \
//     node --test --test-reporter=tap tests/integration/anonymous-protocols.mjs
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { answerText } from '../fake-llm/answer.mjs';
import { api as apiCall, connect, jwtHS256, LongPoll, SLOW } from '../node/clients.mjs';

const BASE = process.env.BASE;
const FAKE = process.env.FAKE_LLM_URL;
const SECRET = process.env.SECRET;
if (!BASE || !FAKE || !SECRET) throw new Error('BASE, FAKE_LLM_URL and SECRET are required');
const WS = BASE.replace(/^http/, 'ws');
const RUN = process.env.RUN || `r${process.pid}`;
const SLOWLY = '[[fake tokens=600 token_ms=10]]';

const USER = `alice-${RUN}`;
const ALICE = jwtHS256(SECRET, USER);
const api = (method, path, opts) => apiCall(BASE, method, path, opts);

const TOKEN_RE = /^v1\.[0-9a-f]{32}\.[0-9a-f]{64}$/;
const COOKIE_RE = /^parley_visitor=(v1\.[0-9a-f]{32}\.[0-9a-f]{64}); Path=\/; Max-Age=2592000; HttpOnly; SameSite=Lax$/;
const idOf = (tok) => tok.split('.')[1];
const macOf = (tok) => tok.split('.')[2];
const owner = (tok) => `anon:${idOf(tok)}`;
const jar = (tok) => ({ cookie: `parley_visitor=${tok}` });
const hdr = (tok) => ({ 'x-parley-visitor': tok });

// The visitor token an HTTP response issued: Set-Cookie (HttpOnly,
// SameSite=Lax, no Secure over plain HTTP) and X-Parley-Visitor agree.
function issued(r) {
  const c = r.headers.get('set-cookie');
  assert.ok(c, `no Set-Cookie (status ${r.status})`);
  const m = c.match(COOKIE_RE);
  assert.ok(m, `Set-Cookie: ${c}`);
  assert.equal(r.headers.get('x-parley-visitor'), m[1]);
  return m[1];
}
// A response that issued no visitor (the caller's identity was kept).
function notIssued(r) {
  assert.equal(r.headers.get('set-cookie'), null, 'no new visitor cookie');
  assert.equal(r.headers.get('x-parley-visitor'), null, 'no new visitor token');
}

const has = (type) => (msgs) => msgs.some((m) => m.type === type);
const count = (msgs, type) => msgs.filter((m) => m.type === type).length;
const frame = (msgs, type) => msgs.find((m) => m.type === type);
const ticketText = (msgs) => msgs.filter((m) => m.type === 'stream').map((m) => m.content).join('');
const chatText = (msgs) => msgs.filter((m) => m.type === 'stream_chunk').map((m) => m.content).join('');

// How a WebSocket connection ended (null if it was still open after ms).
async function closeOf(c, ms = 5000 * SLOW) {
  return Promise.race([c.closed, sleep(ms).then(() => null)]);
}

// The fake's log entries whose prompt contains tag.
async function fakeRequests(tag) {
  const r = await fetch(`${FAKE}/_fake/requests`);
  return (await r.json()).requests.filter((q) => q.prompt?.includes(tag));
}
async function fakeEnded(tag, ms = 3000 * SLOW) {
  const end = Date.now() + ms;
  for (;;) {
    const q = (await fakeRequests(tag)).at(-1);
    if (q?.ended_at) return q;
    assert.ok(Date.now() < end, `the fake never saw ${tag} end`);
    await sleep(10);
  }
}

// A Server-Sent Events request read as it arrives: ready resolves once the
// response started (status, headers; json/text when it is not a stream);
// events are the parsed data: lines; until(pred) waits for them.
function sse(method, path, { headers = {}, body } = {}) {
  const ctl = new AbortController();
  const out = { events: [], ended: false };
  out.ready = (async () => {
    const r = await fetch(`${BASE}${path}`, {
      method, signal: ctl.signal,
      headers: { ...headers, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      body: body !== undefined ? JSON.stringify(body) : undefined,
    });
    out.status = r.status;
    out.headers = r.headers;
    if (!(r.headers.get('content-type') || '').startsWith('text/event-stream')) {
      out.text = await r.text();
      try { out.json = JSON.parse(out.text); } catch { out.json = null; }
      out.ended = true;
      return;
    }
    (async () => {
      const dec = new TextDecoder();
      let buf = '';
      try {
        for await (const chunk of r.body) {
          buf += dec.decode(chunk, { stream: true });
          for (let i; (i = buf.indexOf('\n\n')) >= 0;) {
            const ev = buf.slice(0, i);
            buf = buf.slice(i + 2);
            for (const line of ev.split('\n')) {
              if (line.startsWith('data: ')) out.events.push(JSON.parse(line.slice(6)));
            }
          }
        }
      } catch (e) {
        if (e.name !== 'AbortError') out.error = e;
      }
      out.ended = true;
    })();
  })();
  out.until = async (pred, ms = 15000 * SLOW) => {
    await out.ready;
    const t0 = Date.now();
    while (!pred(out.events)) {
      assert.ok(!out.ended, `the stream ended (status ${out.status} ${out.text ?? ''} ${out.error ?? ''}); ` +
        `events ${JSON.stringify(out.events).slice(0, 1000)}`);
      assert.ok(Date.now() - t0 < ms, `SSE timeout; events ${JSON.stringify(out.events).slice(0, 1000)}`);
      await sleep(20);
    }
    return out.events;
  };
  out.close = () => ctl.abort();
  return out;
}

const S = {};   // shared between the tests (they run in order)

test('brand (not in PARLEY_ANONYMOUS) refuses a missing token (4401 / 401); a bad JWT on a listed protocol is refused, not made a visitor', async () => {
  const b = await connect(`${WS}/ws/chat/techpro`);
  assert.equal((await closeOf(b))?.code, 4401, 'brand over WebSocket');
  const o = await api('POST', '/api/poll/open', { body: { path: '/ws/chat/techpro' } });
  assert.equal(o.status, 401, `brand over long-poll: ${o.text}`);
  notIssued(o);
  for (const p of [`/ws/bad-${RUN}?token=not.a.jwt`, `/api/websocket/chat/TB-${RUN}?token=not.a.jwt`]) {
    const c = await connect(`${WS}${p}`);
    assert.equal((await closeOf(c))?.code, 4401, p);
  }
  for (const [m, p, body] of [['POST', '/api/chat/send', { conversationId: 'x', content: 'hi' }],
    ['GET', `/api/tickets/TB-${RUN}/ai`], ['GET', '/api/chat/sessions'],
    ['POST', '/api/poll/open', { path: `/ws/bad-${RUN}` }]]) {
    const r = await api(m, p, { token: 'not.a.jwt', body });
    assert.equal(r.status, 401, `${m} ${p}: ${r.text}`);
    notIssued(r);
  }
  // not a protocol: the metrics still need a JWT
  assert.equal((await api('GET', '/api/metrics')).status, 401);
});

test('ticket over WebSocket: a visitor without a token is served the answer', async () => {
  const ticket = `TW-${RUN}`;
  const tag = `anp-${RUN}-tw`;
  const body = `${tag} my printer prints blank pages [[fake tokens=12 token_ms=1]]`;
  const c = await connect(`${WS}/api/websocket/chat/${ticket}`);
  c.ws.send(JSON.stringify({ ticketBody: body }));
  const msgs = await c.until((m) => has('done')(m) || has('error')(m));
  c.ws.close();
  assert.equal(count(msgs, 'error'), 0, JSON.stringify(msgs));
  assert.ok(count(msgs, 'stream') >= 2, JSON.stringify(msgs));
  assert.equal(ticketText(msgs), answerText(body, 12));
  assert.equal((await fakeRequests(tag)).length, 1, 'one upstream request');
  S.ticketWsFirst = msgs[0];
});

// docs/anonymous.md: "over WebSocket: the protocol's first frame gets a
// top-level field visitor". Seed 000 sends nothing at open: its first frame
// is the first of its answer (ws-bridge/sched.c give_visitor keeps the
// token until a frame goes out).
test('ticket over WebSocket: the first frame carries the new visitor\'s token', () => {
  assert.ok(S.ticketWsFirst, 'the previous test got frames');
  assert.match(S.ticketWsFirst.visitor ?? '', TOKEN_RE, JSON.stringify(S.ticketWsFirst));
});

test('ticket over REST and SSE: Set-Cookie HttpOnly SameSite=Lax; the token keeps the identity across HTTP and WebSocket; only the starter stops its generation', async () => {
  const ticket = `TS-${RUN}`;
  const tag = `anp-${RUN}-ts`;
  const body = `${tag} the screen flickers ${SLOWLY}`;
  const g = await api('GET', `/api/tickets/${ticket}/ai`);
  assert.equal(g.status, 200, g.text);
  assert.equal(g.json.status, 'none');
  const v1 = issued(g);
  S.v1 = v1;
  const g2 = await api('GET', `/api/tickets/${ticket}/ai`, { headers: jar(v1) });
  assert.equal(g2.status, 200, g2.text);
  notIssued(g2);
  // the visitor starts the generation over WebSocket, its token in the header
  const a = await connect(`${WS}/api/websocket/chat/${ticket}`, { headers: hdr(v1) });
  a.ws.send(JSON.stringify({ ticketBody: body }));
  await a.until((m) => count(m, 'stream') >= 3);
  assert.ok(a.msgs.every((m) => m.visitor === undefined), 'a known visitor is not issued a token');
  // and follows it over SSE with its cookie
  const ev = sse('GET', `/api/tickets/${ticket}/ai/stream`, { headers: jar(v1) });
  await ev.until((e) => count(e, 'stream') >= 1);
  assert.equal(ev.status, 200);
  notIssued(ev);
  const running = await api('GET', `/api/tickets/${ticket}/ai`, { headers: hdr(v1) });
  assert.equal(running.json.status, 'running', running.text);
  // a new visitor, a user, a forged token (v1's id, another visitor's MAC): not the starter
  const other = await api('POST', `/api/tickets/${ticket}/ai/stop`);
  assert.equal(other.status, 403, other.text);
  assert.equal(other.json.message, 'Only the user who started the generation (or an admin) can stop it');
  const v2 = issued(other);
  assert.notEqual(idOf(v2), idOf(v1));
  const user = await api('POST', `/api/tickets/${ticket}/ai/stop`, { token: ALICE });
  assert.equal(user.status, 403, user.text);
  notIssued(user);
  const forged = `v1.${idOf(v1)}.${macOf(v2)}`;
  const f = await api('POST', `/api/tickets/${ticket}/ai/stop`, { headers: hdr(forged) });
  assert.equal(f.status, 403, f.text);
  assert.notEqual(idOf(issued(f)), idOf(v1), 'a forged token is a new visitor');
  const q0 = await fakeRequests(tag);
  assert.equal(q0.length, 1, 'one upstream request');
  assert.equal(q0[0].ended_at, null, 'still streaming after the refused stops');
  // the starter, by its token: stopped, the upstream closed by Parley
  const st = await api('POST', `/api/tickets/${ticket}/ai/stop`, { headers: hdr(v1) });
  assert.equal(st.status, 202, st.text);
  notIssued(st);
  const q = await fakeEnded(tag);
  assert.equal(q.closed_by_client, true, 'Parley closed the upstream request');
  assert.deepEqual((await a.until(has('done'))).at(-1), { type: 'done', stopped: true });
  assert.equal(frame(await ev.until(has('done')), 'done').stopped, true, 'SSE viewer');
  ev.close();
  a.ws.close();
});

test('ticket over long-poll: the open response carries the token (cookie, header, body); the session is the visitor\'s alone', async () => {
  const ticket = `TL-${RUN}`;
  const tag = `anp-${RUN}-tl`;
  const body = `${tag} the keyboard types twice [[fake tokens=10 token_ms=1]]`;
  const lp = new LongPoll(BASE, `/api/websocket/chat/${ticket}`);
  await lp.open();
  const v = issued(lp.opened);
  assert.equal(lp.visitor, v);
  assert.notEqual(idOf(v), idOf(S.v1));
  lp.headers = jar(v);
  await lp.send({ ticketBody: body });
  const msgs = await lp.until((m) => has('done')(m) || has('error')(m));
  assert.equal(count(msgs, 'error'), 0, JSON.stringify(msgs));
  assert.equal(ticketText(msgs), answerText(body, 10));
  assert.equal((await fakeRequests(tag)).length, 1, 'one upstream request');
  const at = `/api/poll/${lp.sid}?cursor=0&wait=0`;
  assert.equal((await api('GET', at, { headers: hdr(v) })).status, 200, 'its own token (header)');
  assert.equal((await api('GET', `${at}&visitor=${v}`)).status, 200, 'its own token (query)');
  const none = await api('GET', at);
  assert.equal(none.status, 401, `no credential: ${none.text}`);
  notIssued(none);
  for (const [who, opts] of [['another visitor', { headers: hdr(S.v1) }], ['a user', { token: ALICE }]]) {
    const r = await api('GET', at, opts);
    assert.ok(r.status === 404 || r.status === 410, `${who}: ${r.status} ${r.text}`);
    const p = await api('POST', `/api/poll/${lp.sid}`, { ...opts, body: { ticketBody: `${tag}-x` } });
    assert.ok(p.status === 404 || p.status === 410, `${who} posting: ${p.status} ${p.text}`);
  }
  const forged = await api('GET', at, { headers: hdr(`v1.${idOf(v)}.${macOf(S.v1)}`) });
  assert.equal(forged.status, 401, `a forged token: ${forged.text}`);
  assert.equal((await fakeRequests(`${tag}-x`)).length, 0, 'nothing posted by others reached the upstream');
});

test('chat over WebSocket: the connected frame carries the token, owner anon:<id>; the token keeps the session; another visitor, a user, a forged token get 4404', async () => {
  const sid = `cw-${RUN}`;
  const tag = `anp-${RUN}-cw`;
  const q1 = `${tag} how do I export my data [[fake tokens=8 token_ms=1]]`;
  const a = await connect(`${WS}/ws/${sid}`);
  const hello = frame(await a.until(has('connected')), 'connected');
  assert.equal(a.msgs[0], hello, 'connected is the first frame');
  assert.match(hello.visitor ?? '', TOKEN_RE, JSON.stringify(hello));
  const vA = hello.visitor;
  assert.equal(hello.user_id, owner(vA));
  assert.equal(hello.session_id, sid);
  a.ws.send(JSON.stringify({ type: 'message', content: q1 }));
  const m1 = await a.until((m) => has('stream_end')(m) || has('error')(m));
  a.ws.close();
  assert.equal(count(m1, 'error'), 0, JSON.stringify(m1));
  assert.equal(chatText(m1), answerText(q1, 8));
  S.vA = vA;
  S.chatA = sid;
  // back with its token (query): the same owner, no new token, its session goes on
  const q2 = `${tag} and in CSV [[fake tokens=5 token_ms=1]]`;
  const b = await connect(`${WS}/ws/${sid}?visitor=${vA}`);
  const again = frame(await b.until(has('connected')), 'connected');
  assert.equal(again.visitor, undefined);
  assert.equal(again.user_id, owner(vA));
  b.ws.send(JSON.stringify({ type: 'message', content: q2 }));
  const m2 = await b.until((m) => has('stream_end')(m) || has('error')(m));
  b.ws.close();
  assert.equal(chatText(m2), answerText(q2, 5));
  const h = await api('GET', `/api/chat/sessions/${sid}/messages`, { headers: hdr(vA) });
  assert.equal(h.status, 200, h.text);
  const list = h.json.messages ?? h.json;
  assert.deepEqual(list.map((x) => x.role), ['user', 'assistant', 'user', 'assistant']);
  assert.deepEqual(list.map((x) => x.content), [q1, chatText(m1), q2, chatText(m2)]);
  // nobody else reaches it: a new visitor, another visitor's token, a user, a forged token
  const forged = `v1.${idOf(vA)}.${macOf(S.v1)}`;
  for (const [who, q] of [['a new visitor', ''], ['another visitor', `?visitor=${S.v1}`],
    ['a user', `?token=${ALICE}`], ['a forged token', `?visitor=${forged}`]]) {
    const c = await connect(`${WS}/ws/${sid}${q}`);
    const end = await closeOf(c);
    assert.equal(end?.code, 4404, `${who}: ${JSON.stringify(end)} ${JSON.stringify(c.msgs)}`);
    const err = frame(c.msgs, 'error');
    assert.equal(err?.message, 'Session not found', who);
    assert.ok(!c.msgs.some((x) => x.type === 'connected'), who);
    if (who === 'a forged token') assert.notEqual(idOf(err.visitor ?? 'v1.x.y'), idOf(vA));
  }
  // no JWT can name a visitor
  const j = await connect(`${WS}/ws/${sid}?token=${jwtHS256(SECRET, owner(vA))}`);
  assert.equal((await closeOf(j))?.code, 4401, 'a JWT whose sub is anon:<id>');
  assert.equal((await fakeRequests(tag)).length, 2, 'only the owner\'s two questions reached the upstream');
});

test('chat over long-poll and REST: a visitor lists only its own sessions; another visitor\'s or a user\'s session is not found', async () => {
  const sid = `cl-${RUN}`;
  const tag = `anp-${RUN}-cl`;
  const q1 = `${tag} where is my invoice [[fake tokens=7 token_ms=1]]`;
  const lp = new LongPoll(BASE, `/ws/${sid}`);
  await lp.open();
  const vB = issued(lp.opened);
  assert.equal(lp.visitor, vB);
  lp.headers = hdr(vB);
  const hello = frame(await lp.until(has('connected')), 'connected');
  assert.equal(hello.user_id, owner(vB));
  await lp.send({ type: 'message', content: q1 });
  const m = await lp.until((x) => has('stream_end')(x) || has('error')(x));
  assert.equal(count(m, 'error'), 0, JSON.stringify(m));
  assert.equal(chatText(m), answerText(q1, 7));
  // a user's session
  const usid = `cu-${RUN}`;
  const u = await connect(`${WS}/ws/${usid}?token=${ALICE}`);
  assert.equal(frame(await u.until(has('connected')), 'connected').user_id, USER);
  u.ws.close();
  // each lists its own, only
  const ids = (r) => r.json.sessions.map((s) => s.session_id).sort();
  const lb = await api('GET', '/api/chat/sessions', { headers: jar(vB) });
  assert.equal(lb.status, 200, lb.text);
  notIssued(lb);
  assert.deepEqual(ids(lb), [sid]);
  assert.equal(lb.json.total, 1);
  assert.equal(lb.json.sessions[0].user_id, owner(vB));
  assert.equal(lb.json.sessions[0].message_count, 2);
  const la = await api('GET', '/api/chat/sessions', { headers: hdr(S.vA) });
  assert.deepEqual(ids(la), [S.chatA]);
  const lu = await api('GET', '/api/chat/sessions', { token: ALICE });
  assert.deepEqual(ids(lu), [usid]);
  const fresh = await api('GET', '/api/chat/sessions');
  assert.equal(fresh.status, 200, fresh.text);
  issued(fresh);
  assert.deepEqual(fresh.json.sessions, []);
  assert.equal(fresh.json.total, 0);
  // by id: not found for anyone but the owner
  for (const [who, opts, id] of [['visitor B on A\'s', { headers: jar(vB) }, S.chatA],
    ['visitor B on the user\'s', { headers: jar(vB) }, usid],
    ['the user on B\'s', { token: ALICE }, sid]]) {
    for (const p of [`/api/chat/sessions/${id}`, `/api/chat/sessions/${id}/messages`]) {
      const r = await api('GET', p, opts);
      assert.equal(r.status, 404, `${who} ${p}: ${r.status} ${r.text}`);
    }
    const d = await api('DELETE', `/api/chat/sessions/${id}`, opts);
    assert.equal(d.status, 404, `${who} DELETE: ${d.status} ${d.text}`);
  }
  // export: the owner's conversation only
  const exA = await api('POST', '/api/chat/export', { headers: hdr(S.vA), body: { session_id: S.chatA } });
  assert.equal(exA.status, 200, exA.text);
  assert.equal(exA.json.session.user_id, owner(S.vA));
  assert.equal(exA.json.messages.length, 4);
  const exB = await api('POST', '/api/chat/export', { headers: hdr(vB), body: { session_id: S.chatA } });
  assert.equal(exB.status, 404, `visitor B exporting A's: ${exB.text}`);
  assert.ok(!exB.text.includes(`anp-${RUN}`), `nothing of A's conversation: ${exB.text}`);
  // a reaction on A's message: A's own, not B's
  const mid = exA.json.messages.find((x) => x.role === 'assistant').message_id;
  const reacts = `/api/chat/sessions/${S.chatA}/messages/${mid}/reactions`;
  const re = await api('POST', reacts, { headers: hdr(vB), body: { helpful: false } });
  assert.equal(re.status, 404, `visitor B reacting on A's message: ${re.text}`);
  const own = await api('POST', reacts, { headers: hdr(S.vA), body: { helpful: true } });
  assert.equal(own.status, 200, `A reacting on its own message: ${own.text}`);
  const stillA = await api('GET', `/api/chat/sessions/${S.chatA}`, { headers: hdr(S.vA) });
  assert.equal(stillA.status, 200, stillA.text);
  assert.notEqual(stillA.json.status, 'closed');
  // B's long-poll session: not readable by another visitor or a user
  for (const [who, opts] of [['another visitor', { headers: hdr(S.vA) }], ['a user', { token: ALICE }]]) {
    const r = await api('GET', `/api/poll/${lp.sid}?cursor=0&wait=0`, opts);
    assert.ok(r.status === 404 || r.status === 410, `${who}: ${r.status} ${r.text}`);
  }
  // B opening A's session over long-poll: Session not found, closed 4404
  const lp2 = new LongPoll(BASE, `/ws/${S.chatA}`, { headers: hdr(vB) });
  await lp2.open();
  const e = await lp2.until(has('error')).catch((err) => err);
  const err = e instanceof Error ? null : frame(e, 'error');
  assert.ok(err, `no error frame: ${e}`);
  assert.equal(err.message, 'Session not found');
  assert.ok(!lp2.msgs.some((x) => x.type === 'connected'));
  // a visitor creates a session by REST: its own
  const c = await api('POST', '/api/chat/sessions', { headers: jar(vB), body: { title: 'mine' } });
  assert.equal(c.status, 201, c.text);
  notIssued(c);
  assert.equal(c.json.user_id, owner(vB));
  assert.deepEqual(ids(await api('GET', '/api/chat/sessions', { headers: jar(vB) })), [c.json.id, sid].sort());
  S.vB = vB;
});

test('send (seed 004): a visitor\'s conversation answered as SSE; its token keeps it; a new visitor, another visitor, a user, a forged token: 404, no upstream request', async () => {
  const c = await api('POST', '/api/chat/sessions', { body: { kind: 'sse', title: 'visitor send' } });
  assert.equal(c.status, 201, c.text);
  const vC = issued(c);
  const conv = c.json.id;
  assert.equal(c.json.user_id, owner(vC));
  assert.equal(c.json.kind, 'sse');
  const tag = `anp-${RUN}-sd`;
  const content = `${tag} what are your opening hours [[fake tokens=9 token_ms=1]]`;
  const s = sse('POST', '/api/chat/send', { headers: jar(vC), body: { conversationId: conv, content } });
  const ev = await s.until((e) => e.some((x) => x.done));
  assert.equal(s.status, 200);
  notIssued(s);
  const last = ev.at(-1);
  assert.equal(last.done, true);
  assert.equal(last.error, undefined, JSON.stringify(last));
  assert.equal(typeof last.messageId, 'string');
  const text = ev.filter((x) => x.content).map((x) => x.content).join('');
  assert.equal(text, answerText(content, 9));
  assert.equal((await fakeRequests(tag)).length, 1, 'one upstream request');
  // the token in the header works as well as the cookie
  const c2 = `${tag} and on sundays [[fake tokens=4 token_ms=1]]`;
  const s2 = sse('POST', '/api/chat/send', { headers: hdr(vC), body: { conversationId: conv, content: c2 } });
  const ev2 = await s2.until((e) => e.some((x) => x.done));
  assert.equal(ev2.filter((x) => x.content).map((x) => x.content).join(''), answerText(c2, 4));
  // the conversation is the visitor's
  const forged = `v1.${idOf(vC)}.${macOf(S.vA)}`;
  for (const [who, opts, n] of [['a new visitor', {}, 1], ['another visitor', { headers: hdr(S.vA) }, 2],
    ['a user', { token: ALICE }, 3], ['a forged token', { headers: hdr(forged) }, 4]]) {
    const r = await api('POST', '/api/chat/send', { ...opts, body: { conversationId: conv, content: `${tag}-no${n} hi` } });
    assert.equal(r.status, 404, `${who}: ${r.status} ${r.text}`);
    assert.equal(r.json?.message, 'Conversation not found', who);
    if (n === 1 || n === 4) assert.notEqual(idOf(issued(r)), idOf(vC), who);
    assert.equal((await fakeRequests(`${tag}-no${n}`)).length, 0, `${who}: no upstream request`);
  }
  const h = await api('GET', `/api/chat/sessions/${conv}/messages`, { headers: hdr(vC) });
  assert.equal(h.status, 200, h.text);
  const list = h.json.messages ?? h.json;
  assert.deepEqual(list.map((x) => x.content), [content, text, c2, answerText(c2, 4)]);
  // a visitor cannot send into a user's conversation
  const uc = await api('POST', '/api/chat/sessions', { token: ALICE, body: { kind: 'sse' } });
  assert.equal(uc.status, 201, uc.text);
  const r = await api('POST', '/api/chat/send', { headers: hdr(vC), body: { conversationId: uc.json.id, content: `${tag}-user hi` } });
  assert.equal(r.status, 404, r.text);
  assert.equal((await fakeRequests(`${tag}-user`)).length, 0);
});

test('chat: a visitor stops its own generation by REST with its token; another visitor and a user cannot', async () => {
  const sid = S.chatA;
  const tag = `anp-${RUN}-cs`;
  const a = await connect(`${WS}/ws/${sid}`, { headers: jar(S.vA) });
  assert.equal(frame(await a.until(has('connected')), 'connected').user_id, owner(S.vA));
  a.ws.send(JSON.stringify({ type: 'message', content: `${tag} tell me everything ${SLOWLY}` }));
  await a.until((m) => count(m, 'stream_chunk') >= 3);
  for (const [who, opts] of [['another visitor', { headers: hdr(S.vB) }], ['a user', { token: ALICE }]]) {
    const r = await api('POST', `/api/chat/sessions/${sid}/stop`, opts);
    assert.equal(r.status, 403, `${who}: ${r.text}`);
    assert.equal(r.json.message, 'Only the user who started the generation (or an admin) can stop it');
  }
  const none = await api('POST', `/api/chat/sessions/${sid}/stop`);
  assert.equal(none.status, 401, `no credential: ${none.text}`);
  assert.equal((await fakeRequests(tag))[0]?.ended_at, null, 'still streaming after the refused stops');
  const st = await api('POST', `/api/chat/sessions/${sid}/stop`, { headers: hdr(S.vA) });
  assert.equal(st.status, 202, st.text);
  assert.equal(st.json.stopped, true);
  const q = await fakeEnded(tag);
  assert.equal(q.closed_by_client, true, 'Parley closed the upstream request');
  assert.equal(frame(await a.until(has('stream_end')), 'stream_end').metadata.stopped, true);
  a.ws.close();
});

test('a JWT user still works on ticket (WebSocket), chat (long-poll) and send (SSE), as its own sub, never issued a visitor', async () => {
  const tag = `anp-${RUN}-jwt`;
  const body = `${tag} ticket question [[fake tokens=6 token_ms=1]]`;
  const t = await connect(`${WS}/api/websocket/chat/TJ-${RUN}?token=${ALICE}`);
  t.ws.send(JSON.stringify({ ticketBody: body }));
  const tm = await t.until((m) => has('done')(m) || has('error')(m));
  t.ws.close();
  assert.equal(count(tm, 'error'), 0, JSON.stringify(tm));
  assert.equal(ticketText(tm), answerText(body, 6));
  assert.ok(tm.every((m) => m.visitor === undefined));
  const lp = new LongPoll(BASE, `/ws/cj-${RUN}`, { token: ALICE });
  await lp.open();
  notIssued(lp.opened);
  assert.equal(lp.visitor, undefined);
  const q = `${tag} chat question [[fake tokens=5 token_ms=1]]`;
  await lp.send({ type: 'message', content: q });
  const m = await lp.until((x) => has('stream_end')(x) || has('error')(x));
  assert.equal(frame(m, 'connected').user_id, USER);
  assert.equal(chatText(m), answerText(q, 5));
  const conv = await api('POST', '/api/chat/sessions', { token: ALICE, body: { kind: 'sse' } });
  assert.equal(conv.status, 201, conv.text);
  notIssued(conv);
  assert.equal(conv.json.user_id, USER);
  const content = `${tag} send question [[fake tokens=4 token_ms=1]]`;
  const s = sse('POST', '/api/chat/send', { headers: { authorization: `Bearer ${ALICE}` },
    body: { conversationId: conv.json.id, content } });
  const ev = await s.until((e) => e.some((x) => x.done));
  notIssued(s);
  assert.equal(ev.filter((x) => x.content).map((x) => x.content).join(''), answerText(content, 4));
  assert.equal((await fakeRequests(tag)).length, 3, 'three upstream requests');
});
