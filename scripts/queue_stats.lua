--[[ queue_stats.lua: queue figures from every server, collected periodically.

What it does
  Every QUEUE_STATS_INTERVAL seconds, on each connected server, runs
  QueueStatus (an event list: QueueParams, QueueMember, QueueEntry items)
  and publishes the figures as gauges, plus one info log line per queue.
  A server that is down or slow is skipped and retried next round: one bad
  server never delays the others (each is collected in its own coroutine).
  With high availability, each instance collects only the servers it owns.

Metrics
  queue_callers{server, queue}                 callers waiting
  queue_longest_wait_seconds{server, queue}    the longest current wait
  queue_members{server, queue, status}         status: available in_use paused unavailable
  queue_completed{server, queue}               Completed, as the server counts it
  queue_abandoned{server, queue}               Abandoned, as the server counts it
  queue_stats_failures_total{server}           rounds that failed (logged)

Settings (environment variables)
  QUEUE_STATS_INTERVAL   seconds between rounds (default 10)
  QUEUE_STATS_TIMEOUT    ms for one QueueStatus (default 5000)
]]
local ami = require "ami"

local INTERVAL = tonumber(os.getenv("QUEUE_STATS_INTERVAL")) or 10
local TIMEOUT = tonumber(os.getenv("QUEUE_STATS_TIMEOUT")) or 5000

-- Asterisk's member Status codes (AST_DEVICE_*): 1 not in use, 2 in use,
-- 3 busy, 6 ringing, 7 ringinuse, 8 on hold; 4, 5 unavailable/invalid.
local MEMBER_STATUS = {["1"] = "available", ["2"] = "in_use", ["3"] = "in_use", ["6"] = "in_use",
                       ["7"] = "in_use", ["8"] = "in_use", ["0"] = "unavailable", ["4"] = "unavailable",
                       ["5"] = "unavailable"}

local function gauge(name, help, labels)
  return ami.metrics.gauge(name, help, labels)
end

local function fresh_queue(name)
  return {name = name, callers = 0, longest = 0, completed = 0, abandoned = 0,
          members = {available = 0, in_use = 0, paused = 0, unavailable = 0}}
end

local function summarize(items)
  local queues = {}
  local function q(name) queues[name] = queues[name] or fresh_queue(name) return queues[name] end
  for _, ev in ipairs(items) do
    local name = ev:name()
    if name == "QueueParams" then
      local x = q(ev.Queue)
      x.completed, x.abandoned = tonumber(ev.Completed) or 0, tonumber(ev.Abandoned) or 0
    elseif name == "QueueMember" then
      local status = ev.Paused == "1" and "paused" or MEMBER_STATUS[ev.Status] or "unavailable"
      local m = q(ev.Queue).members
      m[status] = m[status] + 1
    elseif name == "QueueEntry" then
      local x = q(ev.Queue)
      x.callers = x.callers + 1
      x.longest = math.max(x.longest, tonumber(ev.Wait) or 0)
    end
  end
  return queues
end

local function publish(server, queues)
  for name, x in pairs(queues) do
    local l = {server = server, queue = name}
    gauge("queue_callers", "Callers waiting in the queue", l):set(x.callers)
    gauge("queue_longest_wait_seconds", "Longest current wait in the queue", l):set(x.longest)
    gauge("queue_completed", "Calls the queue completed (server's counter)", l):set(x.completed)
    gauge("queue_abandoned", "Calls abandoned in the queue (server's counter)", l):set(x.abandoned)
    for status, n in pairs(x.members) do
      gauge("queue_members", "Queue members by status",
            {server = server, queue = name, status = status}):set(n)
    end
    ami.log.info("queue", {server = server, queue = name, callers = x.callers, longest_wait = x.longest,
                 available = x.members.available, in_use = x.members.in_use, paused = x.members.paused})
  end
end

local function collect(server)
  local items, res = ami.collect(server, "QueueStatus", nil, {timeout = TIMEOUT})
  if not items then
    ami.metrics.counter("queue_stats_failures_total", "QueueStatus rounds that failed",
                        {server = server}):inc()
    ami.log.warn("queue_stats: QueueStatus failed", {server = server, err = res})
    return
  end
  if res.truncated then
    ami.log.warn("queue_stats: list truncated at the engine's cap", {server = server, dropped = res.dropped})
  end
  publish(server, summarize(items))
end

ami.every(INTERVAL, function()
  for _, s in ipairs(ami.servers()) do
    if s.connected and s.owned then ami.spawn(collect, s.key) end   -- owned: always true without ha
  end
end)
