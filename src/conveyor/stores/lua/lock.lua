-- Take or keep a named lock. KEYS[1]: the lock's key. ARGV: channel, holder, ttl_ms.
-- Returns 1 when `holder` has the lock (its ttl renewed), 0 when another holder has it.
local key, holder, ttl = KEYS[1], ARGV[2], ARGV[3]
if redis.call('SET', key, holder, 'NX', 'PX', ttl) then return 1 end
if redis.call('GET', key) == holder then
  redis.call('PEXPIRE', key, ttl)
  return 1
end
return 0
