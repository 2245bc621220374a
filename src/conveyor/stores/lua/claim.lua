-- Claim up to N ready jobs, one per tenant per turn of the ring, so tenants share fairly.
-- ARGV: prefix, n, node, lease_ms.
-- Returns a flat list of groups of 7: id, tenant, type, payload, attempt, max_attempts, timeout_ms.
local p, n, node, lease_ms = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local now = now_ms()
local ring, ringset, leases = p .. ':ring', p .. ':ringset', p .. ':leases'
local out = {}
local claimed = 0
while claimed < n do
  local tenant = redis.call('LPOP', ring)
  if not tenant then break end
  local q = p .. ':q:' .. tenant
  local id = redis.call('LPOP', q)
  if redis.call('LLEN', q) > 0 then
    redis.call('RPUSH', ring, tenant)
  else
    redis.call('SREM', ringset, tenant)
  end
  if id then
    local env = p .. ':job:' .. id
    local h = redis.call('HMGET', env, 't', 'y', 'p', 'm', 'o')
    -- skip ids whose job finished (no envelope) or that already run (a duplicate dispatch)
    if h[1] and not redis.call('ZSCORE', leases, id) then
      local attempt = redis.call('HINCRBY', env, 'a', 1)
      redis.call('HSET', env, 'n', node)
      redis.call('ZADD', leases, now + lease_ms, id)
      for _, v in ipairs({id, h[1], h[2], h[3], attempt, h[4], h[5]}) do out[#out + 1] = v end
      claimed = claimed + 1
    end
  end
end
return out
