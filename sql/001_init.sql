-- 001_init.sql — Parley's first schema.
-- Applied by core/db.c inside one transaction; PRAGMA user_version = 1 after.
-- Times are unix milliseconds (INTEGER) unless the column says otherwise.

-- Seed 000: helpdesk tickets (the body is what the technician's front end sends).
CREATE TABLE tickets (
    id          TEXT PRIMARY KEY,
    body        TEXT NOT NULL DEFAULT '',
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

-- Seed 002 brands and their products (FTS5 below for suggestions).
CREATE TABLE brands (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    welcome       TEXT NOT NULL DEFAULT '',
    system_prompt TEXT NOT NULL DEFAULT '',
    active        INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
    created_at    INTEGER NOT NULL
);

CREATE TABLE products (
    pk             INTEGER PRIMARY KEY,
    id             TEXT NOT NULL UNIQUE,
    brand_id       TEXT NOT NULL REFERENCES brands(id) ON DELETE CASCADE,
    name           TEXT NOT NULL,
    description    TEXT NOT NULL DEFAULT '',
    category       TEXT NOT NULL DEFAULT '',
    price          REAL NOT NULL DEFAULT 0,
    features       TEXT NOT NULL DEFAULT '[]',   -- JSON array of strings
    specifications TEXT NOT NULL DEFAULT '{}',   -- JSON object
    availability   INTEGER NOT NULL DEFAULT 1 CHECK (availability IN (0, 1))
);
CREATE INDEX products_brand ON products(brand_id);

CREATE VIRTUAL TABLE products_fts USING fts5(
    name, description, category, features,
    content='products', content_rowid='pk'
);
CREATE TRIGGER products_ai AFTER INSERT ON products BEGIN
    INSERT INTO products_fts(rowid, name, description, category, features)
    VALUES (new.pk, new.name, new.description, new.category, new.features);
END;
CREATE TRIGGER products_ad AFTER DELETE ON products BEGIN
    INSERT INTO products_fts(products_fts, rowid, name, description, category, features)
    VALUES ('delete', old.pk, old.name, old.description, old.category, old.features);
END;
CREATE TRIGGER products_au AFTER UPDATE ON products BEGIN
    INSERT INTO products_fts(products_fts, rowid, name, description, category, features)
    VALUES ('delete', old.pk, old.name, old.description, old.category, old.features);
    INSERT INTO products_fts(rowid, name, description, category, features)
    VALUES (new.pk, new.name, new.description, new.category, new.features);
END;

-- One conversation for seed 001 sessions, seed 004 conversations,
-- seed 003 channel sessions, seed 002 brand chats and seed 000 ticket chats.
CREATE TABLE conversations (
    id          TEXT PRIMARY KEY,                 -- UUID or the client's session id
    owner       TEXT NOT NULL,                    -- JWT sub ('' in open mode)
    kind        TEXT NOT NULL CHECK (kind IN ('chat', 'ticket', 'brand', 'phoenix', 'sse')),
    ticket_id   TEXT REFERENCES tickets(id) ON DELETE SET NULL,
    brand_id    TEXT REFERENCES brands(id) ON DELETE SET NULL,
    title       TEXT NOT NULL DEFAULT '',
    status      TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'idle', 'closed')),
    settings    TEXT NOT NULL DEFAULT '{}',       -- JSON: model_preference, language...
    metadata    TEXT NOT NULL DEFAULT '{}',       -- JSON: user_agent, ip_address...
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX conversations_owner ON conversations(owner, updated_at DESC);

CREATE TABLE messages (
    id              TEXT PRIMARY KEY,             -- UUID
    conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    role            TEXT NOT NULL CHECK (role IN ('user', 'assistant', 'system')),
    content         TEXT NOT NULL,
    tokens          INTEGER,
    processing_ms   INTEGER,
    model           TEXT,
    helpful         INTEGER CHECK (helpful IN (0, 1)),
    rating          INTEGER CHECK (rating BETWEEN 1 AND 5),
    metadata        TEXT NOT NULL DEFAULT '{}',
    created_at      INTEGER NOT NULL
);
CREATE INDEX messages_conv ON messages(conversation_id, created_at);

-- The answer cache. key is 'ticket:<id>:<sha256(body)>' or
-- 'query:<sha256(normalised query, model, temperature)>'.
CREATE TABLE answers (
    key         TEXT PRIMARY KEY,
    kind        TEXT NOT NULL CHECK (kind IN ('ticket', 'query')),
    ticket_id   TEXT,
    body_hash   TEXT,
    query_norm  TEXT,
    model       TEXT NOT NULL DEFAULT '',
    temperature REAL,
    response    TEXT NOT NULL,
    tokens      INTEGER,
    hits        INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL
);
CREATE INDEX answers_ticket ON answers(ticket_id) WHERE ticket_id IS NOT NULL;

-- Generations. At most one queued/running job per (channel, prompt_key):
-- the partial unique index is what makes single flight hold across processes.
CREATE TABLE jobs (
    id            INTEGER PRIMARY KEY,
    channel       TEXT NOT NULL,
    prompt_key    TEXT NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('running', 'done', 'failed')),
    lease_owner   TEXT,
    lease_expires INTEGER,
    first_seq     INTEGER NOT NULL DEFAULT 0,    -- channel seq before the job's first event
    error         TEXT,
    created_at    INTEGER NOT NULL,
    finished_at   INTEGER
);
CREATE UNIQUE INDEX jobs_single_flight ON jobs(channel, prompt_key) WHERE state = 'running';
CREATE INDEX jobs_running_lease ON jobs(lease_expires) WHERE state = 'running';
CREATE INDEX jobs_finished ON jobs(finished_at) WHERE state <> 'running';

-- The per-channel event log. seq is dense and increasing per channel;
-- compaction always keeps each channel's newest row so seq never restarts.
CREATE TABLE events (
    channel     TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    job_id      INTEGER,
    type        TEXT NOT NULL,
    data        TEXT NOT NULL DEFAULT '',
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (channel, seq)
) WITHOUT ROWID;

-- Generic long-poll transport (DESIGN section 3).
CREATE TABLE poll_sessions (
    sid         TEXT PRIMARY KEY,
    path        TEXT NOT NULL,
    owner       TEXT NOT NULL DEFAULT '',
    state       TEXT NOT NULL DEFAULT '{}',      -- adapter state, JSON
    next_seq    INTEGER NOT NULL DEFAULT 1,
    version     INTEGER NOT NULL DEFAULT 0,      -- bumped on every save
    lock_owner  TEXT,                            -- short lease while a request updates state
    lock_expires INTEGER,
    created_at  INTEGER NOT NULL,
    last_seen   INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
CREATE INDEX poll_sessions_expiry ON poll_sessions(expires_at);

CREATE TABLE poll_outbox (
    sid         TEXT NOT NULL REFERENCES poll_sessions(sid) ON DELETE CASCADE,
    seq         INTEGER NOT NULL,
    frame       TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (sid, seq)
) WITHOUT ROWID;

-- Sliding-window rate limiting shared by every process.
CREATE TABLE rate_hits (
    user_id     TEXT NOT NULL,
    at_ms       INTEGER NOT NULL
);
CREATE INDEX rate_hits_user ON rate_hits(user_id, at_ms);
