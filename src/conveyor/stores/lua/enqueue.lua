-- Dispatch new jobs: write each envelope, put it on its tenant's ready queue (or in the delayed
-- set until it is due), and publish its creation event (PENDING).
-- KEYS[1]: shard prefix. ARGV: channel, feed_max, feed_ms, then groups of 10: id, tenant, type, payload json,
-- max_attempts, timeout_ms, event json, priority, run_at (ms since the epoch, 0: none), delay_ms
-- (from now by Redis's clock, when there is no run_at).
-- A job whose envelope already exists is already dispatched and is skipped.
local p, feed_max, feed_ms = KEYS[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local now = now_ms()
local count, ready = 0, 0
for i = 4, #ARGV, 10 do
  local id, tenant = ARGV[i], ARGV[i + 1]
  local env = p .. ':job:' .. id
  if redis.call('EXISTS', env) == 0 then
    create_envelope(p, id, tenant, ARGV[i + 2], ARGV[i + 3], 0, ARGV[i + 4], ARGV[i + 5], ARGV[i + 7])
    local run_at, delay = tonumber(ARGV[i + 8]), tonumber(ARGV[i + 9])
    ready = ready + dispatch(p, tenant, id, now, ARGV[i + 7], run_at > 0 and run_at or now + delay)
    emit(p, tenant, id, ARGV[i + 6], feed_max)
    touch_history(tenant)
    count = count + 1
  end
end
wake(p, ready)
close_feeds(p, feed_max, feed_ms, now)
close_history(p, now)
return count
