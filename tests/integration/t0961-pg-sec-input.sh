#!/bin/sh
# t0961-pg-sec-input.sh — t0960-sec-input.sh on PostgreSQL: the same
# lighttpd + parley.fcgi + parley-ws setup and the same node files
# (sec-input.mjs, sec-input-scale.mjs) with PARLEY_DB a private PostgreSQL
# 15 (lib.sh it_postgres): hostile strings stored byte-exact or refused,
# 10 MB bodies, 100,000-line NDJSON batches, bounded metadata, 10,000 poll
# opens from one user against the per-user cap, and the rate limit under
# concurrency (40 messages from 5 clients → exactly 30) where the count is
# PostgreSQL's. The database reads go through psql (sec-input-db.mjs).
# TAP output; exit status 0 only if everything passed.
cd "$(dirname "$0")/../.." || exit 1
SEC_INPUT_PG=1 exec sh tests/integration/t0960-sec-input.sh
