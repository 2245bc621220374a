-- Jobs in time and order (issue 15): priorities, delayed jobs (run_at, there since 0001), jobs
-- made by schedules, retention of finished jobs, and lists that stay fast.
-- New columns have constant defaults, so adding them rewrites nothing.
ALTER TABLE jobs
    ADD COLUMN priority      smallint NOT NULL DEFAULT 5,
    ADD COLUMN schedule_name text,
    ADD COLUMN scheduled_for timestamptz;

-- Lists filtered by type, with or without a status, newest first (tenant and tenant + status
-- have theirs since 0001).
CREATE INDEX jobs_tenant_type_created ON jobs (tenant_id, type, created_at DESC, id DESC);
CREATE INDEX jobs_tenant_type_status_created ON jobs (tenant_id, type, status, created_at DESC, id DESC);

-- Retention: a finished row never changes again (a retry makes it PENDING), so its updated_at
-- is when it finished. One index for the node-wide retention, one for tenants with their own.
CREATE INDEX jobs_finished ON jobs (updated_at)
    WHERE status IN ('COMPLETED', 'FAILED', 'CANCELLED');
CREATE INDEX jobs_tenant_finished ON jobs (tenant_id, updated_at)
    WHERE status IN ('COMPLETED', 'FAILED', 'CANCELLED');

-- Per-tenant retention of finished jobs (NULL: the node's CONVEYOR_RETENTION_SECONDS).
ALTER TABLE tenants ADD COLUMN retention_seconds bigint CHECK (retention_seconds >= 0);
-- Per-tenant cap on recurring schedules (NULL: CONVEYOR_TENANT_MAX_SCHEDULES).
ALTER TABLE tenants ADD COLUMN max_schedules integer CHECK (max_schedules >= 0);

-- A queue's table churns: every job is inserted, updated twice and (with retention) deleted.
-- Vacuum it after 1 % of its rows changed rather than PostgreSQL's default 20 %, so that the
-- space of dead rows is reused before the table grows, and its statistics (the estimated totals
-- of GET /jobs) stay current.
ALTER TABLE jobs SET (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 1000,
                      autovacuum_vacuum_insert_scale_factor = 0.01, autovacuum_analyze_scale_factor = 0.02);
