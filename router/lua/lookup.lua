-- Read-only: the state of the conversations behind conversation keys, for the rules'
-- new/follow-up condition. ARGV[3..] = ck suffixes. Returns per key {status, closed_ms}.
local out = {}
for i = 3, #ARGV do
  local cid = redis.call('GET', P .. 'ck:' .. ARGV[i])
  if cid then
    out[#out + 1] = redis.call('HMGET', P .. 'conv:' .. cid, 'status', 'closed_ms')
  else
    out[#out + 1] = {false, false}
  end
end
return out
