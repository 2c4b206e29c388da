-- 007_brand_disabled.sql — an administrator can take a brand out of service
-- without touching its catalogue (`parley brands disable ID` / `enable ID`,
-- docs/cli.md). disabled_at: when it was disabled (unix ms), NULL while it
-- is enabled. A disabled brand is not in GET /brands/active and seed 002
-- refuses it ("not found or inactive"), as for active = 0; unlike active
-- (the catalogue's own flag, which `parley brands import` sets from the
-- file), re-importing the catalogue does not enable it again.
ALTER TABLE brands ADD COLUMN disabled_at INTEGER;
