#!lua flags=no-writes
-- Counts of one queue's jobs by state.
-- KEYS: 1 index:pending, 2 delayed, 3 leases, 4 index:completed, 5 index:failed,
--       6 index:cancelled, 7 conf. ARGV: 1 now.
-- Returns the six counts, then paused ("1" or false) and the maximum length (or false).
local now, now_s = clock(ARGV[1])
local scheduled = redis.call('ZCOUNT', KEYS[2], '(' .. now_s, '+inf')
local conf = redis.call('HMGET', KEYS[7], 'paused', 'max')
return {redis.call('ZCARD', KEYS[1]) - scheduled, scheduled, count_leased(KEYS[3], '+inf'),
  redis.call('ZCARD', KEYS[4]), redis.call('ZCARD', KEYS[5]), redis.call('ZCARD', KEYS[6]),
  conf[1], conf[2]}
