-- Apply a batch of routing decisions; each message's writes and the XACK of its inbox entry
-- happen together (the whole script is atomic, and a message that fails leaves the others be).
-- ARGV[3] = JSON of what every message of the call shares: cg (the consumer group), sla
-- {"1".."4": ms} and reopen_ms. ARGV[4..] = quads (inbox entry id, JSON payload, history entry,
-- outbox item or '') built by router/worker.py. The payload has ck, channel, kind, group, prio,
-- routed_by, tags[], fields[name, value, ...] (conversation fields to set), fixed[name, value,
-- ...] (fields a conversation key never changes: set when it is created), reply_id with an
-- outbox item, and escalate, scrub and retry only when true. The history entry and the outbox
-- item are stored without decoding them; the item's conversation id is prepended here.
-- Returns per message {state, conversation id, group}; state 'dup' when the entry was already
-- acknowledged (a reclaimed entry that its first worker did finish), which makes the effect
-- exactly-once; {'err', reason} when its routing raised (the entry is then dead-lettered).
local shared = cjson.decode(ARGV[3])
local CG = shared.cg
local REOPEN_MS = shared.reopen_ms
local SLA = {}
for p, ms in pairs(shared.sla) do SLA[tonumber(p)] = ms end

-- Per channel, messages routed and auto-replies sent in this call: one HINCRBY each at the end.
local routed, sent = {}, {}

local function extend(t, list)
  local n = #t
  for i = 1, #list do t[n + i] = list[i] end
  return t
end

local function count(t, key)
  t[key] = (t[key] or 0) + 1
end

