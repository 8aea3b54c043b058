#!lua
-- Brings one SKU's stock to the declared figure, idempotently.
-- KEYS: 1 stock, 2 initial. ARGV: 1 declared stock.
-- `initial` remembers what was declared so far, so a re-run is a no-op, a
-- raise adds exactly the difference once, and a live counter is never reset.
-- A lowering takes back at most what is still unsold.
-- Returns {action, delta, stock, initial}.
local want = tonumber(ARGV[1])
local init = redis.call('GET', KEYS[2])
if not init then
  local cur = redis.call('GET', KEYS[1])
  if cur then
    -- A counter without its initial (older tooling, a hand edit): adopt it
    -- rather than overwrite buyers' progress.
    redis.call('SET', KEYS[2], want)
    return {'adopted', 0, tonumber(cur), want}
  end
  redis.call('SET', KEYS[1], want)
  redis.call('SET', KEYS[2], want)
  return {'created', want, want, want}
end
init = tonumber(init)
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if want == init then
  return {'unchanged', 0, cur, init}
end
if want > init then
  local left = redis.call('INCRBY', KEYS[1], want - init)
  redis.call('SET', KEYS[2], want)
  return {'raised', want - init, left, want}
end
local take = math.min(init - want, math.max(cur, 0))
local left = redis.call('DECRBY', KEYS[1], take)
redis.call('SET', KEYS[2], init - take)
return {'lowered', -take, left, init - take}
