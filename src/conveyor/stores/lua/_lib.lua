-- Shared helpers, prepended to every script when it is registered (stores/redis.py).
-- Every script runs on one shard: KEYS[1] is its key prefix (p below; a hash tag on a cluster) and
-- every key it touches starts with it. ARGV[1] is the channel prefix of a cluster's wake-ups, ''
-- on a single Redis, where idle nodes block on the wake-up lists instead.
-- Keys: <p>:job:<id> envelope hash, <p>:ready:<tenant> ready zset (by priority, then FIFO; see
-- push_ready), <p>:seq its sequence, <p>:ring / <p>:ringset tenants with ready work, <p>:delayed
-- zset of jobs not yet due (delayed jobs, retries) by due time in ms, <p>:leases zset, <p>:wake list,
-- <p>:running:<tenant> set of the tenant's leased jobs, <p>:maxrun hash tenant -> running cap,
-- <p>:queued hash tenant -> unfinished jobs (envelopes), <p>:qbytes hash tenant -> bytes of their
-- payloads, <p>:bucket:<tenant> submit rate bucket, <p>:feed:<tenant> the tenant's retained job
-- events, <p>:feedhead:<tenant> its newest event id, <p>:jev:<tenant> and <p>:jev0:<tenant> the
-- index of its jobs' events, <p>:hist:<tenant>:<hour> its history for the dashboard's charts.

