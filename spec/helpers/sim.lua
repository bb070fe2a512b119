--- spec helper: events, metrics and logs for script specs.
--
--   local h = require "spec.helpers.sim"
--   h.inject("pbx1", "Hangup", {Channel = "PJSIP/1001-1", Linkedid = "c1", Cause = "17"})
--   local before = h.metric("calls_ended_total", {server = "pbx1", category = "busy"})
--   h.log_with('msg="call failed"', "cause=34")  -- the first captured line holding all
local ami = require "ami"
local T = require "ami.testing"

local M = {}

--- Frame an AMI event: "Event: Name", then the headers (sorted for a stable
--- order; pass a list of {key, value} pairs to choose the order), then a blank line.
function M.frame(name, headers)
  local out = {"Event: " .. name}
  if headers[1] then
    for _, kv in ipairs(headers) do out[#out + 1] = kv[1] .. ": " .. tostring(kv[2]) end
  else
    local keys = {}
    for k in pairs(headers) do keys[#keys + 1] = k end
    table.sort(keys)
    for _, k in ipairs(keys) do out[#out + 1] = k .. ": " .. tostring(headers[k]) end
  end
  return table.concat(out, "\r\n") .. "\r\n\r\n"
end

--- Send an event to the engine from a simulated server.
function M.inject(server, name, headers)
  T.sim.inject(server, M.frame(name, headers))
end

--- A metric's value, 0 when it does not exist yet (counters appear on first use).
function M.metric(name, labels)
  return T.metric(name, labels) or 0
end

--- Wait until a metric reaches at least `want`; returns its value then (or what it is at the timeout).
function M.wait_metric(name, labels, want, timeout_ms)
  T.wait_until(function() return M.metric(name, labels) >= want end, timeout_ms or 3000)
  return M.metric(name, labels)
end

--- Captured log lines holding every one of the given substrings.
function M.logs_with(...)
  local needles = {...}
  local found = {}
  for _, line in ipairs(T.logs(needles[1])) do
    local all = true
    for i = 2, #needles do
      if not line:find(needles[i], 1, true) then all = false break end
    end
    if all then found[#found + 1] = line end
  end
  return found
end

--- The first captured log line holding every substring, or nil.
function M.log_with(...)
  return M.logs_with(...)[1]
end

--- Wait for such a log line (nil after timeout_ms).
function M.wait_log(timeout_ms, ...)
  local needles = {...}
  return T.wait_until(function() return M.log_with(unpack(needles)) end, timeout_ms) or nil
end

--- The value of key=value (or key="value") in a logfmt line.
function M.field(line, key)
  if not line then return nil end
  local q = line:match(" " .. key .. "=\"(.-)\"")
  if q then return q end
  return line:match(" " .. key .. "=([^ \"]*)")
end

--- Collect events matching a filter into a list (until T.reset removes the handler).
function M.collect(filter)
  local seen = {}
  ami.on(filter, function(ev) seen[#seen + 1] = ev end)
  return seen
end

--- Wait until the named server is connected again (after a stop/restart or faults).
function M.wait_connected(server, timeout_ms)
  return T.wait_until(function()
    local s = ami.server(server)
    return s and s.connected
  end, timeout_ms or 5000)
end

--- A counter for unique ids across specs ("spec-7").
local seq = 0
function M.uid(prefix)
  seq = seq + 1
  return (prefix or "spec") .. "-" .. string.format("%d-%d", math.floor(ami.time() * 1000) % 100000000, seq)
end

return M
