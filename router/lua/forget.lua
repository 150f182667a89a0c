-- Remove a consumer from a router group if it has nothing pending — checked and done atomically,
-- since XGROUP DELCONSUMER drops a consumer's pending entries (they would never be routed).
-- ARGV[3] = group, ARGV[4] = consumer, ARGV[5] = the stream's name (router/keys.py STREAMS;
-- absent: inbox). Returns 1 when removed, 0 when it has entries pending.
local stream = P .. (ARGV[5] or 'inbox')
if #redis.call('XPENDING', stream, ARGV[3], '-', '+', 1, ARGV[4]) > 0 then return 0 end
redis.call('XGROUP', 'DELCONSUMER', stream, ARGV[3], ARGV[4])
return 1
