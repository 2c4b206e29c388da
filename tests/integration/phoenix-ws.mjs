// phoenix-ws.mjs — seed 003 over the bridge's Phoenix WebSocket transport
// (/socket/websocket), driven by the OFFICIAL phoenix client (npm
// "phoenix", pinned in package.json) with `ws` as its WebSocket (Node 20
// has none), through a real web server in front of parley-ws
// (t0610-phoenix-ws.sh starts them).
// Env: PARLEY_BASE (http://127.0.0.1:PORT), PARLEY_JWT_SECRET (JWT mode),
// PARLEY_DB (the setup's database: a SQLite file or a postgresql:// URL),
// AS_APP (run as the app account),
// PHX_PART: "ws" (default) or "fallback" (the bridge is stopped: the
// client must land on LongPoll).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac, randomUUID } from 'node:crypto';
import WebSocket from 'ws';
import { Socket, LongPoll } from 'phoenix';
import { holdLock } from './db-lock.mjs';

const BASE = process.env.PARLEY_BASE;
const SECRET = process.env.PARLEY_JWT_SECRET || '';
const PART = process.env.PHX_PART || 'ws';
// the setup's database (a SQLite file or a postgresql:// URL) and the prefix
// that runs a program as the app account: the heartbeat case holds the
// database (db-lock.mjs)
const DB = process.env.PARLEY_DB || '';
const AS_APP = (process.env.AS_APP || '').split(' ').filter(Boolean);
const WS_BASE = BASE.replace(/^http/, 'ws');

function jwt(sub, secret = SECRET) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const head = b64({ alg: 'HS256', typ: 'JWT' });
  const body = b64({ sub, exp: Math.floor(Date.now() / 1000) + 3600 });
  const sig = createHmac('sha256', secret).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}

// A socket of user `sub` on the WebSocket transport (the seed's connect
// params); `log` collects what phoenix.js logs.
function connect(sub, extra = {}) {
  const params = { user_id: sub };
  if (SECRET) params.auth_token = jwt(sub);
  const log = [];
  const socket = new Socket(`${WS_BASE}/socket`, {
    transport: WebSocket, params, timeout: 15000, reconnectAfterMs: () => 60000,
    logger: (kind, msg, data) => log.push({ t: Date.now(), kind, msg, data }), ...extra,
  });
  socket.log_ = log;
  socket.connect();
  return socket;
}

function opened(socket, ms = 10000) {
  return new Promise((resolve, reject) => {
    if (socket.isConnected()) return resolve();
    const t = setTimeout(() => reject(new Error('socket did not open')), ms);
    socket.onOpen(() => { clearTimeout(t); resolve(); });
  });
}

function join(channel) {
  return new Promise((resolve, reject) => {
    channel.join().receive('ok', resolve).receive('error', reject)
      .receive('timeout', () => reject(new Error('join timeout')));
  });
}

function next(channel, event, ms = 20000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { channel.off(event, ref); reject(new Error(`no ${event}`)); }, ms);
    const ref = channel.on(event, (p) => { clearTimeout(timer); channel.off(event, ref); resolve(p); });
  });
}

// stream_start, the tokens, stream_complete of one channel.
function collectStream(channel, ms = 20000) {
  return new Promise((resolve, reject) => {
    let text = '', start = null, tokens = 0;
    const refs = [];
    const done = (err, v) => {
      clearTimeout(timer);
      channel.off('stream_start', refs[0]); channel.off('stream_token', refs[1]);
      channel.off('stream_complete', refs[2]); channel.off('stream_error', refs[3]);
      err ? reject(err) : resolve(v);
    };
    const timer = setTimeout(() => done(new Error('stream did not complete')), ms);
    refs.push(channel.on('stream_start', (p) => { start = p; }));
    refs.push(channel.on('stream_token', (p) => { text += p.token; tokens++; }));
    refs.push(channel.on('stream_complete', () => done(null, { start, text, tokens })));
    refs.push(channel.on('stream_error', (p) => done(new Error(`stream_error ${p.error}`))));
  });
}

// Every frame the socket receives (decoded), for what no channel sees.
function tap(socket) {
  const seen = [];
  socket.onMessage((m) => seen.push(m));
  return seen;
}

