-- Apply attempt outcomes of one queue, each fenced: it applies only while its job is
-- still leased under the token its fetch handed out (one SMISMEMBER per token), or,
-- sent without a token, while the record still shows it running with that owner and
-- attempt.
-- KEYS: 1 leases, 2 delayed, 3 index:pending, 4 index:completed, 5 index:failed,
--       6 events, 7 wake, then the stream keys.
-- ARGV: 1 now, 2 finished ttl (ms), 3 job key prefix, 4 queue, 5 the outcomes: one JSON
--       array of 10 strings per outcome: id, stream key index, owner, attempt,
--       kind (c|f|r|x), result JSON, error JSON, retry at ("" for now), lease token and
--       task type ("" when the sender does not know them).
-- Job keys are derived from the prefix.
-- Returns one flag per outcome, as one string: 1 applied, 0 refused.
-- Events: one compact feed entry holding the outcomes as sent and the flags, unless an
-- outcome applied without a token (its task type is read here, not sent): then one
-- event each.
local now, now_s = clock(ARGV[1])
local ttl_ms, prefix, queue = ARGV[2], ARGV[3], ARGV[4]
local leases, events = KEYS[1], KEYS[6]
local outcomes = cjson.decode(ARGV[5])

local function append(lists, key, value)
  local list = lists[key]
  if not list then
    list = {}
    lists[key] = list
  end
  list[#list + 1] = value
end

-- 1. Fencing. `held[i]` is the token outcome i's job is leased under, if it applies.
local held, by_token, compact = {}, {}, true
for i, o in ipairs(outcomes) do
  local token = o[9]
  if token ~= '' then
    append(by_token, token, i)
  else
    local f = redis.call('HMGET', prefix .. o[1], 's', 'a', 'k', 'd')
    if f[1] == 'running' and f[2] == o[4] and f[3] and token_owner(f[3]) == o[3] then
      held[i] = f[3]
      o[10] = tostring(static_field(f[4], 't', ''))
      compact = false
    end
  end
end
for token, group in pairs(by_token) do
  local set = lease_set(leases, token)
  for from = 1, #group, 1000 do
    local upto = math.min(from + 999, #group)
    local ids = {}
    for n = from, upto do
      ids[#ids + 1] = outcomes[group[n]][1]
    end
    local flags = redis.call('SMISMEMBER', set, unpack(ids))
    for n = from, upto do
      if flags[n - from + 1] == 1 then
        held[group[n]] = token
      end
    end
  end
end

-- 2. The outcomes that apply; lease releases and index additions are batched at the end.
local flags, applied, woke, heads = {}, 0, false, {}
local released, done_c, done_f, ended = {}, {}, {}, {}
local queue_json = ',"queue":' .. cjson.encode(queue) .. ',"taskType":'
local EVENT = {c = 'job_completed', f = 'job_failed', r = 'job_retrying', x = 'job_released'}

-- One event's JSON (only without a compact entry): the attempt, queue, task type, then
-- what the outcome adds.
local function event_data(o, extra)
  local head = heads[o[10]]
  if not head then
    head = queue_json .. cjson.encode(o[10])
    heads[o[10]] = head
  end
  return '{"attempt":' .. o[4] .. head .. extra .. '}'
end

for i, o in ipairs(outcomes) do
  local token = held[i]
  if not token or ended[o[1]] then  -- a second outcome for one attempt is stale too
    flags[i] = '0'
  else
    flags[i] = '1'
    applied = applied + 1
    local id, kind = o[1], o[5]
    ended[id] = true
    local key = prefix .. id
    if token ~= '' then
      append(released, token, id)
    end
    local extra = ''  -- what the outcome adds to its event (built only without a compact entry)
    if kind == 'c' then
      -- The lease token and the entry id stay: they mean nothing once the job is not
      -- running (the reader ignores them), and leaving them saves writes.
      redis.call('HSET', key, 's', 'completed', 'res', o[6], 'c', now_s)
      redis.call('PEXPIRE', key, ttl_ms)
      done_c[#done_c + 1] = '0'
      done_c[#done_c + 1] = id
      if not compact then extra = ',"result":' .. o[6] end
    elseif kind == 'f' then
      redis.call('HSET', key, 's', 'failed', 'e', o[7], 'c', now_s)
      redis.call('PEXPIRE', key, ttl_ms)
      done_f[#done_f + 1] = '0'
      done_f[#done_f + 1] = id
      if not compact then extra = ',"error":' .. o[7] end
    else
      -- Back to pending: a retry counts its attempt and keeps its error; a release at
      -- shutdown does not count the attempt and runs again now.
      local run_at, attempts = o[8], o[4]
      if kind == 'x' then
        run_at, attempts = '', math.max(0, tonumber(o[4]) - 1)
      else
        extra = ',"error":' .. o[7] .. ',"runAt":' .. (run_at == '' and 'null' or run_at)
      end
      if run_at == '' then run_at = now_s end
      local entry = ''
      if tonumber(run_at) > now then
        redis.call('ZADD', KEYS[2], run_at, id)
      else
        entry = redis.call('XADD', KEYS[tonumber(o[2])], '*', 'j', id)
      end
      if kind == 'r' then
        redis.call('HSET', key, 's', 'pending', 'r', run_at, 'a', attempts, 'x', entry,
          'e', o[7])
      else
        redis.call('HSET', key, 's', 'pending', 'r', run_at, 'a', attempts, 'x', entry)
      end
      redis.call('ZADD', KEYS[3], '0', id)
      woke = true
    end
    if not compact then
      emit(events, now_s, EVENT[kind], id, event_data(o, extra))
    end
  end
end
for token, ids in pairs(released) do
  unlease(leases, token, ids)
end
each_chunk('ZADD', KEYS[4], done_c)
each_chunk('ZADD', KEYS[5], done_f)
local answer = table.concat(flags)
if compact then
  if applied > 0 then
    add_entry(events, now_s, applied, 'O', queue, 'o', ARGV[5], 'f', answer)
  end
else
  flush_events()
end
if woke then
  wake(KEYS[7])
end
return answer
