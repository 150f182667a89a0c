-- What is in flight on a stream read by a consumer group (router/backlog.py), in one snapshot.
-- ARGV[3] = the stream's key after the prefix, ARGV[4] = group, ARGV[5] = most entries counted.
-- Returns {length, lag, pending, id of the oldest pending entry or ''}. Lag = entries the group
-- has not read yet: XINFO GROUPS reports it from Redis 7 (not always: nil after deletions);
-- otherwise the entries after the group's last-delivered id are counted here, up to ARGV[5].
local key = P .. ARGV[3]
local group = ARGV[4]
local cap = tonumber(ARGV[5])
if redis.call('EXISTS', key) == 0 then return {0, 0, 0, ''} end
local length = redis.call('XLEN', key)
local last, lag
for _, g in ipairs(redis.call('XINFO', 'GROUPS', key)) do
  local f = {}
  for i = 1, #g, 2 do f[g[i]] = g[i + 1] end
  if f['name'] == group then last, lag = f['last-delivered-id'], f['lag'] end
end
if not last then return {length, length, 0, ''} end
if type(lag) ~= 'number' then
  lag = 0
  if last == '0-0' then
    lag = length
  else
    local from = '(' .. last
    while lag < cap do
      local batch = redis.call('XRANGE', key, from, '+', 'COUNT', 500)
      lag = lag + #batch
      if #batch < 500 then break end
      from = '(' .. batch[#batch][1]
    end
    lag = math.min(lag, cap)
  end
end
local summary = redis.call('XPENDING', key, group)
return {length, lag, summary[1], summary[2] or ''}
