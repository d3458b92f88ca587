#include "core/dedup.hpp"

#include <sched.h>
#include <time.h>
#include <unistd.h>

#include <bit>

#include "ring/ring.hpp"
#include "ring/slot_word.hpp"
#include "segment/segment.hpp"

namespace shmq::detail {
namespace {

// The time window's clock: CLOCK_MONOTONIC_COARSE, which no clock step moves (a rebuild
// after a reboot stamps recovered ids with its own now).
std::uint64_t now_unix_coarse() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return std::uint64_t(ts.tv_sec) * 1'000'000'000ull + std::uint64_t(ts.tv_nsec);
}

// murmur3's finaliser: every bit of the id moves every bit of the bucket index.
std::uint64_t mix(std::uint64_t x) noexcept {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  x ^= x >> 33;
  return x;
}

}  // namespace

std::uint64_t dedup_buckets(std::uint32_t count) noexcept {
  if (count == 0) return 0;
  return std::bit_ceil(std::max<std::uint64_t>(1, (std::uint64_t(count) + 1) / 2));
}

std::uint64_t dedup_table_bytes(std::uint32_t count) noexcept {
  return count == 0 ? 0 : sizeof(DedupHeader) + dedup_buckets(count) * sizeof(DedupBucket);
}

DedupTable::DedupTable(Segment& seg, std::byte* base, std::uint32_t count,
                       std::uint32_t seconds) noexcept
    : seg_(&seg),
      header_(reinterpret_cast<DedupHeader*>(base)),
      buckets_(reinterpret_cast<DedupBucket*>(base + sizeof(DedupHeader))),
      mask_(dedup_buckets(count) - 1),
      count_(count),
      seconds_(seconds) {}

// Ids that differ only in their low 6 bits go to 64 neighbouring buckets (the low bits
// added to a hashed base, in order): consecutive ids (a counter, an idempotent session) walk a 24 KiB
// stretch of the table instead of jumping at random, which the prefetcher and the TLB
// follow. The high bits are mixed, so ids spread over the table whatever their structure,
// and 64 ids of one block never share a bucket.
DedupBucket& DedupTable::bucket_of(std::uint64_t id) const noexcept {
  return buckets_[(mix(id >> 6) + (id & 63)) & mask_];
}

std::uint64_t DedupTable::tail() const noexcept {
  return seg_->header().tail.value.load(std::memory_order_relaxed);
}

// What the slot of position pos says about a committed way of `id` naming it. The
// position was claimed by the way's sender before it inserted the way, so the slot has
// reached pos's lap; see docs/design_notes.md ("Deduplication") for each case.
WayVerdict DedupTable::classify(std::uint64_t id, std::uint64_t word) const noexcept {
  if ((word & kWayStateMask) != kWayCommitted) return WayVerdict::stands;  // recovered
  const std::uint64_t pos = word & kWayPositionMask;
  const SlotHeader& slot = seg_->slot(pos);
  for (int round = 0;; ++round) {
    const std::uint64_t w = slot.word.load(std::memory_order_acquire);
    const WayVerdict v = classify_word(slot, id, pos, w);
    // A published message at pos is judged by its id, read after the word: if the slot
    // moved on meanwhile (acked, reused), the id read may be the next message's. Judge the
    // word seen after the id instead (it says "moved on": stands). Bounded: a word that a
    // hostile writer keeps changing ends as a hole (a resend goes through: a duplicate at
    // worst), not as an endless loop.
    if (v != WayVerdict::hole || round == 7 || slot.word.load(std::memory_order_acquire) == w)
      return v;
  }
}

WayVerdict DedupTable::classify_word(const SlotHeader& slot, std::uint64_t id, std::uint64_t pos,
                                     std::uint64_t w) const noexcept {
  const std::int64_t d = lap_diff(word_lap(w), lap_of(pos, seg_->slot_shift()));
  const SlotState st = word_state(w);
  if (d < 0) return WayVerdict::hole;  // never claimed: a way from nowhere
  if (d == 0) {
    switch (st) {
      case SlotState::claimed:
        return WayVerdict::in_flight;
      case SlotState::ready:
      case SlotState::held:
      case SlotState::delayed:
      case SlotState::relocating:
      case SlotState::relocating_delayed:
      case SlotState::releasing:
        // Published. The id check turns a scribbled way into a hole (a resend goes
        // through: a duplicate at worst, never a loss).
        // (acquire: the word's re-read in classify() stays after it)
        return slot.id.load(std::memory_order_acquire) == id ? WayVerdict::stands
                                                             : WayVerdict::hole;
      default:  // skipped, releasing_skipped; free: never claimed
        return WayVerdict::hole;
    }
  }
  // The slot moved on. free_skipped one lap on: pos was a hole, released. Anything else:
  // pos was published and then acked (or moved on to this lap by a relocation).
  if (d == 1 && st == SlotState::free_skipped) return WayVerdict::hole;
  return WayVerdict::stands;
}

