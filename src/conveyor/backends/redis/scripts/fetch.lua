-- Lease up to `limit` jobs of one queue: expired leases first (attempts + 1, or
-- dead-lettered when over budget), then due delayed jobs are promoted, then new stream
-- entries are read, highest priority level first.
-- KEYS: 1 prios, 2 delayed, 3 leases, 4 index:pending, 5 index:failed, 6 events,
--       7 conf, then one stream key per priority level.
-- A paused queue (conf field `paused`) hands out nothing, not even expired leases.
-- ARGV: 1 now, 2 job key prefix, 3 group, 4 consumer, 5 owner, 6 limit, 7 lease (s),
--       8 finished ttl (ms), 9 lease-expired error (attempts written 987654321),
--       10 reclaim cap (-1: limit), 11 promote cap, 12 queue, 13 number of levels, then per level ascending:
--       (priority, stream key index, quota (-1: no quota)).
-- Returns {'STALE', levels} or {'OK', now, {{id, fields before the lease}...},
-- dead-lettered ids, lease deadline}.
-- Job keys are derived from the prefix (ids come from the stream); they carry the
-- queue's hash tag, so they live in the slot of every declared key.
local now, now_s = clock(ARGV[1])
local prefix, group, consumer, owner = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local limit, lease, ttl_ms = tonumber(ARGV[6]), tonumber(ARGV[7]), ARGV[8]
local template, reclaim_cap, promote_cap = ARGV[9], tonumber(ARGV[10]), ARGV[11]
local queue, nlevels = ARGV[12], tonumber(ARGV[13])
if redis.call('HGET', KEYS[7], 'paused') == '1' then
  return {'OK', now_s, {}, {}, fmt(now)}
