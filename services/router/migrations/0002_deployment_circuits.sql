-- Circuit breakers per model deployment (provider + model): a model that fails, or is rate-limited, is
-- skipped while its provider's other models keep serving. provider_metrics keeps the provider-wide
-- circuit (connections and TLS failing), latency and counts. open_until is when an open circuit lets a
-- call through again (opened_at + its cooldown, which a provider's Retry-After can lengthen): a router
-- that starts later takes up the circuit on that schedule, and one whose time is up starts closed.

ALTER TABLE provider_metrics ADD COLUMN open_until TIMESTAMPTZ;

CREATE TABLE deployment_circuits (
    provider        TEXT NOT NULL,
    model           TEXT NOT NULL,            -- the catalog's model id, "<provider>/<model>"
    circuit_state   TEXT NOT NULL DEFAULT 'closed' CHECK (circuit_state IN ('closed', 'open', 'half_open')),
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    opened_at       TIMESTAMPTZ,
    open_until      TIMESTAMPTZ,
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, model)
);
