#!lua
-- Step 1 of a transfer, on the giving bucket: take up to ARGV[2] unsold
-- units out of it and record them in its outbox, in one step.
-- KEYS: 1 stock, 2 initial, 3 debt, 4 outbox.
-- ARGV: 1 transfer id, 2 units wanted, 3 receiving bucket,
--       4 "1" to also owe units buyers hold in this bucket (a debt it pays as
--         they come back) when its stock falls short, else "0".
-- The units leave both stock and initial, so this bucket's own law
-- (initial = stock + held) still holds, and sit in the outbox record until
-- the receiver takes them in: the SKU's declared stock is
-- sum(initial - debt) + sum(outbox records), all the while.
-- Returns the units given. Giving again under the same id gives nothing
-- more: an open record answers its units, a closed one ('-') answers 0, so
-- a retried call (a lost reply) never gives twice.
local rec = redis.call('HGET', KEYS[4], ARGV[1])
if rec then
  return tonumber(string.match(rec, '^(%d+) ') or '0')
end
local want = tonumber(ARGV[2])
local stock = tonumber(redis.call('GET', KEYS[1]) or '0')
local give = math.min(want, math.max(stock, 0))
if give > 0 then
  redis.call('DECRBY', KEYS[1], give)
  redis.call('DECRBY', KEYS[2], give)
end
local owe = 0
if ARGV[4] == '1' and give < want then
  -- Units buyers hold and no debt claims yet: initial - stock - debt.
  local held = tonumber(redis.call('GET', KEYS[2]) or '0') - (stock - give)
  local debt = tonumber(redis.call('GET', KEYS[3]) or '0')
  owe = math.min(want - give, math.max(held - debt, 0))
  if owe > 0 then
    redis.call('INCRBY', KEYS[3], owe)
  end
end
local m = give + owe
if m > 0 then
  redis.call('HSET', KEYS[4], ARGV[1], string.format('%d %s', m, ARGV[3]))
end
return m
