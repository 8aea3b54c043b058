-- shorten.lua: make the given users' admissions lapse grace from now, unless
-- they lapse sooner anyway (a per-SKU refusal: the buyer may still choose
-- another item for a little while; one who leaves frees the budget soon).
-- KEYS[1] admissions (zset user -> admitted ms)
-- ARGV[1] now_ms (the caller's clock), ARGV[2] "1": take now from Redis's clock (TIME) instead,
-- ARGV[3] grace ms, ARGV[4] admission TTL ms, ARGV[5..] users
-- An admission lapses TTL after its score, so the score becomes now + grace - TTL. ZADD XX LT
-- only ever lowers the score of a member already there: it never lengthens an admission and
-- never gives one to a user without it (never admitted, used, lapsed).
-- Returns the number of admissions shortened.
local admissions = KEYS[1]
local now = tonumber(ARGV[1])
if ARGV[2] == '1' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local score = string.format('%.0f', now + tonumber(ARGV[3]) - tonumber(ARGV[4]))
local changed = 0
-- In chunks: unpack() of thousands of values would overflow Lua's stack.
for first = 5, #ARGV, 500 do
  local args = {}
  for i = first, math.min(first + 499, #ARGV) do
    args[#args + 1] = score
    args[#args + 1] = ARGV[i]
  end
  changed = changed + redis.call('ZADD', admissions, 'XX', 'LT', 'CH', unpack(args))
end
return changed
