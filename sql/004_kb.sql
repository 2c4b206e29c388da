-- 004_kb.sql — the knowledge base (core/kb.c, docs/knowledge-base.md):
-- passages cut from imported Markdown or text files, and an FTS5 index over
-- their titles and texts (BM25 ranking; porter stemming, so "printers"
-- finds "printer"; diacritics folded, so "cafe" finds "café").
-- Re-importing a file replaces the passages of its source name.
CREATE TABLE kb_passages (
    id          INTEGER PRIMARY KEY,
    source      TEXT NOT NULL,                -- the file name it was imported from
    seq         INTEGER NOT NULL,             -- position in the source, from 1
    title       TEXT NOT NULL DEFAULT '',
    text        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE UNIQUE INDEX kb_passages_source ON kb_passages(source, seq);

CREATE VIRTUAL TABLE kb_fts USING fts5(
    title, text,
    content='kb_passages', content_rowid='id',
    tokenize='porter unicode61 remove_diacritics 2'
);
CREATE TRIGGER kb_passages_ai AFTER INSERT ON kb_passages BEGIN
    INSERT INTO kb_fts(rowid, title, text) VALUES (new.id, new.title, new.text);
END;
CREATE TRIGGER kb_passages_ad AFTER DELETE ON kb_passages BEGIN
    INSERT INTO kb_fts(kb_fts, rowid, title, text) VALUES ('delete', old.id, old.title, old.text);
END;
CREATE TRIGGER kb_passages_au AFTER UPDATE ON kb_passages BEGIN
    INSERT INTO kb_fts(kb_fts, rowid, title, text) VALUES ('delete', old.id, old.title, old.text);
    INSERT INTO kb_fts(rowid, title, text) VALUES (new.id, new.title, new.text);
END;
