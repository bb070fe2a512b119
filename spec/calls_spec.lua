-- lua/calls.lua: follow calls (channels sharing a Linkedid), with a bound.
--
-- The tracker only reads ev.X fields and ev:name(), so most specs feed it
-- plain tables, and a fake clock (opts.now) makes durations exact. The last
-- describe feeds it real engine events injected through the simulator.
local ami = require "ami"
local T = require "ami.testing"
local calls = require "calls"
local h = require "spec.helpers.sim"

local Ev = {}
Ev.__index = Ev
function Ev:name() return self.Event end

local function ev(name, fields)
  fields.Event = name
  fields.server = fields.server or "pbx1"
  return setmetatable(fields, Ev)
end

-- A call "L1": its first leg has Uniqueid == Linkedid.
local function newchannel(id, chan, uniqueid, extra)
  local f = {Linkedid = id, Channel = chan, Uniqueid = uniqueid or id, CallerIDNum = "1001", Exten = "2002",
             ChannelStateDesc = "Down"}
  for k, v in pairs(extra or {}) do f[k] = v end
  return ev("Newchannel", f)
end
local function newstate(id, chan, desc)
  return ev("Newstate", {Linkedid = id, Channel = chan, ChannelStateDesc = desc})
end
local function hangup(id, chan, uniqueid, cause, txt)
  return ev("Hangup", {Linkedid = id, Channel = chan, Uniqueid = uniqueid, Cause = cause, ["Cause-txt"] = txt})
end

