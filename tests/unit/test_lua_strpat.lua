-- Differential test driver for engine/lua/lua_strpat.c, run by
-- test_lua_strpat.c: every case goes through LuaJIT's own string.find,
-- string.match, string.gmatch and string.gsub and through ours, in the same
-- lua_State, and the results must be identical: values, their types,
-- counts, and error messages (with their "file:line:" prefix when called
-- from Lua, without when called straight from pcall).
--
-- Arguments: mine (a table with our four functions, installed with a step
-- budget that raises "strpat-test: budget" and is reset by reset_budget()),
-- the fixture folder, a random seed, the number of random cases.
-- Returns {cases, compared, skipped, mismatches, errors, hits, fixture_values, report}.
local mine, fixture_dir, seed, ncases, reset_budget = ...
local orig = {find = string.find, match = string.match, gmatch = string.gmatch, gsub = string.gsub}
local fmt, rep, char, concat = string.format, string.rep, string.char, table.concat
local unpack, select, pcall, type, tostring = unpack, select, pcall, type, tostring
local floor, random = math.floor, math.random

local BUDGET = "strpat-test: budget"
local stats = {cases = 0, compared = 0, skipped = 0, mismatches = 0, errors = 0, hits = 0}
local report = {}

local function pack(...) return {n = select("#", ...), ...} end

-- ---- calling both sides ----------------------------------------------------------------

-- Through a Lua frame: an error carries this line's position.
local function via_lua(f, args) return pack(f(unpack(args, 1, args.n))) end

-- As a tail call: the caller's frame is gone when the error is raised.
local function via_tail(f, args) return f(unpack(args, 1, args.n)) end

local function invoke(style, f, args)
  local r
  if style == "lua" then
    r = pack(pcall(via_lua, f, args))
    if r[1] then return r[2] end
  elseif style == "tail" then
    r = pack(pcall(via_tail, f, args))
    if r[1] then return pack(unpack(r, 2, r.n)) end
  else
    r = pack(pcall(f, unpack(args, 1, args.n)))
    if r[1] then return pack(unpack(r, 2, r.n)) end
  end
  return {err = r[2], n = 0}
end

-- The iterator called by a generic for (the VM calls it, not a CALL).
local function gmatch_for(gm)
  return function(s, p)
    local out, n = {}, 0
    for a, b, c in gm(s, p) do
      out[n + 1], out[n + 2], out[n + 3] = a, b, c
      n = n + 3
      if n > 150 then break end
    end
    return unpack(out, 1, n)
  end
end

local function gmatch_all(gm)
  return function(s, p)
    local it = gm(s, p)
    local out = {n = 0}
    for _ = 1, 64 do
      local r = pack(it())
      for i = 1, r.n do out[out.n + i] = r[i] end
      out.n = out.n + r.n + 1
      out[out.n] = "<" .. r.n .. ">"
      if r[1] == nil then break end
    end
    return unpack(out, 1, out.n)
  end
end

