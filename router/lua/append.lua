-- Append an envelope to the inbox unless this platform message was appended before.
-- ARGV[3] = dedup key suffix (channel:account:platform id), ARGV[4] = dedup TTL s,
-- ARGV[5] = MAXLEN (approximate), ARGV[6] = envelope JSON, ARGV[7] = channel.
-- Returns {1, entry id} for a new entry, {0, entry id of the first append} for a duplicate.
local dk = P .. 'dedup:' .. ARGV[3]
local existing = redis.call('GET', dk)
if existing then return {0, existing} end
local id = redis.call('XADD', P .. 'inbox', 'MAXLEN', '~', ARGV[5], '*', 'env', ARGV[6])
redis.call('SET', dk, id, 'EX', ARGV[4])
redis.call('HINCRBY', P .. 'stats', 'in:' .. ARGV[7], 1)
return {1, id}
