-- A link to each posted message (Slack permalink, Teams deep link) when the adapter could build one, so incident
-- summaries and postmortem drafts cite a clickable message instead of a channel and a platform id.
ALTER TABLE chat_messages ADD COLUMN permalink text;
