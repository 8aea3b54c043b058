-- admit.lua: admit the next ticket holders, sale-wide at most rate per second
-- and never more outstanding admissions than the budget.
-- KEYS[1] queue (zset), KEYS[2] meta (hash), KEYS[3] admissions (zset user -> admitted ms), KEYS[4] joined (hash)
-- ARGV[1] now_ms, ARGV[2] start_ms, ARGV[3] budget = floor(remaining stock * overbook) (0 when sold out),
-- ARGV[4] rate per second, ARGV[5] admission TTL ms, ARGV[6] most admitted by one call,
-- ARGV[7] "1": take now from Redis's clock (TIME) instead of ARGV[1],
-- ARGV[8] floor: the outstanding count the caller read before it read the stock (0: none)
-- Returns {flag, admitted, new, length, outstanding, wait_ms...}: flag -1 = not warmed, 0 = ok.
-- Work per call is O(log N + n) with n <= ARGV[6]: ZRANGE by rank, one ZADD per admitted.
local queue, meta, admissions, joined = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now, start = tonumber(ARGV[1]), tonumber(ARGV[2])
local budget, rate, ttl, most = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local floor = tonumber(ARGV[8] or '0')
-- One clock for every pod: a pod whose clock runs ahead must neither admit
-- before the start nor move "last" ahead (which would stall the bucket for
-- the pods with good clocks).
if ARGV[7] == '1' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local now_s = string.format('%.0f', now)

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
-- The caller read the stock after it read the outstanding count (floor):
-- an admission freed since (Done) may belong to a purchase whose unit the
-- caller's stock figure still counts, so it still counts here.
local counted = math.max(outstanding, floor)

-- Token bucket, one second of burst; it starts empty at the start. A pod
-- whose clock lags ("now" before "last") adds nothing and moves nothing back.
local tb = redis.call('HMGET', meta, 'tokens', 'last')
local tokens, last = tonumber(tb[1] or '0'), tonumber(tb[2] or start)
local burst = math.max(rate, 1)
if now > last then
  tokens = math.min(burst, tokens + (now - last) * rate / 1000)
  last = now
end

local n = math.min(math.floor(tokens), budget - counted, length - admitted, most)
local waits = {}
if n > 0 then
  local users = redis.call('ZRANGE', queue, admitted, admitted + n - 1)
  n = #users
  -- In chunks: unpack() of thousands of values would overflow Lua's stack.
  for first = 1, n, 500 do
    local last_i = math.min(first + 499, n)
    local args, names = {}, {}
    for i = first, last_i do
      args[#args + 1] = now_s
      args[#args + 1] = users[i]
      names[#names + 1] = users[i]
    end
    redis.call('ZADD', admissions, unpack(args))
    local at = redis.call('HMGET', joined, unpack(names))
    for j = 1, #names do
      local w = now - tonumber(at[j] or now)
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
