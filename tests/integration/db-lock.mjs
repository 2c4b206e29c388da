// db-lock.mjs — another process holding a Parley database so that its
// writers wait:
//   SQLite (a file path): the sqlite3 CLI, run as the app account (the
//     prefix AS_APP, e.g. "setpriv --reuid=…", may be empty), in BEGIN
//     EXCLUSIVE with a write made: every writer of the database waits in
//     its busy handler (readers go on: the database is in WAL mode);
//   PostgreSQL (a postgresql:// URL): psql ($PSQL, default psql) in a
//     transaction holding LOCK TABLE messages IN EXCLUSIVE MODE: every
//     statement that writes messages waits (reads go on).
//
// holdLock(db, asApp) → { taken, release }
//   taken    a promise: resolves when the lock is held (rejects when the
//            client exits first, with what it printed);
//   release  () → a promise of { heldMs, out }: commits, waits for the
//            client to exit. Call it once; the lock is held until then.
import { spawn } from 'node:child_process';

export function holdLock(db, asApp = []) {
  const pg = /^postgres(ql)?:\/\//.test(db);
  const [cmd, ...args] = pg
    ? [process.env.PSQL || 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', db]
    : [...asApp, 'sqlite3', db];
  const p = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  let tookAt = 0;
  const exited = new Promise((r) => p.on('exit', r));
  const taken = new Promise((res, rej) => {
    p.stdout.on('data', (d) => { out += d; if (!tookAt && out.includes('locked')) { tookAt = Date.now(); res(); } });
    p.on('exit', (c) => rej(new Error(`${cmd} exited ${c} before the lock: ${out}`)));
  });
  p.stderr.on('data', (d) => { out += d; });
  p.stdin.write(pg
    ? "BEGIN;\nLOCK TABLE messages IN EXCLUSIVE MODE;\nSELECT 'locked';\n"
    : '.timeout 30000\nBEGIN EXCLUSIVE;\nINSERT INTO poll_sessions SELECT * FROM poll_sessions WHERE 0;\nSELECT \'locked\';\n');
  const release = async () => {
    p.stdin.end(pg ? 'COMMIT;\n\\q\n' : 'COMMIT;\n.quit\n');
    await exited;
    return { heldMs: tookAt ? Date.now() - tookAt : 0, out };
  };
  return { taken, release };
}
