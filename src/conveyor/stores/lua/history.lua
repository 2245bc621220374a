-- A tenant's history for the dashboard's charts (see touch_history in _lib.lua).
-- ARGV: prefix, tenant. Returns {now ms, hour, this hour's fields, the hour before's fields}.
local p, tenant = ARGV[1], ARGV[2]
local now = now_ms()
local hour = math.floor(now / HIST_HOUR_MS)
local key = p .. ':hist:' .. tenant .. ':'
return {now, hour, redis.call('HGETALL', key .. hour), redis.call('HGETALL', key .. (hour - 1))}
