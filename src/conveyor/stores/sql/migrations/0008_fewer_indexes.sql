-- Fewer index entries per job (issue 17). Every job is inserted and updated at least once, and
-- neither write can be a HOT update (status and updated_at are indexed), so each index of jobs
-- gets an entry per write: index insertion was half of PostgreSQL's CPU per job (perf, during a
-- drain). A list without a status filter now merges the newest of each status from the indexes
-- that have it (queries.sql: list_jobs_any_status), and a count without one reads their prefix,
-- so the two indexes without the status go.
DROP INDEX jobs_tenant_created;
DROP INDEX jobs_tenant_type_created;
