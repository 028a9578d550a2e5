#!lua flags=allow-oom
-- Extend the leases of running jobs of one queue: each token that a job still running
-- for this owner and attempt is leased under gets the new deadline (all jobs of a
-- token belong to one fetch, so to this owner; the deadline is the token's score).
-- KEYS: 1 leases, then job keys.
-- ARGV: 1 now, 2 owner, 3 lease (s), then (id, job key index, attempt) per lease.
-- Returns the positions (0-based) of leases the owner no longer holds.
local now, now_s = clock(ARGV[1])
local owner = ARGV[2]
local deadline = now + tonumber(ARGV[3])
local lost, tokens = {}, {}
local n = 0
for i = 4, #ARGV, 3 do
  local key = KEYS[tonumber(ARGV[i + 1])]
  local f = redis.call('HMGET', key, 's', 'l')
  local attempts, token = lease_of(f[2])
  if f[1] == 'running' and attempts == ARGV[i + 2] and token_owner(token) == owner then
    tokens[token] = true
  else
    lost[#lost + 1] = n
  end
  n = n + 1
end
for token in pairs(tokens) do
  redis.call('ZADD', KEYS[1], 'XX', deadline, token)
end
return lost