describe("calls", function()
  local clock, ended, tracker

  local function new_tracker(opts)
    opts = opts or {}
    ended = {}
    clock = 100
    return calls.new{max = opts.max, now = function() return clock end,
                     on_end = function(call) ended[#ended + 1] = call end}
  end

  before_each(function() tracker = new_tracker() end)

  it("lists the events a tracker needs in calls.EVENTS", function()
    assert.are.same({"Newchannel", "Newstate", "BridgeEnter", "Hangup"}, calls.EVENTS)
  end)

  it("defaults to following at most 10000 calls", function()
    assert.are.equal(10000, calls.new().max)
  end)

  it("starts a call on its first Newchannel with server, caller and exten", function()
    local call = tracker:feed(newchannel("L1", "PJSIP/1001-00000001", "L1", {server = "pbx2"}))
    assert.are.equal(call, tracker:get("L1"))
    assert.are.equal("L1", call.id)
    assert.are.equal("pbx2", call.server)
    assert.are.equal("1001", call.caller)
    assert.are.equal("2002", call.exten)
    assert.are.equal(100, call.started)
    assert.are.equal(1, call.channels)
    assert.are.equal(1, tracker:count())
  end)

  it("ignores events without a Linkedid", function()
    assert.is_nil(tracker:feed(ev("Newchannel", {Channel = "PJSIP/1-1", Uniqueid = "u1"})))
    assert.are.equal(0, tracker:count())
  end)

  it("ignores Newstate and Hangup of a call it never saw start", function()
    assert.is_nil(tracker:feed(newstate("L9", "PJSIP/1-9", "Up")))
    assert.is_nil(tracker:feed(hangup("L9", "PJSIP/1-9", "L9", "16")))
    assert.are.equal(0, tracker:count())
    assert.are.equal(0, #ended)
  end)

  it("counts each channel of a call once", function()
    tracker:feed(newchannel("L1", "Local/100@test-1;1", "L1"))
    tracker:feed(newchannel("L1", "Local/100@test-1;2", "L1b"))
    tracker:feed(newchannel("L1", "Local/100@test-1;2", "L1b"))
    assert.are.equal(2, tracker:get("L1").channels)
    assert.are.equal(1, tracker:count())
  end)

  it("ends a call when its last channel hangs up, not before", function()
    tracker:feed(newchannel("L1", "A", "L1"))
    tracker:feed(newchannel("L1", "B", "L1b"))
    tracker:feed(hangup("L1", "B", "L1b", "16"))
    assert.are.equal(0, #ended)
    assert.are.equal(1, tracker:get("L1").channels)
    tracker:feed(hangup("L1", "A", "L1", "16"))
    assert.are.equal(1, #ended)
    assert.is_nil(tracker:get("L1"))
    assert.are.equal(0, tracker:count())
  end)

  it("ends a call once: a repeated Hangup after the end is ignored", function()
    tracker:feed(newchannel("L1", "A", "L1"))
    tracker:feed(hangup("L1", "A", "L1", "16"))
    assert.is_nil(tracker:feed(hangup("L1", "A", "L1", "16")))
    assert.are.equal(1, #ended)
  end)

  it("times an answered call: wait from start to answer, duration from answer to end", function()
    tracker:feed(newchannel("L1", "A", "L1"))
    clock = 104
    tracker:feed(newstate("L1", "A", "Up"))
    clock = 130
    tracker:feed(hangup("L1", "A", "L1", "16", "Normal Clearing"))
    local call = ended[1]
    assert.are.equal(100, call.started)
    assert.are.equal(104, call.answered)
    assert.are.equal(130, call.ended)
    assert.are.equal(4, call.wait)
    assert.are.equal(26, call.duration)
  end)

  it("takes BridgeEnter as the answer", function()
    tracker:feed(newchannel("L1", "A", "L1"))
    clock = 102.5
    tracker:feed(ev("BridgeEnter", {Linkedid = "L1", Channel = "A"}))
    clock = 110
    tracker:feed(hangup("L1", "A", "L1", "16"))
    assert.are.equal(102.5, ended[1].answered)
    assert.are.equal(7.5, ended[1].duration)
  end)

  it("does not take a ringing state as the answer", function()
    tracker:feed(newchannel("L1", "A", "L1"))
    tracker:feed(newstate("L1", "A", "Ringing"))
    tracker:feed(newstate("L1", "A", "Ring"))
    assert.is_nil(tracker:get("L1").answered)
  end)

  it("keeps the first answer time", function()
    tracker:feed(newchannel("L1", "A", "L1"))
    tracker:feed(newchannel("L1", "B", "L1b"))
    clock = 101
    tracker:feed(newstate("L1", "A", "Up"))
    clock = 103
    tracker:feed(newstate("L1", "B", "Up"))
    tracker:feed(ev("BridgeEnter", {Linkedid = "L1", Channel = "B"}))
    assert.are.equal(101, tracker:get("L1").answered)
  end)

  it("gives an unanswered call duration 0 and wait until the end", function()
    tracker:feed(newchannel("L1", "A", "L1"))
    clock = 118
    tracker:feed(hangup("L1", "A", "L1", "19", "User alerting, no answer"))
    local call = ended[1]
    assert.is_nil(call.answered)
    assert.are.equal(0, call.duration)
    assert.are.equal(18, call.wait)
    assert.are.equal("19", call.cause)
    assert.are.equal("User alerting, no answer", call.cause_txt)
  end)

  it("takes the cause of the leg that started the call, even when another leg hangs up first", function()
    tracker:feed(newchannel("L1", "A", "L1"))
    tracker:feed(newchannel("L1", "B", "L1b"))
    tracker:feed(hangup("L1", "B", "L1b", "17", "User busy"))
    tracker:feed(hangup("L1", "A", "L1", "16", "Normal Clearing"))
    assert.are.equal("16", ended[1].cause)
    assert.are.equal("Normal Clearing", ended[1].cause_txt)
  end)

  it("keeps the starting leg's cause when another leg hangs up after it", function()
    tracker:feed(newchannel("L1", "A", "L1"))
    tracker:feed(newchannel("L1", "B", "L1b"))
    tracker:feed(hangup("L1", "A", "L1", "21", "Call Rejected"))
    tracker:feed(hangup("L1", "B", "L1b", "16", "Normal Clearing"))
    assert.are.equal("21", ended[1].cause)
  end)

  it("takes the first cause when the starting leg never reports one", function()
    tracker:feed(newchannel("L1", "B", "L1b"))
    tracker:feed(newchannel("L1", "C", "L1c"))
    tracker:feed(hangup("L1", "B", "L1b", "34"))
    tracker:feed(hangup("L1", "C", "L1c", "16"))
    assert.are.equal("34", ended[1].cause)
  end)

  it("follows several calls at once, each by its Linkedid", function()
    tracker:feed(newchannel("L1", "A1", "L1"))
    tracker:feed(newchannel("L2", "A2", "L2"))
    assert.are.equal(2, tracker:count())
    tracker:feed(hangup("L2", "A2", "L2", "17"))
    assert.are.equal(1, #ended)
    assert.are.equal("L2", ended[1].id)
    assert.are.equal(1, tracker:count())
    assert.truthy(tracker:get("L1"))
  end)

  describe("bound", function()
    it("drops the oldest live call past max and counts it", function()
      tracker = new_tracker{max = 2}
      for _, id in ipairs({"A", "B", "C"}) do tracker:feed(newchannel(id, "chan-" .. id, id)) end
      assert.are.equal(2, tracker:count())
      assert.are.equal(1, tracker.evicted)
      assert.is_nil(tracker:get("A"))
      assert.truthy(tracker:get("B"))
      assert.truthy(tracker:get("C"))
    end)

    it("skips calls that already ended when choosing the oldest", function()
      tracker = new_tracker{max = 2}
      tracker:feed(newchannel("A", "chan-A", "A"))
      tracker:feed(newchannel("B", "chan-B", "B"))
      tracker:feed(hangup("A", "chan-A", "A", "16"))
      tracker:feed(newchannel("C", "chan-C", "C"))
      assert.are.equal(0, tracker.evicted)
      tracker:feed(newchannel("D", "chan-D", "D"))
      assert.are.equal(1, tracker.evicted)
      assert.is_nil(tracker:get("B"))
      assert.truthy(tracker:get("C"))
      assert.truthy(tracker:get("D"))
    end)

    it("ignores the later events of a dropped call and never reports its end", function()
      tracker = new_tracker{max = 1}
      tracker:feed(newchannel("A", "chan-A", "A"))
      tracker:feed(newchannel("B", "chan-B", "B"))
      assert.is_nil(tracker:feed(hangup("A", "chan-A", "A", "16")))
      assert.are.equal(0, #ended)
      assert.are.equal(1, tracker:count())
    end)

    it("holds the bound over five calls in a row (max 2)", function()
      tracker = new_tracker{max = 2}
      for i = 1, 5 do tracker:feed(newchannel("C" .. i, "chan-" .. i, "C" .. i)) end
      assert.are.equal(2, tracker:count())
      assert.are.equal(3, tracker.evicted)
      assert.truthy(tracker:get("C4"))
      assert.truthy(tracker:get("C5"))
    end)

    it("holds the bound over many calls (max 100, 5000 calls)", function()
      tracker = new_tracker{max = 100}
      for i = 1, 5000 do tracker:feed(newchannel("C" .. i, "chan-" .. i, "C" .. i)) end
      assert.are.equal(100, tracker:count())
      assert.are.equal(4900, tracker.evicted)
      assert.truthy(tracker:get("C5000"))
      assert.is_nil(tracker:get("C4900"))
    end)

    it("keeps tracking after thousands of calls have come and gone", function()
      tracker = new_tracker{max = 3}
      for i = 1, 3000 do
        tracker:feed(newchannel("E" .. i, "chan", "E" .. i))
        tracker:feed(hangup("E" .. i, "chan", "E" .. i, "16"))
      end
      assert.are.equal(3000, #ended)
      assert.are.equal(0, tracker:count())
      assert.are.equal(0, tracker.evicted)
      for i = 1, 4 do tracker:feed(newchannel("F" .. i, "chan-" .. i, "F" .. i)) end
      assert.are.equal(3, tracker:count())
      assert.are.equal(1, tracker.evicted)
      assert.is_nil(tracker:get("F1"))
    end)
    it("keeps its bookkeeping bounded when calls end without ever hitting max", function()
      tracker = new_tracker{max = 100}
      for i = 1, 5000 do
        tracker:feed(newchannel("G" .. i, "chan", "G" .. i))
        tracker:feed(hangup("G" .. i, "chan", "G" .. i, "16"))
      end
      assert.are.equal(0, tracker:count())
      -- the arrival-order list (tracker.order, from tracker.head on) must not keep
      -- one id per call ever seen: that would grow without bound in a long run
      local kept = 0
      for _ in pairs(tracker.order) do kept = kept + 1 end
      assert.is_true(kept <= 1024 + 100, "ids kept in tracker.order: " .. kept)
    end)
  end)

  describe("with events from the engine", function()
    before_each(T.reset)
    after_each(T.reset)

    it("follows an injected call and reports its end with the engine's clock", function()
      local done = {}
      local tr = calls.new{on_end = function(call) done[#done + 1] = call end}
      for _, name in ipairs(calls.EVENTS) do ami.on(name, function(e) tr:feed(e) end) end
      local id = h.uid("calls")
      local t0 = ami.now()
      h.inject("pbx2", "Newchannel", {Channel = "PJSIP/3001-01", Uniqueid = id, Linkedid = id,
                                      CallerIDNum = "3001", Exten = "4004", ChannelStateDesc = "Ring"})
      h.inject("pbx2", "Newstate", {Channel = "PJSIP/3001-01", Uniqueid = id, Linkedid = id,
                                    ChannelStateDesc = "Up"})
      ami.sleep(0.2)
      h.inject("pbx2", "Hangup", {Channel = "PJSIP/3001-01", Uniqueid = id, Linkedid = id,
                                  Cause = "17", ["Cause-txt"] = "User busy"})
      assert.truthy(T.wait_until(function() return #done == 1 end, 2000))
      local call = done[1]
      assert.are.equal(id, call.id)
      assert.are.equal("pbx2", call.server)
      assert.are.equal("3001", call.caller)
      assert.are.equal("4004", call.exten)
      assert.are.equal("17", call.cause)
      assert.are.equal("User busy", call.cause_txt)
      assert.truthy(call.answered)
      assert.is_true(call.started >= t0)
      -- talk time is the engine's clock between the injected answer and hangup (a 0.2 s
      -- sleep apart): more than nothing, and no more than this test has run, however
      -- slow the machine
      local elapsed = ami.now() - t0
      assert.is_true(call.duration > 0 and call.duration <= elapsed,
                     "duration " .. call.duration .. ", test ran " .. elapsed)
      assert.are.equal(call.answered - call.started, call.wait)
    end)
  end)
end)
