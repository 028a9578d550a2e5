#!lua flags=allow-oom
-- The worker registry: a hash id -> registration JSON and a zset id -> expiry, both
-- under the hash tag {workers}; expired workers are pruned on every call.
-- KEYS: 1 info hash, 2 expiry zset.
-- ARGV: 1 now, 2 op (register | unregister | list), 3 worker id, 4 ttl (s), 5 JSON.
-- Returns, for list, the JSON of every live worker (ordered by id).
local now, now_s = clock(ARGV[1])
local op = ARGV[2]
local dead = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
if #dead > 0 then
  redis.call('ZREM', KEYS[2], unpack(dead))
  redis.call('HDEL', KEYS[1], unpack(dead))
end
if op == 'register' then
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[4]), ARGV[3])
  redis.call('HSET', KEYS[1], ARGV[3], ARGV[5])
  return {}
elseif op == 'unregister' then
  redis.call('ZREM', KEYS[2], ARGV[3])
  redis.call('HDEL', KEYS[1], ARGV[3])
  return {}
end
local ids = redis.call('ZRANGE', KEYS[2], 0, -1)
table.sort(ids)
if #ids == 0 then return {} end
return redis.call('HMGET', KEYS[1], unpack(ids))
