-- Once per node start: move ready queues kept as lists (<p>:q:<tenant>, before priorities) into
-- the ready zsets, in their order and at their envelope's priority. A tenant with ready work is
-- always on the ring set, so its members name every such list. Returns how many jobs moved.
local p = KEYS[1]
local now = now_ms()
local moved = 0
for _, tenant in ipairs(redis.call('SMEMBERS', p .. ':ringset')) do
  local old = p .. ':q:' .. tenant
  if redis.call('TYPE', old).ok == 'list' then
    for _, id in ipairs(redis.call('LRANGE', old, 0, -1)) do
      push_ready(p, tenant, id, now, redis.call('HGET', p .. ':job:' .. id, 'P'))
      moved = moved + 1
    end
    redis.call('DEL', old)
  end
end
return moved
