#!lua
-- On bucket 0 of a split SKU: may its Holds go? (see hold.go)
-- KEYS: 1 hold, 2 debt. ARGV: 1 "end" when the warm-up that set the Holds
-- has applied its lowering (it marks the Hold "D <id>"), else "poll".
-- Returns the Holds' id when they may go (no lowering under way, nothing
-- owed), else "".
local v = redis.call('GET', KEYS[1])
if not v then
  return ''
end
local state, id = string.match(v, '^(%a) (.+)$')
if not id then
  return redis.error_reply('BAD_HOLD malformed hold ' .. v)
end
if state == 'L' then
  if ARGV[1] ~= 'end' then
    return '' -- a lowering is under way: bucket 0 owes nothing yet
  end
  redis.call('SET', KEYS[1], 'D ' .. id)
end
if tonumber(redis.call('GET', KEYS[2]) or '0') > 0 then
  return ''
end
return id
