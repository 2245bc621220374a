-- Bounded reads and byte quotas (issue 11).
-- The JSON size of a job's payload and of its result, so that a list can leave out the large
-- ones without reading them (NULL on rows written before this: measured when listed).
ALTER TABLE jobs ADD COLUMN payload_bytes integer, ADD COLUMN result_bytes integer;
-- Per-tenant overrides of the new limits (NULL: the node's default; 0: no limit).
ALTER TABLE tenants
    ADD COLUMN max_queued_bytes bigint           CHECK (max_queued_bytes >= 0),
    ADD COLUMN read_rate        double precision CHECK (read_rate >= 0),
    ADD COLUMN read_burst       integer          CHECK (read_burst >= 1);
