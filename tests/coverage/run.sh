#!/usr/bin/env bash
# The coverage gate: a gcc --coverage build (its own build folder), the unit,
# integration and spec tests (benchmarks and the soak prove other things),
# then gcovr's JSON checked by check.py against thresholds.txt: it prints
# line and branch coverage per file, each module and marked region against
# its floor, and exits 1 when one is missed.
#
#   tests/coverage/run.sh [--build-dir DIR] [--no-build]
# Environment: AMI_JOBS (parallel build and test jobs; default: nproc).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
build="$root/build-cov"
do_build=1
while [ $# -gt 0 ]; do
  case "$1" in
    --build-dir) build="$2"; shift 2 ;;
    --no-build) do_build=0; shift ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "coverage: unknown argument $1" >&2; exit 2 ;;
  esac
done
jobs=${AMI_JOBS:-$(nproc 2>/dev/null || echo 2)}
command -v gcovr >/dev/null || { echo "coverage: gcovr is missing (tests/deps.sh installs it)" >&2; exit 2; }

if [ "$do_build" = 1 ]; then
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Debug -DAMI_WERROR=ON \
        -DCMAKE_C_FLAGS=--coverage -DCMAKE_EXE_LINKER_FLAGS=--coverage >/dev/null
  # From scratch (a minute): notes (.gcno) of objects that no longer belong to
  # any target would otherwise be read as stale, uncovered versions of their files.
  cmake --build "$build" --target clean
  find "$build" -name '*.gcno' -delete
  cmake --build "$build" -j"$jobs"
fi
# counts from this run only
find "$build" -name '*.gcda' -delete
# Not the package tests: they link the instrumented archive into programs
# built without --coverage (no libgcov), and they run no engine line the
# other tests do not.
(cd "$build" && ctest -j"$jobs" --timeout 600 -LE 'bench|soak|package')
gcovr --root "$root" --filter "$root/engine/" -j "$jobs" --json "$build/coverage.json" "$build"
python3 "$root/tests/coverage/check.py" --json "$build/coverage.json" --root "$root"
