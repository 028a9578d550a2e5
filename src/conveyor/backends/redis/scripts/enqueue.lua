#!lua
-- Store a batch of new jobs of one queue, or refuse it whole when the queue's maximum
-- length (field `max` of the conf hash) would be passed: pending + scheduled jobs (the
-- pending index) plus the batch's new jobs; idempotency hits do not count.
-- KEYS: 1 prios, 2 delayed, 3 index:pending, 4 events, 5 wake, 6 conf,
--       then the batch's stream keys and idempotency keys.
-- ARGV: 1 now, 2 job key prefix, 3 group, 4 queue, 5 idempotency ttl (s), 6 ttl (ms),
--       7 mode ("" store, "check" only check the length), 8 number of levels,
--       then (priority, stream key index) per level,
--       then the jobs as JSON: one list per level, in the order of the levels, of
--       [id, static JSON (field d), run_at, created_at, idempotency key index] per job,
--       the last three sent only when one is not the default ("", "", "0"),
--       then the jobs' [id, type] pairs as one JSON array, in the same order (their
--       `job_created` events; stored as sent, decoded only after idempotency hits).
-- Job keys are derived from the prefix (on a cluster, they carry the queue's hash tag).
-- Returns {now, {1 | {existing id, fields}} per job, in the order sent} or {'FULL', now}
-- (nothing stored).
local now, now_s = clock(ARGV[1])
local prefix, group, queue = ARGV[2], ARGV[3], ARGV[4]
local ttl_s, ttl_ms = tonumber(ARGV[5]), ARGV[6]
local nlevels = tonumber(ARGV[8])
local by_level = cjson.decode(ARGV[9 + 2 * nlevels])
local created_json = ARGV[10 + 2 * nlevels]

local function remembered(ikey)
  local v = redis.call('GET', KEYS[ikey])
  if v then
    local sep = string.find(v, '|', 1, true)
    if sep and tonumber(string.sub(v, sep + 1)) > now then
      local old = string.sub(v, 1, sep - 1)
      local rec = redis.call('HGETALL', prefix .. old)
      if #rec > 0 then
        return {old, rec}
      end
    end
  end
  return nil
end

-- The index of a job's idempotency key in KEYS, or 0.
local function idem_index(job)
  local ikey = job[5]
  if ikey == nil or ikey == '0' then return 0 end
  return tonumber(ikey)
end

local max = redis.call('HGET', KEYS[6], 'max')
if max then
  local adding, keys = 0, {}
  for _, level in ipairs(by_level) do for _, job in ipairs(level) do
    local ikey = idem_index(job)
    if ikey == 0 then
      adding = adding + 1
    elseif not keys[KEYS[ikey]] then
      keys[KEYS[ikey]] = true
      if not remembered(ikey) then adding = adding + 1 end
    end
  end end
  if adding > 0 and redis.call('ZCARD', KEYS[3]) + adding > tonumber(max) then
    return {'FULL', now_s}
  end
end
if ARGV[7] == 'check' then
  return {'OK', now_s}
end

local streams = level_map(9, nlevels)
for i = 0, nlevels - 1 do
  local prio, stream = ARGV[9 + 2 * i], KEYS[tonumber(ARGV[10 + 2 * i])]
  if redis.call('ZADD', KEYS[1], prio, prio) == 1 then
    -- A new level: its group reads from the start, so nothing added earlier is missed.
    redis.pcall('XGROUP', 'CREATE', stream, group, '0', 'MKSTREAM')
  end
end
local out = {}
local woke = false
local indexed = {}  -- pending-index additions, one variadic ZADD at the end
local created = {}  -- positions of the jobs created (not idempotency hits)
local i = 0
for li, level in ipairs(by_level) do
  local prio = ARGV[7 + 2 * li]
  local stream = streams[prio]
  for _, job in ipairs(level) do
    i = i + 1
    local id = job[1]
    local ikey = idem_index(job)
    local existing = nil
    if ikey > 0 then
      existing = remembered(ikey)
    end
    if existing then
      out[i] = existing
    else
      local key = prefix .. id
      local run_at, created_at = job[3] or '', job[4] or ''
      if run_at == '' then run_at = now_s end
      if created_at == '' then created_at = now_s end
      local entry = ''
      if run_at ~= now_s and tonumber(run_at) > now then
        redis.call('ZADD', KEYS[2], run_at, id)
      else
        entry = redis.call('XADD', stream, '*', 'j', id)
      end
      -- Absent fields read as their default: attempts and progress 0, run at creation.
      -- Status and entry first: a small hash is a flat list, scanned from its start by
      -- every read of a field, and fetch reads these two first.
      if run_at == created_at then
        redis.call('HSET', key, 's', 'pending', 'x', entry, 'd', job[2], 'ca', created_at,
          'q', queue, 'pr', prio)
      else
        redis.call('HSET', key, 's', 'pending', 'x', entry, 'd', job[2], 'ca', created_at,
          'r', run_at, 'q', queue, 'pr', prio)
      end
      indexed[#indexed + 1] = '0'  -- text: a Lua number would be formatted for each call
      indexed[#indexed + 1] = id
      woke = true
      if ikey > 0 then
        redis.call('SET', KEYS[ikey], id .. '|' .. fmt(now + ttl_s), 'PX', ttl_ms)
      end
      created[#created + 1] = i
      out[i] = 1
    end
  end
end
each_chunk('ZADD', KEYS[3], indexed)
if #created > 0 then
  if #created < i then
    local all, pairs_ = cjson.decode(created_json), {}
    for _, i in ipairs(created) do
      pairs_[#pairs_ + 1] = all[i]
    end
    created_json = cjson.encode(pairs_)
  end
  add_entry(KEYS[4], now_s, 'C', queue, 'j', created_json)
end
if woke then
  wake(KEYS[5])
end
return {now_s, out}
