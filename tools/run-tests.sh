#!/usr/bin/env bash
# The test command: installs dependencies (Debian packages), builds shmq three ways and runs
# the suite in each:
#   1. Release, warnings as errors: every test (unit, stress, multi-process, watchdog, a
#      two-minute soak with random SIGKILLs, install).
#   2. ASan + UBSan: every test (a shorter soak).
#   3. TSan: the in-process ring tests (label "ring").
# Usage: tools/run-tests.sh [--quick]   (--quick: the Release build only)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
quick=0
for arg in "$@"; do
  case "$arg" in
    --quick) quick=1 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "run-tests.sh: unknown option '$arg' (try --help)" >&2; exit 2 ;;
  esac
done

tools/install-deps.sh
jobs=$(nproc)

build() {  # build DIR [cmake args...]
  local dir=$1; shift
  cmake -S . -B "$dir" -G Ninja -DSHMQ_WERROR=ON "$@" >/dev/null
  ninja -C "$dir" -j "$jobs"
}

section() { printf '\n=== %s ===\n' "$*"; }

section "Release build, all tests"
build build/release -DCMAKE_BUILD_TYPE=Release
ctest --test-dir build/release --output-on-failure --no-tests=error -j "$jobs"

if [ "$quick" -eq 1 ]; then exit 0; fi

section "ASan + UBSan build, all tests"
build build/asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSHMQ_SANITIZE=address -DSHMQ_BUILD_BENCH=OFF
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  SHMQ_SOAK_SECONDS=45 ctest --test-dir build/asan --output-on-failure --no-tests=error -j "$jobs"

section "TSan build, in-process ring tests"
build build/tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSHMQ_SANITIZE=thread -DSHMQ_BUILD_BENCH=OFF \
  -DSHMQ_BUILD_TOOLS=OFF
TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
  ctest --test-dir build/tsan --output-on-failure --no-tests=error -L ring -j "$jobs"

section "all test builds passed"
