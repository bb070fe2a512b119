-- scripts/hangup_causes.lua: calls counted by hangup cause category, talk and
-- ring time histograms, failures logged at warn, all read from the engine's
-- live call state when a call's last channel hangs up.
--
-- Two ways to drive a script: inject a crafted event sequence (exact causes,
-- exact channels), or originate a real call through the simulator.
-- Metrics live for the whole run, so every check compares with a value read
-- before the call.
local ami = require "ami"
local T = require "ami.testing"
local h = require "spec.helpers.sim"
local env = require "spec.helpers.env"

local SCRIPT = "scripts/hangup_causes.lua"

local function ended(server, category)
  return h.metric("calls_ended_total", {server = server, category = category})
end

--- Inject one call: Newchannel for each leg, optional answer, then the hangups.
-- opts: server, id, legs (default 1), cause, answer (bool), talk (s to sleep between answer and hangup)
local function inject_call(opts)
  local server, id = opts.server or "pbx1", opts.id
  local legs = {}
  for i = 1, opts.legs or 1 do
    legs[i] = {chan = "PJSIP/7" .. i .. "00-" .. id, uid = i == 1 and id or (id .. "." .. i)}
    h.inject(server, "Newchannel", {Channel = legs[i].chan, Uniqueid = legs[i].uid, Linkedid = id,
                                    CallerIDNum = "5551000", Exten = "7100", Context = "from-internal",
                                    ChannelState = "4", ChannelStateDesc = "Ring"})
  end
  if opts.answer then
    h.inject(server, "Newstate", {Channel = legs[1].chan, Uniqueid = legs[1].uid, Linkedid = id,
                                  ChannelState = "6", ChannelStateDesc = "Up"})
  end
  if opts.talk then ami.sleep(opts.talk) end
  if opts.hangup == false then return legs end
  for i = #legs, 1, -1 do
    h.inject(server, "Hangup", {Channel = legs[i].chan, Uniqueid = legs[i].uid, Linkedid = id,
                                Cause = tostring(opts.cause or 16), ["Cause-txt"] = "whatever"})
  end
  return legs
end

