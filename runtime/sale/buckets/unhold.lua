#!lua
-- Deletes one bucket's Hold if it is still the one expected (a newer
-- lowering sets new ones, which stay) and, on bucket 0, if it owes nothing.
-- KEYS: 1 hold, 2 (bucket 0 only) debt. ARGV: 1 the Hold's expected value.
-- Returns 1 when deleted.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
if KEYS[2] and tonumber(redis.call('GET', KEYS[2]) or '0') > 0 then
  return 0
end
redis.call('DEL', KEYS[1])
return 1
