-- The driver of the Lua API fuzz target (fuzz_lua_api.c). It runs as a
-- script chunk in an engine coroutine, inside a running engine, and turns
-- the fuzzer's bytes into a program: calls of every function a script can
-- reach (ami.*, ami.log.*, ami.metrics.*, the sandbox's base functions and
-- libraries, the blocked stubs), methods and metamethods of every object
-- the engine hands out (events, results, patterns, metrics, stubs), with
-- arguments of every type taken from a pool that the results feed: nil,
-- booleans, 0, -1, NaN, +-inf, 2^53, 1.5, huge and empty strings, strings
-- with NUL/CR/LF, tables with and without metatables, functions (some that
-- loop forever or raise), coroutines including engine-owned ones, userdata
-- with a __gc. Every call is protected: a refusal is an error value or a
-- raised error, and either is fine. What must not happen is decided on the
-- C side: a crash, a sanitizer report, a hang, or an engine that no longer
-- answers an action afterwards.
--
-- Pattern-matching functions are not given long subjects with the fuzzer's
-- patterns: one such C call can run for minutes and no hook can stop it (a
-- documented limit: the systemd watchdog is the last line there).

local NIL = {}            -- stands for nil in the pool
local POOL_SIZE = 64
local pool, pool_next = {}, 1
local bytes, pos = "", 0

local function byte()
  pos = pos + 1
  return bytes:byte(pos) or 0
end

local function add(v)
  if v == nil then v = NIL end
  pool[pool_next] = v
  pool_next = pool_next % POOL_SIZE + 1
end

local function val()
  local v = pool[byte() % POOL_SIZE + 1]
  if v == NIL then return nil end
  return v
end

local function args(n)
  local a = {}
  for i = 1, n do a[i] = val() end
  return a, n
end

local function keep(ok, ...)
  if ok then
    for i = 1, math.min(select("#", ...), 3) do add((select(i, ...))) end
  else
    add((...)) -- the error value, often a string
  end
end

-- ---- what a script can reach ---------------------------------------------------------------------

local function lookup(t, k)
  local ok, v = pcall(function() return t[k] end)
  if ok then return v end
end

local FUNCTIONS, PATTERN_FNS = {}, {}

