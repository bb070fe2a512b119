-- scripts/queue_stats.lua: QueueStatus from every server, every interval,
-- published as gauges.
--
-- The script's schedule (ami.every) keeps running after T.reset, so it is
-- loaded once for this file, with a 1 s interval and a 500 ms timeout set
-- through the environment for that load (spec/helpers/env.lua); the default
-- 10 s would make each round a long wait.
--
-- The simulator's queues: "support" (PJSIP/1101 Alice, PJSIP/1102 Bob) and
-- "sales" (PJSIP/1201 Carol, PJSIP/1202 Dave), members static and available;
-- test extension 400 puts a caller in "support", 410 in "sales".
local ami = require "ami"
local T = require "ami.testing"
local h = require "spec.helpers.sim"
local env = require "spec.helpers.env"

local SERVERS = {"pbx1", "pbx2"}
local QUEUES = {"support", "sales"}

local function g(name, server, queue, status)
  return T.metric(name, {server = server, queue = queue, status = status})
end

--- Wait for the next round to finish (its info log lines), after `since` log lines were cleared.
local function next_round(timeout_ms)
  T.clear_logs()
  return T.wait_until(function()
    return h.log_with("msg=queue ", "server=pbx1", "queue=sales") and h.log_with("msg=queue ", "server=pbx2", "queue=sales")
  end, timeout_ms or 3000)
end

describe("queue_stats.lua", function()
  lazy_setup(function()
    T.reset()
    env.load_script("scripts/queue_stats.lua", {QUEUE_STATS_INTERVAL = "1", QUEUE_STATS_TIMEOUT = "500"})
    assert.truthy(next_round(3000), "no queue round within 3 s")
  end)

  it("publishes member counts by status for each queue of each server", function()
    for _, s in ipairs(SERVERS) do
      for _, q in ipairs(QUEUES) do
        local where = s .. "/" .. q
        assert.are.equal(2, g("queue_members", s, q, "available"), where)
        assert.are.equal(0, g("queue_members", s, q, "in_use"), where)
        assert.are.equal(0, g("queue_members", s, q, "paused"), where)
        assert.are.equal(0, g("queue_members", s, q, "unavailable"), where)
      end
    end
  end)

  it("publishes callers, longest wait and the server's completed/abandoned counters", function()
    for _, s in ipairs(SERVERS) do
      for _, q in ipairs(QUEUES) do
        local where = s .. "/" .. q
        assert.are.equal(0, g("queue_callers", s, q), where)
        assert.are.equal(0, g("queue_longest_wait_seconds", s, q), where)
        assert.are.equal(0, g("queue_completed", s, q), where)
        assert.are.equal(0, g("queue_abandoned", s, q), where)
      end
    end
  end)

  it("publishes nothing for a queue the server does not have", function()
    assert.is_nil(g("queue_callers", "pbx1", "billing"))
    assert.is_nil(g("queue_members", "pbx1", "billing", "available"))
  end)

  it("logs one info line per queue and server with its figures", function()
    assert.truthy(next_round())
    for _, s in ipairs(SERVERS) do
      for _, q in ipairs(QUEUES) do
        local lines = h.logs_with("msg=queue ", "server=" .. s .. " ", "queue=" .. q .. " ")
        assert.are.equal(1, #lines, s .. "/" .. q)
        assert.matches("level=info", lines[1], 1, true)
        assert.are.equal("2", h.field(lines[1], "available"))
        assert.are.equal("0", h.field(lines[1], "in_use"))
        assert.are.equal("0", h.field(lines[1], "paused"))
        assert.are.equal("0", h.field(lines[1], "callers"))
      end
    end
  end)

  it("counts a caller waiting in a queue on its server only", function()
    local res, err = ami.action("pbx1", "Originate", {Channel = "Local/400@test", Application = "Wait", Data = "30"})
    assert.is_nil(err)
    local ok, failure = pcall(function()
      assert.truthy(T.wait_until(function() return g("queue_callers", "pbx1", "support") == 1 end, 3000),
                    "support on pbx1 never showed the caller")
      assert.are.equal(0, g("queue_callers", "pbx1", "sales"))
      assert.are.equal(0, g("queue_callers", "pbx2", "support"))
      assert.is_true(g("queue_longest_wait_seconds", "pbx1", "support") >= 0)
    end)
    ami.action("pbx1", "Hangup", {Channel = res.Channel})
    assert(ok, failure)
    assert.truthy(T.wait_until(function() return g("queue_callers", "pbx1", "support") == 0 end, 3000),
                  "the caller did not leave the queue")
  end)

  it("counts a round that times out as a failure and keeps collecting the other server", function()
    local f2 = h.metric("queue_stats_failures_total", {server = "pbx2"})
    local f1 = h.metric("queue_stats_failures_total", {server = "pbx1"})
    T.clear_logs()
    T.sim.faults("pbx2", {all_silent = true})
    local ok, failure = pcall(function()
      assert.are.equal(f2 + 1, h.wait_metric("queue_stats_failures_total", {server = "pbx2"}, f2 + 1, 3000))
      local line = h.log_with('msg="queue_stats: QueueStatus failed"', "server=pbx2")
      assert.truthy(line)
      assert.matches("level=warn", line, 1, true)
      assert.matches("^timeout", h.field(line, "err"))
      assert.truthy(h.log_with("msg=queue ", "server=pbx1", "queue=support"))
      assert.are.equal(f1, h.metric("queue_stats_failures_total", {server = "pbx1"}))
    end)
    T.sim.faults("pbx2", {})
    assert(ok, failure)
    assert.truthy(h.wait_connected("pbx2", 5000))
  end)
end)
