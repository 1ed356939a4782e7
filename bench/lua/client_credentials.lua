-- Client credentials grants: POST the form with HTTP Basic client authentication.
-- args: path, file of "Authorization: Basic ..." lines (one per client)
package.path = debug.getinfo(1, "S").source:match("^@(.*/)") .. "?.lua;" .. package.path
local common = require("common")

setup = common.setup

local path
local header_sets = {}
local body = "grant_type=client_credentials"

function init(args)
   path = args[1]
   for _, line in ipairs(common.read_lines(args[2])) do
      local name, value = line:match("^([^:]+):%s*(.*)$")
      table.insert(header_sets, {
         [name] = value,
         ["Content-Type"] = "application/x-www-form-urlencoded",
      })
   end
end

function request()
   local headers = header_sets[(sent + id) % #header_sets + 1]
   sent = sent + 1
   return wrk.format("POST", path, headers, body)
end

function response(status, headers, body)
   common.count(status)
end

function done(summary, latency, requests)
   common.done(summary, latency, requests)
end
