-- Shared prelude of every Switchboard script (prepended by router/scripts.py, after the
-- consumer-group names ROUTER_GROUP and SENDER_GROUP of router/keys.py).
-- ARGV[1] = key prefix, ARGV[2] = now in ms. Keys are derived from the prefix as laid out in
-- router/keys.py. Every call also sends the prefix as KEYS[1] (router/scripts.py Script): on a Redis
-- Cluster the prefix holds a hash tag and every derived key is in its slot (docs/architecture.md).
local P = ARGV[1]
local NOW = tonumber(ARGV[2])
local NOWS = ARGV[2]  -- whole milliseconds, as router/scripts.py sends them

-- A shard worker's lease fence (router/shardlease.py): a script it runs writes only while the
-- lease lease:{name} under P is held under that fence, judged by NOW; a worker paused past its
-- lease's expiry must not route what the shard's next holder routes. 0 or nil: leases are off.
-- Returns nil when the script may go on, else the error (starting FENCED, which the worker reads
-- as LeaseLost) that the script returns before any write.
local function fence_refused(name, fence)
  fence = tonumber(fence)
  if not fence or fence == 0 then return nil end
  local cur = redis.call('HMGET', P .. 'lease:' .. name, 'fence', 'until')
  if tonumber(cur[1]) == fence and tonumber(cur[2] or '0') > NOW then return nil end
  return redis.error_reply('FENCED lease ' .. name .. ' is not held under fence ' .. string.format('%d', fence))
end

