#!lua
-- One purchase, all or nothing. Every check comes before the first write, so
-- a refusal leaves every key untouched (a replay rewrites its token key
-- unchanged, see below); the shebang makes Redis refuse the
-- whole script up front when it is out of memory, never half-way.
--
-- KEYS: 1 stock, 2 holders, 3 seq, 4 stream, 5 expiry, 6 orders, 7 token
-- ARGV: 1 sale, 2 sku, 3 user, 4 per-user limit, 5 now (unix ms),
--       6 payment deadline (unix ms), 7 amount,
--       8 the least the token key must live from now, by Redis' clock (ms),
--       9 (optional) when the token key may expire: the token's own expiry
--         plus a margin (unix ms, by the clock that signed the token)
-- Returns {status, orderNo, remaining}; status is one of
--   OK, REPLAY (this token already made orderNo), SOLD_OUT, LIMIT, NOT_WARMED.
local prior = redis.call('GET', KEYS[7])
if prior then
  -- Rewrite the key as it is: a write that changes nothing but is
  -- replicated and appended to the AOF, so that a WAIT or WAITAOF on this
  -- connection covers it, and with it the earlier order (a replica applies
  -- the stream in order). Without it a durable sale would answer a retry
  -- whose first answer was lost without knowing the order reached anyone.
  redis.call('SET', KEYS[7], prior, 'KEEPTTL')
  return {'REPLAY', prior, -1}
end
local stock = redis.call('GET', KEYS[1])
if not stock then
  return {'NOT_WARMED', '', -1}
end
stock = tonumber(stock)
if stock <= 0 then
  return {'SOLD_OUT', '', 0}
end
local held = tonumber(redis.call('HGET', KEYS[2], ARGV[3]) or '0')
if held >= tonumber(ARGV[4]) then
  return {'LIMIT', '', stock}
end
local left = redis.call('DECR', KEYS[1])
redis.call('HINCRBY', KEYS[2], ARGV[3], 1)
local n = redis.call('HINCRBY', KEYS[3], ARGV[3], 1)
-- The order number is a function of (sale, sku, user, n): replaying this
-- order anywhere downstream can never mint a second one.
local orderNo = ARGV[2] .. '-' .. string.sub(redis.sha1hex(ARGV[1] .. '\n' .. ARGV[2] .. '\n' .. ARGV[3] .. '\n' .. n), 1, 24)
redis.call('XADD', KEYS[4], '*', 'order', orderNo, 'sale', ARGV[1], 'sku', ARGV[2], 'user', ARGV[3],
  'n', n, 'amount', ARGV[7], 'at', ARGV[5], 'deadline', ARGV[6])
redis.call('ZADD', KEYS[5], ARGV[6], orderNo)
-- The order's record "<status> <user>", whose format package orderstate owns.
redis.call('HSET', KEYS[6], orderNo, 'queued ' .. ARGV[3])
-- The token key must outlive every pod's belief that the token is valid,
-- or the same token could make a second order. Pods judge validity by the
-- expiry written in the token, so the key expires at that instant plus a
-- margin (ARGV[9]); if Redis' clock is ahead of the pod's, that instant comes
-- early by Redis' clock, so the key also lives at least the token's remaining
-- life as the pod sees it, plus the margin (ARGV[8]), from Redis' now.
local t = redis.call('TIME')
local at = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[8])
local expires = tonumber(ARGV[9] or '0')
if expires > at then
  at = expires
end
redis.call('SET', KEYS[7], orderNo, 'PXAT', at)
return {'OK', orderNo, left}
