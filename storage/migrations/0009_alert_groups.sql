-- Alert grouping and storms. A notification's alerts join the open group of their key (Alertmanager's
-- groupKey and the alert name, or our own source/alertname/service/environment) while it has seen activity
-- within the grouping window: one parent message per group, updated in place as alerts join or resolve,
-- one annotation per group. Past a rate of new groups a minute in a channel, new groups are listed in one
-- storm summary (updated in place) instead of getting parents of their own.

CREATE TABLE alert_storms (
    id          bigserial PRIMARY KEY,
    workspace   text NOT NULL REFERENCES workspaces(id),
    platform    text NOT NULL,
    channel     text NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    last_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX alert_storms_channel ON alert_storms (workspace, platform, channel, last_at);

CREATE TABLE alert_groups (
    id              bigserial PRIMARY KEY,
    workspace       text NOT NULL REFERENCES workspaces(id),
    group_key       text NOT NULL,
    status          text NOT NULL DEFAULT 'firing' CHECK (status IN ('firing', 'resolved')),
    opened_at       timestamptz NOT NULL DEFAULT now(),
    last_alert_at   timestamptz NOT NULL DEFAULT now(),
    resolved_at     timestamptz,
    closed_at       timestamptz,          -- NULL while alerts may still join (resolved, or past the window)
    first_alert_id  bigint,               -- its parent message is `alert:<first_alert_id>`
    -- where the annotator put it: its own parent, or a line in a storm summary (decided once)
    platform        text,
    channel         text,
    placement       text CHECK (placement IN ('parent', 'storm')),
    placed_at       timestamptz,
    storm_id        bigint REFERENCES alert_storms(id),
    investigate     boolean NOT NULL DEFAULT false,  -- within the investigation budget when placed
    posted_at       timestamptz,          -- parent (or storm line) queued in the outbox
    annotated_at    timestamptz,          -- first time the annotator published it
    investigated_at timestamptz,          -- its one investigation (annotation) was queued
    incident_id     bigint
);
-- Only one open group per key: concurrent webhooks for the same group meet here (ON CONFLICT).
CREATE UNIQUE INDEX alert_groups_open ON alert_groups (workspace, group_key) WHERE closed_at IS NULL;
CREATE INDEX alert_groups_placed ON alert_groups (workspace, platform, channel, placed_at);
CREATE INDEX alert_groups_storm ON alert_groups (storm_id) WHERE storm_id IS NOT NULL;

ALTER TABLE alerts ADD COLUMN group_id bigint REFERENCES alert_groups(id);
CREATE INDEX alerts_group ON alerts (group_id);
