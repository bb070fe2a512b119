--[[ crm_webhook.lua: tell a CRM about every call that ended, over HTTP.

What it does
  Follows calls across their channels (lua/calls.lua, by Linkedid) and, when
  the last channel of a call hangs up, POSTs one JSON record to the CRM:
      {"event":"call_ended","server":"pbx1","call":"1700000000.42",
       "caller":"5551000","exten":"7100","answered":true,"talk_s":12.3,
       "wait_s":4.1,"cause":"16","cause_txt":"Normal Clearing",
       "started_at":1700000100.0,"ended_at":1700000116.4}
  (Content-Type: application/json; Authorization: Bearer <token> if set.)

  The CRM took it: a 2xx answer. It refused it for good: a 4xx other than
  408 and 429, or an error no retry can fix (invalid, refused, too_large,
  disabled: a wrong URL or setting); logged, not sent again. Anything else (no answer in time,
  connection refused, a 5xx, 408, 429) puts the record in a retry queue:
  from then on records queue up in order and are sent again oldest first,
  waiting 1 s after a failure, then 2 s, 4 s ... up to the maximum backoff;
  the first success resets the wait and drains the queue. The queue is
  bounded: when it is full the oldest record is dropped, counted and logged.
  Records still queued when the engine stops or reloads are lost (they live
  in this script's memory); the metrics say how many.

Metrics
  crm_webhook_records_total{result}        sent rejected dropped
  crm_webhook_failures_total{kind}         attempts that will be retried: timeout,
                                           connect, status_5xx, status_429, ...
  crm_webhook_queued                       records waiting for a retry

Settings (environment variables)
  CRM_WEBHOOK_URL             where to POST (required; without it the script only logs a warning)
  CRM_WEBHOOK_TOKEN           sent as "Authorization: Bearer <token>" (optional)
  CRM_WEBHOOK_TIMEOUT_MS      per attempt (default 5000; at most the engine's http.timeout_ms)
  CRM_WEBHOOK_QUEUE_MAX       records kept for retry (default 1000)
  CRM_WEBHOOK_BACKOFF_MIN     seconds to wait after the first failure (default 1)
  CRM_WEBHOOK_BACKOFF_MAX     longest wait between attempts, seconds (default 300)
  CRM_WEBHOOK_MAX_CALLS       calls followed at once (default 20000)

Needs the engine's http section (ami.http), e.g. http = { timeout_ms = 10000 }.
]]
local ami = require "ami"
local calls = require "calls"

local URL = os.getenv("CRM_WEBHOOK_URL")
local TOKEN = os.getenv("CRM_WEBHOOK_TOKEN")
local TIMEOUT_MS = math.floor(tonumber(os.getenv("CRM_WEBHOOK_TIMEOUT_MS")) or 5000)
local QUEUE_MAX = math.max(1, math.floor(tonumber(os.getenv("CRM_WEBHOOK_QUEUE_MAX")) or 1000))
local BACKOFF_MIN = tonumber(os.getenv("CRM_WEBHOOK_BACKOFF_MIN")) or 1
local BACKOFF_MAX = tonumber(os.getenv("CRM_WEBHOOK_BACKOFF_MAX")) or 300
local MAX_CALLS = tonumber(os.getenv("CRM_WEBHOOK_MAX_CALLS")) or 20000
local RETRY_TICK = math.min(0.25, BACKOFF_MIN)

local HEADERS = {["Content-Type"] = "application/json"}
if TOKEN then HEADERS["Authorization"] = "Bearer " .. TOKEN end

local queued_gauge = ami.metrics.gauge("crm_webhook_queued", "Call records waiting for a retry")
local function count(result)
  ami.metrics.counter("crm_webhook_records_total", "Call records by outcome", {result = result}):inc()
end
local function count_failure(kind)
  ami.metrics.counter("crm_webhook_failures_total", "Attempts that will be retried, by kind",
                      {kind = kind}):inc()
end

-- The retry queue: records in arrival order, queue[first..last], bounded.
local queue = {first = 1, last = 0}
local backoff = 0      -- seconds to wait after the latest failure; 0 while the CRM answers
local next_try = 0     -- ami.now() before which the queue is not tried

local function queued() return queue.last - queue.first + 1 end

local function enqueue(record)
  if queued() >= QUEUE_MAX then
    local oldest = queue[queue.first]
    queue[queue.first] = nil
    queue.first = queue.first + 1
    count("dropped")
    ami.log.warn("crm webhook: retry queue full; dropped the oldest record",
                 {call = oldest.call, queue_max = QUEUE_MAX})
  end
  queue.last = queue.last + 1
  queue[queue.last] = record
  queued_gauge:set(queued())
end

-- Failures that another attempt cannot fix (a wrong URL or setting, a record
-- too big): the record is given up, with the reason in the log.
local PERMANENT = {invalid = true, refused = true, disabled = true, too_large = true}

--- One attempt: "sent", "rejected" or "retry", and the kind and message of a failure.
local function post(record)
  local res, err = ami.http.post(URL, record.body, {headers = HEADERS, timeout = TIMEOUT_MS})
  if not res then
    local kind = err:match("^([%w_]+):") or "error"
    return PERMANENT[kind] and "rejected" or "retry", kind, err
  end
  local s = res.status
  if s >= 200 and s < 300 then return "sent" end
  if s >= 400 and s < 500 and s ~= 408 and s ~= 429 then return "rejected", "status_" .. s end
  return "retry", s >= 500 and "status_5xx" or ("status_" .. s), "status " .. s
end

local function failed(record, kind, err)
  count_failure(kind)
  backoff = math.min(backoff > 0 and backoff * 2 or BACKOFF_MIN, BACKOFF_MAX)
  next_try = ami.now() + backoff
  ami.log.warn("crm webhook: not delivered; will retry", {call = record.call, kind = kind,
               error = err, backoff_s = backoff, queued = queued()})
end

local function settled(record, outcome, kind, err)
  count(outcome)
  backoff = 0
  if outcome == "sent" then
    ami.log.debug("crm webhook: record sent", {call = record.call})
  elseif outcome == "rejected" then
    ami.log.warn("crm webhook: record refused; not retried", {call = record.call, kind = kind, error = err})
  end
end

--- A new record: straight to the CRM, unless records already wait (order first).
local function deliver(record)
  if queued() > 0 then
    enqueue(record)
    return
  end
  local outcome, kind, err = post(record)
  if outcome == "retry" then
    enqueue(record)
    failed(record, kind, err)
  else
    settled(record, outcome, kind, err)
  end
end

--- Send queued records, oldest first, while the CRM takes them.
local function drain()
  while queued() > 0 and ami.now() >= next_try do
    local record = queue[queue.first]
    local outcome, kind, err = post(record)
    if outcome == "retry" then
      failed(record, kind, err)
      return
    end
    if queue[queue.first] == record then -- not dropped for room while we waited
      queue[queue.first] = nil
      queue.first = queue.first + 1
      queued_gauge:set(queued())
    end
    settled(record, outcome, kind, err)
  end
end

local function round(x) return math.floor(x * 10 + 0.5) / 10 end

local function record_of(call)
  local ended_at = ami.time()
  local body, err = ami.json.encode({
    event = "call_ended", server = call.server, call = call.id, caller = call.caller,
    exten = call.exten, answered = call.answered ~= nil, talk_s = round(call.duration),
    wait_s = round(call.wait), cause = call.cause, cause_txt = call.cause_txt,
    started_at = round(ended_at - (call.ended - call.started)), ended_at = round(ended_at),
  })
  if not body then
    ami.log.error("crm webhook: cannot encode a call record", {call = call.id, error = err})
    return nil
  end
  return {call = call.id, body = body}
end

if not URL then
  ami.log.warn("crm webhook: CRM_WEBHOOK_URL is not set; no call records are sent")
  return
end

local tracker = calls.new{max = MAX_CALLS, on_end = function(call)
  local record = record_of(call)
  if record then deliver(record) end
end}
for _, name in ipairs(calls.EVENTS) do
  ami.on(name, function(ev) tracker:feed(ev) end)
end
ami.every(RETRY_TICK, drain)
