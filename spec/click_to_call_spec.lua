-- scripts/click_to_call.lua: a UserEvent ClickToCall asks for a call; the
-- script originates it and answers with a UserEvent ClickToCallResult.
--
-- The simulator answers every PJSIP originate after 0.2-0.5 s of ringing and
-- echoes UserEvent actions back as events, so the whole round trip runs here.
-- Settings come from the environment at load time; spec/helpers/env.lua sets
-- them for one load (CLICK_TO_CALL_TECH=Bogus makes the originate fail).
local ami = require "ami"
local T = require "ami.testing"
local h = require "spec.helpers.sim"
local env = require "spec.helpers.env"

local SCRIPT = "scripts/click_to_call.lua"

local function request(server, fields)
  local hdrs = {{"Privilege", "user,all"}, {"UserEvent", "ClickToCall"}}
  for _, k in ipairs({"Agent", "Number", "RequestId"}) do
    if fields[k] ~= nil then hdrs[#hdrs + 1] = {k, fields[k]} end
  end
  h.inject(server, "UserEvent", hdrs)
end

local function result_for(request_id, timeout_ms)
  return ami.wait_for({Event = "UserEvent", UserEvent = "ClickToCallResult", RequestId = request_id},
                      timeout_ms or 5000)
end

local function count(server, result)
  return h.metric("click_to_call_total", {server = server, result = result})
end

-- The simulator keeps an answered agent's channel up for a few seconds:
-- hang them up so the next request finds the agent free.
local function hangup_agents()
  for _, server in ipairs({"pbx1", "pbx2"}) do
    for _, ch in ipairs(ami.channels(server)) do
      if ch.channel:match("^PJSIP/") then ami.action(server, "Hangup", {Channel = ch.channel}) end
    end
  end
end

describe("click_to_call.lua", function()
  before_each(function()
    T.reset()
    T.clear_logs()
  end)
  after_each(function()
    T.reset()
    hangup_agents()
  end)

  describe("with the default settings", function()
    before_each(function() T.load_script(SCRIPT) end)

    it("originates a call from the agent's PJSIP phone to the number, in from-internal", function()
      local rid = h.uid("c2c")
      local orig0 = T.sim.stats("pbx1").originates
      local chans = h.collect({Event = "Newchannel", Channel = ami.pattern("^PJSIP/1001%-")})
      local vars = h.collect({Event = "VarSet", Variable = "CLICK_REQUEST", Value = rid})
      request("pbx1", {Agent = "1001", Number = "+15551234567", RequestId = rid})
      assert.truthy(result_for(rid))
      assert.are.equal(orig0 + 1, T.sim.stats("pbx1").originates)
      assert.are.equal(1, #chans)
      assert.are.equal("from-internal", chans[1].Context)
      assert.are.equal("+15551234567", chans[1].Exten)
      assert.are.equal("+15551234567", chans[1].CallerIDNum)
      assert.are.equal("Click to call", chans[1].CallerIDName)
      assert.are.equal(1, #vars)
      assert.are.equal(chans[1].Channel, vars[1].Channel)
    end)

    it("answers with Result answered and the agent's channel", function()
      local rid = h.uid("c2c")
      request("pbx1", {Agent = "1001", Number = "+15551234567", RequestId = rid})
      local ev, err = result_for(rid)
      assert.is_nil(err)
      assert.are.equal("pbx1", ev.server)
      assert.are.equal("answered", ev.Result)
      assert.are.equal("", ev.Reason)
      assert.matches("^PJSIP/1001%-%x+$", ev.Channel)
    end)

    it("counts an answered request and logs it as connected", function()
      local rid = h.uid("c2c")
      local before = count("pbx1", "answered")
      request("pbx1", {Agent = "1001", Number = "+15551234567", RequestId = rid})
      local ev = result_for(rid)
      assert.truthy(ev)
      assert.are.equal(before + 1, count("pbx1", "answered"))
      local line = h.log_with('msg="click-to-call: connected"', "request=" .. rid .. " ")
      assert.truthy(line)
      assert.are.equal(ev.Channel, h.field(line, "channel"))
      assert.are.equal("pbx1", h.field(line, "server"))
    end)

    it("places the call and the answer on the server the request came from", function()
      local rid = h.uid("c2c")
      local o1, o2 = T.sim.stats("pbx1").originates, T.sim.stats("pbx2").originates
      local a1, a2 = count("pbx1", "answered"), count("pbx2", "answered")
      request("pbx2", {Agent = "2002", Number = "5550100", RequestId = rid})
      local ev = result_for(rid)
      assert.truthy(ev)
      assert.are.equal("pbx2", ev.server)
      assert.matches("^PJSIP/2002%-", ev.Channel)
      assert.are.equal(o2 + 1, T.sim.stats("pbx2").originates)
      assert.are.equal(o1, T.sim.stats("pbx1").originates)
      assert.are.equal(a2 + 1, count("pbx2", "answered"))
      assert.are.equal(a1, count("pbx1", "answered"))
    end)

    it("accepts numbers made of digits, *, # and a leading +", function()
      for i, number in ipairs({"*72#", "0044123", "+1"}) do
        local rid = h.uid("c2c-ok" .. i)
        request("pbx1", {Agent = "agent_7-b", Number = number, RequestId = rid})
        local ev = result_for(rid)
        assert.truthy(ev, number)
        assert.are.equal("answered", ev.Result, number)
        hangup_agents() -- free for the next number
      end
    end)

    local refused = {
      {"a Number with shell characters", {Agent = "1001", Number = "123;rm"}},
      {"a Number with letters", {Agent = "1001", Number = "1800FLOWERS"}},
      {"a Number with a + inside", {Agent = "1001", Number = "12+34"}},
      {"a Number longer than 32", {Agent = "1001", Number = string.rep("1", 33)}},
      {"a missing Number", {Agent = "1001"}},
      {"an Agent that would change the dial string", {Agent = "1001&PJSIP/1002", Number = "123"}},
      {"a missing Agent", {Number = "123"}},
      {"an Agent longer than 32", {Agent = string.rep("a", 33), Number = "123"}},
    }
    for _, case in ipairs(refused) do
      it("refuses " .. case[1] .. ": Result invalid and no Originate", function()
        local rid = h.uid("c2c-bad")
        local fields = {RequestId = rid}
        for k, v in pairs(case[2]) do fields[k] = v end
        local orig0 = T.sim.stats("pbx1").originates
        local before = count("pbx1", "invalid")
        request("pbx1", fields)
        local ev, err = result_for(rid, 3000)
        assert.is_nil(err)
        assert.are.equal("invalid", ev.Result)
        assert.are.equal("Agent and Number must be an extension and digits", ev.Reason)
        assert.are.equal("", ev.Channel)
        assert.are.equal(before + 1, count("pbx1", "invalid"))
        assert.are.equal(orig0, T.sim.stats("pbx1").originates)
      end)
    end

    it("answers busy, without an Originate, when the agent already has a channel", function()
      local rid = h.uid("c2c-busy")
      local uid = h.uid("agent-call")
      h.inject("pbx1", "Newchannel", {Channel = "PJSIP/1007-000000aa", Uniqueid = uid, Linkedid = uid,
                                      ChannelState = "6", ChannelStateDesc = "Up"})
      local orig0 = T.sim.stats("pbx1").originates
      local before = count("pbx1", "busy")
      request("pbx1", {Agent = "1007", Number = "5550100", RequestId = rid})
      local ev = result_for(rid)
      assert.truthy(ev)
      assert.are.equal("busy", ev.Result)
      assert.are.equal("Agent is on a call", ev.Reason)
      assert.are.equal("PJSIP/1007-000000aa", ev.Channel)
      assert.are.equal(orig0, T.sim.stats("pbx1").originates)
      assert.are.equal(before + 1, count("pbx1", "busy"))
      local line = h.log_with('msg="click-to-call: agent busy"', "request=" .. rid .. " ")
      assert.truthy(line)
      assert.are.equal("Up", h.field(line, "state"))
      -- another agent whose extension starts the same is not busy
      h.inject("pbx1", "Hangup", {Channel = "PJSIP/1007-000000aa", Uniqueid = uid, Cause = "16"})
      local rid2 = h.uid("c2c-free")
      request("pbx1", {Agent = "1007", Number = "5550100", RequestId = rid2})
      assert.are.equal("answered", result_for(rid2).Result)
    end)

    it("does not take agent 100 for agent 1001", function()
      local res = ami.action("pbx1", "Originate", {Channel = "PJSIP/1001", Application = "Wait", Data = "5"})
      assert.truthy(res)
      local rid = h.uid("c2c-prefix")
      request("pbx1", {Agent = "100", Number = "5550100", RequestId = rid})
      assert.are.equal("answered", result_for(rid).Result)
    end)

    it("logs a refused request at warn with what it got", function()
      local rid = h.uid("c2c-bad")
      request("pbx1", {Agent = "1001", Number = "123;rm", RequestId = rid})
      assert.truthy(result_for(rid))
      local line = h.log_with('msg="click-to-call: refused a request"', "request=" .. rid .. " ")
      assert.truthy(line)
      assert.matches("level=warn", line, 1, true)
      assert.are.equal("123;rm", h.field(line, "number"))
      assert.are.equal("1001", h.field(line, "agent"))
    end)

    it("ignores other UserEvents, including its own results", function()
      local o1 = T.sim.stats("pbx1").originates
      local rid = h.uid("c2c-other")
      h.inject("pbx1", "UserEvent", {{"UserEvent", "ClickToCallResult"}, {"Agent", "1001"},
                                     {"Number", "123"}, {"RequestId", rid}})
      h.inject("pbx1", "UserEvent", {{"UserEvent", "SomethingElse"}, {"Agent", "1001"},
                                     {"Number", "123"}, {"RequestId", rid}})
      ami.sleep(0.3)
      assert.are.equal(o1, T.sim.stats("pbx1").originates)
      assert.are.same({}, T.logs("request=" .. rid))
    end)

    it("reports error when the connection drops before the OriginateResponse", function()
      local rid = h.uid("c2c-drop")
      local before = count("pbx1", "error")
      T.sim.faults("pbx1", {all_silent = true}) -- the Originate is read but never answered
      local ok, failure = pcall(function()
        request("pbx1", {Agent = "1001", Number = "5550199", RequestId = rid})
        assert.truthy(h.wait_log(3000, 'msg="click-to-call: calling"', "request=" .. rid .. " "))
        ami.sleep(0.1)
        T.sim.stop("pbx1")
        assert.are.equal(before + 1, h.wait_metric("click_to_call_total", {server = "pbx1", result = "error"}, before + 1))
        local line = h.log_with('msg="click-to-call: not connected"', "request=" .. rid .. " ")
        assert.truthy(line)
        assert.matches("^disconnected", h.field(line, "err"))
        -- the answer cannot go out either: logged, never fatal
        assert.truthy(h.wait_log(2000, 'msg="click-to-call: could not send the result"'))
      end)
      T.sim.faults("pbx1", {})
      T.sim.restart("pbx1")
      assert.truthy(h.wait_connected("pbx1", 5000), "pbx1 did not reconnect")
      assert(ok, failure)
    end)
  end)

  describe("when the originate fails", function()
    before_each(function() env.load_script(SCRIPT, {CLICK_TO_CALL_TECH = "Bogus"}) end)

    it("answers with Result failed and the server's reason, and counts it", function()
      local rid = h.uid("c2c-fail")
      local orig0 = T.sim.stats("pbx1").originates
      local before = count("pbx1", "failed")
      request("pbx1", {Agent = "1001", Number = "5550123", RequestId = rid})
      local ev, err = result_for(rid)
      assert.is_nil(err)
      assert.are.equal("failed", ev.Result)
      assert.are.equal("server: OriginateResponse: Failure, Reason 0", ev.Reason)
      assert.are.equal("", ev.Channel)
      assert.are.equal(orig0 + 1, T.sim.stats("pbx1").originates)
      assert.are.equal(before + 1, count("pbx1", "failed"))
      assert.truthy(h.log_with('msg="click-to-call: not connected"', "request=" .. rid .. " "))
    end)
  end)
end)
