#!/usr/bin/env bash
# Model check of the slot and member-row protocol (docs/model.md, docs/model/shmq.pml).
#
# Verifies each configuration exhaustively with SPIN and asserts that no property is violated
# (every property is an assertion or an end-state check of the same search); then builds the
# model with the generation fence removed (-DFENCE=0) and asserts that SPIN finds an error.
# Exits 77 (ctest SKIP_RETURN_CODE) only if spin is not installed.
#
# Usage: tests/model_test.sh [path/to/shmq.pml]
set -euo pipefail

model=${1:-$(cd "$(dirname "$0")/.." && pwd)/docs/model/shmq.pml}
if ! command -v spin >/dev/null 2>&1; then
  echo "model_test: SKIP: spin is not installed (tools/install-deps.sh installs the Debian package spin)"
  exit 77
fi
[ -r "$model" ] || { echo "model_test: no model at $model" >&2; exit 2; }
cc=${CC:-cc}
command -v "$cc" >/dev/null 2>&1 || cc=gcc

work=$(mktemp -d "${TMPDIR:-/tmp}/shmq-model.XXXXXX")
trap 'rm -rf "$work"' EXIT
passed=0
failed=0

# run NAME EXPECT(pass|fail) PAN_CFLAGS SPIN_DEFINES...: one verification in its own directory.
run() {
  local name=$1 expect=$2 pancflags=$3
  shift 3
  local dir=$work/$name
  mkdir -p "$dir"
  cp "$model" "$dir/shmq.pml"
  local start=$SECONDS
  if ! (cd "$dir" && nice -n 10 spin "$@" -a shmq.pml >spin.log 2>&1); then
    echo "model_test: $name: spin -a failed:"; tail -n 20 "$dir/spin.log"
    failed=$((failed + 1)); return
  fi
  # -DSAFETY: safety properties only (assertions, end states); -DMEMLIM: the search stops
  # (and is reported incomplete below) rather than take more than 3 GiB.
  # shellcheck disable=SC2086
  if ! (cd "$dir" && nice -n 10 "$cc" -O2 -w -DSAFETY -DNOFAIR -DMEMLIM=3072 $pancflags \
          -o pan pan.c >cc.log 2>&1); then
    echo "model_test: $name: compiling pan failed:"; tail -n 20 "$dir/cc.log"
    failed=$((failed + 1)); return
  fi
  (cd "$dir" && nice -n 10 ./pan -m200000 >pan.log 2>&1) || true
  local log=$dir/pan.log secs=$((SECONDS - start))
  local errors states depth mem
  errors=$(sed -n 's/.*errors: \([0-9]*\).*/\1/p' "$log" | head -n 1)
  mem=$(awk '/total actual memory usage/ {print $1; exit}' "$log")
  states=$(awk '/states, stored/ {print $1; exit}' "$log")
  depth=$(sed -n 's/.*depth reached \([0-9]*\).*/\1/p' "$log" | head -n 1)
  if [ -z "$errors" ]; then
    echo "model_test: $name: pan did not finish:"; tail -n 20 "$log"
    failed=$((failed + 1)); return
  fi
  local incomplete=""
  if grep -qiE "max search depth too small|reached -DMEMLIM bound|out of memory|search not completed" "$log"; then
    incomplete=yes
  fi
  if [ "$expect" = pass ]; then
    if [ "$errors" = 0 ] && [ -z "$incomplete" ]; then
      echo "model_test: $name: ok, exhaustive: $states states, depth $depth, ${mem} MB, ${secs}s"
      passed=$((passed + 1))
    else
      echo "model_test: $name: FAILED ($errors errors${incomplete:+, search incomplete}; $*):"
      grep -iE "error|violated|warning|depth|states, stored|memory usage|elapsed" "$log" | head -n 20
      if [ "$errors" != 0 ]; then
        echo "--- counterexample (spin -t), last steps:"
        (cd "$dir" && spin "$@" -t shmq.pml 2>&1 | sed 's/^[[:space:]]*//' \
           | grep -E '^[PCW][0-9]+ |assertion violated|failed assertion|invalid end state' | tail -n 40)
      fi
      failed=$((failed + 1))
    fi
  else
    if [ "$errors" != 0 ]; then
      echo "model_test: $name: ok, SPIN finds the error it must find (${secs}s):"
      (cd "$dir" && spin "$@" -t shmq.pml 2>&1 | sed 's/^[[:space:]]*//' \
         | grep -E '^[PCW][0-9]+ |assertion violated|failed assertion' | tail -n 25 | sed 's/^/    /')
      passed=$((passed + 1))
    else
      echo "model_test: $name: FAILED: the model without the check passes ($states states): the check is not tested"
      failed=$((failed + 1))
    fi
  fi
}

# The issue's configuration: 2 producers, 2 consumers, 2 watchdogs, over 2 slots and 2 member
# rows, generations modulo 4; one message each, one receive each, at most one heartbeat
# misjudgment (eviction of a live member) per run; crashes anywhere, any number.
run six pass "" -DNP=2 -DNC=2 -DNW=2 -DRESEND=0 -DRELEASING=0 -DEVICT=1
# Producers and their claims: resend after a quarantine, releasing acks, any number of
# evictions, two watchdogs whose reclaims may be stale.
run producers pass "" -DNP=2 -DNC=1 -DNW=2
# Consumers and their holds: two receives each, three member rows, any number of evictions.
run consumers pass "" -DNP=1 -DNC=2 -DNW=2 -DNRECV=2 -DNR=3
# The fence removed (the tag check in every member CAS and in the orphan rule): SPIN must find
# a member acting on a slot that another incarnation of its row made. Breadth first, so the
# counterexample printed is a shortest one.
run no-fence fail "-DBFS" -DNP=1 -DNC=2 -DNW=1 -DFENCE=0
# Relocation (issue 11): one slot and two producers, so that a send finds no free slot and
# moves the ready message out of its way; and the same with a move that loses the message.
run relocation pass "" -DNS=1 -DNP=2 -DNC=1 -DNW=1 -DNR=3 -DEVICT=1
run relocation-loses fail "-DBFS" -DNS=1 -DNP=2 -DNC=1 -DNW=1 -DNR=3 -DEVICT=1 -DRELOCATE_LOSES=1

echo "model_test: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
