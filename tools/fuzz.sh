#!/usr/bin/env bash
# Builds a libFuzzer target of tests/fuzz (clang-14, ASan + UBSan) into build/fuzz and fuzzes
# it for a bounded time, starting from its committed corpus (tests/fuzz/corpus/TARGET, only
# read) and a working corpus that keeps what the fuzzer finds (build/fuzz/corpus/TARGET, or
# $SHMQ_FUZZ_WORKDIR/TARGET). libFuzzer's output goes to a log file next to the working
# corpus; a summary line is printed, or the log's tail if the fuzzer found something (a
# crash, a sanitizer report, a trapped invariant, a hang past -timeout, memory past the
# limit): then the input is in build/fuzz/artifacts/ and the exit status is 1.
#
# Usage: tools/fuzz.sh TARGET [SECONDS] [LIBFUZZER_OPTION...]
#   TARGET: segment | log      SECONDS: default 60
#   e.g. tools/fuzz.sh segment 600 -jobs=2
# Reproduce a finding: build/fuzz/tests/fuzz/fuzz_TARGET build/fuzz/artifacts/FILE
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
if [ $# -lt 1 ] || [ "$1" = -h ] || [ "$1" = --help ]; then
  sed -n '2,14p' "$0"
  exit 2
fi
target=$1
seconds=${2:-60}
shift $(($# < 2 ? $# : 2))
case "$target" in
  segment|log) ;;
  *) echo "fuzz.sh: unknown target '$target' (segment or log)" >&2; exit 2 ;;
esac

CXX=clang++-14 cmake -S . -B build/fuzz -G Ninja -DSHMQ_WERROR=ON \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSHMQ_FUZZ=ON \
  -DSHMQ_BUILD_TESTS=OFF -DSHMQ_BUILD_BENCH=OFF -DSHMQ_BUILD_TOOLS=OFF >/dev/null
ninja -C build/fuzz -j "${JOBS:-$(nproc)}" "fuzz_$target"

work="${SHMQ_FUZZ_WORKDIR:-$root/build/fuzz/corpus}/$target"
mkdir -p "$work" build/fuzz/artifacts
log="$work.log"
if ASAN_OPTIONS=abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
   "build/fuzz/tests/fuzz/fuzz_$target" -max_total_time="$seconds" -rss_limit_mb=2048 \
     -timeout=10 -print_final_stats=1 -artifact_prefix="$root/build/fuzz/artifacts/$target-" \
     "$@" "$work" "tests/fuzz/corpus/$target" >"$log" 2>&1; then
  # "#12345 DONE cov: ... ft: ... corp: ... exec/s: ... rss: ..."
  echo "fuzz_$target, ${seconds} s: $(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1)"
else
  echo "fuzz_$target FAILED; the last 60 lines of $log:"
  tail -n 60 "$log"
  echo "reproduce: build/fuzz/tests/fuzz/fuzz_$target build/fuzz/artifacts/$target-<kind>-<sha1>"
  exit 1
fi
