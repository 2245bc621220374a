-- Claim up to N ready jobs, fairly across tenants, and publish their RUNNING events (claim_ready).
-- KEYS[1]: shard prefix. ARGV: channel, n, node, lease_ms, default running cap (0: none),
-- feed_max, feed_ms.
-- Returns the tenants with ready work left on the ring (for the fetcher's rotation over shards),
-- then the claimed jobs as groups of 9 (claim_ready).
local p, n, node, lease_ms = KEYS[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local default_cap = tonumber(ARGV[5])
local feed_max, feed_ms = tonumber(ARGV[6]), tonumber(ARGV[7])
local now = now_ms()
local out = {0}
if claim_ready(p, n, node, lease_ms, default_cap, ARGV[6], now, out) > 0 then
  close_feeds(p, feed_max, feed_ms, now)
end
close_counts(p)  -- the envelopes it dropped (cancelled while they ran, then put back)
out[1] = redis.call('LLEN', p .. ':ring')
return out
