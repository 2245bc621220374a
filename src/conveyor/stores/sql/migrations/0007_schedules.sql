-- Recurring schedules (issue 15). Each fire makes one job, unique per (tenant, schedule, fire
-- time) however many nodes run: the fire and the schedule's next fire time are written in one
-- transaction, on a row locked FOR UPDATE SKIP LOCKED.
CREATE TABLE schedules (
    tenant_id    text        NOT NULL,
    name         text        NOT NULL,
    cron         text,                        -- five fields, in timezone; or
    every_ms     bigint      CHECK (every_ms >= 1000),  -- fires at anchor + k * every_ms
    timezone     text        NOT NULL DEFAULT 'UTC',
    anchor       timestamptz NOT NULL DEFAULT now(),
    job          jsonb       NOT NULL,        -- {type, payload, maxAttempts?, timeoutMs?, priority?}
    paused       boolean     NOT NULL DEFAULT false,
    next_fire_at timestamptz NOT NULL,
    last_fire_at timestamptz,
    last_job_id  uuid,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name),
    CHECK ((cron IS NULL) <> (every_ms IS NULL))
);

CREATE INDEX schedules_due ON schedules (next_fire_at) WHERE NOT paused;

-- One job per fire.
CREATE UNIQUE INDEX jobs_schedule_fire ON jobs (tenant_id, schedule_name, scheduled_for)
    WHERE schedule_name IS NOT NULL;
