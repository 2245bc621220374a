-- Replace the running caps of a shard's tenants (claim.lua reads them), at once.
-- KEYS[1]: shard prefix. ARGV: channel, then pairs: tenant, cap.
local caps = KEYS[1] .. ':maxrun'
redis.call('DEL', caps)
for i = 2, #ARGV, 2 do
  redis.call('HSET', caps, ARGV[i], ARGV[i + 1])
end
return 1
