-- An impostor case (router/impostors.py): one member of one bot account, keys laid out in router/keys.py.
-- ARGV[3] = op ("report" | "decide"), ARGV[4] = case id (platform:account:user), ARGV[5] = log cap.
-- report: ARGV[6] = the case's fields as JSON (names, level, reason, staff ...), ARGV[7] = its names (JSON).
--   A case a moderator decided stays decided while the member keeps the names it was decided on;
--   new names open it again. Returns {status, opened (1 when this report opened it)}.
-- decide: ARGV[6] = "dismissed" | "confirmed", ARGV[7] = who. Returns the previous status.
local key = P .. 'impostors:case:' .. ARGV[4]
local open = P .. 'impostors:open'
local log = P .. 'impostors:log'
local op = ARGV[3]

if op == 'report' then
  local cur = redis.call('HMGET', key, 'status', 'names')
  if cur[1] and cur[1] ~= 'open' and cur[2] == ARGV[7] then
    redis.call('HINCRBY', key, 'seen', 1)
    redis.call('HSET', key, 'last_seen', NOWS)
    return {cur[1], 0}
  end
  local fields = cjson.decode(ARGV[6])
  for name, value in pairs(fields) do redis.call('HSET', key, name, value) end
  redis.call('HSET', key, 'names', ARGV[7], 'last_seen', NOWS)
  if cur[1] == 'open' then
    redis.call('HINCRBY', key, 'seen', 1)
    return {'open', 0}
  end
  redis.call('HSET', key, 'status', 'open', 'first_seen', NOWS, 'seen', 1)
  redis.call('HDEL', key, 'decided_by', 'decided_at')
  redis.call('ZADD', open, NOW, ARGV[4])
  redis.call('XADD', log, 'MAXLEN', '~', ARGV[5], '*', 'event',
    cjson.encode({case = ARGV[4], event = 'opened', level = fields.level, names = ARGV[7], at = NOW}))
  return {'open', 1}
end

if op == 'decide' then
  local status = redis.call('HGET', key, 'status')
  if not status then return redis.error_reply('NOTFOUND no impostor case ' .. ARGV[4] .. ' (switchboard impostors list shows the open ones)') end
  redis.call('HSET', key, 'status', ARGV[6], 'decided_by', ARGV[7], 'decided_at', NOWS)
  redis.call('ZREM', open, ARGV[4])
  redis.call('XADD', log, 'MAXLEN', '~', ARGV[5], '*', 'event',
    cjson.encode({case = ARGV[4], event = ARGV[6], by = ARGV[7], at = NOW}))
  return status
end

return redis.error_reply('unknown op ' .. op)
