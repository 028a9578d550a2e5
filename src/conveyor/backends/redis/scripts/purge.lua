#!lua flags=allow-oom
-- Delete finished jobs of one queue whose retention ran out, and drop the index entries
-- of records already gone through their own TTL.
-- KEYS: 1 index:completed, 2 index:failed, 3 index:cancelled, 4 the former `done` zset
--       (deleted: stores written by older versions).
-- ARGV: 1 now, 2 job key prefix, 3 retention (s), 4 cap, 5-7 where to resume in each
--       index ("-" for the start, "(ID" after ID, "" for nothing to do).
-- Returns {deleted records, removed ids, {resume position per index}}.
-- Indexes are read oldest id first (ids are UUIDv7: they sort by creation time) up to
-- the ids created by the cutoff: a job created after it cannot have finished before it.
local now, now_s = clock(ARGV[1])
local prefix, cap = ARGV[2], tonumber(ARGV[4])
local cutoff = now - tonumber(ARGV[3])
local ms = math.floor(cutoff * 1000) + 1
-- The first id created after the cutoff (by its timestamp, the first 12 hex digits).
local upper = '(' .. string.format('%08x-%04x', math.floor(ms / 65536), ms % 65536)
redis.call('UNLINK', KEYS[4])
local deleted, removed, resume = 0, {}, {}
for k = 1, 3 do
  local start = ARGV[4 + k]
  local next_start = ''
  if start ~= '' then
    local ids = redis.call('ZRANGE', KEYS[k], start, upper, 'BYLEX', 'LIMIT', 0, cap)
    for _, id in ipairs(ids) do
      local key = prefix .. id
      local c = redis.call('HGET', key, 'c')
      local at = c and tonumber(c)
      if (at and at <= cutoff) or (not c and redis.call('EXISTS', key) == 0) then
        -- A record may already be gone through its own TTL; the index still holds it.
        deleted = deleted + redis.call('DEL', key)
        for j = 1, 3 do
          redis.call('ZREM', KEYS[j], id)
        end
        removed[#removed + 1] = id
      end
    end
    if #ids >= cap then next_start = '(' .. ids[#ids] end
  end
  resume[k] = next_start
end
return {deleted, removed, resume}
