#!/usr/bin/env bash
# The test command: installs dependencies (Debian packages), builds shmq three ways and runs
# the suite in each, then fuzzes:
#   1. Release, warnings as errors: every test (unit, stress, multi-process, watchdog, a
#      two-minute soak with random SIGKILLs, install, the fuzz regression corpora, the
#      RabbitMQ bridge against a broker the test starts).
#   2. ASan + UBSan: every test but the bridge's (a shorter soak).
#   3. TSan: the in-process ring tests (label "ring").
#   4. libFuzzer (clang-14, ASan + UBSan): each fuzz target of tests/fuzz for 20 s.
# Usage: tools/run-tests.sh [--quick]   (--quick: the Release build only)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
quick=0
for arg in "$@"; do
  case "$arg" in
    --quick) quick=1 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
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
  SHMQ_SOAK_SECONDS=45 ctest --test-dir build/asan --output-on-failure --no-tests=error -j "$jobs" \
  -LE broker  # the RabbitMQ bridge test (~90 s, a broker of its own) runs in the Release build only

section "TSan build, in-process ring tests"
# Only the binaries whose tests carry a "ring" label are built (read from tests/CMakeLists.txt,
# so a new one is never left out): the rest would not run here.
ring_targets=$(sed -n 's/^shmq_test(\([a-z_]*\) .*LABELS ring.*/\1/p' tests/CMakeLists.txt)
[ -n "$ring_targets" ] || { echo "run-tests.sh: no ring-labelled test binaries found" >&2; exit 1; }
cmake -S . -B build/tsan -G Ninja -DSHMQ_WERROR=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DSHMQ_SANITIZE=thread -DSHMQ_BUILD_BENCH=OFF -DSHMQ_BUILD_TOOLS=OFF >/dev/null
# shellcheck disable=SC2086  # one target per word
ninja -C build/tsan -j "$jobs" $ring_targets
# tests/tsan.supp: seqlock-style reads validated by the slot word (TSan does not model fences).
TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$root/tests/tsan.supp" \
  ctest --test-dir build/tsan --output-on-failure --no-tests=error -L ring -j "$jobs"

section "libFuzzer (clang-14, ASan + UBSan): each fuzz target for 20 s"
# tools/fuzz.sh builds only the library and the target. It reads the committed corpus and
# writes what it finds to a temporary dir (the repository is never written to); it prints a
# summary, or the log's tail and fails if the fuzzer found a crash, a sanitizer report, a
# trapped invariant, a hang (-timeout) or ran out of memory (the input is kept in
# build/fuzz/artifacts/).
fuzz_tmp=$(mktemp -d)
trap 'rm -rf "$fuzz_tmp"' EXIT
for target in segment log; do
  SHMQ_FUZZ_WORKDIR="$fuzz_tmp" JOBS="$jobs" tools/fuzz.sh "$target" 20
done

section "all test builds passed"
