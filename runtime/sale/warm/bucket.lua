#!lua
-- Creates bucket b >= 1 of a SKU split into buckets with its share of the
-- declared stock, once: a bucket that exists is left alone (buyers and
-- transfers move its counters; stock changes go to bucket 0 only).
-- KEYS: 1 stock, 2 initial, 3 debt. ARGV: 1 the bucket's share.
-- Returns {action, share given}.
if redis.call('EXISTS', KEYS[2]) == 1 then
  return {'unchanged', 0}
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[3])
return {'created', tonumber(ARGV[1])}
