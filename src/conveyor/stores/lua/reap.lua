-- Take back jobs whose lease expired (their node died or stalled).
-- ARGV: prefix, limit, lease_ms.
-- A job with attempts left goes back to ready ('requeued'); one without, or one whose
-- cancellation was requested, is leased to the reaper for lease_ms ('failed', 'cancelled') so
-- that recording its end can itself be retried.
-- Returns groups of 8: verdict, id, tenant, type, payload, attempt, max_attempts, timeout_ms.
local p, limit, lease_ms = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local now = now_ms()
local leases = p .. ':leases'
local out = {}
local requeued = 0
for _, id in ipairs(redis.call('ZRANGEBYSCORE', leases, '-inf', now, 'LIMIT', 0, limit)) do
  local env = p .. ':job:' .. id
  local h = redis.call('HMGET', env, 't', 'y', 'p', 'a', 'm', 'o', 'c')
  if not h[1] then
    redis.call('ZREM', leases, id)
  else
    local verdict
    if not h[7] and tonumber(h[4]) < tonumber(h[5]) then
      verdict = 'requeued'
      release(p, h[1], id)
      redis.call('HDEL', env, 'n')
      push_ready(p, h[1], id)
      requeued = requeued + 1
    else
      verdict = h[7] and 'cancelled' or 'failed'
      redis.call('ZADD', leases, now + lease_ms, id)
      redis.call('HSET', env, 'n', 'reaper')
    end
    for _, v in ipairs({verdict, id, h[1], h[2], h[3], h[4], h[5], h[6]}) do out[#out + 1] = v end
  end
end
wake(p, requeued)
return out
