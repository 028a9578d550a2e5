-- Apply attempt outcomes of one queue, each fenced by status + owner + attempt.
-- KEYS: 1 leases, 2 delayed, 3 index:pending, 4 index:completed, 5 index:failed,
--       6 events, 7 wake, then stream keys and job keys.
-- ARGV: 1 now, 2 group, 3 finished ttl (ms), then 9 fields per outcome: id, job key
--       index, stream key index, owner, attempt, kind (c|f|r|x), result JSON,
--       error JSON, retry at ("" for now).
-- Returns one flag (1 applied, 0 refused) per outcome.
local now, now_s = clock(ARGV[1])
local group, ttl_ms = ARGV[2], ARGV[3]
local flags, woke, heads, acked = {}, false, {}, {}
for i = 4, #ARGV, 9 do
  local id, key, stream = ARGV[i], KEYS[tonumber(ARGV[i + 1])], KEYS[tonumber(ARGV[i + 2])]
  local attempt, kind = ARGV[i + 4], ARGV[i + 5]
  local f = redis.call('HMGET', key, 's', 'o', 'a', 'x', 't', 'q')
  if f[1] ~= 'running' or f[2] ~= ARGV[i + 3] or f[3] ~= attempt then
    flags[#flags + 1] = 0
  else
    flags[#flags + 1] = 1
    redis.call('ZREM', KEYS[1], id)
    if stream and f[4] and f[4] ~= '' then
      redis.call('XACK', stream, group, f[4])
      acked[stream] = true
    end
    local head = heads[f[5]]
    if not head then
      head = ',"queue":' .. cjson.encode(f[6]) .. ',"taskType":' .. cjson.encode(f[5])
      heads[f[5]] = head
    end
    head = '{"attempt":' .. attempt .. head
    if kind == 'c' then
      -- Emptied rather than deleted: one command; empty reads as absent.
      redis.call('HSET', key, 's', 'completed', 'res', ARGV[i + 6], 'p', '100', 'c', now_s,
        'o', '', 'l', '', 'x', '', 'e', '')
      redis.call('ZADD', KEYS[4], 0, id)
      redis.call('PEXPIRE', key, ttl_ms)
      emit(KEYS[6], now_s, 'job_completed', id, head .. ',"result":' .. ARGV[i + 6] .. '}')
    elseif kind == 'f' then
      redis.call('HSET', key, 's', 'failed', 'e', ARGV[i + 7], 'c', now_s,
        'o', '', 'l', '', 'x', '')
      redis.call('ZADD', KEYS[5], 0, id)
      redis.call('PEXPIRE', key, ttl_ms)
      emit(KEYS[6], now_s, 'job_failed', id, head .. ',"error":' .. ARGV[i + 7] .. '}')
    else
      redis.call('HDEL', key, 'o', 'l', 'x')
      local run_at, data = ARGV[i + 8], nil
      if kind == 'r' then
        redis.call('HSET', key, 'e', ARGV[i + 7])
        local shown = run_at
        if shown == '' then shown = 'null' end
        data = head .. ',"error":' .. ARGV[i + 7] .. ',"runAt":' .. shown .. '}'
      else  -- released at shutdown: this attempt does not count
        local a = tonumber(attempt) - 1
        if a < 0 then a = 0 end
        redis.call('HSET', key, 'a', a)
        run_at = ''
        data = head .. '}'
      end
      if run_at == '' then run_at = now_s end
      redis.call('HSET', key, 's', 'pending', 'r', run_at)
      redis.call('ZADD', KEYS[3], 0, id)
      if tonumber(run_at) > now then
        redis.call('ZADD', KEYS[2], run_at, id)
      else
        redis.call('HSET', key, 'x', redis.call('XADD', stream, '*', 'j', id))
      end
      woke = true
      local event = 'job_retrying'
      if kind == 'x' then event = 'job_released' end
      emit(KEYS[6], now_s, event, id, data)
    end
  end
end
for stream in pairs(acked) do
  trim_acked(stream, group)
end
if woke then
  wake(KEYS[7])
end
return flags
