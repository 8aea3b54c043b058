#!lua
-- Records a payment in Redis: the order leaves the expiry set (its unit is
-- sold for good) and its status becomes paid.
-- The order's record becomes "paid <user>" (see package orderstate).
-- KEYS: 1 expiry, 2 orders. ARGV: 1 orderNo, 2 user.
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], 'paid ' .. ARGV[2])
return 1
