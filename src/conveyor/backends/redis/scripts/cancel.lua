#!lua flags=allow-oom
-- Cancel a pending or running job.
-- KEYS: 1 job, 2 leases, 3 delayed, 4 index:pending, 5 index:cancelled, 6 events,
--       7 the job's stream.
-- ARGV: 1 now, 2 id, 3 finished ttl (ms).
-- Returns {'MISSING'}, {'CONFLICT', status} or {'OK', fields}.
local now, now_s = clock(ARGV[1])
local key, id = KEYS[1], ARGV[2]
local f = redis.call('HMGET', key, 's', 'x', 'l')
if not f[1] then
  return {'MISSING'}
end
if f[1] ~= 'pending' and f[1] ~= 'running' then
  return {'CONFLICT', f[1]}
end
-- Lease fields stay behind (they mean something only while running, see lib.lua).
redis.call('HSET', key, 's', 'cancelled', 'c', now_s)
local _, token = lease_of(f[3])
if f[1] == 'running' and token ~= '' then
  unlease(KEYS[2], token, {id})
end
redis.call('ZREM', KEYS[3], id)
redis.call('ZREM', KEYS[4], id)
redis.call('ZADD', KEYS[5], 0, id)
if f[1] == 'pending' and f[2] and f[2] ~= '' then
  redis.call('XDEL', KEYS[7], f[2])  -- not delivered yet: it need not be
end
redis.call('PEXPIRE', key, ARGV[3])
emit(KEYS[6], now_s, 'job_cancelled', id, '{}')
flush_events()
return {'OK', redis.call('HGETALL', key)}
