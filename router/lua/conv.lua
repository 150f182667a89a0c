-- Conversation operations by agents and adapters, each atomic.
-- ARGV[3] = op, ARGV[4] = conversation id ('' for claim-next), ARGV[5] = JSON arguments,
-- ARGV[6] = request id ('' for none), ARGV[7] = its record's TTL in ms: an op sent again with its
-- request id returns the first result and changes nothing (router/requests.py). Error replies are
-- not recorded: they changed nothing, so a repeat may run.
-- Errors: 'NOTFOUND …' and 'CONFLICT …' replies, mapped to exceptions by router/conversations.py.
local op = ARGV[3]
local cid = ARGV[4]
local a = cjson.decode(ARGV[5])
local RID = ARGV[6]
local done = request_done(RID)
if done then return done end
local function finish(result) return request_record(RID, ARGV[7], result) end

if op == 'claim' then
  local q = P .. 'queue:' .. a.group
  if cid == '' then
    local head = redis.call('ZPOPMIN', q)
    if #head == 0 then return finish('') end
    cid = head[1]
  elseif redis.call('ZREM', q, cid) == 0 then
    return finish('')
  end
  redis.call('ZREM', P .. 'waiting:' .. a.group, cid)
  served(cid, a.group, true)
  local c = P .. 'conv:' .. cid
  -- last_agent: the agent a sticky assignment policy gives the conversation back to (assign, below).
  redis.call('HSET', c, 'status', 'assigned', 'agent', a.by, 'assigned_ms', NOWS, 'updated_ms', NOWS, 'last_agent', a.by)
  redis.call('SADD', P .. 'agent:' .. a.by, cid)
  hist(cid, 'status', cjson.encode({status = 'assigned', agent = a.by, by = a.by}))
  event(a.group, 'claimed', cid, cjson.encode({agent = a.by}))
  return finish(cid)
end

if op == 'assign' then
  -- Step 2 of an automatic assignment (router/assignment.py): the conversation goes to a.agent,
  -- whose capacity step 1 reserved at the home prefix, only while it is still waiting in a.group's
  -- queue (ZREM: one winner, as for a claim) and the reservation has not expired (a.until, ms): the
  -- reconciler settles an expired reservation by what this step did, so past it this step refuses.
  if NOW > tonumber(a['until']) then return finish('expired') end
  if redis.call('ZREM', P .. 'queue:' .. a.group, cid) == 0 then return finish('') end
  redis.call('ZREM', P .. 'waiting:' .. a.group, cid)
  served(cid, a.group, true)
  local c = P .. 'conv:' .. cid
  redis.call('HSET', c, 'status', 'assigned', 'agent', a.agent, 'assigned_ms', NOWS, 'updated_ms', NOWS,
    'last_agent', a.agent, 'assign_token', a.token)
  redis.call('SADD', P .. 'agent:' .. a.agent, cid)
  -- a.reoffer_at: when to re-offer it without a first reply, by the assigner's clock (0: never).
  if tonumber(a.reoffer_at) > 0 then redis.call('ZADD', P .. 'offers', a.reoffer_at, cid) end
  local data = cjson.encode({status = 'assigned', agent = a.agent, by = 'assign', policy = a.policy, reason = a.reason})
  hist(cid, 'status', data)
  event(a.group, 'assigned', cid, data)
  redis.call('HINCRBY', P .. 'stats', 'assign:assigned:' .. a.group, 1)
  return finish(cid)
end

local c = P .. 'conv:' .. cid
local cur = conv_fields(c, 'status', 'group', 'prio', 'agent', 'due_ms', 'waiting_ms', 'channel', 'account', 'ckey', 'last_platform_id', 'meta', 'sla_v')
if not cur.status then return redis.error_reply('NOTFOUND conversation ' .. cid) end
local prio = tonumber(cur.prio)

local function unassign()
  if cur.agent and cur.agent ~= '' then redis.call('SREM', P .. 'agent:' .. cur.agent, cid) end
end

-- An agent's correction (a transfer, a priority change) or close is a label on the message the
-- rules routed: the conversation's latest inbound message, as its history stores it (secrets
-- already masked), with the group and priority it has now. `switchboard model export` writes them out for training (issue 15); the stream is
-- capped, and outlives the conversation's own history.
local LABELS_MAXLEN = '100000'
local function label(kind, group, p, reason)
  local recent = redis.call('XREVRANGE', P .. 'hist:' .. cid, '+', '-', 'COUNT', 200)
  for _, e in ipairs(recent) do
    local f = e[2]  -- type, <type>, at, <ms>, data, <json>
    if f[2] == 'inbound' then
      redis.call('XADD', P .. 'labels', 'MAXLEN', '~', LABELS_MAXLEN, '*', 'kind', kind, 'conv', cid,
        'channel', cur.channel, 'group', group, 'prio', p, 'by', a.by, 'reason', reason or '', 'message', f[6])
      return
    end
  end
