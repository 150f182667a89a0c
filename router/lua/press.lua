-- Append a button press (router/actions.py) unless this platform press was appended before.
-- ARGV[3] = dedup key suffix (channel:account:press id), ARGV[4] = dedup TTL s,
-- ARGV[5] = the stream's cap (entries, approximate), ARGV[6] = the press, JSON.
-- Returns the new entry id, or false for a press appended before.
local dk = P .. 'pressed:' .. ARGV[3]
if redis.call('EXISTS', dk) == 1 then return false end
local id = redis.call('XADD', P .. 'actions', 'MAXLEN', '~', ARGV[5], '*', 'press', ARGV[6])
redis.call('SET', dk, '1', 'EX', ARGV[4])
return id
