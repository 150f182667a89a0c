-- Snapshots of closed conversations for archive store ARGV[3] (router/archive.py). ARGV[4..] =
-- their ids. For each, in order: {id, 'open'} when it is not closed (reopened, or deleted);
-- {id, 'same'} when the store's archive mark (archived:{store}: id -> digest) is the digest of
-- what it holds now; else {id, 'snap', digest, state (HGETALL), delivery records (HGETALL),
-- history (XRANGE)}, read in one go: the digest is that of exactly what is archived. Reads only;
-- the archiver marks it archived once the store committed it.
local marks = P .. 'archived:' .. ARGV[3]
local out = {}
for i = 4, #ARGV do
  local cid = ARGV[i]
  local c = P .. 'conv:' .. cid
  if redis.call('HGET', c, 'status') ~= 'closed' then
    out[#out + 1] = {cid, 'open'}
  else
    local digest = conv_digest(cid)
    if redis.call('HGET', marks, cid) == digest then
      out[#out + 1] = {cid, 'same'}
    else
      out[#out + 1] = {cid, 'snap', digest, redis.call('HGETALL', c), redis.call('HGETALL', P .. 'delivery:' .. cid),
        redis.call('XRANGE', P .. 'hist:' .. cid, '-', '+')}
    end
  end
end
return out