end

local function requeue(group, p)
  local sla = tonumber(a.sla_ms[cur.prio])  -- the SLA (ms) of each priority, by its number
  local due = math.min(tonumber(cur.due_ms), NOW + sla)
  enqueue(cid, group, p, due, NOW)
  redis.call('HSET', c, 'status', 'new', 'agent', '', 'group', group, 'prio', p,
    'waiting_ms', NOWS, 'due_ms', num(due), 'updated_ms', NOWS)
  cur.status, cur.agent, cur.group, cur.due_ms = 'new', '', group, num(due)
end

-- A conversation under an SLA policy (sla_v) has its clock evaluated again at the timer's next
-- tick (router/slatimer.py): a change that may move a deadline (priority, group, a reply, waiting
-- on the user, closing). LT: never later than an earlier wake-up already set.
local function wake()
  if cur.sla_v and cur.sla_v ~= '' then redis.call('ZADD', P .. 'sla:due', 'LT', NOWS, cid) end
end

-- The changes an agent and an escalation step (op 'sla') make alike, each with its history entry
-- and event; the callers add their label.
local function release(by, reason)
  local agent = cur.agent
  unassign()
  requeue(cur.group, prio)
  hist(cid, 'status', cjson.encode({status = 'new', by = by, reason = reason, agent = agent}))
  event(cur.group, 'released', cid, cjson.encode({by = by}))
end

local function move(group, by, reason)
  local from = cur.group
  if cur.status == 'new' then dequeue(cid, from) end
  unassign()
  requeue(group, prio)
  hist(cid, 'status', cjson.encode({group = group, from = from, by = by, reason = reason}))
  event(from, 'moved', cid, cjson.encode({to = group, by = by}))
  event(group, 'created', cid, cjson.encode({prio = prio, from = from}))
end

local function set_priority(p, by)
  redis.call('HSET', c, 'prio', p, 'updated_ms', NOWS)
  if cur.status == 'new' then
    redis.call('ZADD', P .. 'queue:' .. cur.group, num(p * 1e13 + tonumber(cur.due_ms)), cid)
  end
  hist(cid, 'status', cjson.encode({prio = p, from = prio, by = by}))
  event(cur.group, 'priority', cid, cjson.encode({prio = p, by = by}))
  prio, cur.prio = p, num(p)
end

if op == 'delivery' then
  -- Recording the outcome and acknowledging the outbox entry in one step: a sender that crashes
  -- after this never sends the reply twice, and one that crashes before it sends it again. The
  -- acknowledged entry is deleted, so the outbox holds only the replies still in flight.
  if a.entry and a.entry ~= '' and a.status ~= 'retrying' then
    redis.call('XACK', P .. 'outbox:' .. cur.channel, SENDER_GROUP, a.entry)
    redis.call('XDEL', P .. 'outbox:' .. cur.channel, a.entry)
  end
  -- The first outcome recorded stands: a reply that a reclaiming sender and a slow one both sent
  -- is recorded once.
  local was = redis.call('HGET', P .. 'delivery:' .. cid, a.reply)
  if was == 'delivered' or was == 'failed' then return 'recorded' end
  redis.call('HSET', P .. 'delivery:' .. cid, a.reply, a.status)
  hist(cid, 'delivery', ARGV[5])
  event(cur.group, 'delivery', cid, ARGV[5])
  if a.status == 'failed' then redis.call('HINCRBY', P .. 'stats', 'delivery_failed:' .. cur.channel, 1) end
  return 'ok'
end

if op == 'note' then
  hist(cid, 'note', ARGV[5])
  return finish('ok')
end

