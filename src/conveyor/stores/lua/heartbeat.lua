-- Extend the leases this node holds. ARGV: prefix, node, lease_ms, then pairs: id, attempt.
-- Returns the ids whose lease this node no longer holds (reaped, or claimed again elsewhere).
local p, node, lease_ms = ARGV[1], ARGV[2], tonumber(ARGV[3])
local deadline = now_ms() + lease_ms
local leases = p .. ':leases'
local lost = {}
for i = 4, #ARGV, 2 do
  local id = ARGV[i]
  local h = redis.call('HMGET', p .. ':job:' .. id, 'a', 'n')
  if h[1] == ARGV[i + 1] and h[2] == node and redis.call('ZSCORE', leases, id) then
    redis.call('ZADD', leases, 'XX', deadline, id)
  else
    lost[#lost + 1] = id
  end
end
return lost
