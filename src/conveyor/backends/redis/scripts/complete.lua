-- Apply attempt outcomes of one queue, each fenced by status + owner + attempt.
-- KEYS: 1 leases, 2 delayed, 3 index:pending, 4 index:completed, 5 index:failed,
--       6 events, 7 wake, then the stream keys.
-- ARGV: 1 now, 2 group, 3 finished ttl (ms), 4 job key prefix, 5 the outcomes: one
--       JSON array of 8 strings per outcome: id, stream key index, owner, attempt,
--       kind (c|f|r|x), result JSON, error JSON, retry at ("" for now).
-- Job keys are derived from the prefix; they carry the queue's hash tag, so they live
-- in the slot of every declared key.
-- Returns one flag (1 applied, 0 refused) per outcome.
local now, now_s = clock(ARGV[1])
local group, ttl_ms, prefix = ARGV[2], ARGV[3], ARGV[4]
local flags, woke, heads, acked = {}, false, {}, {}
-- Batched at the end (one variadic call each): lease removals, acks per stream,
-- index additions.
local unleased, done_c, done_f = {}, {}, {}
for _, o in ipairs(cjson.decode(ARGV[5])) do
  local id, stream = o[1], KEYS[tonumber(o[2])]
  local key = prefix .. id
  local attempt, kind = o[4], o[5]
  local f = redis.call('HMGET', key, 's', 'o', 'a', 'x', 't', 'q')
  if f[1] ~= 'running' or f[2] ~= o[3] or f[3] ~= attempt then
    flags[#flags + 1] = 0
  else
    flags[#flags + 1] = 1
    unleased[#unleased + 1] = id
    if stream and f[4] and f[4] ~= '' then
      local entries = acked[stream]
      if not entries then
        entries = {}
        acked[stream] = entries
      end
      entries[#entries + 1] = f[4]
    end
    local head = heads[f[5]]
    if not head then
      head = ',"queue":' .. cjson.encode(f[6]) .. ',"taskType":' .. cjson.encode(f[5])
      heads[f[5]] = head
    end
    head = '{"attempt":' .. attempt .. head
    if kind == 'c' then
      -- Emptied rather than deleted: one command; empty reads as absent.
      redis.call('HSET', key, 's', 'completed', 'res', o[6], 'p', '100', 'c', now_s,
        'o', '', 'l', '', 'x', '', 'e', '')
      done_c[#done_c + 1] = 0
      done_c[#done_c + 1] = id
      redis.call('PEXPIRE', key, ttl_ms)
      emit(KEYS[6], now_s, 'job_completed', id, head .. ',"result":' .. o[6] .. '}')
    elseif kind == 'f' then
      redis.call('HSET', key, 's', 'failed', 'e', o[7], 'c', now_s,
        'o', '', 'l', '', 'x', '')
      done_f[#done_f + 1] = 0
      done_f[#done_f + 1] = id
      redis.call('PEXPIRE', key, ttl_ms)
      emit(KEYS[6], now_s, 'job_failed', id, head .. ',"error":' .. o[7] .. '}')
    else
      redis.call('HDEL', key, 'o', 'l', 'x')
      local run_at, data = o[8], nil
      if kind == 'r' then
        redis.call('HSET', key, 'e', o[7])
        local shown = run_at
        if shown == '' then shown = 'null' end
        data = head .. ',"error":' .. o[7] .. ',"runAt":' .. shown .. '}'
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
each_chunk('ZREM', KEYS[1], unleased)
each_chunk('ZADD', KEYS[4], done_c)
each_chunk('ZADD', KEYS[5], done_f)
for stream, entries in pairs(acked) do
  ack_all(stream, group, entries)
end
flush_events()
for stream in pairs(acked) do
  trim_acked(stream, group)
end
if woke then
  wake(KEYS[7])
end
return flags
