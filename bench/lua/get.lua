-- GET one path, rotating through a file of credential headers ("Name: value" per line).
-- args: path, credentials file ("" for none: the framework ceiling's bare route)
package.path = debug.getinfo(1, "S").source:match("^@(.*/)") .. "?.lua;" .. package.path
local common = require("common")

setup = common.setup

local path
local header_sets = {}

function init(args)
   path = args[1]
   for _, line in ipairs(common.read_lines(args[2])) do
      local name, value = line:match("^([^:]+):%s*(.*)$")
      table.insert(header_sets, { [name] = value })
   end
   if #header_sets == 0 then
      table.insert(header_sets, {})
   end
end

function request()
   local headers = header_sets[(sent + id) % #header_sets + 1]
   sent = sent + 1
   return wrk.format("GET", path, headers)
end

function response(status, headers, body)
   common.count(status)
end

function done(summary, latency, requests)
   common.done(summary, latency, requests)
end
