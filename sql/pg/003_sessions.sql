-- PostgreSQL schema, version 3 (issue 10): long-poll sessions and rate
-- limits, as sql/001_init.sql's poll_sessions, poll_outbox and rate_hits
-- and sql/003_poll_owner.sql's index: same tables, columns and indexes
-- (`parley db copy` moves rows by table and column name). Times are
-- milliseconds since the epoch (bigint).
--
-- What keeps them right with several nodes writing at once
-- (core/storage/pg/pollsess.c, core/storage/pg/ratelimit.c):
--   - a request that changes a session first takes its poll_sessions row
--     lock (SELECT ... FOR NO KEY UPDATE, or UPDATE ... WHERE <condition>
--     RETURNING for poll_lock's lease), then touches its outbox: two
--     requests of one session on two nodes run one after the other, and
--     locks are always taken session row first, outbox rows after;
--   - a session's frames are numbered from next_seq under that row lock;
--     (sid, seq) is the primary key, so a frame can never be stored twice;
--   - counting an owner's sessions (poll_open) and a user's hits
--     (ratelimit) happens under a transaction-level advisory lock keyed by
--     the owner / user, so count-then-insert is atomic across nodes.

CREATE TABLE poll_sessions (
    sid          text PRIMARY KEY,
    path         text NOT NULL,
    owner        text NOT NULL DEFAULT '',
    state        text NOT NULL DEFAULT '{}',     -- adapter state, JSON
    next_seq     bigint NOT NULL DEFAULT 1,
    version      bigint NOT NULL DEFAULT 0,      -- bumped on every save
    lock_owner   text,                           -- short lease while a request updates state
    lock_expires bigint,
    created_at   bigint NOT NULL,
    last_seen    bigint NOT NULL,
    expires_at   bigint NOT NULL
);
CREATE INDEX poll_sessions_expiry ON poll_sessions(expires_at);
CREATE INDEX poll_sessions_owner ON poll_sessions(owner, expires_at);

CREATE TABLE poll_outbox (
    sid         text NOT NULL REFERENCES poll_sessions(sid) ON DELETE CASCADE,
    seq         bigint NOT NULL,
    frame       text NOT NULL,
    created_at  bigint NOT NULL,
    PRIMARY KEY (sid, seq)
);

-- Sliding-window rate limiting shared by every node.
CREATE TABLE rate_hits (
    user_id     text NOT NULL,
    at_ms       bigint NOT NULL
);
CREATE INDEX rate_hits_user ON rate_hits(user_id, at_ms);
