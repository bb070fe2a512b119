-- scripts/crm_webhook.lua: one JSON record per ended call, POSTed to a CRM,
-- with a bounded retry queue and exponential backoff.
--
-- The CRM is the spec tool's simulated web service (T.http): /webhook
-- answers 200 {"ok":true}, or the status T.http.fail_next(n, status) sets
-- for the next n requests; T.http.requests() lists what it received.
local ami = require "ami"
local T = require "ami.testing"
local h = require "spec.helpers.sim"
local env = require "spec.helpers.env"

local SCRIPT = "scripts/crm_webhook.lua"

local function load(vars)
  local settings = {CRM_WEBHOOK_URL = T.http.url("/webhook"), CRM_WEBHOOK_TIMEOUT_MS = 1000,
                    CRM_WEBHOOK_BACKOFF_MIN = 0.1, CRM_WEBHOOK_BACKOFF_MAX = 0.4,
                    CRM_WEBHOOK_QUEUE_MAX = 3, CRM_WEBHOOK_TOKEN = false}
  for k, v in pairs(vars or {}) do settings[k] = v end
  env.load_script(SCRIPT, settings)
end

--- One call of `legs` channels, answered or not, then hung up (last leg last).
local function call(opts)
  local id, server = opts.id, opts.server or "pbx1"
  local legs = {}
  for i = 1, opts.legs or 1 do
    legs[i] = {chan = "PJSIP/7" .. i .. "00-" .. id, uid = i == 1 and id or (id .. "." .. i)}
    h.inject(server, "Newchannel", {Channel = legs[i].chan, Uniqueid = legs[i].uid, Linkedid = id,
                                    CallerIDNum = "5551000", Exten = "7100", Context = "from-internal",
                                    ChannelState = "4", ChannelStateDesc = "Ring"})
  end
  if opts.answer then
    h.inject(server, "Newstate", {Channel = legs[1].chan, Uniqueid = id, Linkedid = id,
                                  ChannelState = "6", ChannelStateDesc = "Up"})
  end
  if opts.hangup == false then return legs end
  for i = #legs, 1, -1 do
    h.inject(server, "Hangup", {Channel = legs[i].chan, Uniqueid = legs[i].uid, Linkedid = id,
                                Cause = "16", ["Cause-txt"] = "Normal Clearing"})
  end
  return legs
end

