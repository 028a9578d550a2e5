-- Prepended to every script at load time. Conventions:
--   ARGV[1] is "now" from the backend's injected clock, or "" to use Redis TIME, so
--   every process judges due-ness and leases by one clock.
--   Times are stored as decimal strings exactly as received (client floats keep their
--   repr); times computed here are written with microsecond precision.
--   Hot paths pass redis.call text, not Lua numbers, and avoid tonumber on text: each
--   number is formatted (and each tonumber parsed) by the C library, which costs more
--   than the command it feeds.
--   Job hash fields: d static JSON (what never changes: t type, m max retries, the
--   arguments...), q queue, pr priority, ca created, r run at (absent: ca), s status,
--   l the last lease: `<attempts> <started> <token>` (absent: never leased; after a
--   release, attempts alone), p progress (absent: 0; 100 once completed), c completed,
--   res result JSON, e error JSON (not shown once completed), x stream entry id, wh
--   webhook delivery state JSON. A token reads `<number>@<owner>`; its deadline is its
--   score in the lease zset; owner and deadline are shown only while running.
--   Records keep few fields: a small hash is one flat list in Redis, so every field
--   written or read scans it.
-- Milliseconds an event stays in the feed (the store's Retention.events).
local EVENT_RETENTION_MS = __EVENT_RETENTION_MS__

local function clock(arg)
  if arg ~= '' then
    return tonumber(arg), arg
  end
  local t = redis.call('TIME')
  local s = t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
  return tonumber(s), s
end

local function fmt(x)
  return string.format('%.6f', x)
end

-- One field of a record's static JSON (`d`), or `default` when it is missing or the
-- JSON was not written by Conveyor. Only rare paths need one.
local function static_field(d, name, default)
  local ok, static = pcall(cjson.decode, d or '')
  if ok and type(static) == 'table' and static[name] ~= nil then
    return static[name]
  end
  return default
end

-- Events are buffered by `emit` and written by `flush_events` (called by every script
-- that emits, before it returns) as one feed entry per call: field `a` the time, field
-- `e` a JSON array of [type, job id, data] (data already JSON text); an event's cursor
-- is the entry id plus its index in the array. Entries hold at most EVENT_CHUNK events.
local EVENT_CHUNK = 1000
local event_key, event_at, event_parts = nil, nil, {}

local function emit(events, now_s, kind, id, data)
  event_key, event_at = events, now_s
  event_parts[#event_parts + 1] = '["' .. kind .. '",' .. cjson.encode(id) .. ',' .. data .. ']'
end

-- The hot paths (enqueue, fetch, complete) write a batch's events as one compact entry
-- with `add_entry`: what the reader needs to rebuild them (`_codec.events_from_entry`),
-- mostly text the client sent anyway, so no per-event JSON is built here. `fields`
-- follow `a`.
-- Every write to the feed trims it by age: MINID drops the entries whose id (their
-- time) is older than the retention, whatever their size, and `~` only whole radix
-- tree nodes (cheap; `purge` trims exactly). Ids are Redis's clock; with an injected
-- clock (tests) they are its time instead, so that retention follows that clock. An
-- id may not go back: if that clock did, Redis picks the id.
-- Each entry names the one before it (field `p`; '' for none, '?' for unknown: written
-- before entries did), kept in `<feed>:last`: a reader whose cursor's entry was trimmed
-- learns from the oldest entry left whether anything after its cursor went too.
local function add_entry(key, now_s, ...)
  local last_key = key .. ':last'
  local prev = redis.call('GET', last_key)
  if not prev then
    prev = redis.call('XLEN', key) == 0 and '' or '?'
  end
  local ms = math.floor(tonumber(now_s) * 1000)
  local minid = string.format('%d', ms - EVENT_RETENTION_MS)
  local id = nil
  if ARGV[1] ~= '' then
    id = redis.pcall('XADD', key, 'MINID', '~', minid, string.format('%d', ms) .. '-*',
      'a', now_s, 'p', prev, ...)
    if type(id) == 'table' then id = nil end  -- an error: that clock went back
  end
  id = id or redis.call('XADD', key, 'MINID', '~', minid, '*', 'a', now_s, 'p', prev, ...)
  redis.call('SET', last_key, id)
  return id
end

local function flush_events()
  local n = #event_parts
  local i = 1
  while i <= n do
    local j = i + EVENT_CHUNK - 1
    if j > n then j = n end
    add_entry(event_key, event_at, 'e', '[' .. table.concat(event_parts, ',', i, j) .. ']')
    i = j + 1
  end
  event_parts = {}
end

-- Variadic commands for a whole batch instead of one call per job (each call has a
-- fixed cost in Redis and in its AOF): `args` is a flat list (members, or score/member
-- pairs), sent in chunks of 1000 (even, so pairs stay whole; within Lua's stack).
local function each_chunk(cmd, key, args)
  local n = #args
  for i = 1, n, 1000 do
    local j = i + 999
    if j > n then j = n end
    redis.call(cmd, key, unpack(args, i, j))
  end
end

local function wake(key)
  redis.call('XADD', key, 'MAXLEN', '1', '*', 'w', '1')
end

-- The stream key of each priority level: levels are declared in KEYS by the caller,
-- listed (priority, key index) in ARGV from position `at`.
local function level_map(at, n)
  local map = {}
  for i = 0, n - 1 do
    map[ARGV[at + 2 * i]] = KEYS[tonumber(ARGV[at + 2 * i + 1])]
  end
  return map
end

-- Levels are declared by the client from its cache of the queue's priority set; a
-- mismatch means a new level appeared, and the client refreshes and calls again.
local function stale_levels(prios_key, declared)
  local current = redis.call('ZRANGE', prios_key, 0, -1)
  if #current ~= #declared then
    return current
  end
  for i = 1, #current do
    if current[i] ~= declared[i] then
      return current
    end
  end
  return nil
end

-- Due delayed jobs (and due retries) move into their priority's stream, oldest first.
-- `now_s` and `cap` are text.
local function promote(delayed, prefix, streams, now_s, cap)
  local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now_s, 'LIMIT', '0', cap)
  for _, id in ipairs(due) do
    redis.call('ZREM', delayed, id)
    local key = prefix .. id
    local f = redis.call('HMGET', key, 's', 'pr')
    local stream = streams[f[2]]
    if f[1] == 'pending' and stream then
      redis.call('HSET', key, 'x', redis.call('XADD', stream, '*', 'j', id))
    end
  end
  return #due
end

-- Work streams are read with NOACK: a job's lease, not the group's pending list, says
-- who runs it, and the script that reads an entry also leases its job. So everything a
-- read delivered can go at once: one XTRIM MINID just past the last entry read.
local function trim_read(stream, last)
  local ms, seq = string.match(last, '^(%d+)-(%d+)$')
  if ms then
    redis.call('XTRIM', stream, 'MINID', ms .. '-' .. string.format('%.0f', tonumber(seq) + 1))
  end
end

-- Leases are held per fetch call: a token (from the counter `<lease zset>:next`) scored
-- by its deadline in the lease zset, and the set `<lease zset>:<token>` of the ids
-- leased under it; the job's field `k` names its token. A batch then costs one ZADD
-- and one SADD, and a batch of outcomes is fenced by one SMISMEMBER per token. Ids
-- leave the set when their attempt ends (outcome, cancel, reclaim); an empty set's
-- token leaves the zset.
local function lease_set(leases, token)
  return leases .. ':' .. token
end

-- The worker a token was handed to: tokens read `<number>@<owner>`.
local function token_owner(token)
  return string.match(token, '^%d+@(.*)$')
end

-- A record's last lease (field `l`): attempts (text), and the token ('' when none).
local function lease_of(l)
  if not l then return '0', '' end
  local attempts, token = string.match(l, '^(%d+) %S+ (.+)$')
  if attempts then return attempts, token end
  return string.match(l, '^%d+') or '0', ''
end

-- How many jobs are leased under the tokens whose deadline is at most `upto`.
local function count_leased(leases, upto)
  local n = 0
  for _, token in ipairs(redis.call('ZRANGEBYSCORE', leases, '-inf', upto)) do
    n = n + redis.call('SCARD', lease_set(leases, token))
  end
  return n
end

local function unlease(leases, token, ids)
  local set = lease_set(leases, token)
  each_chunk('SREM', set, ids)
  if redis.call('EXISTS', set) == 0 then
    redis.call('ZREM', leases, token)
  end
end
