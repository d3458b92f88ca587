#!/usr/bin/env bash
# shmq-bridge throughput against RabbitMQ, with a baseline measured in the same run on the
# same broker: a plain librabbitmq publisher with publisher confirms and the same window
# (256 unconfirmed), persistent messages to one durable queue, no shmq involved.
#
#   out:  N messages already in a shmq queue -> shmq-bridge out -> durable queue; timed from
#         the bridge's start until the shmq queue is empty (every message confirmed, acked).
#   in:   those N messages -> shmq-bridge in -> a shmq queue; timed until all N are in it.
#   base: shmq_bridge_tool amqp-publish: N messages, confirms, window 256.
# For 64 B and 1 KiB payloads. Starts its own broker (tests/bridge_broker.sh), stops it.
# The bridge is timed by `shmq_bridge_tool wait-depth`, started with it: from the bridge's
# start (connect included) to the shmq queue empty (out) or full (in), polled in-process.
# Each size: ROUNDS (3) interleaved rounds of baseline, out, in after one untimed warm-up
# publish; the medians are printed, and every run beside them (the broker's disk makes the
# runs vary).
# Usage: [ROUNDS=3] tools/bridge-bench.sh [BUILD_DIR (build/rel)] [N (30000)]
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-$root/build/rel}" && pwd)
N=${2:-30000}
ROUNDS=${ROUNDS:-3}
bridge=$build/tools/shmq-bridge
tool=$build/tools/shmq_bridge_tool
[ -x "$bridge" ] && [ -x "$tool" ] || { echo "build shmq-bridge and shmq_bridge_tool in $build first" >&2; exit 2; }
. "$root/tests/bridge_broker.sh"
broker_available || { echo "rabbitmq-server is not installed" >&2; exit 2; }

work=$(mktemp -d)
chmod 0755 "$work"
tag=bb$$
bridge_pid=""
cleanup() {
  [ -n "$bridge_pid" ] && kill -KILL "$bridge_pid" 2>/dev/null || true
  broker_cleanup
  rm -f /dev/shm/shmq."$tag".*
  rm -rf "$work"
}
trap cleanup EXIT

rate() { awk -v n="$1" -v a="$2" -v b="$3" 'BEGIN { printf "%.0f", n / (b - a) }'; }

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -sr)"
echo "rabbitmq-server $(dpkg-query -W -f='${Version}' rabbitmq-server 2>/dev/null), librabbitmq $(pkg-config --modversion librabbitmq 2>/dev/null)"
echo "N=$N persistent messages per run, durable classic queue, window 256, prefetch 256"
broker_start "$work/broker" >/dev/null
# Warm-up, untimed: a fresh broker's first runs are slower (its message store grows its files).
"$tool" amqp-setup "$BROKER_URL" "x.$tag" "r.$tag" k
"$tool" amqp-publish "$BROKER_URL" "x.$tag" k "$N" 64 256 >/dev/null
echo "rounds: $ROUNDS, interleaved (baseline, out, in, baseline, out, in, ...); medians"
echo
printf '%-6s %12s %12s %12s %10s %10s\n' size base_msg/s out_msg/s in_msg/s out/base in/base

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

for size in 64 1024; do
  slot=$(( (size + 64 + 63) / 64 * 64 ))
  bases=() outs=() ins=()
  for round in $(seq 1 "$ROUNDS"); do
    # Baseline: a plain librabbitmq publisher with confirms, window 256.
    "$tool" amqp-setup "$BROKER_URL" "x.$tag" "r.$tag" k  # declare, purge
    bases+=("$("$tool" amqp-publish "$BROKER_URL" "x.$tag" k "$N" "$size" 256 |
      sed 's/.*: \([0-9]*\) msg\/s/\1/')")
    "$tool" amqp-setup "$BROKER_URL" "x.$tag" "r.$tag" k  # purge

    # out: shmq -> RabbitMQ, from the bridge's start (connect included) to the shmq queue
    # empty (every message confirmed by the broker and acked in shmq).
    q=$tag.s$size.r$round
    "$tool" mkq "$q.a" 65536 "$slot" 0 0
    "$tool" mkq "$q.c" 65536 "$slot" 0 0
    "$tool" fill "$q.a" "$N" "$size" >/dev/null
    "$bridge" out --queue "$q.a" --amqp-url "$BROKER_URL" --exchange "x.$tag" --routing-key k \
      >"$work/out.log" 2>&1 &
    bridge_pid=$!
    secs=$("$tool" wait-depth "$q.a" 0 300) || { echo "out: timed out" >&2; exit 1; }
    kill -TERM "$bridge_pid"; wait "$bridge_pid"; bridge_pid=""
    outs+=("$(rate "$N" 0 "$secs")")

    # in: RabbitMQ -> shmq, until all N are in the shmq queue.
    "$bridge" in --queue "$q.c" --amqp-url "$BROKER_URL" --amqp-queue "r.$tag" \
      >"$work/in.log" 2>&1 &
    bridge_pid=$!
    secs=$("$tool" wait-depth "$q.c" "$N" 300) || { echo "in: timed out" >&2; exit 1; }
    kill -TERM "$bridge_pid"; wait "$bridge_pid"; bridge_pid=""
    ins+=("$(rate "$N" 0 "$secs")")
    rm -f /dev/shm/shmq."$q".*
  done
  base=$(printf '%s\n' "${bases[@]}" | median)
  out=$(printf '%s\n' "${outs[@]}" | median)
  in=$(printf '%s\n' "${ins[@]}" | median)
  printf '%-6s %12s %12s %12s %9sx %9sx\n' "$size" "$base" "$out" "$in" "$(ratio "$out" "$base")" \
    "$(ratio "$in" "$base")"
  echo "       runs: base ${bases[*]}; out ${outs[*]}; in ${ins[*]}"
done
