# Shared by the package tests (sourced). Everything a test starts is killed
# and every scratch folder removed on exit, pass or fail.
set -euo pipefail

scratch=$(mktemp -d "${TMPDIR:-/tmp}/ami-package.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$scratch"
}
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }
pass() { echo "ok: $*"; }

# start_sim BINARY [ami-sim options]: starts it on a kernel-chosen port,
# waits for READY (10 s at most) and sets sim_port.
start_sim() {
  local bin=$1 out=$scratch/sim.out
  shift
  "$bin" --nodes 1 --base-port 0 --log-level warn "$@" >"$out" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do grep -q READY "$out" && break; sleep 0.1; done
  grep -q READY "$out" || { cat "$out" >&2; fail "ami-sim did not start"; }
  sim_port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$out" | head -1)
  [ -n "$sim_port" ] || fail "no port in ami-sim's output"
}
