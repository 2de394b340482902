-- The outbox is drained per channel in id order; a row waiting on its parent looks the parent up by key.
CREATE INDEX outbox_pending_channel ON outbox (platform, channel, id) WHERE status = 'pending';
CREATE INDEX outbox_pending_key ON outbox (message_key) WHERE status = 'pending';

-- A logical message (alert:12, plan:7) exists once per platform: the same alert is posted to Slack and
-- to Teams, each with its own platform id.
ALTER TABLE chat_messages DROP CONSTRAINT chat_messages_pkey;
ALTER TABLE chat_messages ADD PRIMARY KEY (platform, key);
