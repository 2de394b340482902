-- Noise: what people said about an alert ("noise", or "worth investigating"), silences set from chat, and on
-- each alert group whether its investigation was replaced by a noise note (and whether someone overrode it).
-- Keyed by fingerprint: one alert's identity across its firings.

CREATE TABLE alert_verdicts (
    id          bigserial PRIMARY KEY,
    workspace   text NOT NULL REFERENCES workspaces(id),
    fingerprint text NOT NULL,
    alert_name  text NOT NULL,
    service     text,
    verdict     text NOT NULL CHECK (verdict IN ('noise', 'signal')),
    actor       text NOT NULL,
    at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX alert_verdicts_fingerprint ON alert_verdicts (workspace, fingerprint, id DESC);

CREATE TABLE alert_silences (
    id          bigserial PRIMARY KEY,
    workspace   text NOT NULL REFERENCES workspaces(id),
    fingerprint text NOT NULL,
    alert_name  text NOT NULL,
    service     text,
    actor       text NOT NULL,
    reason      text,
    starts_at   timestamptz NOT NULL DEFAULT now(),
    ends_at     timestamptz NOT NULL CHECK (ends_at > starts_at)
);
CREATE INDEX alert_silences_fingerprint ON alert_silences (workspace, fingerprint, ends_at);

ALTER TABLE alert_groups
    ADD COLUMN noise_score         real,          -- set when the investigation was replaced by a noise note
    ADD COLUMN noise_overridden_at timestamptz,   -- someone asked for the investigation anyway
    ADD COLUMN silenced            boolean NOT NULL DEFAULT false;   -- a silence held it: nothing posted
