-- Knowledge-base answers to users (router/answerer.py), each op atomic in the conversation's shard.
-- ARGV[3] = op, ARGV[4] = JSON arguments. Keys (router/keys.py): conv:{id}, hist:{id},
-- answer:{id}, answered, answers:shadow, answers:lock, stats; the outcome bookkeeping is
-- common.lua's answer_outcome, shared with route.lua (a follow-up message reopens).
--
-- The conversation's field 'kb' marks that the answerer decided on it (sent, declined, taken,
-- shadow): an op repeated after a crash (the event read again) changes and counts nothing twice.
local op = ARGV[3]
local a = cjson.decode(ARGV[4])

-- Close an answered conversation by the bot: a user's "this solved it", or silence.
local function close_answered(cid, group)
  redis.call('HSET', P .. 'conv:' .. cid, 'status', 'closed', 'agent', '', 'closed_ms', NOWS, 'updated_ms', NOWS)
  redis.call('ZADD', P .. 'closed', NOWS, cid)  -- the retention sweep's index (router/retention.py)
  hist(cid, 'status', cjson.encode({status = 'closed', by = 'kb', reason = 'resolved'}))
  event(group, 'closed', cid, '{"by":"kb"}')
end

if op == 'answer' or op == 'decline' or op == 'shadow' then
  -- a: conv, group (of the event), lang (the user's: the counters'); 'answer': item and record;
  -- 'decline': reason; 'shadow': the record's fields when it would answer, and shadow_max.
  local cid = a.conv
  local c = P .. 'conv:' .. cid
  local cur = conv_fields(c, 'status', 'agent', 'messages', 'group', 'channel', 'account', 'ckey',
    'last_platform_id', 'meta')
  if not cur.status then return 'gone' end
  if redis.call('HSETNX', c, 'kb', op) == 0 then return 'done' end
  if op == 'shadow' then
    redis.call('HINCRBY', P .. 'stats', 'kb:shadow:eligible', 1)
    if a.article then
      redis.call('XADD', P .. 'answers:shadow', 'MAXLEN', '~', a.shadow_max, '*', 'conv', cid, 'group', cur.group,
        'article', a.article, 'lang', a.lang, 'score', a.score, 'gap', a.gap, 'kb', a.kb, 'at', NOWS)
      kb_count('shadow:would', a.lang, a.article, 1)
    end
    return 'recorded'
  end
  redis.call('HINCRBY', P .. 'stats', 'kb:eligible', 1)
  redis.call('HINCRBY', P .. 'stats', 'kb:eligible:lang:' .. a.lang, 1)
  if op == 'decline' then
    redis.call('HINCRBY', P .. 'stats', 'kb:declined:' .. a.reason, 1)
    return 'declined'
  end
  -- Only a conversation nobody touched since its first message, still in the group it was
  -- decided for: an agent who claimed first wins, and so does the reviewer's move.
  if cur.status ~= 'new' or (cur.agent or '') ~= '' or cur.messages ~= '1' or cur.group ~= a.group then
    redis.call('HSET', c, 'kb', 'taken')
    redis.call('HINCRBY', P .. 'stats', 'kb:taken', 1)
    return 'taken'
  end
  dequeue(cid, cur.group)
  redis.call('HSET', c, 'status', 'answered', 'updated_ms', NOWS)
  redis.call('HDEL', c, 'wait_est')  -- answered without an agent: a wait said is not compared (docs/waits.md)
  local r = a.record
  redis.call('HSET', P .. 'answer:' .. cid, 'id', r.id, 'article', r.article, 'lang', r.lang, 'variant', r.variant,
    'score', r.score,
    'gap', r.gap, 'kb', r.kb, 'group', cur.group, 'at', NOWS, 'outcome', '')
  redis.call('ZADD', P .. 'answered', NOWS, cid)
  hist(cid, 'answer', cjson.encode(r))
  send_reply(cid, cur, a.item)
  kb_count('answered', r.lang, r.article, 1)
  event(cur.group, 'answered', cid, cjson.encode({article = r.article}))
  return 'sent'
end

if op == 'press' then
  -- a: ref (channel:account:conversation key of the press), answer (id in the button), choice
  -- (solved | human), user, sla_ms. A press names its answer: one of an older conversation of
  -- the same chat, or forged data, finds no answer of that id and changes nothing.
  local cid = redis.call('GET', P .. 'ck:' .. a.ref)
  if not cid then return 'unknown' end
  local rec = redis.call('HMGET', P .. 'answer:' .. cid, 'id', 'outcome')
  if rec[1] ~= a.answer then return 'unknown' end
  local was = rec[2] or ''
  if was ~= '' and was ~= 'assumed' then return 'late' end  -- the first outcome stands
  local c = P .. 'conv:' .. cid
  local cur = conv_fields(c, 'status', 'group', 'prio', 'due_ms')
  hist(cid, 'press', cjson.encode({answer = a.answer, choice = a.choice, user = a.user}))
  if a.choice == 'solved' then
    if cur.status == 'answered' then close_answered(cid, cur.group) end
    answer_outcome(cid, 'confirmed')
    return 'confirmed'
  end
  -- "Talk to a person": into the queue at once, with a fresh SLA; also after an assumed close.
  if cur.status == 'answered' or cur.status == 'closed' then
    local prio = tonumber(cur.prio)
    local due = NOW + tonumber(a.sla_ms[cur.prio])
    enqueue(cid, cur.group, prio, due, NOW)
    redis.call('HSET', c, 'status', 'new', 'agent', '', 'waiting_ms', NOWS, 'due_ms', num(due), 'updated_ms', NOWS)
    if cur.status == 'closed' then redis.call('ZREM', P .. 'closed', cid) end
    hist(cid, 'status', cjson.encode({status = 'new', by = 'kb', reason = 'asked for a person'}))
    event(cur.group, 'reopened', cid, '{"prio":' .. cur.prio .. '}')
  end
  answer_outcome(cid, 'human')
  return 'human'
end

if op == 'sweep' then
  -- a: cutoff (ms: answered at or before it and still silent), batch, owner, lock_ms. One
  -- sweeper at a time per shard: the lock is its owner's until it expires.
  local lock = P .. 'answers:lock'
  if not redis.call('SET', lock, a.owner, 'NX', 'PX', a.lock_ms) and redis.call('GET', lock) ~= a.owner then
    return {-1, 0}
  end
  redis.call('PEXPIRE', lock, a.lock_ms)
  local due = redis.call('ZRANGEBYSCORE', P .. 'answered', '-inf', a.cutoff, 'LIMIT', 0, a.batch)
  local closed = 0
  for _, cid in ipairs(due) do
    local cur = conv_fields(P .. 'conv:' .. cid, 'status', 'group')
    if cur.status == 'answered' then
      close_answered(cid, cur.group)
      answer_outcome(cid, 'assumed')
      closed = closed + 1
    else
      -- An agent took it over (a reply, a transfer): no outcome to assume.
      redis.call('ZREM', P .. 'answered', cid)
    end
  end
  return {closed, #due}
end

return redis.error_reply('ERR unknown op ' .. op)
