--- causes: hangup cause codes (ITU-T Q.850) as Asterisk reports them.
--
-- Asterisk puts the numeric code in the Hangup event's `Cause` header and
-- its own wording in `Cause-txt`. Scripts usually want a stable, small set
-- of categories for metrics (a label must not take hundreds of values):
--
--   local causes = require "causes"
--   causes.category(16)   --> "normal"
--   causes.category("17") --> "busy"
--   causes.name(21)       --> "call rejected"
--   causes.is_failure(34) --> true
local M = {}

local names = {
  [0] = "unknown", [1] = "unallocated number", [2] = "no route to network",
  [3] = "no route to destination", [16] = "normal clearing", [17] = "user busy",
  [18] = "no user responding", [19] = "no answer", [20] = "subscriber absent",
  [21] = "call rejected", [22] = "number changed", [26] = "answered elsewhere",
  [27] = "destination out of order", [28] = "invalid number format",
  [29] = "facility rejected", [31] = "normal, unspecified", [34] = "no circuit available",
  [38] = "network out of order", [41] = "temporary failure", [42] = "switching equipment congestion",
  [44] = "requested channel not available", [50] = "facility not subscribed",
  [58] = "bearer capability not available", [65] = "bearer capability not implemented",
  [88] = "incompatible destination", [102] = "recovery on timer expiry",
  [111] = "protocol error", [127] = "interworking, unspecified",
}

-- Categories are the label values metrics use: keep this list short.
local categories = {
  [16] = "normal", [31] = "normal", [26] = "normal",
  [17] = "busy",
  [18] = "no_answer", [19] = "no_answer", [20] = "no_answer",
  [21] = "rejected",
  [1] = "bad_number", [22] = "bad_number", [28] = "bad_number", [3] = "bad_number",
  [0] = "unknown",
}

local function code_of(cause)
  local n = tonumber(cause)
  if not n or n < 0 or n > 127 or n % 1 ~= 0 then return nil end
  return n
end

--- Human-readable name of a cause code ("user busy"); "cause N" if unnamed.
function M.name(cause)
  local n = code_of(cause)
  if not n then return "invalid cause" end
  return names[n] or ("cause " .. n)
end

--- One of normal, busy, no_answer, rejected, bad_number, failure, unknown.
function M.category(cause)
  local n = code_of(cause)
  if not n then return "unknown" end
  return categories[n] or "failure"
end

--- True when the network or the far end failed (not busy, not unanswered, not normal).
function M.is_failure(cause)
  return M.category(cause) == "failure"
end

M.categories = {"normal", "busy", "no_answer", "rejected", "bad_number", "failure", "unknown"}

return M
