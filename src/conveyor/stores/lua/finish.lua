-- Apply recorded outcomes in Redis, fenced by attempt, and publish their events.
-- KEYS[1]: shard prefix. ARGV: channel, feed_max, feed_ms, n, then n groups: id, attempt, action, delay_ms, k, then k
-- events (json) of that outcome; then groups of 3 that are published unconditionally (starts and
-- progress): tenant, job id, event json.
-- Actions: completed, failed, done (drop lease and envelope; the first two count the end in
-- the tenant's history), retry (to the delayed set), handback (to ready,
-- attempt not counted), requeue (to ready: the reaper's take-back of an expired lease).
-- An action applies only while the envelope is at that attempt, and an outcome's events are
-- published only when its action applies. Because only this script deletes a leased envelope,
-- a job's terminal event is published exactly once: by the call that dropped its envelope.
local p, feed_max, feed_ms, n = KEYS[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local now = now_ms()
local to_wake = 0
local i = 5
local events = {}  -- tenant, job, data of the outcomes that applied, in order
-- what the outcomes that applied release and drop, written together after the loop: the leases,
-- each tenant's running set, the envelopes of the jobs that are over
local leases, running, gone, dropped = {}, {}, {}, {}
for _ = 1, n do
  local id, attempt, action, delay_ms, k = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], tonumber(ARGV[i + 4])
  local env = p .. ':job:' .. id
  local h = redis.call('HMGET', env, 'a', 't')
  if h[1] == attempt and not dropped[id] then
    local tenant = h[2]
    leases[#leases + 1] = id
    local r = running[tenant]
    if r then r[#r + 1] = id else running[tenant] = {id} end
    if action == 'done' or action == 'completed' or action == 'failed' then
      dropped[id] = true
      gone[#gone + 1] = env
      uncount_envelope(env, tenant)
      touch_history(tenant, action == 'completed' and 'c' or action == 'failed' and 'f' or nil)
    else
      touch_history(tenant)
    end
    if action == 'retry' then
      redis.call('HDEL', env, 'n')
      redis.call('ZADD', p .. ':delayed', now + tonumber(delay_ms), id)
    elseif action == 'handback' or action == 'requeue' then
      if action == 'handback' then redis.call('HSET', env, 'a', tonumber(attempt) - 1) end
      redis.call('HDEL', env, 'n')
      push_ready(p, tenant, id, now, redis.call('HGET', env, 'P'))
      to_wake = to_wake + 1
    end
    for j = 1, k do
      events[#events + 1] = {tenant, id, ARGV[i + 4 + j]}
    end
  end
  i = i + 5 + k
end
sliced('ZREM', p .. ':leases', leases)
for tenant, ids in pairs(running) do
  -- released slots may let a capped tenant's next jobs run: wake fetchers for them
  local freed = sliced('SREM', p .. ':running:' .. tenant, ids)
  if freed > 0 and redis.call('ZCARD', p .. ':ready:' .. tenant) > 0 then
    to_wake = to_wake + freed
  end
end
sliced('DEL', false, gone)
close_counts(p)
wake(p, to_wake)
for j = i, #ARGV, 3 do
  emit(p, ARGV[j], ARGV[j + 1], ARGV[j + 2], ARGV[2])
end
for _, e in ipairs(events) do
  emit(p, e[1], e[2], e[3], ARGV[2])
end
close_feeds(p, feed_max, feed_ms, now)
close_history(p, now)
return 1
