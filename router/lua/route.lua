-- Apply a batch of routing decisions; each message's writes and the XACK of its inbox entry
-- happen together (the whole script is atomic, and a message that fails leaves the others be).
-- The entries are of the stream named by the shared argument's ``stream`` (router/keys.py
-- STREAMS; absent: inbox); the P1 lane's count of entries waiting goes down by those acknowledged.
-- ARGV[3] = JSON of what every message of the call shares: sla {"1".."4": ms}, reopen_ms, and
-- shards and shard: the deployment's shard count and the shard of the prefix (router/keys.py);
-- fence: the worker's lease fence on the shard (0 or absent: leases off). A call whose fence is
-- not the lease's current one is refused whole (FENCED error, nothing written). slav: the number
-- of the SLA policy in force (0: none published, router/slastore.py): a new conversation keeps it
-- (field sla_v) and is put on sla:due for the SLA timer, as is one whose clock a message may move.
-- ARGV[4..] = quads (inbox entry id, payload, history entry, outbox item or '') encoded by
-- router/routing.py. The payload is a JSON array, positional because a
-- message's routing decodes nothing else (keys would double the tokens to parse):
--   [ck, channel, kind, group, prio, routed_by, escalate, retry, reply_id or '', tags[],
--    values[] (of FIELDS, in order: the conversation fields every message sets), account, ckey,
--    hold ('' or why the message is kept out of the queues: banned, muted, spam),
--    and, only when the auto-reply's text has placeholders, [that text, the text without an
--    estimate]: the outbox item then comes without its text, which is appended here]
-- shared.wt: wait estimates (the Wait estimates section below).
-- shared.adm: admission control (the Admission section below; absent: off).
-- The history entry and the outbox item are stored without decoding them; the item's
-- conversation id is prepended here.
-- A message whose entry was acknowledged already (a reclaimed entry that its first worker did
-- finish) has no effect: that makes the effect exactly-once. Returns {n, entry, reason, ...}: n
-- messages done, then each message whose routing raised (it is dead-lettered) with the reason.
local shared = cjson.decode(ARGV[3])
local REOPEN_MS = shared.reopen_ms
local SHARDS, SHARD = shared.shards, shared.shard
local SLAV = shared.slav or 0
local STREAM, FAILURES, WAITING = worker_stream(shared.stream or 'inbox')
local acked = 0
local refused = fence_refused('shard:' .. SHARD, shared.fence)
if refused then return refused end
local SLA = {}
for p, ms in pairs(shared.sla) do SLA[tonumber(p)] = ms end
local FIELDS = {'sender_id', 'sender_name', 'language', 'last_msg_id', 'last_platform_id', 'last_text', 'meta',
  'rules_version', 'subject'}

-- Priorities as strings, each made once per call: a number given to redis.call or to '..' goes
-- through libc's floating-point printing.
local PRIO = setmetatable({}, {__index = function(t, p)
  local s = num(p)
  t[p] = s
  return s
end})

-- The SLA timer evaluates the conversation's clock at its next tick (router/slatimer.py); LT:
-- never later than a wake-up already set.
local function wake(cid)
  redis.call('ZADD', P .. 'sla:due', 'LT', NOWS, cid)
end

-- Per channel, messages routed and auto-replies sent in this call: one HINCRBY each at the end.
local routed, sent = {}, {}

