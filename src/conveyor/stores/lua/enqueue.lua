-- Dispatch new jobs: write each envelope, put it on its tenant's ready queue (or in the delayed
-- set until it is due), and publish its creation event (PENDING). Then, for a node whose fetcher
-- is idle with free executors, claim up to claim_n ready jobs at once (claim_ready: fair across
-- tenants, RUNNING published), so that an idle node starts a job without a wake-up and a claim
-- of its own.
-- KEYS[1]: shard prefix. ARGV: channel, feed_max, feed_ms, claim_n (0: none), node, lease_ms,
-- default running cap (as claim.lua's), then groups of 10: id, tenant, type, payload json,
-- max_attempts, timeout_ms, event json, priority, run_at (ms since the epoch, 0: none), delay_ms
-- (from now by Redis's clock, when there is no run_at).
-- A job whose envelope already exists is already dispatched and is skipped.
-- Returns how many it dispatched, then the claimed jobs as groups of 9 (claim_ready).
local p, feed_max, feed_ms = KEYS[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local claim_n = tonumber(ARGV[4])
local now = now_ms()
local count, ready = 0, 0
local fresh = {}  -- the jobs this call made ready
for i = 8, #ARGV, 10 do
  local id, tenant = ARGV[i], ARGV[i + 1]
  local env = p .. ':job:' .. id
  if redis.call('EXISTS', env) == 0 then
    local priority, run_at, delay = ARGV[i + 7], tonumber(ARGV[i + 8]), tonumber(ARGV[i + 9])
    local due = run_at > 0 and run_at or now + delay
    if dispatch_envelope(p, id, tenant, ARGV[i + 2], ARGV[i + 3], '0', ARGV[i + 4], ARGV[i + 5], priority, now, due) == 1 then
      fresh[id] = true
      ready = ready + 1
    end
    emit(p, tenant, id, ARGV[i + 6], ARGV[2])
    touch_history(tenant)
    count = count + 1
  end
end
close_ready(p)
local out = {count}
local left = ready
if claim_n > 0 and ready > 0 then
  claim_ready(p, claim_n, ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7]), ARGV[2], now, out)
  for j = 2, #out, 9 do  -- the claim may have taken jobs that were ready before these
    if fresh[out[j]] then left = left - 1 end
  end
end
-- Fetchers are woken as for a dispatch without a claim when any of these jobs is left: a woken
-- fetcher with no free executor keeps its token, so fewer tokens could leave a job waiting for
-- the next round of the fetchers while others are idle. None when the claim took them all.
wake(p, left > 0 and ready or 0)
close_feeds(p, feed_max, feed_ms, now)
close_counts(p)
close_history(p, now)
return out
