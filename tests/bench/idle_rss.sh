#!/usr/bin/env bash
# Idle RSS of ami-engine: two simulated servers, no call traffic, the demo
# configuration (docs/examples/engine.lua: the example scripts, metrics HTTP).
# Builds nothing: expects ami-engine and ami-sim in the build directory.
#
#   tests/bench/idle_rss.sh [--build-dir DIR] [--wait SECONDS] [--servers N]
#     --build-dir DIR  where ami-engine and ami-sim are (default: build/ of this tree)
#     --wait SECONDS   idle time before reading VmRSS (default 3)
#     --servers N      N simulated servers instead of two (the demo configuration
#                      with its server list replaced; compare N with 2 for the
#                      cost of one more server)
#
# Prints the engine's VmRSS (and VmHWM) in MiB against the 10 MiB target,
# then stops both programs with SIGTERM. Exit status: 0 when the engine ran,
# connected and exited 0 on SIGTERM; 1 otherwise (the RSS figure is printed,
# not judged).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
build="$root/build"
wait_s=3
nservers=2
while [ $# -gt 0 ]; do
  case "$1" in
    --build-dir) build="$2"; shift 2 ;;
    --wait) wait_s="$2"; shift 2 ;;
    --servers) nservers="$2"; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "idle_rss: unknown argument $1" >&2; exit 2 ;;
  esac
done
engine="$build/ami-engine"
simbin="$build/ami-sim"
for b in "$engine" "$simbin"; do
  [ -x "$b" ] || { echo "idle_rss: $b not found: build first" >&2; exit 1; }
done

# A port is taken if something listens on it (IPv4 or IPv6).
port_taken() {
  local hex
  hex=$(printf ':%04X ' "$1")
  cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | awk '$4 == "0A" {print $2" "}' | grep -q -- "$hex"
}
ports_free() {
  local i
  for i in $(seq 0 "$nservers"); do port_taken $(($1 + i)) && return 1; done
  return 0
}
base=""
for _ in $(seq 50); do
  p=$((20000 + RANDOM % 30000))
  if ports_free "$p"; then
    base=$p
    break
  fi
done
[ -n "$base" ] || { echo "idle_rss: no free ports found" >&2; exit 1; }
mport=$((base + nservers))

tmp=$(mktemp -d /tmp/ami-idle-rss.XXXXXX)
tmp=$(mktemp -d /tmp/ami-idle-rss.XXXXXX)
sim=""
eng=""
cleanup() {
  [ -n "$eng" ] && kill "$eng" 2>/dev/null || true
  [ -n "$sim" ] && kill "$sim" 2>/dev/null || true
  [ -n "$eng" ] && wait "$eng" 2>/dev/null || true
  [ -n "$sim" ] && wait "$sim" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

names=$(seq -f 'pbx%g' 1 "$nservers" | paste -sd, -)
# Every port is chosen by the kernel (port 0) and read back: ami-sim writes
# its ports to a file, the engine logs its metrics port.
"$simbin" --nodes "$nservers" --names "$names" --base-port 0 --port-file "$tmp/ports" --cps 0 --secret s3cret \
  --log-level warn >"$tmp/sim.log" 2>&1 &
sim=$!
for _ in $(seq 100); do grep -q READY "$tmp/sim.log" && break; sleep 0.05; done
grep -q READY "$tmp/sim.log" || { cat "$tmp/sim.log" >&2; echo "idle_rss: ami-sim did not start" >&2; exit 1; }
p1=$(awk '$1 == "pbx1" {print $2}' "$tmp/ports")
p2=$(awk '$1 == "pbx2" {print $2}' "$tmp/ports")
config="$root/docs/examples/engine.lua"
if [ "$nservers" != 2 ]; then
  # The demo configuration with its server list replaced by the N the
  # simulator serves (and its scripts by absolute path).
  config="$tmp/engine.lua"
  list=$(awk '{printf "  { key = \"%s\", host = \"127.0.0.1\", port = %s },\n", $1, $2}' "$tmp/ports")
  awk -v list="$list" -v scripts="$root/scripts" '
    /^servers = \{/ { skip = 1; print "servers = {"; print list; print "}"; next }
    skip && /^\}/ { skip = 0; next }
    skip { next }
    /dir = "..\/..\/scripts"/ { sub(/"..\/..\/scripts"/, "\"" scripts "\"") }
    { print }' "$root/docs/examples/engine.lua" >"$config"
fi

AMI_DEMO_PORT=$p1 AMI_DEMO_PORT2=${p2:-$p1} AMI_DEMO_SECRET=s3cret AMI_DEMO_METRICS_PORT=0 \
  "$engine" -c "$config" >"$tmp/engine.log" 2>&1 &
eng=$!
sleep "$wait_s"
mport=$(sed -n 's/.*msg="metrics endpoint listening".* port=\([0-9]*\).*/\1/p' "$tmp/engine.log" | head -1)
[ -n "$mport" ] || { cat "$tmp/engine.log" >&2; echo "idle_rss: ami-engine logged no metrics port" >&2; exit 1; }
if ! kill -0 "$eng" 2>/dev/null; then
  cat "$tmp/engine.log" >&2
  echo "idle_rss: ami-engine exited early" >&2
  exit 1
fi
rss_kib=$(awk '/^VmRSS:/ {print $2}' "/proc/$eng/status")
hwm_kib=$(awk '/^VmHWM:/ {print $2}' "/proc/$eng/status")
threads=$(awk '/^Threads:/ {print $2}' "/proc/$eng/status")
health=""
if command -v curl >/dev/null 2>&1; then
  health=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$mport/healthz" || true)
fi
verdict=met
[ "$rss_kib" -le $((10 * 1024)) ] || verdict=MISSED
awk -v r="$rss_kib" -v h="$hwm_kib" -v t="$threads" -v w="$wait_s" -v v="$verdict" -v hc="$health" -v n="$nservers" 'BEGIN {
  printf "idle_rss: %.2f MiB VmRSS of ami-engine, %d servers, example scripts, idle %ss (peak VmHWM %.2f MiB, %s threads%s; target <= 10 MiB: %s)\n",
         r / 1024, n, w, h / 1024, t, (hc != "" ? ", /healthz " hc : ""), v }'

kill -TERM "$eng"
set +e
wait "$eng"
rc=$?
set -e
eng=""
if [ "$rc" -ne 0 ]; then
  cat "$tmp/engine.log" >&2
  echo "idle_rss: ami-engine exited $rc on SIGTERM (want 0)" >&2
  exit 1
fi
kill -TERM "$sim"
wait "$sim" 2>/dev/null || true
sim=""
if [ -n "$health" ] && [ "$health" != 200 ]; then
  echo "idle_rss: /healthz said $health: the servers were not all connected" >&2
  exit 1
fi
echo "idle_rss: ami-engine exited 0 on SIGTERM"
