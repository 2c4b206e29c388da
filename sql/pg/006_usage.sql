-- PostgreSQL schema, version 6 (sql/006_usage.sql for SQLite) — token
-- accounting and daily budgets (issue 11 item 3, docs/usage.md). Written
-- only by core/storage/pg/usage.c. Same tables and meaning as SQLite's:
-- usage_events one row per generation that used tokens; usage_daily the
-- per-user per-UTC-day sums (day = days since 1970-01-01), kept by an
-- INSERT ... ON CONFLICT DO UPDATE in the same transaction, so concurrent
-- charges from any number of nodes add up exactly; usage_budgets the CLI's
-- per-user overrides (0 = unlimited).
CREATE TABLE usage_events (
    id bigserial PRIMARY KEY,
    user_id text NOT NULL,
    channel text NOT NULL,
    job_id bigint,
    message_id text,
    model text NOT NULL DEFAULT '',
    upstream text NOT NULL DEFAULT '',
    outcome text NOT NULL CHECK (outcome IN ('done', 'stopped', 'error')),
    prompt_tokens bigint NOT NULL CHECK (prompt_tokens >= 0),
    completion_tokens bigint NOT NULL CHECK (completion_tokens >= 0),
    at_ms bigint NOT NULL
);
CREATE INDEX usage_events_user ON usage_events(user_id, at_ms);
CREATE INDEX usage_events_message ON usage_events(message_id) WHERE message_id IS NOT NULL;
CREATE TABLE usage_daily (
    user_id text NOT NULL,
    day bigint NOT NULL,
    prompt_tokens bigint NOT NULL DEFAULT 0,
    completion_tokens bigint NOT NULL DEFAULT 0,
    generations bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, day)
);
CREATE TABLE usage_budgets (
    user_id text PRIMARY KEY,
    tokens bigint NOT NULL CHECK (tokens >= 0),
    updated_at bigint NOT NULL
);
