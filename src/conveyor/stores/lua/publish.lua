-- Publish job events that change no dispatch state (a retry by hand, progress, the end of a job
-- that Redis did not know).
-- KEYS[1]: shard prefix. ARGV: channel, feed_max, feed_ms, then groups of 3: tenant, job id, event json.
local p, feed_max, feed_ms = KEYS[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local now = now_ms()
for i = 4, #ARGV, 3 do
  emit(p, ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[2])
end
close_feeds(p, feed_max, feed_ms, now)
return 1
