-- Cancel a job in the dispatch index. KEYS[1]: shard prefix. ARGV: channel, id, lease_ms.
-- Not leased (ready or delayed): it leaves the queues and is leased to the canceller for lease_ms
-- with its cancel flag set, so that no executor can claim it; the canceller then records
-- CANCELLED and drops it with finish.lua (which publishes the event), or, should it die first,
-- the reaper does. Returns {'parked', attempt}.
-- Leased (running): the envelope is flagged, and the caller puts a 'cancel' entry on the control
-- stream (a global key, so not here) that tells every node to stop the attempt (the heartbeat
-- reports the flag too, and the reaper ends the job CANCELLED if its node is gone).
-- Returns {'running', attempt}. No envelope: {'absent', 0}.
local p, id, lease_ms = KEYS[1], ARGV[2], tonumber(ARGV[3])
local env = p .. ':job:' .. id
local h = redis.call('HMGET', env, 't', 'a')
local tenant = h[1]
if not tenant then return {'absent', 0} end
redis.call('HSET', env, 'c', 1)
if redis.call('ZSCORE', p .. ':leases', id) then
  return {'running', tonumber(h[2])}
end
redis.call('ZREM', p .. ':ready:' .. tenant, id)
redis.call('ZREM', p .. ':delayed', id)
redis.call('HSET', env, 'n', 'canceller')
hold(p, tenant, id, now_ms() + lease_ms)
return {'parked', tonumber(h[2])}
