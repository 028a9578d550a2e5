-- Schedules. Every key shares the hash tag {sched}, so one call serves a cluster too.
-- KEYS: 1 definitions hash (id -> JSON), 2 next-run hash (id -> time),
--       3 last-run hash (id -> "time|job id"), 4 version counter.
-- ARGV: 1 now (unused), 2 operation, then:
--   save   3 id, 4 definition, 5 next, 6 last run, 7 last job   -> the new version
--   delete 3 id                                                 -> 1 if it existed
--   get    3 id                                                 -> {definition, next, last}
--   list                                                        -> {defs, nexts, lasts} (flat)
--   fires  (id, next, last run, job) from 3 on; job "" marks a skipped fire: only the
--          next run changes. Ids without a definition (deleted meanwhile) are left alone.
-- Empty strings stand for "none".
local op = ARGV[2]

local function put(key, id, value)
  if value == '' then
    redis.call('HDEL', key, id)
  else
    redis.call('HSET', key, id, value)
  end
end

if op == 'save' then
  local id = ARGV[3]
  redis.call('HSET', KEYS[1], id, ARGV[4])
  put(KEYS[2], id, ARGV[5])
  if ARGV[6] == '' and ARGV[7] == '' then
    redis.call('HDEL', KEYS[3], id)
  else
    redis.call('HSET', KEYS[3], id, ARGV[6] .. '|' .. ARGV[7])
  end
  return redis.call('INCR', KEYS[4])
elseif op == 'delete' then
  local id = ARGV[3]
  local existed = redis.call('HDEL', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
  redis.call('HDEL', KEYS[3], id)
  if existed == 1 then
    redis.call('INCR', KEYS[4])
  end
  return existed
elseif op == 'get' then
  local id = ARGV[3]
  return {
    redis.call('HGET', KEYS[1], id),
    redis.call('HGET', KEYS[2], id),
    redis.call('HGET', KEYS[3], id),
  }
elseif op == 'list' then
  return {
    redis.call('HGETALL', KEYS[1]),
    redis.call('HGETALL', KEYS[2]),
    redis.call('HGETALL', KEYS[3]),
  }
elseif op == 'fires' then
  for i = 3, #ARGV, 4 do
    local id = ARGV[i]
    if redis.call('HEXISTS', KEYS[1], id) == 1 then
      put(KEYS[2], id, ARGV[i + 1])
      if ARGV[i + 3] ~= '' then
        redis.call('HSET', KEYS[3], id, ARGV[i + 2] .. '|' .. ARGV[i + 3])
      end
    end
  end
  return #ARGV
end
return redis.error_reply('unknown schedules operation ' .. tostring(op))
