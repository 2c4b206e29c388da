-- PostgreSQL schema, version 10 (sql/010_openai.sql for SQLite) — the
-- OpenAI-compatible endpoint (issue 15 item 1, docs/openai.md). Written
-- only by core/storage/pg/openai_store.c. Same tables and meaning as
-- SQLite's: API keys stored as the SHA-256 of the key (key_hash) with a
-- display prefix; the streaming requests following a generation
-- (openai_followers); request counts by endpoint and outcome.
CREATE TABLE api_keys (
    id         text PRIMARY KEY,
    user_id    text NOT NULL,
    name       text NOT NULL DEFAULT '',
    prefix     text NOT NULL,
    key_hash   text NOT NULL UNIQUE,
    created_at bigint NOT NULL,
    revoked_at bigint
);
CREATE INDEX api_keys_user ON api_keys(user_id, created_at);

CREATE TABLE openai_followers (
    job_id   bigint NOT NULL,
    follower text NOT NULL,
    since    bigint NOT NULL,
    PRIMARY KEY (job_id, follower)
);

CREATE TABLE openai_requests (
    endpoint text NOT NULL,
    outcome  text NOT NULL,
    n        bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (endpoint, outcome)
);
