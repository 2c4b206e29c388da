// sec-input-db.mjs — read-only SQL on the database the servers of
// t0960-sec-input.sh / t0961-pg-sec-input.sh use, for sec-input.mjs and
// sec-input-scale.mjs: SQLite at PARLEY_DB_PATH (the sqlite3 CLI), or
// PostgreSQL when PARLEY_PG_URL is set (psql, PARLEY_PSQL or the one on
// PATH). Every value goes into a query as a hex literal (lit), so the
// test's hostile strings never need quoting. Results come back as text:
// rows on lines, columns separated by "|", on both backends.
import { execFileSync } from 'node:child_process';

const DB = process.env.PARLEY_DB_PATH;
const PG = process.env.PARLEY_PG_URL;
if (!DB && !PG) throw new Error('PARLEY_DB_PATH or PARLEY_PG_URL');

export const backend = PG ? 'postgresql' : 'sqlite';

// Runs q; its output, trimmed. Bounded: 30 s (SQLite waits up to 10 s for
// a writer's lock).
export function sql(q) {
  if (PG) {
    return execFileSync(process.env.PARLEY_PSQL || 'psql', ['-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-d', PG, '-c', q],
      { encoding: 'utf8', timeout: 30000, env: { ...process.env, PGCONNECT_TIMEOUT: '5' } }).trim();
  }
  return execFileSync('sqlite3', ['-bail', '-cmd', '.timeout 10000', DB, q], { encoding: 'utf8', timeout: 30000 }).trim();
}

// s's UTF-8 bytes in upper-case hex (what hexOf reads back).
export const hex = (s) => Buffer.from(s, 'utf8').toString('hex').toUpperCase();
// s as a text literal of the backend, whatever it holds.
export const lit = (s) => (PG ? `convert_from('\\x${hex(s)}'::bytea, 'UTF8')` : `CAST(X'${hex(s)}' AS TEXT)`);
// The expression reading text column col as hex of its UTF-8 bytes.
export const hexOf = (col) => (PG ? `upper(encode(convert_to(${col}, 'UTF8'), 'hex'))` : `hex(${col})`);
// The condition "col holds only A-Z a-z 0-9 . _ - (and is not empty)".
export const idOnly = (col) => (PG ? `${col} ~ '^[A-Za-z0-9._-]+$'` : `(${col} <> '' AND ${col} NOT GLOB '*[^A-Za-z0-9._-]*')`);
// The names of the schema's tables, sorted, one a line.
export const tablesQuery = PG
  ? "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY 1"
  : "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name";

// The database's own consistency check: SQLite's PRAGMA integrity_check
// ("ok"); on PostgreSQL, whose pages the server checks itself, that every
// table can be read whole (a count of each) and no message or poll-outbox
// row lost its parent — "ok" or what is wrong.
export function consistency() {
  const bad = [];
  if (!PG) {
    const r = sql('PRAGMA integrity_check');
    if (r !== 'ok') bad.push(r);
  } else {
    for (const t of sql(tablesQuery).split('\n').filter(Boolean)) sql(`SELECT count(*) FROM "${t}"`);
  }
  const orphanMsgs = Number(sql('SELECT count(*) FROM messages m WHERE NOT EXISTS (SELECT 1 FROM conversations c WHERE c.id = m.conversation_id)'));
  if (orphanMsgs) bad.push(`${orphanMsgs} messages without their conversation`);
  const orphanOut = Number(sql('SELECT count(*) FROM poll_outbox o WHERE NOT EXISTS (SELECT 1 FROM poll_sessions s WHERE s.sid = o.sid)'));
  if (orphanOut) bad.push(`${orphanOut} poll_outbox rows without their session`);
  return bad.length ? bad.join('; ') : 'ok';
}
