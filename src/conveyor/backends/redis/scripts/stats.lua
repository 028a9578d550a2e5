-- Counts of one queue's jobs by state.
-- KEYS: 1 index:pending, 2 delayed, 3 leases, 4 index:completed, 5 index:failed,
--       6 index:cancelled, 7 conf. ARGV: 1 now.
-- Returns the six counts, then paused ("1" or false) and the maximum length (or false).
local now, now_s = clock(ARGV[1])
local scheduled = redis.call('ZCOUNT', KEYS[2], '(' .. now_s, '+inf')
local conf = redis.call('HMGET', KEYS[7], 'paused', 'max')
local running = 0
for _, token in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do
  running = running + redis.call('SCARD', lease_set(KEYS[3], token))
end
return {redis.call('ZCARD', KEYS[1]) - scheduled, scheduled, running,
  redis.call('ZCARD', KEYS[4]), redis.call('ZCARD', KEYS[5]), redis.call('ZCARD', KEYS[6]),
  conf[1], conf[2]}
