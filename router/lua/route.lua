-- Apply a batch of routing decisions; each message's writes and the XACK of its inbox entry
-- happen together (the whole script is atomic, and a message that fails leaves the others be).
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
--    hold ('' or why the message is kept out of the queues: banned, muted, spam)]
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

-- Admission (docs/admission.md, router/admission.py) ----------------------------------------
-- A token bucket per sender and channel, in the shard of the message's conversation, checked and
-- taken here so that it holds across workers. shared.adm = {def = {rate/s, burst}, ch = {channel =
-- {rate/s, burst}}, window_ms, notice = {lang = text}}. A message over the limit is never dropped:
-- it goes into the history of its conversation (or, if it would start one, of the sender's latest
-- open conversation) marked throttled, with no queue, auto-reply or event of its own, and the
-- sender gets one notice per window. adm:{channel}:{sender} = "milli-tokens at-ms notice-ms conv":
-- one GET and one SET a message.
local ADM = shared.adm
local throttled_n = {}

local function adm_take(channel, sender)
  local lim = ADM.ch[channel] or ADM.def
  local cap = lim[2] * 1000
  local a = {key = P .. 'adm:' .. channel .. ':' .. sender, lim = lim, tokens = cap, at = NOW, notice = 0, conv = ''}
  local raw = redis.call('GET', a.key)
  if raw then
    local t, at, notice, conv = string.match(raw, '^(%d+) (%d+) (%d+) ?(%d*)$')
    if t then
      -- Workers' clocks may differ a little: time never runs backwards for a bucket.
      a.at = math.max(tonumber(at), NOW)
      a.tokens = math.min(cap, tonumber(t) + math.floor((a.at - tonumber(at)) * lim[1]))
      a.notice, a.conv = tonumber(notice), conv
    end
  end
  a.ok = a.tokens >= 1000
  if a.ok then a.tokens = a.tokens - 1000 end
  return a
end

local function adm_save(a, cid)
  -- Kept until the bucket is full again and the notice window is over: then it is a fresh one.
  local ttl = math.max(math.ceil(a.lim[2] * 1000 / a.lim[1]), ADM.window_ms)
  redis.call('SET', a.key, num(a.tokens) .. ' ' .. num(a.at) .. ' ' .. num(a.notice) .. ' ' .. cid, 'PX', num(ttl))
end

-- The conversation a throttled message goes into when its own does not exist: the sender's
-- latest, while open (a flood spread over chats or threads still makes one queue entry).
local function adm_fold(a)
  if a.conv == '' then return nil end
  local st = redis.call('HGET', P .. 'conv:' .. a.conv, 'status')
  if st and st ~= 'closed' then return a.conv end
  return nil
end

-- A throttled message into conversation cid: its history (marked, and where it came from when
-- folded), the counters, and the notice once per window, in the message's language.
local function adm_throttled(a, cid, ck, channel, account, ckey, values, entry, hist_raw, folded)
  local c = P .. 'conv:' .. cid
  local mark = '{"admission":"throttled",'
  if folded then mark = mark .. '"folded_from":' .. cjson.encode(ck) .. ',' end
  hist(cid, 'inbound', mark .. string.sub(hist_raw, 2))
  redis.call('HINCRBY', c, 'messages', 1)
  redis.call('HINCRBY', c, 'throttled', 1)
  count(throttled_n, channel)
  if NOW - a.notice >= ADM.window_ms then
    a.notice = NOW
    local id = 'notice-' .. entry
    send(cid, channel, id, cjson.encode({id = id, conversation = cid, channel = channel, account = account,
      conversation_key = ckey, text = ADM.notice[values[3]] or ADM.notice.en, author = 'auto',
      reply_to = values[5], meta = cjson.decode(values[7]), auto = true, created_at = NOW / 1000}))
    count(sent, channel)
    event(redis.call('HGET', c, 'group'), 'throttled', cid)
  end
  adm_save(a, a.conv)
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

