-- Remove a consumer from the inbox group if it has nothing pending — checked and done atomically,
-- since XGROUP DELCONSUMER drops a consumer's pending entries (they would never be routed).
-- ARGV[3] = group, ARGV[4] = consumer. Returns 1 when removed, 0 when it has entries pending.
if #redis.call('XPENDING', P .. 'inbox', ARGV[3], '-', '+', 1, ARGV[4]) > 0 then return 0 end
redis.call('XGROUP', 'DELCONSUMER', P .. 'inbox', ARGV[3], ARGV[4])
return 1
