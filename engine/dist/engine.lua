-- /etc/ami-engine/engine.lua: the configuration of the ami-engine service.
-- Every option: /usr/share/doc/ami-engine/configuration.md. After an edit:
--   ami-engine --check-config -c /etc/ami-engine/engine.lua
--   systemctl reload ami-engine      (scripts, log level) or restart (servers)
--
-- Out of the box the engine logs in to an Asterisk on this machine
-- (127.0.0.1:5038) as the AMI user "ami-engine", with the secret the package
-- wrote into /etc/ami-engine/secrets.env (AMI_SECRET=...; systemd hands it
-- to the engine as an environment variable, never to scripts). Give Asterisk
-- the same user in /etc/asterisk/manager.conf, then `manager reload`:
--   [ami-engine]
--   secret = <the value of AMI_SECRET>
--   read = all
--   write = all
--   deny = 0.0.0.0/0.0.0.0
--   permit = 127.0.0.1/255.255.255.255
-- No Asterisk there yet? The engine runs anyway and keeps trying to connect.

servers = {
  { key = "pbx1", host = "127.0.0.1", port = 5038 },
  -- { key = "pbx2", host = "10.0.0.6", secret_env = "AMI_SECRET_PBX2" },  -- IP addresses only
}

-- Applied to every server.
defaults = {
  username = "ami-engine",
  secret_env = "AMI_SECRET",
}

scripts = {
  -- /etc/ami-engine/scripts: every *.lua in it runs, and runs again when it
  -- changes. The examples are in /usr/share/ami-engine/scripts, each
  -- documented at its top: copy the ones you want here.
  dir = "scripts",
}

metrics = {
  listen = "127.0.0.1:9100",      -- GET /metrics (Prometheus), GET /healthz
}

log = {
  level = "info",                 -- to stderr: journalctl -u ami-engine
  format = "logfmt",
}
