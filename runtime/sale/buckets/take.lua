#!lua
-- Step 2 of a transfer, on the receiving bucket: take in the units an
-- outbox record holds, once.
-- KEYS: 1 stock, 2 initial, 3 debt, 4 inbox. ARGV: 1 transfer id, 2 units.
-- The units first pay this bucket's debt, as a returned unit does (those
-- leave the sale: they enter initial and leave it again with the debt), and
-- the rest goes on sale. The inbox remembers the id, so completing one
-- transfer twice (a retry, two recoveries racing) adds its units once.
-- Returns {units put on sale, units that paid debt, 1 if already taken in}.
if redis.call('HEXISTS', KEYS[4], ARGV[1]) == 1 then
  return {0, 0, 1}
end
if redis.call('EXISTS', KEYS[2]) == 0 then
  -- A bucket warm-up has not created: its units would be counted twice
  -- when it is. The record waits for the warm-up and a Recover.
  return redis.error_reply('NOT_WARMED receiving bucket is not warmed')
end
local m = tonumber(ARGV[2])
local debt = tonumber(redis.call('GET', KEYS[3]) or '0')
local pay = math.min(debt, m)
if pay > 0 then
  if debt > pay then
    redis.call('DECRBY', KEYS[3], pay)
  else
    redis.call('DEL', KEYS[3])
  end
end
local rest = m - pay
if rest > 0 then
  redis.call('INCRBY', KEYS[1], rest)
  redis.call('INCRBY', KEYS[2], rest)
end
redis.call('HSET', KEYS[4], ARGV[1], m)
return {rest, pay, 0}
