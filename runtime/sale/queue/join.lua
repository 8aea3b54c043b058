-- join.lua: give user a place in the waiting room, once.
-- KEYS[1] queue (zset user -> place score), KEYS[2] meta (hash), KEYS[3] joined (hash user -> join ms),
-- KEYS[4] admissions (zset user -> admitted ms)
-- ARGV[1] user, ARGV[2] now_ms (the caller's clock), ARGV[3] start_ms, ARGV[4] random integer in [0, 2^52),
-- ARGV[5] "1": take now from Redis's clock (TIME) instead of ARGV[2]
-- Returns {flag, rank, admitted, length, admitted_ms}: flag -1 = not warmed (meta missing),
-- 0 = already queued (same place as before), 1 = newly queued; admitted_ms is the user's
-- admission time, -1 when they hold no outstanding admission.
local queue, meta, joined, admissions = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local user = ARGV[1]

if redis.call('EXISTS', meta) == 0 then
  return {-1, 0, 0, 0, -1}
end
local admitted = tonumber(redis.call('HGET', meta, 'admitted') or '0')

local rank = redis.call('ZRANK', queue, user)
if rank then
  local at = redis.call('ZSCORE', admissions, user)
  local at_ms = -1
  if at then at_ms = tonumber(at) end
  return {0, rank, admitted, redis.call('ZCARD', queue), at_ms}
end

-- One clock for every pod: a pod whose clock runs ahead must not end the
-- shuffle early (a joiner before the real start would queue in arrival order).
local now = ARGV[2]
if ARGV[5] == '1' then
  local t = redis.call('TIME')
  now = string.format('%.0f', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
end

-- Before the start a joiner draws a random place, so that who joined first
-- (or with the fastest script) gains nothing. Once admission has begun
-- ("last" is set by the first admit at/after the start) every joiner goes
-- to the end whatever its pod's clock says: a random place among the first
-- A ranks would push an admitted buyer out of the admitted ranks.
local score
if tonumber(now) < tonumber(ARGV[3]) and redis.call('HEXISTS', meta, 'last') == 0 then
  score = ARGV[4]
else
  score = string.format('%.0f', 4503599627370496 + redis.call('HINCRBY', meta, 'seq', 1))
end
redis.call('ZADD', queue, score, user)
redis.call('HSET', joined, user, now)
return {1, redis.call('ZRANK', queue, user), admitted, redis.call('ZCARD', queue), -1}
