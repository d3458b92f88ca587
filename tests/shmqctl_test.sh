#!/usr/bin/env bash
# shmqctl end to end, through real processes: create, produce from stdin, consume to stdout
# in another process, peek, list, stat --json, dlq list/replay/purge, delete, Ctrl-C,
# closed or full standard streams (for shmqd too), topics with reliable, lossy and late
# groups (issue 15), and every kind of bad input (each must give exactly one line on stderr
# and the documented exit code, never a crash). With a
# shmqd binary, also a sync queue persisted by shmqd, log verify/dump, delete without
# --purge-data and the rebuild from the data dir.
#
# Usage: shmqctl_test.sh SHMQCTL [SHMQD]
# Prints one line per check and, last, "N passed, M failed"; exits 1 if anything failed.
set -u

ctl=${1:?usage: shmqctl_test.sh SHMQCTL [SHMQD]}
shmqd=${2:-}
p="ctltest$$"                  # prefix of every queue this test creates
work=$(mktemp -d /tmp/shmqctl-test.XXXXXX)
daemon_pid=""
passed=0
failed=0

cleanup() {
  if [ -n "$daemon_pid" ]; then kill "$daemon_pid" 2>/dev/null; wait "$daemon_pid" 2>/dev/null; fi
  rm -f /dev/shm/shmq."$p"*
  chmod -R u+rwx "$work" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

ok() { passed=$((passed + 1)); echo "ok   - $1"; }
bad() {
  failed=$((failed + 1))
  echo "FAIL - $1"
  if [ -n "${2:-}" ]; then printf '       %s\n' "$2"; fi
}

# run CMD...: stdout -> $out, stderr -> $err, exit code -> $rc.
run() {
  "$@" >"$work/out" 2>"$work/err"
  rc=$?
  out=$(cat "$work/out")
  err=$(cat "$work/err")
}

crashed() { grep -qiE 'terminate called|abort|core dumped|segmentation|sanitizer|runtime error|stack trace|what\(\)' "$work/err"; }

# expect_ok DESC CMD...: exit 0 and nothing alarming on stderr.
expect_ok() {
  local desc=$1; shift
  run "$@"
  if [ "$rc" -ne 0 ]; then bad "$desc" "exit $rc; stderr: $err"; return 1; fi
  if crashed; then bad "$desc" "stderr: $err"; return 1; fi
  ok "$desc"
}

# expect_error DESC CODE PATTERN CMD...: exit CODE, exactly one line on stderr that matches
# PATTERN (extended regex, case-insensitive), no crash or trace.
expect_error() {
  local desc=$1 code=$2 pattern=$3; shift 3
  run "$@"
  local lines
  lines=$(wc -l <"$work/err")
  if [ "$rc" -ne "$code" ]; then bad "$desc" "exit $rc, want $code; stderr: $err"; return; fi
  if [ "$lines" -ne 1 ]; then bad "$desc" "stderr has $lines lines, want 1: $err"; return; fi
  if crashed; then bad "$desc" "crash on stderr: $err"; return; fi
  if ! grep -qiE "$pattern" "$work/err"; then bad "$desc" "stderr '$err' does not match /$pattern/"; return; fi
  ok "$desc"
}

# check DESC CMD...: the command (a test) succeeds.
check() {
  local desc=$1; shift
  if "$@"; then ok "$desc"; else bad "$desc"; fi
}

# json EXPR: evaluates EXPR over the JSON document in $out (as d) and prints the result.
json() { printf '%s' "$out" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]))' "$1"; }

# stat_field QUEUE EXPR: one field of `stat --json`.
stat_field() { "$ctl" stat "$1" --json 2>/dev/null | python3 -c 'import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]))' "$2"; }

# consumers_are QUEUE N: the queue has N active consumer rows.
consumers_are() { test "$(stat_field "$1" "d['consumers']")" = "$2"; }
# file_is FILE TEXT: FILE holds TEXT (and a newline).
file_is() { test "$(cat "$1")" = "$2"; }

# expect_stream_error DESC: $rc and $work/err of the command just run: exit 1, one line that
# names standard output, no crash.
expect_stream_error() {
  err=$(cat "$work/err")
  if [ "$rc" -ne 1 ]; then bad "$1" "exit $rc, want 1; stderr: $err"
  elif [ "$(wc -l <"$work/err")" -ne 1 ] || crashed; then bad "$1" "stderr: $err"
  elif ! grep -q "writing to standard output" "$work/err"; then bad "$1" "stderr: $err"
  else ok "$1"; fi
}

# wait_until CMD...: polls CMD for up to 10 s.
wait_until() {
  local i
  for i in $(seq 1 200); do
    if "$@"; then return 0; fi
    sleep 0.05
  done
  return 1
}

q1="$p-plain"
q2="$p-durable"
q3="$p-dlq"
q4="$p-owned"
q5="$p-sync"
data="$work/data/not/yet"     # does not exist yet: create makes it, 0700

# --- help and usage ----------------------------------------------------------------------
for c in "" create delete list stat watch produce consume peek dlq "dlq list" "dlq replay" \
         "dlq purge" log "log verify" "log dump" topic "topic create" "topic delete" group \
         "group create" "group list" "group delete"; do
  # shellcheck disable=SC2086
  run "$ctl" $c --help
  if [ "$rc" -eq 0 ] && grep -q "Usage" "$work/out"; then ok "shmqctl $c --help"; else bad "shmqctl $c --help" "exit $rc: $err"; fi
done

# --- create ------------------------------------------------------------------------------
expect_ok "create a plain queue" "$ctl" create "$q1" --slots 64 --slot-size 128
check "its segment exists with mode 0600" test "$(stat -c %a /dev/shm/shmq."$q1" 2>/dev/null)" = 600
expect_ok "create a durable queue with a data dir that does not exist yet" \
  "$ctl" create "$q2" --durability async --data-dir "$data" --mode 0660
check "the data dir was created 0700" test "$(stat -c %a "$data" 2>/dev/null)" = 700
check "the queue's dir holds queue.meta" test -f "$data/$q2/queue.meta"
check "the durable segment has mode 0660" test "$(stat -c %a /dev/shm/shmq."$q2" 2>/dev/null)" = 660

# --- create with every option, set, one name rule ------------------------------------------
q7="${p}-opts"
expect_ok "create with every QueueOptions flag" "$ctl" create "$q7" --slots 32 --slot-size 256 \
  --max-message-size 100 --max-members 9 --max-deliveries 4 --lease-ms 1234 --ttl-ms 99000 \
  --backoff-initial-ms 7 --backoff-max-ms 700 --no-dead-letter --heartbeat-liveness \
  --heartbeat-timeout-ms 4321 --claim-timeout-ms 2345 --mode 0600 --checksum
expect_ok "stat --json of it" "$ctl" stat "$q7" --json
check "... every option took effect" test "$(json "[d['geometry']['max_members'], d['geometry']['max_message_size'], d['policy']['max_deliveries'], d['policy']['lease_ms'], d['policy']['ttl_ms'], d['policy']['backoff_initial_ms'], d['policy']['backoff_max_ms'], d['policy']['dead_letter'], d['policy']['heartbeat_liveness'], d['policy']['heartbeat_timeout_ms'], d['policy']['claim_timeout_ms'], d['policy']['checksum'], d['counters']['corrupt']]")" = "[9, 100, 4, 1234, 99000, 7, 700, False, True, 4321, 2345, True, 0]"
expect_ok "stat (text) of it" "$ctl" stat "$q7"
check "... says the checksum is on" grep -q "checksum on" "$work/out"
check "... and no dead-letter queue was made" test ! -e /dev/shm/shmq."$q7".dlq
expect_ok "set --lease-ms --max-deliveries" "$ctl" set "$q7" --lease-ms 5000 --max-deliveries 0
expect_ok "stat --json after set" "$ctl" stat "$q7" --json
check "... the new policy is in force, the rest kept" \
  test "$(json "[d['policy']['lease_ms'], d['policy']['max_deliveries'], d['policy']['ttl_ms']]")" = "[5000, 0, 99000]"
