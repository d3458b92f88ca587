// The requeue map: where requeued (and delayed) messages are, found in O(requeued).
//
// A message put back behind the dispatch cursor (nack, clean close, lease expiry, a dead
// consumer's reclaim, a failed dead-lettering) has no record but its slot word. Consumers
// used to find such messages by walking the whole window [tail - N, dispatch): 25 ms on a
// 4 Mi-slot ring, at every requeue and before every sleep. The map is a hint beside the
// slot words: one bit per slot, "this slot may hold a ready or delayed message that
// dispatch has passed", and summary levels above it (bit j of a word at level l+1 set if
// word j of level l may be non-zero), so finding the next marked slot reads one word per
// level (at most 4 for 2^24 slots), whatever N.
//
// Storage, fixed by the geometry alone (nothing read from shared memory is an index):
//   level 0: ceil(N / 64) words, one bit per slot;
//   level l: ceil(words(l - 1) / 64) words; the top level is the first with one word.
// The top word is SegmentHeader::requeue_epoch.requeue_top; the words of the lower levels
// are the `map_word` fields of the slot headers 0, 1, ... (level 0 first, then level 1, ...):
// fewer than N / 63 of them, so they always fit. Zero everywhere = nothing marked, which is
// what a new segment holds.
//
// The slot word stays the truth; a bit is only a hint, so any bit pattern is safe (a
// scribbled map costs a longer search, never a wrong delivery), and the protocol only has
// to ensure that a mark is never lost while its message waits:
//
//  - mark(i): after the slot's CAS into ready/delayed, set the bit at level 0, then its
//    summary bits upwards (bottom-up: whoever sees a summary bit finds its child set).
//  - unmark(i): only when the slot was seen in neither state. Clear the bit first, then
//    read the slot word again; if it is ready or delayed now, mark again. A requeuer whose
//    set came before our clear made its CAS before our re-read (all seq_cst), so the
//    re-read sees it; one whose set came after our clear leaves the bit set.
//  - A summary bit whose child word is zero is cleared the same way: clear, then re-read
//    the child word and set the bit again (with its ancestors) if it is non-zero.
//
// A process that dies between its CAS and its mark leaves a ready message without a bit;
// the watchdog, which looks at every live position, marks ready and delayed slots behind
// dispatch again (see watchdog.cpp), so such a message waits at most a tick or a few.
#pragma once

#include <atomic>
#include <bit>
#include <cstdint>

#include "ring/slot_word.hpp"
#include "segment/segment.hpp"

namespace shmq::detail {

// True for the states a requeue leaves a slot in: the states the map marks.
inline constexpr bool is_requeued_state(SlotState s) {
  return s == SlotState::ready || s == SlotState::delayed;
}

class RequeueMap {
 public:
  static constexpr std::uint32_t kMaxLevels = 4;  // 64^4 = 2^24 = kMaxSlots

  explicit RequeueMap(Segment& seg) noexcept : seg_(seg), n_(seg.slot_count()) {
    std::uint64_t bits = n_;
    std::uint64_t offset = 0;
    for (std::uint32_t l = 0; l < kMaxLevels; ++l) {
      bits_[l] = bits;
      offset_[l] = offset;
      const std::uint64_t words = (bits + 63) / 64;
      if (words == 1) {
        top_ = l;
        break;
      }
      offset += words;
      bits = words;
    }
  }

  std::uint64_t size() const noexcept { return n_; }

  // Marks slot i (i < N): its slot was just put into ready or delayed.
  void mark(std::uint64_t i) noexcept { set_from(0, i); }

