-- Apply one routing decision and acknowledge its inbox entry, atomically.
-- ARGV[3] = inbox entry id, ARGV[4] = JSON payload built by router/worker.py:
--   cg, ck, kind, group, prio, escalate, sla{"1".."4"}, reopen_ms, tags[], hist (JSON text),
--   fields{...} (conversation fields to set), reply (outbox item or null), channel
-- Returns {state, conversation id, group}; state 'dup' when the entry was already acknowledged
-- (a reclaimed entry that its first worker did finish), which makes the effect exactly-once.
local entry = ARGV[3]
local d = cjson.decode(ARGV[4])
if redis.call('XACK', P .. 'inbox', d.cg, entry) == 0 then
  return {'dup', '', ''}
end
-- The raw envelope of a message with a secret must not outlive its routing in clear.
if d.scrub then redis.call('XDEL', P .. 'inbox', entry) end
redis.call('HINCRBY', P .. 'stats', 'routed:' .. d.channel, 1)
redis.call('HDEL', P .. 'failures', entry)

local ckk = P .. 'ck:' .. d.ck
local cid = redis.call('GET', ckk)
local c
local state = 'new'
local cur
if cid then
  c = P .. 'conv:' .. cid
  cur = conv_fields(c, 'status', 'closed_ms', 'group', 'prio', 'agent', 'due_ms', 'waiting_ms', 'tags', 'channel', 'routed_by')
  if not cur.status then
    cid = nil
  elseif cur.status == 'closed' then
    if NOW - tonumber(cur.closed_ms or '0') <= d.reopen_ms then state = 'reopened' else cid = nil end
  else
    state = 'follow_up'
  end
end

local function sla(p) return d.sla[tostring(p)] end

if not cid and d.kind == 'delete' then
  -- Deleting a message we never routed: nothing to record, and no conversation to start.
  return {'ignored', '', ''}
end

if not cid then
  cid = tostring(redis.call('INCR', P .. 'seq:conv'))
  c = P .. 'conv:' .. cid
  redis.call('SET', ckk, cid)
  local due = NOW + sla(d.prio)
  redis.call('HSET', c, 'id', cid, 'group', d.group, 'prio', d.prio, 'status', 'new', 'agent', '',
    'created_ms', num(NOW), 'updated_ms', num(NOW), 'waiting_ms', num(NOW), 'due_ms', num(due),
    'tags', cjson.encode(d.tags), 'messages', 1, 'routed_by', d.routed_by)
  for k, v in pairs(d.fields) do redis.call('HSET', c, k, v) end
  enqueue(cid, d.group, d.prio, due, NOW)
  hist(cid, 'inbound', d.hist)
  event(d.group, 'created', cid, cjson.encode({prio = d.prio}))
  if d.reply ~= cjson.null then
    send(cid, {channel = d.fields.channel}, d.reply)
  end
  return {'new', cid, d.group}
end

if d.kind ~= 'message' then
  -- Edits and deletions update the history only; they never requeue a conversation.
  hist(cid, d.kind, d.hist)
  redis.call('HSET', c, 'updated_ms', num(NOW))
  event(cur.group, d.kind, cid)
  return {d.kind, cid, cur.group}
end

local group = cur.group
local prio = math.min(tonumber(cur.prio), d.prio)
-- Sticky, except: a rule escalates, or the group came from the defaults only and a rule now knows
-- better while nobody has the conversation yet (a "/start" then the real question).
local placed_by_default = (cur.routed_by or '') == '' and d.routed_by ~= '' and (cur.agent or '') == ''
local moved = (d.escalate or placed_by_default) and d.group ~= group
if moved then group = d.group end

local tags = cjson.decode(cur.tags or '[]')
local seen = {}
for _, t in ipairs(tags) do seen[t] = true end
for _, t in ipairs(d.tags) do if not seen[t] then table.insert(tags, t); seen[t] = true end end

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
  due = NOW + sla(prio)
elseif agent ~= '' then
  status = 'assigned'  -- the user answered: the agent keeps it
else
  status = 'new'
  due = math.min(due, since + sla(prio))
end
if cur.status == 'new' then dequeue(cid, cur.group) end
if status == 'new' then enqueue(cid, group, prio, due, since) end

if moved then redis.call('HSET', c, 'routed_by', d.routed_by) end
redis.call('HSET', c, 'group', group, 'prio', prio, 'status', status, 'agent', agent,
  'updated_ms', num(NOW), 'waiting_ms', num(since), 'due_ms', num(due), 'tags', cjson.encode(tags))
redis.call('HINCRBY', c, 'messages', 1)
for k, v in pairs(d.fields) do redis.call('HSET', c, k, v) end
hist(cid, 'inbound', d.hist)
if state == 'reopened' then
  hist(cid, 'status', cjson.encode({status = 'new', by = 'system', reason = 'reopened'}))
end
if moved then
  hist(cid, 'status', cjson.encode({group = group, from = cur.group, by = 'rules',
    reason = d.escalate and 'escalated' or 'routed by ' .. d.routed_by}))
  event(cur.group, 'moved', cid, cjson.encode({to = group}))
end
event(group, state == 'reopened' and 'reopened' or 'message', cid, cjson.encode({prio = prio}))
return {state, cid, group}
