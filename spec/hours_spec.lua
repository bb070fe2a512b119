-- lua/hours.lua: business-hours schedules. Times are local: every instant
-- below is built with os.time{...} in local time, in a week without a
-- daylight-saving change (Monday 2026-06-01 .. Sunday 2026-06-07).
local hours = require "hours"

local DAY = {mon = 1, tue = 2, wed = 3, thu = 4, fri = 5, sat = 6, sun = 7}

--- at("tue", "05:59") -> seconds since the epoch, local time, in the fixture week
local function at(day, hhmm, date_day)
  local h, m = hhmm:match("^(%d+):(%d+)$")
  return os.time{year = 2026, month = 6, day = date_day or DAY[day], hour = tonumber(h),
                 min = tonumber(m), sec = 0}
end

local function parse(text, holidays)
  local s, err = hours.parse(text, holidays)
  assert(s, err)
  return s
end

describe("hours", function()
  it("uses a fixture week that starts on a Monday (sanity)", function()
    assert.are.equal(2, os.date("*t", at("mon", "12:00")).wday)
    assert.are.equal(1, os.date("*t", at("sun", "12:00")).wday)
  end)

  describe("parse errors", function()
    it("refuses a schedule that is not a string", function()
      local s, err = hours.parse(nil)
      assert.is_nil(s)
      assert.are.equal('a schedule is a string such as "mon-fri 08:00-18:00"', err)
      assert.is_nil((hours.parse(42)))
    end)

    it("refuses an empty schedule", function()
      assert.are.same({nil, "empty schedule"}, {hours.parse("")})
      assert.are.same({nil, "empty schedule"}, {hours.parse("  ;  ; ")})
    end)

    it("refuses unknown day names", function()
      local s, err = hours.parse("mnd-fri 08:00-18:00")
      assert.is_nil(s)
      assert.are.equal('bad days in "mnd-fri 08:00-18:00" (use e.g. mon-fri)', err)
      assert.is_nil((hours.parse("monday 08:00-18:00")))
      assert.is_nil((hours.parse("mon-xyz 08:00-18:00")))
    end)

    it("names the faulty rule among several", function()
      local _, err = hours.parse("mon-fri 08:00-18:00; sa 09:00-12:00")
      assert.matches('^bad days in "%s*sa 09:00%-12:00" %(use e%.g%. mon%-fri%)$', err)
    end)

    it("refuses time ranges that are not HH:MM-HH:MM", function()
      local s, err = hours.parse("mon-fri 8-18")
      assert.is_nil(s)
      assert.are.equal('bad time range "8-18" (use HH:MM-HH:MM)', err)
      assert.are.equal('bad time range "08:00" (use HH:MM-HH:MM)', select(2, hours.parse("mon 08:00")))
      assert.are.equal('bad time range "08h00-18h00" (use HH:MM-HH:MM)', select(2, hours.parse("mon 08h00-18h00")))
    end)

    it("refuses hours past 24, minutes past 59 and 24:MM other than 24:00", function()
      assert.are.equal('bad time range "25:00-26:00" (use HH:MM-HH:MM)', select(2, hours.parse("mon 25:00-26:00")))
      assert.are.equal('bad time range "08:60-09:00" (use HH:MM-HH:MM)', select(2, hours.parse("mon 08:60-09:00")))
      assert.are.equal('bad time range "20:00-24:30" (use HH:MM-HH:MM)', select(2, hours.parse("mon 20:00-24:30")))
    end)

    it("says a rule has no time range when only days are given", function()
      local s, err = hours.parse("mon-fri")
      assert.is_nil(s)
      assert.matches("no time range", err, 1, true)
      local _, err2 = hours.parse("sat 09:00-12:00; mon-fri ")
      assert.matches("no time range", err2, 1, true)
    end)

    it("refuses a holiday that is not YYYY-MM-DD", function()
      local s, err = hours.parse("always", {"25/12/2026"})
      assert.is_nil(s)
      assert.are.equal('bad holiday "25/12/2026" (use YYYY-MM-DD)', err)
      assert.is_nil((hours.parse("mon-fri 08:00-18:00", {"2026-12-25", "2027-1-1"})))
    end)

    it("accepts day names in any case and one-digit hours", function()
      local s = parse("MON-Fri 8:00-18:00")
      assert.is_true(s:is_open(at("wed", "08:00")))
      assert.is_false(s:is_open(at("wed", "07:59")))
    end)
  end)

  describe("is_open", function()
    local office = parse("mon-fri 08:00-18:00")

    it("is open on a weekday inside the hours", function()
      assert.is_true(office:is_open(at("mon", "10:00")))
      assert.is_true(office:is_open(at("fri", "17:30")))
    end)

    it("is closed on a weekday outside the hours", function()
      assert.is_false(office:is_open(at("tue", "06:00")))
      assert.is_false(office:is_open(at("tue", "21:00")))
    end)

    it("is closed all weekend", function()
      assert.is_false(office:is_open(at("sat", "10:00")))
      assert.is_false(office:is_open(at("sun", "10:00")))
    end)

    it("includes the start minute", function()
      assert.is_true(office:is_open(at("mon", "08:00")))
      assert.is_false(office:is_open(at("mon", "07:59")))
    end)

    it("excludes the end minute", function()
      assert.is_true(office:is_open(at("mon", "17:59")))
      assert.is_false(office:is_open(at("mon", "18:00")))
    end)

    it("combines rules separated by ';'", function()
      local s = parse("mon-fri 08:00-18:00; sat 09:00-12:30")
      assert.is_true(s:is_open(at("sat", "09:00")))
      assert.is_true(s:is_open(at("sat", "12:29")))
      assert.is_false(s:is_open(at("sat", "12:30")))
      assert.is_false(s:is_open(at("sun", "10:00")))
      assert.is_true(s:is_open(at("thu", "12:45")))
    end)

    it("takes several ranges in a rule, by comma or space", function()
      for _, text in ipairs({"mon-fri 08:00-12:00,13:00-17:00", "mon-fri 08:00-12:00 13:00-17:00"}) do
        local s = parse(text)
        assert.is_true(s:is_open(at("mon", "11:59")), text)
        assert.is_false(s:is_open(at("mon", "12:30")), text)
        assert.is_true(s:is_open(at("mon", "13:00")), text)
        assert.is_false(s:is_open(at("mon", "17:00")), text)
      end
    end)

    it("takes a day range that wraps over the weekend (fri-mon)", function()
      local s = parse("fri-mon 10:00-11:00")
      local open = {}
      for _, d in ipairs({"mon", "tue", "wed", "thu", "fri", "sat", "sun"}) do
        open[#open + 1] = s:is_open(at(d, "10:30"))
      end
      assert.are.same({true, false, false, false, true, true, true}, open)
    end)

    it("takes a single day", function()
      local s = parse("wed 10:00-11:00")
      assert.is_true(s:is_open(at("wed", "10:00")))
      assert.is_false(s:is_open(at("thu", "10:00")))
    end)

    it("gives a range past midnight's evening to its day and its morning to the next", function()
      local night = parse("mon-fri 22:00-06:00")
      assert.is_true(night:is_open(at("mon", "22:00")))
      assert.is_true(night:is_open(at("mon", "23:59")))
      assert.is_true(night:is_open(at("tue", "00:00")))
      assert.is_true(night:is_open(at("tue", "05:59")))
      assert.is_false(night:is_open(at("tue", "06:00")))
      assert.is_false(night:is_open(at("mon", "21:59")))
    end)

    it("ends a wrapped range on the morning after the last day, not before the first", function()
      local night = parse("mon-fri 22:00-06:00")
      assert.is_false(night:is_open(at("mon", "05:00")))  -- Sunday night is not in the rule
      assert.is_true(night:is_open(at("sat", "05:00")))   -- Friday night is
      assert.is_false(night:is_open(at("sat", "22:30")))
      assert.is_false(night:is_open(at("sun", "02:00")))
    end)

    it("wraps from Saturday night into Sunday morning", function()
      local s = parse("sat 20:00-02:00")
      assert.is_true(s:is_open(at("sun", "01:59")))
      assert.is_false(s:is_open(at("sun", "02:00")))
      assert.is_false(s:is_open(at("mon", "01:00")))
    end)

    it("treats 00:00-24:00 as the whole day and only that day", function()
      local s = parse("tue 00:00-24:00")
      assert.is_true(s:is_open(at("tue", "00:00")))
      assert.is_true(s:is_open(at("tue", "23:59")))
      assert.is_false(s:is_open(at("wed", "00:00")))
      assert.is_false(s:is_open(at("mon", "23:59")))
    end)

    it("is always open for 'always' and never for 'never', whatever the case and spaces", function()
      for _, text in ipairs({"always", "  ALWAYS ", "Always"}) do
        local s = parse(text)
        assert.is_true(s:is_open(at("sun", "03:00")), text)
        assert.is_true(s:is_open(at("wed", "12:00")), text)
      end
      for _, text in ipairs({"never", " Never "}) do
        local s = parse(text)
        assert.is_false(s:is_open(at("wed", "12:00")), text)
      end
    end)

    it("is closed all day on a holiday and open the day after", function()
      local s = parse("mon-fri 08:00-18:00", {"2026-06-02"})
      assert.is_false(s:is_open(at("tue", "10:00")))
      assert.is_true(s:is_open(at("mon", "10:00")))
      assert.is_true(s:is_open(at("wed", "10:00")))
    end)

    it("closes the morning part of a night range that falls on a holiday", function()
      local s = parse("mon-fri 22:00-06:00", {"2026-06-02"})
      assert.is_false(s:is_open(at("tue", "05:00")))
      assert.is_true(s:is_open(at("mon", "23:00")))
    end)

    it("checks the current time when given none", function()
      assert.is_true(parse("always"):is_open())
      assert.is_false(parse("never"):is_open())
      local today = os.date("%Y-%m-%d")
      assert.is_true(parse("mon-sun 00:00-24:00"):is_open())
      assert.is_false(parse("mon-sun 00:00-24:00", {today}):is_open())
    end)

    it("prints as hours(<text>)", function()
      assert.are.equal("hours(mon-fri 08:00-18:00)", tostring(parse("mon-fri 08:00-18:00")))
    end)
  end)
end)
