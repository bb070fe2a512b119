-- ami-engine configuration for the demo: two simulated Asterisk nodes
-- (ami-sim) on this machine, the example scripts, metrics on :9100.
-- engine/cli/demo.sh starts everything; see docs/configuration.md for every option.
--
-- A real deployment names its PBXs by IP address (hostnames are refused
-- unless enforce_ip_endpoints = false) and keeps secrets out of this file:
-- secret_env reads an environment variable, secret_file a file.

local base = tonumber(os.getenv("AMI_DEMO_PORT")) or 15038
local second = tonumber(os.getenv("AMI_DEMO_PORT2")) or base + 1

servers = {
  { key = "pbx1", host = "127.0.0.1", port = base },
  { key = "pbx2", host = "127.0.0.1", port = second },
}

-- Applied to every server.
defaults = {
  username = "engine",
  secret_env = "AMI_DEMO_SECRET",
  heartbeat_interval_ms = 2000,     -- a silent PBX is closed 6-8 s after it stops answering
  heartbeat_max_failures = 3,
  backoff_initial_ms = 500,
  backoff_max_ms = 10000,
  action_timeout_ms = 10000,
}

-- demo.sh --tls: ami-sim serves AMI over TLS with a certificate for 127.0.0.1
-- signed by a CA the demo made; every server verifies it against that CA.
local tls_dir = os.getenv("AMI_DEMO_TLS_DIR")
if tls_dir then
  defaults.tls = { ca_file = tls_dir .. "/ca.crt" }
end

scripts = {
  dir = "../../scripts",            -- relative to this file
  handler_budget_ms = 20,
  reload_grace_ms = 30000,
  watch = true,                     -- edit a script: it reloads by itself
  -- The environment variables scripts may read with os.getenv (the example
  -- scripts' settings). Nothing else, and never a secret_env variable.
  getenv = { "AFTER_HOURS_*", "CLICK_TO_CALL_*", "HANGUP_CAUSES_*", "QUEUE_STATS_*" },
}

metrics = {
  listen = "127.0.0.1:" .. (os.getenv("AMI_DEMO_METRICS_PORT") or "9100"),
  health_quorum = "all",            -- /healthz is 503 unless every server is up
}

log = {
  level = os.getenv("AMI_DEMO_LOG_LEVEL") or "info",
  format = "logfmt",
  summary_interval_ms = 5000,       -- one line per server every 5 s
}

routing = "first_healthy"
drain_grace_ms = 5000

-- High availability (engine/cli/demo.sh --ha): two engines share the
-- cluster through a local redis-server; see docs/high-availability.md.
if os.getenv("AMI_DEMO_REDIS") then
  ha = {
    cluster = "demo",
    instance = os.getenv("AMI_DEMO_INSTANCE") or "engine-a",
    redis = { address = "unix:" .. os.getenv("AMI_DEMO_REDIS") },
    lease_ms = 3000,                -- a dead engine's servers are taken over within ~3 s
    renew_ms = 1000,
  }
end

-- The live call state (ami.channels, ami.channel, ami.calls): the example
-- scripts hangup_causes.lua and click_to_call.lua read it.
callstate = {
  max_channels = 20000,             -- per server
  variables = { "CLICK_REQUEST" },  -- channel variables kept with each channel
}
