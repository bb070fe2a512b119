#!/usr/bin/env bash
# The demo: install what is missing, build, then run ami-engine with the
# example scripts against a simulated cluster of two Asterisk nodes.
#   bash engine/cli/demo.sh [--duration SECONDS] [--tls] [--ha]   (default 60 s; Ctrl-C stops it)
# --tls: AMI over TLS, as with Asterisk's tlsenable: the demo makes a CA and a
#   certificate for 127.0.0.1 (openssl CLI, in a temporary folder it removes),
#   ami-sim serves TLS with it and the engine verifies it against that CA.
# --ha: two engines (engine-a, engine-b on metrics port + 1) share the cluster through
#   a redis-server the demo starts on a unix socket (docs/high-availability.md)
# Environment: AMI_DEMO_PORT (first node's port, default 15038),
#   AMI_DEMO_METRICS_PORT (default 9100), AMI_DEMO_CPS (calls/s per node, default 2).
set -euo pipefail
cd "$(dirname "$0")/../.."

duration=60
tls=0
ha=0
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration="$2"; shift 2 ;;
    --tls) tls=1; shift ;;
    --ha) ha=1; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
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
redis="" engine_b="" hadir=""
cleanup() {
  for p in $engine_b $sim $redis; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -f "$simlog"
  [ -z "$pki" ] || rm -rf "$pki"
  [ -z "$hadir" ] || rm -rf "$hadir"
}
trap cleanup EXIT
for _ in $(seq 100); do grep -q READY "$simlog" && break; sleep 0.1; done
grep -q READY "$simlog" || { cat "$simlog" >&2; echo "demo: ami-sim did not start" >&2; exit 1; }

if [ "$ha" = 1 ]; then
  hadir=$(mktemp -d /tmp/ami-demo-ha.XXXXXX)
  redis-server --port 0 --unixsocket "$hadir/redis.sock" --unixsocketperm 700 --save "" --appendonly no \
    --dir "$hadir" --logfile "$hadir/redis.log" --daemonize no &
  redis=$!
  for _ in $(seq 50); do [ -S "$hadir/redis.sock" ] && break; sleep 0.1; done
  export AMI_DEMO_REDIS="$hadir/redis.sock"
  AMI_DEMO_INSTANCE=engine-b AMI_DEMO_METRICS_PORT=$(( ${AMI_DEMO_METRICS_PORT:-9100} + 1 )) \
    ./build/ami-engine -c docs/examples/engine.lua --duration "$duration" \
    2> >(sed -u 's/^/[engine-b] /' >&2) &
  engine_b=$!
  export AMI_DEMO_INSTANCE=engine-a
  cat <<MSG
== high availability ===================================================
 redis-server on $hadir/redis.sock; engine-a (metrics :${AMI_DEMO_METRICS_PORT:-9100}) in front,
 engine-b (metrics :$(( ${AMI_DEMO_METRICS_PORT:-9100} + 1 )), pid $engine_b, lines prefixed [engine-b]).
 Who owns what: curl 127.0.0.1:${AMI_DEMO_METRICS_PORT:-9100}/healthz ; curl 127.0.0.1:$(( ${AMI_DEMO_METRICS_PORT:-9100} + 1 ))/healthz
 Kill engine-b (kill -9 $engine_b) or drain it (kill $engine_b) and watch engine-a take over.
======================================================================
MSG
fi

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
