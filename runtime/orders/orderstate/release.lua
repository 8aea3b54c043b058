#!lua
-- Returns the unit of a cancelled order, exactly once.
-- The order's membership in the expiry set is the proof that its unit is
-- still out: ZREM succeeds once, so a retry after a crash, or a second
-- rollback process, finds nothing to return.
-- While a lowering of the stock is owed (debt > 0, see warm's stock.lua) the
-- unit pays it off and leaves the sale: debt and initial go down together,
-- so the declared stock (initial - debt) and initial = stock + held both
-- hold. Only with no debt does the unit go back on sale.
-- The order's record becomes "cancelled <user>" (see package orderstate).
-- KEYS: 1 stock, 2 holders, 3 expiry, 4 orders, 5 initial, 6 debt.
-- ARGV: 1 orderNo, 2 user.
-- Returns 0 when the unit already went back, 1 when it went back on sale,
-- 2 when it paid off a lowering.
if redis.call('ZREM', KEYS[3], ARGV[1]) == 0 then
  return 0
end
local out = 1
local debt = tonumber(redis.call('GET', KEYS[6]) or '0')
if debt > 0 then
  if debt == 1 then
    redis.call('DEL', KEYS[6])
  else
    redis.call('DECR', KEYS[6])
  end
  redis.call('DECR', KEYS[5])
  out = 2
else
  redis.call('INCR', KEYS[1])
end
local held = redis.call('HINCRBY', KEYS[2], ARGV[2], -1)
if held <= 0 then
  redis.call('HDEL', KEYS[2], ARGV[2])
end
redis.call('HSET', KEYS[4], ARGV[1], 'cancelled ' .. ARGV[2])
return out
