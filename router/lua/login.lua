-- One login (or password-form) attempt, counted BEFORE the password is checked, so that parallel
-- requests cannot all pass a check made before any of them failed. Standalone (no common.lua).
-- KEYS: 1 per (user, address) counter, 2 per address counter, 3 per user slow-down hash
-- ARGV: now_ms, window_ms, pair_limit, ip_limit, user_free, max_delay_ms
-- Returns 0 when the attempt may go ahead, else the milliseconds to wait.
local now, window = tonumber(ARGV[1]), tonumber(ARGV[2])

local function over(key, limit)
  local n = redis.call('INCR', key)
  if n == 1 then redis.call('PEXPIRE', key, window) end
  if n > limit then
    local ttl = redis.call('PTTL', key)
    if ttl > 0 then return ttl end
    return window
  end
  return 0
end

local wait = over(KEYS[2], tonumber(ARGV[4]))
if wait > 0 then return wait end
wait = over(KEYS[1], tonumber(ARGV[3]))
if wait > 0 then return wait end

-- The user's own counter slows guessing from many addresses down instead of locking the account
-- for everyone: past user_free attempts, each one must wait twice as long as the one before.
local nxt = tonumber(redis.call('HGET', KEYS[3], 'next') or '0')
if now < nxt then return nxt - now end
local n = redis.call('HINCRBY', KEYS[3], 'n', 1)
local free = tonumber(ARGV[5])
if n > free then
  redis.call('HSET', KEYS[3], 'next', now + math.min(1000 * 2 ^ (n - free - 1), tonumber(ARGV[6])))
end
redis.call('PEXPIRE', KEYS[3], window)
return 0
