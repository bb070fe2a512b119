--[[ hangup_causes.lua: why calls end, as metrics and logs.

What it does
  Follows every call (all its channels, by Linkedid) and, when the last
  channel hangs up, counts the call by hangup cause and records how long it
  rang and how long it talked. Abnormal endings (network failures, bad
  numbers) are logged at warn with the call's details; the rest at debug.

Metrics (on /metrics beside the engine's)
  calls_ended_total{server, category}      category: normal busy no_answer
                                           rejected bad_number failure unknown
  call_talk_seconds{server}                histogram, answered calls only
  call_wait_seconds{server}                histogram, from first ring to answer/end
  calls_tracked                            gauge, calls followed right now

Settings (environment variables)
  HANGUP_CAUSES_MAX_CALLS   calls followed at once (default 20000); past it the
                            oldest is forgotten and counted in the log

Try it
  ami-sim --nodes 1 --cps 5 &  ami-engine -c engine.lua ; then curl :9100/metrics
]]
local ami = require "ami"
local causes = require "causes"
local calls = require "calls"

local MAX_CALLS = tonumber(os.getenv("HANGUP_CAUSES_MAX_CALLS")) or 20000

local SECONDS = {0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600}
local tracked = ami.metrics.gauge("calls_tracked", "Calls followed by hangup_causes.lua right now")

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

local function call_ended(call)
  local category = causes.category(call.cause)
  ended_counter(call.server, category):inc()
  histogram("call_wait_seconds", "Ring time: first channel to answer or end", call.server):observe(call.wait)
  if call.answered then
    histogram("call_talk_seconds", "Talk time of answered calls", call.server):observe(call.duration)
  end
  local fields = {server = call.server, call = call.id, caller = call.caller, exten = call.exten,
                  cause = call.cause, cause_name = causes.name(call.cause), category = category,
                  answered = call.answered ~= nil, talk_s = math.floor(call.duration * 10 + 0.5) / 10}
  if causes.is_failure(call.cause) or category == "bad_number" then
    ami.log.warn("call failed", fields)
  else
    ami.log.debug("call ended", fields)
  end
end

local tracker = calls.new{max = MAX_CALLS, on_end = call_ended}

for _, name in ipairs(calls.EVENTS) do
  ami.on(name, function(ev)
    tracker:feed(ev)
    tracked:set(tracker:count())
  end)
end

-- Say so when the bound starts dropping calls (once a minute at most).
local reported = 0
ami.every(60, function()
  if tracker.evicted > reported then
    ami.log.warn("hangup_causes: too many calls at once; oldest forgotten",
                 {forgotten = tracker.evicted - reported, max_calls = MAX_CALLS})
    reported = tracker.evicted
  end
end)
