#!lua flags=allow-oom
-- Apply attempt outcomes of one queue, each fenced: it applies only while its job is
-- still leased under the token its fetch handed out (one SMISMEMBER per token), or,
-- sent without a token, while the record still shows it running with that owner and
-- attempt.
-- KEYS: 1 leases, 2 delayed, 3 index:pending, 4 index:completed, 5 index:failed,
--       6 events, 7 wake, then the stream keys.
-- ARGV: 1 now, 2 finished ttl (ms), 3 job key prefix, 4 queue,
--       5 the outcomes grouped by lease token, as JSON: [token, owner, outcomes] per
--         group, each outcome [id, kind (c|f|r|x), value (result JSON for c, error JSON
--         for f and r), attempt, retry at ("" for now), stream key index]. The last
--         three are sent only where they are used: for r and x, and for every outcome
--         of the group without a token (token "", fenced by owner and attempt).
--       6 the outcomes' events, as JSON: [id, attempt, kind, result JSON, error JSON,
--         retry at, task type ("" when the sender does not know it)] per outcome, in
--         the order of 5 (a c whose result is too large for its event: result null,
--         and its size in bytes in the error slot). Lua decodes it only when it
--         writes events one by one.
-- (Only what this script uses is decoded here: decoding costs about as much per JSON
-- value as a redis.call.)
-- Job keys are derived from the prefix.
-- Returns one flag per outcome in the order of 5, as one string: 1 applied, 0 refused.
-- Events: one compact feed entry holding ARGV[6] and the flags, unless an outcome
-- applied without a token (its task type is read here, not sent): then one event each.
local now, now_s = clock(ARGV[1])
local ttl_ms, prefix, queue = ARGV[2], ARGV[3], ARGV[4]
local leases, events = KEYS[1], KEYS[6]
local groups = cjson.decode(ARGV[5])

local function append(lists, key, value)
  local list = lists[key]
  if not list then
    list = {}
    lists[key] = list
  end
  list[#list + 1] = value
end

-- 1. Fencing. `held[i]` is the token the i-th outcome's job is leased under, if it
-- applies; `types[i]` the task type read from the record of one fenced by the record.
local held, types, compact = {}, {}, true
local base = 0
for _, group in ipairs(groups) do
  local token, owner, list = group[1], group[2], group[3]
  if token ~= '' then
    local set = lease_set(leases, token)
    for from = 1, #list, 1000 do
      local upto = math.min(from + 999, #list)
      local ids = {}
      for m = from, upto do
        ids[m - from + 1] = list[m][1]
      end
      local flags = redis.call('SMISMEMBER', set, unpack(ids))
      for m = from, upto do
        if flags[m - from + 1] == 1 then
          held[base + m] = token
        end
      end
    end
  else
    for m, o in ipairs(list) do
      local f = redis.call('HMGET', prefix .. o[1], 's', 'l', 'd')
      local attempts, token = lease_of(f[2])
      if f[1] == 'running' and attempts == o[4] and token_owner(token) == owner then
        held[base + m] = token
        types[base + m] = tostring(static_field(f[3], 't', ''))
        compact = false
      end
    end
  end
  base = base + #list
end

-- 2. The outcomes that apply; lease releases and index additions are batched at the end.
local flags, applied, woke = {}, 0, false
local released, done_c, done_f, ended = {}, {}, {}, {}
local EVENT = {c = 'job_completed', f = 'job_failed', r = 'job_retrying', x = 'job_released'}
-- The ends of a job: its status, the field its value goes to, its index's additions (one
-- variadic ZADD at the end) and the key of that value in its event.
local FINISH = {
  c = {'completed', 'res', done_c, ',"result":'},
  f = {'failed', 'e', done_f, ',"error":'},
}
local sent, heads = nil, {}
if not compact then
  sent = cjson.decode(ARGV[6])
end

-- One event's JSON (only without a compact entry): the attempt, queue, task type, then
-- what the outcome adds.
local function event_data(i, extra)
  local attempt, task_type = sent[i][2], types[i] or sent[i][7]
  local head = heads[task_type]
  if not head then
    head = ',"queue":' .. cjson.encode(queue) .. ',"taskType":' .. cjson.encode(task_type)
    heads[task_type] = head
  end
  return '{"attempt":' .. attempt .. head .. extra .. '}'
end

base = 0
for _, group in ipairs(groups) do
  local list = group[3]
  for m, o in ipairs(list) do
    local i = base + m
    local token = held[i]
    if not token or ended[o[1]] then  -- a second outcome for one attempt is stale too
      flags[i] = '0'
    else
      flags[i] = '1'
      applied = applied + 1
      local id, kind, value = o[1], o[2], o[3]
      ended[id] = true
      local key = prefix .. id
      append(released, token, id)
      local extra = ''  -- what the outcome adds to its event (only without a compact entry)
      local finish = FINISH[kind]
      if finish then
        -- The last lease and the entry id stay: they mean nothing once the job is not
        -- running (the reader ignores them), and leaving them saves writes.
        redis.call('HSET', key, 's', finish[1], finish[2], value, 'c', now_s)
        redis.call('PEXPIRE', key, ttl_ms)
        local done = finish[3]
        done[#done + 1] = '0'
        done[#done + 1] = id
        if not compact then
          local size = kind == 'c' and sent[i][5] or 'null'  -- see ARGV[6]
          if size == 'null' then
            extra = finish[4] .. value
          else
            extra = ',"resultOmitted":true,"resultBytes":' .. size
          end
        end
      else
        -- Back to pending: a retry counts its attempt (already in `l`) and keeps its
        -- error; a release at shutdown does not count the attempt and runs again now.
        local run_at = o[5]
        if kind == 'x' then
          run_at = ''
        elseif not compact then
          extra = ',"error":' .. value .. ',"runAt":' .. (run_at == '' and 'null' or run_at)
        end
        if run_at == '' then run_at = now_s end
        local entry = ''
        if tonumber(run_at) > now then
          redis.call('ZADD', KEYS[2], run_at, id)
        else
          entry = redis.call('XADD', KEYS[tonumber(o[6])], '*', 'j', id)
        end
        if kind == 'r' then
          redis.call('HSET', key, 's', 'pending', 'r', run_at, 'x', entry, 'e', value)
        else
          local attempts = string.format('%d', math.max(0, tonumber(o[4]) - 1))
          redis.call('HSET', key, 's', 'pending', 'r', run_at, 'x', entry, 'l', attempts)
        end
        redis.call('ZADD', KEYS[3], '0', id)
        woke = true
      end
      if not compact then
        emit(events, now_s, EVENT[kind], id, event_data(i, extra))
      end
    end
  end
  base = base + #list
end
for token, ids in pairs(released) do
  unlease(leases, token, ids)
end
each_chunk('ZADD', KEYS[4], done_c)
each_chunk('ZADD', KEYS[5], done_f)
local answer = table.concat(flags)
if compact then
  if applied > 0 then
    add_entry(events, now_s, 'O', queue, 'o', ARGV[6], 'f', answer)
  end
else
  flush_events()
end
if woke then
  wake(KEYS[7])
end
return answer
