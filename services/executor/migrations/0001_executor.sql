-- The executor's schema `executor`: tasks and their event streams. tenant_id is the auth service's
-- tenant id as plain text: no service references another's rows.

CREATE TABLE tasks (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT,
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
