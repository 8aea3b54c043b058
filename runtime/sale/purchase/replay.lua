#!lua
-- The order a token already made, for a retry refused before the purchase
-- script (package seckill's replayOr) in a sale that asks for durability.
-- Like the purchase script's REPLAY branch, it rewrites the token's record
-- unchanged, so that a WAIT or WAITAOF on this connection covers the
-- earlier order before the buyer is told about it.
--
-- KEYS: 1 tokens (the bucket's hash nonce -> order number)
-- ARGV: 1 the token's nonce
-- Returns {status, orderNo, -1}; status is REPLAY or NONE (no order).
local prior = redis.call('HGET', KEYS[1], ARGV[1])
if not prior then
  return {'NONE', '', -1}
end
redis.call('HSET', KEYS[1], ARGV[1], prior)
return {'REPLAY', prior, -1}
