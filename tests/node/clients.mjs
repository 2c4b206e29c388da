// clients.mjs — the seed protocols' reference clients, as the seeds' own
// front ends behave (seed 000 TicketAIChat, seed 001 WebSocketService,
// seed 002 ChatbotWebSocket), a raw WebSocket helper and Parley's long-poll
// client (DESIGN §3), a JWT maker and a REST helper, shared by the Node
// suites (ws-bridge.test.mjs, tests/integration/two-nodes.mjs, seed001.mjs,
// stop.mjs, budget.mjs, anonymous.mjs, anonymous-protocols.mjs).
//
// SLOW: 3 when the bridge under test was built with ASan (timeouts
// stretch), else 1.
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const BIN = join(ROOT, process.env.BUILD || 'build', 'parley-ws');
export const SANITIZED = existsSync(BIN) && readFileSync(BIN).includes('__asan_init');
export const SLOW = SANITIZED ? 3 : 1;

// Opens a client. Resolves with { ws, msgs, closed } once open (or rejects
// with the HTTP status when the upgrade is refused). msgs collects parsed
// frames; closed resolves with { code, reason }.
export function connect(url, opts = {}) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, opts);
    const msgs = [];
    const waiters = [];
    let closeInfo = null;
    const closed = new Promise((res) => ws.on('close', (code, reason) => {
      closeInfo = { code, reason: reason.toString() };
      res(closeInfo);
    }));
    ws.on('message', (data) => {
      const m = JSON.parse(data.toString());
      msgs.push(m);
      for (const w of waiters.splice(0)) w();
    });
    ws.on('unexpected-response', (req, res) => {
      reject(Object.assign(new Error(`HTTP ${res.statusCode}`), { status: res.statusCode }));
      req.destroy();
    });
    ws.on('error', (e) => reject(e));
    ws.on('open', () => resolve({
      ws, msgs, closed,
      get closeInfo() { return closeInfo; },
      // resolves with the messages once pred(msgs) is true
      async until(pred, ms = 5000 * SLOW) {
        const t0 = Date.now();
        while (!pred(msgs)) {
          if (Date.now() - t0 > ms) throw new Error(`timeout; got ${JSON.stringify(msgs)}`);
          await Promise.race([new Promise((r) => waiters.push(r)), sleep(50)]);
        }
        return msgs;
      },
    }));
  });
}

export const types = (msgs) => msgs.map((m) => m.type);

// ---- seed 000: the React hook's message handling, as a small state machine
export class TicketAIChat {
  constructor(url, ticketBody, opts) {
    this.aiResponse = ''; this.isLoading = false; this.error = null; this.log = [];
    this.done = new Promise((res) => { this.finish = res; });
    this.ws = new WebSocket(url, opts);
    this.ws.onopen = () => {
      this.isLoading = true; this.error = null;
      if (ticketBody !== null) this.ws.send(JSON.stringify({ ticketBody }));
    };
    this.ws.onmessage = (event) => {
      const data = JSON.parse(event.data);
      this.log.push(data);
      switch (data.type) {
        case 'stream': this.aiResponse += data.content || ''; break;
        case 'cached': this.aiResponse = data.response || ''; break;
        case 'done': this.isLoading = false; this.finish('done'); break;
        case 'error': this.error = data.message || 'Erro desconhecido'; this.isLoading = false;
          this.finish('error'); break;
        default: break;
      }
    };
    this.ws.onerror = () => { this.error = 'Erro ao conectar ao servidor WebSocket'; this.finish('ws-error'); };
    this.closed = new Promise((res) => { this.ws.onclose = (e) => res({ code: e.code, reason: e.reason }); });
  }
  close() { if (this.ws.readyState === WebSocket.OPEN) this.ws.close(); }
}

// ---- seed 001: WebSocketService (reconnect made optional for tests)
export class WebSocketService {
  constructor(baseUrl, { token = null, reconnect = false, headers } = {}) {
    this.baseUrl = baseUrl; this.token = token; this.reconnectOn = reconnect;
    this.headers = headers; this.ws = null; this.sessionId = null; this.listeners = new Map();
  }
  connect(sessionId) {
    this.sessionId = sessionId;
    const q = this.token === null ? '' : `?token=${this.token}`;
    this.ws = new WebSocket(`${this.baseUrl}/ws/${sessionId}${q}`, { headers: this.headers });
    this.ws.onopen = () => this.emit('connected');
    this.ws.onmessage = (event) => this.handleMessage(JSON.parse(event.data));
    this.ws.onerror = (error) => this.emit('error', error);
    this.ws.onclose = (e) => { this.emit('disconnected', e); if (this.reconnectOn) this.reconnect(); };
  }
  handleMessage(data) {
    switch (data.type) {
      case 'stream_start': this.emit('streamStart', data); break;
      case 'stream_chunk': this.emit('streamChunk', data); break;
      case 'stream_end': this.emit('streamEnd', data); break;
      case 'error': this.emit('error', data); break;
      default: this.emit('message', data);
    }
  }
  sendMessage(content, metadata = {}) {
    if (this.ws?.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify({ type: 'message', content, metadata,
        timestamp: new Date().toISOString() }));
    }
  }
  on(event, cb) { if (!this.listeners.has(event)) this.listeners.set(event, []); this.listeners.get(event).push(cb); }
  emit(event, data) { (this.listeners.get(event) || []).forEach((cb) => cb(data)); }
  next(event, ms = 5000 * SLOW) {
    return new Promise((res, rej) => {
      const t = setTimeout(() => rej(new Error(`no ${event}`)), ms);
      this.on(event, (d) => { clearTimeout(t); res(d); });
    });
  }
  async reconnect() { await sleep(3000); this.connect(this.sessionId); }
  close() { this.reconnectOn = false; this.ws?.close(); }
}

