#!/usr/bin/env bash
# Idle RSS of ami-engine: two simulated servers, no call traffic, the demo
# configuration (docs/examples/engine.lua: the example scripts, metrics HTTP).
# Builds nothing: expects ami-engine and ami-sim in the build directory.
#
#   tests/bench/idle_rss.sh [--build-dir DIR] [--wait SECONDS]
#     --build-dir DIR  where ami-engine and ami-sim are (default: build/ of this tree)
#     --wait SECONDS   idle time before reading VmRSS (default 3)
#
# Prints the engine's VmRSS (and VmHWM) in MiB against the 10 MiB target,
# then stops both programs with SIGTERM. Exit status: 0 when the engine ran,
# connected and exited 0 on SIGTERM; 1 otherwise (the RSS figure is printed,
# not judged).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
build="$root/build"
wait_s=3
while [ $# -gt 0 ]; do
  case "$1" in
    --build-dir) build="$2"; shift 2 ;;
    --wait) wait_s="$2"; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "idle_rss: unknown argument $1" >&2; exit 2 ;;
  esac
done
engine="$build/ami-engine"
simbin="$build/ami-sim"
for b in "$engine" "$simbin"; do
  [ -x "$b" ] || { echo "idle_rss: $b not found: build first" >&2; exit 1; }
done

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

# Every port is chosen by the kernel (port 0) and read back: ami-sim writes
# its ports to a file, the engine logs its metrics port.
"$simbin" --nodes 2 --names pbx1,pbx2 --base-port 0 --port-file "$tmp/ports" --cps 0 --secret s3cret \
  --log-level warn >"$tmp/sim.log" 2>&1 &
sim=$!
for _ in $(seq 100); do grep -q READY "$tmp/sim.log" && break; sleep 0.05; done
grep -q READY "$tmp/sim.log" || { cat "$tmp/sim.log" >&2; echo "idle_rss: ami-sim did not start" >&2; exit 1; }
p1=$(awk '$1 == "pbx1" {print $2}' "$tmp/ports")
p2=$(awk '$1 == "pbx2" {print $2}' "$tmp/ports")

AMI_DEMO_PORT=$p1 AMI_DEMO_PORT2=$p2 AMI_DEMO_SECRET=s3cret AMI_DEMO_METRICS_PORT=0 \
  "$engine" -c "$root/docs/examples/engine.lua" >"$tmp/engine.log" 2>&1 &
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
awk -v r="$rss_kib" -v h="$hwm_kib" -v t="$threads" -v w="$wait_s" -v v="$verdict" -v hc="$health" 'BEGIN {
  printf "idle_rss: %.2f MiB VmRSS of ami-engine, 2 servers, example scripts, idle %ss (peak VmHWM %.2f MiB, %s threads%s; target <= 10 MiB: %s)\n",
         r / 1024, w, h / 1024, t, (hc != "" ? ", /healthz " hc : ""), v }'

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
