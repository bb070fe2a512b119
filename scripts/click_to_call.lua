--[[ click_to_call.lua: place calls on request and report how they went.

What it does
  A CRM (or any AMI client, or the dialplan) asks for a call by sending
      Action: UserEvent
      UserEvent: ClickToCall
      Agent: 1001            -- the agent's extension, rung first
      Number: +15551234567   -- who to call once the agent answers
      RequestId: crm-42      -- optional, echoed back
  This script originates the call (Asterisk rings the agent, then dials the
  number in the agent's context), waits for the OriginateResponse, and
  answers with a UserEvent "ClickToCallResult" (RequestId, Result, Reason,
  Channel) so the requester learns the outcome. Numbers are checked
  (digits, +, *, # only) before they reach a dial string.

  With the engine's live call state on (callstate = {} in the config), an
  agent who already has a channel (on a call, or ringing) is not rung
  again: the answer is Result "busy" with that channel, found in the
  engine's table without asking Asterisk.

Metrics
  click_to_call_total{server, result}   result: answered failed invalid busy error

Settings (environment variables)
  CLICK_TO_CALL_TECH      channel technology for agents (default PJSIP)
  CLICK_TO_CALL_CONTEXT   dialplan context for the outbound leg (default from-internal)
  CLICK_TO_CALL_TIMEOUT   ms to wait for the agent to answer (default 30000)
]]
local ami = require "ami"

local TECH = os.getenv("CLICK_TO_CALL_TECH") or "PJSIP"
local CONTEXT = os.getenv("CLICK_TO_CALL_CONTEXT") or "from-internal"
local RING_MS = tonumber(os.getenv("CLICK_TO_CALL_TIMEOUT")) or 30000

local function count(server, result)
  ami.metrics.counter("click_to_call_total", "Click-to-call requests by result",
                      {server = server, result = result}):inc()
end

local function reply(server, request, result, reason, channel)
  -- Tell the requester; a failure to reply is logged, never fatal.
  local _, err = ami.action(server, "UserEvent", {
    UserEvent = "ClickToCallResult", RequestId = request or "", Result = result,
    Reason = reason or "", Channel = channel or "",
  })
  if err then ami.log.warn("click-to-call: could not send the result", {server = server, err = err}) end
end

-- The agent's current channel ("PJSIP/1001-0000002a"), from the engine's table.
local function agent_channel(server, agent)
  if not ami.callstate then return nil end
  local prefix = TECH .. "/" .. agent .. "-"
  for _, ch in ipairs(ami.channels(server) or {}) do
    if ch.channel:sub(1, #prefix) == prefix then return ch end
  end
end

local function valid_number(s) return type(s) == "string" and s:match("^%+?[%d*#]+$") and #s <= 32 end
local function valid_agent(s) return type(s) == "string" and s:match("^[%w_-]+$") and #s <= 32 end

ami.on({Event = "UserEvent", UserEvent = "ClickToCall"}, function(ev)
  local agent, number, request = ev.Agent, ev.Number, ev.RequestId
  if not valid_agent(agent) or not valid_number(number) then
    count(ev.server, "invalid")
    ami.log.warn("click-to-call: refused a request", {server = ev.server, request = request,
                 agent = tostring(agent), number = tostring(number)})
    reply(ev.server, request, "invalid", "Agent and Number must be an extension and digits")
    return
  end
  local busy = agent_channel(ev.server, agent)
  if busy then
    count(ev.server, "busy")
    ami.log.info("click-to-call: agent busy", {server = ev.server, request = request, agent = agent,
                 channel = busy.channel, state = busy.state_desc})
    reply(ev.server, request, "busy", "Agent is on a call", busy.channel)
    return
  end
  ami.log.info("click-to-call: calling", {server = ev.server, request = request, agent = agent, number = number})
  local res, err = ami.action(ev.server, "Originate", {
    Channel = TECH .. "/" .. agent,
    Context = CONTEXT, Exten = number, Priority = 1,
    CallerID = "Click to call <" .. number .. ">",
    Timeout = RING_MS,
    Variable = {"CLICK_TO_CALL=1", "CLICK_REQUEST=" .. (request or "")},
  }, {timeout = RING_MS + 15000})
  if res then
    count(ev.server, "answered")
    ami.log.info("click-to-call: connected", {server = ev.server, request = request, channel = res.Channel})
    reply(ev.server, request, "answered", nil, res.Channel)
  else
    -- err is "server: OriginateResponse: Failure, Reason 0", "timeout: ...", "disconnected: ..."
    local result = err:match("^server:") and "failed" or "error"
    count(ev.server, result)
    ami.log.warn("click-to-call: not connected", {server = ev.server, request = request, err = err})
    reply(ev.server, request, result, err)
  end
end)
