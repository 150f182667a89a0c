-- Capacity reservations of automatic assignment, at the home prefix (router/assignment.py): every
-- agent's key is in the home slot, so selecting an agent and taking a unit of its capacity is one
-- atomic step however many assigners run. The conversation itself is in its shard's slot; it is
-- assigned there by conv.lua's 'assign' (step 2), then the reservation is committed or released
-- here (step 3). A reservation that no step 3 ever reaches (a crashed assigner) expires and is
-- settled by the reconciler (op 'settle'), against what the conversation's shard says.
--
-- Keys (router/keys.py): agents, ag:{name} (status, beat, cap:{ch}, n:{ch}, last), load:{name}
-- (conversation id -> "channel token"), resv (conversation id -> JSON), resv:due, rr:{group}.
-- ARGV[3] = op, ARGV[4] = JSON arguments.
local op = ARGV[3]
local a = cjson.decode(ARGV[4])

local function ag(name) return P .. 'ag:' .. name end

local function take(agent, cid, channel, token)
  redis.call('HSET', P .. 'load:' .. agent, cid, channel .. ' ' .. token)
  redis.call('HINCRBY', ag(agent), 'n:' .. channel, 1)
end

-- Give back the unit of capacity `cid` holds of `agent`, only if it is still the one `value`
-- names (a later assignment of the same conversation to the same agent has another token).
local function give(agent, cid, value)
  local load = P .. 'load:' .. agent
  local cur = redis.call('HGET', load, cid)
  if not cur or (value and cur ~= value) then return 0 end
  redis.call('HDEL', load, cid)
  local channel = string.match(cur, '^(%S+)')
  if redis.call('HINCRBY', ag(agent), 'n:' .. channel, -1) < 0 then redis.call('HSET', ag(agent), 'n:' .. channel, 0) end
  return 1
end

local function unreserve(cid)
  redis.call('HDEL', P .. 'resv', cid)
  redis.call('ZREM', P .. 'resv:due', cid)
end

local function reserved_by(cid, token)
  local raw = redis.call('HGET', P .. 'resv', cid)
  if not raw then return nil end
  local r = cjson.decode(raw)
  if token and r.token ~= token then return nil end
  return r
end

-- Step 3 of assignments that step 2 made (a.done: [cid, token] pairs): the unit of capacity stays
-- taken (as load) until the sweep sees the conversation leave the agent. Sent with the next
-- reservation rather than on its own: one round trip less per assignment.
local function commit(done)
  local n = 0
  for _, pair in ipairs(done or {}) do
    if reserved_by(pair[1], pair[2]) then
      unreserve(pair[1])
      n = n + 1
    end
  end
  return n
end

if op == 'commit' then return commit(a.done) end

if op == 'reserve' then
  -- a: cid, channel, group, policy, cands (names, sorted), sticky (name or ''), token, until,
  -- grace_ms, done (commits, above)
  commit(a.done)
  if redis.call('HEXISTS', P .. 'resv', a.cid) == 1 then return '' end  -- another assigner has it in flight
  local best, best_key = nil, nil
  local eligible = {}
  local since = NOW - tonumber(a.grace_ms)
  for i, name in ipairs(a.cands) do
    local f = redis.call('HMGET', ag(name), 'status', 'beat', 'cap:' .. a.channel, 'n:' .. a.channel, 'last')
    local cap, n = tonumber(f[3] or '0'), tonumber(f[4] or '0')
    if f[1] == 'online' and tonumber(f[2] or '0') >= since and n < cap then
      if name == a.sticky then best = name break end
      eligible[#eligible + 1] = name
      if a.policy == 'least_loaded' then
        -- Fewest open relative to capacity; then the one assigned longest ago; then the name.
        local key = {n / cap, tonumber(f[5] or '0'), i}
        if not best_key or key[1] < best_key[1] or (key[1] == best_key[1] and (key[2] < best_key[2]
            or (key[2] == best_key[2] and key[3] < best_key[3]))) then
          best, best_key = name, key
        end
      end
    end
  end
  if #eligible == 0 and not best then return '' end
  if a.policy == 'round_robin' and best ~= a.sticky then
    -- The first eligible agent after the one assigned last, in name order, wrapping around.
    local last = redis.call('GET', P .. 'rr:' .. a.group) or ''
    best = eligible[1]
    for _, name in ipairs(eligible) do
      if name > last then best = name break end
    end
  end
  if a.policy == 'round_robin' then redis.call('SET', P .. 'rr:' .. a.group, best) end
  take(best, a.cid, a.channel, a.token)
  redis.call('HSET', ag(best), 'last', NOWS)
  redis.call('HSET', P .. 'resv', a.cid, cjson.encode({agent = best, token = a.token, channel = a.channel,
    ['until'] = a['until']}))
  redis.call('ZADD', P .. 'resv:due', a['until'], a.cid)
  return best
end

if op == 'release' then
  -- Step 2 did not assign it (taken meanwhile, or expired): the capacity goes back.
  local r = reserved_by(a.cid, a.token)
  if not r then return 0 end
  unreserve(a.cid)
  give(r.agent, a.cid, r.channel .. ' ' .. r.token)
  return 1
end

if op == 'settle' then
  -- An expired reservation (a.assigned: whether the conversation's shard shows it assigned by
  -- this token), judged by the reconciler after the expiry plus the allowed clock skew: the
  -- assign step refuses a reservation past its expiry, so that answer is final.
  local r = reserved_by(a.cid, a.token)
  if not r then return 0 end
  unreserve(a.cid)
  if not a.assigned then give(r.agent, a.cid, r.channel .. ' ' .. r.token) end
  return 1
end

if op == 'free' then
  -- The sweep saw these conversations (a.items: cid -> value read) no longer open with a.agent.
  -- Only those it read before the reservations (their step 2 happened before its reads): one
  -- reserved meanwhile, or taken again since (another value), is not touched.
  local freed = {}
  for cid, value in pairs(a.items) do
    local r = reserved_by(cid)
    if not (r and r.agent == a.agent) and give(a.agent, cid, value) == 1 then freed[#freed + 1] = cid end
  end
  return freed
end

if op == 'adopt' then
  -- Conversations open with the agent that its load does not count (claimed by hand, or
  -- assigned before the policy): counted now, so that capacity holds for what it really has.
  local adopted = {}
  for cid, channel in pairs(a.items) do
    if redis.call('HSETNX', P .. 'load:' .. a.agent, cid, channel .. ' adopted') == 1 then
      redis.call('HINCRBY', ag(a.agent), 'n:' .. channel, 1)
      adopted[#adopted + 1] = cid
    end
  end
  return adopted
end

return redis.error_reply('ERR unknown op ' .. op)
