-- Apply recorded outcomes in Redis, fenced by attempt, and publish their events.
-- ARGV: prefix, n, then n groups of 4: id, attempt, action, delay_ms; then groups of 2: tenant, event json.
-- Actions: done (drop lease and envelope), retry (to the delayed set), handback (to ready,
-- attempt not counted), none. An action on an attempt that is not the envelope's is ignored.
local p, n = ARGV[1], tonumber(ARGV[2])
local now = now_ms()
local leases = p .. ':leases'
local handed_back = 0
local last = 2 + 4 * n
for i = 3, last, 4 do
  local id, attempt, action = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local env = p .. ':job:' .. id
  if action ~= 'none' and redis.call('HGET', env, 'a') == attempt then
    redis.call('ZREM', leases, id)
    if action == 'done' then
      redis.call('DEL', env)
    elseif action == 'retry' then
      redis.call('HDEL', env, 'n')
      redis.call('ZADD', p .. ':delayed', now + tonumber(ARGV[i + 3]), id)
    elseif action == 'handback' then
      redis.call('HSET', env, 'a', tonumber(attempt) - 1)
      redis.call('HDEL', env, 'n')
      push_ready(p, redis.call('HGET', env, 't'), id)
      handed_back = handed_back + 1
    end
  end
end
wake(p, handed_back)
for i = last + 1, #ARGV, 2 do
  redis.call('XADD', p .. ':events', 'MAXLEN', '~', 100000, '*', 't', ARGV[i], 'd', ARGV[i + 1])
end
return 1
