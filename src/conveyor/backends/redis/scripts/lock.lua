#!lua flags=allow-oom
-- Take or extend a leader lock; return its fencing token, or false if another owner
-- holds it. The token lives in its own key without expiry, so it only ever grows.
-- KEYS: 1 lock hash, 2 token counter. ARGV: 1 now, 2 owner, 3 ttl (s), 4 "release".
local now = clock(ARGV[1])
local f = redis.call('HMGET', KEYS[1], 'o', 'x', 'k')
local owner, expiry, token = f[1], tonumber(f[2] or '0'), f[3]
if ARGV[4] == 'release' then
  if owner == ARGV[2] then
    redis.call('DEL', KEYS[1])
  end
  return false
end
if owner and owner ~= ARGV[2] and expiry > now then
  return false
end
if not (owner == ARGV[2] and expiry > now) then
  token = tostring(redis.call('INCR', KEYS[2]))
end
redis.call('HSET', KEYS[1], 'o', ARGV[2], 'x', fmt(now + tonumber(ARGV[3])), 'k', token)
-- A safety net only: ownership is judged by the stored expiry against the one clock.
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[3]) * 1000) + 60000)
return tonumber(token)
