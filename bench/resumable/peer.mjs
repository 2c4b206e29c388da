// peer.mjs — the peer of bench/resumable.sh: what a team on the Vercel AI
// SDK runs for resumable chat streams, as the AI SDK's "Chatbot Resume
// Streams" guide builds it, on a plain Node HTTP server instead of Next.js:
//
//   POST /api/chat                 the request DefaultChatTransport sends
//                                  ({ id, messages, trigger }); the last user
//                                  message goes to the upstream with the
//                                  `openai` npm client (stream: true); its
//                                  deltas become a UI message stream
//                                  (createUIMessageStream, the `ai` package),
//                                  sent as SSE with pipeUIMessageStreamToResponse;
//                                  consumeSseStream hands a tee of the SSE
//                                  text to resumable-stream's
//                                  createNewResumableStream(streamId) and
//                                  records chat -> active stream id (Redis);
//                                  onFinish stores the chat's messages and
//                                  clears the active stream id (the guide's
//                                  saveChat)
//   GET  /api/chat/:id/stream      what reconnectToStream / useChat({ resume:
//                                  true }) calls: 204 when the chat has no
//                                  active stream (or resumable-stream says it
//                                  is done), else resumeExistingStream(id):
//                                  the stream from its start, then live
//   GET  /api/chat/:id/messages    the stored messages (404 when none)
//   GET  /_pid                     this process's pid (the bench kills it)
//
// Storage: one Redis (a private redis-server, no persistence) for
// resumable-stream's keys and pub/sub AND for the guide's "saveChat" (chat ->
// active stream id, the finished messages), so the peer has no database of
// its own. No auth, no rate limit, no cache (the bench says so).
//
//   node bench/resumable/peer.mjs --port N --redis redis://127.0.0.1:P \
//        --upstream http://127.0.0.1:Q [--port-file F]
import http from 'node:http';
import { writeFileSync } from 'node:fs';
import { createClient } from 'redis';
import OpenAI from 'openai';
import { createUIMessageStream, pipeUIMessageStreamToResponse, generateId, UI_MESSAGE_STREAM_HEADERS } from 'ai';
import { createResumableStreamContext } from 'resumable-stream/redis';

const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : dflt;
};
const PORT = Number(arg('port', '0'));
const REDIS = arg('redis', 'redis://127.0.0.1:6379');
const UPSTREAM = arg('upstream', 'http://127.0.0.1:11434');
const PORT_FILE = arg('port-file', '');

const redis = createClient({ url: REDIS });          // the app's own keys
const publisher = createClient({ url: REDIS });      // resumable-stream's
const subscriber = createClient({ url: REDIS });
for (const c of [redis, publisher, subscriber]) c.on('error', (e) => console.error('redis:', e.message));
await Promise.all([redis.connect(), publisher.connect(), subscriber.connect()]);

// Node keeps running until a promise settles: waitUntil needs nothing more
// than holding the promise (Next.js's `after` keeps a serverless function up).
const streamContext = createResumableStreamContext({
  waitUntil: (p) => { p.catch(() => {}); },
  publisher, subscriber,
});

const openai = new OpenAI({ baseURL: `${UPSTREAM}/v1`, apiKey: 'bench' });

const textOf = (m) => (m?.parts ?? []).filter((p) => p.type === 'text').map((p) => p.text).join('');

async function body(req) {
  const bufs = [];
  for await (const b of req) bufs.push(b);
  return JSON.parse(Buffer.concat(bufs).toString('utf8') || '{}');
}

function chatPost(req, res) {
  return body(req).then(({ id, messages }) => {
    if (typeof id !== 'string' || !Array.isArray(messages) || !messages.length) {
      res.writeHead(400, { 'content-type': 'application/json' });
      res.end('{"error":"id and messages"}');
      return;
    }
    const question = textOf(messages.at(-1));
    const stream = createUIMessageStream({
      originalMessages: messages,
      execute: async ({ writer }) => {
        writer.write({ type: 'start', messageId: generateId() });
        writer.write({ type: 'start-step' });
        writer.write({ type: 'text-start', id: 'text-1' });
        const upstream = await openai.chat.completions.create({
          model: 'bench', stream: true, messages: [{ role: 'user', content: question }],
        });
        for await (const c of upstream) {
          const d = c.choices?.[0]?.delta?.content;
          if (d) writer.write({ type: 'text-delta', id: 'text-1', delta: d });
        }
        writer.write({ type: 'text-end', id: 'text-1' });
        writer.write({ type: 'finish-step' });
        writer.write({ type: 'finish', finishReason: 'stop' });
      },
      onFinish: async ({ messages: all }) => {
        // the guide's saveChat({ id, messages, activeStreamId: null })
        await redis.set(`chat:${id}:messages`, JSON.stringify(all));
        await redis.del(`chat:${id}:active`);
      },
    });
    pipeUIMessageStreamToResponse({
      response: res, stream,
      async consumeSseStream({ stream: sse }) {
        const streamId = generateId();
        await streamContext.createNewResumableStream(streamId, () => sse);
        await redis.set(`chat:${id}:active`, streamId);   // saveChat({ id, activeStreamId })
      },
    });
  });
}

async function chatResume(id, res) {
  const active = await redis.get(`chat:${id}:active`);
  if (active == null) { res.writeHead(204); res.end(); return; }
  const stream = await streamContext.resumeExistingStream(active);
  if (!stream) { res.writeHead(204); res.end(); return; }   // done (null) or unknown (undefined)
  res.writeHead(200, UI_MESSAGE_STREAM_HEADERS);
  const reader = stream.getReader();
  res.once('close', () => { if (!res.writableFinished) reader.cancel().catch(() => {}); });
  for (;;) {
    const { done, value } = await reader.read();
    if (done || res.destroyed) break;
    res.write(value);
  }
  res.end();
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://x');
  let m;
  let p;
  if (req.method === 'POST' && url.pathname === '/api/chat') p = chatPost(req, res);
  else if (req.method === 'GET' && (m = url.pathname.match(/^\/api\/chat\/([^/]+)\/stream$/))) p = chatResume(m[1], res);
  else if (req.method === 'GET' && (m = url.pathname.match(/^\/api\/chat\/([^/]+)\/messages$/))) {
    p = redis.get(`chat:${m[1]}:messages`).then((v) => {
      res.writeHead(v ? 200 : 404, { 'content-type': 'application/json' });
      res.end(v ?? '{"error":"not found"}');
    });
  } else if (url.pathname === '/_pid') { res.end(String(process.pid)); return; }
  else { res.writeHead(404); res.end(); return; }
  p.catch((e) => {
    // what a Next.js route that throws answers: 500
    if (!res.headersSent) { res.writeHead(500, { 'content-type': 'text/plain' }); res.end(String(e?.message ?? e)); }
    else res.destroy();
  });
});
server.keepAliveTimeout = 65000;
server.listen(PORT, '127.0.0.1', () => {
  if (PORT_FILE) writeFileSync(PORT_FILE, String(server.address().port));
});
const stop = () => { server.close(); process.exit(0); };
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
