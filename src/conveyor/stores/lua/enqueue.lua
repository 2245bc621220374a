-- Dispatch new jobs: write each envelope and push it to its tenant's ready queue.
-- ARGV: prefix, then groups of 6: id, tenant, type, payload json, max_attempts, timeout_ms.
-- A job whose envelope already exists is already dispatched and is skipped.
local p = ARGV[1]
local count = 0
for i = 2, #ARGV, 6 do
  local id, tenant = ARGV[i], ARGV[i + 1]
  local env = p .. ':job:' .. id
  if redis.call('EXISTS', env) == 0 then
    create_envelope(p, id, tenant, ARGV[i + 2], ARGV[i + 3], 0, ARGV[i + 4], ARGV[i + 5])
    push_ready(p, tenant, id)
    count = count + 1
  end
end
wake(p, count)
return count
