--[[ hangup_causes.lua: why calls end, as metrics and logs.

What it does
  When the last channel of a call (the channels sharing a Linkedid) hangs
  up, counts the call by hangup cause and records how long it rang and how
  long it talked. Abnormal endings (network failures, bad numbers) are
  logged at warn with the call's details; the rest at debug.

  It reads the engine's live call state: during a channel's Hangup,
  ami.channel() still answers that channel with its start, answer time and
  cause, and ami.channels(server, {linkedid = ...}) says whether the call
  has channels left. So the script keeps nothing per live call; only the
  calls whose legs are hanging up right now. Needs `callstate = {}` in the
  engine config (it logs an error and does nothing without it).

Metrics (on /metrics beside the engine's)
  calls_ended_total{server, category}      category: normal busy no_answer
                                           rejected bad_number failure unknown
  call_talk_seconds{server}                histogram, answered calls only
  call_wait_seconds{server}                histogram, from first ring to answer/end
  Calls in progress: the engine's ami_callstate_calls{server_key}.

Settings (environment variables)
  HANGUP_CAUSES_SWEEP_S   how often calls whose last Hangup the engine never
                          saw (it was disconnected) are closed (default 60)

Try it
  ami-sim --nodes 1 --cps 5 &  ami-engine -c engine.lua ; then curl :9100/metrics
]]
local ami = require "ami"
local causes = require "causes"

if not ami.callstate then
  ami.log.error("hangup_causes.lua needs the live call state: add callstate = {} to the engine config")
  return
end

local SWEEP_S = tonumber(os.getenv("HANGUP_CAUSES_SWEEP_S")) or 60
local SECONDS = {0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600}

-- One counter per (server, category): registration is idempotent, so this
-- cache only saves the lookup on the hot path.
local counters = {}
local function ended_counter(server, category)
  local key = server .. "\0" .. category
  local c = counters[key]
  if not c then
    c = ami.metrics.counter("calls_ended_total", "Calls ended, by hangup cause category",
                            {server = server, category = category})
    counters[key] = c
  end
  return c
end

local function histogram(name, help, server)
  return ami.metrics.histogram(name, help, {server = server}, SECONDS)
end

local function report(call)
  local category = causes.category(call.cause)
  ended_counter(call.server, category):inc()
  histogram("call_wait_seconds", "Ring time: first channel to answer or end", call.server):observe(call.wait)
  if call.answered then
    histogram("call_talk_seconds", "Talk time of answered calls", call.server):observe(call.talk)
  end
  local fields = {server = call.server, call = call.id, caller = call.caller, exten = call.exten,
                  cause = call.cause, cause_name = causes.name(call.cause), category = category,
                  answered = call.answered ~= nil, talk_s = math.floor(call.talk * 10 + 0.5) / 10}
  if causes.is_failure(call.cause) or category == "bad_number" then
    ami.log.warn("call failed", fields)
  else
    ami.log.debug("call ended", fields)
  end
end

-- Calls from their first leg's Hangup to their last: server .. "\0" .. Linkedid -> call.
local ending = {}

local function finish(key, call)
  ending[key] = nil
  local now = ami.time()
  call.wait = math.max(0, (call.answered or now) - call.started)
  call.talk = call.answered and math.max(0, now - call.answered) or 0
  report(call)
end

-- What a hung-up leg adds to its call. The leg that started the call (its
-- Uniqueid is the Linkedid) says why the call ended, and who called what.
local function fold(call, ch)
  if ch.started < call.started then call.started = ch.started end
  if ch.answered and (not call.answered or ch.answered < call.answered) then call.answered = ch.answered end
  if ch.uniqueid == ch.linkedid or not call.cause then
    call.cause, call.caller, call.exten = tostring(ch.hangup_cause), ch.caller_num, ch.exten
  end
end

ami.on("Hangup", function(ev)
  local ch = ami.channel(ev.server, ev.Uniqueid) -- this leg's final record
  if not ch or not ch.hangup_cause then return end -- not tracked (over callstate.max_channels)
  local key = ev.server .. "\0" .. ch.linkedid
  local call = ending[key]
  if not call then
    call = {server = ev.server, id = ch.linkedid, started = ch.started}
    ending[key] = call
  end
  fold(call, ch)
  if #ami.channels(ev.server, {linkedid = ch.linkedid}) == 0 then finish(key, call) end
end)

ami.every(SWEEP_S, function()
  for key, call in pairs(ending) do
    local left = ami.channels(call.server, {linkedid = call.id})
    if not left or #left == 0 then finish(key, call) end
  end
end)
