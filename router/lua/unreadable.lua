-- Keep an input a channel cannot read in the dead-letter stream (router/inbox.py Inbox.unreadable),
-- once per platform id: a batch read again after a failure part way through it (Redis away
-- between two of its updates) does not keep its first ones a second time.
-- ARGV[3] = the source and the input's platform id (the dedup key's suffix), ARGV[4] = dedup TTL s,
-- ARGV[5] = reason, ARGV[6] = the input, JSON (secrets masked).
-- Returns the new entry id, or false when it was kept before. The fields are the route script's
-- dead letters' (common.lua dead_letter), so `switchboard dead list` reads both alike.
local dk = P .. 'unreadable:' .. ARGV[3]
if redis.call('EXISTS', dk) == 1 then return false end
local id = redis.call('XADD', P .. 'dead', '*', 'entry', '', 'reason', ARGV[5], 'payload', '',
  'attempts', '0', 'at', NOWS, 'field:original', ARGV[6])
redis.call('HINCRBY', P .. 'stats', 'dead', 1)
redis.call('SET', dk, '1', 'EX', ARGV[4])
return id
