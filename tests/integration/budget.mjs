// budget.mjs — token accounting and daily budgets through a real web server
// (docs/usage.md), run by t0830-budget.sh once per setup with
// PARLEY_TOKEN_BUDGET_PER_DAY=1 (so one generation spends a user's default
// budget). Two transports — WebSocket (the bridge behind the server's
// proxy) and long-poll (parley.fcgi) — plus REST; the simulated LLM's
// request log (GET /_fake/requests) is the witness that a refused question
// never reached the upstream, and its deterministic usage counts
// (eval_count = answer tokens) what /api/usage must show.
//
//   BASE=http://127.0.0.1:PORT FAKE_LLM_URL=... SECRET=... RUN=tag \
//   PARLEY_CLI="<as app user> build/parley" (PARLEY_DB, PARLEY_CONFIG set) \
//     node --test --test-reporter=tap tests/integration/budget.mjs
import assert from 'node:assert/strict';
import { execSync } from 'node:child_process';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { api as apiCall, connect, jwtHS256, LongPoll, SLOW } from '../node/clients.mjs';

const BASE = process.env.BASE;
const WS = BASE.replace(/^http/, 'ws');
const FAKE = process.env.FAKE_LLM_URL;
const SECRET = process.env.SECRET;
const RUN = process.env.RUN || `r${process.pid}`;
const CLI = process.env.PARLEY_CLI;

const jwt = (sub, claims = {}) => jwtHS256(SECRET, sub, claims);
const api = (method, path, token, body) => apiCall(BASE, method, path, { token, body });

async function fakeRequests(tag) {
  const r = await fetch(`${FAKE}/_fake/requests`);
  return (await r.json()).requests.filter((q) => q.prompt?.includes(tag));
}

// The next UTC midnight, as Parley writes it.
function nextMidnight() {
  const d = new Date();
  return new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate() + 1))
    .toISOString().replace('.000Z', 'Z');
}
const exhaustedMsg = () => `Daily token budget exhausted; it resets at ${nextMidnight()}`;

// A long-poll client with a token (the transport carries protocol frames).
const poll = (path, token) => new LongPoll(BASE, path, { token });
const has = (type) => (msgs) => msgs.some((m) => m.type === type);

async function usage(token, query = '') {
  const r = await api('GET', `/api/usage${query}`, token);
  assert.equal(r.status, 200, r.text);
  return r.json;
}

// One seed 001 question over WebSocket, answered: the stream_end frame.
async function chatWs(sid, token, content) {
  const ws = await connect(`${WS}/ws/${sid}?token=${token}`);
  await ws.until(has('connected'));
  ws.ws.send(JSON.stringify({ type: 'message', content }));
  const msgs = await ws.until((m) => has('stream_end')(m) || has('error')(m), 15000 * SLOW);
  ws.ws.close();
  return msgs;
}

test('seed 000: tokens counted from the upstream, /api/usage right, exhausted → refused before any upstream call, cached still served', async () => {
  const user = `dana-${RUN}`;
  const tok = jwt(user);
  const tag = `budget-${RUN}-t1`;
  const ticket = `B-${RUN}`;
  const body = `${tag} how do I reset my password [[fake tokens=9 token_ms=1]]`;
  const before = await usage(tok);
  assert.equal(before.tokens, 0);
  assert.equal(before.budget, 1);
  assert.equal(before.budget_source, 'default');
  assert.equal(before.exhausted, false);
  // WebSocket: answered by the upstream
  const a = await connect(`${WS}/api/websocket/chat/${ticket}?token=${tok}`);
  a.ws.send(JSON.stringify({ ticketBody: body }));
  await a.until(has('done'), 15000 * SLOW);
  a.ws.close();
  assert.equal((await fakeRequests(tag)).length, 1);
  const u = await usage(tok, '?days=3');
  assert.equal(u.user, user);
  assert.equal(u.completion_tokens, 9, 'eval_count of the fake');
  assert.ok(u.prompt_tokens > 0, 'prompt_eval_count of the fake');
  assert.equal(u.tokens, u.prompt_tokens + 9);
  assert.equal(u.generations, 1);
  assert.equal(u.budget, 1);
  assert.equal(u.remaining, 0);
  assert.equal(u.exhausted, true);
  assert.equal(u.resets_at, nextMidnight());
  assert.equal(u.days.length, 3);
  assert.equal(u.days[0].date, new Date().toISOString().slice(0, 10));
  assert.equal(u.days[0].tokens, u.tokens);
  assert.equal(u.days[1].tokens, 0);
  // long-poll: the same question is cached — served although exhausted
  const lp = poll(`/api/websocket/chat/${ticket}`, tok);
  await lp.open();
  await lp.send({ ticketBody: body });
  const cached = (await lp.until(has('cached'))).find((m) => m.type === 'cached');
  assert.ok(cached.response.length > 0);
  // a new question: refused with the protocol's error, no upstream request
  const tag2 = `budget-${RUN}-t2`;
  const lp2 = poll(`/api/websocket/chat/${ticket}-2`, tok);
  await lp2.open();
  await lp2.send({ ticketBody: `${tag2} another question [[fake tokens=5]]` });
  const err = (await lp2.until(has('error'))).find((m) => m.type === 'error');
  assert.equal(err.message, exhaustedMsg());
  await sleep(200);
  assert.equal((await fakeRequests(tag2)).length, 0, 'no upstream request for the refused question');
  assert.equal((await fakeRequests(tag)).length, 1, 'the cached answer made no upstream request');
  // REST (seed 004): 429 with the same message
  const tag3 = `budget-${RUN}-t3`;
  const conv = await api('POST', '/api/chat/sessions', tok, {});
  assert.equal(conv.status, 201, conv.text);
  const r = await api('POST', '/api/chat/send', tok,
    { conversationId: conv.json.id, content: `${tag3} hi [[fake tokens=3]]` });
  assert.equal(r.status, 429, r.text);
  assert.ok(r.text.includes(exhaustedMsg()), r.text);
  assert.equal((await fakeRequests(tag3)).length, 0);
  // the usage did not move
  assert.equal((await usage(tok)).tokens, u.tokens);
});

