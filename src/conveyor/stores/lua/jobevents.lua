-- A job's events still in its tenant's feed, found through the tenant's event index (no scan).
-- KEYS[1]: shard prefix. ARGV: channel, tenant, job id, most. Returns groups of 2, oldest first: event id, event json
-- (the newest `most` of them).
local p, tenant, job, most = KEYS[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local ids = {}
for _, index in ipairs({p .. ':jev0:' .. tenant, p .. ':jev:' .. tenant}) do
  local found = redis.call('HGET', index, job)
  if found then
    for id in string.gmatch(found, '%S+') do ids[#ids + 1] = id end
  end
end
local feed = p .. ':feed:' .. tenant
local out = {}
for i = math.max(1, #ids - most + 1), #ids do
  local entry = redis.call('XRANGE', feed, ids[i], ids[i])[1]
  if entry then
    local fields = entry[2]
    for j = 1, #fields, 2 do
      if fields[j] == 'd' then
        out[#out + 1] = entry[1]
        out[#out + 1] = fields[j + 1]
      end
    end
  end
end
return out