describe("hangup_causes.lua", function()
  before_each(function()
    T.reset()
    T.clear_logs()
    T.load_script(SCRIPT)
  end)
  after_each(T.reset)

  describe("with injected calls", function()
    it("counts a busy call (cause 17) in category busy", function()
      local before = ended("pbx1", "busy")
      inject_call{id = h.uid("busy"), cause = 17}
      assert.are.equal(before + 1, h.wait_metric("calls_ended_total", {server = "pbx1", category = "busy"}, before + 1))
    end)

    it("counts each category once per call", function()
      local cats = {normal = 16, no_answer = 19, rejected = 21, bad_number = 1, failure = 38, unknown = 0}
      local before = {}
      for cat in pairs(cats) do before[cat] = ended("pbx1", cat) end
      for cat, cause in pairs(cats) do inject_call{id = h.uid(cat), cause = cause} end
      T.wait_until(function() return ended("pbx1", "unknown") >= before.unknown + 1
                                     and ended("pbx1", "failure") >= before.failure + 1 end, 3000)
      ami.sleep(0.1)
      for cat in pairs(cats) do
        assert.are.equal(before[cat] + 1, ended("pbx1", cat), cat)
      end
    end)

    it("counts per server", function()
      local p1, p2 = ended("pbx1", "rejected"), ended("pbx2", "rejected")
      inject_call{server = "pbx2", id = h.uid("p2"), cause = 21}
      assert.are.equal(p2 + 1, h.wait_metric("calls_ended_total", {server = "pbx2", category = "rejected"}, p2 + 1))
      assert.are.equal(p1, ended("pbx1", "rejected"))
    end)

    it("counts a call when its last channel hangs up, not at the first", function()
      local id = h.uid("two-legs")
      local before = ended("pbx1", "normal")
      local legs = inject_call{id = id, legs = 2, answer = true, hangup = false}
      h.inject("pbx1", "Hangup", {Channel = legs[2].chan, Uniqueid = legs[2].uid, Linkedid = id, Cause = "16"})
      ami.sleep(0.2)
      assert.are.equal(before, ended("pbx1", "normal"))
      h.inject("pbx1", "Hangup", {Channel = legs[1].chan, Uniqueid = legs[1].uid, Linkedid = id, Cause = "16"})
      assert.are.equal(before + 1, h.wait_metric("calls_ended_total", {server = "pbx1", category = "normal"}, before + 1))
    end)

    it("logs a failure cause at warn as 'call failed' with the cause's name", function()
      local id = h.uid("fail")
      inject_call{id = id, cause = 34}
      local line = h.wait_log(3000, 'msg="call failed"', "call=" .. id .. " ")
      assert.truthy(line, "no 'call failed' line for " .. id)
      assert.matches("level=warn", line, 1, true)
      assert.are.equal("no circuit available", h.field(line, "cause_name"))
      assert.are.equal("34", h.field(line, "cause"))
      assert.are.equal("failure", h.field(line, "category"))
      assert.are.equal("5551000", h.field(line, "caller"))
      assert.are.equal("7100", h.field(line, "exten"))
      assert.are.equal("pbx1", h.field(line, "server"))
      assert.are.equal("false", h.field(line, "answered"))
      assert.are.equal("scripts/hangup_causes.lua", h.field(line, "script"))
    end)

    it("logs a bad number (cause 1) at warn too", function()
      local id = h.uid("badnum")
      inject_call{id = id, cause = 1}
      local line = h.wait_log(3000, 'msg="call failed"', "call=" .. id .. " ")
      assert.truthy(line)
      assert.are.equal("bad_number", h.field(line, "category"))
      assert.are.equal("unallocated number", h.field(line, "cause_name"))
    end)

    it("logs a normal or busy ending at debug as 'call ended', not as a failure", function()
      local id1, id2 = h.uid("ok"), h.uid("busy")
      inject_call{id = id1, cause = 16}
      inject_call{id = id2, cause = 17}
      local line = h.wait_log(3000, 'msg="call ended"', "call=" .. id2 .. " ")
      assert.truthy(line)
      assert.matches("level=debug", line, 1, true)
      assert.are.equal("user busy", h.field(line, "cause_name"))
      local normal = h.log_with('msg="call ended"', "call=" .. id1 .. " ")
      assert.truthy(normal)
      assert.are.equal("normal clearing", h.field(normal, "cause_name"))
      assert.are.same({}, h.logs_with('msg="call failed"', "call=" .. id1 .. " "))
      assert.are.same({}, h.logs_with('msg="call failed"', "call=" .. id2 .. " "))
    end)

    it("records talk time for answered calls only, ring time for all", function()
      local talk0 = h.metric("call_talk_seconds", {server = "pbx1"})
      local wait0 = h.metric("call_wait_seconds", {server = "pbx1"})
      local a, b = h.uid("answered"), h.uid("unanswered")
      inject_call{id = a, cause = 16, answer = true}
      inject_call{id = b, cause = 19}
      assert.truthy(h.wait_log(3000, "call=" .. b .. " "))
      assert.truthy(h.wait_log(3000, "call=" .. a .. " "))
      assert.are.equal(talk0 + 1, h.metric("call_talk_seconds", {server = "pbx1"}))
      assert.are.equal(wait0 + 2, h.metric("call_wait_seconds", {server = "pbx1"}))
    end)

    it("logs the talk time in tenths of a second", function()
      local id = h.uid("talk")
      ami.sleep(0) -- start from a fresh loop clock
      inject_call{id = id, cause = 16, answer = true, talk = 0.5}
      local line = h.wait_log(3000, 'msg="call ended"', "call=" .. id .. " ")
      assert.truthy(line)
      assert.are.equal("true", h.field(line, "answered"))
      local talk = tonumber(h.field(line, "talk_s"))
      assert.are.equal(talk, math.floor(talk * 10 + 0.5) / 10)  -- one decimal
      assert.is_true(talk >= 0.3 and talk <= 0.8, "talk_s=" .. tostring(talk))
    end)

    it("reads each leg's times and cause from the engine's table, not from the Hangup event", function()
      local id = h.uid("from-table")
      inject_call{id = id, legs = 1, hangup = false}
      -- a Hangup that carries no caller or cause text: the table has them
      h.inject("pbx1", "Hangup", {Uniqueid = id, Linkedid = id, Cause = "38"})
      local line = h.wait_log(3000, 'msg="call failed"', "call=" .. id .. " ")
      assert.truthy(line)
      assert.are.equal("5551000", h.field(line, "caller"))
      assert.are.equal("7100", h.field(line, "exten"))
      assert.are.equal("network out of order", h.field(line, "cause_name"))
    end)

    it("ignores a Hangup of a channel the engine never tracked", function()
      local before = ended("pbx1", "normal")
      h.inject("pbx1", "Hangup", {Channel = "PJSIP/ghost-1", Uniqueid = h.uid("ghost"), Cause = "16"})
      ami.sleep(0.2)
      assert.are.equal(before, ended("pbx1", "normal"))
    end)
  end)

  describe("when a leg vanishes without its Hangup", function()
    before_each(function()
      T.reset()
      T.clear_logs()
      env.load_script(SCRIPT, {HANGUP_CAUSES_SWEEP_S = "0.2"})
    end)

    it("closes the call once the engine's table no longer has its channels", function()
      local id = h.uid("vanished")
      local legs = inject_call{server = "pbx2", id = id, legs = 2, answer = true, hangup = false}
      local before = ended("pbx2", "rejected")
      h.inject("pbx2", "Hangup", {Channel = legs[2].chan, Uniqueid = legs[2].uid, Linkedid = id, Cause = "21"})
      ami.sleep(0.5)
      assert.are.equal(before, ended("pbx2", "rejected")) -- the first leg is still up
      -- the engine reconnects; the server does not know the first leg: the rebuild drops it
      T.sim.drop_sessions("pbx2")
      assert.are.equal(before + 1, h.wait_metric("calls_ended_total", {server = "pbx2", category = "rejected"},
                                                 before + 1, 5000))
      assert.truthy(h.wait_connected("pbx2", 5000))
    end)
  end)

  describe("with calls through the simulator", function()
    it("counts an originated PJSIP call that hangs up normally (cause 16) as normal and answered", function()
      local before = ended("pbx1", "normal")
      local talk0 = h.metric("call_talk_seconds", {server = "pbx1"})
      local res, err = ami.action("pbx1", "Originate", {Channel = "PJSIP/1001", Application = "Wait", Data = "0.3"})
      assert.is_nil(err)
      assert.matches("^PJSIP/1001%-", res.Channel)
      assert.are.equal(before + 1, h.wait_metric("calls_ended_total", {server = "pbx1", category = "normal"}, before + 1))
      assert.are.equal(talk0 + 1, h.metric("call_talk_seconds", {server = "pbx1"}))
      local line = h.log_with('msg="call ended"', "cause=16 ")
      assert.truthy(line)
      assert.are.equal("true", h.field(line, "answered"))
    end)

    it("counts a busy Local call (test extension 300) as busy on the right server", function()
      local before1, before2 = ended("pbx1", "busy"), ended("pbx2", "busy")
      local res, err = ami.action("pbx2", "Originate", {Channel = "Local/300@test", Application = "Wait", Data = "1"})
      assert.is_nil(res)
      assert.matches("^server: ", err)
      assert.are.equal(before2 + 1, h.wait_metric("calls_ended_total", {server = "pbx2", category = "busy"}, before2 + 1))
      assert.are.equal(before1, ended("pbx1", "busy"))
    end)

    it("counts both halves of a Local call as one call", function()
      local before = ended("pbx1", "unknown") -- the simulator's Local channels end with cause 0
      local res = ami.action("pbx1", "Originate", {Channel = "Local/100@test", Application = "Wait", Data = "0.3"})
      assert.truthy(res)
      assert.are.equal(before + 1, h.wait_metric("calls_ended_total", {server = "pbx1", category = "unknown"}, before + 1))
      ami.sleep(0.3)
      assert.are.equal(before + 1, ended("pbx1", "unknown"))
    end)
  end)
end)
