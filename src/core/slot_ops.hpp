// Transitions of a held message, shared by consumers (ack, nack), the watchdog (lease
// expiry, dead consumers) and dead-lettering. Each is one CAS from the exact held word; see
// docs/slot_state_machine.md.
#pragma once

#include <cstdint>
#include <vector>

#include "segment/segment.hpp"

namespace shmq::detail {

// Releases the message (the ack transition): held -> free(lap+1), or for k > 1
// held -> releasing -> (continuations, head) free. False if `held` is no longer its word.
bool release_held(Segment& seg, std::uint64_t pos, std::uint64_t held, std::uint32_t member);

// Writes the deadline of the slot we hold as `held` (a lease extension, a delay): read,
// check the word, CAS, so that a holder stopped between its check and its write cannot
// overwrite the slot's next holder's lease. False if the slot is no longer held as `held`.
bool write_deadline(SlotHeader& hdr, std::uint64_t held, std::uint64_t deadline_ns) noexcept;

// Puts the message back: held -> ready, or held -> delayed until `not_before_ns`
// (CLOCK_MONOTONIC) when that is non-zero. Bumps the requeue epoch and wakes consumers.
// False if `held` is no longer its word.
bool requeue_held(Segment& seg, std::uint64_t pos, std::uint64_t held,
                  std::uint64_t not_before_ns);

// Gives back a claim that will not be published: claimed(lap, member, k) (an abandoned
// reservation, or a dead producer's claim) or the hole skipped(lap, member, k) the watchdog
// made of it. Nothing was committed: the position becomes free_skipped at the next lap.
// Wakes consumers (who may wait at this position) and producers (who may wait for the
// slot). False if the slot was in neither state.
bool release_claim(Segment& seg, std::uint64_t pos, std::uint32_t member, std::uint32_t k);

// The delayed-due hint (RequeueLine::next_due). Bits 63..20: a due time, CLOCK_MONOTONIC, in
// units of 2^20 ns rounded down (so a hint says "due" up to 1 ms early, never late); all
// ones: none. Bits 19..0: a count bumped by every write, so that a consumer's update from
// the value it read before its scan fails whenever a delayed message was announced
// meanwhile (it may not have seen that one).
inline constexpr std::uint64_t kDueHintCount = (std::uint64_t{1} << 20) - 1;
inline constexpr std::uint64_t kDueHintNone = ~kDueHintCount;
inline std::uint64_t due_hint_time(std::uint64_t hint) noexcept { return hint & ~kDueHintCount; }
// After a slot was made delayed (and marked in the requeue map) with due time `due_ns`:
// lowers the hint to it (and bumps the count whatever the time). Bounded: retried only when
// another writer changed the word.
void announce_delayed(Segment& seg, std::uint64_t due_ns) noexcept;
// After a complete scan that started when the hint was `seen`: sets it to the earliest due
// time of the delayed messages the scan left (UINT64_MAX: none), unless it changed since.
void settle_due_hint(Segment& seg, std::uint64_t seen, std::uint64_t next_due_ns) noexcept;

// Relocation (issue 11): a producer that laps the ring and finds its slot holding the
// previous lap's message in ready or delayed behind dispatch moves that message to its own
// position instead of waiting (docs/slot_state_machine.md, transitions 12 and 13).
//
// try_relocate: one CAS of the slot word of `pos` from `w` (the previous lap's ready or
// delayed head, at position pos - N) to relocating(lap(pos), member, k); the caller then
// moves the tail past pos + k and calls finish_relocation. False if the CAS failed (a
// consumer took the message, or another producer moved it).
bool try_relocate(Segment& seg, std::uint64_t pos, std::uint64_t w, std::uint32_t member);

// Finishes the move of the message whose head at `pos` has word `w` in relocating or
// relocating_delayed: moves its continuation slots to their new lap, rewrites what in the
// header names the position (the position field, and the checksum seal on a checksummed
// queue: resealed for `pos` only if it matched the old position, so a corrupt message stays
// corrupt), then publishes it as ready (delayed) at `pos`, marks it in the requeue map and
// wakes the consumers. Id, delivery count, deadline, origin, enqueue time and bytes are
// unchanged. Any process may call it, any number of times, concurrently: every step is a
// CAS from the exact value it expects (a late helper, after the slot was released and
// reused, changes nothing). True if this call published it.
bool finish_relocation(Segment& seg, std::uint64_t pos, std::uint64_t w);

// The most slots one message of this queue can span: that of its max message size (not
// max_fragments, the format's bound). An honest dispatch cursor is at most this far ahead of
// the tail.
inline std::uint64_t max_span(const Segment& seg) {
  return seg.fragments_for(seg.max_message_size());
}

// Copies the message at `pos` spanning `k` slots into `out`, its length bounded by the
// queue's max message size and by k slots whatever the header says. Returns the length.
std::size_t copy_message(const Segment& seg, std::uint64_t pos, std::uint32_t k,
                         std::vector<std::byte>& out);

// Length of the message at `pos` spanning `k` slots, bounded as above: the length field
// without its flag bits (kLengthMask), i.e. all its bytes, a properties block included.
std::size_t bounded_length(const Segment& seg, std::uint64_t pos, std::uint32_t k);

// Moves a tail cursor found out of range, `t`, to where the ring says the tail is (issue
// 12: one 8-byte write of a wild value into the tail made every producer wait for a free
// slot for ever). Slot words keep a position's lap only modulo 2^kLapBits, so the 64-bit
// positions come from the slot headers: the candidate is the end (p + fragments) of the
// newest message p whose slot agrees that p was claimed (its header names p, and its word
// holds p's lap in a state past free, or p's next lap free). Messages claimed since whose
// headers are not written yet lie beyond it; producers walk past them as past any claimed
// head. A ring that names no message gives the segment's base position. One CAS from `t`:
// a tail that anyone moved since is left alone. Walks the whole ring once: slow paths only.
// True if the tail is no longer `t` afterwards.
bool repair_tail(Segment& seg, std::uint64_t t);

}  // namespace shmq::detail
