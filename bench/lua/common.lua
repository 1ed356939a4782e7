-- Shared by every bench script: thread ids, per-status counts, and one JSON summary line.
-- The harness reads the line starting with "BENCH_JSON " from wrk's stdout.

local common = {}

local threads = {}

-- setup() runs in the main Lua state once per wrk thread, before the threads start.
function common.setup(thread)
   thread:set("id", #threads)
   table.insert(threads, thread)
end

function common.thread_count()
   return #threads
end

-- Called from each script's response(): count answers by status code.
statuses = {}
sent = 0

function common.count(status)
   local key = tostring(status)
   statuses[key] = (statuses[key] or 0) + 1
end

local function json_string(value)
   return '"' .. tostring(value):gsub('[%c"\\]', function(c)
      return string.format("\\u%04x", string.byte(c))
   end) .. '"'
end

local function json_object(pairs_table)
   local parts = {}
   for key, value in pairs(pairs_table) do
      table.insert(parts, json_string(key) .. ":" .. tostring(value))
   end
   return "{" .. table.concat(parts, ",") .. "}"
end

-- Clients that honour Retry-After: a 503 or 429 with one makes a later request of this
-- thread wait that long before it is sent (wrk's delay() hook). wrk asks for the delay
-- when a connection is ready to send, so the wait lands on the next request of this
-- thread, usually the refused connection's own; the count of waits is exact.
local owed = {}

function common.note_retry_after(status, headers)
   if status ~= 503 and status ~= 429 then
      return
   end
   local after = tonumber(headers["Retry-After"] or headers["retry-after"] or "")
   if after ~= nil then
      table.insert(owed, after * 1000)
   end
end

function common.delay()
   if #owed == 0 then
      return 0
   end
   return table.remove(owed, 1)
end

-- done() runs in the main state after the run: gather every thread's counters.
function common.done(summary, latency, requests, extra)
   local merged = {}
   local total_sent = 0
   for _, thread in ipairs(threads) do
      local counts = thread:get("statuses") or {}
      for key, value in pairs(counts) do
         merged[key] = (merged[key] or 0) + value
      end
      total_sent = total_sent + (thread:get("sent") or 0)
   end
   local lat = {
      min = latency.min, max = latency.max, mean = latency.mean, stdev = latency.stdev,
      p50 = latency:percentile(50.0), p90 = latency:percentile(90.0),
      p99 = latency:percentile(99.0), p999 = latency:percentile(99.9),
   }
   local errors = summary.errors
   local fields = {
      requests = summary.requests,
      duration_us = summary.duration,
      bytes = summary.bytes,
      sent = total_sent,
      latency_us = json_object(lat),
      statuses = json_object(merged),
      errors = json_object({
         connect = errors.connect, read = errors.read, write = errors.write,
         status = errors.status, timeout = errors.timeout,
      }),
   }
   for key, value in pairs(extra or {}) do
      fields[key] = value
   end
   io.write("BENCH_JSON " .. json_object(fields) .. "\n")
end

-- Read a file of lines (credentials written by the harness); missing file: empty list.
function common.read_lines(path)
   local lines = {}
   if path == nil or path == "" then
      return lines
   end
   local handle = assert(io.open(path, "r"))
   for line in handle:lines() do
      if line ~= "" then
         table.insert(lines, line)
      end
   end
   handle:close()
   return lines
end

return common
