-- The durable queue: a running task holds a lease (owner, expiry) its executor renews by heartbeat; a
-- lease that expired means the executor died. Idempotency keys are unique per (tenant, requester).
-- A script's text is stored so a queued script survives a restart; it was scanned for secrets when it
-- was submitted and refused if it held one (redacting would change the program), so none is stored.

ALTER TABLE tasks
    ADD COLUMN lease_owner       TEXT,
    ADD COLUMN lease_expires_at  TIMESTAMPTZ,
    ADD COLUMN heartbeat_at      TIMESTAMPTZ,
    ADD COLUMN attempts          INTEGER NOT NULL DEFAULT 0,
    ADD COLUMN max_attempts      INTEGER NOT NULL DEFAULT 1,
    ADD COLUMN idempotency_key   TEXT,
    ADD COLUMN signal            TEXT,
    ADD COLUMN stdout_bytes      BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN stderr_bytes      BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN script            TEXT,
    ADD COLUMN script_language   TEXT,
    ADD COLUMN script_sha256     TEXT,
    ADD COLUMN cancel_requested  BOOLEAN NOT NULL DEFAULT FALSE,
    ADD COLUMN plan              JSONB,
    ADD COLUMN next_seq          BIGINT NOT NULL DEFAULT 0;

-- The dequeue reads the oldest queued task: a partial index holds only those.
CREATE INDEX idx_tasks_queued ON tasks(created_at) WHERE status = 'queued';
-- The reaper reads running tasks by lease expiry.
CREATE INDEX idx_tasks_running_lease ON tasks(lease_expires_at) WHERE status = 'running';
-- The per-tenant bound counts queued and running tasks of one tenant.
CREATE INDEX idx_tasks_tenant_active ON tasks(tenant_id) WHERE status IN ('queued', 'running');
CREATE INDEX idx_tasks_tenant_created ON tasks(tenant_id, created_at DESC);
CREATE UNIQUE INDEX idx_tasks_idempotency ON tasks(tenant_id, user_hash, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
