-- Read-only: the state of the conversations behind conversation keys, for the rules'
-- new/follow-up condition. ARGV[3..] = ck suffixes. Returns per key {status, closed_ms}.
local out = {}
for i = 3, #ARGV do
  local cid = redis.call('GET', P .. 'ck:' .. ARGV[i])
  -- A conversation key that cannot be read (corrupt state) reads as new; the route script then
  -- dead-letters that message alone.
  local ok, state = false, nil
  if cid then ok, state = pcall(redis.call, 'HMGET', P .. 'conv:' .. cid, 'status', 'closed_ms') end
  if ok then
    out[#out + 1] = state
  else
    out[#out + 1] = {false, false}
  end
end
return out
