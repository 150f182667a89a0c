-- Append an envelope to the inbox, or to the P1 lane, unless this platform message was appended
-- before.
-- ARGV[3] = dedup key suffix (channel:account:platform id), ARGV[4] = dedup TTL s,
-- ARGV[5] = the inbox's cap (entries), ARGV[6] = envelope JSON, ARGV[7] = channel,
-- ARGV[8] = consumer group of the router workers (on the inbox and on the lane).
-- With the P1 lane on (docs/surge.md; absent when off): ARGV[9] = conversation ref
-- (channel:account:key), ARGV[10] = '1' when the ingest precheck suspects a P1 situation,
-- ARGV[11] = the lane's cap: at this many entries waiting no new conversation enters it, and
-- routed entries beyond it are trimmed; ARGV[12] = TTL s of the conversation's tail marker.
-- Returns {1, entry id} for a new entry, {0, entry id of the first append} for a duplicate,
-- {-1, reason} when the inbox is full of entries not yet routed (nothing written but the count).
local inbox, lane, stats = P .. 'inbox', P .. 'lane', P .. 'stats'
local dk = P .. 'dedup:' .. ARGV[3]
local existing = redis.call('GET', dk)
if existing then
  -- A write even here: WAIT / WAITAOF after a duplicate then also cover the first append, which
  -- an earlier attempt wrote but may not have seen made durable.
  redis.call('HINCRBY', stats, 'dup:' .. ARGV[7], 1)
  return {0, existing}
end

-- The group's last-delivered id (nil: no group) and its count of pending entries on a stream.
local function group_state(stream)
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
    local f = {}
    for i = 1, #g, 2 do f[g[i]] = g[i + 1] end
    if f['name'] == ARGV[8] then return f['last-delivered-id'], f['pending'] end
  end
  return nil, 0
end

-- A stream id's parts as numbers (milliseconds, sequence).
local function parts(id)
  local m, s = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(m), tonumber(s)
end

-- Whether the group acknowledged entry ``id`` (routed or dead-lettered): delivered, not pending.
local function acked(stream, id)
  local last, pending = group_state(stream)
  if not last then return false end
  local lm, ls = parts(last)
  local im, is = parts(id)
  if im > lm or (im == lm and is > ls) then return false end
  return pending == 0 or #redis.call('XPENDING', stream, ARGV[8], id, id, 1) == 0
end

-- The milliseconds of the oldest entry the group has not acknowledged; nil when there is none.
local function oldest_unrouted(stream)
  local last, pending = group_state(stream)
  if pending > 0 then return (parts(redis.call('XPENDING', stream, ARGV[8])[2])) end
  local first = redis.call('XRANGE', stream, last and ('(' .. last) or '-', '+', 'COUNT', 1)[1]
  return first and (parts(first[1]))
end

-- At ``cap`` entries, delete a chunk of the oldest the group has acknowledged (routed or
-- dead-lettered): those below its floor, the oldest pending entry or, with none pending, up to
-- the last one delivered. Routed entries are kept up to the cap (the console replays recent
-- traffic from them), so a chunk is dropped once the cap is reached rather than each at once.
-- Returns the stream's length when it is at the cap and nothing could go, else nil.
local function make_room(stream, cap)
  local len = redis.call('XLEN', stream)
  if len < cap then return nil end
  local last, pending = group_state(stream)
  local removable = {}
  if last then
    local upto = last
    if pending > 0 then upto = '(' .. redis.call('XPENDING', stream, ARGV[8])[2] end
    local want = math.min(len - cap + 100, 1000)
    removable = redis.call('XRANGE', stream, '-', upto, 'COUNT', want)
  end
  if #removable == 0 then return len end
  local ids = {}
  for i, e in ipairs(removable) do ids[i] = e[1] end
  -- One chunk a call: a cap lowered far below the stream's length is reached over a few appends.
  redis.call('XDEL', stream, unpack(ids))
  return nil
end

-- The P1 lane. Order: a conversation's unrouted messages are all in one stream, so no worker
-- routes a later message before an earlier one (no more than within one stream). The tail marker
-- names where the conversation's last message went: a suspect enters the lane only once that
-- message is routed (or when it is in the lane itself), and any message follows one of its
-- conversation still waiting in the lane. ``lane:waiting`` counts the lane's unacknowledged
-- entries (route.lua and dead.lua count them down), so the usual append asks nothing more.
-- ``lane:since`` holds when appends began writing markers (the lane turned on; an append with the
-- lane off deletes it): an entry appended before that has none.
local to_lane = false
local tk, waiting_key
local since_key = P .. 'lane:since'
if ARGV[9] then
  tk, waiting_key = P .. 'tail:' .. ARGV[9], P .. 'lane:waiting'
  local suspect = ARGV[10] == '1'
  local waiting = tonumber(redis.call('GET', waiting_key) or '0')
  local tail
  if suspect or waiting > 0 then tail = redis.call('GET', tk) end
  local since = redis.call('GET', since_key)
  local now_ms
  if tail == false or not since then
    local t = redis.call('TIME')
    now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  if not since then
    since = now_ms
    redis.call('SET', since_key, string.format('%d', now_ms))
  else
    since = tonumber(since)
  end
  local horizon = (now_ms or 0) - tonumber(ARGV[12]) * 1000
  if tail and string.sub(tail, 1, 1) == 'l' then
    to_lane = suspect or not acked(lane, string.sub(tail, 2))
  elseif suspect and waiting < tonumber(ARGV[11]) then
    if tail then
      to_lane = acked(inbox, string.sub(tail, 2))
    else
      -- No marker: the conversation's messages, if any, are older than its TTL or were appended
      -- before markers were written; none is unrouted when the inbox's oldest unrouted entry is
      -- younger than both.
      local oldest = oldest_unrouted(inbox)
      to_lane = oldest == nil or (oldest > horizon and oldest >= since)
    end
  end
  if not to_lane and tail == false and waiting > 0 then
    -- Likewise a lane entry waiting since before the TTL (a stalled lane) may be this
    -- conversation's: the message then follows into the lane rather than risk passing it.
    local oldest = oldest_unrouted(lane)
    to_lane = oldest ~= nil and oldest <= horizon
  end
end

if not ARGV[9] and redis.call('EXISTS', since_key) == 1 then redis.call('DEL', since_key) end

if to_lane then
  -- Beyond the cap when all of it waits: a message that must follow its conversation there.
  make_room(lane, tonumber(ARGV[11]))
else
  local full = make_room(inbox, tonumber(ARGV[5]))
  if full then
    redis.call('HINCRBY', stats, 'refused:' .. ARGV[7], 1)
    return {-1, 'inbox full: ' .. full .. ' entries (inbox.maxlen ' .. ARGV[5] .. ') and the oldest ' ..
      'is not routed yet; are the router workers running?'}
  end
end
local id = redis.call('XADD', to_lane and lane or inbox, '*', 'env', ARGV[6])
redis.call('SET', dk, id, 'EX', ARGV[4])
redis.call('HINCRBY', stats, 'in:' .. ARGV[7], 1)
if tk then
  redis.call('SET', tk, (to_lane and 'l' or 'i') .. id, 'EX', ARGV[12])
  if to_lane then
    redis.call('INCR', waiting_key)
    redis.call('HINCRBY', stats, 'lane:' .. ARGV[7], 1)
  end
end
return {1, id}
