-- scripts/after_hours.lua: inbound calls (Newchannel in from-pstn) go on
-- while open; when closed they are tagged (Setvar AFTER_HOURS=1) and
-- redirected to after-hours,s,1.
--
-- Real inbound channels come from the simulator: an Originate of
-- PJSIP/<n> with Context from-pstn creates a channel in from-pstn, so the
-- script's Setvar and Redirect find it (the simulator answers them with
-- VarSet and Newexten events). The schedule is a setting read at load time:
-- spec/helpers/env.lua sets AFTER_HOURS_SCHEDULE etc. for one load, which
-- makes both branches deterministic; one spec keeps the default schedule and
-- asks lua/hours.lua which branch applies now.
local ami = require "ami"
local T = require "ami.testing"
local hours = require "hours"
local h = require "spec.helpers.sim"
local env = require "spec.helpers.env"

local SCRIPT = "scripts/after_hours.lua"
local DEFAULT_SCHEDULE = "mon-fri 08:00-18:00; sat 09:00-12:00"

local function load(vars)
  T.reset()
  env.load_script(SCRIPT, vars or {})
end

local function count(server, action)
  return h.metric("after_hours_calls_total", {server = server, action = action})
end

--- An inbound call on `server`: returns its channel name (the call talks 3 s).
local function inbound_call(server, context)
  local agent = tostring(math.random(2000, 2999))
  local res, err = ami.action(server, "Originate", {Channel = "PJSIP/" .. agent, Context = context or "from-pstn",
                                                    Exten = "5551000", Priority = 1,
                                                    CallerID = "Customer <+15550001111>"})
  assert(res, err)
  return res.Channel
end

local function getvar(server, chan, var)
  local res, err = ami.action(server, "Getvar", {Channel = chan, Variable = var})
  assert(res, err)
  return res.Value
end

