-- wrk script: POST /api/v1/jobs with a JSON body (a `noop` job), and report the
-- latency percentiles and counts as one JSON line (prefixed "WRK_JSON ") for api_wrk.py.
--
--   wrk -t2 -c50 -d10s --latency -s bench/api_submit.lua http://127.0.0.1:PORT

wrk.method = "POST"
wrk.path = "/api/v1/jobs"
wrk.body = '{"type":"noop","parameters":{"n":1}}'
wrk.headers["Content-Type"] = "application/json"

done = function(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"connect_errors":%d,"read_errors":%d,"write_errors":%d,"status_errors":%d,' ..
    '"timeouts":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes,
    errors.connect, errors.read, errors.write, errors.status, errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