local function collect(prefix, t, names)
  for _, n in ipairs(names) do
    local f = lookup(t, n)
    if f ~= nil then
      FUNCTIONS[#FUNCTIONS + 1] = f
      if prefix == "string." and (n == "find" or n == "match" or n == "gmatch" or n == "gsub") then
        PATTERN_FNS[f] = true
      end
    end
  end
end

collect("ami.", ami, {"on", "off", "wait_for", "pattern", "action", "collect", "sleep", "spawn", "every",
                      "now", "time", "servers", "server"})
collect("ami.log.", lookup(ami, "log") or {}, {"debug", "info", "warn", "error"})
collect("ami.metrics.", lookup(ami, "metrics") or {}, {"counter", "gauge", "histogram"})
local BASE = {assert = assert, error = error, ipairs = ipairs, next = next, pairs = pairs, pcall = pcall,
              xpcall = xpcall, print = print, rawequal = rawequal, rawget = rawget, rawset = rawset,
              select = select, setmetatable = setmetatable, getmetatable = getmetatable,
              tonumber = tonumber, tostring = tostring, type = type, unpack = unpack, load = load,
              loadstring = loadstring, require = require, collectgarbage = collectgarbage,
              newproxy = newproxy, gcinfo = gcinfo, dofile = dofile, loadfile = loadfile,
              module = module, getfenv = getfenv, setfenv = setfenv}
for _, f in pairs(BASE) do FUNCTIONS[#FUNCTIONS + 1] = f end
collect("coroutine.", coroutine, {"create", "resume", "running", "status", "wrap", "yield", "isyieldable"})
collect("string.", string, {"byte", "char", "format", "len", "lower", "upper", "rep", "reverse", "sub",
                            "find", "match", "gmatch", "gsub", "dump"})
collect("table.", table, {"concat", "insert", "remove", "sort", "maxn", "foreach", "getn"})
collect("math.", math, {"abs", "ceil", "floor", "fmod", "frexp", "ldexp", "log", "max", "min", "modf",
                        "pow", "random", "randomseed", "sqrt", "tointeger"})
collect("os.", os, {"time", "date", "clock", "difftime", "getenv", "execute", "exit", "remove", "rename",
                    "tmpname", "setlocale"})
collect("io.", io, {"open", "read", "write", "lines", "popen", "close"})
collect("debug.", lookup(_G, "debug") or {}, {"traceback", "getinfo", "sethook", "getlocal"})
collect("bit.", lookup(_G, "bit") or {}, {"band", "bor", "bxor", "bnot", "lshift", "rshift", "arshift", "rol",
                                          "tobit", "tohex", "bswap"})

local METHODS = {"get", "all", "headers", "totable", "name", "is_response", "inc", "dec", "add", "set",
                 "value", "observe", "ok", "response", "final", "items", "truncated", "dropped",
                 "server", "Ping", "ActionID", "Response", "open", "read", "close", "foo", "__index",
                 "__gc", "__call", "__metatable"}

-- ---- the pool ------------------------------------------------------------------------------------

local function seed_pool(extra)
  local mt_raise = {__index = function() error("index") end, __newindex = function() error("set") end,
                    __tostring = function() return {} end, __call = function() error("call") end,
                    __len = function() return "x" end, __concat = function() return nil end,
                    __eq = function() return true end, __lt = function() error("lt") end}
  local base = {
    NIL, true, false, 0, -1, 0 / 0, 1 / 0, -1 / 0, 2 ^ 53, -2 ^ 53, 2 ^ 63, 1.5, -0.0, 1e308, 4294967296,
    "", "pbx1", "Ping", "*", "Hangup", "Command", "CoreShowChannels", "Originate", "timeout", "x",
    string.rep("v", 60000), "a\0b", "Ping\r\nAction: Originate", "%s%d%n", "^(.-)(.-)$", "ami_x_total",
    {}, {1, 2, 3}, {Event = "Hangup"}, {[1] = 1, [3] = 3}, {timeout = 0 / 0}, {timeout = -1},
    {Channel = "x\r\ny"}, setmetatable({}, mt_raise),
    function() end, function() error("raised") end, function() error({}) end,
    function() while true do end end, function(...) return ... end,
    function() return coroutine.yield() end,
    function() add(coroutine.running()) ami.sleep(0.02) end,
    coroutine.create(function() end), coroutine.running(), io, os, string, ami,
  }
  pool, pool_next = {}, 1
  for _, v in ipairs(base) do add(v) end
  for _, v in ipairs(extra) do add(v) end
end

-- ---- operations ----------------------------------------------------------------------------------

local function long_string_arg(a, n)
  for i = 1, n do
    if type(a[i]) == "string" and #a[i] > 200 then return true end
  end
  return false
end

local function call_function()
  local f = FUNCTIONS[byte() % #FUNCTIONS + 1]
  local a, n = args(byte() % 5)
  if PATTERN_FNS[f] and long_string_arg(a, n) then return end
  keep(pcall(f, unpack(a, 1, n)))
end

local function call_method()
  local obj, name = val(), METHODS[byte() % #METHODS + 1]
  local self = byte() % 4 == 0 and val() or obj
  local a, n = args(byte() % 4)
  keep(pcall(function() return obj[name](self, unpack(a, 1, n)) end))
end

local BINOPS = {
  function(a, b) return a + b end, function(a, b) return a - b end, function(a, b) return a * b end,
  function(a, b) return a / b end, function(a, b) return a % b end, function(a, b) return a ^ b end,
  function(a, b) return a .. b end, function(a, b) return a == b end, function(a, b) return a < b end,
  function(a, b) return a <= b end, function(a, b) return a[b] end,
  function(a) return -a end, function(a) return #a end, function(a) return not a end,
  function(a) return tostring(a) end, function(a) return type(a) end, function(a, b) return a(b) end,
}

local function iterate()
  local t = val()
  local how = byte() % 3
  keep(pcall(function()
    local n = 0
    local it, s, c
    if how == 0 then it, s, c = pairs(t) elseif how == 1 then it, s, c = ipairs(t) else it, s, c = next, t, nil end
    for k, v in it, s, c do
      n = n + 1
      if n > 64 then break end
      add(k) add(v)
    end
    return n
  end))
end

local function make_string()
  local n = byte() % 24
  local c = {}
  for i = 1, n do c[i] = string.char(byte()) end
  add(table.concat(c))
end

local function make_table()
  local t = {}
  for _ = 1, byte() % 6 do
    local k = val()
    if k ~= nil and k == k then t[k] = val() end
  end
  if byte() % 3 == 0 then pcall(setmetatable, t, val()) end
  add(t)
end

local function make_gc_object()
  local p = newproxy and newproxy(true)
  if p then
    pcall(function() getmetatable(p).__gc = val() end)
    add(p)
  end
end

local OPS = {
  call_function, call_function, call_function, call_method, call_method,
  function() keep(pcall(BINOPS[byte() % #BINOPS + 1], val(), val())) end,
  function() local a = val() keep(pcall(function() a[val()] = val() end)) end,
  iterate, make_string, make_table, make_gc_object,
  function() local f = val() local a, n = args(byte() % 3) keep(pcall(ami.spawn, f, unpack(a, 1, n))) end,
  function() keep(pcall(load, val())) end,
  function() keep(pcall(xpcall, val(), val(), val())) end,
  function() keep(pcall(coroutine.resume, val(), val())) end,
  function() keep(pcall(coroutine.wrap(function(...) return val()(...) end), val())) end,
  function() keep(pcall(collectgarbage, byte() % 2 == 0 and "collect" or "step")) end,
  function() keep(pcall(ami.sleep, 0)) end,
}

function run(input)
  bytes, pos = input, 0
  local extra = {}
  local ok, res, err = pcall(ami.action, "pbx1", "Ping")
  if ok and res then
    extra = {res, res.response, ami.pattern("^P"), ami.metrics.counter("fuzz_calls_total", "Calls."),
             ami.metrics.gauge("fuzz_level", "Level."), ami.metrics.histogram("fuzz_seconds", "Time.")}
  end
  local items = select(2, pcall(ami.collect, "pbx1", "CoreShowChannels"))
  extra[#extra + 1] = items
  extra[#extra + 1] = err
  seed_pool(extra)
  local ops = 0
  while pos < #bytes do
    OPS[byte() % #OPS + 1]()
    ops = ops + 1
    if ops % 32 == 0 then ami.sleep(0) end -- within the handler budget, as a script should
  end
end