--- Requests to /webhook so far, their bodies decoded.
local function posted()
  local out = {}
  for _, r in ipairs(T.http.requests()) do
    if r.path == "/webhook" then
      out[#out + 1] = {method = r.method, headers = r.headers, record = ami.json.decode(r.body)}
    end
  end
  return out
end

local function wait_posts(n, timeout_ms)
  T.wait_until(function() return #posted() >= n end, timeout_ms or 5000)
  return posted()
end

local function records(result) return h.metric("crm_webhook_records_total", {result = result}) end

describe("crm_webhook.lua", function()
  before_each(function()
    T.reset()
    T.clear_logs()
    T.http.forget()
  end)
  after_each(T.reset)

  it("posts one JSON record when the last channel of a call hangs up", function()
    load({CRM_WEBHOOK_TOKEN = "s3cret"})
    local id = h.uid("call")
    local sent = records("sent")
    local legs = call{id = id, legs = 2, answer = true, hangup = false}
    h.inject("pbx1", "Hangup", {Channel = legs[2].chan, Uniqueid = legs[2].uid, Linkedid = id, Cause = "16"})
    ami.sleep(0.2)
    assert.are.equal(0, #posted()) -- one leg is still up
    h.inject("pbx1", "Hangup", {Channel = legs[1].chan, Uniqueid = id, Linkedid = id, Cause = "16",
                                ["Cause-txt"] = "Normal Clearing"})
    local got = wait_posts(1)
    assert.are.equal(1, #got)
    local p = got[1]
    assert.are.equal("POST", p.method)
    assert.truthy(p.headers:find("Content-Type: application/json", 1, true))
    assert.truthy(p.headers:find("Authorization: Bearer s3cret", 1, true))
    local r = p.record
    assert.are.equal("call_ended", r.event)
    assert.are.equal(id, r.call)
    assert.are.equal("pbx1", r.server)
    assert.are.equal("5551000", r.caller)
    assert.are.equal("7100", r.exten)
    assert.are.equal(true, r.answered)
    assert.are.equal("16", r.cause)
    assert.are.equal("Normal Clearing", r.cause_txt)
    assert.is_true(r.ended_at >= r.started_at)
    assert.is_true(math.abs(r.ended_at - ami.time()) < 5)
    assert.are.equal(sent + 1, h.wait_metric("crm_webhook_records_total", {result = "sent"}, sent + 1))
  end)

  it("retries a record the CRM failed, waiting longer after each failure, until it takes it", function()
    load()
    T.http.fail_next(3, 503)
    local id = h.uid("retry")
    local sent = records("sent")
    call{id = id}
    local got = wait_posts(4)
    assert.are.equal(4, #got)
    for _, p in ipairs(got) do assert.are.equal(id, p.record.call) end
    assert.are.equal(sent + 1, h.wait_metric("crm_webhook_records_total", {result = "sent"}, sent + 1))
    local waits = {}
    for _, line in ipairs(h.logs_with("will retry", "call=" .. id .. " ")) do
      waits[#waits + 1] = tonumber(h.field(line, "backoff_s"))
    end
    assert.are.same({0.1, 0.2, 0.4}, waits)
    assert.is_true(h.metric("crm_webhook_failures_total", {kind = "status_5xx"}) >= 3)
    assert.are.equal(0, T.metric("crm_webhook_queued"))
  end)

  it("keeps the newest records in order when the queue is full, counting the dropped ones", function()
    load()
    T.http.fail_next(1000000, 503)
    local dropped = records("dropped")
    local ids = {}
    for i = 1, 5 do -- one at a time, so the queue's order is the calls' order
      ids[i] = h.uid("q" .. i)
      call{id = ids[i]}
      assert.truthy(T.wait_until(function()
        return (T.metric("crm_webhook_queued") or 0) + records("dropped") - dropped == i
      end, 3000), "call " .. i .. " was neither queued nor dropped")
    end
    assert.are.equal(dropped + 2, records("dropped"))
    assert.are.equal(3, T.metric("crm_webhook_queued"))
    assert.truthy(h.log_with("retry queue full", "call=" .. ids[1] .. " "))
    assert.truthy(h.log_with("retry queue full", "call=" .. ids[2] .. " "))
    T.http.fail_next(0, 200) -- the CRM is back
    assert.truthy(T.wait_until(function() return T.metric("crm_webhook_queued") == 0 end, 5000))
    local order = {}
    for _, line in ipairs(T.logs("record sent")) do order[#order + 1] = h.field(line, "call") end
    assert.are.same({ids[3], ids[4], ids[5]}, order)
  end)

  it("gives up a record the CRM refuses (400) without retrying it", function()
    load()
    T.http.fail_next(1, 400)
    local rejected = records("rejected")
    local id = h.uid("bad")
    call{id = id}
    assert.are.equal(rejected + 1, h.wait_metric("crm_webhook_records_total", {result = "rejected"}, rejected + 1))
    ami.sleep(0.5)
    assert.are.equal(1, #posted())
    assert.truthy(h.log_with("not retried", "call=" .. id .. " ", "kind=status_400"))
  end)

  it("queues records while the CRM cannot be reached", function()
    load({CRM_WEBHOOK_URL = T.http.refused_url("/webhook")})
    local connect = h.metric("crm_webhook_failures_total", {kind = "connect"})
    call{id = h.uid("down")}
    assert.is_true(h.wait_metric("crm_webhook_failures_total", {kind = "connect"}, connect + 1) >= connect + 1)
    assert.are.equal(1, T.metric("crm_webhook_queued"))
  end)

  it("only warns when no URL is configured", function()
    load({CRM_WEBHOOK_URL = false})
    call{id = h.uid("nourl")}
    ami.sleep(0.2)
    assert.are.equal(0, #posted())
    assert.truthy(h.log_with("CRM_WEBHOOK_URL is not set"))
  end)
end)
