#!lua
-- Send a failed or cancelled job back to pending with a fresh retry budget.
-- KEYS: 1 job, 2 index:pending, 3 index:failed, 4 index:cancelled, 5 events,
--       6 wake, 7 the job's stream.
-- ARGV: 1 now, 2 id.
-- Returns {'MISSING'}, {'CONFLICT', status} or {'OK', fields}.
local now, now_s = clock(ARGV[1])
local key, id = KEYS[1], ARGV[2]
local f = redis.call('HMGET', key, 's', 't', 'q')
if not f[1] then
  return {'MISSING'}
end
if f[1] ~= 'failed' and f[1] ~= 'cancelled' then
  return {'CONFLICT', f[1]}
end
redis.call('PERSIST', key)
redis.call('HSET', key, 's', 'pending', 'p', '0', 'r', now_s)
redis.call('HDEL', key, 'e', 'c', 'l', 'res')
redis.call('ZREM', KEYS[3], id)
redis.call('ZREM', KEYS[4], id)
redis.call('ZADD', KEYS[2], '0', id)
redis.call('HSET', key, 'x', redis.call('XADD', KEYS[7], '*', 'j', id))
wake(KEYS[6])
emit(KEYS[5], now_s, 'job_created', id, '{"queue":' .. cjson.encode(f[3]) ..
  ',"taskType":' .. cjson.encode(tostring(static_field(f[2], 't', ''))) ..
  ',"retry":true}')
flush_events()
return {'OK', redis.call('HGETALL', key)}