// ---- seed 002: ChatbotWebSocket
export class ChatbotWebSocket {
  constructor(base, brandId) {
    this.base = base; this.brandId = brandId; this.socket = null; this.conversationId = null;
    this.currentMessage = ''; this.events = []; this.products = null; this.confidence = undefined;
    this.errors = []; this.pongs = [];
  }
  connect() {
    this.socket = new WebSocket(`${this.base}/ws/chat/${this.brandId}`);
    this.opened = new Promise((res, rej) => { this.socket.onopen = res; this.socket.onerror = rej; });
    this.socket.onmessage = (event) => this.handleMessage(JSON.parse(event.data));
    this.closed = new Promise((res) => { this.socket.onclose = (e) => res({ code: e.code, reason: e.reason }); });
    return this.opened;
  }
  handleMessage(message) {
    this.events.push(message);
    switch (message.type) {
      case 'welcome': this.welcome = message.data; break;
      case 'chunk': this.currentMessage += message.data.content;
        this.conversationId = message.data.conversation_id; break;
      case 'complete': this.conversationId = message.data.conversation_id;
        this.products = message.data.suggested_products; this.confidence = message.data.confidence_score;
        this.completed?.(); break;
      case 'error': this.errors.push(message.data.message); this.completed?.(); break;
      case 'pong': this.pongs.push(message.data); break;
      default: throw new Error(`Unknown message type: ${message.type}`);
    }
  }
  sendMessage(text, isVoice = false) {
    this.currentMessage = '';
    const done = new Promise((res) => { this.completed = res; });
    this.socket.send(JSON.stringify({ type: 'chat', data: { message: text,
      conversation_id: this.conversationId, voice: isVoice } }));
    return done;
  }
  sendPing() { this.socket.send(JSON.stringify({ type: 'ping', data: {} })); }
  close() { this.socket?.close(); }
}


// A long-poll client (DESIGN §3, served by parley.fcgi) of a WebSocket path.
// The generic long-poll transport (/api/poll/*): token (a JWT, sent as
// Bearer) and headers (sent on every request) are optional. After open(),
// opened is the open response ({ status, headers, json }) and visitor the
// anonymous visitor token it issued, if any (docs/anonymous.md).
export class LongPoll {
  constructor(base, path, { token = null, headers = {} } = {}) {
    this.base = base; this.path = path; this.cursor = 0; this.msgs = [];
    this.headers = { ...headers, ...(token ? { authorization: `Bearer ${token}` } : {}) };
  }
  async open() {
    const r = await api(this.base, 'POST', '/api/poll/open', { headers: this.headers, body: { path: this.path } });
    assert.equal(r.status, 200, r.text);
    this.opened = r;
    this.sid = r.json.sid;
    this.visitor = r.json.visitor;
  }
  async send(frame) {
    const r = await fetch(`${this.base}/api/poll/${this.sid}`, { method: 'POST',
      headers: { ...this.headers, 'content-type': 'application/json' }, body: JSON.stringify(frame) });
    assert.equal(r.status, 202, await r.clone().text());
  }
  async until(pred, ms = 15000 * SLOW) {
    const t0 = Date.now();
    while (!pred(this.msgs)) {
      assert.ok(Date.now() - t0 < ms, `long-poll timeout; got ${JSON.stringify(this.msgs).slice(0, 2000)}`);
      const r = await fetch(`${this.base}/api/poll/${this.sid}?cursor=${this.cursor}&wait=5`,
        { headers: this.headers });
      assert.equal(r.status, 200);
      const j = await r.json();
      this.msgs.push(...j.messages);
      this.cursor = j.cursor;
    }
    return this.msgs;
  }
  text() { return this.msgs.filter((m) => m.type === 'stream').map((m) => m.content).join(''); }
}

// An HS256 JWT for sub signed with secret, valid an hour, with claims.
export function jwtHS256(secret, sub, claims = {}) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const head = b64({ alg: 'HS256', typ: 'JWT' });
  const body = b64({ sub, exp: Math.floor(Date.now() / 1000) + 3600, ...claims });
  const sig = createHmac('sha256', secret).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}

// One REST call: { status, headers (the response's Headers), json (null
// when the body is not JSON), text }.
export async function api(base, method, path, { token, body, headers = {} } = {}) {
  const r = await fetch(`${base}${path}`, {
    method,
    headers: { ...headers, ...(token ? { authorization: `Bearer ${token}` } : {}),
      ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    body: body !== undefined ? JSON.stringify(body) : undefined,
  });
  const text = await r.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: r.status, headers: r.headers, json, text };
}

export const ended = (m) => m.some((x) => x.type === 'done' || x.type === 'error');
