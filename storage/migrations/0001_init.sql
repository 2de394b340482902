-- warroom schema, version 1.
CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE workspaces (
    id          text PRIMARY KEY,
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO workspaces (id, name) VALUES ('default', 'default');

-- Alerts exactly as received (raw) and as normalised (payload); one row per alert state.
CREATE TABLE alerts (
    id            bigserial PRIMARY KEY,
    workspace     text NOT NULL REFERENCES workspaces(id),
    source        text NOT NULL,
    fingerprint   text NOT NULL,
    status        text NOT NULL CHECK (status IN ('firing', 'resolved')),
    name          text NOT NULL,
    severity      text NOT NULL,
    service       text,
    environment   text,
    group_key     text,
    payload       jsonb NOT NULL,
    starts_at     timestamptz,
    ends_at       timestamptz,
    received_at   timestamptz NOT NULL DEFAULT now(),
    notifications integer NOT NULL DEFAULT 1,
    annotated_at  timestamptz,
    UNIQUE (workspace, fingerprint, status, starts_at)
);
CREATE INDEX alerts_pending ON alerts (received_at) WHERE annotated_at IS NULL;
CREATE INDEX alerts_service ON alerts (workspace, service, received_at);

-- Deploys, config changes, flag flips: evidence for hypotheses.
CREATE TABLE changes (
    id          bigserial PRIMARY KEY,
    workspace   text NOT NULL REFERENCES workspaces(id),
    service     text NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('deploy', 'config', 'infra', 'feature_flag', 'dependency')),
    summary     text NOT NULL,
    version     text,
    author      text,
    at          timestamptz NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX changes_service_at ON changes (workspace, service, at);

CREATE TABLE incidents (
    id          bigserial PRIMARY KEY,
    workspace   text NOT NULL REFERENCES workspaces(id),
    title       text NOT NULL,
    service     text,
    environment text,
    severity    text NOT NULL DEFAULT 'unknown',
    state       text NOT NULL DEFAULT 'DETECTED' CHECK (state IN
                ('DETECTED', 'ACKNOWLEDGED', 'INVESTIGATING', 'MITIGATED', 'RESOLVED', 'LEARNED', 'INCONCLUSIVE')),
    alert_id    bigint REFERENCES alerts(id),
    channel     text,
    thread      text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE incident_transitions (
    id          bigserial PRIMARY KEY,
    incident_id bigint NOT NULL REFERENCES incidents(id),
    from_state  text,
    to_state    text NOT NULL,
    actor       text NOT NULL,
    note        text,
    at          timestamptz NOT NULL DEFAULT now()
);

-- Knowledge base: documents, their chunks with embeddings and full-text vectors.
CREATE TABLE documents (
    id           bigserial PRIMARY KEY,
    workspace    text NOT NULL REFERENCES workspaces(id),
    source       text NOT NULL,
    source_type  text NOT NULL,
    title        text NOT NULL,
    content_hash text NOT NULL,
    services     text[] NOT NULL DEFAULT '{}',
    metadata     jsonb NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (workspace, source)
);

CREATE TABLE chunks (
    id           bigserial PRIMARY KEY,
    document_id  bigint NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    workspace    text NOT NULL,
    ordinal      integer NOT NULL,
    title        text NOT NULL,
    heading      text NOT NULL DEFAULT '',
    text         text NOT NULL,
    source_type  text NOT NULL,
    services     text[] NOT NULL DEFAULT '{}',
    embedding    vector(384) NOT NULL,
    tsv          tsvector GENERATED ALWAYS AS (
                   setweight(to_tsvector('english', coalesce(title, '')), 'A') ||
                   setweight(to_tsvector('english', coalesce(heading, '')), 'B') ||
                   setweight(to_tsvector('english', text), 'C')) STORED,
    UNIQUE (document_id, ordinal)
);
CREATE INDEX chunks_embedding_hnsw ON chunks USING hnsw (embedding vector_cosine_ops);
CREATE INDEX chunks_tsv ON chunks USING gin (tsv);
CREATE INDEX chunks_workspace ON chunks (workspace);

-- Executable runbooks, versioned; each version keeps its parsed spec.
CREATE TABLE runbooks (
    id                bigserial PRIMARY KEY,
    workspace         text NOT NULL REFERENCES workspaces(id),
    runbook_id        text NOT NULL,
    version           integer NOT NULL DEFAULT 1,
    parent_version_id bigint REFERENCES runbooks(id),
    document_id       bigint REFERENCES documents(id) ON DELETE SET NULL,
    title             text NOT NULL,
    services          text[] NOT NULL DEFAULT '{}',
    alerts            text[] NOT NULL DEFAULT '{}',
    spec              jsonb NOT NULL,
    content_hash      text NOT NULL,
    active            boolean NOT NULL DEFAULT true,
    created_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (workspace, runbook_id, version)
);
CREATE UNIQUE INDEX runbooks_one_active ON runbooks (workspace, runbook_id) WHERE active;

CREATE TABLE runbook_steps (
    id          bigserial PRIMARY KEY,
    runbook_pk  bigint NOT NULL REFERENCES runbooks(id) ON DELETE CASCADE,
    ordinal     integer NOT NULL,
    step_id     text NOT NULL,
    title       text NOT NULL,
    connector   text NOT NULL,
    target      text,
    risk        text NOT NULL,
    spec        jsonb NOT NULL,
    UNIQUE (runbook_pk, step_id)
);

-- Plans and their steps; a step's status moves forward only through guarded UPDATEs.
CREATE TABLE plans (
    id           bigserial PRIMARY KEY,
    workspace    text NOT NULL REFERENCES workspaces(id),
    alert_id     bigint REFERENCES alerts(id),
    incident_id  bigint REFERENCES incidents(id),
    runbook_pk   bigint REFERENCES runbooks(id),
    title        text NOT NULL,
    source       text NOT NULL,
    requested_by text,
    platform     text,
    channel      text,
    thread       text,
    message_key  text,
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE plan_steps (
    id                bigserial PRIMARY KEY,
    plan_id           bigint NOT NULL REFERENCES plans(id) ON DELETE CASCADE,
    ordinal           integer NOT NULL,
    key               text NOT NULL,
    title             text NOT NULL,
    connector         text NOT NULL,
    target            text,
    risk              text NOT NULL CHECK (risk IN ('read_only', 'state_change', 'high')),
    params            jsonb NOT NULL DEFAULT '{}',
    rollback          jsonb,
    requires_approval boolean NOT NULL DEFAULT true,
    status            text NOT NULL DEFAULT 'proposed' CHECK (status IN
                      ('proposed', 'approved', 'queued', 'running', 'succeeded', 'failed',
                       'rejected', 'refused', 'interrupted')),
    refusal           text,
    result            jsonb,
    job_id            text,
    attempts          integer NOT NULL DEFAULT 0,
    queued_at         timestamptz,
    started_at        timestamptz,
    finished_at       timestamptz,
    UNIQUE (plan_id, ordinal)
);

CREATE TABLE approvals (
    id        bigserial PRIMARY KEY,
    step_id   bigint NOT NULL REFERENCES plan_steps(id),
    actor     text NOT NULL,
    platform  text NOT NULL,
    decision  text NOT NULL CHECK (decision IN ('approve', 'reject')),
    at        timestamptz NOT NULL DEFAULT now()
);

-- Every message the bot sends goes through here; the dispatcher drains it.
CREATE TABLE outbox (
    id              bigserial PRIMARY KEY,
    platform        text NOT NULL,
    channel         text NOT NULL,
    op              text NOT NULL CHECK (op IN ('post', 'update', 'ephemeral')),
    message_key     text,
    thread_key      text,
    thread_id       text,
    recipient       text,
    card            jsonb NOT NULL,
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'dead')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz
);
CREATE INDEX outbox_pending ON outbox (next_attempt_at, id) WHERE status = 'pending';

-- Logical message keys -> the platform's own ids, so later updates and thread replies find them.
CREATE TABLE chat_messages (
    key         text PRIMARY KEY,
    platform    text NOT NULL,
    channel     text NOT NULL,
    message_id  text NOT NULL,
    thread_id   text,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Append-only, hash-chained audit log.
CREATE TABLE audit_log (
    id         bigserial PRIMARY KEY,
    at         timestamptz NOT NULL,
    workspace  text NOT NULL,
    actor      text NOT NULL,
    action     text NOT NULL,
    subject    text NOT NULL,
    detail     jsonb NOT NULL DEFAULT '{}',
    prev_hash  text NOT NULL,
    hash       text NOT NULL UNIQUE
);

CREATE FUNCTION audit_log_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP;
END $$;
CREATE TRIGGER audit_log_no_update_delete BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_refuse_change();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_refuse_change();

CREATE TABLE hypothesis_feedback (
    id          bigserial PRIMARY KEY,
    workspace   text NOT NULL REFERENCES workspaces(id),
    title       text NOT NULL,
    service     text,
    helpful     boolean NOT NULL,
    actor       text NOT NULL,
    at          timestamptz NOT NULL DEFAULT now()
);

-- The last card drawn for a plan, so workers can redraw it in place with new step states.
ALTER TABLE plans ADD COLUMN card jsonb;
ALTER TABLE plans ADD COLUMN environment text;
