-- POST a password login, a different seeded user each request (or a few, for warm logins).
-- args: path, first user index, number of users to cycle through, password, wrk threads,
--   and "retry-after" for clients that wait what a 503's Retry-After says (see common.lua)
--   user = first + (sent * nthreads + id) mod span, so threads never share a user
--   and no user repeats until `span` logins were sent.
package.path = debug.getinfo(1, "S").source:match("^@(.*/)") .. "?.lua;" .. package.path
local common = require("common")

setup = common.setup

local path, first, span, password

function init(args)
   path = args[1]
   first = tonumber(args[2])
   span = tonumber(args[3])
   password = args[4]
   nthreads = tonumber(args[5]) or 1
   if args[6] == "retry-after" then
      delay = common.delay
   end
end

local headers = { ["Content-Type"] = "application/json" }

function request()
   local index = first + (sent * nthreads + id) % span
   sent = sent + 1
   local body = string.format(
      '{"email":"bench-user-%d@example.com","password":"%s"}', index, password
   )
   return wrk.format("POST", path, headers, body)
end

function response(status, headers, body)
   common.count(status)
   common.note_retry_after(status, headers)
end

function done(summary, latency, requests)
   common.done(summary, latency, requests)
end
