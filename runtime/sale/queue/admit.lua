-- admit.lua: admit the next ticket holders, sale-wide at most rate per second
-- and never more outstanding admissions than the budget.
-- KEYS[1] queue (zset), KEYS[2] meta (hash), KEYS[3] admissions (zset user -> admitted ms), KEYS[4] joined (hash)
-- ARGV[1] now_ms, ARGV[2] start_ms, ARGV[3] budget = floor(remaining stock * overbook) (0 when sold out),
-- ARGV[4] rate per second, ARGV[5] admission TTL ms, ARGV[6] most admitted by one call
-- Returns {flag, admitted, new, length, outstanding, wait_ms...}: flag -1 = not warmed, 0 = ok.
-- Work per call is O(log N + n) with n <= ARGV[6]: ZRANGE by rank, one ZADD per admitted.
local queue, meta, admissions, joined = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now, start = tonumber(ARGV[1]), tonumber(ARGV[2])
local budget, rate, ttl, most = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])

if redis.call('EXISTS', meta) == 0 then
  return {-1, 0, 0, 0, 0}
end
local admitted = tonumber(redis.call('HGET', meta, 'admitted') or '0')
local length = redis.call('ZCARD', queue)
if now < start then
  return {0, admitted, 0, length, redis.call('ZCARD', admissions)}
end

-- Admissions older than the TTL stop counting against the budget.
redis.call('ZREMRANGEBYSCORE', admissions, '-inf', now - ttl)
local outstanding = redis.call('ZCARD', admissions)

-- Token bucket, one second of burst; it starts empty at the start. A pod
-- whose clock lags ("now" before "last") adds nothing and moves nothing back.
local tb = redis.call('HMGET', meta, 'tokens', 'last')
local tokens, last = tonumber(tb[1] or '0'), tonumber(tb[2] or start)
local burst = math.max(rate, 1)
if now > last then
  tokens = math.min(burst, tokens + (now - last) * rate / 1000)
  last = now
end

local n = math.min(math.floor(tokens), budget - outstanding, length - admitted, most)
local waits = {}
if n > 0 then
  local users = redis.call('ZRANGE', queue, admitted, admitted + n - 1)
  n = #users
  -- In chunks: unpack() of thousands of values would overflow Lua's stack.
  for first = 1, n, 500 do
    local last_i = math.min(first + 499, n)
    local args, names = {}, {}
    for i = first, last_i do
      args[#args + 1] = ARGV[1]
      args[#args + 1] = users[i]
      names[#names + 1] = users[i]
    end
    redis.call('ZADD', admissions, unpack(args))
    local at = redis.call('HMGET', joined, unpack(names))
    for j = 1, #names do
      local w = now - tonumber(at[j] or ARGV[1])
      if w < 0 then w = 0 end
      waits[first + j - 1] = w
    end
  end
  admitted = admitted + n
  tokens = tokens - n
  outstanding = redis.call('ZCARD', admissions)
else
  n = 0
end
redis.call('HSET', meta, 'admitted', admitted, 'tokens', string.format('%.6f', tokens), 'last', string.format('%.0f', last))
local out = {0, admitted, n, length, outstanding}
for i = 1, #waits do
  out[5 + i] = waits[i]
end
return out
