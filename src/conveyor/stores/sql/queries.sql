-- Named queries, loaded once by stores/postgres.py. Each starts with "-- name: NAME".

-- name: insert_jobs
-- One statement per group-commit batch; the rows come as one JSON array (job_rows_json), which
-- costs the node far less than an array parameter per column.
-- A job is due at its run_at, or delay_ms after now by PostgreSQL's clock.
INSERT INTO jobs (id, tenant_id, type, payload, max_attempts, timeout_ms, payload_bytes, priority,
                  run_at)
SELECT id, tenant_id, type, payload, max_attempts, timeout_ms, payload_bytes, priority,
       coalesce(run_at, now() + make_interval(secs => delay_ms / 1000.0))
FROM json_to_recordset(%(rows)s::json)
     AS u(id uuid, tenant_id text, type text, payload jsonb, max_attempts int, timeout_ms int,
          payload_bytes int, priority int, run_at timestamptz, delay_ms bigint);

-- name: record_started
-- Fenced by attempt: only a newer attempt may mark a non-terminal job RUNNING.
-- "Not ended" is written as status NOT IN (the ends), not IN ('PENDING', 'RUNNING'): the latter
-- lets the planner pick jobs_unfinished, and walking that partial index (which holds an entry
-- for every version a job had while it ran, until a vacuum) grows with the backlog: 27,000
-- entries read for a batch of 200 after 20,000 jobs (2.1 ms, against 1.1 ms by primary key).
UPDATE jobs SET status = 'RUNNING', attempts = u.attempt, updated_at = now()
FROM json_to_recordset(%(rows)s::json) AS u(id uuid, attempt int)
WHERE jobs.id = u.id AND jobs.attempts < u.attempt
  AND jobs.status NOT IN ('COMPLETED', 'FAILED', 'CANCELLED')
RETURNING jobs.id::text, jobs.tenant_id, jobs.status, jobs.attempts, jobs.max_attempts, jobs.retries,
          jobs.error, jobs.updated_at;

-- name: record_finished
-- Fenced by attempt: an outcome of attempt N is refused once attempt N+1 has started, and a
-- terminal row never changes again. new_attempt differs from attempt only for a hand-back on
-- drain, which does not count the attempt.
-- A job whose cancellation was requested while it ran ends CANCELLED instead of going back to
-- PENDING (a retry, a hand-back, a lease expiry).
UPDATE jobs SET status = CASE WHEN jobs.cancel_requested AND u.status = 'PENDING'
                              THEN 'CANCELLED' ELSE u.status END,
                attempts = u.new_attempt,
                error = CASE WHEN jobs.cancel_requested AND u.status = 'PENDING'
                             THEN 'cancelled by request' ELSE u.error END,
                result = u.result,
                result_bytes = octet_length(u.result::text),
                run_at = CASE WHEN u.status = 'PENDING'
                              THEN now() + make_interval(secs => u.delay_ms / 1000.0)
                              ELSE jobs.run_at END,
                updated_at = now()
FROM json_to_recordset(%(rows)s::json)
     AS u(id uuid, attempt int, new_attempt int, status text, error text, result jsonb, delay_ms int)
WHERE jobs.id = u.id AND jobs.attempts <= u.attempt
  AND jobs.status NOT IN ('COMPLETED', 'FAILED', 'CANCELLED')  -- by primary key: see record_started
