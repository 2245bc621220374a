-- Move due delayed jobs (retries) to their tenants' ready queues.
-- ARGV: prefix, limit. Returns {moved, ms until the next due job or -1}.
local p, limit = ARGV[1], tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local delayed = p .. ':delayed'
local moved = 0
for _, id in ipairs(redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, limit)) do
  redis.call('ZREM', delayed, id)
  local tenant = redis.call('HGET', p .. ':job:' .. id, 't')
  if tenant then
    redis.call('RPUSH', p .. ':q:' .. tenant, id)
    if redis.call('SADD', p .. ':ringset', tenant) == 1 then
      redis.call('RPUSH', p .. ':ring', tenant)
    end
    moved = moved + 1
  end
end
if moved > 0 then
  for _ = 1, math.min(moved, 8) do redis.call('LPUSH', p .. ':wake', 1) end
  redis.call('LTRIM', p .. ':wake', 0, 63)
end
local nxt = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
if nxt[2] then return {moved, math.max(0, tonumber(nxt[2]) - now)} end
return {moved, -1}
