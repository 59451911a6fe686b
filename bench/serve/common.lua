-- Shared by the workload scripts: key=value arguments, a seed per thread, and one
-- machine-readable summary line for run.py (wrk's own text report is printed too).
--
-- wrk runs setup() in the main Lua state, once per thread, then init() and request()
-- in each thread's own state: a value set with thread:set() in setup() is a global
-- in that thread's state.

local common = {}

local threads = 0

function common.setup(thread)
   threads = threads + 1
   thread:set("thread_index", threads)
end

-- `wrk ... URL -- seed=1 size=268435456` -> {seed = "1", size = "268435456"}
function common.options(args)
   local opts = {}
   for _, arg in ipairs(args) do
      local key, value = arg:match("^([%w_]+)=(.*)$")
      if not key then
         error("bench argument " .. arg .. ": expected key=value")
      end
      opts[key] = value
   end
   return opts
end

-- The same sequence on every run for a given seed, a different one per thread.
function common.seed(opts)
   math.randomseed((tonumber(opts.seed) or 1) * 1000 + (thread_index or 0))
end

-- Latency in wrk is in microseconds; summary.duration too.
function common.done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'OCA-BENCH-JSON {"duration_us":%d,"requests":%d,"bytes":%d,' ..
      '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
      '"latency_us":{"min":%d,"mean":%.1f,"stdev":%.1f,"max":%d,' ..
      '"p50":%d,"p75":%d,"p90":%d,"p99":%d,"p999":%d}}\n',
      summary.duration, summary.requests, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency.min, latency.mean, latency.stdev, latency.max,
      latency:percentile(50), latency:percentile(75), latency:percentile(90),
      latency:percentile(99), latency:percentile(99.9)))
end


return common