std::uint64_t DedupTable::lock(DedupBucket& b, std::uint32_t owner,
                               std::uint32_t max_yields) const noexcept {
  // No pid in the word: getpid() is a system call (about 1 us on this VM), and the owner id
  // (row + generation) already names the holder's incarnation.
  const std::uint64_t mine = std::uint64_t(owner) + 1;
  std::uint32_t yields = 0;
  for (std::uint32_t spins = 0;; ++spins) {
    std::uint64_t cur = b.lock.load(std::memory_order_relaxed);
    if (cur == 0) {
      if (b.lock.compare_exchange_weak(cur, mine, std::memory_order_acquire,
                                       std::memory_order_relaxed))
        return mine;
      continue;
    }
    if ((spins & 1023) != 1023) {
      cpu_relax();
      continue;
    }
    // Held for a while: is its holder still the member incarnation that took it? A row
    // freed or taken again (the watchdog reclaimed a dead holder) breaks the lock; every
    // state the holder can have left is valid (see the header comment).
    const std::uint32_t holder = std::uint32_t(cur & 0xffffffff) - 1;
    const std::uint32_t row = owner_row(holder);
    bool alive = false;
    if (row < seg_->max_members()) {
      const std::uint64_t m = seg_->member(row).state.load(std::memory_order_acquire);
      alive = (member_status(m) == MemberStatus::active ||
               member_status(m) == MemberStatus::joining) &&
              (member_generation(m) & 0xff) == owner_tag(holder);
    }
    if (!alive) {
      b.lock.compare_exchange_strong(cur, 0, std::memory_order_relaxed);
      continue;
    }
    if (++yields > max_yields) return 0;  // a live holder, stopped or slow: give up
    ::sched_yield();
  }
}

Admission DedupTable::peek(std::uint64_t id, std::uint64_t* original) const noexcept {
  const DedupBucket& b = bucket_of(id);
  for (std::uint32_t w = 0; w < kDedupWays; ++w) {
    if (b.ids[w].load(std::memory_order_acquire) != id) continue;
    const std::uint64_t word = b.words[w].load(std::memory_order_acquire);
    if (b.ids[w].load(std::memory_order_relaxed) != id) continue;  // changed meanwhile
    if (!live_way(b, w, word, tail(), seconds_ != 0 ? now_unix_coarse() : 0)) continue;
    switch (classify(id, word)) {
      case WayVerdict::stands:
        if (original != nullptr)
          *original = (word & kWayStateMask) == kWayCommitted ? (word & kWayPositionMask) : UINT64_MAX;
        return Admission::duplicate;
      case WayVerdict::in_flight:
        return Admission::in_flight;
      case WayVerdict::hole:
        break;
    }
  }
  return Admission::admitted;
}

Admission DedupTable::admit(std::uint64_t id, std::uint64_t pos, std::uint32_t owner,
                            std::uint64_t* original) noexcept {
  // Only while we hold our claim of pos: a sender evicted while stopped (heartbeat
  // liveness), whose hole was released and maybe reused, must not insert a way naming it.
  // By pid a live sender is never evicted: a stalled claim stays its own (skipped) until it
  // withdraws, and a way naming a skipped slot is a hole anyway; no check on that path.
  if (seg_->heartbeat_liveness()) {
    const std::uint64_t w = seg_->slot(pos).word.load(std::memory_order_acquire);
    if (word_state(w) != SlotState::claimed || word_owner(w) != owner ||
        word_lap(w) != lap_of(pos, seg_->slot_shift()))
      return Admission::lost;
  }
  DedupBucket& b = bucket_of(id);
  const std::uint64_t mine = lock(b, owner);
  // Our claim is the newest position we know of: the window ends there.
  const std::uint64_t now_pos = std::max(pos, tail());
  const std::uint64_t now = seconds_ != 0 ? now_unix_coarse() : 0;
  int way = -1;
  // The id's way, if it has a live one (one at most: inserts are serialised here).
  for (std::uint32_t w = 0; w < kDedupWays; ++w) {
    if (b.ids[w].load(std::memory_order_relaxed) != id) continue;
    const std::uint64_t word = b.words[w].load(std::memory_order_relaxed);
    if (!live_way(b, w, word, now_pos, now)) continue;
    const WayVerdict v = classify(id, word);
    if (v == WayVerdict::stands) {
      unlock(b, mine);
      if (original != nullptr)
        *original = (word & kWayStateMask) == kWayCommitted ? (word & kWayPositionMask) : UINT64_MAX;
      return Admission::duplicate;
    }
    if (v == WayVerdict::in_flight) {
      unlock(b, mine);
      return Admission::in_flight;
    }
    // A hole: the id is free again, and so is its way.
    b.words[w].store(kWayVoid, std::memory_order_relaxed);
    header_->voided.fetch_add(1, std::memory_order_relaxed);
    way = int(w);
    break;
  }
  if (way < 0) way = int(pick_way(b, now_pos, now));
  write_way(b, std::uint32_t(way), id, kWayCommitted | (pos & kWayPositionMask), now);
  unlock(b, mine);
  return Admission::admitted;
}