-- An integral number (ms, queue scores < 2^53) as its digits: '%d' is a plain integer conversion,
-- where '%.0f' (or tostring's '%.14g') goes through libc's floating-point printing, ~4x the cost.
local function num(x) return string.format('%d', x) end

-- A conversation's history keeps its newest ~HIST_MAXLEN entries (the head is trimmed): a bound
-- for a runaway conversation (a bot answering a bot), far above any human one.
local HIST_MAXLEN = '10000'

local function hist(cid, typ, data)
  redis.call('XADD', P .. 'hist:' .. cid, 'MAXLEN', '~', HIST_MAXLEN, '*', 'type', typ, 'at', NOWS, 'data', data)
end

local function event(group, typ, cid, data)
  redis.call('XADD', P .. 'events:' .. group, 'MAXLEN', '~', '10000', '*',
    'type', typ, 'conv', cid, 'at', NOWS, 'data', data or '{}')
end

-- Queue order: priority first, then SLA due time (ms); both fit a double exactly.
local function enqueue(cid, group, prio, due, since)
  redis.call('ZADD', P .. 'queue:' .. group, num(prio * 1e13 + due), cid)
  redis.call('ZADD', P .. 'waiting:' .. group, num(since), cid)
end

local function dequeue(cid, group)
  redis.call('ZREM', P .. 'queue:' .. group, cid)
  redis.call('ZREM', P .. 'waiting:' .. group, cid)
end

-- Wait estimates (docs/waits.md). A conversation taken out of group's queue by a claim, an
-- assignment, or an agent's reply or close (``taken`` false for a close: nobody served it) is
-- counted in served:{group}:{minute}, the group's service rate the route script reads, kept
-- SERVED_TTL_MS (the longest window, 120 min, plus one minute). A conversation whose auto-reply
-- said a wait (its field wait_est = "at est_ms min max group", wait_said below) leaves its real
-- wait beside that estimate on the waits stream when first taken from that group (also from an
-- incident it was collapsed under, lua/incident.lua); any departure counted here ends the
-- estimate, and so do a hold, a knowledge-base answer and a close (nobody took it: nothing to
-- compare). One moved to another group is compared in none (the group recorded is checked).
local SERVED_TTL_MS = '7260000'
local WAITS_MAXLEN = '10000'

local function served(cid, group, taken)
  local k = P .. 'served:' .. group .. ':' .. num(math.floor(NOW / 60000))
  redis.call('INCR', k)
  redis.call('PEXPIRE', k, SERVED_TTL_MS)
  local c = P .. 'conv:' .. cid
  local est = redis.call('HGET', c, 'wait_est')
  if not est then return end
  redis.call('HDEL', c, 'wait_est')
  local at, ms, lo, hi, g = string.match(est, '^(%d+) (%d+) (%d+) (%d+) (.*)$')
  if taken and g == group then
    redis.call('XADD', P .. 'waits', 'MAXLEN', '~', WAITS_MAXLEN, '*', 'group', group, 'conv', cid,
      'est_ms', ms, 'min', lo, 'max', hi, 'real_ms', num(NOW - tonumber(at)), 'at', NOWS)
  end
end

local function fill(text, name, value)
  return (string.gsub(text, '{' .. name .. '}', value))
end

-- text (an auto-reply's, an incident's status text) for conversation cid (hash c) waiting in
-- group's queue, its placeholders (rules/placeholders.py) filled: {queue_position}, the place in
-- this shard's partition of the queue (ZRANK: priority, then due time, as claims take them)
-- scaled by the shard count; {wait_min}-{wait_max}, the estimate e = place / rate (rate: the
-- group's departures from this shard over the last w whole minutes, per minute) as
-- floor(e * (1 - b)) to ceil(e * (1 + b)) minutes, recorded in wait_est. Where agents' presence
-- is known (router/online.py: online:{group} now, online:{group}:{minute} in the window), the rate
-- is scaled by the agents online now over their mean in the window's minutes that have a count.
-- With no departure in the window, or nobody online now, fallback (the text without an estimate,
-- made by the router) instead; nil when cid is not in the queue (an agent has it).
local function wait_said(cid, c, group, text, fallback, w, b, shards)
  local ahead = redis.call('ZRANK', P .. 'queue:' .. group, cid)
  if not ahead then return nil end
  local minute = math.floor(NOW / 60000)
  local served, staffed = {}, {}
  for m = minute - w, minute - 1 do
    served[#served + 1] = P .. 'served:' .. group .. ':' .. num(m)
    staffed[#staffed + 1] = P .. 'online:' .. group .. ':' .. num(m)
  end
  local n = 0
  for _, v in ipairs(redis.call('MGET', unpack(served))) do n = n + (tonumber(v) or 0) end
  local now_on = tonumber(redis.call('GET', P .. 'online:' .. group))
  if n == 0 or now_on == 0 then
    text = fallback
  else
    local est = (ahead + 1) * w / n
    if now_on then
      local sum, minutes = 0, 0
      for _, v in ipairs(redis.call('MGET', unpack(staffed))) do
        if v then sum, minutes = sum + tonumber(v), minutes + 1 end
      end
      if sum > 0 then est = est * sum / (minutes * now_on) end
    end
    local lo, hi = num(math.floor(est * (1 - b))), num(math.ceil(est * (1 + b)))
    text = fill(fill(text, 'wait_min', lo), 'wait_max', hi)
    redis.call('HSET', c, 'wait_est', NOWS .. ' ' .. num(math.floor(est * 60000 + 0.5)) .. ' ' .. lo .. ' ' .. hi .. ' '
      .. group)
  end
  return fill(text, 'queue_position', num(ahead * shards + 1))
end

local function conv_fields(c, ...)
  local names = {...}
  local vals = redis.call('HMGET', c, unpack(names))
  local out = {}
  for i, n in ipairs(names) do out[n] = vals[i] end
  return out
end

-- An outbox item (JSON, its conversation id included) on its channel's outbox with its delivery
-- record 'queued' (outbox_add: also a failed reply sent again, lua/requeue.lua); send() adds the
-- outbound history entry; the caller counts it in the stats.
local function outbox_add(cid, channel, id, raw)
  local box = P .. 'outbox:' .. channel
  -- The senders' group from the first reply on, so that depth and lag show before an adapter
  -- starts (the outbox stream is never removed: delivered entries are deleted, not the stream).
  if redis.call('EXISTS', box) == 0 then redis.call('XGROUP', 'CREATE', box, SENDER_GROUP, '0', 'MKSTREAM') end
  redis.call('XADD', box, '*', 'item', raw)
  redis.call('HSET', P .. 'delivery:' .. cid, id, 'queued')
end

local function send(cid, channel, id, raw)
  outbox_add(cid, channel, id, raw)
  hist(cid, 'outbound', raw)
end

-- A reply written for conversation cid (an agent's, the knowledge base's answer), addressed where
-- the conversation's last message came from (its fields in cur), queued and counted.
local function send_reply(cid, cur, item)
  item.channel = cur.channel
  item.account = cur.account
  item.conversation_key = cur.ckey
  item.reply_to = cur.last_platform_id
  item.meta = cjson.decode(cur.meta or '{}')
  item.conversation = cid
  send(cid, cur.channel, item.id, cjson.encode(item))
  redis.call('HINCRBY', P .. 'stats', 'out:' .. cur.channel, 1)
end

-- A stream the router workers read (router/keys.py STREAMS) by its name: its key, the hash of
-- its entries' failures (entry ids are unique per stream only), and the key of its count of
-- entries waiting (unacknowledged), kept for the P1 lane only (lua/append.lua reads it).
local function worker_stream(name)
  if name == 'lane' then return P .. 'lane', P .. 'lane:failures', P .. 'lane:waiting' end
  return P .. 'inbox', P .. 'failures', nil
end

-- Copy an entry of ``stream`` (an inbox or lane key) to the dead-letter stream with its reason; the caller has acknowledged it.
-- Every field of the entry is kept, byte for byte: 'env' as 'payload', any other (a foreign
-- writer's entry) as 'field:<name>'. 'dead' counts messages: one that `dead retry` sent back
-- ('retry_of') and that fails again was counted the first time.
local function dead_letter(entry, reason, attempts, stream, failures)
  local found = redis.call('XRANGE', stream, entry, entry)
  local out = {'entry', entry, 'reason', reason, 'payload', '', 'attempts', attempts, 'at', NOWS}
  local again = false
  if #found > 0 then
    local f = found[1][2]
    for i = 1, #f, 2 do
      local name = f[i]
      if name == 'env' and out[6] == '' then
        out[6] = f[i + 1]
      else
        if name == 'retry_of' then again = true else name = 'field:' .. name end
        out[#out + 1] = name
        out[#out + 1] = f[i + 1]
      end
    end
  end
  redis.call('XADD', P .. 'dead', '*', unpack(out))
  redis.call('HDEL', failures, entry)
  if not again then redis.call('HINCRBY', P .. 'stats', 'dead', 1) end
end

-- Request ids (router/requests.py): the result a write recorded under its id, or nil; and
-- recording it, with the effect, so a repeat of the same request returns it without a second one.
local function request_done(rid)
  if rid == nil or rid == '' then return nil end
  local done = redis.call('GET', P .. 'req:' .. rid)
  if done then return done end
  return nil
end

local function request_record(rid, ttl_ms, result)
  if rid ~= nil and rid ~= '' then redis.call('SET', P .. 'req:' .. rid, result, 'PX', ttl_ms) end
  return result
end

-- Knowledge-base answers (router/answerer.py, lua/answer.lua). The counters of an answer's
-- outcome, by language and by article, in the shard's stats hash.
local function kb_count(what, lang, article, by)
  local s = P .. 'stats'
  redis.call('HINCRBY', s, 'kb:' .. what, by)
  redis.call('HINCRBY', s, 'kb:' .. what .. ':lang:' .. lang, by)
  redis.call('HINCRBY', s, 'kb:' .. what .. ':article:' .. article, by)
end

-- Record ``outcome`` (confirmed, assumed, reopened, human) of the answer sent on conversation
-- cid, if any. The first outcome stands, except 'assumed': a guess made from silence, which a
-- later message or press replaces (and is then no longer counted). Returns true when recorded.
local function answer_outcome(cid, outcome)
  local a = P .. 'answer:' .. cid
  local cur = redis.call('HMGET', a, 'outcome', 'lang', 'article')
  if not cur[2] then return false end
  local was = cur[1] or ''
  if was ~= '' and not (was == 'assumed' and outcome ~= 'assumed') then return false end
  redis.call('HSET', a, 'outcome', outcome, 'outcome_ms', NOWS)
  redis.call('ZREM', P .. 'answered', cid)
  if was == 'assumed' then kb_count('assumed', cur[2], cur[3], -1) end
  kb_count(outcome, cur[2], cur[3], 1)
  return true
end

-- Admission control (docs/admission.md): conversation cid (hash c; cur: its status, group and
-- agent) held out of the queues and off its agent for ``reason`` (banned, muted, spam), and off
-- the SLA timer (an escalation step would move it back into a queue), until restored (conv.lua
-- restore) or a message that is not held comes (route.lua).
local function hold_conversation(cid, c, cur, reason, by)
  if cur.status == 'new' then dequeue(cid, cur.group) end
  if (cur.agent or '') ~= '' then redis.call('SREM', P .. 'agent:' .. cur.agent, cid) end
  redis.call('ZREM', P .. 'sla:due', cid)
  redis.call('HSET', c, 'status', 'held', 'agent', '', 'held', reason, 'updated_ms', NOWS)
  redis.call('HDEL', c, 'wait_est')  -- a wait said is not compared once held (docs/waits.md)
  hist(cid, 'status', cjson.encode({status = 'held', from = cur.status, by = by, reason = reason}))
  event(cur.group, 'held', cid, cjson.encode({reason = reason, by = by}))
end

-- What the archive holds of a closed conversation (router/archive.py), as one digest: its state
-- and delivery records (fields sorted, each length-prefixed) and its history's last entry id (a
-- history only grows at its tail). Retention deletes an archived conversation only while its
-- archive mark is this digest: a rating or a delivery record written since archiving keeps it.
local function hash_text(key)
  local flat = redis.call('HGETALL', key)
  local items = {}
  for i = 1, #flat, 2 do
    items[#items + 1] = #flat[i] .. ':' .. flat[i] .. #flat[i + 1] .. ':' .. flat[i + 1]
  end
  table.sort(items)
  return table.concat(items)
end

local function conv_digest(cid)
  local last = redis.call('XREVRANGE', P .. 'hist:' .. cid, '+', '-', 'COUNT', 1)
  local text = hash_text(P .. 'conv:' .. cid) .. '|' .. hash_text(P .. 'delivery:' .. cid) .. '|'
  return redis.sha1hex(text .. (last[1] and last[1][1] or ''))
end
