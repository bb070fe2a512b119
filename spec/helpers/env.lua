--- spec helper: set environment variables for a script's load.
--
-- Scripts read their settings with os.getenv when they load. Specs run in
-- the engine's own LuaJIT with the real globals, so the FFI is available
-- here (never in a script's sandbox) and can call setenv(3):
--
--   local env = require "spec.helpers.env"
--   env.load_script("scripts/queue_stats.lua", {QUEUE_STATS_INTERVAL = "1"})
--
-- The variables are set only while the script loads, then restored, so the
-- next spec sees the defaults again. `false` means "unset".
local ffi = require "ffi"
local T = require "ami.testing"

-- busted re-requires helpers in each insulated spec file: declare once.
pcall(ffi.cdef, [[
int setenv(const char *name, const char *value, int overwrite);
int unsetenv(const char *name);
]])

local M = {}

--- Set (string/number) or unset (nil/false) one variable.
function M.set(name, value)
  if value == nil or value == false then
    ffi.C.unsetenv(name)
  else
    ffi.C.setenv(name, tostring(value), 1)
  end
end

--- Run fn() with vars set; restore the previous values afterwards, even on error.
function M.with(vars, fn, ...)
  local saved = {}
  for k, v in pairs(vars or {}) do
    saved[k] = os.getenv(k) or false
    M.set(k, v)
  end
  local res = {pcall(fn, ...)}
  for k, v in pairs(saved) do M.set(k, v) end
  if not res[1] then error(res[2], 0) end
  return unpack(res, 2)
end

--- T.load_script(path) with vars set during the load.
function M.load_script(path, vars)
  return M.with(vars, T.load_script, path)
end

return M
