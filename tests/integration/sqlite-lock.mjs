// sqlite-lock.mjs — another process holding the write lock of a Parley
// SQLite database: the sqlite3 CLI, run as the app account (the prefix
// AS_APP, e.g. "setpriv --reuid=…", may be empty), in BEGIN EXCLUSIVE with
// a write made, so that every writer of the database waits in its busy
// handler (readers go on: the database is in WAL mode).
//
// holdLock(db, asApp) → { taken, release }
//   taken    a promise: resolves when the lock is held (rejects when
//            sqlite3 exits first, with what it printed);
//   release  () → a promise of { heldMs, out }: commits, waits for sqlite3
//            to exit. Call it once; the lock is held until then.
import { spawn } from 'node:child_process';

export function holdLock(db, asApp = []) {
  const [cmd, ...args] = asApp.length ? [...asApp, 'sqlite3'] : ['sqlite3'];
  const p = spawn(cmd, [...args, db], { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  let tookAt = 0;
  const exited = new Promise((r) => p.on('exit', r));
  const taken = new Promise((res, rej) => {
    p.stdout.on('data', (d) => { out += d; if (!tookAt && out.includes('locked')) { tookAt = Date.now(); res(); } });
    p.on('exit', (c) => rej(new Error(`sqlite3 exited ${c} before the lock: ${out}`)));
  });
  p.stderr.on('data', (d) => { out += d; });
  p.stdin.write('.timeout 30000\nBEGIN EXCLUSIVE;\nINSERT INTO poll_sessions SELECT * FROM poll_sessions WHERE 0;\nSELECT \'locked\';\n');
  const release = async () => {
    p.stdin.end('COMMIT;\n.quit\n');
    await exited;
    return { heldMs: tookAt ? Date.now() - tookAt : 0, out };
  };
  return { taken, release };
}
