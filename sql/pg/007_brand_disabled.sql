-- PostgreSQL schema, version 7 (sql/007_brand_disabled.sql for SQLite):
-- an administrator can take a brand out of service without touching its
-- catalogue (`parley brands disable ID` / `enable ID`, docs/cli.md).
-- disabled_at: when it was disabled (ms since the epoch), NULL while it is
-- enabled. A disabled brand is not in GET /brands/active and seed 002
-- refuses it, as for active = 0; re-importing the catalogue (which sets
-- active from the file) does not enable it again.
ALTER TABLE brands ADD COLUMN disabled_at bigint;
