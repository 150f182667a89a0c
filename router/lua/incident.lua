-- Incidents (router/incidents.py, docs/incidents.md), each op atomic in one shard.
-- ARGV[3] = op, ARGV[4] = JSON arguments. Keys (router/keys.py): incidents:open,
-- incidents:resolving, incident:linked:{id}, incident:sent:{id}, incident:held:{id}:{group},
-- lease:incident, and the conversation's conv:{id}, hist:{id}, queue and waiting zsets.
--
-- A collapsed conversation has the status 'incident': out of its group's queue (claim-next and
-- automatic assignment never see it), in incident:held:{id}:{group} with its queue score. Its
-- field 'incident' names the incident it is linked to, collapsed or not; a conversation is linked
-- to one incident at most. Other scripts may take a collapsed conversation out (a follow-up
-- message queues it, an agent closes it): held entries whose conversation is no longer
-- 'incident' are stale, and every reader here skips and drops them.
local op = ARGV[3]
local a = cjson.decode(ARGV[4])

local function held_key(id, group) return P .. 'incident:held:' .. id .. ':' .. group end

-- Out of the group's queue, under the incident: only a conversation nobody has, waiting in its
-- queue, and never a P1 (it must stay in front of an agent).
local function collapse(cid, id, cur)
  if cur.status ~= 'new' or (cur.agent or '') ~= '' or cur.prio == '1' then return false end
  local score = redis.call('ZSCORE', P .. 'queue:' .. cur.group, cid)
  if not score then return false end
  dequeue(cid, cur.group)
  redis.call('ZADD', held_key(id, cur.group), score, cid)
  redis.call('HSET', P .. 'conv:' .. cid, 'status', 'incident', 'updated_ms', NOWS)
  event(cur.group, 'collapsed', cid, cjson.encode({incident = id}))
  return true
end

if op == 'link' then
  -- a: conv, incident, title, item (the status text's outbox item, in the user's language), or
  -- recollapse = true (a follow-up put a linked conversation back in its queue: collapse it
  -- again, no second status text). Returns linked | collapsed (linked and collapsed) |
  -- recollapsed | kept (a linked one that stays in the queue) | done | other | closed | gone.
  local cid, id = a.conv, a.incident
  if redis.call('SISMEMBER', P .. 'incidents:open', id) == 0 then return 'closed' end
  local c = P .. 'conv:' .. cid
  local cur = conv_fields(c, 'status', 'agent', 'group', 'prio', 'incident', 'channel', 'account', 'ckey',
    'last_platform_id', 'meta')
  if not cur.status then return 'gone' end
  if cur.status == 'closed' then return 'closed' end
  local was = cur.incident or ''
  if was ~= '' then
    if was ~= id then return 'other' end
    if not a.recollapse then return 'done' end
    return collapse(cid, id, cur) and 'recollapsed' or 'kept'
  end
  if a.recollapse then return 'other' end
  redis.call('HSET', c, 'incident', id)
  -- The knowledge base's answerer (lua/answer.lua) leaves a conversation with this field alone.
  redis.call('HSETNX', c, 'kb', 'incident')
  redis.call('SADD', P .. 'incident:linked:' .. id, cid)
  hist(cid, 'incident', cjson.encode({incident = id, title = a.title, linked = true}))
  -- a.wait (a status text with placeholders, docs/waits.md): fallback, the text without an
  -- estimate; unqueued, without any placeholder (an agent has the conversation); w, b, shards.
  local wt = a.wait
  if wt then
    a.item.text = wait_said(cid, c, cur.group, a.item.text, wt.fallback, wt.w, wt.b, wt.shards) or wt.unqueued
  end
  send_reply(cid, cur, a.item)
  redis.call('HINCRBY', P .. 'stats', 'incident:linked', 1)
  event(cur.group, 'linked', cid, cjson.encode({incident = id}))
  return collapse(cid, id, cur) and 'collapsed' or 'linked'
end

if op == 'count' then
  -- The surge detector's counts (router/surge.py): a new conversation's tags, once per
  -- conversation (its field 'tag_counted'), in the minute and hour buckets of NOW. a: conv, tags.
  if redis.call('HSETNX', P .. 'conv:' .. a.conv, 'tag_counted', NOWS) == 0 then return 0 end
  local m = P .. 'tagrate:m:' .. num(math.floor(NOW / 60000))
  local h = P .. 'tagrate:h:' .. num(math.floor(NOW / 3600000))
  for _, tag in ipairs(a.tags) do
    redis.call('HINCRBY', m, tag, 1)
    redis.call('HINCRBY', h, tag, 1)
  end
  redis.call('PEXPIRE', m, 7200000)
  redis.call('PEXPIRE', h, 93600000)
  return #a.tags
end

