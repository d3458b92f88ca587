// The slot word: a slot's whole state in one 64-bit atomic.
//
//   63               32 31   28 27            12 11        0
//   +-------------------+-------+----------------+-----------+
//   |      lap (32)     | state | owner (16)     |  aux (12) |
//   +-------------------+-------+----------------+-----------+
//
// The owner is a member's id: its row (low 8 bits) and the low 8 bits of the row's
// generation at the time it registered (high 8 bits). A row's generation changes every
// time the row is taken, so a slot state a member created names that one incarnation of
// the row: a member whose row was freed and taken by another process can no longer
// ack, requeue or claim anything the new occupant holds (its CAS expects its own id), and
// the watchdog recognises what it left behind (the id's generation is not the row's).
//
// A message's position p lives in slot (p mod N) on lap (p / N), N = slot_count. Every
// transition is one compare-and-swap of the whole word, so a process that dies at any
// instruction leaves each slot in exactly one of the states below, attributable to an
// owner, and a late CAS from a process that was only slow fails instead of tearing
// anything. The full state machine, with who may make each transition, is in
// docs/slot_state_machine.md.
//
// A message of k > 1 fragments occupies positions p .. p+k-1. Only the head slot (p)
// carries state; its aux field is k. The continuation slots keep the word FREE(lap) they
// had when the head was claimed (they are covered by the head) and are freed to
// FREE(lap+1) by whoever releases the head, before the head itself (see RELEASING).
//
// Laps are stored modulo 2^32 and compared with a signed 32-bit difference: a slot's lap
// is never more than one ahead of or behind the lap a reader expects. A full position is
// rebuilt from a lap and a nearby position (the tail), see position_near().
#pragma once

#include <cstdint>

namespace shmq::detail {

enum class SlotState : std::uint8_t {
  // Free for a producer at this lap. aux = fragments of the previous lap's message in this
  // slot (0 if none or if this slot was a continuation).
  free = 0,
  // Free for this lap; the previous lap's position here was a skipped hole (nothing was
  // committed). Same as free for producers; the persister tells them apart.
  free_skipped = 1,
  // A producer (owner) claimed this position and is writing the message; aux = fragments.
  claimed = 2,
  // Committed, deliverable; aux = fragments.
  ready = 3,
  // Delivered to consumer owner, not acked yet; aux = fragments.
  held = 4,
  // A hole: the position was repaired (claimed by a producer that died or stalled) or
  // abandoned. Consumers pass it. Not reusable until released by the producer (owner)
  // itself or by the watchdog once owner is known dead: the owner may still be writing.
  skipped = 5,
  // Acked message of k > 1 fragments being released: anyone who sees it may finish the
  // job (free the continuation slots, then the head -> free(lap+1)). Idempotent.
  releasing = 6,
  // Same for a hole: head -> free_skipped(lap+1).
  releasing_skipped = 7,
  // Nacked with a delay (retry with backoff): deliverable once the slot header's
  // deadline_ns has passed; consumers find it behind dispatch, like a requeued message.
  delayed = 8,
  // A ready message of the previous lap that a lapping producer (owner) moves to this lap's
  // position, so that a requeue behind dispatch does not hold the slot (issue 11). The
  // header is being rewritten for the new position; anyone may finish the move (idempotent
  // CAS steps, finish_relocation in core/slot_ops.hpp), which publishes it as ready.
  relocating = 9,
  // Same for a delayed message: finished as delayed (same deadline).
  relocating_delayed = 10,
};

inline constexpr bool is_relocating(SlotState s) {
  return s == SlotState::relocating || s == SlotState::relocating_delayed;
}

inline constexpr std::uint32_t kLapBits = 32;
inline constexpr std::uint64_t kLapMask = (std::uint64_t{1} << kLapBits) - 1;
inline constexpr std::uint32_t kNoOwner = 0xffff;

// A member's owner id: row | (generation & 0xff) << 8.
inline constexpr std::uint32_t owner_id(std::uint32_t row, std::uint64_t generation) {
  return (row & 0xff) | std::uint32_t((generation & 0xff) << 8);
}
inline constexpr std::uint32_t owner_row(std::uint32_t owner) { return owner & 0xff; }
inline constexpr std::uint32_t owner_tag(std::uint32_t owner) { return (owner >> 8) & 0xff; }

inline constexpr std::uint64_t make_word(std::uint64_t lap, SlotState s, std::uint32_t owner,
                                         std::uint32_t aux) {
  return ((lap & kLapMask) << 32) | (std::uint64_t(std::uint8_t(s) & 0xf) << 28) |
         (std::uint64_t(owner & 0xffff) << 12) | std::uint64_t(aux & 0xfff);
}
inline constexpr std::uint64_t word_lap(std::uint64_t w) { return w >> 32; }
inline constexpr SlotState word_state(std::uint64_t w) { return SlotState((w >> 28) & 0xf); }
inline constexpr std::uint32_t word_owner(std::uint64_t w) { return (w >> 12) & 0xffff; }
inline constexpr std::uint32_t word_aux(std::uint64_t w) { return w & 0xfff; }

inline constexpr bool is_free(SlotState s) {
  return s == SlotState::free || s == SlotState::free_skipped;
}

// Signed difference a - b of two laps modulo 2^32.
inline constexpr std::int64_t lap_diff(std::uint64_t a, std::uint64_t b) {
  const std::uint64_t d = (a - b) & kLapMask;
  return (d & (std::uint64_t{1} << (kLapBits - 1))) ? std::int64_t(d) - (std::int64_t{1} << kLapBits)
                                                    : std::int64_t(d);
}

inline constexpr std::uint64_t lap_of(std::uint64_t pos, std::uint32_t shift) {
  return (pos >> shift) & kLapMask;
}

// The position of slot `index` whose word carries `lap`, taken as the one whose lap lies
// nearest the lap of `near` (a position known to be within a lap or two, e.g. the tail).
inline constexpr std::uint64_t position_near(std::uint64_t index, std::uint64_t lap,
                                             std::uint64_t near, std::uint32_t shift) {
  const std::uint64_t near_lap = near >> shift;
  const std::uint64_t full_lap = near_lap + std::uint64_t(lap_diff(lap, near_lap & kLapMask));
  return (full_lap << shift) | index;
}

static_assert(word_lap(make_word(kLapMask, SlotState::held, 7, 4095)) == kLapMask);
static_assert(word_state(make_word(5, SlotState::releasing_skipped, 0xff, 0)) ==
              SlotState::releasing_skipped);
static_assert(word_owner(make_word(5, SlotState::held, 254, 1)) == 254);
static_assert(word_owner(make_word(5, SlotState::held, owner_id(254, 0x1ff), 1)) == 0xfffe);
static_assert(owner_row(owner_id(17, 0x305)) == 17 && owner_tag(owner_id(17, 0x305)) == 5);
static_assert(position_near(3, 0, std::uint64_t{1} << 36, 4) == (std::uint64_t{1} << 36) + 3);
static_assert(position_near(3, kLapMask, std::uint64_t{1} << 36, 4) ==
              (std::uint64_t{1} << 36) - 16 + 3);
static_assert(word_aux(make_word(5, SlotState::held, 254, 4095)) == 4095);
static_assert(lap_diff(0, kLapMask) == 1);
static_assert(lap_diff(kLapMask, 0) == -1);
static_assert(lap_diff(7, 5) == 2);

}  // namespace shmq::detail
