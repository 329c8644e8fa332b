-- The router's schema `router`: providers and models of the catalog, provider keys, routing policies,
-- circuit state, and the books (routing_requests). tenant_id is the auth service's tenant id as plain
-- text: no service references another's rows.

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
    tenant_id       TEXT,
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
    tenant_id       TEXT,
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