if op == 'sla' then
  -- The SLA timer (router/slatimer.py), holding the shard's timer lease under a.fence: the
  -- targets' outcomes (counted) and the escalation steps due, each carried out only if its id
  -- was not in sla:fired yet (added here, with the effect: once, across timers and restarts);
  -- then the next wake-up. a.seen: the history's last entry id the timer evaluated; a newer one
  -- (a message, a reply meanwhile) means: evaluate again at the next tick.
  local refused = fence_refused('sla', a.fence)
  if refused then return refused end
  local fired = P .. 'sla:fired:' .. cid
  local last = redis.call('XREVRANGE', P .. 'hist:' .. cid, '+', '-', 'COUNT', 1)
  local again = #last == 0 or last[1][1] ~= a.seen
  local done, changed = 0, false
  -- a.todo: outcomes ({outcome = state, ...}) and steps, in the order they happened.
  for _, s in ipairs(a.todo) do
    if s.outcome then
      if redis.call('SADD', fired, s.id) == 1 then
        redis.call('HINCRBY', P .. 'stats', 'sla_' .. s.outcome .. ':' .. s.target, 1)
        if s.outcome == 'breached' then
          hist(cid, 'sla', cjson.encode({breached = s.target, cycle = s.cycle, deadline_ms = s.at}))
          event(cur.group, 'sla_breached', cid, cjson.encode({target = s.target}))
        end
      end
    elseif cur.status ~= 'closed' and redis.call('SADD', fired, s.id) == 1 then
      done = done + 1
      hist(cid, 'sla', cjson.encode({step = s.id, target = s.target, point = s.point, actions = s.actions}))
      for _, act in ipairs(s.actions) do
        local kind, value = act[1], act[2]
        if kind == 'notify' then
          event(cur.group, 'sla_notify', cid, cjson.encode({notify = value, target = s.target, point = s.point}))
          local item = s.items[value]
          if item then outbox_add(cid, item.channel, item.id, item.raw) end
        elseif kind == 'raise_priority' then
          local p = math.max(1, prio - value)
          if p ~= prio then
            set_priority(p, 'sla')
            changed = true
          end
        elseif kind == 'reassign' then
          if cur.agent and cur.agent ~= '' then
            release('sla', 'reassigned')
            changed = true
          end
        elseif kind == 'move_group' then
          if value ~= cur.group then
            move(value, 'sla', 'escalated')
            changed = true
          end
        end
      end
    end
  end
  if changed or again then
    -- The clock moved (a new priority or group) or the history did: evaluate again next tick.
    redis.call('ZADD', P .. 'sla:due', NOWS, cid)
  else
    if cur.status == 'new' and a.due ~= cjson.null and a.due ~= tonumber(cur.due_ms) then
      -- The queue's order follows the policy's first-response deadline (business time).
      redis.call('HSET', c, 'due_ms', num(a.due))
      redis.call('ZADD', P .. 'queue:' .. cur.group, num(prio * 1e13 + a.due), cid)
    end
    if a.next == cjson.null then redis.call('ZREM', P .. 'sla:due', cid)
    else redis.call('ZADD', P .. 'sla:due', num(a.next), cid) end
  end
  return done
end

if cur.status == 'closed' and op ~= 'reopen' then
  return redis.error_reply('CONFLICT conversation ' .. cid .. ' is closed')
end

if op == 'release' then
  if cur.status == 'new' then return redis.error_reply('CONFLICT conversation ' .. cid .. ' is not assigned') end
  release(a.by, a.reason or 'released')
  -- a.count: the assigner's counter of this move (router/assignment.py), per group.
  if a.count then redis.call('HINCRBY', P .. 'stats', a.count .. ':' .. cur.group, 1) end
