#!/usr/bin/env bash
# shmq-bridge against a real RabbitMQ (Debian's rabbitmq-server), started by this script on
# 127.0.0.1 with a private node name, ports, epmd and data dir (tests/bridge_broker.sh), and
# stopped at the end by pid.
#
#   1. usage: --help, --version, a bad URL, a missing argument, a missing queue: exit 0 / 2.
#   2. out, N messages (64 B): shmq -> shmq-bridge out -> exchange -> durable queue R, the
#      bridge SIGKILLed mid-stream and restarted, then the broker SIGKILLed (its Erlang VM:
#      only what it confirmed, i.e. fsynced, may be kept) and started mid-stream, then the
#      connection cut (rabbitmqctl close_all_connections), then the bridge stopped with
#      SIGTERM (exit 0, nothing in flight) and a third one started. Asserts: the shmq queue ends empty (every message confirmed), R holds at
#      least N; prints the duplicates (R - N).
#   3. in, the same messages: R -> shmq-bridge in -> a shmq queue with a dedup window, the
#      bridge SIGKILLed and the broker stopped (SIGTERM, a clean stop) and started mid-stream. Asserts: every id 1..N arrived
#      with its payload, none twice (the window refused the duplicates, which are counted).
#   4. properties: shmq -> out -> RabbitMQ (every field checked there) -> in -> shmq (every
#      field checked again), plus a plain AMQP message with typed headers and a text
#      message_id.
#   5. a missing exchange: the out bridge takes nothing from shmq while it is missing, and
#      forwards every message once it exists.
#   6. in, into a durability-sync queue whose shmqd is stopped (SIGSTOP): a delivery sent into
#      the ring is not acked to RabbitMQ until shmqd runs again and confirms it.
# Usage: bridge_test.sh TOOLS_DIR   (the build's tools/: shmq-bridge, shmq_bridge_tool, shmqd)
# Exit 77 (ctest SKIP_RETURN_CODE) if rabbitmq-server is not installed.
set -euo pipefail

