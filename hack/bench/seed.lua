-- The seed article's purchase script (/work/shared/seed: "Redis Lua Script
-- (Atomic Check-Decrement-Dedup-Queue)"), the yardstick of hack/bench.sh:
-- GET, SISMEMBER, DECR, SADD, RPUSH. Verbatim but for the error replies,
-- which are plain strings here so redis-benchmark does not count them as
-- failed calls (the bench checks the sets instead).
-- KEYS[1] = stock key, KEYS[2] = users set, KEYS[3] = queue list
-- ARGV[1] = user_id, ARGV[2] = order_payload (json string)
local stock = tonumber(redis.call('GET', KEYS[1]) or '-1')
if stock <= 0 then
return "OUT_OF_STOCK"
end
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1 then
return "ALREADY_BUY"
end
redis.call('DECR', KEYS[1])
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('RPUSH', KEYS[3], ARGV[2])
return "OK"