void DedupTable::withdraw(std::uint64_t id, std::uint64_t pos, std::uint32_t owner) noexcept {
  DedupBucket& b = bucket_of(id);
  const std::uint64_t mine = lock(b, owner);
  const std::uint64_t ours = kWayCommitted | (pos & kWayPositionMask);
  for (std::uint32_t w = 0; w < kDedupWays; ++w)
    if (b.words[w].load(std::memory_order_relaxed) == ours &&
        b.ids[w].load(std::memory_order_relaxed) == id)
      b.words[w].store(kWayVoid, std::memory_order_relaxed);
  unlock(b, mine);
}

bool DedupTable::forget_position(std::uint64_t pos, std::uint32_t owner) noexcept {
  // A sender writes its message's header (position, id) before it admits the id, so a way
  // naming pos can exist only if the header says pos, and then it is in the bucket of the
  // header's id. A header of another position: the sender died before admit, no way.
  const SlotHeader& slot = seg_->slot(pos);
  if (slot.position.load(std::memory_order_acquire) != pos) return true;
  DedupBucket& b = bucket_of(slot.id.load(std::memory_order_acquire));
  const std::uint64_t word = kWayCommitted | (pos & kWayPositionMask);
  bool hit = false;
  for (std::uint32_t w = 0; w < kDedupWays && !hit; ++w)
    hit = b.words[w].load(std::memory_order_relaxed) == word;
  if (!hit) return true;
  std::uint64_t n = 0;
  // The watchdog must not hang behind a bucket whose lock a stopped process holds: it
  // tries for a while and, failing, leaves the hole for a later tick.
  const std::uint64_t mine = lock(b, owner, kForgetYields);
  if (mine == 0) return false;
  for (std::uint32_t w = 0; w < kDedupWays; ++w)
    if (b.words[w].load(std::memory_order_relaxed) == word) {
      b.words[w].store(kWayVoid, std::memory_order_relaxed);
      ++n;
    }
  unlock(b, mine);
  if (n != 0) header_->voided.fetch_add(n, std::memory_order_relaxed);
  return true;
}

std::uint32_t DedupTable::pick_way(const DedupBucket& b, std::uint64_t now_pos,
                                   std::uint64_t now) noexcept {
  // A void way, or one out of the window; failing that, the oldest.
  std::uint64_t oldest_pos = UINT64_MAX;
  std::uint32_t oldest = 0;
  for (std::uint32_t w = 0; w < kDedupWays; ++w) {
    const std::uint64_t word = b.words[w].load(std::memory_order_relaxed);
    if (!live_way(b, w, word, now_pos, now)) return w;
    if ((word & kWayPositionMask) < oldest_pos) {
      oldest_pos = word & kWayPositionMask;
      oldest = w;
    }
  }
  // Fifteen live ids in one bucket (below 1e-9 per bucket at the table's load): the oldest
  // leaves the window early. Counted, and said in the docs.
  header_->evicted_early.fetch_add(1, std::memory_order_relaxed);
  return oldest;
}

// Valid at every instruction: the word is voided first and written last.
void DedupTable::write_way(DedupBucket& b, std::uint32_t w, std::uint64_t id, std::uint64_t word,
                           std::uint64_t now) const noexcept {
  b.words[w].store(kWayVoid, std::memory_order_relaxed);
  // A lock-free reader (peek) that sees the new id must not see the old word with it: the
  // id is stored with release (after the void above) and read with acquire.
  b.ids[w].store(id, std::memory_order_release);
  // The time matters only to a time window (times are read nowhere else).
  if (seconds_ != 0) b.times[w].store(now != 0 ? now : now_unix_coarse(), std::memory_order_relaxed);
  b.words[w].store(word, std::memory_order_release);
}

void DedupTable::restore(std::uint64_t id, std::uint64_t pos) noexcept {
  DedupBucket& b = bucket_of(id);
  std::uint32_t way = kDedupWays;
  for (std::uint32_t w = 0; w < kDedupWays && way == kDedupWays; ++w)
    if (b.words[w].load(std::memory_order_relaxed) != kWayVoid &&
        b.ids[w].load(std::memory_order_relaxed) == id)
      way = w;  // logged twice (a copy after a rebuild): the later position
  if (way == kDedupWays) way = pick_way(b, pos, 0);
  write_way(b, way, id, kWayRecovered | (pos & kWayPositionMask), 0);
  // An idempotent session's id: new sessions of the rebuilt queue must not get its producer
  // id again (their first sequences would be refused as its duplicates).
  if ((id & (std::uint64_t{3} << 62)) == (std::uint64_t{1} << 62)) {
    const std::uint64_t producer = (id >> 32) & 0x3fffffff;
    if (header_->sessions.load(std::memory_order_relaxed) < producer)
      header_->sessions.store(producer, std::memory_order_relaxed);
  }
}

}  // namespace shmq::detail
