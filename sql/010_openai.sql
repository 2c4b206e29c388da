-- 010_openai.sql — the OpenAI-compatible endpoint (issue 15 item 1,
-- docs/openai.md). Written only by core/openai_store.c.
--
-- api_keys: keys that `parley keys create` makes for a user. Only the
-- SHA-256 of the whole key is stored (key_hash, 64 hex digits); prefix keeps
-- its first characters for `parley keys list`. A key is valid while
-- revoked_at is NULL.
CREATE TABLE api_keys (
    id         TEXT PRIMARY KEY,           -- 'key_<16 hex>'
    user_id    TEXT NOT NULL,
    name       TEXT NOT NULL DEFAULT '',
    prefix     TEXT NOT NULL,
    key_hash   TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE INDEX api_keys_user ON api_keys(user_id, created_at);

-- openai_followers: the streaming requests that follow a generation right
-- now, one row per request (follower, a random id) while it is connected.
-- A client that disconnects deletes its row and stops the job only when no
-- row is left. A process that dies leaves its rows: the job then simply
-- runs to its end (and is cached when it may be).
CREATE TABLE openai_followers (
    job_id   INTEGER NOT NULL,
    follower TEXT NOT NULL,
    since    INTEGER NOT NULL,
    PRIMARY KEY (job_id, follower)
);

-- openai_requests: requests of each endpoint by outcome, for /api/metrics
-- (every process of every node adds to the same rows).
CREATE TABLE openai_requests (
    endpoint TEXT NOT NULL,
    outcome  TEXT NOT NULL,
    n        INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (endpoint, outcome)
);
