-- Delete conversations closed at or before a cutoff: state, history, delivery records, the
-- knowledge-base answer, SLA records (router/slatimer.py) and the conversation-key mapping (when
-- it still names this conversation). Atomic per call, so a message
-- for one of them either comes first (it reopens the conversation, which is then kept) or after
-- (it starts a new conversation).
-- ARGV[3] = cutoff ms, ARGV[4] = batch. Index: 'closed' (zset id -> closed ms), kept by the close
-- op (conv.lua) and the reopen (route.lua). Returns {deleted, index entries examined}.
local due = redis.call('ZRANGEBYSCORE', P .. 'closed', '-inf', ARGV[3], 'LIMIT', 0, tonumber(ARGV[4]))
local deleted = 0
for _, cid in ipairs(due) do
  local c = P .. 'conv:' .. cid
  local cur = conv_fields(c, 'status', 'channel', 'account', 'ckey')
  if cur.status == 'closed' then
    local ck = P .. 'ck:' .. (cur.channel or '') .. ':' .. (cur.account or '') .. ':' .. (cur.ckey or '')
    if redis.call('GET', ck) == cid then redis.call('DEL', ck) end
    redis.call('DEL', c, P .. 'hist:' .. cid, P .. 'delivery:' .. cid, P .. 'answer:' .. cid, P .. 'sla:fired:' .. cid)
    redis.call('ZREM', P .. 'sla:due', cid)
    deleted = deleted + 1
  end
  redis.call('ZREM', P .. 'closed', cid)
end
return {deleted, #due}