test('seed 001: a token_budget JWT claim overrides the default, and exhausts too', async () => {
  const user = `erin-${RUN}`;
  const big = jwt(user, { token_budget: 1000000 });
  const tag = `budget-${RUN}-c`;
  const sid = `budget-${RUN}-c`;
  for (const n of [1, 2]) {           // the default (1) would refuse the second
    const msgs = await chatWs(sid, big, `${tag}${n} tell me more [[fake tokens=6 token_ms=1]]`);
    assert.ok(has('stream_end')(msgs), JSON.stringify(msgs).slice(0, 500));
  }
  const u = await usage(big);
  assert.equal(u.budget, 1000000);
  assert.equal(u.budget_source, 'claim');
  assert.equal(u.completion_tokens, 12);
  assert.equal(u.generations, 2);
  assert.equal(u.remaining, 1000000 - u.tokens);
  // a token whose claim is what was used: exhausted, refused over long-poll
  const small = jwt(user, { token_budget: u.tokens });
  const lp = poll(`/ws/${sid}`, small);
  await lp.open();
  await lp.send({ type: 'message', content: `${tag}3 refused [[fake tokens=6]]` });
  const err = (await lp.until(has('error'))).find((m) => m.type === 'error');
  assert.equal(err.message, exhaustedMsg());
  await sleep(200);
  assert.equal((await fakeRequests(`${tag}3`)).length, 0, 'no upstream request');
  const s = await usage(small);
  assert.equal(s.exhausted, true);
  assert.equal(s.remaining, 0);
});

test('CLI: parley budget set USER TOKENS lifts the default, default restores it; parley usage shows it; admin ?user=', async () => {
  const user = `finn-${RUN}`;
  const tok = jwt(user);
  const tag = `budget-${RUN}-cli`;
  const sid = `budget-${RUN}-cli`;
  let msgs = await chatWs(sid, tok, `${tag}1 first [[fake tokens=4 token_ms=1]]`);
  assert.ok(has('stream_end')(msgs));
  msgs = await chatWs(sid, tok, `${tag}2 second [[fake tokens=4]]`);
  assert.equal(msgs.find((m) => m.type === 'error')?.message, exhaustedMsg());
  assert.equal((await fakeRequests(`${tag}2`)).length, 0);
  const out = execSync(`${CLI} budget set ${user} 100000`).toString();
  assert.match(out, /daily token budget 100000 tokens/);
  msgs = await chatWs(sid, tok, `${tag}3 third [[fake tokens=4 token_ms=1]]`);
  assert.ok(has('stream_end')(msgs), JSON.stringify(msgs).slice(0, 500));
  assert.equal((await fakeRequests(`${tag}3`)).length, 1);
  const u = await usage(tok);
  assert.equal(u.budget_source, 'override');
  assert.equal(u.budget, 100000);
  assert.equal(u.completion_tokens, 8);
  const shown = execSync(`${CLI} usage ${user}`).toString();
  assert.ok(shown.includes(`today: ${u.tokens} tokens`), shown);
  assert.ok(shown.includes('budget: 100000 a day (override)'), shown);
  execSync(`${CLI} budget set ${user} default`);
  msgs = await chatWs(sid, tok, `${tag}4 fourth [[fake tokens=4]]`);
  assert.equal(msgs.find((m) => m.type === 'error')?.message, exhaustedMsg());
  assert.equal((await fakeRequests(`${tag}4`)).length, 0);
  // another user's usage: admin only
  const other = await api('GET', `/api/usage?user=${user}`, jwt(`gus-${RUN}`));
  assert.equal(other.status, 403, other.text);
  const admin = await usage(jwt(`root-${RUN}`, { role: 'admin' }), `?user=${user}`);
  assert.equal(admin.user, user);
  assert.equal(admin.tokens, u.tokens);
  assert.equal(admin.exhausted, true);
});

test('metrics: parley_tokens_total counts prompt and completion tokens', async () => {
  const r = await api('GET', '/api/metrics', jwt(`ops-${RUN}`, { role: 'admin' }));
  assert.equal(r.status, 200);
  const m = r.text.match(/^parley_tokens_total\{kind="completion"\} (\d+)$/m);
  assert.ok(m, r.text.slice(0, 500));
  assert.ok(Number(m[1]) >= 9 + 12 + 8);
  assert.match(r.text, /^parley_tokens_total\{kind="prompt"\} [1-9]\d*$/m);
});
