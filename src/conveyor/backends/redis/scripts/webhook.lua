#!lua flags=allow-oom
-- Store a job's webhook delivery state (field `wh`), only if the job still exists.
-- KEYS: 1 job hash. ARGV: 1 now (unused), 2 state JSON.
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], 'wh', ARGV[2])
  return 1
end
return 0
