-- Publish job events that change no dispatch state (a cancellation, a retry, progress).
-- ARGV: prefix, feed_max, feed_ms, then groups of 2: tenant, event json.
local p, feed_max, feed_ms = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local now = now_ms()
for i = 4, #ARGV, 2 do
  emit(p, ARGV[i], ARGV[i + 1], feed_max)
end
close_feeds(p, feed_ms, now)
return 1
