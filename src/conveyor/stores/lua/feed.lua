-- Read a tenant's feed after an event id: up to count entries (id, data, previous id), and the
-- feed's newest id ('0-0' when it has none), read together so that they agree.
-- KEYS[1]: shard prefix. ARGV: channel, tenant, after, count (at least 1: COUNT 0 answers nil).
local p, tenant, after, count = KEYS[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local head = redis.call('GET', p .. ':feedhead:' .. tenant) or '0-0'
local out = {head}
for _, entry in ipairs(redis.call('XRANGE', p .. ':feed:' .. tenant, '(' .. after, '+', 'COUNT', count)) do
  local fields = entry[2]
  local d, v = '', '0-0'
  for j = 1, #fields, 2 do
    if fields[j] == 'd' then d = fields[j + 1] elseif fields[j] == 'v' then v = fields[j + 1] end
  end
  table.insert(out, entry[1])
  table.insert(out, d)
  table.insert(out, v)
end
return out
