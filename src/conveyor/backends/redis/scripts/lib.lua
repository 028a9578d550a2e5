-- Prepended to every script at load time. Conventions:
--   ARGV[1] is "now" from the backend's injected clock, or "" to use Redis TIME, so
--   every process judges due-ness and leases by one clock.
--   Times are stored as decimal strings exactly as received (client floats keep their
--   repr); times computed here are written with microsecond precision.
--   Job hash fields: t type, q queue, pr priority, m max retries, d static JSON,
--   ca created, r run at, s status, a attempts, p progress, sa started, c completed,
--   res result JSON, e error JSON, o lease owner, l lease deadline, x stream entry id,
--   wh webhook delivery state JSON.
local EVENT_RETENTION = __EVENT_RETENTION__

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

-- Events are buffered by `emit` and written by `flush_events` (called by every script
-- that emits, before it returns) as one feed entry per call: field `a` the time, field
-- `e` a JSON array of [type, job id, data] (data already JSON text); an event's cursor
-- is the entry id plus its index in the array. Entries hold at most EVENT_CHUNK events;
-- MAXLEN is scaled by the entry's size, so the feed keeps about EVENT_RETENTION events.
local EVENT_CHUNK = 1000
local event_key, event_at, event_parts = nil, nil, {}

local function emit(events, now_s, kind, id, data)
  event_key, event_at = events, now_s
  event_parts[#event_parts + 1] = '["' .. kind .. '",' .. cjson.encode(id) .. ',' .. data .. ']'
end

local function flush_events()
  local n = #event_parts
  local i = 1
  while i <= n do
    local j = i + EVENT_CHUNK - 1
    if j > n then j = n end
    local maxlen = math.ceil(EVENT_RETENTION / (j - i + 1))
    redis.call('XADD', event_key, 'MAXLEN', '~', maxlen, '*', 'a', event_at,
      'e', '[' .. table.concat(event_parts, ',', i, j) .. ']')
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

local function ack_all(stream, group, entries)
  local n = #entries
  for i = 1, n, 1000 do
    local j = i + 999
    if j > n then j = n end
    redis.call('XACK', stream, group, unpack(entries, i, j))
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
local function promote(delayed, prefix, streams, now, cap)
  local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, cap)
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

local function ack(stream, group, entry)
  if stream and entry and entry ~= '' then
    redis.call('XACK', stream, group, entry)
    redis.call('XDEL', stream, entry)
  end
end

local function entry_id(s)
  local ms, seq = string.match(s or '', '^(%d+)-(%d+)$')
  if not ms then return nil end
  return tonumber(ms), tonumber(seq)
end

-- Remove a work stream's acknowledged entries in one command (instead of an XDEL per
-- job): everything below the oldest entry still needed, which is the oldest entry of
-- the group's pending list (delivered, not acknowledged) or, with an empty pending
-- list, the first entry after the group's last-delivered id (never delivered). Entries
-- below both were delivered and acknowledged. Nothing unacknowledged is ever removed;
-- without the group (removed by hand) nothing is removed at all.
local function trim_acked(stream, group)
  local info = redis.pcall('XINFO', 'GROUPS', stream)
  if type(info) ~= 'table' or info.err then return end
  local last = nil
  for _, g in ipairs(info) do
    local name, delivered = nil, nil
    for k = 1, #g, 2 do
      if g[k] == 'name' then name = g[k + 1] elseif g[k] == 'last-delivered-id' then
        delivered = g[k + 1]
      end
    end
    if name == group then last = delivered end
  end
  local ms, seq = entry_id(last)
  if not ms then return end
  seq = seq + 1  -- the first id after the last delivered one
  local pel = redis.call('XPENDING', stream, group)
  if pel[1] > 0 then
    local pms, pseq = entry_id(pel[2])
    if not pms then return end
    if pms < ms or (pms == ms and pseq < seq) then ms, seq = pms, pseq end
  end
  redis.call('XTRIM', stream, 'MINID', string.format('%.0f-%.0f', ms, seq))
end
