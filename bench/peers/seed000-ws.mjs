#!/usr/bin/env node
// seed000-ws.mjs — what seed 000's own team would run instead of Parley:
// a minimal Node server speaking seed 000's WebSocket protocol
// (/work/shared/seeds/000_*.txt) over the `ws` package, each ticket's
// answer streamed from the upstream with the `openai` npm client
// (stream: true). NO persistence and NO cache: the seed's "cached" frame
// is never sent, nothing is stored, a reload loses the answer. For
// bench/streams-box.sh only (loopback).
//
//   node bench/peers/seed000-ws.mjs --upstream http://127.0.0.1:PORT \
//        [--port 0] [--port-file FILE] [--model M]
//
//   ws://HOST/api/websocket/chat/{ticketId}
//   client → server (once): {"ticketBody": "..."}
//   server → client: {"type":"stream","content":"..."} per piece,
//                    {"type":"done"} at the end, {"type":"error","message"} on failure
import http from 'node:http';
import { peerListen, peerSetup } from './common.mjs';
import { WebSocketServer } from 'ws';

const P = peerSetup('seed000-ws.mjs');
const openai = P.openai;
const MODEL = P.model;

const server = http.createServer((req, res) => {
  res.writeHead(404, { 'Content-Type': 'application/json' });
  res.end('{"error":"not found"}\n');
});
const wss = new WebSocketServer({ noServer: true });
server.on('upgrade', (req, socket, head) => {
  const m = /^\/api\/websocket\/chat\/([^/?]+)/.exec(req.url);
  if (!m) {
    socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
    return;
  }
  wss.handleUpgrade(req, socket, head, (ws) => session(ws, decodeURIComponent(m[1])));
});

function session(ws, ticketId) {
  let started = false;
  const abort = new AbortController();
  const send = (obj) => { if (ws.readyState === ws.OPEN) ws.send(JSON.stringify(obj)); };
  ws.on('close', () => abort.abort());
  ws.on('error', () => abort.abort());
  ws.on('message', async (raw) => {
    if (started) return;              // one ticket body per connection
    started = true;
    let body;
    try {
      body = JSON.parse(raw.toString());
    } catch {
      send({ type: 'error', message: 'invalid JSON' });
      return;
    }
    if (!body || typeof body.ticketBody !== 'string' || !body.ticketBody.trim()) {
      send({ type: 'error', message: 'ticketBody is required' });
      return;
    }
    try {
      const stream = await openai.chat.completions.create({
        model: MODEL,
        messages: [{ role: 'user', content: body.ticketBody }],
        stream: true,
      }, { signal: abort.signal });
      for await (const chunk of stream) {
        const content = chunk.choices?.[0]?.delta?.content;
        if (content) send({ type: 'stream', content });
      }
      send({ type: 'done' });
    } catch (e) {
      if (!abort.signal.aborted) send({ type: 'error', message: `ticket ${ticketId}: ${e.message}` });
    }
  });
}

peerListen(server, P, () => { for (const c of wss.clients) c.terminate(); });
