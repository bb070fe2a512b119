-- ami.channels / ami.channel / ami.calls against the simulated Asterisk:
-- what the objects hold, filters, calls, variables, snapshots that do not
-- change, handlers that see the table updated, transfers, renames and a
-- reconnect. Other specs leave channels of their own in the table: every
-- check here looks at the channels it made.
local ami = require "ami"
local T = require "ami.testing"
local h = require "spec.helpers.sim"

local function originate(server, fields)
  local res, err = ami.action(server, "Originate", fields, {timeout = 5000})
  assert.is_nil(err)
  return res
end

local function mine(server, linkedid)
  return ami.channels(server, {linkedid = linkedid})
end

describe("the live call state", function()
  before_each(function() T.reset() end)
  after_each(function()
    T.reset()
    T.sim.call_rate("pbx2", 0)
  end)

  it("is on in the spec runner", function()
    assert.is_true(ami.callstate)
    assert.is_true(ami.channels("pbx1").synced)
  end)

  it("holds an originated channel with its fields", function()
    local res = originate("pbx1", {Channel = "PJSIP/1001", Application = "Wait", Data = "2",
                                   CallerID = "Alice <5551001>"})
    local ch = ami.channel("pbx1", res.Uniqueid)
    assert.truthy(ch)
    assert.are.equal(res.Channel, ch.channel)
    assert.are.equal(res.Uniqueid, ch.uniqueid)
    assert.are.equal(res.Uniqueid, ch.linkedid)
    assert.are.equal("pbx1", ch.server)
    assert.truthy(T.wait_until(function() return ami.channel("pbx1", res.Uniqueid).application == "Wait" end, 2000))
    ch = ami.channel("pbx1", res.Uniqueid)
    assert.are.equal(6, ch.state)
    assert.are.equal("Up", ch.state_desc)
    assert.are.equal("5551001", ch.caller_num)
    assert.are.equal("Alice", ch.caller_name)
    assert.are.equal("1001", ch.connected_num)
    assert.are.equal("default", ch.context)
    assert.are.equal("s", ch.exten)
    assert.are.equal("2", ch.appdata)
    assert.are.equal(1, ch.priority)
    assert.is_nil(ch.bridge)
    assert.is_nil(ch.hangup_cause)
    assert.is_true(ch.started <= ami.time() and ch.started > ami.time() - 10)
    assert.is_true(ch.answered >= ch.started)
    assert.are.same(ch, ami.channel("pbx1", res.Channel)) -- by name: the same version of the same channel
    assert.matches("^channel PJSIP/1001%-%x+ %(Up%) on pbx1$", tostring(ch))
    local t = ch:totable()
    assert.are.equal(ch.channel, t.channel)
    assert.are.equal("table", type(t.vars))
  end)

  it("lists channels oldest first, filters them exactly, and says whether the table is synced", function()
    local a = originate("pbx1", {Channel = "Local/100@test", Application = "Wait", Data = "1"})
    local list = mine("pbx1", a.Uniqueid)
    assert.are.equal(2, #list)
    assert.matches(";1$", list[1].channel)
    assert.matches(";2$", list[2].channel)
    assert.is_true(list.synced)
    assert.are.equal(1, #ami.channels("pbx1", {channel = list[2].channel}))
    assert.are.equal(0, #ami.channels("pbx1", {channel = list[2].channel, state = 99}))
    local all = ami.channels("pbx1")
    local seen = 0
    for _, ch in ipairs(all) do if ch.linkedid == a.Uniqueid then seen = seen + 1 end end
    assert.are.equal(2, seen)
  end)

  it("groups a call's channels and keeps the call's start", function()
    local a = originate("pbx1", {Channel = "Local/100@test", Application = "Wait", Data = "1"})
    local found
    for _, call in ipairs(ami.calls("pbx1")) do
      if call.id == a.Uniqueid then found = call end
    end
    assert.truthy(found)
    assert.are.equal("pbx1", found.server)
    assert.are.equal(2, #found.channels)
    assert.are.equal(a.Uniqueid, found.channels[1].uniqueid)
    assert.are.equal(found.channels[1].started, found.started)
    assert.are.same({}, found.bridges)
  end)

  it("keeps tracked variables, from VarSet and from the Originate", function()
    local rid = h.uid("cs-var")
    local a = originate("pbx2", {Channel = "Local/600@test", Context = "test", Exten = "600", Priority = "1",
                                 Variable = {"CLICK_REQUEST=" .. rid, "UNTRACKED=1"}})
    assert.truthy(T.wait_until(function()
      for _, ch in ipairs(mine("pbx2", a.Uniqueid)) do if ch:var("CALLTAG") then return true end end
    end, 3000))
    local tagged
    for _, ch in ipairs(mine("pbx2", a.Uniqueid)) do if ch:var("CALLTAG") then tagged = ch end end
    assert.are.equal("long-" .. tagged.uniqueid, tagged.vars.CALLTAG)
    assert.are.equal(rid, ami.channel("pbx2", a.Uniqueid):var("CLICK_REQUEST"))
    assert.is_nil(ami.channel("pbx2", a.Uniqueid).vars.UNTRACKED)
    assert.has_error(function() return tagged:var("UNTRACKED") end)
    for _, ch in ipairs(mine("pbx2", a.Uniqueid)) do ami.action("pbx2", "Hangup", {Channel = ch.channel}) end
  end)

  it("hands out snapshots: an object taken before a hangup keeps its values", function()
    local a = originate("pbx1", {Channel = "PJSIP/1002", Application = "Wait", Data = "0.3"})
    local before = ami.channel("pbx1", a.Uniqueid)
    assert.truthy(T.wait_until(function() return ami.channel("pbx1", a.Uniqueid) == nil end, 3000))
    assert.are.equal(a.Channel, before.channel)
    assert.is_nil(before.hangup_cause)
    assert.has_error(function() before.channel = "x" end)
  end)

  it("hands out the same object for a channel until it changes", function()
    local a = originate("pbx1", {Channel = "PJSIP/1005", Application = "Wait", Data = "3"})
    assert.truthy(T.wait_until(function() return ami.channel("pbx1", a.Uniqueid).application == "Wait" end, 2000))
    local first = ami.channel("pbx1", a.Uniqueid)
    assert.is_true(rawequal(first, ami.channels("pbx1", {uniqueid = a.Uniqueid})[1]))
    h.inject("pbx1", "Newexten", {Uniqueid = a.Uniqueid, Context = "elsewhere", Exten = "9", Priority = "4"})
    assert.truthy(T.wait_until(function() return ami.channel("pbx1", a.Uniqueid).context == "elsewhere" end, 2000))
    local second = ami.channel("pbx1", a.Uniqueid)
    assert.is_false(rawequal(first, second))
    assert.are.equal("default", first.context) -- the old snapshot did not change
    assert.are.equal(4, second.priority)
    ami.action("pbx1", "Hangup", {Channel = a.Channel})
  end)

  it("stays right while many channels come and go between snapshots", function()
    local ids = {}
    for i = 1, 400 do
      ids[i] = h.uid("many") .. "-" .. i
      h.inject("pbx2", "Newchannel", {Channel = "PJSIP/many-" .. ids[i], Uniqueid = ids[i], Linkedid = ids[i],
                                      ChannelState = "4", ChannelStateDesc = "Ring"})
    end
    assert.truthy(T.wait_until(function() return ami.channel("pbx2", ids[400]) ~= nil end, 3000))
    local mine_now = 0
    for _, ch in ipairs(ami.channels("pbx2")) do if ch.channel:match("^PJSIP/many%-") then mine_now = mine_now + 1 end end
    assert.are.equal(400, mine_now)
    for i = 1, 400 do h.inject("pbx2", "Hangup", {Uniqueid = ids[i], Cause = "16"}) end
    assert.truthy(T.wait_until(function() return ami.channel("pbx2", ids[400]) == nil end, 3000))
    for _ = 1, 3 do
      for _, ch in ipairs(ami.channels("pbx2")) do assert.is_nil(ch.channel:match("^PJSIP/many%-")) end
    end
    assert.are.equal(ami.channels("pbx2")[1], ami.channels("pbx2")[1])
  end)

  it("is updated before a handler runs: during its Hangup the channel is gone but still findable", function()
    local seen = {}
    ami.on("Hangup", function(ev)
      local listed = false
      for _, c in ipairs(ami.channels(ev.server)) do listed = listed or c.uniqueid == ev.Uniqueid end
      local ch = ami.channel(ev.server, ev.Uniqueid)
      seen[ev.Uniqueid] = {listed = listed, cause = ch and ch.hangup_cause, txt = ch and ch.hangup_cause_txt}
    end)
    local a = originate("pbx1", {Channel = "PJSIP/1003", Application = "Wait", Data = "0.2"})
    assert.truthy(T.wait_until(function() return seen[a.Uniqueid] end, 3000))
    assert.is_false(seen[a.Uniqueid].listed)
    assert.are.equal(16, seen[a.Uniqueid].cause)
    assert.are.equal("Normal Clearing", seen[a.Uniqueid].txt)
  end)

  it("follows a blind transfer: the transferer is gone, the transferee dials the new number", function()
    T.sim.call_rate("pbx2", 6)
    local x
    assert.truthy(T.wait_until(function()
      for _, ch in ipairs(ami.channels("pbx2")) do
        if ch.bridge and ch.uniqueid == ch.linkedid and ch.channel:match("^PJSIP/") then x = ch return true end
      end
    end, 8000))
    T.sim.call_rate("pbx2", 0)
    local peer = ami.channels("pbx2", {bridge = x.bridge})
    assert.are.equal(2, #peer)
    local transferee = peer[1].uniqueid == x.uniqueid and peer[2] or peer[1]
    local res, err = ami.action("pbx2", "BlindTransfer", {Channel = x.channel, Context = "from-internal", Exten = "2999"})
    if not res then error(err) end
    assert.truthy(T.wait_until(function() return ami.channel("pbx2", x.uniqueid) == nil end, 2000))
    local target = ami.channels("pbx2", {dialed_by = transferee.uniqueid})
    assert.are.equal(1, #target)
    assert.matches("^PJSIP/2999%-", target[1].channel)
    assert.are.equal(transferee.linkedid, target[1].linkedid)
    assert.are.equal("2999", ami.channel("pbx2", transferee.uniqueid).exten)
    ami.action("pbx2", "Hangup", {Channel = transferee.channel})
  end)

  it("follows a rename", function()
    local a = originate("pbx1", {Channel = "PJSIP/1004", Application = "Wait", Data = "3"})
    local new = "PJSIP/renamed-" .. h.uid("x")
    T.sim.rename("pbx1", a.Channel, new)
    assert.truthy(T.wait_until(function() return ami.channel("pbx1", new) ~= nil end, 2000))
    assert.are.equal(a.Uniqueid, ami.channel("pbx1", new).uniqueid)
    assert.is_nil(ami.channel("pbx1", a.Channel))
    ami.action("pbx1", "Hangup", {Channel = new})
  end)

  it("is rebuilt after a reconnect and keeps the calls that went on", function()
    local a = originate("pbx2", {Channel = "PJSIP/2001", Application = "Wait", Data = "5"})
    local started = ami.channel("pbx2", a.Uniqueid).started
    local rebuilds = h.metric("ami_callstate_rebuilds_total", {server_key = "pbx2"})
    T.sim.drop_sessions("pbx2")
    assert.truthy(h.wait_metric("ami_callstate_rebuilds_total", {server_key = "pbx2"}, rebuilds + 1, 5000) > rebuilds)
    assert.truthy(T.wait_until(function() return ami.channels("pbx2").synced end, 5000))
    local ch = ami.channel("pbx2", a.Uniqueid)
    assert.truthy(ch)
    assert.are.equal(started, ch.started) -- what the engine knew stays
    ami.action("pbx2", "Hangup", {Channel = ch.channel})
  end)

  it("answers errors as values for unknown servers, and raises for wrong arguments", function()
    local chans, err = ami.channels("nope")
    assert.is_nil(chans)
    assert.matches("^unknown_server: ", err)
    local ch, err2 = ami.channel("nope", "x")
    assert.is_nil(ch)
    assert.matches("^unknown_server: ", err2)
    assert.is_nil(ami.channel("pbx1", "no-such-channel"))
    assert.has_error(function() ami.channels() end)
    assert.has_error(function() ami.channels("pbx1", {colour = "red"}) end)
    assert.has_error(function() ami.calls({}) end)
    assert.are.equal("unknown_server: no server named \"42\"", select(2, ami.calls(42)))
  end)
end)
