-- Extend the leases this node holds. KEYS[1]: shard prefix. ARGV: channel, node, lease_ms, then
-- pairs: id, attempt.
-- Returns pairs (id, why) of the jobs to stop: 'lost' when this node no longer holds the lease
-- (reaped, or claimed again elsewhere), 'cancel' when their cancellation was requested (their
-- lease is still extended, so that the cancelled outcome can be recorded).
local p, node, lease_ms = KEYS[1], ARGV[2], tonumber(ARGV[3])
local deadline = now_ms() + lease_ms
local leases = p .. ':leases'
local stop = {}
for i = 4, #ARGV, 2 do
  local id = ARGV[i]
  local h = redis.call('HMGET', p .. ':job:' .. id, 'a', 'n', 'c')
  if h[1] == ARGV[i + 1] and h[2] == node and redis.call('ZSCORE', leases, id) then
    redis.call('ZADD', leases, 'XX', deadline, id)
    if h[3] then
      stop[#stop + 1] = id
      stop[#stop + 1] = 'cancel'
    end
  else
    stop[#stop + 1] = id
    stop[#stop + 1] = 'lost'
  end
end
return stop
