-- Conversation memory: what was asked, answered, approved, ruled out and run in one chat thread, so the next
-- answer in that thread can use it; and which threads have ended (their summary is indexed as a precedent).
-- `thread_key` is the conversation's key: the logical key of the message the thread hangs off (alert:12,
-- plan:7, answer:3) when the bot posted it, else `ts:<platform thread id>`.
CREATE TABLE conversation_turns (
    id          bigserial PRIMARY KEY,
    workspace   text NOT NULL DEFAULT 'default',
    platform    text NOT NULL,
    channel     text NOT NULL,
    thread_key  text NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('asked', 'answered', 'approved', 'rejected', 'ruled_out',
                                              'confirmed', 'step_result')),
    text        text NOT NULL,                  -- redacted and bounded when stored
    refs        jsonb NOT NULL DEFAULT '{}',    -- plan_id, step_id, hypothesis, audit_id, message_key, ...
    actor       text,
    at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX conversation_turns_thread ON conversation_turns (workspace, platform, channel, thread_key, id);

CREATE TABLE conversations_ended (
    workspace   text NOT NULL DEFAULT 'default',
    platform    text NOT NULL,
    channel     text NOT NULL,
    thread_key  text NOT NULL,
    why         text NOT NULL,                  -- "plan 7 finished", "incident 3 resolved"
    ended_at    timestamptz NOT NULL DEFAULT now(),
    indexed_at  timestamptz,                    -- NULL: its summary is still to be indexed
    PRIMARY KEY (workspace, platform, channel, thread_key)
);

-- Keys for answers posted at the top of a channel without a plan (`answer:<n>`): their thread is a conversation.
CREATE SEQUENCE conversation_answer_keys;
