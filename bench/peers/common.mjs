// common.mjs — what the minimal Node peers of bench/peers/ share: their
// command line, the `openai` client on the simulated upstream, and the
// loopback listen that writes the chosen port to --port-file.
//
//   const p = peerSetup('seed000-ws.mjs');   // exits 2 without --upstream
//   p.openai, p.model; peerListen(server, p, onStop)
import { renameSync, writeFileSync } from 'node:fs';
import OpenAI from 'openai';

/* Parses --upstream URL [--port N] [--port-file FILE] [--model M]. */
export function peerSetup(name) {
  const args = process.argv.slice(2);
  const opt = (n, def) => {
    const i = args.indexOf(`--${n}`);
    return i >= 0 ? args[i + 1] : def;
  };
  const upstream = opt('upstream', '');
  if (!upstream) {
    console.error(`usage: ${name} --upstream URL [--port N] [--port-file FILE] [--model M]`);
    process.exit(2);
  }
  return {
    port: Number(opt('port', 0)),
    portFile: opt('port-file', ''),
    model: opt('model', 'llama3'),
    openai: new OpenAI({ baseURL: `${upstream}/v1`, apiKey: 'not-needed', maxRetries: 0 }),
  };
}

/* Listens on 127.0.0.1 (p.port, 0: any), writes the port to p.portFile
 * (atomically), and on SIGTERM / SIGINT closes the server, calls
 * onStop() (drop the open connections) and exits 0. */
export function peerListen(server, p, onStop) {
  server.listen(p.port, '127.0.0.1', () => {
    const { port } = server.address();
    if (p.portFile) {
      writeFileSync(`${p.portFile}.tmp`, String(port));
      renameSync(`${p.portFile}.tmp`, p.portFile);
    }
  });
  const stop = () => { server.close(); onStop(); setTimeout(() => process.exit(0), 200).unref(); };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}
