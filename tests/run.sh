#!/usr/bin/env bash
# The test command: install what is missing, build, run every test.
#   1. a -Werror build with optimisations: unit, integration and spec tests
#   2. the same suite under AddressSanitizer + UndefinedBehaviorSanitizer
#      (LeakSanitizer included)
#   3. the coverage gate (gcc --coverage, gcovr): line and branch coverage
#      per file; fails below the floors of tests/coverage/thresholds.txt
#   4. the fuzz targets (libFuzzer, clang), AMI_FUZZ_SECONDS shared between them
# Environment: AMI_FUZZ_SECONDS (default 60, all targets together), AMI_SKIP_SANITIZE=1,
#   AMI_SKIP_COVERAGE=1, AMI_SKIP_FUZZ=1.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/deps.sh

jobs=$(nproc 2>/dev/null || echo 2)
export CTEST_OUTPUT_ON_FAILURE=1

step() { printf '\n==== %s\n' "$*"; }

step "release build (-Werror)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DAMI_WERROR=ON >/dev/null
cmake --build build -j"$jobs"
step "tests (release build)"
(cd build && ctest -j"$jobs" --timeout 600)

if [ "${AMI_SKIP_SANITIZE:-0}" != 1 ]; then
  step "sanitizer build (ASan + UBSan, -Werror)"
  cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DAMI_WERROR=ON -DAMI_SANITIZE=ON >/dev/null
  cmake --build build-asan -j"$jobs"
  step "tests (sanitizers)"
  (cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
     UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
     ctest -j"$jobs" --timeout 900 -LE bench)
fi

if [ "${AMI_SKIP_COVERAGE:-0}" != 1 ]; then
  step "coverage gate (gcc --coverage, gcovr; floors in tests/coverage/thresholds.txt)"
  AMI_JOBS="$jobs" bash tests/coverage/run.sh
fi

if [ "${AMI_SKIP_FUZZ:-0}" != 1 ]; then
  step "fuzzing every untrusted input (${AMI_FUZZ_SECONDS:-60} s in all)"
  cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DAMI_FUZZ=ON -DAMI_WERROR=ON \
        -DAMI_FUZZ_SECONDS="${AMI_FUZZ_SECONDS:-60}" >/dev/null
  cmake --build build-fuzz -j"$jobs" --target fuzz_targets
  (cd build-fuzz && ctest -R '^fuzz\.' --timeout 600)
fi

step "all tests passed"
