-- A cold login with TOTP: POST the password (401 mfa_required with an mfa_token), then
-- POST the mfa_token with the current code (200 tokens). Seeded TOTP users share one
-- secret, so the code depends on the time step only; the harness writes the codes of
-- the steps around the round ("<step> <code>" lines) and each request picks the one
-- of now. Replay protection is per user, and each user logs in once.
-- args: password path, mfa path, first user index, span, password, codes file, wrk
--   threads, and "retry-after" for clients that wait what a 503's Retry-After says
--   user = first + (logins * nthreads + id) mod span (as login.lua: threads never share)
-- A response carrying an mfa_token queues it; the next request of this thread, on
-- whichever connection, spends it. 2xx answers are completed logins.
package.path = debug.getinfo(1, "S").source:match("^@(.*/)") .. "?.lua;" .. package.path
local common = require("common")

setup = common.setup

local password_path, mfa_path, first, span, password
local codes = {}
local pending = {}
local logins = 0

function init(args)
   password_path = args[1]
   mfa_path = args[2]
   first = tonumber(args[3])
   span = tonumber(args[4])
   password = args[5]
   for _, line in ipairs(common.read_lines(args[6])) do
      local step, code = line:match("^(%d+) (%d+)$")
      codes[tonumber(step)] = code
   end
   nthreads = tonumber(args[7]) or 1
   if args[8] == "retry-after" then
      delay = code_steps_first
   end
end

-- A Retry-After answers a password step, so it delays this thread's next password step,
-- never a code step: the code step of another login was not refused and is sent at
-- once (request() sends a pending code step before any new login). Each owed wait is
-- still served, by the next password step.
function code_steps_first()
   if #pending > 0 then
      return 0
   end
   return common.delay()
end

local headers = { ["Content-Type"] = "application/json" }

function request()
   local token = table.remove(pending)
   if token ~= nil then
      local code = codes[math.floor(os.time() / 30)] or "000000"
      local body = string.format('{"mfa_token":"%s","code":"%s"}', token, code)
      return wrk.format("POST", mfa_path, headers, body)
   end
   local index = first + (logins * nthreads + id) % span
   logins = logins + 1
   sent = logins -- users handed out: the harness advances its cursor by this
   local body = string.format(
      '{"email":"bench-totp-%d@example.com","password":"%s"}', index, password
   )
   return wrk.format("POST", password_path, headers, body)
end

function response(status, headers, body)
   common.count(status)
   common.note_retry_after(status, headers)
   if status == 401 then
      local token = body:match('"mfa_token"%s*:%s*"([%w_-]+)"')
      if token ~= nil then
         table.insert(pending, token)
      end
   end
end

function done(summary, latency, requests)
   common.done(summary, latency, requests)
end
