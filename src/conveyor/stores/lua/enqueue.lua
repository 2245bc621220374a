-- Dispatch new jobs: write each envelope, push it to its tenant's ready queue, and publish its
-- creation event (PENDING).
-- ARGV: prefix, feed_max, feed_ms, then groups of 7: id, tenant, type, payload json,
-- max_attempts, timeout_ms, event json.
-- A job whose envelope already exists is already dispatched and is skipped.
local p, feed_max, feed_ms = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local now = now_ms()
local count = 0
for i = 4, #ARGV, 7 do
  local id, tenant = ARGV[i], ARGV[i + 1]
  local env = p .. ':job:' .. id
  if redis.call('EXISTS', env) == 0 then
    create_envelope(p, id, tenant, ARGV[i + 2], ARGV[i + 3], 0, ARGV[i + 4], ARGV[i + 5])
    push_ready(p, tenant, id, now)
    emit(p, tenant, id, ARGV[i + 6], feed_max)
    touch_history(tenant)
    count = count + 1
  end
end
wake(p, count)
close_feeds(p, feed_max, feed_ms, now)
close_history(p, now)
return count
