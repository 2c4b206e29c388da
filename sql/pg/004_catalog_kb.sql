-- PostgreSQL schema, version 4 (issue 10): the catalog (core/catalog.h:
-- seed 002 brands and products) and the knowledge base (core/kb.h), as
-- sql/001_init.sql, sql/002_demo_brands.sql and sql/004_kb.sql define them
-- for SQLite: same table names, same column names and meaning, same keys,
-- checks and indexes. Times are milliseconds since the epoch (bigint).
-- Applied by core/storage/pg/conn.c in one transaction; the version goes
-- into parley_schema.
--
-- Full-text search. SQLite's FTS5 tables products_fts and kb_fts (and
-- their shadow tables) have no twin here: each searched table has one more
-- column, fts, a tsvector GENERATED ALWAYS from the row (PostgreSQL keeps
-- it up to date: no triggers), with a GIN index. A copy from SQLite leaves
-- fts out (it cannot be written) and skips the FTS5 tables. Words are cut
-- exactly as core/terms.c cuts a query: runs of letters and digits
-- (parley_words below replaces every other character with a space, the
-- same ranges as terms.c's is_word_cp), case and diacritics folded
-- (parley_fold), so a query term and a document word meet as one token.
--   - products: configuration 'simple' (no stemming; catalog_suggest
--     stems plurals itself and asks for prefixes), weights name A,
--     category B, description and features C (bm25's 4 : 2 : 1 : 1);
--   - kb_passages: configuration parley_kb, English Snowball stemming
--     with NO stop words (SQLite's porter tokenizer keeps every word;
--     core/terms.c drops the common ones of the query), weights title A,
--     text B (bm25's 2 : 1).
-- The functions pin their search_path (SET search_path FROM CURRENT), so
-- they work whatever the session's search_path is (pg_restore runs with
-- an empty one).

DO $$
BEGIN
    IF current_setting('server_encoding') <> 'UTF8' THEN
        RAISE EXCEPTION 'Parley needs a UTF8 database (this one is %): create it with ENCODING ''UTF8''',
            current_setting('server_encoding');
    END IF;
END $$;

-- Seed 002 brands and their products.
CREATE TABLE brands (
    id            text PRIMARY KEY,
    name          text NOT NULL,
    welcome       text NOT NULL DEFAULT '',
    system_prompt text NOT NULL DEFAULT '',
    active        integer NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
    created_at    bigint NOT NULL
);

-- ---- the search functions ----

-- Lower case (every script when the server has ICU, else the database's
-- LC_CTYPE: ASCII only under C), diacritics removed (NFD, combining marks
-- U+0300..U+036F dropped, NFC again): "MONITÖR" and "monitor" are one word.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_collation WHERE collname = 'und-x-icu') THEN
        CREATE FUNCTION parley_fold(t text) RETURNS text
            LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE SET search_path FROM CURRENT
            AS $f$ SELECT normalize(regexp_replace(normalize(lower(t COLLATE "und-x-icu"), NFD),
                                                   '[\u0300-\u036f]+', '', 'g'), NFC) $f$;
    ELSE
        CREATE FUNCTION parley_fold(t text) RETURNS text
            LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE SET search_path FROM CURRENT
            AS $f$ SELECT normalize(regexp_replace(normalize(lower(t), NFD),
                                                   '[\u0300-\u036f]+', '', 'g'), NFC) $f$;
    END IF;
END $$;

-- The words of t, folded, separated by single spaces: every character
-- core/terms.c does not count as a letter or digit becomes a space (ASCII
-- punctuation and controls, Latin-1 signs, U+00D7, U+00F7, U+1680, general
-- punctuation to miscellaneous symbols, CJK punctuation, private use,
-- presentation forms, fullwidth punctuation, specials, emoji and above).
CREATE FUNCTION parley_words(t text) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE SET search_path FROM CURRENT
    AS $f$ SELECT parley_fold(regexp_replace(t,
        '[\x01-\x2f\x3a-\x40\x5b-\x60\x7b-\xbf\xd7\xf7\u1680\u2000-\u2bff\u3000-\u303f\ue000-\uf8ff\ufe10-\ufe6f\uff00-\uff0f\ufff0-\uffff\U0001f000-\U0010ffff]+',
        ' ', 'g')) $f$;

-- The knowledge base's configuration: Snowball English stems, no stop words.
CREATE TEXT SEARCH DICTIONARY parley_english_stem (TEMPLATE = snowball, LANGUAGE = english);
CREATE TEXT SEARCH CONFIGURATION parley_kb (COPY = simple);
ALTER TEXT SEARCH CONFIGURATION parley_kb
    ALTER MAPPING FOR asciiword, word, numword, asciihword, hword, numhword,
                      hword_asciipart, hword_part, hword_numpart
    WITH parley_english_stem;

-- One search term of core/terms.c (terms_words: a word of letters and
-- digits, with a final '*' for a prefix query) as a tsquery under cfg.
-- NULL when the word leaves no lexeme (it then matches nothing, as an
-- empty FTS5 string). The word never reaches tsquery syntax except as
-- letters and digits: plainto_tsquery for a plain word, to_tsquery of
-- "<word>:*" for a prefix only when the word is one token.
CREATE FUNCTION parley_term_query(cfg regconfig, term text) RETURNS tsquery
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE SET search_path FROM CURRENT
    AS $f$
    SELECT CASE
        WHEN w = '' OR length(to_tsvector(cfg, w)) = 0 THEN NULL
        WHEN prefix AND position(' ' IN w) = 0 THEN to_tsquery(cfg, w || ':*')
        ELSE plainto_tsquery(cfg, w)
    END
    FROM (SELECT btrim(parley_words(rtrim(term, '*'))) AS w, right(term, 1) = '*' AS prefix) s
    $f$;

-- The OR of the terms' queries (NULLs skipped; NULL when every one is).
CREATE AGGREGATE parley_tsquery_or(tsquery) (SFUNC = tsquery_or, STYPE = tsquery);

CREATE FUNCTION products_document(name text, description text, category text, features text)
    RETURNS tsvector
    LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path FROM CURRENT
    AS $f$ SELECT setweight(to_tsvector('simple', parley_words(coalesce(name, ''))), 'A')
               || setweight(to_tsvector('simple', parley_words(coalesce(category, ''))), 'B')
               || setweight(to_tsvector('simple', parley_words(coalesce(description, ''))), 'C')
               || setweight(to_tsvector('simple', parley_words(coalesce(features, ''))), 'C') $f$;

CREATE FUNCTION kb_document(title text, body text) RETURNS tsvector
    LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path FROM CURRENT
    AS $f$ SELECT setweight(to_tsvector('parley_kb', parley_words(coalesce(title, ''))), 'A')
               || setweight(to_tsvector('parley_kb', parley_words(coalesce(body, ''))), 'B') $f$;

CREATE TABLE products (
    pk             bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    id             text NOT NULL UNIQUE,
    brand_id       text NOT NULL REFERENCES brands(id) ON DELETE CASCADE,
    name           text NOT NULL,
    description    text NOT NULL DEFAULT '',
    category       text NOT NULL DEFAULT '',
    price          double precision NOT NULL DEFAULT 0,
    features       text NOT NULL DEFAULT '[]',   -- JSON array of strings
    specifications text NOT NULL DEFAULT '{}',   -- JSON object
    availability   integer NOT NULL DEFAULT 1 CHECK (availability IN (0, 1)),
    -- products_fts's twin (not in SQLite's table)
    fts            tsvector GENERATED ALWAYS AS
                   (products_document(name, description, category, features)) STORED
);
CREATE INDEX products_brand ON products(brand_id);
CREATE INDEX products_search ON products USING gin (fts);

