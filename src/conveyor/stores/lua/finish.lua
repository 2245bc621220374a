-- Apply recorded outcomes in Redis, fenced by attempt, and publish their events.
-- ARGV: prefix, feed_max, feed_ms, n, then n groups of 4: id, attempt, action, delay_ms; then
-- groups of 2: tenant, event json.
-- Actions: done (drop lease and envelope), retry (to the delayed set), handback (to ready,
-- attempt not counted), none. An action on an attempt that is not the envelope's is ignored.
local p, feed_max, feed_ms, n = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local now = now_ms()
local to_wake = 0
local last = 4 + 4 * n
for i = 5, last, 4 do
  local id, attempt, action = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local env = p .. ':job:' .. id
  local h = redis.call('HMGET', env, 'a', 't')
  if action ~= 'none' and h[1] == attempt then
    local tenant = h[2]
    -- a released slot may let a capped tenant's next job run: wake a fetcher for it
    to_wake = to_wake + release(p, tenant, id)
    if action == 'done' then
      redis.call('DEL', env)
      redis.call('HINCRBY', p .. ':queued', tenant, -1)
    elseif action == 'retry' then
      redis.call('HDEL', env, 'n')
      redis.call('ZADD', p .. ':delayed', now + tonumber(ARGV[i + 3]), id)
    elseif action == 'handback' then
      redis.call('HSET', env, 'a', tonumber(attempt) - 1)
      redis.call('HDEL', env, 'n')
      push_ready(p, tenant, id)
      to_wake = to_wake + 1
    end
  end
end
wake(p, to_wake)
for i = last + 1, #ARGV, 2 do
  emit(p, ARGV[i], ARGV[i + 1], feed_max)
end
close_feeds(p, feed_ms, now)
return 1
