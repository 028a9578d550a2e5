-- Delete finished jobs of one queue whose retention ran out.
-- KEYS: 1 done, 2 index:completed, 3 index:failed, 4 index:cancelled.
-- ARGV: 1 now, 2 job key prefix, 3 retention (s), 4 cap.
-- Returns {deleted records, removed ids}.
local now, now_s = clock(ARGV[1])
local prefix = ARGV[2]
local old = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[3]),
  'LIMIT', 0, tonumber(ARGV[4]))
local deleted = 0
for _, id in ipairs(old) do
  -- A record may already be gone through its own TTL; the indexes still hold it.
  deleted = deleted + redis.call('DEL', prefix .. id)
  for k = 1, 4 do
    redis.call('ZREM', KEYS[k], id)
  end
end
return {deleted, old}
