#include "core/slot_ops.hpp"

#include <algorithm>
#include <cstring>

#include "core/checksum.hpp"
#include "ring/requeue_map.hpp"
#include "ring/ring.hpp"
#include "ring/slot_word.hpp"

namespace shmq::detail {

bool release_held(Segment& seg, std::uint64_t pos, std::uint64_t held, std::uint32_t member) {
  std::atomic<std::uint64_t>& word = seg.slot(pos).word;
  const std::uint64_t lap = word_lap(held);
  const std::uint32_t k = word_aux(held);
  std::uint64_t expected = held;
  if (k == 1) {
    // Release: the holder's reads of the payload happen-before the next producer's claim
    // (acquire) and overwrite. One CAS: the ack and the release of the slot are one step.
    return word.compare_exchange_strong(expected, make_word(lap + 1, SlotState::free, 0, 1),
                                        std::memory_order_seq_cst);
  }
  const std::uint64_t rel = make_word(lap, SlotState::releasing, member, k);
  if (!word.compare_exchange_strong(expected, rel, std::memory_order_seq_cst)) return false;
  SHMQ_CRASH_POINT("release.after_releasing");
  finish_release(seg, pos, rel);
  return true;
}

bool write_deadline(SlotHeader& hdr, std::uint64_t held, std::uint64_t deadline_ns) noexcept {
  // A bounded number of tries: only a late writer (or a hostile one) races us here.
  for (int tries = 0; tries < 64; ++tries) {
    std::uint64_t dl = hdr.deadline_ns.load(std::memory_order_seq_cst);
    if (hdr.word.load(std::memory_order_seq_cst) != held) return false;
    if (hdr.deadline_ns.compare_exchange_strong(dl, deadline_ns, std::memory_order_seq_cst))
      return true;
  }
  return false;
}

bool requeue_held(Segment& seg, std::uint64_t pos, std::uint64_t held,
                  std::uint64_t not_before_ns) {
  SlotHeader& hdr = seg.slot(pos);
  // deadline_ns is written only by the slot's holder: a delay is written before the CAS
  // that publishes it (the caller holds the slot: a consumer's nack_after, a dead-letter
  // move that failed). A requeue into ready writes nothing: a ready slot's deadline means
  // nothing, and its next holder writes its own lease right after its claim. (A watchdog
  // that took a message back used to write 0 here before its CAS; when that CAS lost to
  // the holder's nack_after, the 0 cancelled the delay.)
  // The delay: read, check the slot is still held as `held`, then CAS, so that a holder
  // stopped between its check and its write cannot overwrite the next holder's lease.
  if (not_before_ns != 0 && !write_deadline(hdr, held, not_before_ns)) return false;
  const SlotState to = not_before_ns != 0 ? SlotState::delayed : SlotState::ready;
  std::uint64_t expected = held;
  // Release: publishes deadline_ns with the new state.
  if (!hdr.word.compare_exchange_strong(expected,
                                        make_word(word_lap(held), to, kNoOwner, word_aux(held)),
                                        std::memory_order_seq_cst))
    return false;
  SHMQ_CRASH_POINT("requeue.before_mark");
  // After the slot changed (see requeue_map.hpp: a mark made before the CAS could be
  // cleared by a consumer that still saw the slot held). Then the epoch (ready: a consumer
  // that sees the new epoch finds the mark) or the due hint (delayed: consumers look when it
  // is due, not at once).
  RequeueMap(seg).mark(pos & (seg.slot_count() - 1));
  if (not_before_ns != 0)
    announce_delayed(seg, not_before_ns);
  else
    seg.header().requeue_epoch.value.fetch_add(1, std::memory_order_seq_cst);
  wake_waiters(seg.header().consumers_wait, seg.max_members());
  signal_level(seg);
  return true;
}

void announce_delayed(Segment& seg, std::uint64_t due_ns) noexcept {
  std::atomic<std::uint64_t>& hint = seg.header().requeue_epoch.next_due;
  std::uint64_t cur = hint.load(std::memory_order_seq_cst);
  const std::uint64_t due = due_hint_time(due_ns);
  // Each failed CAS means another writer changed the word: a handful of retries at most
  // under honest contention; a hostile writer flipping it for ever is cut off (the epoch
  // bump below covers what the hint then misses).
  for (int attempt = 0; attempt < 64; ++attempt) {
    const std::uint64_t t = std::min(due_hint_time(cur), due);
    const std::uint64_t next = t | ((cur + 1) & kDueHintCount);
    if (hint.compare_exchange_weak(cur, next, std::memory_order_seq_cst)) return;
  }
  seg.header().requeue_epoch.value.fetch_add(1, std::memory_order_seq_cst);
}

void settle_due_hint(Segment& seg, std::uint64_t seen, std::uint64_t next_due_ns) noexcept {
  const std::uint64_t t =
      next_due_ns == UINT64_MAX ? kDueHintNone : due_hint_time(next_due_ns);
  std::uint64_t expected = seen;
  seg.header().requeue_epoch.next_due.compare_exchange_strong(
      expected, t | ((seen + 1) & kDueHintCount), std::memory_order_seq_cst);
}

bool release_claim(Segment& seg, std::uint64_t pos, std::uint32_t member, std::uint32_t k) {
  const std::uint64_t lap = lap_of(pos, seg.slot_shift());
  std::atomic<std::uint64_t>& word = seg.slot(pos).word;
  bool released = false;
  for (const SlotState from : {SlotState::claimed, SlotState::skipped}) {
    std::uint64_t expected = make_word(lap, from, member, k);
    if (k == 1) {
      released = word.compare_exchange_strong(
          expected, make_word(lap + 1, SlotState::free_skipped, 0, 1), std::memory_order_seq_cst);
    } else {
      const std::uint64_t rel = make_word(lap, SlotState::releasing_skipped, member, k);
      released = word.compare_exchange_strong(expected, rel, std::memory_order_seq_cst);
      if (released) finish_release(seg, pos, rel);
    }
    if (released) break;
  }
  if (released) {
    wake_waiters(seg.header().consumers_wait, seg.max_members());
    signal_level(seg);  // consumers of a queue with priorities sleep on its base
    wake_waiters(seg.header().producers_wait, seg.max_members());
  }
  return released;
}

bool try_relocate(Segment& seg, std::uint64_t pos, std::uint64_t w, std::uint32_t member) {
  const SlotState st = word_state(w);
  if (st != SlotState::ready && st != SlotState::delayed) return false;
  const std::uint32_t k = word_aux(w);
  if (k < 1 || k > seg.max_fragments()) return false;
  const std::uint64_t lap = lap_of(pos, seg.slot_shift());
  if (lap_diff(word_lap(w), lap) != -1) return false;
  const SlotState to =
      st == SlotState::ready ? SlotState::relocating : SlotState::relocating_delayed;
  std::uint64_t expected = w;
  // Exactly the CAS a consumer's claim (ready -> held at the old lap) races: one of the two
  // wins. Acquire: the message's header and payload (published by the release that made it
  // ready or delayed) are visible to us; seq_cst like every slot transition (wait_on).
  return seg.slot(pos).word.compare_exchange_strong(expected, make_word(lap, to, member, k),
                                                    std::memory_order_seq_cst);
}

bool finish_relocation(Segment& seg, std::uint64_t pos, std::uint64_t w) {
  const SlotState st = word_state(w);
  if (!is_relocating(st)) return false;
  const std::uint32_t k = word_aux(w);
  if (k < 1 || k > seg.max_fragments()) return false;
  const std::uint32_t shift = seg.slot_shift();
  const std::uint64_t n = seg.slot_count();
  if (pos < n || word_lap(w) != lap_of(pos, shift)) return false;
  const std::uint64_t old = pos - n;
  SlotHeader& hdr = seg.slot(pos);
  // 1. Continuations: free at their old lap while the old head covered them; free at the
  // new lap while the new head covers them (the rule a consumer's walk and a producer's
  // claim read). Exactly the old lap and free: not moved yet; anything else: moved (and
  // perhaps reused since, by then through a release of this head).
  for (std::uint32_t j = 1; j < k; ++j) {
    std::atomic<std::uint64_t>& cw = seg.slot(pos + j).word;
    std::uint64_t c = cw.load(std::memory_order_seq_cst);
    if (lap_diff(word_lap(c), lap_of(pos + j, shift)) == -1 && is_free(word_state(c)))
      cw.compare_exchange_strong(c, make_word(lap_of(pos + j, shift), SlotState::free, 0, 0),
                                 std::memory_order_seq_cst);
  }
  // 2. The seal binds the position (checksummed queues). Nobody writes the header or the
  // bytes while the word is relocating; a helper that read them after the word moved on
  // sees the word changed below and stops, and its CAS from the seal it read would fail
  // anyway (a reuse writes another seal).
  if (seg.checksummed()) {
    std::atomic<std::uint64_t>& sw = seg.checksum_word(pos);
    std::uint64_t seal = sw.load(std::memory_order_seq_cst);
    const std::uint64_t id = hdr.id.load(std::memory_order_relaxed);
    const std::uint64_t origin = hdr.origin.load(std::memory_order_relaxed);
    const std::uint32_t flags = hdr.length.load(std::memory_order_relaxed) & kLengthHasProperties;
    std::vector<std::byte> bytes;
    copy_message(seg, pos, k, bytes);
    acquire_fence_after_copy();
    if (hdr.word.load(std::memory_order_relaxed) != w) return false;
    const std::uint64_t at_new = message_checksum(pos, id, origin, bytes, flags);
    if (seal != at_new && seal != (at_new ^ 1)) {
      // Intact at the old position: sealed for the new one. Not intact (scribbled while
      // it waited): stays not intact, so relocation never launders a corrupt message.
      const std::uint64_t to =
          seal == message_checksum(old, id, origin, bytes, flags) ? at_new : (at_new ^ 1);
      sw.compare_exchange_strong(seal, to, std::memory_order_seq_cst);
    }
  }
  // 3. The position field (the dispatch walk and repair_tail read it): from the old
  // position only, so a late helper never writes over a later message's header.
  std::uint64_t expected_pos = old;
  hdr.position.compare_exchange_strong(expected_pos, pos, std::memory_order_seq_cst);
  // 4. Publish at the new position, in the state it had.
  const SlotState to = st == SlotState::relocating ? SlotState::ready : SlotState::delayed;
  std::uint64_t expected = w;
  // Release: publishes the header rewritten above; pairs with a consumer's claim.
  if (!hdr.word.compare_exchange_strong(expected, make_word(word_lap(w), to, kNoOwner, k),
                                        std::memory_order_seq_cst))
    return false;
  SHMQ_CRASH_POINT("relocate.before_mark");
  // A consumer's dispatch walk may have passed the position while it was relocating: mark
  // it like a requeue (after the CAS, see requeue_map.hpp), then bump the epoch and wake.
  RequeueMap(seg).mark(pos & (n - 1));
  seg.header().requeue_epoch.value.fetch_add(1, std::memory_order_seq_cst);
  wake_waiters(seg.header().consumers_wait, seg.max_members());
  signal_level(seg);
  return true;
}

std::size_t bounded_length(const Segment& seg, std::uint64_t pos, std::uint32_t k) {
  const std::size_t cap = std::min<std::size_t>(seg.max_message_size(),
                                                std::size_t(k) * seg.payload_size());
  return std::min<std::size_t>(seg.slot(pos).length.load(std::memory_order_relaxed) & kLengthMask,
                               cap);
}

bool repair_tail(Segment& seg, std::uint64_t t) {
  std::atomic<std::uint64_t>& tail = seg.header().tail.value;
  const std::uint32_t shift = seg.slot_shift();
  const std::uint64_t n = seg.slot_count();
  bool found = false;
  std::uint64_t end = 0;
  for (std::uint64_t i = 0; i < n; ++i) {
    const SlotHeader& hdr = seg.slot(i);
    // The word first, then the header (acquire: a head's header was written before the
    // release that made its word ready; for a claimed word it may not be written yet, and
    // then it names an older position, whose lap does not match).
    const std::uint64_t w = hdr.word.load(std::memory_order_acquire);
    const std::uint64_t p = hdr.position.load(std::memory_order_relaxed);
    if ((p & (n - 1)) != i) continue;
    const std::int64_t d = lap_diff(word_lap(w), lap_of(p, shift));
    const bool free = is_free(word_state(w));
    if (!((d == 0 && !free) || (d == 1 && free))) continue;
    const std::uint32_t k = std::clamp<std::uint32_t>(word_aux(w), 1, seg.max_fragments());
    if (p > UINT64_MAX - k) continue;  // garbage
    if (!found || p + k > end) end = p + k;
    found = true;
  }
  if (!found) end = seg.header().base_position;
  std::uint64_t expected = t;
  // No ordering rides on it: the tail is a hint, every claim is a CAS on a slot word.
  if (end != t) tail.compare_exchange_strong(expected, end, std::memory_order_seq_cst);
  return tail.load(std::memory_order_seq_cst) != t;
}

std::size_t copy_message(const Segment& seg, std::uint64_t pos, std::uint32_t k,
                         std::vector<std::byte>& out) {
  const std::size_t len = bounded_length(seg, pos, k);
  out.resize(len);
  const std::size_t p = seg.payload_size();
  std::size_t off = 0;
  for (std::uint64_t q = pos; off < len; ++q) {
    const std::size_t n = std::min(p, len - off);
    std::memcpy(out.data() + off, seg.payload(q), n);
    off += n;
  }
  return len;
}

}  // namespace shmq::detail
