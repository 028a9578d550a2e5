#!lua flags=allow-oom
-- Record the progress of a running attempt.
-- KEYS: 1 job, 2 events. ARGV: 1 now, 2 id, 3 attempt, 4 progress.
local now, now_s = clock(ARGV[1])
local f = redis.call('HMGET', KEYS[1], 's', 'l')
if f[1] ~= 'running' or lease_of(f[2]) ~= ARGV[3] then
  return 0
end
redis.call('HSET', KEYS[1], 'p', ARGV[4])
emit(KEYS[2], now_s, 'job_progress', ARGV[2], '{"progress":' .. ARGV[4] .. '}')
flush_events()
return 1
