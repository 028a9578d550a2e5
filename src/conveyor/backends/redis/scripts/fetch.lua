#!lua flags=allow-oom
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
-- Returns {'STALE', levels} or {'OK', now, {id, priority, {the fields `read` before the
-- lease}, ...}, dead-lettered ids, lease deadline, lease token ('' when nothing was
-- leased)}.
-- Job keys are derived from the prefix (ids come from the stream); on a cluster they
-- carry the queue's hash tag, so they live in the slot of every declared key.
local now, now_s = clock(ARGV[1])
local prefix, group, consumer, owner = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local limit, lease, ttl_ms = tonumber(ARGV[6]), tonumber(ARGV[7]), ARGV[8]
local template, reclaim_cap, promote_cap = ARGV[9], tonumber(ARGV[10]), ARGV[11]
local queue, nlevels = ARGV[12], tonumber(ARGV[13])
if redis.call('HGET', KEYS[7], 'paused') == '1' then
  return {'OK', now_s, {}, {}, fmt(now), ''}
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
-- This call's lease token (taken on the first job leased), the ids leased under it and
-- the pending-index removals, all written at the end.
local token, leased, attempts, unpended = nil, {}, {}, {}

local function finish(key, id, index)
  redis.call('ZADD', index, '0', id)
  redis.call('PEXPIRE', key, ttl_ms)
end

-- What a worker needs of a job's record, read once when it is leased: fields 1-2 check
-- that a stream entry is still the job's, the rest go back to the client as read, and
-- the client applies the lease itself (status, and the new `l`) instead of reading the
-- record again. (Fewer fields than HGETALL: every value read is converted
-- into Lua and back, the main cost of a fetch.)
local function read(key)
  return redis.call('HMGET', key, 's', 'x', 'l', 'd', 'ca', 'r', 'p', 'e', 'wh')
end

-- The next attempt number, as text (see lib.lua: no tonumber, no formatting).
local NEXT = {['0'] = '1', ['1'] = '2', ['2'] = '3', ['3'] = '4', ['4'] = '5', ['5'] = '6',
  ['6'] = '7', ['7'] = '8', ['8'] = '9', ['9'] = '10'}

-- Leases one job, given `f` = read(key) and its priority.
local function take(key, id, f, prio)
  if not token then
    token = redis.call('INCR', lease_set(leases, 'next')) .. '@' .. owner
  end
  local before = lease_of(f[3])
  local attempt = NEXT[before] or string.format('%d', tonumber(before) + 1)
  -- One field for the lease: each field written to a record costs a scan of it.
  redis.call('HSET', key, 's', 'running', 'l', attempt .. ' ' .. now_s .. ' ' .. token)
  leased[#leased + 1] = id
  attempts[#attempts + 1] = attempt
  out[#out + 1] = id
  out[#out + 1] = prio
  out[#out + 1] = f
end

-- 1. Jobs whose worker died: every job still running under an expired token is leased
-- again (attempts + 1), dead-lettered when over its retry budget, or - past this call's
-- share - sent back to its stream (where the next fetch, of any worker, finds it).
local reclaim = limit
if reclaim_cap >= 0 and reclaim_cap < reclaim then reclaim = reclaim_cap end
while reclaim > 0 do
  local expired = redis.call('ZRANGEBYSCORE', leases, '-inf', now_s, 'LIMIT', '0', '1')
  if #expired == 0 then break end
  local old = expired[1]
  local set = lease_set(leases, old)
  local ids = redis.call('SMEMBERS', set)
  redis.call('DEL', set)
  redis.call('ZREM', leases, old)
  for _, id in ipairs(ids) do
    local key = prefix .. id
    local f = redis.call('HMGET', key, 's', 'l', 'd', 'pr')
    local tried, token_was = lease_of(f[2])
    if f[1] == 'running' and token_was == old then
      if tonumber(tried) > (tonumber(static_field(f[3], 'm', 0)) or 0) then
        -- Poison: it killed its worker more often than its retries allow.
        local err = string.gsub(template, '987654321', tried)
        redis.call('HSET', key, 's', 'failed', 'e', err, 'c', now_s)
        finish(key, id, KEYS[5])
        emit(events, now_s, 'job_failed', id, '{"error":' .. err .. '}')
      elseif reclaim > 0 or not streams[f[4]] then  -- (no stream: never left unleased)
        take(key, id, read(key), f[4])
        reclaim = reclaim - 1
      else
        redis.call('HSET', key, 's', 'pending', 'x', redis.call('XADD', streams[f[4]], '*', 'j', id))
        redis.call('ZADD', KEYS[4], '0', id)
      end
    end
  end
end

-- 2. Delayed jobs and retries that fell due.
promote(KEYS[2], prefix, streams, now_s, promote_cap)

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
  redis.call('HSET', key, 'd', '{"t":"<undecodable>","m":0}', 'q', queue, 'pr', '0',
    'ca', now_s, 's', 'failed', 'l', '1', 'c', now_s, 'e', err)
  finish(key, id, KEYS[5])
  emit(events, now_s, 'job_failed', id, '{"error":' .. err .. '}')
  dead[#dead + 1] = id
end

for li = #levels, 1, -1 do
  local stream, quota, prio = levels[li][1], levels[li][2], levels[li][3]
  while #out < limit and quota ~= 0 do
    local want = limit - #out
    if quota > 0 and quota < want then want = quota end
    local res = redis.pcall('XREADGROUP', 'GROUP', group, consumer, 'COUNT', want, 'NOACK',
      'STREAMS', stream, '>')
    if type(res) == 'table' and res.err then
      -- The stream or its group was removed by hand: recreate and read from the start.
      redis.pcall('XGROUP', 'CREATE', stream, group, '0', 'MKSTREAM')
      res = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', want, 'NOACK',
        'STREAMS', stream, '>')
    end
    if not res then break end
    local entries = res[1][2]
    for _, e in ipairs(entries) do
      local entry, fields = e[1], e[2]
      local id = nil
      if #fields == 2 and fields[1] == 'j' then id = fields[2] end
      local f = id and read(prefix .. id)
      if not f or not f[1] then
        dead_letter(stream, entry, fields)
      elseif f[1] == 'pending' and f[2] == entry then
        unpended[#unpended + 1] = id
        take(prefix .. id, id, f, prio)
        quota = quota - 1
      end  -- else stale: the job was cancelled or requeued since
    end
    if #entries > 0 then
      trim_read(stream, entries[#entries][1])
    end
    if #entries < want then break end
  end
end
if token then
  each_chunk('SADD', lease_set(leases, token), leased)
  redis.call('ZADD', leases, deadline_s, token)
  add_entry(events, now_s, 'S', owner, 'j', cjson.encode(leased),
    'n', '[' .. table.concat(attempts, ',') .. ']')
end
each_chunk('ZREM', KEYS[4], unpended)
flush_events()
return {'OK', now_s, out, dead, deadline_s, token or ''}
