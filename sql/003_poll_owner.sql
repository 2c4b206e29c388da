-- 003_poll_owner.sql — long-poll sessions per owner: POST /api/poll/open
-- counts a user's open sessions (PARLEY_POLL_MAX_SESSIONS) inside its
-- write transaction; this index keeps that count to the user's own rows.
CREATE INDEX poll_sessions_owner ON poll_sessions(owner, expires_at);
