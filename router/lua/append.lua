-- Append an envelope to the inbox unless this platform message was appended before.
-- ARGV[3] = dedup key suffix (channel:account:platform id), ARGV[4] = dedup TTL s,
-- ARGV[5] = the inbox's cap (entries), ARGV[6] = envelope JSON, ARGV[7] = channel,
-- ARGV[8] = consumer group of the router workers.
-- Returns {1, entry id} for a new entry, {0, entry id of the first append} for a duplicate,
-- {-1, reason} when the inbox is full of entries not yet routed (nothing written but the count).
local inbox, stats = P .. 'inbox', P .. 'stats'
local dk = P .. 'dedup:' .. ARGV[3]
local existing = redis.call('GET', dk)
if existing then
  -- A write even here: WAIT / WAITAOF after a duplicate then also cover the first append, which
  -- an earlier attempt wrote but may not have seen made durable.
  redis.call('HINCRBY', stats, 'dup:' .. ARGV[7], 1)
  return {0, existing}
end

local cap = tonumber(ARGV[5])
local len = redis.call('XLEN', inbox)
if len >= cap then
  -- Only entries the group has acknowledged (routed or dead-lettered) may go: those below its
  -- floor, the oldest pending entry or, with none pending, up to the last one delivered. Routed
  -- entries are kept up to the cap (the console replays recent traffic from them), so a chunk
  -- of the oldest is dropped once the cap is reached rather than each below the floor at once.
  local last, pending = nil, 0
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', inbox)) do
    local f = {}
    for i = 1, #g, 2 do f[g[i]] = g[i + 1] end
    if f['name'] == ARGV[8] then last, pending = f['last-delivered-id'], f['pending'] end
  end
  local removable = {}
  if last then
    local upto = last
    if pending > 0 then upto = '(' .. redis.call('XPENDING', inbox, ARGV[8])[2] end
    local want = math.min(len - cap + 100, 1000)
    removable = redis.call('XRANGE', inbox, '-', upto, 'COUNT', want)
  end
  if #removable == 0 then
    redis.call('HINCRBY', stats, 'refused:' .. ARGV[7], 1)
    return {-1, 'inbox full: ' .. len .. ' entries (inbox.maxlen ' .. cap .. ') and the oldest ' ..
      'is not routed yet; are the router workers running?'}
  end
  local ids = {}
  for i, e in ipairs(removable) do ids[i] = e[1] end
  -- One chunk a call: a cap lowered far below the inbox's length is reached over a few appends.
  redis.call('XDEL', inbox, unpack(ids))
end
local id = redis.call('XADD', inbox, '*', 'env', ARGV[6])
redis.call('SET', dk, id, 'EX', ARGV[4])
redis.call('HINCRBY', stats, 'in:' .. ARGV[7], 1)
return {1, id}
