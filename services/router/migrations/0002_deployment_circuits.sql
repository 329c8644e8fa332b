-- Circuit breakers per model deployment (provider + model): a model that fails, or is rate-limited, is
-- skipped while its provider's other models keep serving. provider_metrics is keyed by (provider,
-- model): model '' is the provider's own row (its provider-wide circuit, for connection and TLS
-- failures, its latency and counts, as before), model '<provider>/<model>' a deployment's circuit.
-- open_until is when an open circuit lets a call through again (opened_at + its cooldown, which a
-- provider's Retry-After can lengthen): a router that starts later takes the circuit up on that
-- schedule, and one whose time is up starts closed.

ALTER TABLE provider_metrics ADD COLUMN model TEXT NOT NULL DEFAULT '';
ALTER TABLE provider_metrics ADD COLUMN open_until TIMESTAMPTZ;
ALTER TABLE provider_metrics DROP CONSTRAINT provider_metrics_pkey;
ALTER TABLE provider_metrics ADD PRIMARY KEY (provider, model);
