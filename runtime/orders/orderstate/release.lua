#!lua
-- Returns the unit of a cancelled order to stock, exactly once.
-- The order's membership in the expiry set is the proof that its unit is
-- still out: ZREM succeeds once, so a retry after a crash, or a second
-- rollback process, finds nothing to return.
-- The order's record becomes "cancelled <user>" (see package orderstate).
-- KEYS: 1 stock, 2 holders, 3 expiry, 4 orders. ARGV: 1 orderNo, 2 user.
-- Returns 1 when the unit went back, 0 when it already had.
if redis.call('ZREM', KEYS[3], ARGV[1]) == 0 then
  return 0
end
redis.call('INCR', KEYS[1])
local held = redis.call('HINCRBY', KEYS[2], ARGV[2], -1)
if held <= 0 then
  redis.call('HDEL', KEYS[2], ARGV[2])
end
redis.call('HSET', KEYS[4], ARGV[1], 'cancelled ' .. ARGV[2])
return 1
