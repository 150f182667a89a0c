-- Send a failed reply again (router/outbox.py ``retry_failed``; `switchboard outbox retry`).
-- ARGV[3] = conversation id, ARGV[4] = reply id, ARGV[5] = channel, ARGV[6] = the outbox item
-- (JSON, as first sent), ARGV[7] = the history entry (JSON). Only a reply whose recorded outcome is
-- 'failed' goes back to its outbox, its record reset to 'queued' in the same step: a sender then
-- takes it (lua/lease.lua refuses replies with an outcome) and records the new outcome (conv.lua
-- keeps the first outcome only). Returns 'ok', or 'skip' when the reply is not failed (any more).
local cid, reply = ARGV[3], ARGV[4]
if redis.call('HGET', P .. 'delivery:' .. cid, reply) ~= 'failed' then return 'skip' end
outbox_add(cid, ARGV[5], reply, ARGV[6])
hist(cid, 'delivery', ARGV[7])
local group = redis.call('HGET', P .. 'conv:' .. cid, 'group')
if group then event(group, 'delivery', cid, ARGV[7]) end
return 'ok'
