-- Delete conversations closed at or before a cutoff: state, history, delivery records, the
-- knowledge-base answer, SLA records (router/slatimer.py), the archive mark and the
-- conversation-key mapping (when it still names this conversation). Atomic per call, so a message
-- for one of them either comes first (it reopens the conversation, which is then kept) or after
-- (it starts a new conversation).
-- ARGV[3] = cutoff ms, ARGV[4] = batch, ARGV[5] = '1' when closed conversations are archived
-- before they are deleted (router/archive.py), ARGV[6] = due entries that earlier calls of this
-- sweep kept (skipped: they are still at the head of the index), ARGV[7..] = the archive stores
-- to wait for. Index: 'closed' (zset id -> closed ms), kept by the close op (conv.lua) and the
-- reopen (route.lua).
-- With the archive on, a closed conversation is deleted only while each store's archive mark is
-- the digest of what it holds now (conv_digest, lua/common.lua): archived in every store, and not
-- changed since; never while no store is given. Else it stays in the index, and in the
-- archive:again:{store} of each store that lacks it, where that store's archiver finds it.
-- Returns {deleted, index entries examined, kept}.
local function unarchived(cid)
  if ARGV[5] ~= '1' then return false end
  if #ARGV < 7 then return true end
  local digest, lacking = conv_digest(cid), false
  for i = 7, #ARGV do
    if redis.call('HGET', P .. 'archived:' .. ARGV[i], cid) ~= digest then
      redis.call('ZADD', P .. 'archive:again:' .. ARGV[i], 'NX', NOWS, cid)
      lacking = true
    end
  end
  return lacking
end

local due = redis.call('ZRANGEBYSCORE', P .. 'closed', '-inf', ARGV[3], 'LIMIT', tonumber(ARGV[6]), tonumber(ARGV[4]))
local deleted, kept = 0, 0
for _, cid in ipairs(due) do
  local c = P .. 'conv:' .. cid
  local cur = conv_fields(c, 'status', 'channel', 'account', 'ckey')
  local closed = cur.status == 'closed'
  if closed and unarchived(cid) then
    kept = kept + 1
  else
    if closed then
      local ck = P .. 'ck:' .. (cur.channel or '') .. ':' .. (cur.account or '') .. ':' .. (cur.ckey or '')
      if redis.call('GET', ck) == cid then redis.call('DEL', ck) end
      redis.call('DEL', c, P .. 'hist:' .. cid, P .. 'delivery:' .. cid, P .. 'answer:' .. cid, P .. 'sla:fired:' .. cid)
      redis.call('ZREM', P .. 'sla:due', cid)
      deleted = deleted + 1
    end
    for i = 7, #ARGV do
      redis.call('HDEL', P .. 'archived:' .. ARGV[i], cid)
      redis.call('ZREM', P .. 'archive:again:' .. ARGV[i], cid)
    end
    redis.call('ZREM', P .. 'closed', cid)
  end
end
return {deleted, #due, kept}