local SLICE = 500  -- members of one variadic command at most (Lua's unpack has a limit)

-- One variadic command per SLICE members of list (after key, when there is one): the sum of
-- their replies.
local function sliced(cmd, key, list)
  local total = 0
  for first = 1, #list, SLICE do
    local last = math.min(first + SLICE - 1, #list)
    if key then
      total = total + redis.call(cmd, key, unpack(list, first, last))
    else
      total = total + redis.call(cmd, unpack(list, first, last))
    end
  end
  return total
end

-- A number given to redis.call is formatted with "%.17g" on every call (snprintf: 8 % of the hot
-- path's instructions in Redis when it was done eight times a job). text(n) formats an integer
-- once per call of a script, for the values many of its jobs share (now, a lease's deadline,
-- attempt counts).
local texts = {}

local function text(n)
  local s = texts[n]
  if not s then
    s = string.format('%d', n)
    texts[n] = s
  end
  return s
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- ms since the epoch as ISO-8601 in UTC with milliseconds and a Z, as wire.iso writes it (the
-- civil date of a day count: Howard Hinnant's days_from_civil, inverted).
local function iso_ms(ms)
  local s = math.floor(ms / 1000)
  local days = math.floor(s / 86400)
  local secs = s - days * 86400
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local day = doy - math.floor((153 * mp + 2) / 5) + 1
  local month = mp < 10 and mp + 3 or mp - 9
  local year = yoe + era * 400 + (month <= 2 and 1 or 0)
  return string.format('%04d-%02d-%02dT%02d:%02d:%02d.%03dZ', year, month, day,
    math.floor(secs / 3600), math.floor(secs % 3600 / 60), secs % 60, ms % 1000)
end

-- Sequence numbers for the ready queues' FIFO order, taken from <p>:seq in blocks of 64 (one
-- INCRBY per 64 jobs); numbers left unused at the end of a call are skipped, never reused.
local seq_next, seq_last = 1, 0

local function next_seq(p)
  if seq_next > seq_last then
    seq_last = redis.call('INCRBY', p .. ':seq', 64)
    seq_next = seq_last - 63
  end
  seq_next = seq_next + 1
  return seq_next - 1
end

-- A ready queue's score: the priority (0 most urgent .. 9) above a sequence number below 2^44, so
-- that ZPOPMIN takes the most urgent job first and, within a priority, the one ready first. Both
-- fit a double exactly (9 * 2^44 + 2^44 < 2^53); 2^44 numbers last 55 years at 10,000 jobs/s.
local PRIORITY_STEP = 17592186044416

-- Put a job (its envelope exists) on its tenant's ready queue, and the tenant on the ring if it
-- was not there. The envelope's 'r' is when it became ready, for the claim's queue wait.
local function push_ready(p, tenant, id, now, priority)
  redis.call('HSET', p .. ':job:' .. id, 'r', text(now))
  redis.call('ZADD', p .. ':ready:' .. tenant, (tonumber(priority) or 5) * PRIORITY_STEP + next_seq(p), id)
  if redis.call('SADD', p .. ':ringset', tenant) == 1 then
    redis.call('RPUSH', p .. ':ring', tenant)
  end
end

-- The same for the jobs of a call that become ready with their envelope (enqueue): each push
-- takes its sequence number now, in order, and close_ready writes each tenant's pushes with one
-- ZADD and puts the tenant on the ring once. 'r' goes in with the envelope (create_envelope).
local readies, ready_tenants = {}, {}

local function queue_ready(p, tenant, id, priority)
  local r = readies[tenant]
  if not r then
    r = {}
    readies[tenant] = r
    ready_tenants[#ready_tenants + 1] = tenant
  end
  r[#r + 1] = (tonumber(priority) or 5) * PRIORITY_STEP + next_seq(p)
  r[#r + 1] = id
end

local function close_ready(p)
  for _, tenant in ipairs(ready_tenants) do
    sliced('ZADD', p .. ':ready:' .. tenant, readies[tenant])  -- SLICE is even: pairs stay whole
    if redis.call('SADD', p .. ':ringset', tenant) == 1 then
      redis.call('RPUSH', p .. ':ring', tenant)
    end
  end
  readies, ready_tenants = {}, {}
end

-- Lease a job until deadline; the tenant's running set counts it against its cap.
local function hold(p, tenant, id, deadline)
  redis.call('ZADD', p .. ':leases', deadline, id)
  redis.call('SADD', p .. ':running:' .. tenant, id)
end

-- Each tenant's unfinished jobs (envelopes) and their payloads' bytes, <p>:queued and
-- <p>:qbytes: a script counts each envelope it makes or drops here, and close_counts writes the
-- sums once per tenant. Every script that makes or drops envelopes calls it before it returns.
local counts = {}

local function count_envelopes(tenant, jobs, bytes)
  local c = counts[tenant]
  if not c then
    c = {jobs = 0, bytes = 0}
    counts[tenant] = c
  end
  c.jobs, c.bytes = c.jobs + jobs, c.bytes + bytes
end

local function close_counts(p)
  for tenant, c in pairs(counts) do
    if c.jobs ~= 0 then redis.call('HINCRBY', p .. ':queued', tenant, c.jobs) end
    -- an envelope written before the byte counter existed was never counted: never below 0
    if c.bytes ~= 0 and redis.call('HINCRBY', p .. ':qbytes', tenant, c.bytes) < 0 then
      redis.call('HSET', p .. ':qbytes', tenant, 0)
    end
  end
  counts = {}
end

-- A new envelope: write it and count it (and its payload's bytes) as the tenant's unfinished
-- job. ready_at: when it became ready ('r'), nil for a job not ready yet.
local function create_envelope(p, id, tenant, type_, payload, attempts, max_attempts, timeout_ms, priority, ready_at)
  local env = p .. ':job:' .. id
  if ready_at then
    redis.call('HSET', env, 't', tenant, 'y', type_, 'p', payload, 'a', attempts, 'm', max_attempts,
               'o', timeout_ms, 'P', priority, 'r', ready_at)
  else
    redis.call('HSET', env, 't', tenant, 'y', type_, 'p', payload, 'a', attempts, 'm', max_attempts,
               'o', timeout_ms, 'P', priority)
  end
  count_envelopes(tenant, 1, #payload)
end

-- A new envelope that is ready now (on its tenant's queue with close_ready) or waits in the
-- delayed set until due (ms). Returns 1 when it is ready.
local function dispatch_envelope(p, id, tenant, type_, payload, attempts, max_attempts, timeout_ms, priority, now, due)
  local ready = due <= now
  create_envelope(p, id, tenant, type_, payload, attempts, max_attempts, timeout_ms, priority, ready and text(now) or nil)
  if ready then
    queue_ready(p, tenant, id, priority)
    return 1
  end
  redis.call('ZADD', p .. ':delayed', due, id)
  return 0
end

-- The envelope at env is over for the dispatch index: uncount it (the caller deletes it).
local function uncount_envelope(env, tenant)
  count_envelopes(tenant, -1, -redis.call('HSTRLEN', env, 'p'))
end

-- The job is over for the dispatch index: delete its envelope and uncount it.
local function drop_envelope(p, tenant, id)
  local env = p .. ':job:' .. id
  uncount_envelope(env, tenant)
  redis.call('DEL', env)
end

-- Wake up to n idle fetchers (one token each; the list stays short), or on a cluster every node's
-- fetcher, by a message that names the shard.
local function wake(p, n)
  if n > 0 then
    if ARGV[1] ~= '' then
      redis.call('PUBLISH', ARGV[1] .. ':wake', p)
      return
    end
    for _ = 1, math.min(n, 8) do redis.call('LPUSH', p .. ':wake', 1) end
    redis.call('LTRIM', p .. ':wake', 0, 63)
  end
end

-- Job events. Each goes to its tenant's feed: the stream that nodes with subscribers of the
-- tenant read live, and the log kept for clients that resume (about feed_max entries, none older
-- than feed_ms, dropped whole after feed_ms without events). Each entry names the event before it
-- (field v), so that a reader can prove it missed none. A script calls emit per event, then
-- close_feeds once: the feed's head, expiry and age trim are written once per tenant per call.
-- Each tenant also keeps an index of its jobs' events, <p>:jev:<tenant>, a hash of job id ->
-- its event ids (space-separated; field '#' counts the events it indexes). Once it holds
-- feed_max events it becomes <p>:jev0:<tenant> (the one before goes) and a new one starts, so
-- the index covers at least what the feed keeps and never much more.
-- The index is a hash table from its first write on, not a listpack: its field '~' holds a value
-- longer than a listpack takes (hash-max-listpack-value, 64 bytes by default). Redis keeps a hash
-- of up to 128 fields as a listpack, searched field by field, and every read and write of a job's
-- ids walked it: with ten tenants, two fifths of Redis's instructions (bench/scripts.py
-- --callgrind). A server configured for longer listpack values just keeps the field.
local feeds = {}
local INDEX_PAD = string.rep('-', 65)

-- maxlen: the feed's length bound as the script's argument text (see text()).
local function emit(p, tenant, job, data, maxlen)
  local f = feeds[tenant]
  if not f then
    f = {prev = redis.call('GET', p .. ':feedhead:' .. tenant) or '0-0', jobs = {}, count = 0}
    feeds[tenant] = f
  end
  local id = redis.call('XADD', p .. ':feed:' .. tenant, 'MAXLEN', '~', maxlen, '*', 'd', data, 'v', f.prev)
  f.prev = id
  local ids = f.jobs[job]  -- the job's event ids in this call, space-separated
  f.jobs[job] = ids and (ids .. ' ' .. id) or id
  f.count = f.count + 1
  return id
end

local function close_feeds(p, feed_max, feed_ms, now)
  if ARGV[1] ~= '' and next(feeds) then
    redis.call('PUBLISH', ARGV[1] .. ':feed', p)  -- a cluster's broadcasters read the feeds again
  end
  for tenant, f in pairs(feeds) do
    local feed = p .. ':feed:' .. tenant
    redis.call('SET', p .. ':feedhead:' .. tenant, f.prev, 'PX', feed_ms)
    redis.call('PEXPIRE', feed, feed_ms)
    redis.call('XTRIM', feed, 'MINID', '~', now - feed_ms)
    local index = p .. ':jev:' .. tenant
    -- read and write the index entries of this call's jobs a slice at a time, not one job at a time
    local jobs = {}
    for job in pairs(f.jobs) do jobs[#jobs + 1] = job end
    for first = 1, #jobs, SLICE do
      local slice = {unpack(jobs, first, math.min(first + SLICE - 1, #jobs))}
      local had = redis.call('HMGET', index, unpack(slice))
      local pairs_ = {'~', INDEX_PAD}
      for j, job in ipairs(slice) do
        local add = f.jobs[job]
        pairs_[#pairs_ + 1] = job
        pairs_[#pairs_ + 1] = had[j] and (had[j] .. ' ' .. add) or add
      end
      redis.call('HSET', index, unpack(pairs_))
    end
    if redis.call('HINCRBY', index, '#', f.count) >= feed_max then
      redis.call('RENAME', index, p .. ':jev0:' .. tenant)
    else
      redis.call('PEXPIRE', index, feed_ms)
    end
  end
end

-- A tenant's history, for the dashboard's charts: per HIST_SLOT_MS slot of each hour, in
-- <p>:hist:<tenant>:<hour> (kept two hours), fields c<slot> and f<slot> count the jobs that
-- completed and failed in it, q<slot> and r<slot> are its unfinished and running jobs when it
-- last changed, Q<slot> and R<slot> the most of each it recorded in the slot. A job's end is
-- counted by the call that drops its envelope: exactly once. A script calls touch_history per
-- job (with 'c' or 'f' for an end), then close_history once per call.
local HIST_SLOT_MS, HIST_HOUR_MS = 5000, 3600000
local hist = {}

local function touch_history(tenant, ended)
  local h = hist[tenant]
  if not h then
    h = {c = 0, f = 0}
    hist[tenant] = h
  end
  if ended then h[ended] = h[ended] + 1 end
end

local function close_history(p, now)
  local hour = math.floor(now / HIST_HOUR_MS)
  local slot = math.floor((now % HIST_HOUR_MS) / HIST_SLOT_MS)
  for tenant, h in pairs(hist) do
    local key = p .. ':hist:' .. tenant .. ':' .. hour
    if h.c > 0 then redis.call('HINCRBY', key, 'c' .. slot, h.c) end
    if h.f > 0 then redis.call('HINCRBY', key, 'f' .. slot, h.f) end
    local q = tonumber(redis.call('HGET', p .. ':queued', tenant)) or 0
    local r = redis.call('SCARD', p .. ':running:' .. tenant)
    local peak = redis.call('HMGET', key, 'Q' .. slot, 'R' .. slot)
    redis.call('HSET', key, 'q' .. slot, q, 'r' .. slot, r, 'Q' .. slot, math.max(q, tonumber(peak[1]) or 0),
               'R' .. slot, math.max(r, tonumber(peak[2]) or 0))
    redis.call('PEXPIRE', key, 2 * HIST_HOUR_MS)
  end
end

-- Claim up to n ready jobs for node, fairly across tenants: the tenants on the ring share what is
-- claimed equally, as taking one job of each in turn would share it (the first tenants in the
-- ring's order get the one more, and the ring turns so that the next claim starts after them),
-- but each tenant's share is taken at once, with one ZPOPMIN and one write of its leases (a
-- tenant's priorities order its own jobs only). A tenant that holds as many leases as its
-- running cap (default_cap, 0: none; <p>:maxrun overrides it) is passed over until one is
-- released; a tenant that could not fill its share leaves the rest to the others, in further
-- turns. Appends each claimed job to out as a group of 9: id, tenant, type, payload, attempt,
-- max_attempts, timeout_ms, ms it waited ready (-1: not known, an envelope from before 'r'),
-- attempt numbers skipped by retries ('k', 0 when none). Each claimed job's RUNNING event goes to
-- its tenant's feed here, stamped now, before any executor has the job: it precedes
-- the attempt's end in the feed, and a watcher hears it without waiting for PostgreSQL (the
-- recorder writes the start and publishes only the end). The caller closes the feeds. Returns
-- how many it claimed.
local function claim_tenant(p, tenant, k, node, now, deadline, at, maxlen, out)
  local q, leases = p .. ':ready:' .. tenant, p .. ':leases'
  local ids = redis.call('ZPOPMIN', q, k)  -- the most urgent, ready first: id, score, ...
  local held, running = {}, {}
  local until_ = text(deadline)
  -- the JOB_UPDATE of wire.job_update, as json.dumps writes it, around each job's own values (a
  -- job id is a UUID's text, made by the node: no character in it needs escaping)
  local head = '{"type": "JOB_UPDATE", "jobId": "'
  local middle = '", "tenantId": ' .. cjson.encode(tenant) .. ', "status": "RUNNING", "error": null, "attempts": '
  local tail = ', "updatedAt": "' .. at .. '"}'
  for j = 1, #ids, 2 do
    local id = ids[j]
    local env = p .. ':job:' .. id
    local h = redis.call('HMGET', env, 't', 'y', 'p', 'm', 'o', 'c', 'r', 'k', 'a', 'n')
    if h[6] then
      -- cancelled while it was running, then put back (a retry, a lease expiry): drop it
      drop_envelope(p, tenant, id)
    -- skip ids whose job finished (no envelope) or that already run (a duplicate dispatch). A
    -- leased envelope has its holder in 'n' (every lease is taken with it, and finish.lua deletes
    -- it where it releases one), so only one with an 'n' needs the lease looked up.
    elseif h[1] and not (h[10] and redis.call('ZSCORE', leases, id)) then
      local attempt = tonumber(h[9]) + 1
      redis.call('HSET', env, 'a', text(attempt), 'n', node)
      held[#held + 1] = until_
      held[#held + 1] = id
      running[#running + 1] = id
      local waited = h[7] and math.max(0, now - tonumber(h[7])) or -1
      local skipped = tonumber(h[8]) or 0
      local o = #out
      out[o + 1], out[o + 2], out[o + 3], out[o + 4], out[o + 5] = id, h[1], h[2], h[3], attempt
      out[o + 6], out[o + 7], out[o + 8], out[o + 9] = h[4], h[5], waited, skipped
      emit(p, tenant, id, head .. id .. middle .. text(attempt - skipped) .. ', "maxAttempts": '
        .. (skipped == 0 and h[4] or text(tonumber(h[4]) - skipped)) .. tail, maxlen)
    end
  end
  if #running > 0 then  -- hold: the leases, and the tenant's running set for its cap
    redis.call('ZADD', leases, unpack(held))
    redis.call('SADD', p .. ':running:' .. tenant, unpack(running))
  end
  return #running, #ids / 2
end

local function claim_ready(p, n, node, lease_ms, default_cap, maxlen, now, out)
  local at = iso_ms(now)
  local ring, ringset = p .. ':ring', p .. ':ringset'
  local claimed, passed = 0, 0  -- passed: tenants in a row that had nothing to pop (capped, dry)
  local left, share, extra, index, ahead = 0, 0, 0, 0, 0
  while claimed < n do
    local len = redis.call('LLEN', ring)
    if len == 0 or passed >= len then break end
    if left == 0 then
      -- a turn: the next min(len, wanted) tenants share what is still wanted
      local wanted = n - claimed
      left = math.min(len, wanted)
      share, extra, index, ahead = math.floor(wanted / left), wanted % left, 0, 0
    end
    index, left = index + 1, left - 1
    local tenant = redis.call('LPOP', ring)
    -- at most SLICE at once (its leases go in one variadic ZADD); the rest in the next turns
    local k = math.min(share + (index <= extra and 1 or 0), SLICE)
    local cap = tonumber(redis.call('HGET', p .. ':maxrun', tenant)) or default_cap
    if cap > 0 then k = math.min(k, cap - redis.call('SCARD', p .. ':running:' .. tenant)) end
    local took, popped = 0, 0
    if k > 0 then took, popped = claim_tenant(p, tenant, k, node, now, now + lease_ms, at, maxlen, out) end
    if k <= 0 or redis.call('ZCARD', p .. ':ready:' .. tenant) > 0 then
      redis.call('RPUSH', ring, tenant)  -- capped, or work left: its turn comes again
      if index <= extra then ahead = ahead + 1 end
    else
      redis.call('SREM', ringset, tenant)
    end
    claimed = claimed + took
    -- ids popped but skipped (finished, running) are progress too: the queue is shorter by them
    passed = popped > 0 and 0 or passed + 1
    if left == 0 and ahead > 0 and ahead < redis.call('LLEN', ring) then
      -- the tenants that got one more go behind the others, as taking one job at a time would
      for _ = 1, ahead do redis.call('LMOVE', ring, ring, 'LEFT', 'RIGHT') end
    end
  end
  return claimed
end
