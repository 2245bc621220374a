-- Cancel a job in the dispatch index. ARGV: prefix, id.
-- Not leased (ready or delayed): its envelope goes, and 'removed' is returned. Leased (running):
-- the envelope is flagged, a 'cancel' entry on the control stream tells every node to
-- stop the attempt, and 'running' is returned (the heartbeat reports the flag too, and the
-- reaper ends the job CANCELLED if its node is gone). No envelope: 'absent'.
local p, id = ARGV[1], ARGV[2]
local env = p .. ':job:' .. id
local tenant = redis.call('HGET', env, 't')
if not tenant then return 'absent' end
if redis.call('ZSCORE', p .. ':leases', id) then
  redis.call('HSET', env, 'c', 1)
  redis.call('XADD', p .. ':control', 'MAXLEN', '~', 10000, '*', 'k', 'cancel', 'id', id)
  return 'running'
end
redis.call('LREM', p .. ':q:' .. tenant, 0, id)
redis.call('ZREM', p .. ':delayed', id)
redis.call('DEL', env)
redis.call('HINCRBY', p .. ':queued', tenant, -1)
return 'removed'