if op == 'claim' then
  -- An agent who opened the incident takes the most urgent of the group's collapsed
  -- conversations (a.conv: that one). a: incident, group, by. Returns the conversation id or ''.
  local held = held_key(a.incident, a.group)
  while true do
    local cid = a.conv
    if cid and cid ~= '' then
      if redis.call('ZREM', held, cid) == 0 then return '' end
    else
      local head = redis.call('ZPOPMIN', held)
      if #head == 0 then return '' end
      cid = head[1]
    end
    local c = P .. 'conv:' .. cid
    local cur = conv_fields(c, 'status', 'group')
    if cur.status == 'incident' and cur.group == a.group then
      redis.call('HSET', c, 'status', 'assigned', 'agent', a.by, 'assigned_ms', NOWS, 'updated_ms', NOWS,
        'last_agent', a.by)
      redis.call('SADD', P .. 'agent:' .. a.by, cid)
      served(cid, a.group, true)
      hist(cid, 'status', cjson.encode({status = 'assigned', agent = a.by, by = a.by, incident = a.incident}))
      event(a.group, 'claimed', cid, cjson.encode({agent = a.by}))
      return cid
    end
    if a.conv and a.conv ~= '' then return '' end  -- stale: dropped
  end
end

if op == 'prune' then
  -- Drop the stale entries of held zsets (a.incident, a.groups); returns how many.
  local n = 0
  for _, group in ipairs(a.groups) do
    local held = held_key(a.incident, group)
    for _, cid in ipairs(redis.call('ZRANGE', held, 0, -1)) do
      local cur = conv_fields(P .. 'conv:' .. cid, 'status', 'group')
      if cur.status ~= 'incident' or cur.group ~= group then
        redis.call('ZREM', held, cid)
        n = n + 1
      end
    end
  end
  return n
end

if op == 'resolving' then
  -- The resolve action, in each shard: nothing links to the incident from now on, and the
  -- shard's broadcaster takes up its resolution.
  redis.call('SREM', P .. 'incidents:open', a.incident)
  redis.call('SADD', P .. 'incidents:resolving', a.incident)
  return 'ok'
end

if op == 'send' then
  -- The resolution to linked conversations, by the shard's broadcaster holding lease:incident
  -- under a.fence. a: incident, mode (close | requeue), sla_ms (per priority), items {cid: item}.
  -- Each conversation gets it once, whoever sends and however often: its id enters
  -- incident:sent:{id} with the outbox item, in this one step. Returns {sent, skipped}.
  local refused = fence_refused('incident', a.fence)
  if refused then return refused end
  local id = a.incident
  local sent_set = P .. 'incident:sent:' .. id
  local sent, skipped = 0, 0
  for cid, item in pairs(a.items) do
    if redis.call('SADD', sent_set, cid) == 0 then
      skipped = skipped + 1
    else
      local c = P .. 'conv:' .. cid
      local cur = conv_fields(c, 'status', 'agent', 'group', 'prio', 'channel', 'account', 'ckey',
        'last_platform_id', 'meta')
      if not cur.status then
        skipped = skipped + 1  -- deleted by retention since it was linked
      else
        send_reply(cid, cur, item)
        sent = sent + 1
        hist(cid, 'incident', cjson.encode({incident = id, resolved = true, mode = a.mode}))
        -- Only a conversation still collapsed changes state: one an agent took (or a follow-up
        -- queued, or a P1 never collapsed) stays where it is, the agent decides.
        if cur.status == 'incident' then
          redis.call('ZREM', held_key(id, cur.group), cid)
          if a.mode == 'close' then
            redis.call('HSET', c, 'status', 'closed', 'agent', '', 'closed_ms', NOWS, 'updated_ms', NOWS)
            redis.call('HDEL', c, 'wait_est')  -- nobody took it: no real wait to compare
            redis.call('ZADD', P .. 'closed', NOWS, cid)  -- the retention sweep's index
            hist(cid, 'status', cjson.encode({status = 'closed', by = 'incident', reason = 'resolved'}))
            event(cur.group, 'closed', cid, cjson.encode({by = 'incident'}))
          else
            local due = NOW + tonumber(a.sla_ms[cur.prio])
            enqueue(cid, cur.group, tonumber(cur.prio), due, NOW)
            redis.call('HSET', c, 'status', 'new', 'waiting_ms', NOWS, 'due_ms', num(due), 'updated_ms', NOWS)
            hist(cid, 'status', cjson.encode({status = 'new', by = 'incident', reason = 'incident resolved'}))
            event(cur.group, 'reopened', cid, cjson.encode({prio = tonumber(cur.prio)}))
          end
        end
      end
    end
  end
  redis.call('HINCRBY', P .. 'stats', 'incident:resolved_sent', sent)
  return {sent, skipped}
end

if op == 'finish' then
  -- The shard's broadcast is over when every linked conversation is in the sent set.
  local refused = fence_refused('incident', a.fence)
  if refused then return refused end
  local left = redis.call('SDIFF', P .. 'incident:linked:' .. a.incident, P .. 'incident:sent:' .. a.incident)
  if #left > 0 then return 0 end
  redis.call('SREM', P .. 'incidents:resolving', a.incident)
  return 1
end

return redis.error_reply('ERR unknown op ' .. op)
