#!lua
-- Returns the unit of a cancelled order, exactly once.
-- The order's membership in the expiry set is the proof that its unit is
-- still out: ZREM succeeds once, so a retry after a crash, or a second
-- rollback process, finds nothing to return.
-- While a lowering of the stock is owed (debt > 0, see warm's stock.lua) the
-- unit pays it off and leaves the sale: debt and initial go down together,
-- so the declared stock (initial - debt) and initial = stock + held both
-- hold. Only with no debt does the unit go back on sale.
-- A bucket >= 1 of a split SKU whose Hold is set (a lowering is applied or
-- owed in bucket 0, see package buckets) does not put the unit on sale: it
-- forwards it to bucket 0, which owes the debt. It leaves this bucket's
-- initial (as a give does) and is recorded in this bucket's outbox as a
-- transfer "1 0" under ARGV[3] (buckets.ReturnID): the record format is
-- package buckets' (give.lua), keep the two in step. The caller then
-- completes the transfer (buckets.CompleteReturn); a crash before that
-- leaves the record to buckets.Recover, and meanwhile the unit counts as in
-- flight (buckets.InFlight).
-- The order's record becomes "cancelled <user>" (see package orderstate).
-- KEYS: 1 stock, 2 holders, 3 expiry, 4 orders, 5 initial, 6 debt, 7 hold,
--       8 outbox.
-- ARGV: 1 orderNo, 2 user, 3 forward transfer id, 4 this bucket's number.
-- Returns 0 when the unit already went back, 1 when it went back on sale,
-- 2 when it paid off a lowering, 3 when it was forwarded to bucket 0.
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
elseif ARGV[4] ~= '0' and redis.call('EXISTS', KEYS[7]) == 1 then
  redis.call('DECR', KEYS[5])
  redis.call('HSET', KEYS[8], ARGV[3], '1 0')
  out = 3
else
  redis.call('INCR', KEYS[1])
end
local held = redis.call('HINCRBY', KEYS[2], ARGV[2], -1)
if held <= 0 then
  redis.call('HDEL', KEYS[2], ARGV[2])
end
redis.call('HSET', KEYS[4], ARGV[1], 'cancelled ' .. ARGV[2])
return out
