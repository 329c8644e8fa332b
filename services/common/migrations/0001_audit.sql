-- The audit trail: security-relevant events, appended by every service (never with the secret).
-- Schema `audit`; every service role may INSERT here, only the auth role may also read.

CREATE TABLE audit_events (
    id              BIGSERIAL PRIMARY KEY,
    event_type      TEXT NOT NULL,
    location        TEXT,
    tenant_id       TEXT,
    user_hash       TEXT,
    correlation_id  TEXT,
    details         JSONB NOT NULL DEFAULT '{}',
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX idx_audit_events_type_time ON audit_events(event_type, created_at);