-- A replacement function for gsub that logs how it was called.
local function replacer(mode, log)
  return function(...)
    log[#log + 1] = pack(...)
    local a = ...
    if mode == 1 then return a
    elseif mode == 2 then return nil
    elseif mode == 3 then return false
    elseif mode == 4 then return 42.5
    elseif mode == 5 then return {}
    elseif mode == 6 then return true
    elseif mode == 7 then return "x", "y"
    elseif mode == 8 then error("replacer failed")
    elseif mode == 9 then
      local t = {}
      for i = 1, select("#", ...) do t[i] = tostring((select(i, ...))) end
      return concat(t, "|")
    else return end
  end
end

local function replacement_table(mode)
  local t = {a = "A", b = 7, x = false, ["1"] = "one", [""] = "E", y = {}, z = true}
  if mode == 2 then
    setmetatable(t, {__index = function(_, k) return type(k) == "number" and k * 2 or nil end})
  end
  return t
end

-- The same case with fresh replacement values per side (logs compared too).
local function materialize(case)
  local args = pack(unpack(case.args, 1, case.args.n))
  local log = {}
  if case.repl_fn then args[3] = replacer(case.repl_fn, log) end
  if case.repl_tab then args[3] = replacement_table(case.repl_tab) end
  return args, log
end

-- ---- comparing ---------------------------------------------------------------------------

local function show(v)
  if type(v) == "string" then return (fmt("%q", v):gsub("\r", "\\r"):gsub("%z", "\\0")) end
  return tostring(v)
end

local function show_args(args)
  local t = {}
  for i = 1, args.n do t[i] = show(args[i]) end
  return concat(t, ", ")
end

local function same_value(a, b)
  if type(a) ~= type(b) then return false end
  if type(a) == "number" and a ~= a then return b ~= b end
  return a == b
end

local function same_pack(a, b)
  if a.n ~= b.n or not same_value(a.err, b.err) then return false end
  for i = 1, a.n do
    if not same_value(a[i], b[i]) then return false end
  end
  return true
end

local function same_logs(a, b)
  if #a ~= #b then return false end
  for i = 1, #a do
    if not same_pack(a[i], b[i]) then return false end
  end
  return true
end

local function show_pack(r)
  if r.err ~= nil then return "error " .. show(r.err) end
  local t = {}
  for i = 1, r.n do t[i] = show(r[i]) end
  return "(" .. concat(t, ", ") .. ")"
end

local function mismatch(case, want, got)
  stats.mismatches = stats.mismatches + 1
  if #report < 12 then
    report[#report + 1] = fmt("%s(%s) [%s]: LuaJIT %s, ours %s", case.fn, show_args(case.args),
                              case.style, show_pack(want), show_pack(got))
  end
end

local function run_case(case)
  stats.cases = stats.cases + 1
  local f_mine, f_orig = mine[case.fn], orig[case.fn]
  if case.fn == "gmatch" then
    local runner = case.style == "tail" and gmatch_for or gmatch_all
    f_mine, f_orig = runner(f_mine), runner(f_orig)
  end
  local args_m, log_m = materialize(case)
  reset_budget()
  local got = invoke(case.style, f_mine, args_m)
  if type(got.err) == "string" and got.err:find(BUDGET, 1, true) then
    stats.skipped = stats.skipped + 1 -- too expensive to run through LuaJIT as well
    return
  end
  local args_o, log_o = materialize(case)
  local want = invoke(case.style, f_orig, args_o)
  stats.compared = stats.compared + 1
  if want.err ~= nil then stats.errors = stats.errors + 1
  elseif want[1] ~= nil then stats.hits = stats.hits + 1 end
  if not same_pack(want, got) or not same_logs(log_o, log_m) then mismatch(case, want, got) end
end

local function case(fn, style, ...)
  return {fn = fn, style = style, args = pack(...)}
end

-- Every function, in both call styles.
local function run_all_ways(fn, ...)
  run_case(case(fn, "lua", ...))
  run_case(case(fn, "pcall", ...))
  run_case(case(fn, "tail", ...))
end

-- ---- hand-picked cases -----------------------------------------------------------------------

local hand_patterns = {
  -- single items and classes
  "a", ".", "%a", "%c", "%d", "%g", "%l", "%p", "%s", "%u", "%w", "%x", "%z",
  "%A", "%C", "%D", "%G", "%L", "%P", "%S", "%U", "%W", "%X", "%Z", "%%", "%.", "%]", "%-",
  "%q", "%@", "%^", "%$",
  -- sets
  "[abc]", "[^abc]", "[a-c]", "[^a-c]", "[%a_]", "[%d%s]", "[]]", "[^]]", "[%]]", "[a-]", "[-a]",
  "[%-]", "[a%-c]", "[%z]", "[^%z]", "[.]", "[%.]", "[%%]", "[a-%%]", "[^]", "[]", "[", "[^",
  "[a", "[%", "[%]", "[]abc]", "[z-a]", "[\0]",
  -- quantifiers
  "a*", "a+", "a-", "a?", ".*", ".+", ".-", ".?", "%d+", "[ab]*b", "a-b", "a?a?a", "(a*)*", "x*$",
  -- captures
  "(a)", "(a)(b)", "((a)(b))", "()", "()a()", "(a)%1", "(a*)%1", "()%1", "%1", "(a%1)", "%0",
  "(%a+)=(%w+)", "(()a)", "(a", "a)", ")", "(", "((a)", "(.-)%-(.*)", "((((((((((a))))))))))",
  -- anchors
  "^a", "^", "$", "^$", "a$", "$a", "a$b", "^^a", "a^", "^(a)", "^()", "(^a)", "%$$",
  -- balance and frontier
  "%b()", "%b((", "%b)(", "%b", "%b(", "%bxy", "%b''", "%f[%a]", "%f[%a]%a+", "%f[%A]",
  "%f[%z]", "%f[^%z]", "%f", "%fa", "%f[", "%f[a", "%f[]", "THE (%b())",
  -- malformed
  "%", "a%", "[a%", "((", "))", "%9", "(a)%2",
  -- embedded NULs (a NUL ends a pattern)
  "a\0b", "a\0(", "%z+", "[%z]+", "\0",
}

local hand_subjects = {
  "", "a", "aaa", "abc", "hello world", "THE (quick) fox", "a=1, b=2, c=3", "(foo(bar))baz",
  "x\0y\0z", "\0", "-a-b-", "  spaced  ", "line1\r\nline2\n", "^$%.[]()*+-?", "αβγ",
  "SIP/1001-00000001", "PJSIP/alice@example.com-0000a1b2", "x@y@z",
}

-- Every byte against every class, negated and in sets: the classes are ASCII (no locale).
local function class_cases()
  local bytes = {}
  for i = 0, 255 do bytes[i + 1] = char(i) end
  bytes = concat(bytes)
  for _, cl in ipairs({"a", "c", "d", "g", "l", "p", "s", "u", "w", "x", "z", "q", "."}) do
    for _, p in ipairs({"%" .. cl, "%" .. cl:upper(), "[%" .. cl .. "]", "[^%" .. cl .. "]",
                        "%f[%" .. cl .. "]", "[%" .. cl .. "]+"}) do
      run_case(case("gsub", "lua", bytes, p, "<%0>"))
      run_case(case("gmatch", "pcall", bytes, p))
    end
  end
  for _, p in ipairs({"[a-z]", "[\200-\255]", "[^\1-\127]", "[\0-\31]", "[%]-a]", "[z-a]"}) do
    run_case(case("gsub", "lua", bytes, p, "."))
  end
end

local function hand_cases()
  class_cases()
  for _, p in ipairs(hand_patterns) do
    for _, s in ipairs(hand_subjects) do
      run_all_ways("find", s, p)
      run_case(case("match", "lua", s, p))
      run_case(case("gmatch", "lua", s, p))
      run_case(case("gsub", "lua", s, p, "<%0>"))
    end
  end
  -- init: negative, out of range, fractional, huge, non-finite, strings, bad types
  local inits = pack(nil, 0, 1, 2, 3, 4, 5, 10, -1, -2, -3, -4, -10, 1.5, -1.5, 2.999, 2^31, -2^31,
                    2^31 - 1, -2^31 - 1, 2^32 + 2, 2^53, -2^53, 1 / 0, -1 / 0, 0 / 0, "2", " 3 ",
                    "0x2", "1e0", "abc", {}, true, false)
  for i = 1, inits.n do
    local init = inits[i]
    for _, p in ipairs({"b", "", "b*", "^b", "()", "(b)", "$"}) do
      run_all_ways("find", "abcabc", p, init)
      run_all_ways("find", "abcabc", p, init, true)
      run_all_ways("match", "abcabc", p, init)
    end
  end
  -- the plain flag
  for _, plain in ipairs({true, false, 0, "", 1}) do
    for _, p in ipairs({"a.c", "(", "[", "%", "a+", ""}) do
      run_all_ways("find", "xa.c(a+[%", p, 1, plain)
    end
  end
  -- gsub: replacement strings, numbers, tables, functions, max n
  local templates = {"x", "%0", "%1", "%2", "%9", "%%", "%", "a%", "%a", "%1%2%1", "", "%0%0%0",
                     "[%1]", "%10", "\0", 12, 1.5, -0.0, 1e100}
  for _, t in ipairs(templates) do
    for _, p in ipairs({"a", "(a)", "(a)(b)", "()", "", "^a", "a*", "(a)()"}) do
      run_all_ways("gsub", "abab", p, t)
    end
  end
  local max_ns = pack(nil, 0, 1, 2, -1, 1.5, 0.5, -0.5, 2^31, 2^32 + 1, 2^53, 1 / 0, -1 / 0, 0 / 0,
                     "1", " 2 ", "x", {}, false)
  for i = 1, max_ns.n do
    run_all_ways("gsub", "aaa", "a", "b", max_ns[i])
    run_all_ways("gsub", "aaa", "", "-", max_ns[i])
  end
  for mode = 1, 10 do
    for _, p in ipairs({"%w+", "(%w)(%w)", "()", "(a)()", "x*", "^a"}) do
      local c = case("gsub", "lua", "ab cd a", p)
      c.repl_fn = mode
      run_case(c)
    end
  end
  for mode = 1, 2 do
    for _, p in ipairs({"%w", "(%w)", "()", "", "%w+"}) do
      local c = case("gsub", "lua", "abxyz1 b", p)
      c.repl_tab = mode
      run_case(c)
    end
  end
  run_all_ways("gsub", "abc", "b", nil)
  run_all_ways("gsub", "abc", "b", true)
  run_all_ways("gsub", "abc", "b", false)
  -- numbers where strings are expected, bad types, missing arguments
  local odd = pack(12345, 1.5, -0.0, 1e100, 0 / 0, 1 / 0, 2^53, nil, true, {}, type)
  for i = 1, odd.n do
    for j = 1, odd.n do
      run_all_ways("find", odd[i], odd[j])
      run_all_ways("match", odd[i], odd[j])
      run_all_ways("gsub", odd[i], odd[j], odd[i])
      run_all_ways("gmatch", odd[i], odd[j])
    end
    run_all_ways("find", "12345", odd[i])
    run_all_ways("gsub", "1.5", "%.", odd[i])
  end
  run_all_ways("find")
  run_all_ways("find", "a")
  run_all_ways("gsub", "a", "a")
  run_all_ways("gmatch", "a")
  -- the limits: depth (LJ_MAX_XLEVEL 200), 32 captures
  for d = 195, 205 do
    run_all_ways("find", rep("a", 300), rep("a?", d))
    run_all_ways("find", rep("a", 300), rep("a*", d))
    run_all_ways("match", rep("a", 300), rep("(", d % 40) .. "a" .. rep(")", d % 40))
  end
  for n = 30, 34 do
    run_all_ways("match", "abc", rep("()", n))
    run_all_ways("gsub", "abc", rep("()", n), "%1")
  end
  -- long subjects
  run_all_ways("find", rep("x", 5000) .. "@" .. rep("y", 5000), "(.-)@(.*)")
  run_all_ways("gsub", rep("ab", 3000), "b", "%0%0")
  run_all_ways("gsub", rep("a", 2000), "", "-")
end

-- ---- random cases ------------------------------------------------------------------------------

local function pick(t) return t[random(#t)] end

local atoms = {"a", "b", "x", "1", " ", ".", "-", "@", "%a", "%d", "%s", "%w", "%p", "%l", "%u",
               "%c", "%x", "%z", "%g", "%A", "%D", "%S", "%W", "%Z", "%%", "%.", "%-", "%]",
               "%(", "%)", "%$", "%^", "%@", "[abc]", "[^abc]", "[a-c]", "[%a_]", "[^%s]", "[]]",
               "[^]]", "[a-]", "[%-x]", "[%z]", "[.]", "[%d%p]", "[0-9a-f]", "$", "^"}
local quantifiers = {"", "", "", "*", "+", "-", "?"}
local subject_chars = {"a", "b", "c", "x", "1", "0", " ", "-", ".", "(", ")", "[", "]", "%", "@",
                       "\0", "\n", "A", "_", "'", "^", "$", "\200", "\127", "\t", "~", "\255"}

local function random_seq(depth, ncap)
  local parts = {}
  for _ = 1, random(0, 5) do
    local r = random(100)
    if r <= 55 then
      parts[#parts + 1] = pick(atoms) .. pick(quantifiers)
    elseif r <= 67 and depth < 3 then
      parts[#parts + 1] = "(" .. random_seq(depth + 1, ncap) .. ")"
      ncap[1] = ncap[1] + 1
    elseif r <= 72 then
      parts[#parts + 1] = "()"
      ncap[1] = ncap[1] + 1
    elseif r <= 80 then
      parts[#parts + 1] = "%" .. random(0, math.max(1, math.min(9, ncap[1] + 1)))
    elseif r <= 85 then
      parts[#parts + 1] = "%b" .. pick({"()", "[]", "ab", "''", "xx", ")("})
    elseif r <= 91 then
      parts[#parts + 1] = "%f" .. pick({"[%a]", "[%A]", "[%z]", "[^%z]", "[a-c]", "[%s]", "[]]"})
    else
      parts[#parts + 1] = pick({"(", ")", "%", "[", "[^", "%b", "%f", "%fx", "$", "^"})
    end
  end
  return concat(parts)
end

local function random_pattern()
  local p = random_seq(0, {0})
  if random(100) <= 25 then p = "^" .. p end
  if random(100) <= 20 then p = p .. "$" end
  local r = random(100)
  if r <= 8 and #p > 0 then
    p = p:sub(1, random(0, #p - 1)) -- cut anywhere: malformed more often than not
  elseif r <= 14 then
    local at = random(0, #p)
    p = p:sub(1, at) .. pick({"%", "[", "(", ")", "]", "\0", "%1"}) .. p:sub(at + 1)
  end
  return p
end

local function random_subject(fixture_values)
  if fixture_values[1] and random(100) <= 30 then return pick(fixture_values) end
  local t = {}
  for i = 1, random(0, 24) do t[i] = pick(subject_chars) end
  return concat(t)
end

local random_inits = {1, 1, 1, 0, 2, 3, -1, -2, -5, 7, 30, -30, 1.5, 2^31, 0 / 0, "2"}
local random_templates = {"x", "%0", "%1", "%2", "%3", "%%", "%", "<%0>", "%1-%2", "", 9}

local function random_case(fixture_values)
  local s, p = random_subject(fixture_values), random_pattern()
  local style = pick({"lua", "lua", "pcall", "tail"})
  local r = random(100)
  if r <= 35 then
    if random(5) == 1 then return case("find", style, s, p, pick(random_inits), random(2) == 1) end
    return case("find", style, s, p, random(3) == 1 and pick(random_inits) or nil)
  elseif r <= 55 then
    return case("match", style, s, p, random(4) == 1 and pick(random_inits) or nil)
  elseif r <= 70 then
    return case("gmatch", style, s, p)
  end
  local c = case("gsub", style, s, p, pick(random_templates), random(4) == 1 and random(-1, 3) or nil)
  local k = random(10)
  if k <= 2 then c.repl_fn = random(1, 10) elseif k == 3 then c.repl_tab = random(1, 2) end
  return c
end

-- ---- fixtures: every header value of the recorded Asterisk sessions -----------------------------

local function fixture_values()
  local values, seen = {}, {}
  for _, name in ipairs({"dial-bridge", "event-stream-mixed", "core-show-channels-3-calls",
                         "hangup-cause", "getvar-setvar", "command-multiline", "filter"}) do
    local f = io.open(fixture_dir .. "/" .. name .. ".ami", "rb")
    if f then
      local data = f:read("*a")
      f:close()
      for v in orig.gmatch(data, "\n[%w%-]+: ([^\r\n]*)") do
        if not seen[v] then seen[v] = true; values[#values + 1] = v end
      end
    end
  end
  return values
end

local realistic = {"^PJSIP/", "^SIP/(.-)%-%x+$", "(%w+)/(%d+)", "%-(%x+)$", "^(.-)%-", "(.*)@(.*)",
                   "%f[%w]%w+", "[%w_]+", "^%d+$", "(%d+)%.(%d+)", "^(%a+):%s*(.*)$", "%s+$",
                   "^%s*(.-)%s*$", "%b()", "Local/(%d+)@", "^[%w-]+$", "(%d%d%d%d)%-(%d%d)"}

local function fixture_cases(values)
  for _, v in ipairs(values) do
    for _, p in ipairs(realistic) do
      run_case(case("find", "lua", v, p))
      run_case(case("match", "pcall", v, p))
      run_case(case("gsub", "lua", v, p, "[%0]"))
    end
    run_case(case("gmatch", "lua", v, "%w+"))
  end
end

-- ---- main -------------------------------------------------------------------------------------------

math.randomseed(seed)
hand_cases()
local values = fixture_values()
fixture_cases(values)
for _ = 1, ncases do run_case(random_case(values)) end
stats.report = concat(report, "\n")
stats.fixture_values = #values
return stats
