#!/usr/bin/env bash
# The demo: install what is missing, build, then run ami-engine with the
# example scripts against a simulated cluster of two Asterisk nodes.
#   bash engine/cli/demo.sh [--duration SECONDS] [--tls]   (default 60 s; Ctrl-C stops it)
# --tls: AMI over TLS, as with Asterisk's tlsenable: the demo makes a CA and a
#   certificate for 127.0.0.1 (openssl CLI, in a temporary folder it removes),
#   ami-sim serves TLS with it and the engine verifies it against that CA.
# Environment: AMI_DEMO_PORT (first node's port, default 15038),
#   AMI_DEMO_METRICS_PORT (default 9100), AMI_DEMO_CPS (calls/s per node, default 2).
set -euo pipefail
cd "$(dirname "$0")/../.."

duration=60
tls=0
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration="$2"; shift 2 ;;
    --tls) tls=1; shift ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "demo: unknown argument $1" >&2; exit 2 ;;
  esac
done

bash tests/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc 2>/dev/null || echo 2)" --target ami-engine ami-sim >/dev/null

port=${AMI_DEMO_PORT:-15038}
export AMI_DEMO_PORT=$port
export AMI_DEMO_SECRET=s3cret                 # the simulator's password; read via secret_env
export AFTER_HOURS_SCHEDULE=${AFTER_HOURS_SCHEDULE:-never}   # always "closed": redirects show
export QUEUE_STATS_INTERVAL=${QUEUE_STATS_INTERVAL:-5}

simlog=$(mktemp /tmp/ami-demo-sim.XXXXXX)
tls_args=()
pki=""
transport="plain TCP"
if [ "$tls" = 1 ]; then
  pki=$(mktemp -d /tmp/ami-demo-tls.XXXXXX)
  bash tests/support/make_certs.sh "$pki"
  tls_args=(--tls-cert "$pki/server.crt" --tls-key "$pki/server.key")
  export AMI_DEMO_TLS_DIR=$pki                # docs/examples/engine.lua turns TLS on from it
  transport="TLS, verified against the demo's CA ($pki/ca.crt)"
fi
./build/ami-sim --nodes 2 --names pbx1,pbx2 --base-port "$port" --cps "${AMI_DEMO_CPS:-2}" \
  --secret "$AMI_DEMO_SECRET" --duration $((duration + 30)) "${tls_args[@]}" >"$simlog" 2>&1 &
sim=$!
cleanup() {
  kill "$sim" 2>/dev/null || true; wait "$sim" 2>/dev/null || true; rm -f "$simlog"
  [ -z "$pki" ] || rm -rf "$pki"
}
trap cleanup EXIT
for _ in $(seq 100); do grep -q READY "$simlog" && break; sleep 0.1; done
grep -q READY "$simlog" || { cat "$simlog" >&2; echo "demo: ami-sim did not start" >&2; exit 1; }

cat <<MSG
== ami-engine demo ==================================================
 ami-sim: 2 simulated Asterisk nodes on 127.0.0.1:$port and :$((port + 1))
 AMI over $transport
 scripts: scripts/*.lua (hangup causes, click-to-call, queue stats, after hours)
 metrics: curl http://127.0.0.1:${AMI_DEMO_METRICS_PORT:-9100}/metrics
 health:  curl http://127.0.0.1:${AMI_DEMO_METRICS_PORT:-9100}/healthz
 runs for ${duration}s; Ctrl-C stops it cleanly (drain, log off, exit 0)
======================================================================
MSG
trap '' INT   # Ctrl-C goes to the engine, which drains; this script then cleans up
./build/ami-engine -c docs/examples/engine.lua --duration "$duration"
