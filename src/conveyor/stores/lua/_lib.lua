-- Shared helpers, prepended to every script when it is registered (stores/redis.py).
-- Keys: <p>:job:<id> envelope hash, <p>:q:<tenant> ready list, <p>:ring / <p>:ringset tenants
-- with ready work, <p>:delayed zset, <p>:leases zset, <p>:wake list, <p>:events stream.

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Put a job on its tenant's ready queue, and the tenant on the ring if it was not there.
local function push_ready(p, tenant, id)
  redis.call('RPUSH', p .. ':q:' .. tenant, id)
  if redis.call('SADD', p .. ':ringset', tenant) == 1 then
    redis.call('RPUSH', p .. ':ring', tenant)
  end
end

-- Wake up to n idle fetchers (one token each; the list stays short).
local function wake(p, n)
  if n > 0 then
    for _ = 1, math.min(n, 8) do redis.call('LPUSH', p .. ':wake', 1) end
    redis.call('LTRIM', p .. ':wake', 0, 63)
  end
end
