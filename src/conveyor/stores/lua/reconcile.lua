-- Dispatch again the non-terminal jobs (per PostgreSQL) that Redis does not know: their envelope
-- is missing because the dispatch after commit failed, or Redis lost its data.
-- KEYS[1]: shard prefix. ARGV: channel, then groups of 11: id, tenant, type, payload, status, attempts, max_attempts,
-- timeout_ms, due_in_ms, retries (attempt numbers skipped by retries by hand, kept as 'k'),
-- priority. A PENDING job goes to ready (or to the delayed set when not yet due);
-- a RUNNING one gets an already expired lease, so that the reaper decides, as for a dead node,
-- between another attempt and FAILED. Returns how many jobs were dispatched again.
local p = KEYS[1]
local now = now_ms()
local repaired = 0
for i = 2, #ARGV, 11 do
  local id, tenant = ARGV[i], ARGV[i + 1]
  local env = p .. ':job:' .. id
  if redis.call('EXISTS', env) == 0 then
    local type_, payload, attempts, max_attempts, timeout_ms = ARGV[i + 2], ARGV[i + 3], ARGV[i + 5], ARGV[i + 6], ARGV[i + 7]
    if ARGV[i + 4] == 'RUNNING' then
      create_envelope(p, id, tenant, type_, payload, attempts, max_attempts, timeout_ms, ARGV[i + 10])
      redis.call('HSET', env, 'n', 'reconciler')
      hold(p, tenant, id, 0)
    else
      dispatch_envelope(p, id, tenant, type_, payload, attempts, max_attempts, timeout_ms, ARGV[i + 10], now,
                        now + tonumber(ARGV[i + 8]))
    end
    if ARGV[i + 9] ~= '0' then redis.call('HSET', env, 'k', ARGV[i + 9]) end
    repaired = repaired + 1
  end
end
close_ready(p)
close_counts(p)
wake(p, repaired)
return repaired