-- A field and its value appended to HSET arguments.
local function put(t, name, value)
  t[#t + 1] = name
  t[#t + 1] = value
end

-- t with the FIELDS and their values appended, as HSET takes them.
local function fields(t, values)
  local n = #t
  for i = 1, #values do
    t[n + 2 * i - 1] = FIELDS[i]
    t[n + 2 * i] = values[i]
  end
  return t
end

local function count(t, key)
  t[key] = (t[key] or 0) + 1
end

-- The answer to a satisfaction survey's follow-up question (router/csat.py, lua/csat.lua): the
-- user's next message with text, within the window, is the survey's comment, recorded as a 'csat'
-- history entry (its redacted text, as any message's) instead of reopening the conversation.
-- Another member of a group chat writing meanwhile is an ordinary message. True when taken.
local function csat_comment(cid, c, hist_raw, until_ms)
  local f = conv_fields(c, 'csat_state', 'csat_id', 'csat_rating', 'csat_agent', 'sender_id', 'group', 'channel',
    'language')
  if NOW > until_ms or f.csat_state ~= 'commenting' then
    redis.call('HDEL', c, 'csat_until')
    return false
  end
  local h = cjson.decode(hist_raw)
  local sender = type(h.sender) == 'table' and h.sender.id or nil
  if type(h.text) ~= 'string' or h.text == '' or ((f.sender_id or '') ~= '' and sender ~= f.sender_id) then return false end
  hist(cid, 'csat', cjson.encode({survey = f.csat_id, rating = tonumber(f.csat_rating), comment = h.text, at = NOW,
    agent = f.csat_agent or '', group = f.group, channel = f.channel, language = f.language or '',
    msg = h.msg}))
  redis.call('HSET', c, 'csat_state', 'done', 'updated_ms', NOWS)
  redis.call('HDEL', c, 'csat_until')
  redis.call('HINCRBY', P .. 'stats', 'csat:comments', 1)
  event(f.group, 'csat', cid, cjson.encode({rating = tonumber(f.csat_rating), comment = true}))
  return true
end

-- Admission (docs/admission.md, router/admission.py) ----------------------------------------
-- Token buckets per sender and channel, checked and taken here so that they hold across workers.
-- shared.adm = {def = {rate/s, burst}, ch = {channel = {rate/s, burst}}, window_ms, notice =
-- {lang = text}}. Each bucket is kept as one number, its theoretical arrival time in ms (GCRA: a
-- message at NOW passes while tat - NOW <= (burst - 1) * interval, and moves tat one interval on;
-- the same decisions as a bucket of burst tokens refilled at rate, without a refill to compute).
-- Two buckets, both of the channel's limit:
-- * the sender's messages in a conversation: field adm:{sender} of its hash, read with the
--   conversation's other fields and written with them (no command of its own: a follow-up is most
--   of the traffic); admn:{sender}, the last notice (ms), read only when a message is throttled;
-- * the conversations a sender starts: the string adm:{channel}:{sender} = "tat latest-conversation"
--   (PX TTL), read and written only when a message would start a conversation.
-- A message over its bucket is never dropped: it goes into its conversation's history (one over the
-- second bucket: into the sender's latest open conversation, "folded") marked throttled, with no
-- queue move, auto-reply or event of its own; the sender gets one notice per window there.
local ADM = shared.adm
local throttled_n = {}

-- Whether a message at NOW passes the bucket stored as tat (nil: a fresh one), and the bucket's
-- new value (unchanged when it does not pass).
local function adm_take(channel, tat)
  local lim = ADM.ch[channel] or ADM.def
  local interval = 1000 / lim[1]
  tat = math.max(tonumber(tat) or NOW, NOW)
  if tat - NOW > (lim[2] - 1) * interval then return false, tat end
  return true, math.ceil(tat + interval)
end

-- A throttled message into conversation cid (hash c): the history (marked, and where it came from
-- when folded), the counters, and the notice once per window, in the message's language.
local function adm_throttled(cid, c, ck, channel, account, ckey, values, entry, hist_raw, folded)
  local mark = '{"admission":"throttled",'
  if folded then mark = mark .. '"folded_from":' .. cjson.encode(ck) .. ',' end
  hist(cid, 'inbound', mark .. string.sub(hist_raw, 2))
  redis.call('HINCRBY', c, 'messages', 1)
  redis.call('HINCRBY', c, 'throttled', 1)
  count(throttled_n, channel)
  local nfield = 'admn:' .. values[1]
  if NOW - (tonumber(redis.call('HGET', c, nfield)) or 0) >= ADM.window_ms then
    redis.call('HSET', c, nfield, NOWS)
    local id = 'notice-' .. entry
    send(cid, channel, id, cjson.encode({id = id, conversation = cid, channel = channel, account = account,
      conversation_key = ckey, text = ADM.notice[values[3]] or ADM.notice.en, author = 'auto',
      reply_to = values[5], meta = cjson.decode(values[7]), auto = true, created_at = NOW / 1000}))
    count(sent, channel)
    event(redis.call('HGET', c, 'group'), 'throttled', cid)
  end
end

-- The sender's bucket of conversations started, pointing at cid (their latest conversation), kept
-- until it is fresh again.
local function adm_started(key, tat, cid)
  redis.call('SET', key, num(tat) .. ' ' .. cid, 'PX', num(math.max(1, tat - NOW)))
end

-- A message of a banned or muted sender, or tagged spam, into its open conversation: recorded,
-- and the conversation held (common.lua hold_conversation).
local function adm_hold(cid, c, cur, hold, to_tags, hist_raw)
  hist(cid, 'inbound', hist_raw)
  local tags = cjson.decode(cur.tags or '[]')
  local seen = {}
  for _, t in ipairs(tags) do seen[t] = true end
  for _, t in ipairs(to_tags) do
    if not seen[t] then tags[#tags + 1] = t end
  end
  redis.call('HSET', c, 'updated_ms', NOWS, 'messages', num((tonumber(cur.messages) or 0) + 1), 'tags', cjson.encode(tags))
  if cur.status ~= 'held' then hold_conversation(cid, c, cur, hold, 'admission') end
end
-- --------------------------------------------------------------------------------------------

-- Wait estimates (docs/waits.md): shared.wt = {w = window (whole minutes), b = band}; the
-- auto-reply of a conversation just queued, its placeholders filled (common.lua wait_said).
local WT = shared.wt

local function estimated(cid, c, group, reply, texts)
  local text = wait_said(cid, c, group, texts[1], texts[2], WT.w, WT.b, SHARDS)
  return string.sub(reply, 1, -2) .. ',"text":' .. cjson.encode(text) .. '}'
end
-- --------------------------------------------------------------------------------------------

local function route(entry, payload, hist_raw, reply)
  local ck, channel, kind, to_group, to_prio, routed_by, escalate, retry, reply_id, to_tags, values,
    account, ckey, hold, wait_texts = unpack(payload)
  hold = hold or ''
  if redis.call('XACK', STREAM, ROUTER_GROUP, entry) == 0 then
    return
  end
  acked = acked + 1
  count(routed, channel)
  if retry then redis.call('HDEL', FAILURES, entry) end
  -- The sender's buckets count messages, not edits, nor held messages (they reach nobody).
  local afield = ADM and kind == 'message' and hold == '' and 'adm:' .. values[1]
  local atat, akey = nil, nil  -- the sender's bucket as it will be stored; the started bucket's key
  local ckk = P .. 'ck:' .. ck
  local cid = redis.call('GET', ckk)
  local c
  local state = 'new'
  local cur
  if cid then
    c = P .. 'conv:' .. cid
    cur = conv_fields(c, 'status', 'group', 'prio', 'agent', 'due_ms', 'waiting_ms', 'tags', 'routed_by',
      'messages', afield or nil)
    if not cur.status then
      cid = nil
    elseif cur.status == 'closed' then
      -- Asked only of a closed conversation: a field absent from a small hash (stored as one list)
      -- is a walk through all of its fields.
      local closed = conv_fields(c, 'closed_ms', 'csat_until')
      if closed.csat_until and kind == 'message' and csat_comment(cid, c, hist_raw, tonumber(closed.csat_until)) then
        return
      end
      if NOW - tonumber(closed.closed_ms or '0') <= REOPEN_MS then state = 'reopened' else cid = nil end
    else
      state = 'follow_up'
    end
  end

  if not cid and kind == 'delete' then
    -- Deleting a message we never routed: nothing to record, and no conversation to start.
    return
  end

  if afield and cid then
    local ok
    ok, atat = adm_take(channel, cur[afield])
    if not ok then return adm_throttled(cid, c, ck, channel, account, ckey, values, entry, hist_raw, false) end
  elseif afield then
    akey = P .. 'adm:' .. channel .. ':' .. values[1]
    local tat, latest = string.match(redis.call('GET', akey) or '', '^(%d+) (%d*)$')
    local ok
    ok, atat = adm_take(channel, tat)
    if not ok and latest and latest ~= '' then
      local fc = P .. 'conv:' .. latest
      local st = redis.call('HGET', fc, 'status')
      if st and st ~= 'closed' then
        return adm_throttled(latest, fc, ck, channel, account, ckey, values, entry, hist_raw, true)
      end
    end
    -- Admitted, or nowhere to fold it: it starts its conversation (never dropped).
  end
  if hold ~= '' and cid and kind == 'message' then
    -- Into a closed conversation: recorded, it stays closed.
    if state == 'reopened' then
      hist(cid, 'inbound', hist_raw)
      redis.call('HINCRBY', c, 'messages', 1)
    else
      adm_hold(cid, c, cur, hold, to_tags, hist_raw)
    end
    return
  end

  if not cid then
    -- The id tells the shard (n * shards + shard; n, this shard's own count): ids stay numbers,
    -- unique over the deployment, and with one shard the count itself.
    cid = num(redis.call('INCR', P .. 'seq:conv') * SHARDS + SHARD)
    c = P .. 'conv:' .. cid
    redis.call('SET', ckk, cid)
    local due = NOW + SLA[to_prio]
    -- A held message (banned, muted, spam) starts its conversation held: out of the queues.
    local set = fields({'id', cid, 'group', to_group, 'prio', PRIO[to_prio], 'status', hold == '' and 'new' or 'held',
      'agent', '', 'created_ms', NOWS, 'updated_ms', NOWS, 'waiting_ms', NOWS, 'due_ms', num(due),
      'tags', cjson.encode(to_tags), 'messages', '1', 'routed_by', routed_by,
      'channel', channel, 'account', account, 'ckey', ckey}, values)
    if hold ~= '' then
      put(set, 'held', hold)
      -- Under the policy in force once restored (conv.lua restore wakes the SLA timer).
      if SLAV ~= 0 then put(set, 'sla_v', num(SLAV)) end
      redis.call('HSET', c, unpack(set))
      hist(cid, 'inbound', hist_raw)
      return
    end
    if SLAV ~= 0 then
      put(set, 'sla_v', num(SLAV))
      wake(cid)
    end
    if akey then
      adm_started(akey, atat, cid)
      local _, fresh = adm_take(channel, nil)
      put(set, afield, num(fresh))  -- the sender's bucket in the new conversation
    end
    redis.call('HSET', c, unpack(set))
    enqueue(cid, to_group, to_prio, due, NOW)
    hist(cid, 'inbound', hist_raw)
    event(to_group, 'created', cid, '{"prio":' .. PRIO[to_prio] .. '}')
    if reply ~= '' then
      if wait_texts then reply = estimated(cid, c, to_group, reply, wait_texts) end
      send(cid, channel, reply_id, '{"conversation":"' .. cid .. '",' .. string.sub(reply, 2))
      count(sent, channel)
    end
    return
  end

  if kind ~= 'message' then
    -- Edits and deletions update the history only; they never requeue a conversation.
    hist(cid, kind, hist_raw)
    redis.call('HSET', c, 'updated_ms', NOWS)
    event(cur.group, kind, cid)
    return
  end

  -- The queue place as stored, to compare with the new one.
  local was_prio, was_due, was_since = tonumber(cur.prio), tonumber(cur.due_ms), tonumber(cur.waiting_ms)
  local group = cur.group
  local prio = math.min(was_prio, to_prio)
  -- Sticky, except: a rule escalates, or the group came from the defaults only and a rule now
  -- knows better while nobody has the conversation yet (a "/start" then the real question).
  local placed_by_default = (cur.routed_by or '') == '' and routed_by ~= '' and (cur.agent or '') == ''
  local moved = (escalate or placed_by_default) and to_group ~= group
  if moved then group = to_group end

  local tags = cjson.decode(cur.tags or '[]')
  local seen = {}
  local tagged = false
  for _, t in ipairs(tags) do seen[t] = true end
  for _, t in ipairs(to_tags) do
    if not seen[t] then
      table.insert(tags, t)
      seen[t] = true
      tagged = true
    end
  end

  local agent = cur.agent or ''
  local status = cur.status
  local due = was_due
  local since = was_since
  -- Answered from the knowledge base (lua/answer.lua): a further message wants a person; so does
  -- a message (not held) into a conversation admission control held.
  local answered = status == 'answered'
  local unheld = status == 'held'
  if state == 'reopened' or answered or unheld or (moved and agent ~= '') then
    -- A reopened or escalated conversation goes back to a queue, with a fresh SLA.
    if agent ~= '' then redis.call('SREM', P .. 'agent:' .. agent, cid) end
    agent = ''
    status = 'new'
    since = NOW
    due = NOW + SLA[prio]
  elseif agent ~= '' then
    status = 'assigned'  -- the user answered: the agent keeps it
  else
    status = 'new'
    due = math.min(due, since + SLA[prio])
  end
  -- ZADD moves a member already queued: only leaving the queue (or this group's) needs ZREM, and
  -- a conversation waiting where it was, as urgent and as late as it was, needs neither.
  local stays = cur.status == 'new' and group == cur.group
  if cur.status == 'new' and not (status == 'new' and stays) then dequeue(cid, cur.group) end
  if status == 'new' and not (stays and prio == was_prio and due == was_due and since == was_since) then
    enqueue(cid, group, prio, due, since)
  end

  -- Only what changed: a follow-up usually leaves the place in the queue as it was.
  local set = {'updated_ms', NOWS, 'messages', num((tonumber(cur.messages) or 0) + 1)}
  if group ~= cur.group then put(set, 'group', group) end
  if prio ~= was_prio then put(set, 'prio', PRIO[prio]) end
  if status ~= cur.status then put(set, 'status', status) end
  if agent ~= (cur.agent or '') then put(set, 'agent', agent) end
  if since ~= was_since then put(set, 'waiting_ms', num(since)) end
  if due ~= was_due then put(set, 'due_ms', num(due)) end
  if tagged then put(set, 'tags', cjson.encode(tags)) end
  if moved then put(set, 'routed_by', routed_by) end
  if unheld then put(set, 'held', '') end
  if atat then put(set, afield, num(atat)) end
  -- A reopened conversation starts a new SLA clock under the policy in force; a message may start a
  -- next-response cycle or end a wait on the user (the agent had answered: status 'waiting'), or
  -- move a deadline (a new priority, group or tag).
  if SLAV ~= 0 and state == 'reopened' then put(set, 'sla_v', num(SLAV)) end
  if SLAV ~= 0 and (state == 'reopened' or unheld or cur.status == 'waiting' or prio ~= was_prio or moved or tagged) then
    wake(cid)
  end
  redis.call('HSET', c, unpack(fields(set, values)))
  hist(cid, 'inbound', hist_raw)
  if state == 'reopened' then
    hist(cid, 'status', cjson.encode({status = 'new', by = 'system', reason = 'reopened'}))
    redis.call('ZREM', P .. 'closed', cid)
    -- A survey's comment is awaited only while the conversation stays closed (lua/csat.lua).
    redis.call('HDEL', c, 'csat_until')
  end
  if answered then hist(cid, 'status', cjson.encode({status = 'new', by = 'system', reason = 'follow-up to an answer'})) end
  if unheld then hist(cid, 'status', cjson.encode({status = 'new', by = 'admission', reason = 'a message not held'})) end
  if answered or state == 'reopened' then answer_outcome(cid, 'reopened') end
  if SLAV ~= 0 and prio ~= was_prio then
    -- In the history for the SLA clock, which re-targets from a priority change (docs/sla.md);
    -- without a policy, not written (1.5% more Redis instructions per routed message).
    hist(cid, 'status', cjson.encode({prio = prio, from = was_prio, by = 'rules'}))
  end
  if moved then
    hist(cid, 'status', cjson.encode({group = group, from = cur.group, by = 'rules',
      reason = escalate and 'escalated' or 'routed by ' .. routed_by}))
    event(cur.group, 'moved', cid, cjson.encode({to = group}))
  end
  event(group, (state == 'reopened' or answered or unheld) and 'reopened' or 'message', cid, '{"prio":' .. PRIO[prio] .. '}')
end

local out = {0}
for i = 4, #ARGV, 4 do
  local entry = ARGV[i]
  local decoded, d = pcall(cjson.decode, ARGV[i + 1])
  local ok, res = decoded, d
  if decoded then ok, res = pcall(route, entry, d, ARGV[i + 2], ARGV[i + 3]) end
  if ok then
    out[1] = out[1] + 1
  else
    -- redis.call raises a table ({err = ...}) for a command error, a string for a Lua error.
    -- The entry may be acknowledged already (its XACK runs first): it goes to the dead letters,
    -- where it can be retried, rather than nowhere.
    local reason = 'route script: ' .. (type(res) == 'table' and tostring(res.err) or tostring(res))
    pcall(dead_letter, entry, reason, 1, STREAM, FAILURES)
    local sent, n = pcall(redis.call, 'XACK', STREAM, ROUTER_GROUP, entry)
    if sent and n == 1 then acked = acked + 1 end
    out[#out + 1] = entry
    out[#out + 1] = reason
  end
end
if WAITING and acked > 0 then redis.call('DECRBY', WAITING, acked) end
for channel, n in pairs(routed) do redis.call('HINCRBY', P .. 'stats', 'routed:' .. channel, n) end
for channel, n in pairs(sent) do redis.call('HINCRBY', P .. 'stats', 'out:' .. channel, n) end
for channel, n in pairs(throttled_n) do redis.call('HINCRBY', P .. 'stats', 'throttled:' .. channel, n) end
return out