  // The first marked slot index >= from, or N if there is none. Clears the summary bits it
  // finds stale on the way (losslessly, see above).
  std::uint64_t next(std::uint64_t from) noexcept {
    std::uint32_t lvl = 0;
    std::uint64_t idx = from;
    for (;;) {
      if (idx < bits_[lvl]) {
        const std::uint64_t w =
            word(lvl, idx >> 6).load(std::memory_order_seq_cst) & (~std::uint64_t{0} << (idx & 63));
        if (w != 0) {
          const std::uint64_t hit = (idx & ~std::uint64_t{63}) | std::uint64_t(std::countr_zero(w));
          if (hit >= bits_[lvl]) {
            // Past the level's end: nobody marks there, so a scribble. Clear it; nothing
            // further in this word.
            word(lvl, idx >> 6)
                .fetch_and((std::uint64_t{1} << (bits_[lvl] & 63)) - 1, std::memory_order_seq_cst);
          } else {
            if (lvl == 0) return hit;
            if (word(lvl - 1, hit).load(std::memory_order_seq_cst) == 0) {
              clear_summary(lvl, hit);  // stale: clear it and go on after it
              idx = hit + 1;
              continue;
            }
            --lvl;  // descend into child word `hit`, from its first bit
            idx = hit << 6;
            continue;
          }
        }
      }
      // Nothing at or after idx in this word: go on at the next bit of the level above.
      if (lvl == top_) return n_;
      idx = (idx >> 6) + 1;
      ++lvl;
    }
  }

  // Clears slot i's bit: call it only after seeing the slot in neither ready nor delayed
  // (or after claiming it). Re-reads the slot word afterwards and marks it again if it was
  // requeued meanwhile.
  void unmark(std::uint64_t i) noexcept {
    const std::uint64_t bit = std::uint64_t{1} << (i & 63);
    std::atomic<std::uint64_t>& w = word(0, i >> 6);
    if ((w.load(std::memory_order_seq_cst) & bit) != 0) {
      const std::uint64_t old = w.fetch_and(~bit, std::memory_order_seq_cst);
      if ((old & bit) != 0 && (old & ~bit) == 0 && top_ > 0) clear_summary(1, i >> 6);
    }
    if (is_requeued_state(word_state(seg_.slot(i).word.load(std::memory_order_seq_cst))))
      set_from(0, i);
  }

  // True if slot i's bit is set (tests, the watchdog).
  bool marked(std::uint64_t i) const noexcept {
    return (word(0, i >> 6).load(std::memory_order_seq_cst) >> (i & 63)) & 1;
  }

 private:
  std::atomic<std::uint64_t>& word(std::uint32_t lvl, std::uint64_t j) const noexcept {
    if (lvl == top_) return seg_.header().requeue_epoch.requeue_top;
    return seg_.slot(offset_[lvl] + j).map_word;
  }

  // Sets bit b of level lvl and every summary bit above it. A bit already set is only
  // read (no store to a line other processes read), and the walk still goes on upwards: a
  // summary bit above may be clear while its clearer re-reads this level, or because a
  // marker died half-way; setting it again is always safe.
  void set_from(std::uint32_t lvl, std::uint64_t b) noexcept {
    for (;; ++lvl, b >>= 6) {
      const std::uint64_t bit = std::uint64_t{1} << (b & 63);
      std::atomic<std::uint64_t>& w = word(lvl, b >> 6);
      if ((w.load(std::memory_order_seq_cst) & bit) == 0)
        w.fetch_or(bit, std::memory_order_seq_cst);
      if (lvl == top_) return;
    }
  }

  // Bit b of level lvl >= 1 was found set with its child word (lvl - 1, b) zero.
  void clear_summary(std::uint32_t lvl, std::uint64_t b) noexcept {
    const std::uint64_t bit = std::uint64_t{1} << (b & 63);
    std::atomic<std::uint64_t>& w = word(lvl, b >> 6);
    const std::uint64_t old = w.fetch_and(~bit, std::memory_order_seq_cst);
    if ((old & bit) != 0 && (old & ~bit) == 0 && lvl < top_) clear_summary(lvl + 1, b >> 6);
    if (word(lvl - 1, b).load(std::memory_order_seq_cst) != 0) set_from(lvl, b);
  }

  Segment& seg_;
  std::uint64_t n_;
  std::uint32_t top_ = 0;
  std::uint64_t bits_[kMaxLevels] = {};
  std::uint64_t offset_[kMaxLevels] = {};
};

}  // namespace shmq::detail
