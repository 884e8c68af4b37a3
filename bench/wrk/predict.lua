-- wrk script for bench/serve.py: distinct single-point prediction bodies of one protocol
-- (predict, the default; v1: TF Serving row form; v2: Open Inference JSON), and a JSON
-- summary line (prefix "JSON ") in the shape bench/_loadgen.py prints.
--   wrk -t1 -c32 -d5s -s bench/wrk/predict.lua http://127.0.0.1:8000/predict
--   wrk -t1 -c32 -d5s -s bench/wrk/predict.lua http://127.0.0.1:8000/v1/models/xor:predict -- v1
local shapes = {
  predict = '{"points": [{"x": %.6f, "y": %.6f}]}',
  v1 = '{"instances": [[%.6f, %.6f]]}',
  v2 = '{"inputs": [{"name": "points", "shape": [1, 2], "datatype": "FP32", "data": [%.6f, %.6f]}]}',
}
local bodies = {}

init = function(args)
  local shape = shapes[args[1] or "predict"]
  math.randomseed(0)
  for i = 1, 256 do
    bodies[i] = string.format(shape, math.random() * 2 - 1, math.random() * 2 - 1)
  end
end
local n = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

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
    '"failures": {"connect": %d, "read": %d, "write": %d, "timeout": %d}, ' ..
    '"seconds": %.3f, "rps": %.1f, "p50_ms": %.3f, "p90_ms": %.3f, "p99_ms": %.3f, ' ..
    '"max_ms": %.3f}\n',
    summary.requests, ok, ok, e.status, e.connect, e.read, e.write, e.timeout,
    seconds, ok / seconds, latency:percentile(50) / 1e3, latency:percentile(90) / 1e3,
    latency:percentile(99) / 1e3, latency.max / 1e3))
end
