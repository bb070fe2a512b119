-- The script of the event-object fuzz target (fuzz_event.c): every event
-- the fuzzer's bytes make is handed to check_event, which calls every
-- method and metamethod of the event object, with good arguments and with
-- hostile ones, and checks that the answers agree with one another and
-- that events kept from earlier messages still read exactly as they did.
-- A broken invariant raises "INVARIANT: ..." (the C side aborts on it);
-- a refused hostile call is just a pcall returning false.

-- The server keys the C side uses: "pbx1", or 300 bytes of "k" (kept to 255).
local SERVERS = {pbx1 = true, [string.rep("k", 255)] = true}
local KEEP = 16

local function fail(fmt, ...)
  error("INVARIANT: " .. string.format(fmt, ...), 0)
end

local METHODS = {"get", "all", "headers", "totable", "name", "is_response"}
local IS_METHOD = {server = true}
for _, m in ipairs(METHODS) do IS_METHOD[m] = true end

local proxy = newproxy and newproxy(true) or {}
local PROBES = {
  false, true, 0, -1, 0 / 0, 1 / 0, -1 / 0, 2 ^ 53, 1.5, "", "server", "get", "Event", "event",
  "EVENT", "ActionID", "Channel", string.rep("k", 4000), "a\0b", "\r\n", "%s%n", {}, {1, 2},
  setmetatable({}, {__index = function() error("probe index") end}), function() end,
  coroutine.create(function() end), proxy, ami.pattern("x"),
}
local NPROBES = #PROBES + 1 -- and nil

local function probe(i) return PROBES[i] end -- PROBES[NPROBES] is nil

-- A stable text of an event, built from headers(): what it must keep reading as.
local function snapshot(ev)
  local parts = {}
  for k, v in ev:headers() do parts[#parts + 1] = k .. "\0" .. v end
  return table.concat(parts, "\1")
end

local function check_headers(ev)
  local n, first, exact = 0, {}, {}
  for k, v in ev:headers() do
    n = n + 1
    if exact[k] == nil then exact[k] = v end
    if type(k) ~= "string" or type(v) ~= "string" then fail("headers() gave %s, %s", type(k), type(v)) end
    if v:find("[\r\n%z]") then fail("a value holds CR, LF or NUL: %q", v) end
    local lk = k:lower()
    if first[lk] == nil then
      first[lk] = v
      if ev:get(k) ~= v then fail("get(%q) is not the first value", k) end
      if ev:get(k:upper()) ~= v or ev:get(lk) ~= v then fail("get(%q) depends on case", k) end
      if not IS_METHOD[k] and lk ~= "server" and ev[k] ~= v then fail("ev[%q] differs from get", k) end
    end
    local all, found = ev:all(k), false
    for _, x in ipairs(all) do found = found or x == v end
    if not found then fail("all(%q) lacks a value headers() gave", k) end
    if all[1] ~= first[lk] then fail("all(%q)[1] is not the first value", k) end
  end
  return n, exact
end

-- totable() keys are exact, as Lua keys are: Variable and VARIABLE are two.
local function check_table(ev, exact)
  local t, n = ev:totable(), 0
  for k in pairs(exact) do
    n = n + 1
    if t[k] == nil then fail("totable() lacks %q", k) end
  end
  for k, v in pairs(t) do
    n = n - 1
    local want = exact[k]
    local got = type(v) == "table" and v[1] or v
    if got ~= want then fail("totable()[%q] is not the first value", k) end
    if type(v) == "table" and #v < 2 then fail("totable()[%q] is a list of %d", k, #v) end
  end
  if n ~= 0 then fail("totable() has keys no header has") end
end

local function check_reads(ev)
  local n, exact = check_headers(ev)
  if #ev ~= n then fail("#ev is %d, headers() gave %d", #ev, n) end
  check_table(ev, exact)
  local name = ev:name()
  if n == 0 then
    if name ~= nil then fail("name() of an empty event") end
  else
    local _, v = ev:headers()()
    if name ~= v then fail("name() is not the first value") end
  end
  if ev:is_response() ~= false then fail("an event says it is a response") end
  if not SERVERS[ev.server] then fail("ev.server is %q", tostring(ev.server)) end
  local s = tostring(ev)
  if type(s) ~= "string" or not s:find("from " .. ev.server, 1, true) and n > 0 then
    fail("tostring(ev) is %q", tostring(s))
  end
  if getmetatable(ev) ~= "ami.event" then fail("the metatable is not locked") end
  if ev:get("no:such") ~= nil then fail("get() of a key no header can have") end
end

-- Hostile calls: each may fail, none may crash or break the object. A few
-- probes per event, in turn, so that events stay cheap and every probe meets
-- every kind of event over a run.
local turn = 0
local function abuse(ev, other)
  turn = turn + 1
  local picks = {}
  for j = 1, 5 do picks[j] = (turn * 5 + j) % NPROBES + 1 end
  for _, m in ipairs(METHODS) do
    local f = ev[m]
    for _, i in ipairs(picks) do
      local a = probe(i)
      pcall(f, a)
      pcall(f, ev, a)
      pcall(f, a, ev)
      pcall(f, other, a)
    end
  end
  for _, i in ipairs(picks) do
    local a = probe(i)
    pcall(function() return ev[a] end)
    if pcall(function() ev[a] = a end) then fail("an event accepted an assignment") end
    pcall(function() return ev .. a end)
    pcall(function() return a .. ev end)
    pcall(function() return ev + a end)
    pcall(function() return -ev end)
    pcall(function() return ev < a end)
    pcall(function() return a <= ev end)
    pcall(function() return ev == a end)
    pcall(function() return ev(a) end)
    pcall(rawget, ev, a)
    pcall(rawset, ev, a, a)
    pcall(setmetatable, ev, {})
    pcall(function() for _ in pairs(ev) do end end)
    pcall(function() for _ in ipairs(ev) do end end)
    pcall(next, ev)
  end
  local it = ev:headers()
  for _ = 1, #ev + 2 do pcall(it) end -- past the end, repeatedly
  pcall(it, ev, nil)
  pcall(ev.headers(other or ev))
end

local kept, next_slot = {}, 1

ami.on("*", function(ev)
  check_reads(ev)
  local before = snapshot(ev)
  local old = kept[(next_slot % KEEP) + 1]
  abuse(ev, old and old.ev or nil)
  if snapshot(ev) ~= before then fail("an event changed while it was used") end
  for _, k in ipairs({kept[next_slot], kept[turn % KEEP + 1]}) do
    if snapshot(k.ev) ~= k.text then fail("a kept event changed after later messages") end
    check_reads(k.ev)
  end
  kept[next_slot] = {ev = ev, text = before}
  next_slot = next_slot % KEEP + 1
end)
