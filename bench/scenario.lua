-- wrk script for `make bench` (bench/run.py runs it; see there).
--
--   wrk -t1 -c64 -d10s -s bench/scenario.lua URL -- METHOD PATHS_FILE BODY
--
-- METHOD      GET, PUT or POST
-- PATHS_FILE  request paths, one per line; each thread cycles through them from its own offset
-- BODY        "-" for none, "random-value" for {"value": <32 random hex chars>}, "@FILE" for the bodies
--             in FILE, one per line, cycled as the paths are (bench/logins.py: a pool of distinct logins),
--             else a literal body
-- BENCH_HEADERS (environment) a flat JSON object of extra headers, e.g. Authorization
--
-- done() prints one JSON line: requests, errors (HTTP >= 400, socket errors, timeouts),
-- duration and latency percentiles in ms.

local threads = {}
local counter = 0

function setup(thread)
   thread:set("id", counter)
   counter = counter + 1
   table.insert(threads, thread)
end

function init(args)
   method, body_mode = args[1], args[3]
   paths = {}
   for line in io.lines(args[2]) do
      paths[#paths + 1] = line
   end
   bodies = {}
   if body_mode:sub(1, 1) == "@" then
      for line in io.lines(body_mode:sub(2)) do
         bodies[#bodies + 1] = line
      end
   end
   n = id * 7919
   math.randomseed(os.time() + id)
   wrk.headers["Content-Type"] = "application/json"
   local extra = os.getenv("BENCH_HEADERS") or "{}"
   for name, value in extra:gmatch('"([^"]+)"%s*:%s*"([^"]*)"') do
      wrk.headers[name] = value
   end
end

local function random_hex(len)
   local t = {}
   for i = 1, len do
      t[i] = string.format("%x", math.random(0, 15))
   end
   return table.concat(t)
end

function request()
   n = n + 1
   local path = paths[(n % #paths) + 1]
   local body = nil
   if #bodies > 0 then
      body = bodies[(n % #bodies) + 1]
   elseif body_mode == "random-value" then
      body = '{"value":"' .. random_hex(32) .. '"}'
   elseif body_mode ~= "-" then
      body = body_mode
   end
   return wrk.format(method, path, nil, body)
end

function done(summary, latency, requests)
   local e = summary.errors
   local errors = e.connect + e.read + e.write + e.status + e.timeout
   io.write(string.format(
      '{"requests": %d, "errors": %d, "duration_s": %.3f, "rps": %.1f, "p50_ms": %.2f, "p95_ms": %.2f, "p99_ms": %.2f}\n',
      summary.requests, errors, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
      latency:percentile(50) / 1000, latency:percentile(95) / 1000, latency:percentile(99) / 1000))
end
