-- Satisfaction surveys (router/csat.py), each op atomic in the conversation's shard.
-- ARGV[3] = op, ARGV[4] = JSON arguments. Keys (router/keys.py): conv:{id} (the survey's fields
-- csat_state, csat_id, csat_agent, csat_rating, csat_until), hist:{id}, csat:due,
-- csat:asked:{channel}:{account}:{user}, lease:csat, stats. conv.lua's close schedules a survey
-- (csat_state 'due'); route.lua takes the comment (common.lua csat_comment).
--
-- csat_state: due -> asked (sent) -> rated -> commenting (the follow-up asked) -> done;
-- or skipped (reopened before it was due, or the user was asked within the cooldown).
local op = ARGV[3]
local a = cjson.decode(ARGV[4])

if op == 'send' then
  -- a: conv, fence (the service's lease on this shard), survey (its id, in the buttons' data),
  -- item (the question, an outbox item without its address), cooldown_ms. Sends the survey once:
  -- the due entry, the check and the send are one step, so a crash or a repeat sends nothing twice.
  local refused = fence_refused('csat', a.fence)
  if refused then return refused end
  local cid = a.conv
  local due = redis.call('ZSCORE', P .. 'csat:due', cid)
  -- Closed again since it was read (a later due time), or taken by a step before this one.
  if not due or tonumber(due) > NOW then return 'later' end
  redis.call('ZREM', P .. 'csat:due', cid)
  local c = P .. 'conv:' .. cid
  local cur = conv_fields(c, 'status', 'group', 'csat_state', 'sender_id', 'channel', 'account', 'ckey',
    'last_platform_id', 'meta')
  if not cur.status then return 'gone' end  -- deleted by retention meanwhile
  if cur.csat_state ~= 'due' then return 'done' end
  local s = P .. 'stats'
  if cur.status ~= 'closed' then
    redis.call('HSET', c, 'csat_state', 'skipped')
    redis.call('HINCRBY', s, 'csat:skipped:reopened', 1)
    return 'reopened'
  end
  local asked = P .. 'csat:asked:' .. cur.channel .. ':' .. cur.account .. ':' .. (cur.sender_id or '')
  if redis.call('EXISTS', asked) == 1 then
    redis.call('HSET', c, 'csat_state', 'skipped')
    redis.call('HINCRBY', s, 'csat:skipped:cooldown', 1)
    return 'cooldown'
  end
  send_reply(cid, cur, a.item)
  redis.call('HSET', c, 'csat_state', 'asked', 'csat_id', a.survey)
  if tonumber(a.cooldown_ms) > 0 then redis.call('SET', asked, '1', 'PX', num(a.cooldown_ms)) end
  redis.call('HINCRBY', s, 'csat:sent', 1)
  redis.call('HINCRBY', s, 'csat:sent:group:' .. cur.group, 1)
  return 'sent'
end

if op == 'press' then
  -- a: conv and survey (from the button's data), rating (1-5), user (who pressed), follow_up (the
  -- question's outbox item, for a low rating; absent otherwise), window_ms. The first press of a
  -- survey counts; a later one (another button, the same one again) is 'late' and changes nothing.
  local cid = a.conv
  local c = P .. 'conv:' .. cid
  local cur = conv_fields(c, 'status', 'group', 'csat_state', 'csat_id', 'csat_agent', 'sender_id', 'language',
    'channel', 'account', 'ckey', 'last_platform_id', 'meta')
  if not cur.status or cur.csat_id ~= a.survey then return 'unknown' end
  local s = P .. 'stats'
  -- In a group chat anyone sees the buttons: only the user asked rates (an e-mail link does not
  -- say who opened it: its holder is the user).
  if a.user ~= 'link' and (cur.sender_id or '') ~= '' and a.user ~= cur.sender_id then
    redis.call('HINCRBY', s, 'csat:foreign', 1)
    return 'foreign'
  end
  if cur.csat_state ~= 'asked' then
    redis.call('HINCRBY', s, 'csat:late', 1)
    return 'late'
  end
  local rating = tonumber(a.rating)
  local agent = cur.csat_agent or ''
  local lang = cur.language or ''
  hist(cid, 'csat', cjson.encode({survey = a.survey, rating = rating, comment = cjson.null, at = NOW,
    agent = agent, group = cur.group, channel = cur.channel, language = lang}))
  redis.call('HSET', c, 'csat_state', 'rated', 'csat_rating', a.rating)
  local r = ':' .. a.rating
  redis.call('HINCRBY', s, 'csat:rating' .. r, 1)
  redis.call('HINCRBY', s, 'csat:group:' .. cur.group .. r, 1)
  if agent ~= '' then redis.call('HINCRBY', s, 'csat:agent:' .. agent .. r, 1) end
  event(cur.group, 'csat', cid, cjson.encode({rating = rating, agent = agent}))
  -- The follow-up only while the conversation stays closed: in a reopened one the user's next
  -- message is an ordinary message.
  if a.follow_up and cur.status == 'closed' then
    send_reply(cid, cur, a.follow_up)
    redis.call('HSET', c, 'csat_state', 'commenting', 'csat_until', num(NOW + tonumber(a.window_ms)))
    redis.call('HINCRBY', s, 'csat:follow_ups', 1)
    return 'follow-up'
  end
  return 'rated'
end

return redis.error_reply('ERR unknown op ' .. op)
