#!/usr/bin/env bash
# Instructions per message (callgrind) of shmq's hot path beside the Vyukov ring's (issue 16).
#
#   bench/callgrind.sh [BUILD_DIR [N]]      defaults: build/rel, N = 100000
#
# Runs shmq-bench-instr (bench/instr_bench.cpp) under
#   valgrind --tool=callgrind --collect-atstart=no --instr-atstart=no
# once per case (vyukov, ack, ack-zero-copy, batch): only the counted loop of N messages is
# instrumented and collected (client requests in the binary). Reads the total Ir from each
# out file's "totals:" line (or "summary:"), prints instructions per message and the ratio
# to the Vyukov ring's enqueue+dequeue. Out files live in a temporary directory removed on
# exit. Exit status: 0 ok, 1 a run failed, 2 bad arguments or missing tools.
set -euo pipefail

build=${1:-build/rel}
n=${2:-100000}
bin="$build/bench/shmq-bench-instr"
if [[ ! -x "$bin" ]]; then
  echo "callgrind.sh: $bin not found (ninja -C $build shmq-bench-instr)" >&2
  exit 2
fi
if ! command -v valgrind >/dev/null; then
  echo "callgrind.sh: valgrind not on PATH" >&2
  exit 2
fi
if [[ ! "$n" =~ ^[0-9]+$ ]] || (( n < 32 )); then
  echo "callgrind.sh: N must be a whole number >= 32, got '$n'" >&2
  exit 2
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/shmq-callgrind.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

declare -A per
echo "callgrind: $bin, N = $n messages of 64 B per case, one process, one thread"
echo "$(valgrind --version); $(uname -srm); $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
printf '%-15s %14s %10s %12s  %s\n' case instructions messages "Ir/message" "what"
for c in vyukov ack ack-zero-copy batch; do
  if ! valgrind --tool=callgrind --collect-atstart=no --instr-atstart=no \
      --callgrind-out-file="$tmp/$c.out" "$bin" "$c" "$n" >"$tmp/$c.stdout" 2>"$tmp/$c.log"; then
    echo "callgrind.sh: case $c failed:" >&2
    tail -n 5 "$tmp/$c.log" >&2
    exit 1
  fi
  msgs=$(sed -n 's/^case=[a-z-]* messages=\([0-9]*\)$/\1/p' "$tmp/$c.stdout")
  ir=$(awk '$1 == "totals:" { print $2; exit }' "$tmp/$c.out")
  [[ -n "$ir" ]] || ir=$(awk '$1 == "summary:" { print $2; exit }' "$tmp/$c.out")
  if [[ -z "$msgs" || -z "$ir" ]]; then
    echo "callgrind.sh: case $c: no message count or no totals in the out file" >&2
    exit 1
  fi
  per[$c]=$(awk -v i="$ir" -v m="$msgs" 'BEGIN { printf "%.1f", i / m }')
  case $c in
    vyukov) what="enqueue + dequeue (Vyukov MPMC ring, heap)" ;;
    ack) what="try_send + try_receive + ack (copied consumer)" ;;
    ack-zero-copy) what="try_send + try_receive + ack (zero-copy consumer)" ;;
    batch) what="send_batch(32) + receive_batch(32) + ack(span), per message" ;;
  esac
  printf '%-15s %14s %10s %12s  %s\n' "$c" "$ir" "$msgs" "${per[$c]}" "$what"
done
echo "ratios to the Vyukov ring (Ir per message; issue 16's target: ack within 2x):"
for c in ack ack-zero-copy batch; do
  awk -v a="${per[$c]}" -v b="${per[vyukov]}" -v c="$c" \
    'BEGIN { printf "  %-15s %6.2fx%s\n", c, a / b, (c == "ack" ? (a / b <= 2 ? "  target <= 2x: met" : "  target <= 2x: MISSED") : "") }'
done
