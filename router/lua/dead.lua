-- Move an entry of a stream the router workers read to the dead-letter stream with its reason,
-- acknowledging it atomically.
-- ARGV[3] = entry id, ARGV[4] = the stream's name (router/keys.py STREAMS: inbox, lane), read by
-- group ROUTER_GROUP, ARGV[5] = reason (the failure recorded for it (failures or lane:failures) wins when ARGV[5] is
-- ''), ARGV[6] = attempts; a shard worker holding a lease adds ARGV[7] = the lease's name and
-- ARGV[8] = its fence (common.lua fence_refused).
-- Returns 0 when the entry was already acknowledged (routed or dead-lettered by another worker).
local refused = ARGV[7] and fence_refused(ARGV[7], ARGV[8])
if refused then return refused end
local entry = ARGV[3]
local stream, failures, waiting = worker_stream(ARGV[4])
if redis.call('XACK', stream, ROUTER_GROUP, entry) == 0 then return 0 end
if waiting then redis.call('DECR', waiting) end
local reason = ARGV[5]
if reason == '' then
  reason = redis.call('HGET', failures, entry) or ('failed ' .. ARGV[6] .. ' times')
end
dead_letter(entry, reason, ARGV[6], stream, failures)
return 1
