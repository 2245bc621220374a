-- The jobs table: PostgreSQL is the source of truth for every job.
CREATE TABLE jobs (
    id           uuid        PRIMARY KEY,
    tenant_id    text        NOT NULL,
    type         text        NOT NULL,
    payload      jsonb       NOT NULL,
    status       text        NOT NULL DEFAULT 'PENDING'
                 CHECK (status IN ('PENDING', 'RUNNING', 'COMPLETED', 'FAILED')),
    attempts     integer     NOT NULL DEFAULT 0,
    max_attempts integer     NOT NULL,
    timeout_ms   integer     NOT NULL,
    error        text,
    result       jsonb,
    run_at       timestamptz NOT NULL DEFAULT now(),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX jobs_tenant_created ON jobs (tenant_id, created_at DESC, id DESC);
CREATE INDEX jobs_tenant_status_created ON jobs (tenant_id, status, created_at DESC, id DESC);
-- Non-terminal rows, for the reaper and the reconciler.
CREATE INDEX jobs_unfinished ON jobs (updated_at) WHERE status IN ('PENDING', 'RUNNING');
