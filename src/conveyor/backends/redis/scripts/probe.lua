#!lua flags=allow-oom
-- What an idle worker (or a fetch over several queues) needs to know about one queue.
-- Promotes due delayed jobs first.
-- KEYS: 1 prios, 2 delayed, 3 leases, 4 wake, 5 conf, then one stream key per level.
-- A paused queue reports nothing to do (its idle workers block on the wake stream,
-- which resuming writes to).
-- ARGV: 1 now, 2 job key prefix, 3 promote cap, 4 number of levels, then
--       (priority, stream key index) per level, ascending.
-- Returns {'STALE', levels} or {'OK', now, expired leases, soonest delayed or '',
-- soonest lease deadline or '', last wake id, {priority, waiting, first entry id,
-- first job id}...}.
local now, now_s = clock(ARGV[1])
local prefix = ARGV[2]
local nlevels = tonumber(ARGV[4])
local declared = {}
for i = 0, nlevels - 1 do
  declared[#declared + 1] = ARGV[5 + 2 * i]
end
local function last_wake()
  local last = redis.call('XREVRANGE', KEYS[4], '+', '-', 'COUNT', 1)
  if #last > 0 then return last[1][1] end
  return '0-0'
end
if redis.call('HGET', KEYS[5], 'paused') == '1' then
  return {'OK', now_s, 0, '', '', last_wake(), {}}
end
local current = stale_levels(KEYS[1], declared)
if current then
  return {'STALE', current}
end
local streams = level_map(5, nlevels)
promote(KEYS[2], prefix, streams, now_s, ARGV[3])
local expired = count_leased(KEYS[3], now)
local function first_score(key)
  local r = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  if #r == 0 then return '' end
  return r[2]
end
local wake_id = last_wake()
local levels = {}
for i = 1, nlevels do
  local prio = declared[i]
  local stream = streams[prio]
  -- Streams are trimmed past every entry read (NOACK reads), so what they hold has
  -- not been delivered yet.
  local waiting = redis.call('XLEN', stream)
  if waiting > 0 then
    local head = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)
    local entry, job = '', ''
    if #head > 0 then
      entry = head[1][1]
      if head[1][2][1] == 'j' then job = head[1][2][2] or '' end
    end
    levels[#levels + 1] = {prio, waiting, entry, job}
  end
end
return {'OK', now_s, expired, first_score(KEYS[2]), first_score(KEYS[3]), wake_id, levels}
