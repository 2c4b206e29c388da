-- 008_chat_session.sql — seed 001 sessions as its document describes them
-- (issue 11 item 4, docs/protocol-001.md).
-- messages.queued: 1 while a user message waits for its answer because
-- another answer of the conversation is streaming; cleared in the
-- transaction that claims its generation (jobs_claim_turn), so each queued
-- message is answered once, in order (created_at, rowid).
ALTER TABLE messages ADD COLUMN queued INTEGER NOT NULL DEFAULT 0 CHECK (queued IN (0, 1));
CREATE INDEX messages_queued ON messages(conversation_id, created_at) WHERE queued = 1;
-- conversations.project_id: the seed's ChatSession.project_id (a client's
-- string; filterable on the session list). last_activity: ms of the last
-- connection or client frame; a session whose last activity is older than
-- PARLEY_WEBSOCKET_TIMEOUT reads as 'idle' (status is stored 'active').
ALTER TABLE conversations ADD COLUMN project_id TEXT;
ALTER TABLE conversations ADD COLUMN last_activity INTEGER;
CREATE INDEX conversations_project ON conversations(owner, project_id, updated_at DESC)
    WHERE project_id IS NOT NULL;