local function route(entry, payload, hist_raw, reply)
  local ck, channel, kind, to_group, to_prio, routed_by, escalate, retry, reply_id, to_tags, values,
    account, ckey, hold = unpack(payload)
  if redis.call('XACK', P .. 'inbox', ROUTER_GROUP, entry) == 0 then
    return
  end
  count(routed, channel)
  if retry then redis.call('HDEL', P .. 'failures', entry) end
  -- The sender's bucket: a held message is not counted (it reaches nobody).
  local adm = nil
  if ADM and kind == 'message' and hold == '' then adm = adm_take(channel, values[1]) end

  local ckk = P .. 'ck:' .. ck
  local cid = redis.call('GET', ckk)
  local c
  local state = 'new'
  local cur
  if cid then
    c = P .. 'conv:' .. cid
    cur = conv_fields(c, 'status', 'group', 'prio', 'agent', 'due_ms', 'waiting_ms', 'tags', 'routed_by',
      'messages')
    if not cur.status then
      cid = nil
    elseif cur.status == 'closed' then
      -- Asked only of a closed conversation: a field absent from a small hash (stored as one list)
      -- is a walk through all of its fields.
      local closed_ms = redis.call('HGET', c, 'closed_ms')
      if NOW - tonumber(closed_ms or '0') <= REOPEN_MS then state = 'reopened' else cid = nil end
    else
      state = 'follow_up'
    end
  end

  if not cid and kind == 'delete' then
    -- Deleting a message we never routed: nothing to record, and no conversation to start.
    return
  end

  if adm and not adm.ok then
    local into = cid or adm_fold(adm)
    if into then
      return adm_throttled(adm, into, ck, channel, account, ckey, values, entry, hist_raw, not cid)
    end
    -- Nowhere to fold it: it starts its conversation like an admitted one (never dropped).
  end
  if hold ~= '' and cid then
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
      redis.call('HSET', c, unpack(set))
      hist(cid, 'inbound', hist_raw)
      return
    end
    if SLAV ~= 0 then
      put(set, 'sla_v', num(SLAV))
      wake(cid)
    end
    redis.call('HSET', c, unpack(set))
    enqueue(cid, to_group, to_prio, due, NOW)
    hist(cid, 'inbound', hist_raw)
    event(to_group, 'created', cid, '{"prio":' .. PRIO[to_prio] .. '}')
    if reply ~= '' then
      send(cid, channel, reply_id, '{"conversation":"' .. cid .. '",' .. string.sub(reply, 2))
      count(sent, channel)
    end
    if adm then adm_save(adm, cid) end
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
  -- A reopened conversation starts a new SLA clock under the policy in force; a message may start a
  -- next-response cycle or end a wait on the user (the agent had answered: status 'waiting'), or
  -- move a deadline (a new priority, group or tag).
  if SLAV ~= 0 and state == 'reopened' then put(set, 'sla_v', num(SLAV)) end
  if SLAV ~= 0 and (state == 'reopened' or cur.status == 'waiting' or prio ~= was_prio or moved or tagged) then
    wake(cid)
  end
  redis.call('HSET', c, unpack(fields(set, values)))
  hist(cid, 'inbound', hist_raw)
  if state == 'reopened' then
    hist(cid, 'status', cjson.encode({status = 'new', by = 'system', reason = 'reopened'}))
    redis.call('ZREM', P .. 'closed', cid)
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
  if adm then adm_save(adm, cid) end
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
    pcall(dead_letter, entry, reason, 1)
    pcall(redis.call, 'XACK', P .. 'inbox', ROUTER_GROUP, entry)
    out[#out + 1] = entry
    out[#out + 1] = reason
  end
end
for channel, n in pairs(routed) do redis.call('HINCRBY', P .. 'stats', 'routed:' .. channel, n) end
for channel, n in pairs(sent) do redis.call('HINCRBY', P .. 'stats', 'out:' .. channel, n) end
for channel, n in pairs(throttled_n) do redis.call('HINCRBY', P .. 'stats', 'throttled:' .. channel, n) end
return out