expect_error "set with nothing to set" 2 "nothing to set" "$ctl" set "$q7"
expect_error "set of a missing queue" 1 "not found" "$ctl" set "${p}-nosuch" --lease-ms 1
expect_error "set with a bad value" 2 "lease" "$ctl" set "$q7" --lease-ms -5
expect_ok "delete it" "$ctl" delete "$q7"
long=$(printf '%s' "${p}-" && head -c $((198 - ${#p})) /dev/zero | tr '\0' 'n')
expect_error "a 197+-character name with dead letters is a usage error" 2 "at most 196" \
  "$ctl" create "$long"
check "... and nothing was created" test ! -e /dev/shm/shmq."$long"
run "$ctl" --help
check "shmqctl --help states the name limits" grep -q "1-196 for a queue with dead letters" "$work/out"
check "shmqctl --help states the exit codes" grep -q "Exit codes: 0 ok, 1 runtime failure" "$work/out"
if [ -n "$shmqd" ]; then
  run "$shmqd" --help
  check "shmqd --help states the same name limits" grep -q "1-196 for a queue with dead letters" "$work/out"
  check "shmqd --help states the same exit codes" grep -q "Exit codes: 0 ok" "$work/out"
fi

# --- produce, peek, list, stat, consume ----------------------------------------------------
printf 'alpha\nbeta\ngamma\n' >"$work/input"
run "$ctl" produce "$q1" <"$work/input"
if [ "$rc" -eq 0 ] && [ -z "$err" ]; then ok "produce 3 lines from stdin"; else bad "produce 3 lines from stdin" "exit $rc: $err"; fi

expect_ok "peek" "$ctl" peek "$q1"
check "peek shows the three messages in order" \
  test "$(printf '%s\n' "$out" | awk 'NR>1 {print $NF}' | tr '\n' ' ')" = "alpha beta gamma "

expect_ok "list" "$ctl" list
check "list shows the queue with depth 3" \
  test "$(printf '%s\n' "$out" | awk -v q="$q1" '$1 == q {print $3}')" = 3
expect_ok "list --json" "$ctl" list --json
check "list --json has the queue" \
  test "$(json "[x['depth'] for x in d['queues'] if x['queue'] == '$q1']")" = "[3]"

expect_ok "stat --json" "$ctl" stat "$q1" --json
check "stat --json is schema 1 for the queue" test "$(json "(d['schema'], d['queue'])")" = "(1, '$q1')"
check "stat --json: depth 3, in flight 0 (peek consumed nothing)" \
  test "$(json "(d['depth'], d['ready'], d['in_flight'])")" = "(3, 3, 0)"
check "stat --json: geometry" \
  test "$(json "(d['geometry']['slot_count'], d['geometry']['slot_size'], d['geometry']['max_message_size'])")" = "(64, 128, 64)"
check "stat --json: durability none, no data dir, no persisted lag" \
  test "$(json "(d['durability'], d['data_dir'], d['persisted_lag'])")" = "('none', None, None)"
check "stat --json: counters" \
  test "$(json "[d['counters'][k] for k in ('sent', 'acked', 'redelivered', 'dead_lettered')]")" = "[3, 0, 0, 0]"
check "stat --json: every documented field is there" python3 -c '
import json, sys
d = json.loads(sys.argv[1])
top = ["schema", "kind", "queue", "time_unix_ms", "state", "geometry", "policy", "durability", "data_dir",
       "flush_interval_ms", "depth", "ready", "delayed", "in_flight", "claimed", "free_slots",
       "tail", "dispatch", "persisted", "persisted_lag", "synced", "counters", "rates", "watchdog_active",
       "producers", "consumers", "members"]
counters = ["sent", "received", "acked", "requeued", "redelivered", "dead_lettered", "expired",
            "dead_letter_failed", "leases_expired", "holes_repaired", "members_reclaimed",
            "corrupt"]
missing = [k for k in top if k not in d] + [k for k in counters if k not in d["counters"]]
sys.exit(1 if missing or not isinstance(d["members"], list) else 0)' "$out"
expect_ok "stat (text)" "$ctl" stat "$q1"
expect_ok "stat --rate --json" "$ctl" stat "$q1" --rate --rate-ms 100 --json
check "stat --rate gives rates" test "$(json "sorted(d['rates'].keys())[0]")" = acked_per_s

# Consume in another process, started before anything more is sent.
"$ctl" consume "$q1" --count 4 --timeout-ms 10000 >"$work/consumed" 2>"$work/consume.err" &
cpid=$!
check "the consumer registers as a member" wait_until consumers_are "$q1" 1
run "$ctl" stat "$q1" --json
# The consumer process also runs the queue's embedded watchdog (healing by default).
check "stat --json lists the consumer and its watchdog with their pid" \
  test "$(json "sorted((m['role'], m['pid'], m['alive']) for m in d['members'])")" = "[('consumer', $cpid, True), ('watchdog', $cpid, True)]"
printf 'delta\n' | "$ctl" produce "$q1"
wait "$cpid"
crc=$?
printf 'alpha\nbeta\ngamma\ndelta\n' >"$work/expected"
check "consume in another process exits 0" test "$crc" -eq 0 -a ! -s "$work/consume.err"
check "consume wrote each payload and a newline, in order" cmp -s "$work/consumed" "$work/expected"
run "$ctl" stat "$q1" --json
check "consumed messages are acked" test "$(json "(d['depth'], d['in_flight'], d['counters']['acked'], d['members'])")" = "(0, 0, 4, [])"
expect_ok "consume on an empty queue stops after its timeout" "$ctl" consume "$q1" --timeout-ms 100
check "... and writes nothing" test -z "$out"

# Ctrl-C: a consumer waiting forever stops cleanly (exit 0) and leaves nothing held.
"$ctl" consume "$q1" --follow >"$work/follow" 2>"$work/follow.err" &
cpid=$!
check "consume --follow waits" wait_until consumers_are "$q1" 1
printf 'epsilon\n' | "$ctl" produce "$q1"
check "consume --follow gets a message sent later" wait_until file_is "$work/follow" epsilon
kill -INT "$cpid"
wait "$cpid"
crc=$?
check "Ctrl-C stops consume with exit 0 and no error" test "$crc" -eq 0 -a ! -s "$work/follow.err"
check "nothing is left held after Ctrl-C" test "$(stat_field "$q1" "(d['in_flight'], d['members'])")" = "(0, [])"

# Load generation, and backpressure: the ring has 64 slots, 500 messages must all arrive.
"$ctl" consume "$q1" --count 500 --timeout-ms 10000 >"$work/load" 2>/dev/null &
cpid=$!
expect_ok "produce --count 500 --size 40 (more than the ring holds)" "$ctl" produce "$q1" --count 500 --size 40
wait "$cpid"
check "all 500 generated messages arrive, 40 bytes each" \
  test "$(wc -l <"$work/load")" = 500 -a "$(awk 'length($0) != 40' "$work/load" | wc -l)" = 0

# Wait strategies (issue 16): the same load with a busy-spinning consumer and a producer that
# spins then sleeps while the 64-slot ring is full; bad strategies are usage errors.
"$ctl" consume "$q1" --count 500 --timeout-ms 10000 --wait busy-spin >"$work/load" 2>/dev/null &
cpid=$!
expect_ok "produce --wait spin-sleep --sleep-us 20 --count 500 (more than the ring holds)" \
  "$ctl" produce "$q1" --count 500 --size 40 --wait spin-sleep --spin-us 5 --sleep-us 20
wait "$cpid"
check "... all 500 arrive at a consume --wait busy-spin" test "$(wc -l <"$work/load")" = 500
expect_ok "consume --wait spin-yield times out on an empty queue" \
  "$ctl" consume "$q1" --timeout-ms 50 --wait spin-yield
expect_error "consume --wait nap is a usage error" 2 "wait" "$ctl" consume "$q1" --wait nap
expect_error "consume --spin-us without --wait is a usage error" 2 "need --wait" \
  "$ctl" consume "$q1" --spin-us 5 --timeout-ms 10
expect_error "produce --sleep-us with busy-spin is a usage error" 2 "spin-sleep" \
  "$ctl" produce "$q1" --count 1 --wait busy-spin --sleep-us 5

# A line longer than the queue's max message size (64 bytes here).
{ echo ok-line; head -c 100 /dev/zero | tr '\0' x; echo; echo never; } >"$work/long"
expect_error "produce: a line over the max message size fails naming it" 1 "line 2 " \
  "$ctl" produce "$q1" <"$work/long"
expect_ok "... lines before it were sent" "$ctl" consume "$q1" --timeout-ms 1000
check "... and only those" test "$out" = ok-line

# --- delayed delivery (issue 13) -------------------------------------------------------------
# 2 s rather than a few hundred ms: the "nothing yet" checks must not race a slow machine.
printf 'later\n' >"$work/delayed"
expect_ok "produce --delay-ms 2000" "$ctl" produce "$q1" --delay-ms 2000 <"$work/delayed"
expect_ok "consume right after it gets nothing: the message waits" "$ctl" consume "$q1" --timeout-ms 50
check "... and writes nothing" test -z "$out"
expect_ok "stat --json with a delayed message" "$ctl" stat "$q1" --json
check "... counts it as delayed, due within 2 s" \
  test "$(json "(d['delayed'], d['ready'], 0 < d['next_due_in_ms'] <= 2000)")" = "(1, 0, True)"
expect_ok "stat (text) with a delayed message" "$ctl" stat "$q1"
check "... shows the next due time" grep -qE "delayed 1\).*next due in [0-9]+ ms" "$work/out"
expect_ok "peek shows the delayed message" "$ctl" peek "$q1"
check "... with its due time in ms, the payload still last" \
  test "$(printf '%s\n' "$out" | awk 'NR>1 {print $3, ($7 > 0 && $7 <= 2000), $NF}')" = "delayed 1 later"
expect_ok "peek --json" "$ctl" peek "$q1" --json
check "... carries due_in_ms" \
  test "$(json "[(m['state'], 0 < m['due_in_ms'] <= 2000, m['payload']) for m in d['messages']]")" = "[('delayed', True, 'later')]"
expect_ok "a later consume gets it once due" "$ctl" consume "$q1" --count 1 --timeout-ms 10000
check "... the delayed message" test "$out" = later
expect_ok "stat --json without delayed messages" "$ctl" stat "$q1" --json
check "... next_due_in_ms is null" test "$(json "(d['delayed'], d['next_due_in_ms'])")" = "(0, None)"
expect_error "produce --delay-ms abc is a usage error" 2 "delay-ms" "$ctl" produce "$q1" --delay-ms abc
expect_error "produce --delay-ms -5 is a usage error" 2 "delay-ms" "$ctl" produce "$q1" --delay-ms -5

# --- priorities (issue 13) -------------------------------------------------------------------
qp="$p-prio"
expect_error "create --max-priority 32 is a usage error" 2 "max-priority" "$ctl" create "$qp" --max-priority 32
expect_ok "create --max-priority 3" "$ctl" create "$qp" --max-priority 3 --slots 16
check "... its levels exist" test -e /dev/shm/shmq."$qp".p1 -a -e /dev/shm/shmq."$qp".p3
printf 'low1\nlow2\n' >"$work/low"
printf 'urgent\n' >"$work/urgent"
printf 'mid\n' >"$work/mid"
expect_ok "produce at priority 0" "$ctl" produce "$qp" <"$work/low"
expect_ok "produce --priority 1" "$ctl" produce "$qp" --priority 1 <"$work/mid"
expect_ok "produce --priority 3" "$ctl" produce "$qp" --priority 3 <"$work/urgent"
expect_error "produce --priority 4 is a usage error" 2 "max priority 3" "$ctl" produce "$qp" --priority 4 <"$work/mid"
expect_error "produce --priority to a queue without priorities" 2 "no priorities" "$ctl" produce "$q1" --priority 1 <"$work/mid"
expect_ok "stat --json with priorities" "$ctl" stat "$qp" --json
check "... depth by priority, highest first" \
  test "$(json "([(l['priority'], l['depth']) for l in d['priorities']], d['depth'], d['policy']['max_priority'])")" = "([(3, 1), (2, 0), (1, 1), (0, 2)], 4, 3)"
expect_ok "stat (text) with priorities" "$ctl" stat "$qp"
check "... shows depth by priority" grep -qE "priorities +0\.\.3 .*3: 1 .*1: 1 .*0: 2" "$work/out"
expect_ok "peek --json with priorities" "$ctl" peek "$qp" --json
check "... highest first, with each message's priority" \
  test "$(json "[(m['priority'], m['payload']) for m in d['messages']]")" = "[(3, 'urgent'), (1, 'mid'), (0, 'low1'), (0, 'low2')]"
expect_ok "consume takes the highest priority first" "$ctl" consume "$qp" --count 4 --timeout-ms 2000
check "... in priority order, FIFO within a level" test "$(printf '%s' "$out" | tr '\n' ' ')" = "urgent mid low1 low2"
expect_ok "a rejected priority message" "$ctl" produce "$qp" --priority 2 <"$work/mid"
"$ctl" consume "$qp" --count 1 --reject --timeout-ms 2000 >/dev/null
expect_ok "dlq replay puts it back at its priority" "$ctl" dlq replay "$qp"
check "... at priority 2" test "$(stat_field "$qp" "[l['depth'] for l in d['priorities'] if l['priority'] == 2]")" = "[1]"
expect_ok "delete the queue with priorities" "$ctl" delete "$qp"
check "... its levels are gone too" test ! -e /dev/shm/shmq."$qp".p1 -a ! -e /dev/shm/shmq."$qp".p3

# --- deduplication (issue 14) -----------------------------------------------------------------
qd="$p-dedup"
expect_error "create --dedup-window 0 is a usage error" 2 "dedup-window" "$ctl" create "$qd" --dedup-window 0
expect_error "create --dedup-window 5/x is a usage error" 2 "dedup-window" "$ctl" create "$qd" --dedup-window 5/x
expect_error "create --dedup-window above the maximum" 2 "dedup-window" "$ctl" create "$qd" --dedup-window 1048577
expect_ok "create --dedup-window 100/3600" "$ctl" create "$qd" --dedup-window 100/3600 --slots 16
check "... says so" grep -q "dedup window 100 ids / 3600 s" "$work/out"
printf 'one\ntwo\n' >"$work/two"
expect_ok "produce --id 10 (ids 10, 11)" "$ctl" produce "$qd" --id 10 <"$work/two"
printf 'one again\ntwo again\nthree\n' >"$work/three"
expect_ok "produce --id 10 again: the first two are duplicates, exit 0" "$ctl" produce "$qd" --id 10 <"$work/three"
check "... counted on stderr" grep -q "2 duplicate(s) not enqueued" "$work/err"
printf '7\tseven\n7\tseven again\n11\televen again\n' >"$work/tabbed"
expect_ok "produce --tab-ids" "$ctl" produce "$qd" --tab-ids <"$work/tabbed"
check "... two duplicates" grep -q "2 duplicate(s) not enqueued" "$work/err"
printf 'no tab here\n' >"$work/untabbed"
expect_error "produce --tab-ids without a tab is a usage error" 2 "ID<TAB>payload" "$ctl" produce "$qd" --tab-ids <"$work/untabbed"
expect_error "produce --id 0 is a usage error" 2 "id must be" "$ctl" produce "$qd" --id 0 <"$work/two"
expect_error "produce --id with --tab-ids is a usage error" 2 "exclude" "$ctl" produce "$qd" --id 5 --tab-ids <"$work/two"
expect_ok "stat --json with a dedup window" "$ctl" stat "$qd" --json
check "... window and counters" \
  test "$(json "(d['policy']['dedup_window'], d['policy']['dedup_window_s'], d['counters']['duplicates'], d['depth'])")" = "(100, 3600, 4, 4)"
expect_ok "stat (text) with a dedup window" "$ctl" stat "$qd"
check "... shows it" grep -qE "dedup +window 100 ids / 3600 s; duplicates refused 4" "$work/out"
expect_ok "consume: each id once" "$ctl" consume "$qd" --count 10 --timeout-ms 500
check "... in order" test "$(printf '%s' "$out" | tr '\n' ' ')" = "one two three seven"
"$ctl" produce "$qd" --id 20 <<<"poison" >/dev/null 2>&1
"$ctl" consume "$qd" --count 1 --reject --timeout-ms 2000 >/dev/null
expect_ok "dlq replay of a message whose id is in the window" "$ctl" dlq replay "$qd"
expect_ok "... it is back" "$ctl" consume "$qd" --count 1 --timeout-ms 2000
check "... the payload" test "$out" = poison
expect_ok "delete the dedup queue" "$ctl" delete "$qd"

# --- message properties (issue 14) ---------------------------------------------------------
qm="$p-props"
expect_ok "create a queue for properties" "$ctl" create "$qm" --slots 16
printf 'hello props\n' >"$work/props"
expect_ok "produce --header --content-type --correlation-id --reply-to" \
  "$ctl" produce "$qm" --header tenant=acme --header 'note=two words' --header empty= \
  --content-type text/plain --correlation-id c-42 --reply-to "$qm.replies" <"$work/props"
printf 'plain\n' | "$ctl" produce "$qm"
expect_ok "peek --json shows the properties" "$ctl" peek "$qm" --json
check "... content type, correlation id, reply-to, headers in order; null without" \
  test "$(json "[(m['payload'], m['properties'] and (m['properties']['content_type'], m['properties']['correlation_id'], m['properties']['reply_to'], m['properties']['headers'], m['properties']['timestamp_ns'] > 0)) for m in d['messages']]")" = "[('hello props', ('text/plain', 'c-42', '$qm.replies', [['tenant', 'acme'], ['note', 'two words'], ['empty', '']], True)), ('plain', None)]"
expect_ok "peek (text) shows them under the message" "$ctl" peek "$qm"
check "... one '#' line, words escaped" grep -qE '^  # timestamp_ns=[0-9]+ priority=0 content_type=text/plain correlation_id=c-42 reply_to=[^ ]+ h\.tenant=acme h\.note=two\\x20words h\.empty=$' "$work/out"
check "... none under the message without" test "$(grep -c '^  # ' "$work/out")" = 1
expect_ok "consume --show-properties" "$ctl" consume "$qm" --count 2 --show-properties --timeout-ms 2000
check "... a '#' line before each payload line" \
  test "$(printf '%s\n' "$out" | sed -E 's/timestamp_ns=[0-9]+/timestamp_ns=T/; s/reply_to=[^ ]+/reply_to=Q/')" = "$(printf '# timestamp_ns=T priority=0 content_type=text/plain correlation_id=c-42 reply_to=Q h.tenant=acme h.note=two\\x20words h.empty=\nhello props\n# priority=0\nplain')"
expect_ok "a rejected message with properties" "$ctl" produce "$qm" --header k=v --correlation-id dead <"$work/props"
"$ctl" consume "$qm" --count 1 --reject --timeout-ms 2000 >/dev/null
expect_ok "dlq list shows its properties" "$ctl" dlq list "$qm"
check "... under the dead letter" grep -qE '^  # timestamp_ns=[0-9]+ priority=0 correlation_id=dead h\.k=v$' "$work/out"
stamp=$("$ctl" dlq list "$qm" | sed -nE 's/.*timestamp_ns=([0-9]+).*/\1/p')
expect_ok "dlq replay restores them" "$ctl" dlq replay "$qm"
expect_ok "consume the replayed message" "$ctl" consume "$qm" --count 1 --show-properties --timeout-ms 2000
check "... same properties and send time" test "$out" = "$(printf '# timestamp_ns=%s priority=0 correlation_id=dead h.k=v\nhello props' "$stamp")"
expect_error "--header without '=' is a usage error" 2 "header" "$ctl" produce "$qm" --header novalue <"$work/props"
expect_error "--header with an empty key is a usage error" 2 "header" "$ctl" produce "$qm" --header =v <"$work/props"
expect_error "a 256-byte --correlation-id is a usage error" 2 "255" "$ctl" produce "$qm" --correlation-id "$(head -c 256 /dev/zero | tr '\0' c)" <"$work/props"
expect_error "a 256-byte header value is a usage error" 2 "255" "$ctl" produce "$qm" --header "k=$(head -c 256 /dev/zero | tr '\0' v)" <"$work/props"
many=()
for i in $(seq 1 200); do many+=(--header "key-$i=0123456789abcdef"); done
expect_error "properties over 4096 bytes are a usage error" 2 "4096" "$ctl" produce "$qm" "${many[@]}" <"$work/props"
check "... and nothing was sent" test "$(stat_field "$qm" "d['depth']")" = 0
expect_ok "produce --help lists the property flags" "$ctl" produce --help
check "... all four" test "$(grep -cE -- '--(header|content-type|correlation-id|reply-to)' "$work/out")" -ge 4
expect_ok "delete the properties queue" "$ctl" delete "$qm"

# --- topics (issue 15) ------------------------------------------------------------------------
qt="$p-topic"
qt2="$p-lossy"
# group_row NAME: the line of group NAME in $out (a group table), as "POLICY STATE LAG".
group_row() { printf '%s\n' "$out" | awk -v g="$1" '$1 == g {print $2, $3, $6}'; }
# subscribers_are TOPIC N: the topic has N live subscribers.
subscribers_are() { test "$(stat_field "$1" "d['subscribers']")" = "$2"; }
expect_ok "topic create" "$ctl" topic create "$qt" --slots 16 --slot-size 128 --max-groups 4
check "... says what it made" grep -q "created topic '$qt': 16 slots x 128 B" "$work/out"
check "... its segment exists with mode 0600" test "$(stat -c %a /dev/shm/shmq."$qt" 2>/dev/null)" = 600
expect_ok "group create --policy reliable" "$ctl" group create "$qt" audit --policy reliable
check "... prints the group's line" test "$(group_row audit)" = "reliable active 0"
expect_ok "group create --policy lossy" "$ctl" group create "$qt" ticker --policy lossy
check "... prints the group's line" test "$(group_row ticker)" = "lossy active 0"
printf 't1\nt2\nt3\nt4\nt5\nt6\nt7\nt8\nt9\nt10\n' >"$work/ten"
expect_ok "produce 10 lines to the topic" "$ctl" produce "$qt" <"$work/ten"
check "... nothing on stderr" test -z "$err"
expect_ok "a late group: group create --start earliest" "$ctl" group create "$qt" late --start earliest
expect_ok "stat --json of the topic" "$ctl" stat "$qt" --json
check "... kind topic, head 10, published 10" \
  test "$(json "(d['schema'], d['kind'], d['topic'], d['head'], d['counters']['published'])")" = "(1, 'topic', '$qt', 10, 10)"
check "... every group 10 behind" \
  test "$(json "[(g['name'], g['policy'], g['lag']) for g in d['groups']]")" = "[('audit', 'reliable', 10), ('ticker', 'lossy', 10), ('late', 'reliable', 10)]"
check "... every documented group field is there" python3 -c '
import json, sys
d = json.loads(sys.argv[1])
keys = ["name", "policy", "state", "position", "acked", "lag", "in_flight", "requeued", "members",
        "delivered", "acks", "redelivered", "missed", "dead_lettered", "dropped"]
sys.exit(1 if [k for g in d["groups"] for k in keys if k not in g] else 0)' "$out"
expect_ok "consume --group audit (reliable)" "$ctl" consume "$qt" --group audit --count 10 --timeout-ms 10000
check "... the 10 bodies in order" test "$(printf '%s' "$out" | tr '\n' ' ')" = "t1 t2 t3 t4 t5 t6 t7 t8 t9 t10"
expect_ok "stat --json after one group consumed" "$ctl" stat "$qt" --json
check "... only that group's lag is 0" \
  test "$(json "[(g['name'], g['lag'], g['acks'], g['in_flight']) for g in d['groups']]")" = "[('audit', 0, 10, 0), ('ticker', 10, 0, 0), ('late', 10, 0, 0)]"
expect_ok "consume --group ticker (lossy)" "$ctl" consume "$qt" --group ticker --count 10 --timeout-ms 10000
check "... the same 10 bodies" test "$(printf '%s' "$out" | tr '\n' ' ')" = "t1 t2 t3 t4 t5 t6 t7 t8 t9 t10"
check "... and nothing missed" test -z "$err"
expect_ok "consume --group late (started at earliest)" "$ctl" consume "$qt" --group late --count 10 --timeout-ms 10000
check "... gets the history: the same 10 bodies" test "$(printf '%s' "$out" | tr '\n' ' ')" = "t1 t2 t3 t4 t5 t6 t7 t8 t9 t10"
expect_ok "consume --group audit again: nothing left" "$ctl" consume "$qt" --group audit --timeout-ms 0
check "... writes nothing" test -z "$out"
expect_ok "stat --json after every group consumed" "$ctl" stat "$qt" --json
check "... every lag 0, 10 delivered and acked each, nothing missed" \
  test "$(json "[(g['lag'], g['delivered'], g['acks'], g['missed'], g['members']) for g in d['groups']]")" = "[(0, 10, 10, 0, 0), (0, 10, 10, 0, 0), (0, 10, 10, 0, 0)]"
# Wait strategies on a topic (issue 16): a publisher held back by a reliable group, and a
# subscriber that busy-spins.
qtw="${qt}w"
expect_ok "topic create (wait strategies)" "$ctl" topic create "$qtw" --slots 16 --slot-size 128
expect_ok "... group create" "$ctl" group create "$qtw" g --policy reliable
"$ctl" consume "$qtw" --group g --count 200 --timeout-ms 10000 --wait busy-spin >"$work/tload" 2>/dev/null &
cpid=$!
expect_ok "topic produce --wait spin-sleep (more than the ring holds, a reliable group)" \
  "$ctl" produce "$qtw" --count 200 --size 40 --wait spin-sleep --spin-us 5 --sleep-us 20
wait "$cpid"
check "... all 200 arrive at a consume --group --wait busy-spin" test "$(wc -l <"$work/tload")" = 200
expect_ok "topic consume --wait spin-yield times out on an empty group" \
  "$ctl" consume "$qtw" --group g --timeout-ms 50 --wait spin-yield
expect_ok "... topic delete" "$ctl" topic delete "$qtw"
expect_ok "stat (text) of the topic" "$ctl" stat "$qt"
check "... a line per group" test "$(printf '%s\n' "$out" | awk '$1 == "audit" || $1 == "ticker" || $1 == "late"' | wc -l)" = 3
expect_ok "group list" "$ctl" group list "$qt"
check "... the three groups with policy, state and lag" \
  test "$(group_row audit); $(group_row ticker); $(group_row late)" = "reliable active 0; lossy active 0; reliable active 0"
expect_ok "group list --json" "$ctl" group list "$qt" --json
check "... the three groups" test "$(json "[g['name'] for g in d['groups']]")" = "['audit', 'ticker', 'late']"
expect_ok "list shows the topic" "$ctl" list
check "... with kind topic" test "$(printf '%s\n' "$out" | awk -v q="$qt" '$1 == q {print $7}')" = topic
expect_ok "list --json" "$ctl" list --json
check "... kind topic, groups 3" \
  test "$(json "[(x['kind'], x['groups']) for x in d['queues'] if x['queue'] == '$qt']")" = "[('topic', 3)]"

# A subscriber waiting forever stops cleanly on Ctrl-C.
"$ctl" consume "$qt" --group audit --follow >"$work/tfollow" 2>"$work/tfollow.err" &
cpid=$!
check "consume --group --follow subscribes" wait_until subscribers_are "$qt" 1
printf 'live\n' | "$ctl" produce "$qt"
check "... and gets a message published later" wait_until file_is "$work/tfollow" live
kill -INT "$cpid"
wait "$cpid"
crc=$?
check "... Ctrl-C stops it with exit 0 and no error" test "$crc" -eq 0 -a ! -s "$work/tfollow.err"
check "... nothing held, no subscriber left" \
  test "$(stat_field "$qt" "([g['in_flight'] for g in d['groups']], d['subscribers'])")" = "([0, 0, 0], 0)"

# consume --reject on a topic: to the group's dead-letter queue, reason rejected.
qtr="$p-topic-reject"
expect_ok "topic create (reject)" "$ctl" topic create "$qtr" --slots 16 --slot-size 128
expect_ok "... group create" "$ctl" group create "$qtr" g
printf 'poison\n' | "$ctl" produce "$qtr"
expect_ok "consume --group g --reject" "$ctl" consume "$qtr" --group g --count 1 --reject --timeout-ms 5000
check "... writes the message" test "$out" = poison
check "... the group counts it dead-lettered, nothing left" \
  test "$(stat_field "$qtr" "[(g['lag'], g['dead_lettered']) for g in d['groups']]")" = "[(0, 1)]"
expect_ok "peek the group's dead-letter queue" "$ctl" peek "$qtr.g.dlq"
check "... holds it: a dead letter (magic SLDQ), reason 3 (rejected), the payload" \
  test "$(printf '%s\n' "$out" | awk 'NR == 2 {print substr($NF, 1, 20), substr($NF, length($NF) - 5)}')" = 'SLDQ\x01\x00\x03\x00 poison'
expect_ok "topic delete (reject)" "$ctl" topic delete "$qtr"

# A lossy group a ring behind skips ahead and says how many it missed.
expect_ok "topic create (16 slots, one lossy group)" "$ctl" topic create "$qt2" --slots 16 --slot-size 128
expect_ok "... group create --policy lossy" "$ctl" group create "$qt2" fast --policy lossy
expect_ok "produce --count 40 to it: never waits for the lossy group" "$ctl" produce "$qt2" --count 40 --size 20
expect_ok "consume --group fast" "$ctl" consume "$qt2" --group fast --count 40 --timeout-ms 200
got=$(printf '%s\n' "$out" | grep -c .)
missed=$(sed -nE "s/^shmqctl: group 'fast' missed ([0-9]+) message\(s\).*/\1/p" "$work/err" | awk '{s += $1} END {print s + 0}')
check "... some messages missed, reported on stderr ($missed)" test "$missed" -gt 0
check "... received ($got) + missed ($missed) = 40 published" test $((got + missed)) -eq 40
check "... the last one received is the last one sent" test "$(printf '%s\n' "$out" | tail -n 1 | cut -d' ' -f1)" = msg-39
check "... stat counts the same missed" test "$(stat_field "$qt2" "[g['missed'] for g in d['groups']]")" = "[$missed]"
expect_ok "group create --start POSITION (retained)" "$ctl" group create "$qt2" from30 --start 30
expect_ok "... consume --group from30" "$ctl" consume "$qt2" --group from30 --count 20 --timeout-ms 200
check "... gets positions 30 to 39" \
  test "$(printf '%s\n' "$out" | cut -d' ' -f1 | tr '\n' ' ')" = "msg-30 msg-31 msg-32 msg-33 msg-34 msg-35 msg-36 msg-37 msg-38 msg-39 "
expect_error "group create --start POSITION (no longer retained) is a usage error" 2 "not retained" \
  "$ctl" group create "$qt2" from5 --start 5
printf 'x1\nx2\nx3\n' | "$ctl" produce "$qt2"
"$ctl" consume "$qt2" --group from30 --timeout-ms 100 >/dev/full 2>"$work/err"
rc=$?
expect_stream_error "consume --group >/dev/full: exit 1, one line"
check "... nothing was acked: the group still lags 3" \
  test "$(stat_field "$qt2" "[(g['lag'], g['in_flight']) for g in d['groups'] if g['name'] == 'from30']")" = "[(3, 0)]"

# repair: a subscriber killed while it holds messages (its stdout a pipe nobody reads, so
# it blocks writing a batch it has received); repair redelivers them to the group.
qt4="$p-theal"
expect_ok "topic create (2 KiB slots)" "$ctl" topic create "$qt4" --slots 128 --slot-size 2048
expect_ok "... group create" "$ctl" group create "$qt4" g
expect_ok "... produce --count 64 --size 1900 (more than a pipe holds)" "$ctl" produce "$qt4" --count 64 --size 1900
mkfifo "$work/stuck"
exec 3<>"$work/stuck"          # held open, never read
"$ctl" consume "$qt4" --group g --count 64 >"$work/stuck" 2>/dev/null &
cpid=$!
in_flight_is() { test "$(stat_field "$qt4" "[g['in_flight'] for g in d['groups']]")" = "[$1]"; }
check "a subscriber holds all 64 (blocked writing them)" wait_until in_flight_is 64
{ kill -KILL "$cpid"; wait "$cpid"; } 2>/dev/null   # no "Killed" line from the shell
exec 3>&-
expect_ok "repair of the topic after the subscriber was killed" "$ctl" repair "$qt4"
check "... says it redelivered the 64" grep -qE "^topic '$qt4': [1-9][0-9]* change\(s\): 64 message\(s\) redelivered" "$work/out"
check "... none in flight, the group still 64 behind" \
  test "$(stat_field "$qt4" "[(g['in_flight'], g['lag'], g['redelivered']) for g in d['groups']]")" = "[(0, 64, 64)]"
expect_ok "... consume gets all 64 again" "$ctl" consume "$qt4" --group g --count 64 --timeout-ms 10000
check "... 64 lines" test "$(printf '%s\n' "$out" | wc -l)" = 64
expect_ok "... topic delete" "$ctl" topic delete "$qt4"

# A durable topic's data dir: made by topic create, kept by delete, removed by --purge-data.
qt3="$p-tdur"
tdata="$work/tdata"
expect_error "topic create --retain-bytes without durability" 2 "durable" "$ctl" topic create "$qt3" --retain-bytes 100
expect_ok "topic create --durability async --data-dir --retain-bytes --retain-age-s" \
  "$ctl" topic create "$qt3" --durability async --data-dir "$tdata" --retain-bytes 1000000 --retain-age-s 60
check "... its dir holds topic.meta" test -f "$tdata/$qt3/topic.meta"
expect_ok "... stat --json" "$ctl" stat "$qt3" --json
check "... durability, data dir and retention" \
  test "$(json "(d['durability'], d['data_dir'], d['retain_bytes'], d['retain_age_s'], d['persisted_lag'])")" = "('async', '$tdata', 1000000, 60, 0)"
expect_error "delete --keep-dlq of a topic" 2 "keep-dlq" "$ctl" delete "$qt3" --keep-dlq
expect_error "delete --purge-data --data-dir of another dir" 2 "created with data dir" \
  "$ctl" delete "$qt3" --purge-data --data-dir "$work/elsewhere"
expect_ok "delete --purge-data of a durable topic" "$ctl" delete "$qt3" --purge-data
check "... segment and data are gone" test ! -e /dev/shm/shmq."$qt3" -a ! -e "$tdata/$qt3" -a -d "$tdata"

# Usage errors (exit 2) and runtime errors (exit 1) of the topic commands.
expect_error "group create with a bad policy" 2 "policy" "$ctl" group create "$qt" g2 --policy sometimes
expect_error "group create with a bad start" 2 "start" "$ctl" group create "$qt" g2 --start soon
expect_error "group create with a bad group name" 2 "group name" "$ctl" group create "$qt" bad.name
expect_error "group create of a group that exists" 1 "audit" "$ctl" group create "$qt" audit
expect_error "consume of a topic without --group" 2 "with --group" "$ctl" consume "$qt" --timeout-ms 0
expect_error "consume with a bad group name" 2 "group name" "$ctl" consume "$qt" --group 'no/slash' --timeout-ms 0
expect_error "consume --group of a queue" 2 "is a queue" "$ctl" consume "$q1" --group audit --timeout-ms 0
expect_error "consume --group of a group that does not exist" 1 "nosuch" "$ctl" consume "$qt" --group nosuch --timeout-ms 0
expect_error "produce --priority to a topic" 2 "topics do not support" "$ctl" produce "$qt" --priority 1 <"$work/ten"
expect_error "produce --header to a topic" 2 "topics do not support" "$ctl" produce "$qt" --header k=v <"$work/ten"
expect_error "topic create with a bad durability" 2 "durability" "$ctl" topic create "$p-t3" --durability fast
expect_error "topic create with bad geometry" 2 "power of two" "$ctl" topic create "$p-t3" --slots 1000
check "... and nothing was created" test ! -e /dev/shm/shmq."$p-t3"
expect_error "topic create of an existing name" 1 "exists" "$ctl" topic create "$qt"
expect_error "topic delete of a queue" 1 "is a queue" "$ctl" topic delete "$q1"
expect_error "group list of a missing topic" 1 "not found" "$ctl" group list "$p-nosuch"
expect_error "peek of a topic" 1 "is a topic" "$ctl" peek "$qt"

expect_ok "repair of a topic" "$ctl" repair "$qt"
check "... says what it changed" grep -qE "^topic '$qt': [0-9]+ change" "$work/out"
expect_ok "group delete" "$ctl" group delete "$qt" late
expect_ok "... group list" "$ctl" group list "$qt" --json
check "... the group is gone" test "$(json "[g['name'] for g in d['groups']]")" = "['audit', 'ticker']"
expect_error "group delete of a missing group" 1 "late" "$ctl" group delete "$qt" late
expect_ok "topic delete" "$ctl" topic delete "$qt"
check "... the segment is gone" test ! -e /dev/shm/shmq."$qt"
expect_error "stat after topic delete: not found" 1 "not found" "$ctl" stat "$qt"
expect_ok "delete (of a topic)" "$ctl" delete "$qt2"
check "... the segment is gone" test ! -e /dev/shm/shmq."$qt2"

# --- dead letters ------------------------------------------------------------------------
expect_ok "create a queue with --max-deliveries 1" "$ctl" create "$q3" --max-deliveries 1
printf 'poison\n' | "$ctl" produce "$q3"
expect_ok "consume --reject" "$ctl" consume "$q3" --count 1 --reject
check "consume --reject wrote the message" test "$out" = poison
check "the rejected message was dead-lettered" test "$(stat_field "$q3" "(d['depth'], d['counters']['dead_lettered'])")" = "(0, 1)"
expect_ok "dlq list" "$ctl" dlq list "$q3"
check "dlq list shows the reason and the payload" \
  test "$(printf '%s\n' "$out" | awk 'NR == 2 {print $2, $NF}')" = "rejected poison"
expect_ok "dlq list again (list consumes nothing)" "$ctl" dlq list "$q3"
check "... still there" test "$(printf '%s\n' "$out" | awk 'NR == 2 {print $2}')" = rejected
expect_ok "dlq replay" "$ctl" dlq replay "$q3"
check "dlq replay says what it did" grep -q "replayed 1 " "$work/out"
expect_ok "dlq list after replay" "$ctl" dlq list "$q3"
check "... the dead-letter queue is empty" grep -q "no dead letters" "$work/out"
expect_ok "consume the replayed message" "$ctl" consume "$q3" --count 1 --timeout-ms 2000
check "... it is the original payload" test "$out" = poison
printf 'junk1\njunk2\n' | "$ctl" produce "$q3"
"$ctl" consume "$q3" --count 2 --reject --timeout-ms 2000 >/dev/null
expect_ok "dlq purge" "$ctl" dlq purge "$q3"
check "dlq purge dropped both" grep -q "purged 2 " "$work/out"
check "... nothing comes back to the queue" test "$(stat_field "$q3" "d['depth']")" = 0

# --- delete ------------------------------------------------------------------------------
expect_ok "delete a plain queue" "$ctl" delete "$q1"
check "its segment is gone" test ! -e /dev/shm/shmq."$q1"
expect_error "stat after delete: not found" 1 "not found" "$ctl" stat "$q1"
expect_ok "delete a queue and its dead-letter queue" "$ctl" delete "$q3"
check "both segments are gone" test ! -e /dev/shm/shmq."$q3" -a ! -e /dev/shm/shmq."$q3".dlq
expect_ok "delete a durable queue without --purge-data" "$ctl" delete "$q2"
check "... the segment is gone, the data dir is kept" test ! -e /dev/shm/shmq."$q2" -a -f "$data/$q2/queue.meta"
expect_error "delete --purge-data of a gone segment needs --data-dir" 1 "data-dir" "$ctl" delete "$q2" --purge-data
expect_ok "delete --purge-data --data-dir of a gone segment" "$ctl" delete "$q2" --purge-data --data-dir "$data"
check "... the queue's data is gone, the data dir root stays" test ! -e "$data/$q2" -a -d "$data"

# --- bad input: one line on stderr, exit 1 (runtime) or 2 (usage) --------------------------
expect_error "unknown queue: stat" 1 "not found" "$ctl" stat "$p-nosuch"
expect_error "unknown queue: consume" 1 "not found" "$ctl" consume "$p-nosuch"
expect_error "unknown queue: produce" 1 "not found" "$ctl" produce "$p-nosuch" </dev/null
expect_error "unknown queue: peek" 1 "not found" "$ctl" peek "$p-nosuch"
expect_error "unknown queue: delete" 1 "not found" "$ctl" delete "$p-nosuch"
expect_error "unknown queue: dlq list" 1 "not found" "$ctl" dlq list "$p-nosuch"
expect_error "unknown queue: watch" 1 "not found" "$ctl" watch "$p-nosuch"
expect_error "bad name with '/'" 2 "invalid queue name" "$ctl" stat "bad/name"
expect_error "bad name with '..'" 2 "invalid queue name" "$ctl" create "a..b"
expect_error "bad name starting with '.'" 2 "invalid queue name" "$ctl" consume ".hidden"
expect_error "bad name: empty" 2 "invalid queue name" "$ctl" delete ""
expect_error "bad name: too long" 2 "invalid queue name" "$ctl" create "$(head -c 300 /dev/zero | tr '\0' a)"
expect_error "bad flag" 2 "bogus" "$ctl" stat "$q1" --bogus
expect_error "bad flag value (not a number)" 2 "slots" "$ctl" create "$p-x" --slots many
expect_error "bad flag value (negative)" 2 "count" "$ctl" consume "$p-x" --count -3
expect_error "bad geometry (not a power of two)" 2 "power of two" "$ctl" create "$p-x" --slots 1000
expect_error "unknown command" 2 "unknown command 'frobnicate'" "$ctl" frobnicate
expect_error "no command" 2 "required" "$ctl"
expect_error "missing queue argument" 2 "QUEUE" "$ctl" stat
expect_error "wrong durability word" 2 "durability" "$ctl" create "$p-x" --durability fast
expect_error "wrong mode" 2 "mode" "$ctl" create "$p-x" --mode 0644
expect_error "durable queue without a data dir" 2 "data-dir" "$ctl" create "$p-x" --durability sync
expect_error "--size without --count" 2 "count" "$ctl" produce "$p-x" --size 10
expect_error "--follow with --timeout-ms" 2 "excludes|follow" "$ctl" consume "$p-x" --follow --timeout-ms 5
touch "$work/a-file"
expect_error "unwritable data dir (its parent is a file)" 1 "data dir" \
  "$ctl" create "$p-x" --durability async --data-dir "$work/a-file/dir"
check "... and no segment was created" test ! -e /dev/shm/shmq."$p-x"
mkdir -p "$work/ro" && chmod 0500 "$work/ro"
if [ "$(id -u)" -ne 0 ]; then
  expect_error "unwritable data dir (mode 0500)" 1 "data dir" \
    "$ctl" create "$p-x" --durability async --data-dir "$work/ro"
fi
expect_error "log verify of a missing dir" 1 "log dir" "$ctl" log verify "$work/nosuch"
if [ "$(id -u)" -eq 0 ]; then
  expect_ok "create a queue to give away" "$ctl" create "$q4"
  chown 1001 /dev/shm/shmq."$q4"
  expect_error "queue owned by another user: stat" 1 "permission denied" "$ctl" stat "$q4"
  expect_error "queue owned by another user: consume" 1 "permission denied" "$ctl" consume "$q4"
  expect_ok "list still works, with the error in the queue's row" "$ctl" list
  check "... the row says permission denied" \
    grep -qE "^$q4 .*permission denied" "$work/out"
  rm -f /dev/shm/shmq."$q4"
else
  echo "skip - queue owned by another user (needs root to chown)"
fi

# --- closed and broken standard streams (issue 12) -------------------------------------------
# With fd 1 closed the segment used to be opened as fd 1 and consume printed the payloads
# over its header, acked them and exited 0. Now: nothing printed, nothing acked, exit 1.
q6="$p-stdio"
expect_ok "create a queue for the standard stream checks" "$ctl" create "$q6" --slots 64 --slot-size 128
printf 'one\ntwo\nthree\n' | "$ctl" produce "$q6"
"$ctl" consume "$q6" --timeout-ms 100 >&- 2>"$work/err"
rc=$?
expect_stream_error "consume with stdout closed: exit 1, one line"
expect_ok "... the segment is intact: stat works" "$ctl" stat "$q6"
check "... nothing was acked: the three messages are ready again" \
  test "$(stat_field "$q6" "(d['depth'], d['in_flight'], d['counters']['acked'])")" = "(3, 0, 0)"
"$ctl" consume "$q6" --timeout-ms 100 >/dev/full 2>"$work/err"
rc=$?
expect_stream_error "consume >/dev/full: exit 1, one line"
check "... says ENOSPC" grep -q "No space left on device" "$work/err"
check "... nothing was acked" \
  test "$(stat_field "$q6" "(d['depth'], d['in_flight'], d['counters']['acked'])")" = "(3, 0, 0)"
printf 'four\n' | "$ctl" produce "$q6" >&-
check "produce with stdout closed sends (exit 0)" test $? -eq 0
"$ctl" produce "$q6" <&- >&- 2>"$work/err"
rc=$?
check "produce with stdin and stdout closed: exit 1, one line naming stdin" \
  test "$rc" -eq 1 -a "$(wc -l <"$work/err")" -eq 1 -a -n "$(grep 'reading standard input' "$work/err")"
expect_ok "... the queue still works: consume the four" "$ctl" consume "$q6" --count 4 --timeout-ms 10000
check "... in order, once each" test "$(printf '%s' "$out" | tr '\n' ' ')" = "one two three four"
expect_ok "stat with stderr closed still works" "$ctl" stat "$q6" 2>&-

# --- with shmqd: sync queue, log verify/dump, rebuild after delete ----------------------------
if [ -n "$shmqd" ] && [ -x "$shmqd" ]; then
  ddir="$work/sync-data"
  start_daemon() {
    "$shmqd" --data-dir "$ddir" "$q5" 2>>"$work/shmqd.log" &
    daemon_pid=$!
  }
  stop_daemon() {
    kill -TERM "$daemon_pid" 2>/dev/null
    wait "$daemon_pid" 2>/dev/null
    daemon_pid=""
  }
  # A queue without durability is served too: its watchdog and metrics, nothing persisted.
  "$shmqd" --data-dir "$work/nd-data" "$q6" 2>"$work/nd.log" &
  nd_pid=$!
  check "shmqd serves a queue without durability (watchdog and metrics)" \
    wait_until grep -q "serving (durability none" "$work/nd.log"
  kill -TERM "$nd_pid" 2>/dev/null
  wait "$nd_pid"
  check "shmqd on a queue without durability stops cleanly on SIGTERM (exit 0)" test "$?" -eq 0
  check "shmqd made no data dir for it" test ! -e "$work/nd-data/$q6"
  expect_ok "create a sync queue" "$ctl" create "$q5" --durability sync --data-dir "$ddir"
  # A sync send waits for shmqd: start the producer first, then the daemon.
  printf 'one\ntwo\nthree\n' | "$ctl" produce "$q5" 2>/dev/null &
  ppid=$!
  sleep 0.3
  check "produce on a sync queue without shmqd waits (does not fail)" kill -0 "$ppid"
  start_daemon
  wait "$ppid"
  check "... and exits 0 once shmqd confirmed every line" test $? -eq 0
  run "$ctl" stat "$q5" --json
  check "stat --json: sync, persisted, no lag" \
    test "$(json "(d['durability'], d['persisted'] >= 3, d['persisted_lag'], d['state'])")" = "('sync', True, 0, 'ok')"
  expect_error "delete --purge-data refuses while shmqd runs" 1 "shmqd is running" "$ctl" delete "$q5" --purge-data
  stop_daemon
  expect_ok "log verify" "$ctl" log verify "$ddir/$q5"
  check "log verify reports OK" grep -q "^OK" "$work/out"
  expect_ok "log verify --json" "$ctl" log verify "$ddir/$q5" --json
  check "log verify --json: ok, 3 messages" test "$(json "(d['ok'], d['messages'])")" = "(True, 3)"
  expect_ok "log dump" "$ctl" log dump "$ddir/$q5"
  check "log dump shows the three messages" \
    test "$(printf '%s\n' "$out" | awk '$3 == "message" {print $NF}' | tr '\n' ' ')" = "one two three "
  expect_error "log verify of a data dir root names the queue dirs" 1 "$q5" "$ctl" log verify "$ddir"
  expect_ok "delete keeps the data (a reboot)" "$ctl" delete "$q5"
  start_daemon
  check "shmqd rebuilds the queue from the data dir" wait_until test -e /dev/shm/shmq."$q5"
  expect_ok "consume the rebuilt queue" "$ctl" consume "$q5" --timeout-ms 3000 --count 3
  check "... every message is back" test "$(printf '%s' "$out" | tr '\n' ' ')" = "one two three"
  stop_daemon
  # A log line that cannot be written never stops shmqd (it aborted on 2>/dev/full). A
  # confirmed sync send (bounded by timeout) proves that it still serves the queue.
  for how in closed full; do
    if [ "$how" = closed ]; then
      "$shmqd" --data-dir "$ddir" "$q5" >&- 2>&- &
    else
      "$shmqd" --data-dir "$ddir" "$q5" >&- 2>/dev/full &
    fi
    daemon_pid=$!
    check "shmqd with stdout closed and stderr $how confirms a sync send" \
      timeout 20 "$ctl" produce "$q5" <<<"$how" 2>/dev/null  # may warn: shmqd not up yet
    check "... and keeps running" kill -0 "$daemon_pid"
    kill -TERM "$daemon_pid"
    wait "$daemon_pid"
    crc=$?
    daemon_pid=""
    check "... SIGTERM: exit 0 (exit $crc)" test "$crc" -eq 0
  done
  expect_ok "... both messages were persisted and are delivered" \
    "$ctl" consume "$q5" --timeout-ms 3000 --count 2
  check "... in order" test "$(printf '%s' "$out" | tr '\n' ' ')" = "closed full"
  expect_ok "delete --purge-data" "$ctl" delete "$q5" --purge-data
  check "... segment and data are gone" test ! -e /dev/shm/shmq."$q5" -a ! -e "$ddir/$q5"
else
  echo "skip - shmqd checks (no shmqd binary given)"
fi

# --- Other users' files (issue 12, items 4 and 6) --------------------------------------------
# Planted symlinks need no second user; another user's files need root (nobody, uid 65534).
mkdir -p "$work/target" "$work/real"
ln -s "$work/target" "$work/link"
expect_error "create --data-dir refuses a symlinked data dir" 1 "symbolic link" \
  "$ctl" create "$p-sl1" --durability sync --data-dir "$work/link"
expect_error "create --data-dir refuses a symlinked intermediate component" 1 "symbolic link" \
  "$ctl" create "$p-sl2" --durability sync --data-dir "$work/link/sub"
check "... nothing was created through the links" test -z "$(ls -A "$work/target")" -a ! -e /dev/shm/shmq."$p-sl1" -a ! -e /dev/shm/shmq."$p-sl2"
mkdir -m 0777 "$work/gw"
chmod 0777 "$work/gw"
expect_error "create --data-dir refuses a dir under a group/world-writable, non-sticky one" 1 "writable by any user" \
  "$ctl" create "$p-gw" --durability sync --data-dir "$work/gw/data"
check "... and created nothing in it" test ! -e "$work/gw/data"
if [ -n "$shmqd" ]; then
  run timeout 20 "$shmqd" --data-dir "$work/link" "$p-sl1"
  # A data dir shmqd may not use is a configuration error: exit 2, not restarted by systemd.
  check "shmqd --data-dir refuses a symlinked data dir (exit $rc)" test "$rc" -eq 2
  check "... and says so" grep -q "symbolic link" "$work/err"
  run timeout 20 "$shmqd" --data-dir "$work/link/sub" "$p-sl1"
  check "shmqd --data-dir refuses a symlinked intermediate component (exit $rc)" test "$rc" -eq 2
  check "... and says so" grep -q "symbolic link" "$work/err"
  check "... nothing was created through the links" test -z "$(ls -A "$work/target")"
fi
if [ "$(id -u)" -eq 0 ]; then
  nobody_uid=65534
  mkdir -m 0777 "$work/theirs"
  chmod 0777 "$work/theirs"
  chown "$nobody_uid" "$work/theirs"
  expect_error "create refuses a data dir owned by another user (mode 0777)" 1 "owned by uid $nobody_uid" \
    "$ctl" create "$p-own" --durability sync --data-dir "$work/theirs"
  check "... and created nothing in it" test -z "$(ls -A "$work/theirs")"
  if [ -n "$shmqd" ]; then
    run timeout 20 "$shmqd" --data-dir "$work/theirs" "$p-own"
    check "shmqd refuses a data dir owned by another user (exit $rc)" test "$rc" -eq 2
    check "... and says so" grep -q "owned by uid $nobody_uid" "$work/err"
  fi

  # Another user's <q>.dlq: create refuses it, delete leaves it.
  q6="$p-dlqown"
  setpriv --reuid="$nobody_uid" --regid="$nobody_uid" --clear-groups "$ctl" create "$q6.dlq" >/dev/null 2>&1
  check "(setup) nobody made $q6.dlq" test "$(stat -c %u /dev/shm/shmq."$q6".dlq)" = "$nobody_uid"
  expect_error "create refuses a queue whose <q>.dlq belongs to another user" 1 "owned by uid $nobody_uid" \
    "$ctl" create "$q6"
  check "... and leaves no segment" test ! -e /dev/shm/shmq."$q6"
  rm -f /dev/shm/shmq."$q6".dlq /dev/shm/shmq."$q6".dlq.dlq
  expect_ok "(setup) the queue, with its own <q>.dlq" "$ctl" create "$q6"
  rm -f /dev/shm/shmq."$q6".dlq  # ... replaced by another user's
  setpriv --reuid="$nobody_uid" --regid="$nobody_uid" --clear-groups "$ctl" create "$q6.dlq" >/dev/null 2>&1
  run "$ctl" delete "$q6"
  check "delete of a queue beside another user's <q>.dlq: exit 0 (exit $rc)" test "$rc" -eq 0
  check "... warns, naming the owner" grep -q "warning: not removing .*owned by uid $nobody_uid" "$work/err"
  check "... removed the queue" test ! -e /dev/shm/shmq."$q6"
  check "... and not the other user's <q>.dlq" test -e /dev/shm/shmq."$q6".dlq
  rm -f /dev/shm/shmq."$q6".dlq /dev/shm/shmq."$q6".dlq.dlq
else
  echo "skip - other users' data dirs and dead-letter queues (needs root to act as a second user)"
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