end
local declared, streams, levels = {}, {}, {}
for i = 0, nlevels - 1 do
  local at = 14 + 3 * i
  declared[#declared + 1] = ARGV[at]
  streams[ARGV[at]] = KEYS[tonumber(ARGV[at + 1])]
  levels[#levels + 1] = {KEYS[tonumber(ARGV[at + 1])], tonumber(ARGV[at + 2]), ARGV[at]}
end
local current = stale_levels(KEYS[1], declared)
if current then
  return {'STALE', current}
end
local leases, events = KEYS[3], KEYS[6]
local deadline = now + lease
local deadline_s = fmt(deadline)
local out, dead = {}, {}
-- New entries' lease additions and pending-index removals, batched at the end.
local leased, unpended = {}, {}

local function finish(key, id, stream, entry, index)
  redis.call('HDEL', key, 'o', 'l', 'x')
  ack(stream, group, entry)
  redis.call('ZADD', index, 0, id)
  redis.call('PEXPIRE', key, ttl_ms)
end

local owner_json = ',"workerId":' .. cjson.encode(owner) .. '}'

-- Leases one job; `fields` is its HGETALL from before, which the client updates with
-- the lease (status, attempts, started, owner, deadline) instead of reading it again.
-- `batched`: the lease zset addition waits for the end of the script (not for
-- reclaimed jobs: the reclaim loop reads the lease zset again).
local function take(key, id, fields, attempts, batched)
  local attempt = tonumber(attempts) + 1
  redis.call('HSET', key, 'a', attempt, 's', 'running', 'sa', now_s, 'o', owner,
    'l', deadline_s)
  if batched then
    leased[#leased + 1] = deadline
    leased[#leased + 1] = id
  else
    redis.call('ZADD', leases, deadline, id)
  end
  emit(events, now_s, 'job_started', id, '{"attempt":' .. attempt .. owner_json)
  out[#out + 1] = {id, fields}
end

local function field(fields, name)
  for i = 1, #fields, 2 do
    if fields[i] == name then return fields[i + 1] end
  end
  return nil
end

-- 1. Jobs whose worker died.
local reclaim = limit
if reclaim_cap >= 0 and reclaim_cap < reclaim then reclaim = reclaim_cap end
while reclaim > 0 do
  local expired = redis.call('ZRANGEBYSCORE', leases, '-inf', now, 'LIMIT', 0, reclaim)
  if #expired == 0 then break end
  for _, id in ipairs(expired) do
    local key = prefix .. id
    local f = redis.call('HMGET', key, 's', 'a', 'm', 'x', 'pr')
    if f[1] ~= 'running' then
      redis.call('ZREM', leases, id)
    elseif tonumber(f[2]) > tonumber(f[3]) then
      -- Poison: it killed its worker more often than its retries allow.
      redis.call('ZREM', leases, id)
      local err = string.gsub(template, '987654321', f[2])
      redis.call('HSET', key, 's', 'failed', 'e', err, 'c', now_s)
      finish(key, id, streams[f[5]], f[4], KEYS[5])
      emit(events, now_s, 'job_failed', id, '{"error":' .. err .. '}')
    else
      take(key, id, redis.call('HGETALL', key), f[2])
      reclaim = reclaim - 1
    end
  end
end

-- 2. Delayed jobs and retries that fell due.
promote(KEYS[2], prefix, streams, now, promote_cap)

-- 3. New entries, highest priority first.
local function dead_letter(stream, entry, fields)
  local ms, seq = string.match(entry, '^(%d+)-(%d+)$')
  ms, seq = tonumber(ms), tonumber(seq)
  local id = string.format('%08x-%04x-7%03x-8%03x-%s', math.floor(ms / 65536), ms % 65536,
    seq % 4096, math.floor(seq / 4096) % 4096,
    string.sub(redis.sha1hex(stream .. ' ' .. entry), 1, 12))
  local bytes, preview = 0, {}
  for i = 1, #fields do
    bytes = bytes + #fields[i]
  end
  local raw = table.concat(fields, ' ')
  preview = string.gsub(string.sub(raw, 1, 128), '.', function(c)
    return string.format('%02x', string.byte(c))
  end)
  local err = '{"code":"TASK_FAILED","message":' ..
    cjson.encode('undecodable entry ' .. entry .. ' in ' .. stream .. ': not a Conveyor job') ..
    ',"details":{"reason":"undecodable","retryable":false,"exceptionType":null,' ..
    '"entryId":"' .. entry .. '","fields":' .. #fields .. ',"bytes":' .. bytes ..
    ',"preview":"' .. preview .. '"}}'
  local key = prefix .. id
  redis.call('HSET', key, 't', '<undecodable>', 'q', queue, 'pr', '0', 'm', '0', 'd', '{}',
    'ca', now_s, 'r', now_s, 's', 'failed', 'a', '1', 'p', '0', 'c', now_s, 'e', err)
  finish(key, id, stream, entry, KEYS[5])
  emit(events, now_s, 'job_failed', id, '{"error":' .. err .. '}')
  dead[#dead + 1] = id
end

for li = #levels, 1, -1 do
  local stream, quota = levels[li][1], levels[li][2]
  while #out < limit and quota ~= 0 do
    local want = limit - #out
    if quota > 0 and quota < want then want = quota end
    local res = redis.pcall('XREADGROUP', 'GROUP', group, consumer, 'COUNT', want,
      'STREAMS', stream, '>')
    if type(res) == 'table' and res.err then
      -- The stream or its group was removed by hand: recreate and read from the start.
      redis.pcall('XGROUP', 'CREATE', stream, group, '0', 'MKSTREAM')
      res = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', want,
        'STREAMS', stream, '>')
    end
    if not res then break end
    local entries = res[1][2]
    for _, e in ipairs(entries) do
      local entry, fields = e[1], e[2]
      local id = nil
      if #fields == 2 and fields[1] == 'j' then id = fields[2] end
      local rec = id and redis.call('HGETALL', prefix .. id)
      if not rec or #rec == 0 then
        dead_letter(stream, entry, fields)
      elseif field(rec, 's') ~= 'pending' or field(rec, 'x') ~= entry then
        ack(stream, group, entry)  -- stale: the job was cancelled or requeued since
      else
        unpended[#unpended + 1] = id
        take(prefix .. id, id, rec, field(rec, 'a'), true)
        quota = quota - 1
      end
    end
    if #entries < want then break end
  end
end
each_chunk('ZADD', leases, leased)
each_chunk('ZREM', KEYS[4], unpended)
flush_events()
return {'OK', now_s, out, dead, deadline_s}
