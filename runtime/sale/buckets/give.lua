#!lua
-- Step 1 of a transfer, on the giving bucket: take up to ARGV[2] unsold
-- units out of it and record them in its outbox, in one step.
-- KEYS: 1 stock, 2 initial, 3 outbox, 4 hold.
-- ARGV: 1 transfer id, 2 units wanted, 3 receiving bucket.
-- The units leave both stock and initial, so this bucket's own law
-- (initial = stock + held) still holds, and sit in the outbox record until
-- the receiver takes them in: the SKU's declared stock is
-- sum(initial - debt) + sum(outbox records), all the while.
-- A record is "<units> <receiving bucket>". The release script of package
-- orderstate writes records of this format too (a unit returned to a held
-- bucket, forwarded to bucket 0): keep the two in step.
-- While this bucket has a Hold (a lowering of the SKU is under way or still
-- owed by bucket 0), units flow only toward bucket 0: a give to any other
-- bucket is refused (-1, nothing moved), so no refill can carry units out
-- of bucket 0 or between other buckets while the lowering takes them back.
-- Returns the units given. Giving again under the same id gives nothing
-- more: an open record answers its units, a closed one ('-') answers 0, so
-- a retried call (a lost reply) never gives twice.
local rec = redis.call('HGET', KEYS[3], ARGV[1])
if rec then
  return tonumber(string.match(rec, '^(%d+) ') or '0')
end
if ARGV[3] ~= '0' and redis.call('EXISTS', KEYS[4]) == 1 then
  return -1
end
local stock = tonumber(redis.call('GET', KEYS[1]) or '0')
local give = math.min(tonumber(ARGV[2]), math.max(stock, 0))
if give <= 0 then
  return 0
end
redis.call('DECRBY', KEYS[1], give)
redis.call('DECRBY', KEYS[2], give)
redis.call('HSET', KEYS[3], ARGV[1], string.format('%d %s', give, ARGV[3]))
return give