async function until(cond, ms, what) {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const sid = () => `w-${randomUUID()}`;
// Each part defines only its own tests (no skip lines for the others'):
// the WebSocket ones, those needing a JWT secret, and the fallback one.
const wsTest = PART === 'ws' ? test : () => {};
const jwtTest = PART === 'ws' && SECRET ? test : () => {};
const fallbackTest = PART === 'fallback' ? test : () => {};

wsTest('WebSocket: join, query (llm then cache), stream_query, get_history, ping', { timeout: 60000 }, async () => {
  const socket = connect('alice');
  try {
    await opened(socket);
    assert.ok(socket.conn instanceof WebSocket, 'on the WebSocket transport');
    assert.match(socket.conn.url, /\/socket\/websocket\?.*vsn=2\.0\.0/);
    const ch = socket.channel(`proxy:${sid()}`, { user_id: 'alice' });
    assert.deepEqual(await join(ch), {});
    const q = `How to implement JWT authentication? ${randomUUID()} [[fake tokens=6 token_ms=5]]`;
    let got = next(ch, 'response');
    ch.push('query', { query: q, temperature: 0.7 });
    const r1 = await got;
    assert.equal(r1.metadata.source, 'llm');
    assert.ok(r1.response.length > 0);
    got = next(ch, 'response');
    ch.push('query', { query: q, temperature: 0.7 });
    const r2 = await got;
    assert.equal(r2.metadata.source, 'cache');
    assert.equal(r2.response, r1.response);

    const s = collectStream(ch);
    ch.push('stream_query', { query: `Explain machine learning ${randomUUID()} [[fake tokens=8 token_ms=20]]` });
    const st = await s;
    assert.ok(st.start && st.start.query.startsWith('Explain machine learning'));
    assert.ok(st.tokens >= 2, `streamed in several tokens (${st.tokens})`);

    got = next(ch, 'history');
    ch.push('get_history');
    const h = await got;
    assert.deepEqual(h.messages.map((m) => m.role), ['user', 'assistant', 'user', 'assistant', 'user', 'assistant']);
    assert.equal(h.messages[1].content, r1.response);
    assert.equal(h.messages[5].content, st.text);

    got = next(ch, 'pong');
    const reply = new Promise((resolve) => ch.push('ping').receive('ok', resolve));
    assert.ok((await got).timestamp);
    await reply;
  } finally {
    socket.disconnect();
  }
});

wsTest('WebSocket: heartbeats every second for 5 s, each answered, one connection', { timeout: 30000 }, async () => {
  const socket = connect('alice', { heartbeatIntervalMs: 1000 });
  let opens = 0, errors = 0;
  socket.onOpen(() => { opens++; });
  socket.onError(() => { errors++; });
  try {
    await opened(socket);
    const ch = socket.channel(`proxy:${sid()}`, {});
    await join(ch);
    await new Promise((r) => setTimeout(r, 5300));
    const sent = socket.log_.filter((e) => e.kind === 'push' && e.msg.startsWith('phoenix heartbeat'));
    await new Promise((r) => setTimeout(r, 500));
    const replies = socket.log_.filter((e) => e.kind === 'receive' && / phoenix phx_reply /.test(` ${e.msg} `));
    assert.ok(sent.length >= 4, `heartbeats sent: ${sent.length}`);
    assert.ok(replies.length >= sent.length, `replies ${replies.length} for ${sent.length} heartbeats`);
    assert.ok(replies.every((e) => e.data && e.data.status === 'ok'));
    assert.equal(socket.log_.filter((e) => /heartbeat timeout/.test(e.msg)).length, 0);
    assert.equal(opens, 1, 'never reconnected');
    assert.equal(errors, 0);
    assert.ok(socket.isConnected());
  } finally {
    socket.disconnect();
  }
});

wsTest('WebSocket: leave and rejoin; two topics streaming at once, each only its own tokens', { timeout: 60000 }, async () => {
  const socket = connect('alice');
  try {
    const id = sid();
    const ch = socket.channel(`proxy:${id}`, {});
    await join(ch);
    await new Promise((resolve, reject) => ch.leave().receive('ok', resolve).receive('timeout', reject));
    const again = socket.channel(`proxy:${id}`, {});
    await join(again);
    let got = next(again, 'pong');
    again.push('ping');
    await got;

    const b = socket.channel(`proxy:${sid()}`, {});
    await join(b);
    const A = Array.from({ length: 12 }, (_, i) => `apple${i}`).join(' ');
    const B = Array.from({ length: 12 }, (_, i) => `banana${i}`).join(' ');
    const sa = collectStream(again), sb = collectStream(b);
    again.push('stream_query', { query: `topic a ${randomUUID()} [[fake answer="${A}" token_ms=25]]` });
    b.push('stream_query', { query: `topic b ${randomUUID()} [[fake answer="${B}" token_ms=25]]` });
    const [ra, rb] = await Promise.all([sa, sb]);
    assert.equal(ra.text, A);
    assert.equal(rb.text, B);
    // streamed, not handed over whole: how many frames the 12 tokens make
    // depends on how the bridge's coalescing (PARLEY_COALESCE_MS) meets
    // the machine's scheduling (3 each on a loaded CI run), so not counted
    assert.ok(ra.tokens >= 2 && rb.tokens >= 2, `both streamed (${ra.tokens}, ${rb.tokens} tokens)`);
  } finally {
    socket.disconnect();
  }
});

wsTest('WebSocket: bad frames answered or dropped as core/phx.h says; the socket keeps working', { timeout: 30000 }, async () => {
  const socket = connect('alice');
  const seen = tap(socket);
  try {
    const ch = socket.channel(`proxy:${sid()}`, {});
    await join(ch);
    const raw = socket.conn;
    raw.send('garbage, not json');
    raw.send('{"not":"an array"}');
    raw.send('[null,"77","proxy:x","phx_join"]');
    raw.send('[null,"78","room:lobby","phx_join",{}]');
    raw.send(`[null,"79","proxy:zz","ping",{}]`);
    raw.send(`[null,"80","proxy:zz","query",{"pad":"${'a'.repeat(70000)}"}]`);
    await until(() => seen.some((m) => m.ref === '80'), 10000, 'the oversized frame\'s reply');
    const byRef = (r) => seen.find((m) => m.ref === r);
    assert.deepEqual(byRef('77').payload, { status: 'error', response: { reason: 'malformed message', code: 'bad_input' } });
    assert.deepEqual(byRef('78').payload, { status: 'error', response: { reason: 'unmatched topic', code: 'not_found' } });
    assert.deepEqual(byRef('79').payload, { status: 'error', response: { reason: 'unmatched topic', code: 'not_found' } });
    assert.deepEqual(byRef('80').payload, { status: 'error', response: { reason: 'message too large', code: 'too_large' } });
    // still the same, working socket
    const got = next(ch, 'pong');
    ch.push('ping');
    await got;
    assert.equal(raw.readyState, WebSocket.OPEN);
  } finally {
    socket.disconnect();
  }
});

wsTest('WebSocket: a heartbeat is answered at once, not after the frames queued before it', { timeout: 60000 }, async () => {
  assert.ok(DB, 'PARLEY_DB names the setup\'s database');
  const socket = connect('alice');
  const seen = tap(socket);
  let lock = null;
  try {
    const ch = socket.channel(`proxy:${sid()}`, {});
    await join(ch);
    // Another process holds the database (SQLite: its write lock;
    // PostgreSQL: the messages table), so the worker that runs this
    // connection's frames waits in the query (it stores the question) and
    // the ten get_history queue behind it; the heartbeat sent after them
    // must be answered by the event loop while they all still wait,
    // whatever the timing of their arrival.
    lock = holdLock(DB, AS_APP);
    await lock.taken;
    const jr = ch.joinRef(), raw = socket.conn;
    raw.send(JSON.stringify([jr, 'q1', ch.topic, 'query', { query: `held ${randomUUID()} [[fake tokens=3 token_ms=0]]` }]));
    for (let i = 0; i < 10; i++) raw.send(JSON.stringify([jr, `h${i}`, ch.topic, 'get_history', {}]));
    raw.send('[null,"hb1","phoenix","heartbeat",{}]');
    await until(() => seen.some((m) => m.ref === 'hb1'), 10000, 'the heartbeat reply while the frames before it wait');
    // and they do wait (the lock holds them): still no reply a moment later
    await new Promise((r) => setTimeout(r, 300));
    const early = seen.filter((m) => m.ref === 'q1' || /^h\d$/.test(m.ref || '')).map((m) => m.ref);
    assert.deepEqual(early, [], 'no reply to the frames queued before the heartbeat yet (they wait on the database)');
    const held = await lock.release();
    lock = null;
    assert.ok(held.heldMs > 0, `the lock was held: ${held.out.trim()}`);
    // then every queued frame is answered, in the order sent, after it
    await until(() => seen.some((m) => m.ref === 'h9'), 30000, 'the queued frames\' replies once the lock is gone');
    const order = seen.filter((m) => m.ref === 'q1' || m.ref === 'hb1' || /^h\d$/.test(m.ref || '')).map((m) => m.ref);
    assert.deepEqual(order, ['hb1', 'q1', ...Array.from({ length: 10 }, (_, i) => `h${i}`)]);
    assert.equal(seen.find((m) => m.ref === 'q1').payload.status, 'ok', 'the query was taken once the lock was gone');
  } finally {
    if (lock) await lock.release();
    socket.disconnect();
  }
});

// A raw WebSocket to /socket/websocket: 'open' (with its subprotocol) or
// the HTTP status of a refused upgrade.
function rawConnect(query, { protocols = [], headers = {} } = {}) {
  return new Promise((resolve) => {
    const ws = new WebSocket(`${WS_BASE}/socket/websocket?${query}`, protocols, { headers });
    const t = setTimeout(() => { ws.terminate(); resolve({ result: 'timeout' }); }, 10000);
    ws.on('open', () => {
      clearTimeout(t);
      ws.send('[null,"1","phoenix","heartbeat",{}]');
      ws.once('message', (m) => { ws.close(); resolve({ result: 'open', protocol: ws.protocol, reply: JSON.parse(String(m)) }); });
    });
    ws.on('unexpected-response', (req, res) => { clearTimeout(t); resolve({ result: res.statusCode }); req.destroy(); });
    ws.on('error', (e) => { clearTimeout(t); resolve({ result: `error ${e.message}` }); });
  });
}

wsTest('WebSocket: vsn other than 2.x is refused with 403', { timeout: 20000 }, async () => {
  const a = SECRET ? `&auth_token=${jwt('alice')}` : '';
  assert.equal((await rawConnect(`vsn=1.0.0${a}`)).result, 403);
  assert.equal((await rawConnect(`x=1${a}`)).result, 403);
  assert.equal((await rawConnect(`vsn=2.0.0${a}`)).result, 'open');
});

jwtTest('JWT: auth_token / token params and X-Phoenix-AuthToken header accepted; missing, forged or expired → 403', { timeout: 30000 }, async () => {
  const tok = jwt('alice');
  for (const q of [`auth_token=${tok}`, `token=${tok}`]) {
    const r = await rawConnect(`vsn=2.0.0&${q}`);
    assert.equal(r.result, 'open', q.split('=')[0]);
    assert.equal(r.reply[3], 'phx_reply');
  }
  assert.equal((await rawConnect('vsn=2.0.0', { headers: { 'X-Phoenix-AuthToken': tok } })).result, 'open');
  assert.equal((await rawConnect('vsn=2.0.0')).result, 403);
  assert.equal((await rawConnect(`vsn=2.0.0&auth_token=${jwt('alice', 'not-the-secret')}`)).result, 403);
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const head = b64({ alg: 'HS256', typ: 'JWT' }), body = b64({ sub: 'alice', exp: 1000 });
  const old = `${head}.${body}.${createHmac('sha256', SECRET).update(`${head}.${body}`).digest('base64url')}`;
  assert.equal((await rawConnect(`vsn=2.0.0&auth_token=${old}`)).result, 403);
  // the official client refused: it reports an error and never opens
  const socket = new Socket(`${WS_BASE}/socket`, { transport: WebSocket, params: { auth_token: 'bad' }, reconnectAfterMs: () => 60000 });
  let opens = 0;
  const err = new Promise((resolve) => socket.onError(resolve));
  socket.onOpen(() => { opens++; });
  socket.connect();
  await err;
  socket.disconnect();
  assert.equal(opens, 0);
});

// phoenix.js's authToken option: the JWT as a second subprotocol. lws 4.1
// drops such a long subprotocol list itself; parley-websocket.conf moves
// the entry into X-Parley-Phoenix-Protocol (this part runs through Apache).
jwtTest('JWT: phoenix.js authToken (the subprotocol form) accepted through Apache; a forged one → 403', { timeout: 30000 }, async () => {
  // btoa() of the JWT, as phoenix.js makes it; a '/' in it is not a valid
  // subprotocol character (ws and browsers refuse it), so take a JWT
  // whose base64 has none (another jti until then)
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const mint = (sub, jti, secret = SECRET) => {
    const head = b64({ alg: 'HS256', typ: 'JWT' });
    const body = b64({ sub, jti, exp: Math.floor(Date.now() / 1000) + 3600 });
    return `${head}.${body}.${createHmac('sha256', secret).update(`${head}.${body}`).digest('base64url')}`;
  };
  const entry = (t) => `base64url.bearer.phx.${Buffer.from(t).toString('base64').replace(/=/g, '')}`;
  let tok = null;
  for (let i = 0; !tok || entry(tok).includes('/'); i++) tok = mint('alice', `j${i}`);
  let forged = null;
  for (let i = 0; !forged || entry(forged).includes('/'); i++) forged = mint('alice', `f${i}`, 'not-the-secret');
  const r = await rawConnect('vsn=2.0.0', { protocols: ['phoenix', entry(tok)] });
  assert.equal(r.result, 'open');
  assert.equal(r.protocol, 'phoenix');
  assert.equal((await rawConnect('vsn=2.0.0', { protocols: ['phoenix', entry(forged)] })).result, 403);
  // the official client, with authToken and no auth_token param
  const socket = new Socket(`${WS_BASE}/socket`, { transport: WebSocket, authToken: tok, timeout: 15000, reconnectAfterMs: () => 60000 });
  socket.connect();
  try {
    await opened(socket);
    const ch = socket.channel(`proxy:${randomUUID()}`, {});
    await join(ch);
    ch.push('ping', {});
    const pong = await next(ch, 'pong');
    assert.equal(typeof pong.timestamp, 'string');
  } finally {
    socket.disconnect();
  }
});

jwtTest("JWT: another user's session is refused at join", { timeout: 30000 }, async () => {
  const alice = connect('alice'), bob = connect('bob');
  try {
    const id = sid();
    await join(alice.channel(`proxy:${id}`, {}));
    await assert.rejects(join(bob.channel(`proxy:${id}`, {})), (e) => e.reason === 'unauthorized');
    // bob's socket goes on with his own session
    const mine = bob.channel(`proxy:${sid()}`, {});
    await join(mine);
    const got = next(mine, 'pong');
    mine.push('ping');
    await got;
  } finally {
    alice.disconnect();
    bob.disconnect();
  }
});

wsTest('fallback: with longPollFallbackMs the first heartbeat is answered in time and the socket stays on WebSocket', { timeout: 30000 }, async () => {
  const socket = connect('alice', { longPollFallbackMs: 2500 });
  try {
    await opened(socket);
    await new Promise((r) => setTimeout(r, 3500));
    assert.ok(socket.primaryPassedHealthCheck, 'health check (first heartbeat) answered');
    assert.equal(socket.transport, WebSocket);
    assert.ok(!socket.log_.some((e) => /falling back/.test(e.msg)), 'did not fall back');
  } finally {
    socket.disconnect();
  }
});

fallbackTest('fallback: the WebSocket refused (bridge down) → the client lands on LongPoll and works', { timeout: 60000 }, async () => {
  const socket = connect('alice', { longPollFallbackMs: 1500 });
  try {
    await until(() => socket.transport === LongPoll && socket.isConnected(), 20000, 'LongPoll');
    assert.ok(socket.log_.some((e) => /falling back/.test(e.msg)));
    const ch = socket.channel(`proxy:${sid()}`, {});
    await join(ch);
    const s = collectStream(ch);
    ch.push('stream_query', { query: `over long-poll ${randomUUID()} [[fake tokens=5 token_ms=5]]` });
    assert.ok((await s).text.length > 0);
    const got = next(ch, 'pong');
    ch.push('ping');
    await got;
  } finally {
    socket.disconnect();
  }
});
