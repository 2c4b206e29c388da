-- PostgreSQL schema, version 9 (sql/009_presence.sql for SQLite) — process
-- presence for the admin page (issue 12 item 2, docs/admin.md). Written
-- only by core/storage/pg/presence.c. Same table and meaning as SQLite's:
-- one row per running server process (node, program, pid) rewritten every
-- few seconds with its open connections by transport (counts, JSON text)
-- and its view of the upstreams (upstreams, JSON text); stale rows are
-- ignored by readers and deleted by the next writer.
CREATE TABLE presence (
    node       text NOT NULL,
    program    text NOT NULL,
    pid        bigint NOT NULL,
    counts     text NOT NULL DEFAULT '{}',
    upstreams  text NOT NULL DEFAULT '[]',
    started_at bigint NOT NULL,
    updated_at bigint NOT NULL,
    PRIMARY KEY (node, program, pid)
);
CREATE INDEX presence_updated ON presence(updated_at);
