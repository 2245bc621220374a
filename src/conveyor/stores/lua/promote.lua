-- Move due delayed jobs (delayed submissions, retries) to their tenants' ready queues.
-- KEYS[1]: shard prefix. ARGV: channel, limit. Returns {moved, ms until the next due job or -1}.
local p, limit = KEYS[1], tonumber(ARGV[2])
local now = now_ms()
local delayed = p .. ':delayed'
local moved = 0
for _, id in ipairs(redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, limit)) do
  redis.call('ZREM', delayed, id)
  local h = redis.call('HMGET', p .. ':job:' .. id, 't', 'P')
  if h[1] then
    push_ready(p, h[1], id, now, h[2])
    moved = moved + 1
  end
end
wake(p, moved)
local nxt = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
if nxt[2] then return {moved, math.max(0, tonumber(nxt[2]) - now)} end
return {moved, -1}