elseif op == 'reoffer' then
  -- No first reply within the group's time: back to the queue for another agent, only if it is
  -- still the assignment a.token made and nobody answered (a reply makes it 'waiting').
  redis.call('ZREM', P .. 'offers', cid)
  local f = conv_fields(c, 'assign_token', 'offered')
  if cur.status ~= 'assigned' or f.assign_token ~= a.token then return finish('stale') end
  local offered = cjson.decode(f.offered or '[]')
  if type(offered) ~= 'table' then offered = {} end
  if #offered >= tonumber(a.max_hops) then return finish('kept') end
  offered[#offered + 1] = cur.agent
  unassign()
  requeue(cur.group, prio)
  redis.call('HSET', c, 'offered', cjson.encode(offered))
  hist(cid, 'status', cjson.encode({status = 'new', by = 'assign', reason = 'no first reply', agent = cur.agent,
    hop = #offered}))
  event(cur.group, 'reoffered', cid, cjson.encode({agent = cur.agent, hop = #offered}))
  redis.call('HINCRBY', P .. 'stats', 'assign:reoffered:' .. cur.group, 1)
-- The reviewer's moves (router/review.py, a.review = the group it read): only while nobody has
-- claimed or moved the conversation since it read it, else nothing; and never a label, since the
-- model would then learn from its own opinion.
elseif a.review and (cur.status ~= 'new' or cur.group ~= a.review) then
  return finish('stale')
elseif op == 'transfer' then
  -- a.count as for a release, by the group moved from (move sets cur.group to the new one).
  if a.count then redis.call('HINCRBY', P .. 'stats', a.count .. ':' .. cur.group, 1) end
  move(a.group, a.by, a.reason)
  if not a.review then label('transfer', a.group, prio, a.reason) end
  wake()
elseif op == 'priority' then
  local p = tonumber(a.prio)
  set_priority(p, a.by)
  if not a.review then label('priority', cur.group, p) end
  wake()
elseif op == 'on_user' then
  -- Waiting on the user (docs/sla.md): next-response and resolution clocks pause until the user's
  -- next message (route.lua) or this op with on = false; first response never pauses.
  if cur.status == 'new' then
    return redis.error_reply('CONFLICT conversation ' .. cid .. ' is in the queue: claim or answer it first')
  end
  redis.call('HSET', c, 'status', a.on and 'waiting' or 'assigned', 'updated_ms', NOWS)
  hist(cid, 'status', cjson.encode({waiting_on_user = a.on, by = a.by}))
  event(cur.group, 'waiting', cid, cjson.encode({on = a.on, by = a.by}))
  wake()
elseif op == 'close' then
  -- The agent the survey rates: the one who had it, else the one who closes it.
  local rated = (cur.agent or '') ~= '' and cur.agent or a.by
  if cur.status == 'new' then
    dequeue(cid, cur.group)
    served(cid, cur.group, false)
  end
  unassign()
  redis.call('HSET', c, 'status', 'closed', 'agent', '', 'closed_ms', NOWS, 'updated_ms', NOWS)
  -- Re-offer hops count per opening (router/assignment.py); a wait said is for this opening only.
  redis.call('HDEL', c, 'offered', 'wait_est')
  redis.call('ZADD', P .. 'closed', NOWS, cid)  -- the retention sweep's index (router/retention.py)
  hist(cid, 'status', cjson.encode({status = 'closed', by = a.by, reason = a.reason}))
  label('close', cur.group, prio, a.reason)
  event(cur.group, 'closed', cid, cjson.encode({by = a.by}))
  wake()  -- the timer records the targets' outcomes, then forgets the conversation
  -- a.csat (router/conversations.py; absent: surveys off or a reason that skips them): the
  -- survey's delay in ms, by group (-1: this group never surveys); the survey service sends it.
  if a.csat then
    local delay = tonumber(a.csat.groups[cur.group] or a.csat.delay)
    if delay >= 0 then
      redis.call('HSET', c, 'csat_state', 'due', 'csat_agent', rated)
      redis.call('HDEL', c, 'csat_until')
      redis.call('ZADD', P .. 'csat:due', num(NOW + delay), cid)
    end
  end
elseif op == 'reply' then
  -- Answering an unclaimed conversation claims it for the agent who answers.
  if cur.status == 'new' then
    dequeue(cid, cur.group)
    served(cid, cur.group, true)
  end
  if cur.agent ~= a.by then
    unassign()
    redis.call('SADD', P .. 'agent:' .. a.by, cid)
  end
  redis.call('HSET', c, 'status', 'waiting', 'agent', a.by, 'updated_ms', NOWS)
  local item = a.item
  send_reply(cid, cur, item)
  event(cur.group, 'replied', cid, cjson.encode({by = a.by, reply = item.id}))
  wake()
  return finish(item.id)  -- a repeat answers with the first reply's id
elseif op == 'hold' then
  -- An admin's ban from the conversation (router/console): held like a banned sender's message
  -- holds it in route.lua; holding a held one changes nothing.
  if cur.status ~= 'held' then hold_conversation(cid, c, cur, a.reason, a.by) end
elseif op == 'restore' then
  -- A conversation admission control held (route.lua: a banned or muted sender, spam) back in
  -- its queue, with a fresh SLA: its wait starts now (docs/admission.md).
  if cur.status ~= 'held' then return redis.error_reply('CONFLICT conversation ' .. cid .. ' is not held') end
  local held = redis.call('HGET', c, 'held') or ''
  local due = NOW + tonumber(a.sla_ms[cur.prio])
  enqueue(cid, cur.group, prio, due, NOW)
  redis.call('HSET', c, 'status', 'new', 'held', '', 'waiting_ms', NOWS, 'due_ms', num(due), 'updated_ms', NOWS)
  hist(cid, 'status', cjson.encode({status = 'new', by = a.by, reason = 'restored', from = held}))
  event(cur.group, 'created', cid, cjson.encode({prio = prio, by = a.by}))
  wake()
else
  return redis.error_reply('ERR unknown op ' .. op)
end
return finish('ok')
