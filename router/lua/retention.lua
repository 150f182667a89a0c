-- Delete conversations closed at or before a cutoff: state, history, delivery records, the
-- knowledge-base answer, SLA records (router/slatimer.py), the archive mark and the
-- conversation-key mapping (when it still names this conversation). Atomic per call, so a message
-- for one of them either comes first (it reopens the conversation, which is then kept) or after
-- (it starts a new conversation).
-- ARGV[3] = cutoff ms, ARGV[4] = batch, ARGV[5] = '1' when closed conversations are archived
-- before they are deleted (router/archive.py), ARGV[6] = due entries that earlier calls of this
-- sweep kept (skipped: they are still at the head of the index). Index: 'closed' (zset id ->
-- closed ms), kept by the close op (conv.lua) and the reopen (route.lua).
-- With the archive on, a closed conversation is deleted only while its archive mark is the
-- digest of what it holds now (conv_digest, lua/common.lua): archived, and not changed since.
-- Else it stays, in the index and in archive:again, where the archiver finds it.
-- Returns {deleted, index entries examined, kept}.
local due = redis.call('ZRANGEBYSCORE', P .. 'closed', '-inf', ARGV[3], 'LIMIT', tonumber(ARGV[6]), tonumber(ARGV[4]))
local deleted, kept = 0, 0
for _, cid in ipairs(due) do
  local c = P .. 'conv:' .. cid
  local cur = conv_fields(c, 'status', 'channel', 'account', 'ckey')
  local closed = cur.status == 'closed'
  if closed and ARGV[5] == '1' and redis.call('HGET', P .. 'archived', cid) ~= conv_digest(cid) then
    redis.call('ZADD', P .. 'archive:again', 'NX', NOWS, cid)
    kept = kept + 1
  else
    if closed then
      local ck = P .. 'ck:' .. (cur.channel or '') .. ':' .. (cur.account or '') .. ':' .. (cur.ckey or '')
      if redis.call('GET', ck) == cid then redis.call('DEL', ck) end
      redis.call('DEL', c, P .. 'hist:' .. cid, P .. 'delivery:' .. cid, P .. 'answer:' .. cid, P .. 'sla:fired:' .. cid)
      redis.call('ZREM', P .. 'sla:due', cid)
      deleted = deleted + 1
    end
    redis.call('HDEL', P .. 'archived', cid)
    redis.call('ZREM', P .. 'archive:again', cid)
    redis.call('ZREM', P .. 'closed', cid)
  end
end
return {deleted, #due, kept}
