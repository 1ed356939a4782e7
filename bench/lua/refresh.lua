-- Rotate refresh tokens: each request spends a token, each 200 answer gives the next one.
-- args: path, file of refresh tokens (one per line), nthreads
-- Thread k takes the lines whose index mod nthreads is k. With one request in flight per
-- connection, a thread's pool never runs dry unless a rotation fails; then the last token
-- is sent again and the server's refusal is counted as an error, as it should be.
package.path = debug.getinfo(1, "S").source:match("^@(.*/)") .. "?.lua;" .. package.path
local common = require("common")

setup = common.setup

local path
local pool = {}
local last
local headers = { ["Content-Type"] = "application/json" }

function init(args)
   path = args[1]
   nthreads = tonumber(args[3]) or 1
   for index, token in ipairs(common.read_lines(args[2])) do
      if (index - 1) % nthreads == id then
         table.insert(pool, token)
      end
   end
end

-- wrk calls request() once on thread 0 before the run, to check it, and never sends that
-- request: it must not spend a token.
local checked = false

function request()
   if not checked and id == 0 then
      checked = true
      return wrk.format("POST", path, headers, '{"refresh_token":"unused"}')
   end
   local token = table.remove(pool) or last or "missing"
   last = token
   sent = sent + 1
   return wrk.format("POST", path, headers, '{"refresh_token":"' .. token .. '"}')
end

function response(status, headers, body)
   common.count(status)
   if status == 200 then
      local token = body:match('"refresh_token"%s*:%s*"([^"]+)"')
      if token then
         table.insert(pool, token)
      end
   end
end

function done(summary, latency, requests)
   common.done(summary, latency, requests)
end