describe("after_hours.lua", function()
  local tags, redirects

  before_each(function()
    T.clear_logs()
  end)
  after_each(T.reset)

  -- after load(): watch what reaches the simulator
  local function watch()
    tags = h.collect({Event = "VarSet", Variable = "AFTER_HOURS"})
    redirects = h.collect({Event = "Newexten", Context = ami.pattern("^after")})
  end

  -- events for this channel only (a previous spec's call may still be sending some)
  local function of(list, chan, server)
    local out = {}
    for _, e in ipairs(list) do
      if e.Channel == chan and (server == nil or e.server == server) then out[#out + 1] = e end
    end
    return out
  end

  local function assert_redirected(server, chan, context)
    local t = of(tags, chan, server)
    assert.are.equal(1, #t)
    assert.are.equal("1", t[1].Value)
    -- the Redirect's Newexten (the simulator may emit a second one in the new
    -- place when the call then answers: same channel, context, exten, priority)
    local r = of(redirects, chan, server)
    assert.is_true(#r >= 1, "no Newexten in the after-hours context")
    for _, e in ipairs(r) do
      assert.are.equal(context or "after-hours", e.Context)
      assert.are.equal("s", e.Exten)
      assert.are.equal("1", e.Priority)
    end
    assert.are.equal("1", getvar(server, chan, "AFTER_HOURS"))
  end

  local function assert_untouched(server, chan)
    ami.sleep(0.2)
    assert.are.same({}, of(tags, chan, server))
    assert.are.same({}, of(redirects, chan, server))
    assert.are.equal("", getvar(server, chan, "AFTER_HOURS"))
  end

  it("with the default schedule, takes the branch lua/hours.lua gives for now", function()
    load()
    watch()
    local open = assert(hours.parse(DEFAULT_SCHEDULE)):is_open()
    local passed, redirected = count("pbx1", "passed"), count("pbx1", "redirected")
    local chan = inbound_call("pbx1")
    if open then
      assert.are.equal(passed + 1, h.wait_metric("after_hours_calls_total", {server = "pbx1", action = "passed"}, passed + 1))
      assert_untouched("pbx1", chan)
      assert.are.equal(redirected, count("pbx1", "redirected"))
    else
      assert.are.equal(redirected + 1,
                       h.wait_metric("after_hours_calls_total", {server = "pbx1", action = "redirected"}, redirected + 1))
      assert_redirected("pbx1", chan)
      assert.are.equal(passed, count("pbx1", "passed"))
    end
  end)

  it("when closed ('never'), tags the call and redirects it to after-hours,s,1", function()
    load({AFTER_HOURS_SCHEDULE = "never"})
    watch()
    local before = count("pbx1", "redirected")
    local chan = inbound_call("pbx1")
    assert.are.equal(before + 1, h.wait_metric("after_hours_calls_total", {server = "pbx1", action = "redirected"}, before + 1))
    assert_redirected("pbx1", chan)
  end)

  it("logs a redirected call at info with caller, exten and target", function()
    load({AFTER_HOURS_SCHEDULE = "never"})
    local chan = inbound_call("pbx1")
    local line = h.wait_log(3000, 'msg="after hours: call redirected"', "channel=" .. chan .. " ")
    assert.truthy(line)
    assert.matches("level=info", line, 1, true)
    assert.are.equal("+15550001111", h.field(line, "caller"))
    assert.are.equal("5551000", h.field(line, "exten"))
    assert.are.equal("after-hours", h.field(line, "to"))
    assert.are.equal("pbx1", h.field(line, "server"))
  end)

  it("when open ('always'), lets the call go on untouched", function()
    load({AFTER_HOURS_SCHEDULE = "always"})
    watch()
    local passed, redirected = count("pbx2", "passed"), count("pbx2", "redirected")
    local chan = inbound_call("pbx2")
    assert.are.equal(passed + 1, h.wait_metric("after_hours_calls_total", {server = "pbx2", action = "passed"}, passed + 1))
    assert_untouched("pbx2", chan)
    assert.are.equal(redirected, count("pbx2", "redirected"))
  end)

  it("ignores calls that start in another context", function()
    load({AFTER_HOURS_SCHEDULE = "never"})
    watch()
    local before = {}
    for _, a in ipairs({"passed", "redirected", "failed"}) do before[a] = count("pbx1", a) end
    local chan = inbound_call("pbx1", "from-internal")
    assert_untouched("pbx1", chan)
    for a, v in pairs(before) do assert.are.equal(v, count("pbx1", a), a) end
  end)

  it("watches the inbound context and redirects to the context the settings name", function()
    load({AFTER_HOURS_SCHEDULE = "never", AFTER_HOURS_INBOUND = "from-trunk", AFTER_HOURS_CONTEXT = "after-closed"})
    watch()
    local before = count("pbx2", "redirected")
    local pstn = inbound_call("pbx2", "from-pstn")
    local trunk = inbound_call("pbx2", "from-trunk")
    assert.are.equal(before + 1, h.wait_metric("after_hours_calls_total", {server = "pbx2", action = "redirected"}, before + 1))
    assert_redirected("pbx2", trunk, "after-closed")
    assert.are.equal("", getvar("pbx2", pstn, "AFTER_HOURS"))
  end)

  it("closes on a holiday from AFTER_HOURS_HOLIDAYS even when the schedule says open", function()
    load({AFTER_HOURS_SCHEDULE = "mon-sun 00:00-24:00", AFTER_HOURS_HOLIDAYS = "2099-01-01, " .. os.date("%Y-%m-%d")})
    watch()
    local before = count("pbx1", "redirected")
    local chan = inbound_call("pbx1")
    assert.are.equal(before + 1, h.wait_metric("after_hours_calls_total", {server = "pbx1", action = "redirected"}, before + 1))
    assert_redirected("pbx1", chan)
  end)

  it("counts and logs a failed tag or redirect; the call is left alone", function()
    load({AFTER_HOURS_SCHEDULE = "never"})
    watch()
    local before = count("pbx1", "failed")
    local redirected = count("pbx1", "redirected")
    -- a channel the simulator does not know: Setvar answers "No such channel"
    local chan = "PJSIP/ghost-" .. h.uid("ah")
    h.inject("pbx1", "Newchannel", {Channel = chan, Context = "from-pstn", Exten = "5551000", CallerIDNum = "555",
                                    Uniqueid = "ghost", Linkedid = "ghost"})
    assert.are.equal(before + 1, h.wait_metric("after_hours_calls_total", {server = "pbx1", action = "failed"}, before + 1))
    local line = h.log_with('msg="after-hours redirect failed"', "channel=" .. chan)
    assert.truthy(line)
    assert.matches("level=warn", line, 1, true)
    assert.are.equal("server: No such channel", h.field(line, "err"))
    assert.are.equal(redirected, count("pbx1", "redirected"))
    assert.are.same({}, of(redirects, chan, "pbx1"))
  end)

  it("refuses to load with a malformed schedule, saying why", function()
    T.reset()
    local ok, err = pcall(env.load_script, SCRIPT, {AFTER_HOURS_SCHEDULE = "mon-fri 8-18"})
    assert.is_false(ok)
    assert.matches('bad time range "8-18"', tostring(err), 1, true)
  end)

  it("refuses to load with a malformed holiday", function()
    T.reset()
    local ok, err = pcall(env.load_script, SCRIPT, {AFTER_HOURS_HOLIDAYS = "25.12.2026"})
    assert.is_false(ok)
    assert.matches('bad holiday "25.12.2026"', tostring(err), 1, true)
  end)
end)
