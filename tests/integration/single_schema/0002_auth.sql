-- Auth: token-signing keys (encrypted at rest), refresh-token rotation, login backoff bookkeeping.

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

-- One sessions row per refresh token; a family is one sign-in. A row whose token was exchanged gets
-- rotated_at: presenting that token again is reuse, and revokes the whole family.
ALTER TABLE sessions ADD COLUMN rotated_at TIMESTAMPTZ;
ALTER TABLE sessions ADD COLUMN auth_method TEXT NOT NULL DEFAULT 'password';
CREATE UNIQUE INDEX idx_sessions_refresh_hash ON sessions(refresh_hash);
CREATE INDEX idx_sessions_refresh_family ON sessions(refresh_family);

-- Failures older than the reset window are forgotten, so backoff needs the time of the last one.
ALTER TABLE users ADD COLUMN last_failed_login_at TIMESTAMPTZ;

CREATE INDEX idx_api_keys_tenant_id ON api_keys(tenant_id);
