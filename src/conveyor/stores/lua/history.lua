-- A tenant's history for the dashboard's charts (see touch_history in _lib.lua).
-- KEYS[1]: shard prefix. ARGV: channel, tenant. Returns {now ms, hour, this hour's fields, the hour before's fields}.
local p, tenant = KEYS[1], ARGV[2]
local now = now_ms()
local hour = math.floor(now / HIST_HOUR_MS)
local key = p .. ':hist:' .. tenant .. ':'
return {now, hour, redis.call('HGETALL', key .. hour), redis.call('HGETALL', key .. (hour - 1))}
