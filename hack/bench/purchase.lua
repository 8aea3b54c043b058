-- wrk script of hack/bench.sh: POST a purchase, one distinct buyer per request.
--
--   wrk -t2 -c128 -d10s --latency -s purchase.lua URL -- TOKENS SKU MODE EXPECT
--
-- TOKENS  prefix of the token files: thread i reads TOKENS.i, lines "user token"
--         (hack/bench.sh splits the output of `flashsale token` into one file
--         per thread, so no two threads ever send the same token).
-- SKU     the "sku" field of the body.
-- MODE    once: every token is sent at most once; when a thread runs out it
--               starts over and counts every reused token as "reused" (the
--               bench reports it: those answers are replays, not new orders).
--         wrap: reuse freely (sold-out and bare runs, where tokens do not matter).
-- EXPECT  the expected status; other statuses are counted and one body of
--         each is kept as a sample.
--
-- The request is the same shape in every mode: a small JSON body with the SKU
-- and a token, the X-User-ID header, built per request (the cost in wrk is the
-- same whatever the server is). done() prints machine-readable lines starting
-- with "BENCH " that hack/bench.sh parses.

local find, sub, concat = string.find, string.sub, table.concat

local threads = {}
local nthreads = 0

function setup(thread)
  thread:set("id", nthreads)
  nthreads = nthreads + 1
  threads[#threads + 1] = thread
end

-- Per-thread state (each thread has its own Lua state).
local buf, len, pos = "", 0, 1
local sku, mode = "b1", "once"
expect = 202
local prefix, suffix
counts = {}
samples = {}
used = 0
reused = 0
lines = 0

function init(args)
  local file = args[1] .. "." .. tostring(id)
  sku = args[2] or sku
  mode = args[3] or mode
  expect = tonumber(args[4] or "202")
  local f = assert(io.open(file, "rb"))
  buf = f:read("*a")
  f:close()
  len = #buf
  assert(len > 0, "empty token file " .. file)
  local _, n = buf:gsub("\n", "")
  lines = n
  local host = wrk.host
  if wrk.port then
    host = host .. ":" .. wrk.port
  end
  prefix = "POST " .. wrk.path .. " HTTP/1.1\r\nHost: " .. host ..
    "\r\nContent-Type: application/json\r\nX-User-ID: "
  suffix = '{"sku":"' .. sku .. '","token":"'
end

function request()
  if pos > len then
    pos = 1
  end
  local sp = find(buf, " ", pos, true)
  local nl = find(buf, "\n", sp, true) or (len + 1)
  local user = sub(buf, pos, sp - 1)
  local body = suffix .. sub(buf, sp + 1, nl - 1) .. '"}'
  pos = nl + 1
  used = used + 1
  if used > lines and mode == "once" then
    reused = reused + 1
  end
  return concat({prefix, user, "\r\nContent-Length: ", #body, "\r\n\r\n", body})
end

function response(status, headers, body)
  counts[status] = (counts[status] or 0) + 1
  if status ~= expect and samples[status] == nil then
    samples[status] = body
  end
end

function done(summary, latency, requests)
  local total, all, used_all, reused_all, lines_all = {}, {}, 0, 0, 0
  for _, t in ipairs(threads) do
    for status, n in pairs(t:get("counts") or {}) do
      total[status] = (total[status] or 0) + n
    end
    for status, b in pairs(t:get("samples") or {}) do
      all[status] = all[status] or b
    end
    used_all = used_all + (t:get("used") or 0)
    reused_all = reused_all + (t:get("reused") or 0)
    lines_all = lines_all + (t:get("lines") or 0)
  end
  local expect = threads[1] and threads[1]:get("expect") or 202
  local e = summary.errors
  io.write(string.format("BENCH requests %d\n", summary.requests))
  io.write(string.format("BENCH duration_us %d\n", summary.duration))
  io.write(string.format("BENCH rps %.1f\n", summary.requests / (summary.duration / 1e6)))
  io.write(string.format("BENCH p50_us %d\n", latency:percentile(50)))
  io.write(string.format("BENCH p90_us %d\n", latency:percentile(90)))
  io.write(string.format("BENCH p99_us %d\n", latency:percentile(99)))
  io.write(string.format("BENCH max_us %d\n", latency.max))
  io.write(string.format("BENCH socket_errors %d\n", e.connect + e.read + e.write + e.timeout))
  io.write(string.format("BENCH tokens_available %d\n", lines_all))
  io.write(string.format("BENCH tokens_sent %d\n", used_all))
  io.write(string.format("BENCH tokens_reused %d\n", reused_all))
  local unexpected = 0
  for status, n in pairs(total) do
    io.write(string.format("BENCH status_%d %d\n", status, n))
    if status ~= expect then
      unexpected = unexpected + n
    end
  end
  io.write(string.format("BENCH unexpected %d\n", unexpected))
  for status, b in pairs(all) do
    io.write(string.format("BENCH sample_%d %s\n", status, (b:gsub("[\r\n]+", " "))))
  end
end