-- The knowledge base. Re-importing a file replaces the passages of its
-- source name (kb.c takes a transaction-level advisory lock on the source
-- first, so imports of one source on two nodes run one after the other).
CREATE TABLE kb_passages (
    id          bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    source      text NOT NULL,                -- the file name it was imported from
    seq         bigint NOT NULL,              -- position in the source, from 1
    title       text NOT NULL DEFAULT '',
    text        text NOT NULL,
    created_at  bigint NOT NULL,
    -- kb_fts's twin (not in SQLite's table)
    fts         tsvector GENERATED ALWAYS AS (kb_document(title, text)) STORED
);
CREATE UNIQUE INDEX kb_passages_source ON kb_passages(source, seq);
CREATE INDEX kb_passages_search ON kb_passages USING gin (fts);

-- conversations.brand_id references brands(id) as in SQLite, once both
-- tables exist (sql/pg/002_store.sql creates conversations without it).
DO $$
BEGIN
    IF to_regclass('conversations') IS NOT NULL AND NOT EXISTS
           (SELECT 1 FROM pg_constraint WHERE conname = 'conversations_brand_fk'
                                          AND conrelid = to_regclass('conversations')) THEN
        ALTER TABLE conversations ADD CONSTRAINT conversations_brand_fk
            FOREIGN KEY (brand_id) REFERENCES brands(id) ON DELETE SET NULL;
    END IF;
END $$;

-- No rows: the demo brands and products of seed 002 that this migration
-- inserted once are now the sample catalogue share/sample-catalog.json,
-- which `make run` imports (`parley brands import`, docs/cli.md). A
-- database created before keeps the rows it got (a migration runs once,
-- by version).
