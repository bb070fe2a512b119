--- calls: follow calls across their channels, with a bound.
--
-- A call in Asterisk is several channels sharing a Linkedid (the caller's
-- leg, the callee's, Local channel halves). Feed the tracker events and it
-- tells you when a call ends, with its duration, whether it was answered and
-- its cause (from the leg that started it).
--
--   local calls = require "calls"
--   local tracker = calls.new{max = 20000, on_end = function(call)
--     ami.log.info("call ended", {id = call.id, secs = call.duration, cause = call.cause})
--   end}
--   for _, name in ipairs(calls.EVENTS) do ami.on(name, function(ev) tracker:feed(ev) end) end
--
-- A call record: id (Linkedid), server, caller (CallerIDNum of the first
-- leg), exten, started / answered / ended (ami.now() seconds), duration
-- (from answer, 0 if never answered), wait (start to answer or end),
-- cause / cause_txt, channels (live count).
-- Bounded: past `max` live calls the oldest is dropped (tracker.evicted counts them).
local ami = require "ami"

local M = {}
M.EVENTS = {"Newchannel", "Newstate", "BridgeEnter", "Hangup"}

local Tracker = {}
Tracker.__index = Tracker

function M.new(opts)
  opts = opts or {}
  return setmetatable({
    max = opts.max or 10000,
    on_end = opts.on_end,
    now = opts.now or ami.now,
    live = {},        -- id -> call
    order = {},       -- ids in arrival order, for eviction: order[head..tail]
    head = 1,         -- (explicit bounds: # is undefined on a list with nil holes)
    tail = 0,
    n = 0,
    evicted = 0,
  }, Tracker)
end

function Tracker:count() return self.n end

function Tracker:get(id) return self.live[id] end

function Tracker:_evict_oldest()
  while self.head <= self.tail do
    local id = self.order[self.head]
    self.order[self.head] = nil
    self.head = self.head + 1
    if self.live[id] then
      self.live[id] = nil
      self.n = self.n - 1
      self.evicted = self.evicted + 1
      return
    end
  end
end

function Tracker:_compact()
  -- Ended calls leave their ids in the order list: rebuild it once it holds
  -- more than twice the live calls, so memory follows the live count.
  local listed = self.tail - self.head + 1
  if listed > 1024 and listed > 2 * self.n then
    local fresh, n = {}, 0
    for i = self.head, self.tail do
      local id = self.order[i]
      if self.live[id] then n = n + 1 fresh[n] = id end
    end
    self.order, self.head, self.tail = fresh, 1, n
  end
end

function Tracker:_start(ev, id)
  if self.n >= self.max then self:_evict_oldest() end
  local call = {id = id, server = ev.server, caller = ev.CallerIDNum, exten = ev.Exten,
                started = self.now(), channels = 0, legs = {}}
  self.live[id] = call
  self.tail = self.tail + 1
  self.order[self.tail] = id
  self.n = self.n + 1
  self:_compact()
  return call
end

function Tracker:_finish(call)
  self.live[call.id] = nil
  self.n = self.n - 1
  call.ended = self.now()
  call.wait = (call.answered or call.ended) - call.started
  call.duration = call.answered and (call.ended - call.answered) or 0
  self:_compact()
  if self.on_end then self.on_end(call) end
end

--- Feed one event; returns the call it belongs to (nil if none).
function Tracker:feed(ev)
  local id = ev.Linkedid
  if not id then return nil end
  local name = ev:name()
  local call = self.live[id]
  if name == "Newchannel" then
    call = call or self:_start(ev, id)
    if not call.legs[ev.Channel] then
      call.legs[ev.Channel] = true
      call.channels = call.channels + 1
    end
  elseif not call then
    return nil
  elseif (name == "Newstate" and ev.ChannelStateDesc == "Up") or name == "BridgeEnter" then
    call.answered = call.answered or self.now()
  elseif name == "Hangup" then
    if ev.Uniqueid == id or not call.cause then
      call.cause, call.cause_txt = ev.Cause, ev["Cause-txt"]
    end
    if call.legs[ev.Channel] then
      call.legs[ev.Channel] = nil
      call.channels = call.channels - 1
    end
    if call.channels <= 0 then self:_finish(call) end
  end
  return call
end

return M
