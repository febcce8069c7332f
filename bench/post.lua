-- wrk script: POST a real MinIO webhook payload, rewriting its versionId per request.
--
--   wrk -s bench/post.lua http://HOST:PORT/job/SERVICE -- FIXTURE DUP_RATIO [POOL] [RUN_ID] [DELAY_MS]
--
-- FIXTURE    a MinIO event JSON file with one "versionId" (tests/fixtures/minio-events/*.json)
-- DUP_RATIO  share of requests that repeat an object version, 0.0 (all unique) .. 1.0 (all repeats)
-- POOL       how many distinct versions the repeats cycle through (default 64); with DUP_RATIO 1
--            only the first POOL requests can be forwarded, every later one is a duplicate
-- RUN_ID     makes unique versions unique across runs against the same dedup store
-- DELAY_MS   when given, each connection waits this long after each answer before its next
--            request: a paced (not open-loop) rate of about connections * 1000 / DELAY_MS req/s,
--            used for the latency-at-half-load figure (wrk has no fixed-rate mode; wrk2 is not
--            packaged by Debian)
--
-- The body is split once around the versionId value, so each request costs two string
-- concatenations, not a JSON encode: the load generator should spend its CPU on sending.

local thread_no = 0

function setup(thread)
  thread_no = thread_no + 1
  thread:set("tid", thread_no)
end

function init(args)
  local path = args[1] or error("usage: -- FIXTURE DUP_RATIO [POOL] [RUN_ID]")
  ratio = tonumber(args[2] or "0")
  pool = tonumber(args[3] or "64")
  run_id = args[4] or tostring(os.time())
  local f = assert(io.open(path, "rb"))
  local body = f:read("*a")
  f:close()
  local s, e = body:find('"versionId":"[^"]*"')
  if not s then error(path .. " has no versionId to rewrite") end
  prefix = body:sub(1, s - 1) .. '"versionId":"'
  suffix = '"' .. body:sub(e + 1)
  headers = {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer bench-0123456789abcdef",
  }
  counter = 0
  local delay_ms = tonumber(args[5] or "")
  if delay_ms then
    -- wrk looks for a global `delay` after init, so defining it here switches pacing on.
    delay = function() return delay_ms end
  end
  math.randomseed((tid or 1) * 7919 + os.time())
end

function request()
  counter = counter + 1
  local version
  if ratio >= 1 or (ratio > 0 and math.random() < ratio) then
    version = "dup-" .. run_id .. "-" .. math.random(pool)
  else
    version = "u-" .. run_id .. "-" .. (tid or 1) .. "-" .. counter
  end
  return wrk.format("POST", nil, headers, prefix .. version .. suffix)
end
