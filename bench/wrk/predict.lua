-- wrk script of bench/_loadgen.py: distinct prediction bodies of one protocol (predict, the
-- default; v1: TF Serving row form; v2: Open Inference JSON), 1 point each or as many as a
-- numeric argument says, and a JSON summary line (prefix "JSON ") in the shape of
-- bench/_loadgen.py's Outcomes.summary.
--   wrk -t1 -c32 -d5s -s bench/wrk/predict.lua http://127.0.0.1:8000/predict -- 16
--   wrk -t1 -c32 -d5s -s bench/wrk/predict.lua http://127.0.0.1:8000/v1/models/xor:predict -- v1
local bodies = {}
local n = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

local function body(protocol, points)
  local items = {}
  for j = 1, points do
    local x, y = math.random() * 2 - 1, math.random() * 2 - 1
    if protocol == "v1" then
      items[j] = string.format('[%.6f, %.6f]', x, y)
    elseif protocol == "v2" then
      items[j] = string.format('%.6f, %.6f', x, y)
    else
      items[j] = string.format('{"x": %.6f, "y": %.6f}', x, y)
    end
  end
  local joined = table.concat(items, ", ")
  if protocol == "v1" then
    return '{"instances": [' .. joined .. ']}'
  elseif protocol == "v2" then
    return string.format('{"inputs": [{"name": "points", "shape": [%d, 2], "datatype": "FP32", '
      .. '"data": [%s]}]}', points, joined)
  end
  return '{"points": [' .. joined .. ']}'
end

init = function(args)
  local protocol, points = "predict", 1
  for _, a in ipairs(args) do
    if tonumber(a) then points = tonumber(a) else protocol = a end
  end
  math.randomseed(0)
  for i = 1, 256 do
    bodies[i] = body(protocol, points)
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
