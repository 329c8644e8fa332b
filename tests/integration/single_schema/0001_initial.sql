-- Goblin's first schema: every table the design notes name. Later migrations add columns.

CREATE TABLE tenants (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    daily_budget_usd NUMERIC(12, 4),
    requests_per_day INTEGER,
    tokens_per_day  BIGINT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

INSERT INTO tenants (id, name) VALUES ('default', 'default');

CREATE TABLE users (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL REFERENCES tenants(id) ON DELETE RESTRICT,
    email           TEXT NOT NULL UNIQUE,
    password_hash   TEXT,
    role            TEXT NOT NULL DEFAULT 'user' CHECK (role IN ('admin', 'user')),
    is_active       BOOLEAN NOT NULL DEFAULT TRUE,
    failed_logins   INTEGER NOT NULL DEFAULT 0,
    locked_until    TIMESTAMPTZ,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX idx_users_tenant_id ON users(tenant_id);

CREATE TABLE api_keys (
    id              TEXT PRIMARY KEY,
    user_id         TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    tenant_id       TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    prefix          TEXT NOT NULL,
    key_hash        TEXT NOT NULL UNIQUE,
    scopes          TEXT[] NOT NULL DEFAULT '{}',
    tokens_per_day  BIGINT,
    expires_at      TIMESTAMPTZ,
    last_used_at    TIMESTAMPTZ,
    revoked_at      TIMESTAMPTZ,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX idx_api_keys_user_id ON api_keys(user_id);

CREATE TABLE sessions (
    id              TEXT PRIMARY KEY,
    user_id         TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    tenant_id       TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    refresh_family  TEXT NOT NULL,
    refresh_hash    TEXT,
    is_admin        BOOLEAN NOT NULL DEFAULT FALSE,
    user_agent      TEXT,
    ip_hash         TEXT,
    expires_at      TIMESTAMPTZ NOT NULL,
    revoked_at      TIMESTAMPTZ,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_seen_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX idx_sessions_created_at ON sessions(created_at);
CREATE INDEX idx_sessions_tenant_id ON sessions(tenant_id);
CREATE INDEX idx_sessions_user_id ON sessions(user_id);

CREATE TABLE webauthn_credentials (
    id              TEXT PRIMARY KEY,
    user_id         TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    credential_id   BYTEA NOT NULL UNIQUE,
    public_key      BYTEA NOT NULL,
    sign_count      BIGINT NOT NULL DEFAULT 0,
    transports      TEXT[] NOT NULL DEFAULT '{}',
    name            TEXT NOT NULL DEFAULT 'passkey',
    backed_up       BOOLEAN NOT NULL DEFAULT FALSE,
    last_used_at    TIMESTAMPTZ,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX idx_webauthn_credentials_user_id ON webauthn_credentials(user_id);

CREATE TABLE tasks (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT REFERENCES tenants(id) ON DELETE SET NULL,
    user_hash       TEXT,
    goblin          TEXT,
    is_script       BOOLEAN NOT NULL DEFAULT FALSE,
    args            JSONB NOT NULL DEFAULT '{}',
    status          TEXT NOT NULL DEFAULT 'queued'
                    CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled', 'timed_out')),
    dry_run         BOOLEAN NOT NULL DEFAULT FALSE,
    timeout_s       INTEGER NOT NULL DEFAULT 300,
    exit_code       INTEGER,
    stdout          TEXT NOT NULL DEFAULT '',
    stderr          TEXT NOT NULL DEFAULT '',
    error           TEXT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at      TIMESTAMPTZ,
    finished_at     TIMESTAMPTZ
);
CREATE INDEX idx_tasks_status ON tasks(status);
CREATE INDEX idx_tasks_created_at ON tasks(created_at);

CREATE TABLE task_events (
    task_id         TEXT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    seq             BIGINT NOT NULL,
    kind            TEXT NOT NULL CHECK (kind IN ('status', 'stdout', 'stderr')),
    data            TEXT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (task_id, seq)
);

CREATE TABLE search_collections (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    description     TEXT NOT NULL DEFAULT '',
    chroma_name     TEXT NOT NULL UNIQUE,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name)
);

CREATE TABLE search_documents (
    id              TEXT PRIMARY KEY,
    collection_id   TEXT NOT NULL REFERENCES search_collections(id) ON DELETE CASCADE,
    source          TEXT NOT NULL DEFAULT '',
    content_sha256  TEXT NOT NULL,
    chunk_count     INTEGER NOT NULL DEFAULT 0,
    redactions      INTEGER NOT NULL DEFAULT 0,
    metadata        JSONB NOT NULL DEFAULT '{}',
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX idx_search_documents_collection_id ON search_documents(collection_id);

CREATE TABLE providers (
    name            TEXT PRIMARY KEY,
    kind            TEXT NOT NULL,            -- openai | anthropic | gemini | openai_compatible | local
    base_url        TEXT,
    enabled         BOOLEAN NOT NULL DEFAULT TRUE,
    priority        INTEGER NOT NULL DEFAULT 100,
    weight          INTEGER NOT NULL DEFAULT 1,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Provider keys entered through the admin API, encrypted by the router; never the plaintext.
CREATE TABLE provider_credentials (
    id              TEXT PRIMARY KEY,
    provider        TEXT NOT NULL REFERENCES providers(name) ON DELETE CASCADE,
    tenant_id       TEXT REFERENCES tenants(id) ON DELETE CASCADE,
    ciphertext      BYTEA NOT NULL,
    key_version     INTEGER NOT NULL DEFAULT 1,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE model_configs (
    id              TEXT PRIMARY KEY,          -- "<provider>/<model>"
    provider        TEXT NOT NULL,
    model           TEXT NOT NULL,
    aliases         TEXT[] NOT NULL DEFAULT '{}',
    context_length  INTEGER,
    input_price_per_mtok  NUMERIC(12, 6) NOT NULL DEFAULT 0,
    output_price_per_mtok NUMERIC(12, 6) NOT NULL DEFAULT 0,
    capabilities    TEXT[] NOT NULL DEFAULT '{}',
    default_params  JSONB NOT NULL DEFAULT '{}',
    enabled         BOOLEAN NOT NULL DEFAULT TRUE,
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE global_settings (
    key             TEXT PRIMARY KEY,
    value           JSONB NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE routing_providers (
    name            TEXT PRIMARY KEY,
    endpoint        TEXT NOT NULL,
    protocol        TEXT NOT NULL DEFAULT 'grpc',
    enabled         BOOLEAN NOT NULL DEFAULT TRUE,
    registered_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE provider_metrics (
    provider        TEXT PRIMARY KEY,
    circuit_state   TEXT NOT NULL DEFAULT 'closed' CHECK (circuit_state IN ('closed', 'open', 'half_open')),
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    opened_at       TIMESTAMPTZ,
    p50_latency_ms  DOUBLE PRECISION,
    success_count   BIGINT NOT NULL DEFAULT 0,
    failure_count   BIGINT NOT NULL DEFAULT 0,
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE provider_policies (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    tenant_id       TEXT REFERENCES tenants(id) ON DELETE CASCADE,
    strategy        TEXT NOT NULL CHECK (strategy IN ('explicit', 'cheapest', 'fastest', 'priority', 'weighted')),
    models          TEXT[] NOT NULL DEFAULT '{}',
    weights         INTEGER[] NOT NULL DEFAULT '{}',
    is_default      BOOLEAN NOT NULL DEFAULT FALSE,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE routing_requests (
    id              TEXT PRIMARY KEY,
    correlation_id  TEXT,
    tenant_id       TEXT,
    user_hash       TEXT,
    api_key_id      TEXT,
    requested_model TEXT NOT NULL,
    provider        TEXT,
    model           TEXT,
    policy          TEXT,
    stream          BOOLEAN NOT NULL DEFAULT FALSE,
    prompt_tokens   INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd        NUMERIC(14, 8) NOT NULL DEFAULT 0,
    latency_ms      DOUBLE PRECISION,
    ttft_ms         DOUBLE PRECISION,
    outcome         TEXT NOT NULL,            -- ok | error | cancelled | budget_exceeded | cache_hit
    error_code      TEXT,
    fallback_chain  TEXT[] NOT NULL DEFAULT '{}',
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX idx_routing_requests_created_at ON routing_requests(created_at);
CREATE INDEX idx_routing_requests_tenant_day ON routing_requests(tenant_id, created_at);

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
