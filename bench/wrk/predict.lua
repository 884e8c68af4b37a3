-- wrk script of bench/_loadgen.py: distinct POST /predict bodies (1 point each, or as many as
-- the first script argument says), and a JSON summary line (prefix "JSON ") in the shape of
-- bench/_loadgen.py's Outcomes.summary.
--   wrk -t1 -c32 -d5s -s bench/wrk/predict.lua http://127.0.0.1:8000/predict -- 16
local bodies = {}
local n = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

init = function(args)
  local points = tonumber(args[1]) or 1
  math.randomseed(0)
  for i = 1, 256 do
    local batch = {}
    for j = 1, points do
      batch[j] = string.format('{"x": %.6f, "y": %.6f}',
        math.random() * 2 - 1, math.random() * 2 - 1)
    end
    bodies[i] = '{"points": [' .. table.concat(batch, ", ") .. ']}'
  end
end

request = function()
  n = n % 256 + 1
  return wrk.format(nil, nil, nil, bodies[n])
end

done = function(summary, latency, requests)
  local e = summary.errors
  local seconds = summary.duration / 1e6
  local ok = summary.requests - e.status
  io.write(string.format(
    'JSON {"requests": %d, "ok": %d, "statuses": {"200": %d, "4xx/5xx": %d}, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "timeout": %d}, ' ..
    '"seconds": %.3f, "rps": %.1f, "p50_ms": %.3f, "p90_ms": %.3f, "p99_ms": %.3f, ' ..
    '"max_ms": %.3f}\n',
    summary.requests, ok, ok, e.status, e.connect, e.read, e.write, e.timeout,
    seconds, ok / seconds, latency:percentile(50) / 1e3, latency:percentile(90) / 1e3,
    latency:percentile(99) / 1e3, latency.max / 1e3))
end
