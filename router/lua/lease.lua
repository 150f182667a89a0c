-- Whether an outbox sender may (still) send a reply (router/outbox.py), checked before each
-- attempt. ARGV[3] = channel, ARGV[4] = outbox entry id, ARGV[5] = consumer, ARGV[6] =
-- conversation id, ARGV[7] = reply id. Returns
--   'done': the reply's outcome is recorded already; the entry is acknowledged and deleted;
--   'lost': the entry is not this consumer's any more (another sender reclaimed it);
--   'ok':   it is this consumer's, its idle time reset so that no other sender reclaims it.
local box = P .. 'outbox:' .. ARGV[3]
local entry = ARGV[4]
local status = redis.call('HGET', P .. 'delivery:' .. ARGV[6], ARGV[7])
if status == 'delivered' or status == 'failed' then
  redis.call('XACK', box, SENDER_GROUP, entry)
  redis.call('XDEL', box, entry)
  return 'done'
end
local pending = redis.call('XPENDING', box, SENDER_GROUP, entry, entry, 1)
if #pending == 0 or pending[1][2] ~= ARGV[5] then return 'lost' end
redis.call('XCLAIM', box, SENDER_GROUP, ARGV[5], 0, entry, 'JUSTID')
return 'ok'
