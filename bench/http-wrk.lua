-- http-wrk.lua — makes wrk (bench/http-bench.sh) print its result as one
-- machine-readable line after the run:
--   WRK requests duration_us bytes p50_us p99_us max_us connect read write status timeout
-- (status = responses that were not 2xx/3xx; the last five are wrk's error counts)
done = function(summary, latency, requests)
    local e = summary.errors
    io.write(string.format("WRK %d %d %d %d %d %d %d %d %d %d %d\n",
        summary.requests, summary.duration, summary.bytes,
        latency:percentile(50), latency:percentile(99), latency.max,
        e.connect, e.read, e.write, e.status, e.timeout))
end
