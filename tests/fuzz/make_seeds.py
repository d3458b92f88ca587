#!/usr/bin/env python3
"""Writes the hand-made inputs of the fuzz corpora (tests/fuzz/corpus/<target>/seed-*).

The formats are described at the top of fuzz_segment.cpp and fuzz_log.cpp. The rest of each
corpus was found by the fuzzers: regress-* reproduced a bug (named in the commit that added
it), the files named by their SHA-1 add coverage (kept after libFuzzer's -merge=1).
Run from anywhere: python3 tests/fuzz/make_seeds.py
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(bytes(data))


# --- fuzz_segment --------------------------------------------------------------------------
# Snapshots (fuzz_segment.cpp): 0 = Q1 with a producer and a consumer attached, 1 = Q1 after
# they closed, 2 = Q2 (2 slots, heartbeat liveness), 3 = Q3 (durable, laps wrapping 2^40).
# Q1: 8 slots (shift 3), tail 27 after its scripted history, "d" ready at dispatch 26.


def rec(kind, a=0, b=0, c=0, v=0):
    return bytes([kind, a, b, c]) + struct.pack("<Q", v & 0xFFFFFFFFFFFFFFFF)


# Operations (kind 8..15).
def try_receive(consumer=0, handle=0):
    return rec(8, consumer, handle)


def receive_for(consumer=0, handle=0, timeout=2):  # timeout: index into kTimeouts
    return rec(9, consumer, handle, timeout)


def ack(consumer=0, handle=0):
    return rec(10, consumer, handle, 0)


def nack(consumer=0, handle=0):
    return rec(10, consumer, handle, 1)


def reject(consumer=0, handle=0):
    return rec(10, consumer, handle, 3)


def try_send(size=5):
    return rec(11, 0, 0, 0, size)


def send_batch(v=0x0A0B03):
    return rec(11, 0, 0, 4, v)


def reserve_keep(size=8):
    return rec(11, 0, 0, 3, size)


def tick():
    return rec(12)


def stats():
    return rec(13, 0, 0, 0)


def browse(v=0x0105):
    return rec(13, 0, 0, 1, v)


def reopen():
    return rec(13, 0, 0, 2)


def release_all(consumer=0):
    return rec(14, consumer, 0, 0)


def receive_batch(consumer=0):
    return rec(14, consumer, 0, 1, 2)


def interrupted_receive(consumer=0, handle=0):
    return rec(14, consumer, handle, 2)


def interrupted_send(size=5):
    return rec(15, 0, 0, 0, size)


# Writes (kind 0..7).
TAIL, DISPATCH, EPOCH, WATCHDOG, PERSISTED = range(5)  # kCursorOffsets


def cursor(which, mode, v=0):
    return rec(1, which, mode, 0, v)


def slot_word(slot, lap_delta, state, v):
    return rec(3, slot, lap_delta + 3, state, v)


def member_state(row, v):
    return rec(2, row, 0, 1, v)


WORKOUT = [
    try_receive(0, 0), ack(0, 0), try_send(5), try_send(150), receive_for(1, 0), nack(1, 0),
    tick(), stats(), browse(), reserve_keep(), send_batch(), receive_batch(0),
    interrupted_receive(1, 1), reject(0, 2), interrupted_send(), release_all(1), reopen(),
    receive_for(0, 3, 3), tick(), stats(),
]

for snap in range(4):
    write("segment", "workout-snapshot%d" % snap, bytes([snap, 0]) + b"".join(WORKOUT))

# The dispatch hang (issue 12, item 2): one 8-byte write of a wild value into the dispatch
# cursor hung every consumer at 100% CPU, deaf to its timeout and to interrupt(). The values
# of tests/cursor_test.cpp: far ahead, far behind, the ends of the range, and values whose
# lap aliases a real position's (laps compare modulo 2^40).
TAIL_Q1, FIRST_READY_Q1, ALIAS_Q1 = 27, 26, 1 << (40 + 3)
WILD = {
    "uint64max": cursor(DISPATCH, 5, 0),
    "2e62": cursor(DISPATCH, 0, 1 << 62),
    "deadbeef": cursor(DISPATCH, 0, 0xDEADBEEFDEADBEEF),
    "tail-plus-2e20": cursor(DISPATCH, 0, TAIL_Q1 + (1 << 20)),
    "zero-a-ring-behind": cursor(DISPATCH, 0, 0),
    "alias-first-ready": cursor(DISPATCH, 0, FIRST_READY_Q1 + ALIAS_Q1),
    "alias-tail": cursor(DISPATCH, 3, 0),
    "alias-zero": cursor(DISPATCH, 0, ALIAS_Q1),
}
for what, write_it in WILD.items():
    # Before the queue is opened (every consumer finds it), on both Q1 snapshots...
    for snap in (0, 1):
        write("segment", "dispatch-hang-%s-snapshot%d" % (what, snap),
              bytes([snap, 0]) + write_it + receive_for(0, 0, 3) + ack(0, 0) +
              try_send(3) + receive_for(0, 1, 3) + interrupted_receive(1, 0))
    # ...and into a queue in use, between a receive and the next.
    write("segment", "dispatch-hang-%s-live" % what,
          bytes([1, 0]) + try_receive(0, 0) + write_it + receive_for(0, 1, 3) +
          interrupted_receive(1, 0) + tick())

# Other cursors scribbled: the tail (producers and consumers), the requeue epoch, the elected
# watchdog, the persisted cursor of the durable ring.
write("segment", "tail-uint64max", bytes([1, 0]) + cursor(TAIL, 5) + interrupted_send() +
      try_send(3) + receive_for(0, 0, 3) + tick() + stats())
write("segment", "tail-alias", bytes([0, 0]) + cursor(TAIL, 3, 1) + try_send(3) +
      receive_for(0, 0, 3) + tick())
write("segment", "epoch-and-dispatch-behind", bytes([1, 0]) + cursor(EPOCH, 0, 12345) +
      cursor(DISPATCH, 4, 3) + receive_for(0, 0, 3) + receive_for(0, 1, 3))
write("segment", "watchdog-garbage", bytes([0, 0]) + cursor(WATCHDOG, 0, 0xFFFF) + tick() +
      tick())
write("segment", "persisted-behind-wrapped-ring", bytes([3, 0]) + cursor(PERSISTED, 4, 0) +
      try_send(5) + try_send(100) + receive_for(0, 0, 3) + ack(0, 0) + tick())

# Slot words: ready with 0 and 4095 fragments, a lap ahead, an unknown state, a held slot
# owned by a row out of range; a consumer row of a dead pid (the watchdog reclaims it).
write("segment", "slot-ready-zero-fragments", bytes([1, 0]) + slot_word(2, 0, 3, 0) +
      receive_for(0, 0, 3) + browse(0x10009) + stats())
write("segment", "slot-ready-4095-fragments", bytes([1, 0]) + slot_word(2, 0, 3, 0xFFF << 16) +
      receive_for(0, 0, 3) + browse(0x10009) + tick())
write("segment", "slot-lap-ahead", bytes([1, 0]) + slot_word(3, 1, 0, 1 << 16) + try_send(3) +
      interrupted_send() + tick())
write("segment", "slot-unknown-state", bytes([1, 0]) + slot_word(2, 0, 12, 1 << 16) +
      receive_for(0, 0, 3) + tick())
write("segment", "slot-held-by-row-out-of-range", bytes([1, 0]) +
      slot_word(2, 0, 4, 0x6 | (2 << 9) | (1 << 16)) + tick() + stats() + release_all(0))
write("segment", "member-dead-consumer", bytes([0, 0]) +
      member_state(1, 1 | (2 << 8) | (2 << 16)) + tick() + receive_for(0, 0, 3) + stats())
write("segment", "length-too-long", bytes([1, 0]) + rec(5, 2, 2, 0, 0xFFFFFFFF) +
      rec(5, 5, 2, 0, 1000) + receive_for(0, 0, 3) + browse(0x10009) + tick())
# The header: geometry the opener must refuse, policy it takes, sizes it must check.
write("segment", "header-slot-count", bytes([1, 0]) + rec(0, 4, 0, 0, 4) + try_receive())
write("segment", "header-max-message-size", bytes([1, 0]) + rec(0, 7, 0, 0, 100) +
      try_send(150) + try_send(90) + receive_for())
write("segment", "header-max-message-size-too-large", bytes([1, 0]) +
      rec(0, 7, 0, 0, 0xFFFFFFFF) + try_receive())
write("segment", "header-durability-sync", bytes([1, 0]) + rec(0, 31, 0, 0, 2) + try_send(5) +
      interrupted_send() + reserve_keep() + rec(11, 0, 0, 2, 5) + receive_for())
for i in range(9):
    write("segment", "size-%d" % i, bytes([1, 240 + i]) + try_receive() + stats())

# --- fuzz_log -----------------------------------------------------------------------------
# Ops: 0 segment, 1 message, 2 ack, 3 copy, 4 garbage, 5 bit flip, 6 truncate, 7 checkpoint,
# 8 stray file, 9 stale-salt message. Positions: one byte, relative to the file's first.


def pos(p):
    """A position argument: below 0xfc relative to the current file, else absolute."""
    return bytes([p]) if isinstance(p, int) and p < 0xFC else b"\xff" + struct.pack("<Q", p[0])


def at(p):  # an absolute position
    return (p,)


def segment(first=0, variant=0):
    return bytes([0]) + pos(at(first)) + bytes([variant])


def message(p, payload=b"hello", id_=7):
    return bytes([1]) + pos(p) + bytes([id_, len(payload)]) + payload


def ack_rec(p):
    return bytes([2]) + pos(p)


def copy_rec(p, origin, payload=b"copy"):
    return bytes([3]) + pos(p) + pos(origin) + bytes([9, len(payload)]) + payload


def checkpoint(min_unacked, next_position, variant=0):
    return bytes([7, variant]) + pos(at(min_unacked)) + pos(at(next_position))


# Messages 0..2 and 10..11, acks of 0 and 1, a copy at 11 of message 2 (an earlier epoch's).
LOG_OK = (segment(0) + message(0) + message(1, b"x" * 40) + ack_rec(0) + message(2) +
          segment(10) + message(0) + ack_rec(at(1)) + copy_rec(1, at(2)) + checkpoint(1, 12))
write("log", "two-segments-checkpoint", bytes([0]) + LOG_OK)
write("log", "two-segments-small-rotation", bytes([2]) + LOG_OK)
write("log", "torn-tail", bytes([0]) + segment(0) + message(0) + message(1) +
      bytes([4, 20]) + b"\x01" * 20)
write("log", "mid-log-corruption", bytes([0]) + segment(0) + message(0) + message(1) +
      bytes([5, 70, 0, 0x40]) + message(2) + segment(5) + message(0))
write("log", "mid-log-corruption-stop", bytes([1]) + segment(0) + message(0) + message(1) +
      bytes([5, 70, 0, 0x40]) + message(2))
write("log", "bad-headers", bytes([0]) + segment(0, 6 << 2) + message(0) + segment(3, 4 << 2) +
      message(0) + segment(9, 7 << 2) + segment(20) + message(0))
write("log", "incompatible-version", bytes([0]) + segment(0, 5 << 2) + message(0))
write("log", "checkpoint-variants", bytes([0]) + segment(0) + message(0) + message(5) +
      checkpoint(3, 2) + checkpoint(2, 9, 1) + checkpoint(2, 9, 3))
write("log", "strays", bytes([0]) + segment(0) + message(0) + bytes([8, 0, 0]) +
      bytes([8, 1, 4]) + bytes([8, 2 + 6 * 3, 0]) + b"abc" + bytes([8, 5, 30]))
write("log", "stale-salt-and-truncate", bytes([0]) + segment(0) + message(0) +
      bytes([9, 1, 3, 2]) + b"zz" + message(2) + bytes([6, 80, 0]))
write("log", "position-uint64max", bytes([0]) + segment(0) + bytes([1, 0xFD, 1, 1]) + b"m")
write("log", "empty", bytes([0]))
