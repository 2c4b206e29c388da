-- PostgreSQL schema, version 5 (sql/005_stop.sql for SQLite) — stopping a generation (issue 11 item 1, docs/stop.md).
-- started_by: the JWT sub of the user whose request started the job ("" in
-- open mode); only that user or an admin may stop it.
-- stop_requested_at / stop_requested_by: set once by a stop request while
-- the job runs (the durable record; the owner's generation loop notices it
-- after a doorbell ring and aborts the upstream request).
-- stopped_at: set when the job ended because it was stopped (state stays
-- 'done'; its partial answer is never cached).
ALTER TABLE jobs ADD COLUMN started_by text;
ALTER TABLE jobs ADD COLUMN stop_requested_at bigint;
ALTER TABLE jobs ADD COLUMN stop_requested_by text;
ALTER TABLE jobs ADD COLUMN stopped_at bigint;
-- The owner's check "which of my running jobs were asked to stop" reads
-- only these rows.
CREATE INDEX jobs_stop_pending ON jobs(lease_owner)
    WHERE state = 'running' AND stop_requested_at IS NOT NULL;
-- A stop addressed by conversation or ticket finds the channel's newest job.
CREATE INDEX jobs_channel ON jobs(channel, id);
