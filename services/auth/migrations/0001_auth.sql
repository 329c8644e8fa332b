-- The auth service's schema `auth`: tenants and their quotas, accounts, API keys, sessions, passkeys and
-- token-signing keys. The baseline is the state the single-schema layout reached at its 0002, so a
-- database of that layout moves here as it is (services/common/db.py).

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
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Failures older than the reset window are forgotten, so backoff needs the time of the last one.
    last_failed_login_at TIMESTAMPTZ
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
CREATE INDEX idx_api_keys_tenant_id ON api_keys(tenant_id);

-- One row per refresh token; a family is one sign-in. A row whose token was exchanged gets rotated_at:
-- presenting that token again is reuse, and revokes the whole family.
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
    last_seen_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    rotated_at      TIMESTAMPTZ,
    auth_method     TEXT NOT NULL DEFAULT 'password'
);
CREATE INDEX idx_sessions_created_at ON sessions(created_at);
CREATE INDEX idx_sessions_tenant_id ON sessions(tenant_id);
CREATE INDEX idx_sessions_user_id ON sessions(user_id);
CREATE UNIQUE INDEX idx_sessions_refresh_hash ON sessions(refresh_hash);
CREATE INDEX idx_sessions_refresh_family ON sessions(refresh_family);

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

-- Asymmetric keys that sign access tokens. At most one current (signs) and one standby (published in
-- the JWKS before it signs, so verifiers already know it when a rotation promotes it). Retired keys
-- sign nothing and stay published until every token they signed has expired (verify_until).
CREATE TABLE signing_keys (
    kid             TEXT PRIMARY KEY,
    algorithm       TEXT NOT NULL CHECK (algorithm IN ('ES256', 'EdDSA')),
    state           TEXT NOT NULL CHECK (state IN ('current', 'standby', 'retired')),
    -- AES-256-GCM: 12-byte nonce || ciphertext+tag of the PKCS#8 DER private key; AAD = kid.
    private_key     BYTEA NOT NULL,
    -- Fingerprint of the key-encryption key that sealed private_key, to name a mismatch clearly.
    kek_id          TEXT NOT NULL,
    public_jwk      JSONB NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    activated_at    TIMESTAMPTZ,
    retired_at      TIMESTAMPTZ,
    verify_until    TIMESTAMPTZ,
    CHECK (state <> 'retired' OR verify_until IS NOT NULL)
);
CREATE UNIQUE INDEX idx_signing_keys_one_current ON signing_keys(state) WHERE state = 'current';
CREATE UNIQUE INDEX idx_signing_keys_one_standby ON signing_keys(state) WHERE state = 'standby';
