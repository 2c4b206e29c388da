// supervise.mjs — restarts the peer when it dies, as systemd's
// Restart=always (RestartSec 100 ms, its default) or pm2 would: the
// counterpart of lighttpd restarting a parley.fcgi that died.
//
//   node bench/resumable/supervise.mjs --pid-file F -- node peer.mjs ARGS...
//
// F holds the running child's pid (rewritten at each start). SIGTERM: the
// child gets SIGTERM, then this exits.
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';

const i = process.argv.indexOf('--pid-file');
const PID_FILE = process.argv[i + 1];
const cmd = process.argv.slice(process.argv.indexOf('--') + 1);
let child = null;
let stopping = false;

function start() {
  child = spawn(cmd[0], cmd.slice(1), { stdio: 'inherit' });
  writeFileSync(PID_FILE, String(child.pid));
  child.on('exit', (code, sig) => {
    console.error(`supervise: pid ${child.pid} exited (${sig ?? code})`);
    if (!stopping) setTimeout(start, 100);
  });
}
start();
process.on('SIGTERM', () => {
  stopping = true;
  if (child && child.exitCode === null && child.signalCode === null) {
    child.once('exit', () => process.exit(0));
    child.kill('SIGTERM');
    setTimeout(() => { child.kill('SIGKILL'); process.exit(0); }, 3000).unref();
  } else process.exit(0);
});
