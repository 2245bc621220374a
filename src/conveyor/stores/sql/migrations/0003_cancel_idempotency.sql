-- Cancellation and idempotent submission (issue 4).
ALTER TABLE jobs DROP CONSTRAINT jobs_status_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_status_check
    CHECK (status IN ('PENDING', 'RUNNING', 'COMPLETED', 'FAILED', 'CANCELLED'));
-- Set by POST /jobs/{id}/cancel on a running job: its next recorded outcome that is not terminal
-- (a retry, a hand-back, a lease expiry) is written as CANCELLED instead.
ALTER TABLE jobs ADD COLUMN cancel_requested boolean NOT NULL DEFAULT false;

-- One row per (tenant, Idempotency-Key): written in the transaction that inserts the jobs, so a
-- retried request finds it whenever the jobs exist, even if the first answer never arrived.
CREATE TABLE idempotency_keys (
    tenant_id      text        NOT NULL,
    key            text        NOT NULL,
    request_digest text        NOT NULL,
    response       jsonb       NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
