-- Claim up to N ready jobs, one per tenant per turn of the ring, so tenants share fairly (a
-- tenant's priorities order its own jobs only); a tenant that holds as many leases as its
-- running cap is passed over until one is released.
-- KEYS[1]: shard prefix. ARGV: channel, n, node, lease_ms, default running cap (0: none); <p>:maxrun overrides it.
-- Returns the tenants with ready work left on the ring (for the fetcher's rotation over shards),
-- then a flat list of groups of 9: id, tenant, type, payload, attempt, max_attempts, timeout_ms,
-- ms it waited ready (-1: not known, an envelope from before 'r'), attempt numbers skipped by
-- retries ('k', 0 when none).
local p, n, node, lease_ms = KEYS[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local default_cap = tonumber(ARGV[5])
local now = now_ms()
local ring, ringset, leases = p .. ':ring', p .. ':ringset', p .. ':leases'
local out = {0}
local claimed = 0
local passed = 0  -- capped tenants passed over since the last claim
while claimed < n and passed < redis.call('LLEN', ring) do
  local tenant = redis.call('LPOP', ring)
  local cap = tonumber(redis.call('HGET', p .. ':maxrun', tenant)) or default_cap
  if cap > 0 and redis.call('SCARD', p .. ':running:' .. tenant) >= cap then
    redis.call('RPUSH', ring, tenant)
    passed = passed + 1
  else
    local q = p .. ':ready:' .. tenant
    local id = redis.call('ZPOPMIN', q)[1]  -- the most urgent, ready first: O(log n)
    if redis.call('ZCARD', q) > 0 then
      redis.call('RPUSH', ring, tenant)
    else
      redis.call('SREM', ringset, tenant)
    end
    if id then
      local env = p .. ':job:' .. id
      local h = redis.call('HMGET', env, 't', 'y', 'p', 'm', 'o', 'c', 'r', 'k')
      if h[6] then
        -- cancelled while it was running, then put back (a retry, a lease expiry): drop it
        drop_envelope(p, tenant, id)
      -- skip ids whose job finished (no envelope) or that already run (a duplicate dispatch)
      elseif h[1] and not redis.call('ZSCORE', leases, id) then
        local attempt = redis.call('HINCRBY', env, 'a', 1)
        redis.call('HSET', env, 'n', node)
        hold(p, tenant, id, now + lease_ms)
        local waited = h[7] and math.max(0, now - tonumber(h[7])) or -1
        for _, v in ipairs({id, h[1], h[2], h[3], attempt, h[4], h[5], waited, h[8] or 0}) do out[#out + 1] = v end
        claimed = claimed + 1
        passed = 0
      end
    end
  end
end
out[1] = redis.call('LLEN', ring)
return out