tools=$(cd "$1" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
bridge=$tools/shmq-bridge
tool=$tools/shmq_bridge_tool
N=${SHMQ_BRIDGE_N:-100000}
# shellcheck source=bridge_broker.sh
. "$here/bridge_broker.sh"

if ! broker_available; then
  echo "SKIP: rabbitmq-server is not installed (apt-get install rabbitmq-server)"
  exit 77
fi

work=$(mktemp -d)
chmod 0755 "$work"  # the broker's user must reach its own dir below it
tag=bt$$
bridge_pids=()
failed=0

cleanup() {
  local rc=$?
  for p in "${bridge_pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  for p in "${bridge_pids[@]}"; do wait "$p" 2>/dev/null || true; done
  broker_cleanup
  rm -f /dev/shm/shmq."$tag".*
  if [ "$rc" -ne 0 ] || [ "$failed" -ne 0 ]; then
    for f in "$work"/*.log; do
      [ -f "$f" ] || continue
      echo "--- $(basename "$f") (tail) ---"
      tail -n 15 "$f"
    done
  fi
  rm -rf "$work"
}
trap cleanup EXIT

fail() {
  echo "FAIL: $*"
  failed=1
  broker_tail 2>&1 | tail -n 20
  exit 1
}

# wait_until SECONDS DESCRIPTION COMMAND...: polls COMMAND every 0.1 s until it succeeds.
wait_until() {
  local limit=$1 what=$2; shift 2
  local deadline=$((SECONDS + limit))
  until "$@"; do
    [ $SECONDS -lt "$deadline" ] || fail "timed out after ${limit}s waiting for: $what"
    sleep 0.1  # polling interval of a bounded wait, not synchronisation
  done
}

# json_field FILE KEY: a number from a bridge's stats file (0 if not there yet).
json_field() {
  local v
  v=$(grep -o "\"$2\":[0-9]*" "$1" 2>/dev/null | head -n1 | cut -d: -f2) || true
  echo "${v:-0}"
}
field_at_least() { [ "$(json_field "$1" "$2")" -ge "$3" ]; }
shmq_empty() { [ "$("$tool" depth "$1")" -eq 0 ]; }

# start_bridge NAME ARGS...: runs shmq-bridge in the background, logs and stats in $work.
start_bridge() {
  local name=$1; shift
  rm -f "$work/$name.json"
  "$bridge" "$@" --amqp-url "$BROKER_URL" --stats-file "$work/$name.json" \
    --backoff-max-ms 1000 >>"$work/$name.log" 2>&1 &
  bridge_pid=$!
  bridge_pids+=("$bridge_pid")
}
# stop_bridge PID: SIGTERM, and the bridge must exit 0 (a clean stop) within 20 s.
stop_bridge() {
  kill -TERM "$1"
  local deadline=$((SECONDS + 20))
  while kill -0 "$1" 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || fail "bridge $1 did not stop within 20 s of SIGTERM"
    sleep 0.1
  done
  wait "$1" || fail "bridge $1 exited $? after SIGTERM (want 0)"
}

echo "== 1. usage"
"$bridge" --help >/dev/null || fail "--help"
"$bridge" --version | grep -Eq '^shmq-bridge [0-9]+\.[0-9]+\.[0-9]+$' || fail "--version format"
expect_exit2() {
  local rc=0
  "$bridge" "$@" >"$work/usage.out" 2>&1 || rc=$?
  [ "$rc" -eq 2 ] || fail "shmq-bridge $* exited $rc, want 2"
  [ -s "$work/usage.out" ] || fail "shmq-bridge $*: no message"
}
"$tool" mkq "$tag.u" 64 256 0 0
expect_exit2 out --queue "$tag.u" --amqp-url 'http://127.0.0.1/' --exchange x
expect_exit2 out --queue "$tag.u" --amqp-url 'amqp://127.0.0.1:notaport/' --exchange x
expect_exit2 out --queue "$tag.u" --amqp-url 'amqp://127.0.0.1/'          # no --exchange
expect_exit2 in --queue "$tag.u" --amqp-url 'amqp://127.0.0.1/'           # no --amqp-queue
expect_exit2 in --queue "$tag.missing" --amqp-url 'amqp://127.0.0.1/' --amqp-queue r
expect_exit2 out --queue "$tag.u" --amqp-url 'amqp://127.0.0.1/' --exchange x --window 0
expect_exit2 bogus
echo "usage: exit 2 with a message for each bad call"

echo "== starting rabbitmq-server"
t0=$SECONDS
broker_start "$work/broker" || fail "broker did not start"
echo "broker $BROKER_NODE up on 127.0.0.1:$BROKER_PORT in $((SECONDS - t0)) s"

echo "== 2. out: $N messages, bridge SIGKILLed, broker SIGKILLed and restarted, connection cut, mid-stream"
"$tool" mkq "$tag.a" 131072 128 0 0
"$tool" mkq "$tag.c" 131072 128 131072 0
"$tool" fill "$tag.a" "$N" 64 >/dev/null
"$tool" amqp-setup "$BROKER_URL" "x.$tag" "r.$tag" k
out_args=(out --queue "$tag.a" --exchange "x.$tag" --routing-key k)
start_bridge out1 "${out_args[@]}"
wait_until 60 "out bridge confirmed $((N / 4))" field_at_least "$work/out1.json" confirmed $((N / 4))
kill -KILL "$bridge_pid"
wait "$bridge_pid" 2>/dev/null || true
left=$("$tool" depth "$tag.a")
echo "out bridge SIGKILLed after $(json_field "$work/out1.json" confirmed) confirmed; $left messages not yet acked in shmq"
[ "$left" -gt 0 ] || fail "the kill came after the end of the stream: not mid-stream"
start_bridge out2 "${out_args[@]}"
wait_until 60 "restarted out bridge confirmed $((N / 4))" field_at_least "$work/out2.json" confirmed $((N / 4))
t0=$SECONDS
broker_crash_restart || fail "broker did not restart after SIGKILL"
echo "broker SIGKILLed mid-stream and restarted in $((SECONDS - t0)) s"
# The connection cut with the broker up (rabbitmqctl closes it, as a proxy or a network
# failure would end it): the bridge reconnects and goes on.
wait_until 60 "out bridge reconnected after the restart" field_at_least "$work/out2.json" reconnects 1
broker_ctl close_all_connections "test: connection cut" >/dev/null || fail "rabbitmqctl close_all_connections"
wait_until 60 "out bridge reconnected after the cut" field_at_least "$work/out2.json" reconnects 2
# SIGTERM mid-stream: it must exit 0 with nothing in flight (confirmed or given back), and a
# new bridge finishes the stream.
left=$("$tool" depth "$tag.a")
stop_bridge "$bridge_pid"
[ "$(json_field "$work/out2.json" in_flight)" -eq 0 ] || fail "out bridge stopped with messages in flight"
echo "out bridge stopped with SIGTERM ($left messages not yet acked in shmq then): exit 0, nothing in flight"
start_bridge out3 "${out_args[@]}"
wait_until 120 "shmq queue $tag.a drained (every message confirmed)" shmq_empty "$tag.a"
stop_bridge "$bridge_pid"
r_count=$("$tool" amqp-depth "$BROKER_URL" "r.$tag")
[ "$r_count" -ge "$N" ] || fail "RabbitMQ queue holds $r_count messages, fewer than $N: lost"
echo "out: lost 0; RabbitMQ holds $r_count = $N + $((r_count - N)) duplicates;" \
  "reconnects $(json_field "$work/out2.json" reconnects), released $(json_field "$work/out2.json" released)," \
  "redelivered by shmq $(( $(json_field "$work/out1.json" redelivered) + $(json_field "$work/out2.json" redelivered) + $(json_field "$work/out3.json" redelivered) ))"

echo "== 3. in: $r_count deliveries, bridge SIGKILLed and broker restarted mid-stream"
in_args=(in --queue "$tag.c" --amqp-queue "r.$tag")
start_bridge in1 "${in_args[@]}"
wait_until 60 "in bridge forwarded $((N / 4))" field_at_least "$work/in1.json" forwarded $((N / 4))
kill -KILL "$bridge_pid"
wait "$bridge_pid" 2>/dev/null || true
echo "in bridge SIGKILLed after $(json_field "$work/in1.json" forwarded) forwarded"
start_bridge in2 "${in_args[@]}"
wait_until 60 "restarted in bridge forwarded $((N / 4))" field_at_least "$work/in2.json" forwarded $((N / 4))
t0=$SECONDS
broker_restart || fail "broker did not restart"
echo "broker restarted mid-stream in $((SECONDS - t0)) s"
# Every id 1..N must arrive; then 1 s of quiet.
"$tool" drain "$tag.c" "$N" 1000 >"$work/drain.out" || { cat "$work/drain.out"; fail "in: messages lost or damaged"; }
stop_bridge "$bridge_pid"
"$tool" drain "$tag.c" 0 200 >"$work/after.out" || true
cat "$work/drain.out"
grep -q ' duplicates=0 ' "$work/drain.out" || fail "in: a duplicate got past the dedup window"
grep -q '^total=0 ' "$work/after.out" || { cat "$work/after.out"; fail "in: messages arrived after the drain"; }
# The queue's own count: a SIGKILLed bridge's stats file may be up to a second old.
refused=$("$tool" refused "$tag.c")
[ "$refused" -ge $((r_count - N)) ] || fail "the dedup window refused $refused, fewer than the $((r_count - N)) duplicates in RabbitMQ"
echo "in: lost 0, duplicates in shmq 0; the dedup window refused $refused resends" \
  "(RabbitMQ redelivered $(( $(json_field "$work/in1.json" redelivered) + $(json_field "$work/in2.json" redelivered) ))," \
  "reconnects $(json_field "$work/in2.json" reconnects))"
r_left=$("$tool" amqp-depth "$BROKER_URL" "r.$tag")
[ "$r_left" -eq 0 ] || fail "RabbitMQ queue still holds $r_left messages"

echo "== 4. properties both ways"
"$tool" mkq "$tag.props1" 64 1024 0 5
"$tool" mkq "$tag.props2" 64 1024 1024 5
"$tool" amqp-setup "$BROKER_URL" "x.$tag" "rp.$tag" props
"$tool" props-send "$tag.props1"
start_bridge pout out --queue "$tag.props1" --exchange "x.$tag" --routing-key props \
  --metrics-file "$work/pout.prom"
wait_until 30 "the property message in RabbitMQ" field_at_least "$work/pout.json" confirmed 1
stop_bridge "$bridge_pid"
# The Prometheus text, as written at exit.
grep -qx "shmq_bridge_confirmed_total{direction=\"out\",queue=\"$tag.props1\"} 1" "$work/pout.prom" &&
  grep -qx '# TYPE shmq_bridge_lag gauge' "$work/pout.prom" ||
  { cat "$work/pout.prom"; fail "metrics file"; }
"$tool" props-amqp "$BROKER_URL" "rp.$tag" || fail "properties as seen from RabbitMQ"
start_bridge pin in --queue "$tag.props2" --amqp-queue "rp.$tag"
"$tool" props-check "$tag.props2" || fail "properties after the round trip"
stop_bridge "$bridge_pid"
[ "$(json_field "$work/pin.json" headers_dropped)" -eq 1 ] || fail "the over-long header was not counted as dropped"

echo "== 5. a missing exchange: nothing taken from shmq, retried until it exists"
"$tool" mkq "$tag.m" 64 256 0 0
"$tool" fill "$tag.m" 10 64 >/dev/null
start_bridge miss out --queue "$tag.m" --exchange "missing.$tag" --routing-key k
has_error() { grep -q "$2" "$1" 2>/dev/null; }
wait_until 30 "the bridge reporting the missing exchange" has_error "$work/miss.json" NOT_FOUND
"$tool" amqp-setup "$BROKER_URL" "missing.$tag" "rm.$tag" k
wait_until 30 "the 10 messages confirmed once the exchange exists" field_at_least "$work/miss.json" confirmed 10
stop_bridge "$bridge_pid"
[ "$(json_field "$work/miss.json" redelivered)" -eq 0 ] || fail "messages were taken and given back while the exchange was missing"
[ "$("$tool" amqp-depth "$BROKER_URL" "rm.$tag")" -eq 10 ] || fail "want exactly 10 messages in rm.$tag"
echo "missing exchange: retried with backoff, no message taken until it existed, then 10 of 10"

echo "== 6. in, into a sync queue: a delivery is acked only once shmqd has it on disk"
shmqd=$tools/shmqd
[ -x "$shmqd" ] || fail "no $shmqd (build the shmqd target)"
mkdir -m 0700 "$work/data"
"$tool" mkq-sync "$tag.s" "$work/data"
"$shmqd" --data-dir "$work/data" "$tag.s" >>"$work/shmqd.log" 2>&1 &
shmqd_pid=$!
bridge_pids+=("$shmqd_pid")
"$tool" amqp-setup "$BROKER_URL" "x.$tag" "rs.$tag" sync
"$tool" amqp-publish "$BROKER_URL" "x.$tag" sync 200 64 256 >/dev/null
# rabbitmqctl's view of a queue: "ready unacked".
rq_counts() { broker_ctl list_queues --no-table-headers name messages_ready messages_unacknowledged |
  awk -v q="$1" '$1 == q { print $2, $3 }'; }
kill -STOP "$shmqd_pid"  # stopped: nothing is written, nothing confirmed
start_bridge sync in --queue "$tag.s" --amqp-queue "rs.$tag"
shmq_nonempty() { [ "$("$tool" depth "$1")" -gt 0 ]; }
wait_until 30 "the first delivery in the sync queue's ring" shmq_nonempty "$tag.s"
counts=$(rq_counts "rs.$tag")
[ "$(echo "$counts" | awk '{ print $1 + $2 }')" -eq 200 ] ||
  fail "with shmqd stopped, RabbitMQ holds ready+unacked '$counts', want 200: a delivery was acked before it was on disk"
echo "shmqd stopped: the bridge sent a delivery and waits; RabbitMQ still holds 200 (ready unacked: $counts)"
kill -CONT "$shmqd_pid"
rq_empty() { [ "$(rq_counts "$1")" = "0 0" ]; }
wait_until 60 "every delivery acked once on disk" rq_empty "rs.$tag"
stop_bridge "$bridge_pid"
"$tool" drain "$tag.s" 200 200 >"$work/sync.out" || { cat "$work/sync.out"; fail "sync: lost"; }
kill -TERM "$shmqd_pid"; wait "$shmqd_pid" || fail "shmqd exited $? after SIGTERM"
echo "sync queue: $(cat "$work/sync.out")"

echo "PASS: bridge test (N=$N)"
