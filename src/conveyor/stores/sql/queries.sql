-- Named queries, loaded once by stores/postgres.py. Each starts with "-- name: NAME".

-- name: insert_jobs
-- One statement per group-commit batch.
INSERT INTO jobs (id, tenant_id, type, payload, max_attempts, timeout_ms)
SELECT * FROM unnest(%(ids)s::uuid[], %(tenants)s::text[], %(types)s::text[],
                     %(payloads)s::jsonb[], %(max_attempts)s::int[], %(timeouts)s::int[]);

-- name: record_started
-- Fenced by attempt: only a newer attempt may mark a non-terminal job RUNNING.
UPDATE jobs SET status = 'RUNNING', attempts = u.attempt, updated_at = now()
FROM unnest(%(ids)s::uuid[], %(attempts)s::int[]) AS u(id, attempt)
WHERE jobs.id = u.id AND jobs.attempts < u.attempt AND jobs.status IN ('PENDING', 'RUNNING')
RETURNING jobs.id::text, jobs.tenant_id, jobs.status, jobs.attempts, jobs.max_attempts,
          jobs.error, jobs.updated_at;

-- name: record_finished
-- Fenced by attempt: an outcome of attempt N is refused once attempt N+1 has started, and a
-- terminal row never changes again. new_attempt differs from attempt only for a hand-back on
-- drain, which does not count the attempt.
UPDATE jobs SET status = u.status, attempts = u.new_attempt, error = u.error, result = u.result,
                run_at = CASE WHEN u.status = 'PENDING'
                              THEN now() + make_interval(secs => u.delay_ms / 1000.0)
                              ELSE jobs.run_at END,
                updated_at = now()
FROM unnest(%(ids)s::uuid[], %(attempts)s::int[], %(new_attempts)s::int[], %(statuses)s::text[],
            %(errors)s::text[], %(results)s::jsonb[], %(delays)s::int[])
     AS u(id, attempt, new_attempt, status, error, result, delay_ms)
WHERE jobs.id = u.id AND jobs.attempts <= u.attempt AND jobs.status IN ('PENDING', 'RUNNING')
RETURNING jobs.id::text, jobs.tenant_id, jobs.status, jobs.attempts, jobs.max_attempts,
          jobs.error, jobs.updated_at;

-- name: get_job
SELECT id::text, tenant_id, type, payload, status, attempts, max_attempts, timeout_ms, error,
       result, run_at, created_at, updated_at
FROM jobs WHERE id = %(id)s;

-- name: list_jobs
SELECT id::text, tenant_id, type, payload, status, attempts, max_attempts, timeout_ms, error,
       result, run_at, created_at, updated_at
FROM jobs
WHERE tenant_id = %(tenant)s AND (%(status)s::text IS NULL OR status = %(status)s::text)
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s OFFSET %(offset)s;

-- name: count_jobs
SELECT count(*) FROM jobs
WHERE tenant_id = %(tenant)s AND (%(status)s::text IS NULL OR status = %(status)s::text);

-- name: ping
SELECT 1;

-- name: unfinished_jobs
-- The reconciler's scan: non-terminal jobs untouched for a while, in (updated_at, id) order from
-- a cursor, so successive calls walk the whole set a page at a time (partial index jobs_unfinished).
SELECT id::text, tenant_id, type, payload, status, attempts, max_attempts, timeout_ms,
       greatest(0, extract(epoch FROM run_at - now()) * 1000)::bigint AS due_in_ms,
       updated_at
FROM jobs
WHERE status IN ('PENDING', 'RUNNING')
  AND updated_at < now() - make_interval(secs => %(quiet_s)s)
  AND (updated_at, id) > (%(after_ts)s::timestamptz, %(after_id)s::uuid)
ORDER BY updated_at, id
LIMIT %(limit)s;
