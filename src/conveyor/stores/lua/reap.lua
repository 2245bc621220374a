-- Take back jobs whose lease expired (their node died or stalled).
-- KEYS[1]: shard prefix. ARGV: channel, limit, lease_ms.
-- Each is leased to the reaper for lease_ms, so that nothing else runs it while PostgreSQL
-- decides what happens (and so that, should the reaper's node die too, it is reaped again):
-- 'requeued' when it has attempts left, 'failed' when not, 'cancelled' when its cancellation was
-- requested. The recorder writes that (fenced) and applies it with finish.lua; a job whose row
-- had already ended gets its terminal event there instead of another run.
-- Returns groups of 9: verdict, id, tenant, type, payload, attempt, max_attempts, timeout_ms,
-- attempt numbers skipped by retries.
local p, limit, lease_ms = KEYS[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local now = now_ms()
local leases = p .. ':leases'
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', leases, '-inf', now, 'LIMIT', 0, limit)) do
  local env = p .. ':job:' .. id
  local h = redis.call('HMGET', env, 't', 'y', 'p', 'a', 'm', 'o', 'c', 'k')
  if not h[1] then
    redis.call('ZREM', leases, id)
  else
    local verdict = 'requeued'
    if h[7] then
      verdict = 'cancelled'
    elseif tonumber(h[4]) >= tonumber(h[5]) then
      verdict = 'failed'
    end
    redis.call('ZADD', leases, now + lease_ms, id)
    redis.call('HSET', env, 'n', 'reaper')
    for _, v in ipairs({verdict, id, h[1], h[2], h[3], h[4], h[5], h[6], h[8] or 0}) do out[#out + 1] = v end
  end
end
return out
