-- Fenced leases (router/leases.py): one owner at a time for a named resource (an adapter's
-- account, a shard), judged by the caller's clock (NOW, ARGV[2]). ARGV[3] = operation,
-- ARGV[4] = lease name, ARGV[5] = owner token; then per operation:
--   acquire TTL_MS        -> {1, owner, fence, until} when free, expired or already this
--                            owner's; {0, holder, its fence, until} when another owner holds it
--   renew   FENCE TTL_MS  -> 1, its expiry pushed to NOW + TTL; 0 when it is not held so (lost)
--   release FENCE         -> 1 when it was held so and is now free; 0 otherwise
--   check   FENCE         -> 1 while the lease is held under FENCE (any owner token), else 0
--   holder                -> {owner, fence, until}, or {} when free or expired
-- Keys: lease:{name} (hash: owner, fence, until; PX TTL too, so a dead holder's key goes even if
-- no clock ever judges it again) and fence:{name} (the last fence handed out: no TTL, so a fence
-- is never handed out twice for one name).
local op, name, owner = ARGV[3], ARGV[4], ARGV[5]
local key = P .. 'lease:' .. name
local cur = redis.call('HMGET', key, 'owner', 'fence', 'until')
local held = cur[1] and tonumber(cur[3]) > NOW

if op == 'acquire' then
  local ttl = tonumber(ARGV[6])
  if held and cur[1] ~= owner then return {0, cur[1], tonumber(cur[2]), tonumber(cur[3])} end
  local fence
  if held then
    fence = tonumber(cur[2])  -- its owner asking again (its first reply was lost): same fence
  else
    fence = redis.call('INCR', P .. 'fence:' .. name)
  end
  local expiry = NOW + ttl
  redis.call('HSET', key, 'owner', owner, 'fence', fence, 'until', num(expiry))
  redis.call('PEXPIRE', key, ttl)
  return {1, owner, fence, expiry}
elseif op == 'renew' then
  if not (held and cur[1] == owner and cur[2] == ARGV[6]) then return 0 end
  local ttl = tonumber(ARGV[7])
  redis.call('HSET', key, 'until', num(NOW + ttl))
  redis.call('PEXPIRE', key, ttl)
  return 1
elseif op == 'release' then
  -- Also past its expiry: the key is still this owner's, and nobody else was handed a fence.
  if cur[1] ~= owner or cur[2] ~= ARGV[6] then return 0 end
  redis.call('DEL', key)
  return 1
elseif op == 'check' then
  if held and cur[2] == ARGV[6] then return 1 end
  return 0
elseif op == 'holder' then
  if not held then return {} end
  return {cur[1], tonumber(cur[2]), tonumber(cur[3])}
end
return redis.error_reply('ERR fenced_lease: unknown operation ' .. tostring(op))
