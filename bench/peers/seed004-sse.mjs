#!/usr/bin/env node
// seed004-sse.mjs — what seed 004's own team would run instead of Parley:
// a minimal Node server with seed 004's route (/work/shared/seeds/004_*.txt)
//
//   POST /api/chat/send {"conversationId", "content"}  →  text/event-stream
//   data: {"content": "..."}\n\n  per piece, then the response ends
//
// the answer streamed from the upstream with the `openai` npm client
// (chat.completions, stream: true) and every delta written as one SSE
// event, as the seed's ReadableStream does. NO persistence and NO cache:
// no conversation is looked up, no message stored (the seed's prisma
// calls are left out), so conversationId is only checked to be a string.
// Plain node:http instead of Next.js (less work per request, not more).
// For bench/streams-box.sh only (loopback).
//
//   node bench/peers/seed004-sse.mjs --upstream http://127.0.0.1:PORT \
//        [--port 0] [--port-file FILE] [--model M]
import http from 'node:http';
import { peerListen, peerSetup } from './common.mjs';

const P = peerSetup('seed004-sse.mjs');
const openai = P.openai;
const MODEL = P.model;

function json(res, status, obj) {
  const b = JSON.stringify(obj);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(b) });
  res.end(b);
}

const server = http.createServer((req, res) => {
  if (req.method !== 'POST' || req.url !== '/api/chat/send') {
    json(res, 404, { success: false, message: 'Not found' });
    return;
  }
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', async () => {
    let body;
    try {
      body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    } catch {
      body = null;
    }
    if (!body || typeof body.conversationId !== 'string' || typeof body.content !== 'string' ||
        body.content.length < 1) {
      json(res, 400, { success: false, message: 'Dados inválidos' });
      return;
    }
    const abort = new AbortController();
    res.on('close', () => { if (!res.writableFinished) abort.abort(); });
    let stream;
    try {
      stream = await openai.chat.completions.create({
        model: MODEL,
        messages: [{ role: 'user', content: body.content }],
        stream: true,
      }, { signal: abort.signal });
    } catch (e) {
      if (!res.headersSent) json(res, 500, { success: false, message: 'Erro ao enviar mensagem' });
      return;
    }
    res.writeHead(200, {
      'Content-Type': 'text/event-stream',
      'Cache-Control': 'no-cache',
      Connection: 'keep-alive',
    });
    try {
      for await (const chunk of stream) {
        const content = chunk.choices?.[0]?.delta?.content;
        if (content) res.write(`data: ${JSON.stringify({ content })}\n\n`);
      }
    } catch (e) {
      // the seed's controller.error(err): the response is cut
      res.destroy();
      return;
    }
    res.end();
  });
});
server.keepAliveTimeout = 5000;

peerListen(server, P, () => { server.closeAllConnections(); });
