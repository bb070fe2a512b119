--- hours: business-hours schedules for routing decisions.
--
--   local hours = require "hours"
--   local office = hours.parse("mon-fri 08:00-18:00; sat 09:00-12:30", {"2026-12-25"})
--   if not office:is_open() then ... end          -- now, local time
--   office:is_open(os.time{year=2026, month=12, day=24, hour=10})
--
-- Format: rules separated by ';'. A rule is a day or a day range
-- (mon tue wed thu fri sat sun, e.g. "mon-fri", "sat", "fri-mon") and one
-- or more time ranges "HH:MM-HH:MM" (end exclusive; "22:00-06:00" wraps past
-- midnight; "00:00-24:00" is the whole day). "never" and "always" are
-- schedules too ("always" stays open on holidays: it means "never closed").
-- Holidays ("YYYY-MM-DD") close the day's rules all day.
-- parse() returns nil, err for a malformed schedule: check it at load time.
local M = {}

local day_index = {sun = 1, mon = 2, tue = 3, wed = 4, thu = 5, fri = 6, sat = 7}

local function parse_days(spec)
  local a, b = spec:match("^(%a%a%a)%-(%a%a%a)$")
  if not a then a = spec:match("^(%a%a%a)$") b = a end
  local from, to = a and day_index[a:lower()], b and day_index[b:lower()]
  if not from or not to then return nil end
  local days, d = {}, from
  while true do
    days[d] = true
    if d == to then break end
    d = d % 7 + 1
  end
  return days
end

local function parse_time(s)
  local h, m = s:match("^(%d%d?):(%d%d)$")
  h, m = tonumber(h), tonumber(m)
  if not h or h > 24 or m > 59 or (h == 24 and m ~= 0) then return nil end
  return h * 60 + m
end

local function parse_rule(rule, rules)
  local days_spec, times = rule:match("^%s*(%S+)%s*(.-)%s*$")
  local days = days_spec and parse_days(days_spec)
  if not days then return nil, "bad days in \"" .. rule .. "\" (use e.g. mon-fri)" end
  local any = false
  for range in times:gmatch("[^,%s]+") do
    local a, b = range:match("^([%d:]+)%-([%d:]+)$")
    local from, to = a and parse_time(a), b and parse_time(b)
    if not from or not to then return nil, "bad time range \"" .. range .. "\" (use HH:MM-HH:MM)" end
    rules[#rules + 1] = {days = days, from = from, to = to}
    any = true
  end
  if not any then return nil, "no time range in \"" .. rule .. "\"" end
  return true
end

local Schedule = {}
Schedule.__index = Schedule

local function in_range(r, wday, minute)
  if r.from < r.to then
    return r.days[wday] and minute >= r.from and minute < r.to
  end
  -- wraps past midnight: the evening belongs to the rule's day, the morning to the next
  local prev = (wday + 5) % 7 + 1
  return (r.days[wday] and minute >= r.from) or (r.days[prev] and minute < r.to)
end

--- Is the schedule open at time t (seconds since the epoch, default now)?
function Schedule:is_open(t)
  if self.always ~= nil then return self.always end
  local d = os.date("*t", t or os.time())
  if self.holidays[string.format("%04d-%02d-%02d", d.year, d.month, d.day)] then return false end
  local minute = d.hour * 60 + d.min
  for _, r in ipairs(self.rules) do
    if in_range(r, d.wday, minute) then return true end
  end
  return false
end

function Schedule:__tostring() return "hours(" .. self.text .. ")" end

--- Parse a schedule; holidays is an optional list of "YYYY-MM-DD".
function M.parse(text, holidays)
  if type(text) ~= "string" then return nil, "a schedule is a string such as \"mon-fri 08:00-18:00\"" end
  local s = setmetatable({text = text, rules = {}, holidays = {}}, Schedule)
  for _, day in ipairs(holidays or {}) do
    if not tostring(day):match("^%d%d%d%d%-%d%d%-%d%d$") then
      return nil, "bad holiday \"" .. tostring(day) .. "\" (use YYYY-MM-DD)"
    end
    s.holidays[day] = true
  end
  local trimmed = text:match("^%s*(.-)%s*$"):lower()
  if trimmed == "always" then s.always = true return s end
  if trimmed == "never" then s.always = false return s end
  for rule in text:gmatch("[^;]+") do
    if rule:match("%S") then
      local ok, err = parse_rule(rule, s.rules)
      if not ok then return nil, err end
    end
  end
  if #s.rules == 0 then return nil, "empty schedule" end
  return s
end

return M