-- the row's JOB_UPDATE (wire.job_update) as the JSON text json.dumps writes, built here so that
-- the node does not convert, render and encode every row it wrote (non-ASCII text comes as it
-- is, where json.dumps would escape it: the same JSON)
RETURNING jobs.id::text, jobs.status,
          '{"type": "JOB_UPDATE", "jobId": "' || jobs.id || '", "tenantId": ' || to_json(jobs.tenant_id)
          || ', "status": "' || jobs.status || '", "error": ' || coalesce(to_json(jobs.error)::text, 'null')
          || ', "attempts": ' || (jobs.attempts - jobs.retries) || ', "maxAttempts": '
          || (jobs.max_attempts - jobs.retries) || ', "updatedAt": "'
          || to_char(jobs.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') || '"}' AS event;

-- name: get_job
SELECT id::text, tenant_id, type, payload, status, attempts, max_attempts, retries, timeout_ms, error,
       result, run_at, created_at, updated_at, priority, schedule_name, scheduled_for
FROM jobs WHERE id = %(id)s;

-- name: list_jobs
-- A page of a tenant's jobs. A payload or result larger than %(most)s bytes of JSON is left out
-- (NULL, with *_omitted set), unread: a page stays small whatever its jobs carry.
SELECT id::text, tenant_id, type,
       CASE WHEN coalesce(payload_bytes, octet_length(payload::text)) <= %(most)s
            THEN payload END AS payload,
       coalesce(payload_bytes, octet_length(payload::text)) > %(most)s AS payload_omitted,
       status, attempts, max_attempts, retries, timeout_ms, error,
       CASE WHEN coalesce(result_bytes, octet_length(result::text), 0) <= %(most)s
            THEN result END AS result,
       coalesce(result_bytes, octet_length(result::text), 0) > %(most)s AS result_omitted,
       run_at, created_at, updated_at, priority, schedule_name, scheduled_for
FROM jobs
WHERE tenant_id = %(tenant)s AND (%(status)s::text IS NULL OR status = %(status)s::text)
  AND (%(type)s::text IS NULL OR type = %(type)s::text)
  AND (%(after_ts)s::timestamptz IS NULL
       OR (created_at, id) < (%(after_ts)s::timestamptz, %(after_id)s::uuid))
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s OFFSET %(offset)s;

-- name: list_jobs_any_status
-- list_jobs without a status: the newest of each status merged (jobs_tenant_status_created and
-- jobs_tenant_type_status_created, read in order, at most offset + limit entries in all), so that
-- the table needs no index without the status, which every write of a job would update (each
-- index costs PostgreSQL about a tenth of its time per job). The five branches are written out:
-- PostgreSQL merges ordered index scans (Merge Append) for a UNION ALL, where a LATERAL join over
-- the statuses would read up to offset + limit rows of every status and sort them all.
SELECT id::text, tenant_id, type,
       CASE WHEN coalesce(payload_bytes, octet_length(payload::text)) <= %(most)s
            THEN payload END AS payload,
       coalesce(payload_bytes, octet_length(payload::text)) > %(most)s AS payload_omitted,
       status, attempts, max_attempts, retries, timeout_ms, error,
       CASE WHEN coalesce(result_bytes, octet_length(result::text), 0) <= %(most)s
            THEN result END AS result,
       coalesce(result_bytes, octet_length(result::text), 0) > %(most)s AS result_omitted,
       run_at, created_at, updated_at, priority, schedule_name, scheduled_for
FROM (
    (SELECT * FROM jobs WHERE tenant_id = %(tenant)s AND status = 'PENDING'
         AND (%(type)s::text IS NULL OR type = %(type)s::text)
         AND (%(after_ts)s::timestamptz IS NULL
              OR (created_at, id) < (%(after_ts)s::timestamptz, %(after_id)s::uuid))
     ORDER BY created_at DESC, id DESC LIMIT %(window)s)
    UNION ALL
    (SELECT * FROM jobs WHERE tenant_id = %(tenant)s AND status = 'RUNNING'
         AND (%(type)s::text IS NULL OR type = %(type)s::text)
         AND (%(after_ts)s::timestamptz IS NULL
              OR (created_at, id) < (%(after_ts)s::timestamptz, %(after_id)s::uuid))
     ORDER BY created_at DESC, id DESC LIMIT %(window)s)
    UNION ALL
    (SELECT * FROM jobs WHERE tenant_id = %(tenant)s AND status = 'COMPLETED'
         AND (%(type)s::text IS NULL OR type = %(type)s::text)
         AND (%(after_ts)s::timestamptz IS NULL
              OR (created_at, id) < (%(after_ts)s::timestamptz, %(after_id)s::uuid))
     ORDER BY created_at DESC, id DESC LIMIT %(window)s)
    UNION ALL
    (SELECT * FROM jobs WHERE tenant_id = %(tenant)s AND status = 'FAILED'
         AND (%(type)s::text IS NULL OR type = %(type)s::text)
         AND (%(after_ts)s::timestamptz IS NULL
              OR (created_at, id) < (%(after_ts)s::timestamptz, %(after_id)s::uuid))
     ORDER BY created_at DESC, id DESC LIMIT %(window)s)
    UNION ALL
    (SELECT * FROM jobs WHERE tenant_id = %(tenant)s AND status = 'CANCELLED'
         AND (%(type)s::text IS NULL OR type = %(type)s::text)
         AND (%(after_ts)s::timestamptz IS NULL
              OR (created_at, id) < (%(after_ts)s::timestamptz, %(after_id)s::uuid))
     ORDER BY created_at DESC, id DESC LIMIT %(window)s)
) AS newest
ORDER BY newest.created_at DESC, newest.id DESC  -- the uuid, not the text id of the output
LIMIT %(limit)s OFFSET %(offset)s;

-- name: count_jobs
-- How many jobs a list has, counted up to %(bound)s (an index-only scan of at most that many
-- entries); beyond it, estimate_jobs.
SELECT count(*) FROM (
    SELECT 1 FROM jobs
    WHERE tenant_id = %(tenant)s AND (%(status)s::text IS NULL OR status = %(status)s::text)
      AND (%(type)s::text IS NULL OR type = %(type)s::text)
    LIMIT %(bound)s) AS counted;

-- name: estimate_jobs
-- The planner's estimate of the same, from the table's statistics: a plan, no scan.
EXPLAIN (FORMAT JSON)
SELECT 1 FROM jobs
WHERE tenant_id = %(tenant)s AND (%(status)s::text IS NULL OR status = %(status)s::text)
  AND (%(type)s::text IS NULL OR type = %(type)s::text);

-- name: ping
SELECT 1;

-- name: unfinished_jobs
-- The reconciler's scan: non-terminal jobs untouched for a while, in (updated_at, id) order from
-- a cursor, so successive calls walk the whole set a page at a time (partial index jobs_unfinished).
-- Ids and tenants only: the few that Redis does not know are read whole (unfinished_jobs_by_id).
SELECT id::text, tenant_id, updated_at
FROM jobs
WHERE status IN ('PENDING', 'RUNNING')
  AND updated_at < now() - make_interval(secs => %(quiet_s)s)
  AND (updated_at, id) > (%(after_ts)s::timestamptz, %(after_id)s::uuid)
ORDER BY updated_at, id
LIMIT %(limit)s;

-- name: get_job_of_tenant
SELECT id::text, tenant_id, type, payload, status, attempts, max_attempts, retries, timeout_ms, error,
       result, run_at, created_at, updated_at, priority, schedule_name, scheduled_for
FROM jobs WHERE id = %(id)s AND tenant_id = %(tenant)s;

-- name: job_owner
-- Whose job this is (with a tenant: only if it is that tenant's), without its payload or result:
-- what a job's events need (a job of 700 KB is not read and parsed to list its events).
SELECT tenant_id FROM jobs WHERE id = %(id)s AND (%(tenant)s::text IS NULL OR tenant_id = %(tenant)s::text);

-- name: create_tenant
-- Returns no row when the tenant already exists.
INSERT INTO tenants (id, max_running, submit_rate, submit_burst, max_queued, max_websockets,
                     max_queued_bytes, read_rate, read_burst, retention_seconds, max_schedules)
VALUES (%(id)s, %(max_running)s, %(submit_rate)s, %(submit_burst)s, %(max_queued)s,
        %(max_websockets)s, %(max_queued_bytes)s, %(read_rate)s, %(read_burst)s,
        %(retention_seconds)s, %(max_schedules)s)
ON CONFLICT (id) DO NOTHING
RETURNING id, max_running, submit_rate, submit_burst, max_queued, max_websockets,
          max_queued_bytes, read_rate, read_burst, retention_seconds, max_schedules, created_at;

-- name: update_tenant_limits
-- Sets the given limits (NULL: back to the default); columns not given keep their value.
UPDATE tenants SET
    max_running    = CASE WHEN %(set_max_running)s THEN %(max_running)s ELSE max_running END,
    submit_rate    = CASE WHEN %(set_submit_rate)s THEN %(submit_rate)s ELSE submit_rate END,
    submit_burst   = CASE WHEN %(set_submit_burst)s THEN %(submit_burst)s ELSE submit_burst END,
    max_queued     = CASE WHEN %(set_max_queued)s THEN %(max_queued)s ELSE max_queued END,
    max_websockets = CASE WHEN %(set_max_websockets)s THEN %(max_websockets)s ELSE max_websockets END,
    max_queued_bytes = CASE WHEN %(set_max_queued_bytes)s THEN %(max_queued_bytes)s
                            ELSE max_queued_bytes END,
    read_rate      = CASE WHEN %(set_read_rate)s THEN %(read_rate)s ELSE read_rate END,
    read_burst     = CASE WHEN %(set_read_burst)s THEN %(read_burst)s ELSE read_burst END,
    retention_seconds = CASE WHEN %(set_retention_seconds)s THEN %(retention_seconds)s
                             ELSE retention_seconds END,
    max_schedules  = CASE WHEN %(set_max_schedules)s THEN %(max_schedules)s ELSE max_schedules END,
    updated_at     = now()
WHERE id = %(id)s
RETURNING id, max_running, submit_rate, submit_burst, max_queued, max_websockets,
          max_queued_bytes, read_rate, read_burst, retention_seconds, max_schedules, created_at;

-- name: list_tenants
SELECT t.id, t.max_running, t.submit_rate, t.submit_burst, t.max_queued, t.max_websockets,
       t.max_queued_bytes, t.read_rate, t.read_burst, t.retention_seconds, t.max_schedules,
       t.created_at,
       (SELECT count(*) FROM api_keys k WHERE k.tenant_id = t.id AND k.revoked_at IS NULL)
           AS active_keys
FROM tenants t ORDER BY t.id;

-- name: tenant_overrides
-- The tenants with at least one limit of their own, read by every node's tenancy loop.
SELECT id, max_running, submit_rate, submit_burst, max_queued, max_websockets,
       max_queued_bytes, read_rate, read_burst, retention_seconds, max_schedules
FROM tenants
WHERE num_nonnulls(max_running, submit_rate, submit_burst, max_queued, max_websockets,
                   max_queued_bytes, read_rate, read_burst, retention_seconds, max_schedules) > 0;

-- name: create_key
INSERT INTO api_keys (id, tenant_id, name, digest)
SELECT %(id)s, t.id, %(name)s, %(digest)s FROM tenants t WHERE t.id = %(tenant)s
RETURNING id, tenant_id, name, created_at, revoked_at;

-- name: list_keys
SELECT id, tenant_id, name, created_at, revoked_at FROM api_keys
WHERE tenant_id = %(tenant)s ORDER BY created_at, id;

-- name: revoke_key
-- Returns the key, revoked now or earlier; no row when the tenant has no such key.
UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())
WHERE id = %(id)s AND tenant_id = %(tenant)s
RETURNING id, tenant_id, name, created_at, revoked_at;

-- name: find_key
SELECT id, tenant_id, digest, revoked_at FROM api_keys WHERE id = %(id)s;

-- name: revoked_keys
-- Which of these keys (the ones a node holds in its cache or on open sockets) are revoked.
SELECT id FROM api_keys WHERE id = ANY(%(ids)s::text[]) AND revoked_at IS NOT NULL;

-- name: cancel_job
-- A PENDING (queued or delayed) job becomes CANCELLED at once; a RUNNING one is marked, and its
-- executor's outcome will be written as CANCELLED. No row: no such job of this tenant, or it ended.
UPDATE jobs SET status = CASE WHEN status = 'PENDING' THEN 'CANCELLED' ELSE status END,
                error = CASE WHEN status = 'PENDING' THEN 'cancelled by request' ELSE error END,
                cancel_requested = true,
                updated_at = now()
WHERE id = %(id)s AND (%(tenant)s::text IS NULL OR tenant_id = %(tenant)s)
  AND status IN ('PENDING', 'RUNNING')
RETURNING id::text, tenant_id, type, payload, status, attempts, max_attempts, retries, timeout_ms, error,
          result, run_at, created_at, updated_at, priority, schedule_name, scheduled_for;

-- name: retry_job
-- A FAILED or CANCELLED job goes back to PENDING with `budget` more attempts. Its attempt counter
-- skips one number, so that a late outcome of an attempt from before the retry stays fenced out;
-- `retries` counts the numbers skipped (the API shows attempts less them).
UPDATE jobs SET status = 'PENDING', attempts = attempts + 1, retries = retries + 1,
                max_attempts = attempts + 1 + %(budget)s, error = NULL, result = NULL,
                cancel_requested = false, run_at = now(), updated_at = now()
WHERE id = %(id)s AND (%(tenant)s::text IS NULL OR tenant_id = %(tenant)s)
  AND status IN ('FAILED', 'CANCELLED')
RETURNING id::text, tenant_id, type, payload, status, attempts, max_attempts, retries, timeout_ms, error,
          result, run_at, created_at, updated_at, priority, schedule_name, scheduled_for;

-- name: claim_idempotency_keys
-- Take the keys of a batch of submissions; a key held within the retention window is not taken
-- (its request was submitted already), an expired one is taken over. Returns the keys taken.
INSERT INTO idempotency_keys (tenant_id, key, request_digest, response)
SELECT * FROM unnest(%(tenants)s::text[], %(keys)s::text[], %(digests)s::text[],
                     %(responses)s::jsonb[])
ON CONFLICT (tenant_id, key) DO UPDATE
    SET request_digest = excluded.request_digest, response = excluded.response,
        created_at = now()
    WHERE idempotency_keys.created_at < now() - make_interval(secs => %(retain_s)s)
RETURNING tenant_id, key;

-- name: get_idempotency_key
SELECT request_digest, response FROM idempotency_keys
WHERE tenant_id = %(tenant)s AND key = %(key)s
  AND created_at >= now() - make_interval(secs => %(retain_s)s);

-- name: purge_idempotency_keys
-- The oldest expired keys, at most %(limit)s of them (index idempotency_keys_created).
DELETE FROM idempotency_keys
WHERE (tenant_id, key) IN (
    SELECT tenant_id, key FROM idempotency_keys
    WHERE created_at < now() - make_interval(secs => %(retain_s)s)
    ORDER BY created_at LIMIT %(limit)s);

-- name: prune_jobs
-- Retention: the oldest jobs finished more than %(retain_s)s ago, at most %(limit)s of them, of
-- every tenant but those with a retention of their own (index jobs_finished). A finished row
-- never changes, but for a retry by hand: one that is being retried is skipped, and the status
-- is checked again under the row's lock.
DELETE FROM jobs
WHERE id IN (
    SELECT id FROM jobs
    WHERE status IN ('COMPLETED', 'FAILED', 'CANCELLED')
      AND updated_at < now() - make_interval(secs => %(retain_s)s)
      AND tenant_id <> ALL(%(own)s::text[])
    ORDER BY updated_at LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED)
  AND status IN ('COMPLETED', 'FAILED', 'CANCELLED');

-- name: prune_tenant_jobs
-- Retention of the tenants with their own: at most %(limit)s jobs of each (index
-- jobs_tenant_finished).
DELETE FROM jobs
WHERE id IN (
    SELECT d.id
    FROM unnest(%(tenants)s::text[], %(seconds)s::bigint[]) AS o(tenant_id, secs)
    CROSS JOIN LATERAL (
        SELECT id FROM jobs
        WHERE jobs.tenant_id = o.tenant_id AND status IN ('COMPLETED', 'FAILED', 'CANCELLED')
          AND updated_at < now() - make_interval(secs => o.secs)
        ORDER BY updated_at LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED) AS d)
  AND status IN ('COMPLETED', 'FAILED', 'CANCELLED');

-- name: unfinished_jobs_by_id
-- The reconciler's second look at the jobs Redis did not know: those still non-terminal now.
SELECT id::text, tenant_id, type, payload, status, attempts, max_attempts, retries, timeout_ms,
       priority, greatest(0, ceil(extract(epoch FROM run_at - now()) * 1000))::bigint AS due_in_ms,
       updated_at
FROM jobs
WHERE id = ANY(%(ids)s::uuid[])
  AND status NOT IN ('COMPLETED', 'FAILED', 'CANCELLED');  -- by primary key: see record_started

-- name: job_states
-- What the feed says of these jobs (their JOB_UPDATE), for outcomes that PostgreSQL refused.
SELECT id::text, tenant_id, status, attempts, max_attempts, retries, error, updated_at
FROM jobs WHERE id = ANY(%(ids)s::uuid[]);

-- name: lock_tenant_schedules
-- Serialises writes of one tenant's schedules (its cap), for this transaction.
SELECT pg_advisory_xact_lock(hashtext('conveyor schedules ' || %(tenant)s));

-- name: count_other_schedules
SELECT count(*) FROM schedules WHERE tenant_id = %(tenant)s AND name <> %(name)s;

-- name: upsert_schedule
-- Creates or replaces a schedule; created says which. A replaced schedule keeps its last fire.
INSERT INTO schedules (tenant_id, name, cron, every_ms, timezone, anchor, job, paused, next_fire_at)
VALUES (%(tenant)s, %(name)s, %(cron)s, %(every_ms)s, %(timezone)s, %(anchor)s, %(job)s, %(paused)s,
        %(next_fire_at)s)
ON CONFLICT (tenant_id, name) DO UPDATE
    SET cron = excluded.cron, every_ms = excluded.every_ms, timezone = excluded.timezone,
        anchor = excluded.anchor, job = excluded.job, paused = excluded.paused,
        next_fire_at = excluded.next_fire_at, updated_at = now()
RETURNING tenant_id, name, cron, every_ms, timezone, anchor, job, paused, next_fire_at, last_fire_at,
          last_job_id::text, created_at, updated_at, (xmax = 0) AS created;

-- name: get_schedule
SELECT tenant_id, name, cron, every_ms, timezone, anchor, job, paused, next_fire_at, last_fire_at,
       last_job_id::text, created_at, updated_at
FROM schedules WHERE tenant_id = %(tenant)s AND name = %(name)s;

-- name: list_schedules
SELECT tenant_id, name, cron, every_ms, timezone, anchor, job, paused, next_fire_at, last_fire_at,
       last_job_id::text, created_at, updated_at
FROM schedules WHERE tenant_id = %(tenant)s ORDER BY name LIMIT %(limit)s;

-- name: delete_schedule
DELETE FROM schedules WHERE tenant_id = %(tenant)s AND name = %(name)s RETURNING name;

-- name: set_schedule_paused
-- Pause, or resume from the next fire after now (the fires missed while paused are not made).
UPDATE schedules SET paused = %(paused)s, next_fire_at = coalesce(%(next_fire_at)s, next_fire_at),
                     updated_at = now()
WHERE tenant_id = %(tenant)s AND name = %(name)s
RETURNING tenant_id, name, cron, every_ms, timezone, anchor, job, paused, next_fire_at, last_fire_at,
          last_job_id::text, created_at, updated_at;

-- name: due_schedules
-- The schedules due now, locked for this transaction; those another node is firing are skipped.
SELECT tenant_id, name, cron, every_ms, timezone, anchor, job, next_fire_at, now() AS now
FROM schedules WHERE NOT paused AND next_fire_at <= now()
ORDER BY next_fire_at LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;

-- name: insert_scheduled_jobs
-- The jobs of fires; a fire that made its job already makes none (index jobs_schedule_fire).
INSERT INTO jobs (id, tenant_id, type, payload, max_attempts, timeout_ms, payload_bytes, priority,
                  schedule_name, scheduled_for)
SELECT * FROM unnest(%(ids)s::uuid[], %(tenants)s::text[], %(types)s::text[], %(payloads)s::jsonb[],
                     %(max_attempts)s::int[], %(timeouts)s::int[], %(payload_bytes)s::int[],
                     %(priorities)s::int[], %(schedule_names)s::text[], %(scheduled_fors)s::timestamptz[])
ON CONFLICT (tenant_id, schedule_name, scheduled_for) WHERE schedule_name IS NOT NULL DO NOTHING
RETURNING id::text;

-- name: schedules_fired
UPDATE schedules SET next_fire_at = u.next_fire_at, last_fire_at = u.fired_for,
                     last_job_id = coalesce(u.job_id, last_job_id)
FROM unnest(%(tenants)s::text[], %(names)s::text[], %(next)s::timestamptz[], %(fired)s::timestamptz[],
            %(jobs)s::uuid[]) AS u(tenant_id, name, next_fire_at, fired_for, job_id)
WHERE schedules.tenant_id = u.tenant_id AND schedules.name = u.name;

-- name: next_schedule_due
SELECT min(next_fire_at) AS due, now() AS now FROM schedules WHERE NOT paused;

-- name: jobs_dead_rows
-- Dead and live rows of the jobs table, by the statistics PostgreSQL keeps (track_counts).
SELECT coalesce(n_dead_tup, 0) AS dead, coalesce(n_live_tup, 0) AS live
FROM pg_stat_user_tables WHERE relid = 'jobs'::regclass;

-- name: vacuum_jobs
VACUUM (ANALYZE) jobs;
