--[[ after_hours.lua: send inbound calls to the after-hours service when closed.

What it does
  Watches new inbound channels (Newchannel in the inbound context, default
  from-pstn). When the office is closed (a business-hours schedule with
  holidays), it tags the channel (Setvar AFTER_HOURS=1) and redirects it to
  the after-hours context (default after-hours, extension s, priority 1),
  where the dialplan plays the closed message or takes voicemail. While
  open, calls go on untouched. A failed redirect is logged and counted; the
  call then simply continues in its original context.

Metrics
  after_hours_calls_total{server, action}   action: redirected passed failed

Settings (environment variables)
  AFTER_HOURS_SCHEDULE   e.g. "mon-fri 08:00-18:00; sat 09:00-12:00" (default);
                         "always" (never redirect) or "never" (always redirect)
  AFTER_HOURS_HOLIDAYS   comma-separated dates, e.g. "2026-12-25,2027-01-01"
  AFTER_HOURS_INBOUND    inbound context to watch (default from-pstn)
  AFTER_HOURS_CONTEXT    where closed calls go (default after-hours)
The schedule is checked when the script loads: a bad one fails the load
(and a reload keeps the previous scripts running).
]]
local ami = require "ami"
local hours = require "hours"

local INBOUND = os.getenv("AFTER_HOURS_INBOUND") or "from-pstn"
local TARGET = os.getenv("AFTER_HOURS_CONTEXT") or "after-hours"
local holidays = {}
for day in (os.getenv("AFTER_HOURS_HOLIDAYS") or ""):gmatch("[^,%s]+") do holidays[#holidays + 1] = day end

local schedule = assert(hours.parse(os.getenv("AFTER_HOURS_SCHEDULE") or "mon-fri 08:00-18:00; sat 09:00-12:00",
                                    holidays))

local function count(server, action)
  ami.metrics.counter("after_hours_calls_total", "Inbound calls seen by after_hours.lua",
                      {server = server, action = action}):inc()
end

ami.on({Event = "Newchannel", Context = INBOUND}, function(ev)
  if schedule:is_open() then
    count(ev.server, "passed")
    return
  end
  -- Tag first so the after-hours dialplan (and CDRs) can tell why the call is there.
  local _, err = ami.action(ev.server, "Setvar", {Channel = ev.Channel, Variable = "AFTER_HOURS", Value = "1"})
  if not err then
    _, err = ami.action(ev.server, "Redirect", {Channel = ev.Channel, Context = TARGET, Exten = "s", Priority = 1})
  end
  if err then
    count(ev.server, "failed")
    ami.log.warn("after-hours redirect failed", {server = ev.server, channel = ev.Channel, err = err})
    return
  end
  count(ev.server, "redirected")
  ami.log.info("after hours: call redirected", {server = ev.server, channel = ev.Channel,
               caller = ev.CallerIDNum, exten = ev.Exten, to = TARGET})
end)
