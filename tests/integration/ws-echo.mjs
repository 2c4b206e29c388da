// ws-echo.mjs — checks that a web server passes WebSocket upgrades through to
// the bridge's port, without needing the bridge (parley-ws).
//
//   node ws-echo.mjs serve PORT
//       Stands in for parley-ws on 127.0.0.1:PORT: accepts any WebSocket
//       upgrade (a correct Sec-WebSocket-Accept), then writes
//       "PATH <request path>\n" into the tunnel and echoes every byte after.
//   node ws-echo.mjs check URL
//       Opens URL (http://host:port/path) through the web server with a
//       WebSocket upgrade request, expects 101, the path line, and the echo
//       of a few bytes. Exit 0 on success, 1 with the reason otherwise.
//
// Only the handshake is checked: the bytes are not WebSocket frames, which is
// fine because a proxy in tunnel mode must not look at them.
import http from 'node:http';
import net from 'node:net';
import crypto from 'node:crypto';

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
const accept = (key) => crypto.createHash('sha1').update(key + GUID).digest('base64');
const [mode, arg] = process.argv.slice(2);

if (mode === 'serve') {
  const server = http.createServer((req, res) => { res.writeHead(426); res.end('upgrade required\n'); });
  server.on('upgrade', (req, socket) => {
    socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
      `Sec-WebSocket-Accept: ${accept(req.headers['sec-websocket-key'] || '')}\r\n\r\n`);
    socket.write(`PATH ${req.url}\n`);
    socket.pipe(socket);
    socket.on('error', () => {});
  });
  server.listen(Number(arg), '127.0.0.1', () => console.log(`ws-echo: listening on ${arg}`));
  for (const s of ['SIGTERM', 'SIGINT']) process.on(s, () => process.exit(0));
} else if (mode === 'check') {
  const u = new URL(arg);
  const key = crypto.randomBytes(16).toString('base64');
  const sock = net.connect(Number(u.port), u.hostname);
  const fail = (msg) => { console.log(msg); process.exit(1); };
  setTimeout(() => fail(`timeout; got: ${JSON.stringify(buf)}`), 5000).unref();
  let buf = '';
  const probe = `probe-${process.pid}`;
  sock.on('connect', () => sock.write(`GET ${u.pathname}${u.search} HTTP/1.1\r\nHost: ${u.host}\r\n` +
    'Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n' +
    `Sec-WebSocket-Key: ${key}\r\nOrigin: http://${u.host}\r\n\r\n`));
  let sent = false;
  sock.on('data', (d) => {
    buf += d.toString('latin1');
    const h = buf.indexOf('\r\n\r\n');
    if (h < 0) return;
    const head = buf.slice(0, h);
    if (!/^HTTP\/1\.1 101/.test(head)) fail(`no upgrade: ${head.split('\r\n')[0]}`);
    if (!head.toLowerCase().includes(`sec-websocket-accept: ${accept(key).toLowerCase()}`))
      fail('bad Sec-WebSocket-Accept');
    const body = buf.slice(h + 4);
    const want = `PATH ${u.pathname}${u.search}\n`;
    if (body.length >= want.length && !body.startsWith(want)) fail(`wrong path line: ${JSON.stringify(body)}`);
    if (body.startsWith(want) && !sent) { sent = true; sock.write(probe); }
    if (body === want + probe) { console.log(`101, path ${u.pathname}${u.search} and echo ok`); process.exit(0); }
  });
  sock.on('error', (e) => fail(`connection error: ${e.message}`));
  sock.on('close', () => fail(`closed early; got: ${JSON.stringify(buf)}`));
} else {
  console.error('usage: ws-echo.mjs serve PORT | check URL');
  process.exit(2);
}
