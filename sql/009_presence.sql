-- 009_presence.sql — process presence for the admin page (issue 12 item 2,
-- docs/admin.md). Written only by core/presence.c.
-- One row per running server process (parley.fcgi, parley-ws) on any node:
-- every few seconds (PRESENCE_EVERY_MS) each process rewrites its row with
-- its open connections by transport (counts, a JSON object such as
-- {"websocket": 2, "phoenix_websocket": 1, "sse": 0}) and the upstreams as
-- it sees them (upstreams, a JSON array: breaker state and counters are
-- per process). A process deletes its row when it stops; a row not
-- rewritten for PRESENCE_STALE_MS belongs to a process that died: readers
-- ignore it and the next writer deletes it.
CREATE TABLE presence (
    node       TEXT NOT NULL,              -- the host name
    program    TEXT NOT NULL,              -- 'parley.fcgi' or 'parley-ws'
    pid        INTEGER NOT NULL,
    counts     TEXT NOT NULL DEFAULT '{}',
    upstreams  TEXT NOT NULL DEFAULT '[]',
    started_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (node, program, pid)
);
CREATE INDEX presence_updated ON presence(updated_at);
