-- Admission of submissions, before they are written: per-tenant queue caps (jobs, then bytes of
-- payload), then the tenant's submit rate (a token bucket per tenant, shared by every node).
-- KEYS[1]: shard prefix. ARGV: channel, then groups of 7: tenant, jobs, bytes, rate (jobs/s, 0: none), burst,
-- max_queued (0: none), max_queued_bytes (0: none).
-- Returns per group: verdict ('ok', 'queue', 'bytes', 'rate', 'burst'), then ms to wait before a retry.
local p = KEYS[1]
local now = now_ms()
local admitted = {}  -- jobs admitted per tenant by this call, not yet counted in <p>:queued
local admitted_bytes = {}
local out = {}
for i = 2, #ARGV, 7 do
  local tenant, n, bytes = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  local rate, burst, max_queued = tonumber(ARGV[i + 3]), tonumber(ARGV[i + 4]), tonumber(ARGV[i + 5])
  local max_bytes = tonumber(ARGV[i + 6])
  local verdict, wait_ms = 'ok', 0
  local queued = (tonumber(redis.call('HGET', p .. ':queued', tenant)) or 0) + (admitted[tenant] or 0)
  local held = (tonumber(redis.call('HGET', p .. ':qbytes', tenant)) or 0) + (admitted_bytes[tenant] or 0)
  if max_queued > 0 and queued + n > max_queued then
    verdict, wait_ms = 'queue', 1000
  elseif max_bytes > 0 and held + bytes > max_bytes then
    verdict, wait_ms = 'bytes', 1000
  elseif rate > 0 then
    if n > burst then
      verdict = 'burst'
    else
      local bucket = p .. ':bucket:' .. tenant
      local b = redis.call('HMGET', bucket, 'tokens', 'ts')
      local tokens = tonumber(b[1]) or burst
      local ts = tonumber(b[2]) or now
      tokens = math.min(burst, tokens + math.max(0, now - ts) * rate / 1000)
      if tokens >= n then
        tokens = tokens - n
      else
        verdict, wait_ms = 'rate', math.ceil((n - tokens) * 1000 / rate)
      end
      redis.call('HSET', bucket, 'tokens', tostring(tokens), 'ts', now)
      -- an idle bucket is full again after burst / rate: let it go
      redis.call('PEXPIRE', bucket, math.ceil(burst * 1000 / rate) + 1000)
    end
  end
  if verdict == 'ok' then
    admitted[tenant] = (admitted[tenant] or 0) + n
    admitted_bytes[tenant] = (admitted_bytes[tenant] or 0) + bytes
  end
  out[#out + 1] = verdict
  out[#out + 1] = wait_ms
end
return out