local function route(entry, d, hist_raw, reply)
  if redis.call('XACK', P .. 'inbox', CG, entry) == 0 then
    return {'dup', '', ''}
  end
  -- The raw envelope of a message with a secret must not outlive its routing in clear.
  if d.scrub then redis.call('XDEL', P .. 'inbox', entry) end
  count(routed, d.channel)
  if d.retry then redis.call('HDEL', P .. 'failures', entry) end

  local ckk = P .. 'ck:' .. d.ck
  local cid = redis.call('GET', ckk)
  local c
  local state = 'new'
  local cur
  if cid then
    c = P .. 'conv:' .. cid
    cur = conv_fields(c, 'status', 'closed_ms', 'group', 'prio', 'agent', 'due_ms', 'waiting_ms', 'tags',
      'routed_by', 'messages')
    if not cur.status then
      cid = nil
    elseif cur.status == 'closed' then
      if NOW - tonumber(cur.closed_ms or '0') <= REOPEN_MS then state = 'reopened' else cid = nil end
    else
      state = 'follow_up'
    end
  end

  if not cid and d.kind == 'delete' then
    -- Deleting a message we never routed: nothing to record, and no conversation to start.
    return {'ignored', '', ''}
  end

  if not cid then
    cid = tostring(redis.call('INCR', P .. 'seq:conv'))
    c = P .. 'conv:' .. cid
    redis.call('SET', ckk, cid)
    local due = NOW + SLA[d.prio]
    redis.call('HSET', c, unpack(extend(extend({'id', cid, 'group', d.group, 'prio', d.prio, 'status', 'new',
      'agent', '', 'created_ms', NOWS, 'updated_ms', NOWS, 'waiting_ms', NOWS, 'due_ms', num(due),
      'tags', cjson.encode(d.tags), 'messages', 1, 'routed_by', d.routed_by}, d.fields), d.fixed)))
    enqueue(cid, d.group, d.prio, due, NOW)
    hist(cid, 'inbound', hist_raw)
    event(d.group, 'created', cid, '{"prio":' .. d.prio .. '}')
    if reply ~= '' then
      send(cid, d.channel, d.reply_id, '{"conversation":"' .. cid .. '",' .. string.sub(reply, 2))
      count(sent, d.channel)
    end
    return {'new', cid, d.group}
  end

  if d.kind ~= 'message' then
    -- Edits and deletions update the history only; they never requeue a conversation.
    hist(cid, d.kind, hist_raw)
    redis.call('HSET', c, 'updated_ms', NOWS)
    event(cur.group, d.kind, cid)
    return {d.kind, cid, cur.group}
  end

  local group = cur.group
  local prio = math.min(tonumber(cur.prio), d.prio)
  -- Sticky, except: a rule escalates, or the group came from the defaults only and a rule now
  -- knows better while nobody has the conversation yet (a "/start" then the real question).
  local placed_by_default = (cur.routed_by or '') == '' and d.routed_by ~= '' and (cur.agent or '') == ''
  local moved = (d.escalate or placed_by_default) and d.group ~= group
  if moved then group = d.group end

  local tags = cjson.decode(cur.tags or '[]')
  local seen = {}
  local new_tags = false
  for _, t in ipairs(tags) do seen[t] = true end
  for _, t in ipairs(d.tags) do
    if not seen[t] then
      table.insert(tags, t)
      seen[t] = true
      new_tags = true
    end
  end

  local agent = cur.agent or ''
  local status = cur.status
  local due = tonumber(cur.due_ms)
  local since = tonumber(cur.waiting_ms)
  if state == 'reopened' or (moved and agent ~= '') then
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
  if status == 'new' and not (stays and prio == tonumber(cur.prio) and due == tonumber(cur.due_ms)
      and since == tonumber(cur.waiting_ms)) then
    enqueue(cid, group, prio, due, since)
  end

  -- Only what changed: a follow-up usually leaves the place in the queue as it was.
  local set = {'updated_ms', NOWS, 'messages', (tonumber(cur.messages) or 0) + 1}
  if group ~= cur.group then extend(set, {'group', group}) end
  if prio ~= tonumber(cur.prio) then extend(set, {'prio', prio}) end
  if status ~= cur.status then extend(set, {'status', status}) end
  if agent ~= (cur.agent or '') then extend(set, {'agent', agent}) end
  if since ~= tonumber(cur.waiting_ms) then extend(set, {'waiting_ms', num(since)}) end
  if due ~= tonumber(cur.due_ms) then extend(set, {'due_ms', num(due)}) end
  if new_tags then extend(set, {'tags', cjson.encode(tags)}) end
  if moved then extend(set, {'routed_by', d.routed_by}) end
  redis.call('HSET', c, unpack(extend(set, d.fields)))
  hist(cid, 'inbound', hist_raw)
  if state == 'reopened' then
    hist(cid, 'status', cjson.encode({status = 'new', by = 'system', reason = 'reopened'}))
  end
  if moved then
    hist(cid, 'status', cjson.encode({group = group, from = cur.group, by = 'rules',
      reason = d.escalate and 'escalated' or 'routed by ' .. d.routed_by}))
    event(cur.group, 'moved', cid, cjson.encode({to = group}))
  end
  event(group, state == 'reopened' and 'reopened' or 'message', cid, '{"prio":' .. prio .. '}')
  return {state, cid, group}
end

local out = {}
for i = 4, #ARGV, 4 do
  local entry = ARGV[i]
  local decoded, d = pcall(cjson.decode, ARGV[i + 1])
  local ok, res = decoded, d
  if decoded then ok, res = pcall(route, entry, d, ARGV[i + 2], ARGV[i + 3]) end
  if ok then
    out[#out + 1] = res
  else
    -- redis.call raises a table ({err = ...}) for a command error, a string for a Lua error.
    -- The entry may be acknowledged already (its XACK runs first): it goes to the dead letters,
    -- where it can be retried, rather than nowhere.
    local reason = 'route script: ' .. (type(res) == 'table' and tostring(res.err) or tostring(res))
    pcall(dead_letter, entry, reason, 1)
    pcall(redis.call, 'XACK', P .. 'inbox', CG, entry)
    out[#out + 1] = {'err', reason}
  end
end
for channel, n in pairs(routed) do redis.call('HINCRBY', P .. 'stats', 'routed:' .. channel, n) end
for channel, n in pairs(sent) do redis.call('HINCRBY', P .. 'stats', 'out:' .. channel, n) end
return out
