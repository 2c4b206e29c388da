-- 006_usage.sql — token accounting and daily budgets (issue 11 item 3,
-- docs/usage.md). Written only by core/usage.c.
-- usage_events: one row per generation that used tokens, charged when it
-- ended (done, stopped, or failed after tokens) in the transaction that
-- recorded its end. user_id is the JWT sub of the user who started it (""
-- in open mode); message_id is the assistant message's id when the
-- generation stored one (conversations), else NULL.
CREATE TABLE usage_events (
    id INTEGER PRIMARY KEY,
    user_id TEXT NOT NULL,
    channel TEXT NOT NULL,
    job_id INTEGER,
    message_id TEXT,
    model TEXT NOT NULL DEFAULT '',
    upstream TEXT NOT NULL DEFAULT '',
    outcome TEXT NOT NULL CHECK (outcome IN ('done', 'stopped', 'error')),
    prompt_tokens INTEGER NOT NULL CHECK (prompt_tokens >= 0),
    completion_tokens INTEGER NOT NULL CHECK (completion_tokens >= 0),
    at_ms INTEGER NOT NULL
);
CREATE INDEX usage_events_user ON usage_events(user_id, at_ms);
CREATE INDEX usage_events_message ON usage_events(message_id) WHERE message_id IS NOT NULL;
-- usage_daily: per user per UTC day (days since 1970-01-01) the sums of
-- usage_events, kept by an upsert in the same transaction (the budget check
-- reads one row).
CREATE TABLE usage_daily (
    user_id TEXT NOT NULL,
    day INTEGER NOT NULL,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    generations INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, day)
) WITHOUT ROWID;
-- usage_budgets: per-user daily budget overrides set by `parley budget set`
-- (tokens per UTC day; 0 = unlimited).
CREATE TABLE usage_budgets (
    user_id TEXT PRIMARY KEY,
    tokens INTEGER NOT NULL CHECK (tokens >= 0),
    updated_at INTEGER NOT NULL
);
