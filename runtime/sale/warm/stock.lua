#!lua
-- Brings one SKU's stock to the declared figure, idempotently.
-- KEYS: 1 stock, 2 initial, 3 debt, 4 declared, 5 bucket count (the last two
--       are kept for split SKUs only).
-- ARGV: 1 declared stock, 2 this bucket's share of it, 3 the bucket count.
--
-- A SKU split into buckets runs this on its bucket 0 alone: bucket 0 is
-- created with its share, and every later change of the declared stock is
-- applied to bucket 0 whole, against the declared figure kept in KEYS[4]
-- (the SKU's initial and debt are spread over its buckets, so bucket 0's
-- initial - debt is not the SKU's declared stock). The other buckets are
-- created by bucket.lua. Bucket 0 records the bucket count at creation: the
-- other buckets' keys depend on it, so another count would put the stock on
-- sale a second time in new buckets. Warm checks the count first (with a
-- clear error); the check here only keeps a racing warm-up from slipping by.
--
-- The three keys keep one invariant, which every script that moves a unit
-- (purchase, release, this one) preserves:
--   initial = stock + units held by buyers
-- (initial is the left side of the audit's conservation law). debt counts
-- the units a lowering could not take back because buyers held them; the
-- release script takes them out of the sale as they come back (debt and
-- initial go down together) before any goes back on sale. The stock the
-- spec declared so far is therefore initial - debt, which makes a re-run a
-- no-op, a raise add exactly the difference once, and a live counter never
-- reset.
-- Returns {action, delta, stock, initial, debt, declared before, debt delta}.
local want = tonumber(ARGV[1])
local share = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local split = n > 1
local count = redis.call('GET', KEYS[5])
if (count and tonumber(count) ~= n) or (not split and redis.call('EXISTS', KEYS[4]) == 1) then
  return redis.error_reply('BUCKET_COUNT the SKU was warmed with ' .. (count or 'another') .. ' buckets')
end
local init = redis.call('GET', KEYS[2])
if split and not count then
  if init and redis.call('EXISTS', KEYS[4]) == 0 then
    return redis.error_reply('BUCKET_COUNT the SKU was warmed with 1 bucket')
  end
  redis.call('SET', KEYS[5], n)
end
if not init then
  if split then
    redis.call('SET', KEYS[4], want)
  end
  local cur = redis.call('GET', KEYS[1])
  if cur then
    -- A counter without its initial (older tooling, a hand edit): adopt it
    -- rather than overwrite buyers' progress.
    redis.call('SET', KEYS[2], share)
    return {'adopted', 0, tonumber(cur), share, 0, want, 0}
  end
  redis.call('SET', KEYS[1], share)
  redis.call('SET', KEYS[2], share)
  -- A debt left without its counters would lower the new declaration.
  redis.call('DEL', KEYS[3])
  return {'created', share, share, share, 0, 0, 0}
end
init = tonumber(init)
local debt = tonumber(redis.call('GET', KEYS[3]) or '0')
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local declared = init - debt
if split then
  local d = redis.call('GET', KEYS[4])
  if not d then
    return redis.error_reply('NO_DECLARED bucket 0 of a split SKU has counters but no declared stock')
  end
  declared = tonumber(d)
  if want ~= declared then
    redis.call('SET', KEYS[4], want)
  end
end
if want == declared then
  return {'unchanged', 0, cur, init, debt, declared, 0}
end

local function setDebt(n)
  if n > 0 then
    redis.call('SET', KEYS[3], n)
  else
    redis.call('DEL', KEYS[3])
  end
end

if want > declared then
  -- A raise first cancels what a lowering still owes: those units were
  -- never taken back, so they need not be added either.
  local add = want - declared
  local pay = math.min(debt, add)
  setDebt(debt - pay)
  local put = add - pay
  if put > 0 then
    cur = redis.call('INCRBY', KEYS[1], put)
    init = redis.call('INCRBY', KEYS[2], put)
  end
  return {'raised', put, cur, init, debt - pay, declared, -pay}
end

-- A lowering takes back what is unsold now; what buyers hold is owed, and
-- paid off by the next units the rollback returns.
local cut = declared - want
local take = math.min(cut, math.max(cur, 0))
if take > 0 then
  cur = redis.call('DECRBY', KEYS[1], take)
  init = redis.call('DECRBY', KEYS[2], take)
end
setDebt(debt + cut - take)
return {'lowered', -take, cur, init, debt + cut - take, declared, cut - take}
