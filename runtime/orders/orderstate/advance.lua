#!lua
-- Moves an order's status in the Redis orders hash forward only:
-- queued -> created -> paid | cancelled. A late "created" from the worker can
-- never overwrite a "paid" written by the payment that followed it.
-- The record is "<status> <user>" (the package documentation of orderstate).
-- KEYS: 1 orders hash. ARGV: 1 orderNo, 2 new status, 3 user,
-- 4 "existing" to advance only a record the hash holds (MarkCreated: a
-- record written for an order this Redis never admitted, on a promoted
-- replica say, would make it look admitted and hide its oversell).
-- Returns 1 when the status moved.
local rank = {queued = 0, created = 1, paid = 2, cancelled = 2}
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur and ARGV[4] == 'existing' then
  return 0
end
local user = ARGV[3]
if cur then
  local st, owner = string.match(cur, '^(%S+) (.*)$')
  if st and rank[st] and rank[st] >= rank[ARGV[2]] then
    return 0
  end
  if owner then user = owner end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ' ' .. user)
return 1
