// The deduplication table of a queue (issue 14): which ids were sent within the window,
// and where. It lives in the segment after the ring; the protocol and its crash analysis
// are in docs/design_notes.md, "Deduplication", and docs/slot_state_machine.md.
//
//   DedupHeader (256 bytes) | DedupBucket[bucket_count] (512 bytes each)
//
// An id lives only in its bucket (hash of the id), in one of 15 ways. A way is
//   void                       free for reuse
//   committed(pos)             "the id was sent at position pos", true unless pos turns
//                              out to be a hole; inserted by the sender while it holds its
//                              claim of pos, before it publishes the message
//   recovered                  "the id was sent" (rebuilt from the log after a reboot)
// and is live while it is within the window: its position is among the last `count`
// positions of the ring (tail - pos <= count; a recovered way keeps the position it was
// logged at, which the rebuilt ring continues from), and, with `seconds`, it was admitted
// less than `seconds` ago. Counting positions, not inserts, keeps the table free of any
// shared counter and makes the window exactly what the log retains for a reboot. Whether a committed way still stands is read from the slot of pos
// (verify): the slot says published, in flight, or a hole — see classify().
//
// Inserts and voids of a bucket are serialised by its lock word (owner id + 1 of the
// member holding it); a holder whose member row is no longer its incarnation (dead,
// reclaimed by the watchdog) has its lock broken. Every write under the lock leaves the
// bucket valid at every instruction (a way's word is voided first and written last).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "segment/layout.hpp"

namespace shmq::detail {

class Segment;

inline constexpr std::uint32_t kDedupWays = 15;

struct alignas(kFalseSharingRange) DedupHeader {
  std::atomic<std::uint64_t> sessions;       // idempotent producer ids handed out
  std::atomic<std::uint64_t> duplicates;     // sends refused as duplicates
  std::atomic<std::uint64_t> evicted_early;  // live ids evicted from a full bucket
  std::atomic<std::uint64_t> voided;         // ways of holes voided (sender died, repaired)
  std::uint8_t pad[256 - 32];
};
static_assert(sizeof(DedupHeader) == 256);

// A lookup reads the first two lines (lock and ids) and, on a match, one word; an insert
// the words too; the times only with a time window.
struct alignas(kFalseSharingRange) DedupBucket {
  std::atomic<std::uint64_t> lock;  // 0 = free; else the holder's owner id + 1
  std::atomic<std::uint64_t> ids[kDedupWays];
  std::atomic<std::uint64_t> words[kDedupWays];  // state | position
  std::atomic<std::uint64_t> times[kDedupWays];  // CLOCK_REALTIME_COARSE ns when admitted
  std::uint8_t pad[384 - 8 - 3 * 8 * kDedupWays];
};
static_assert(sizeof(DedupBucket) == 384);

// A way's word: state in the top 2 bits, a position below.
inline constexpr std::uint64_t kWayVoid = 0;
inline constexpr std::uint64_t kWayCommitted = std::uint64_t{1} << 62;
inline constexpr std::uint64_t kWayRecovered = std::uint64_t{2} << 62;
inline constexpr std::uint64_t kWayStateMask = std::uint64_t{3} << 62;
inline constexpr std::uint64_t kWayPositionMask = ~kWayStateMask;

// Buckets for a window of `count` ids: a power of two >= count / 2 (at most 2 live ids per
// bucket on average; a bucket overflows its 15 ways with probability below 1e-9).
std::uint64_t dedup_buckets(std::uint32_t count) noexcept;
std::uint64_t dedup_table_bytes(std::uint32_t count) noexcept;

// What a send learns about its id.
enum class Admission : std::uint8_t {
  admitted,   // inserted as committed(pos): publish now (or withdraw)
  duplicate,  // sent before within the window: *original = its position (0: not known)
  in_flight,  // another send of the id holds its claim and has not published yet
  lost,       // admit: our claim of pos is no longer ours (repaired, we were evicted)
};

// What the slot of a committed way says about it (under no lock: a pure read).
enum class WayVerdict : std::uint8_t { stands, hole, in_flight };

class DedupTable {
 public:
  DedupTable() = default;
  DedupTable(Segment& seg, std::byte* base, std::uint32_t count, std::uint32_t seconds) noexcept;
  explicit operator bool() const noexcept { return buckets_ != nullptr; }

  DedupHeader& header() const noexcept { return *header_; }
  std::uint32_t count() const noexcept { return count_; }
  std::uint32_t seconds() const noexcept { return seconds_; }

  // Lock-free look before claiming a slot: duplicate (with *original) if a live way names
  // the id and stands, in_flight if it is in flight, else admitted (= "go on", nothing
  // inserted). Advisory: admit() decides.
  Admission peek(std::uint64_t id, std::uint64_t* original) const noexcept;
  // Under the bucket lock: the id's live standing way decides (duplicate / in_flight);
  // else a way is inserted as committed(pos) by `owner`, and admitted is returned.
  Admission admit(std::uint64_t id, std::uint64_t pos, std::uint32_t owner,
                  std::uint64_t* original) noexcept;
  // The sender gives its way back (its publish failed: the claim was repaired).
  void withdraw(std::uint64_t id, std::uint64_t pos, std::uint32_t owner) noexcept;
  // The watchdog, before it frees the hole of a dead sender's claim at pos: voids the
  // committed way naming pos (in the bucket of the slot header's id). false: that bucket's
  // lock is held by a live process (stopped?) for now; free the hole at a later tick.
  bool forget_position(std::uint64_t pos, std::uint32_t owner) noexcept;
  static constexpr std::uint32_t kForgetYields = 64;
  // Segment creation, before the segment is published (no lock): an id recovered from the
  // log after a reboot, logged at `pos` (oldest first).
  void restore(std::uint64_t id, std::uint64_t pos) noexcept;

  WayVerdict classify(std::uint64_t id, std::uint64_t word) const noexcept;
  DedupBucket& bucket_of(std::uint64_t id) const noexcept;
  WayVerdict classify_word(const SlotHeader& slot, std::uint64_t id, std::uint64_t pos,
                           std::uint64_t w) const noexcept;

 private:
  // Live: in the last `count` positions ([tail - count, tail]; a way past the tail, a
  // scribbled one, is not), and with a time window admitted less than `seconds` ago.
  bool live_way(const DedupBucket& b, std::uint32_t w, std::uint64_t word, std::uint64_t tail,
                std::uint64_t now) const noexcept {
    if (word == kWayVoid) return false;
    const std::uint64_t pos = word & kWayPositionMask;
    if (pos > tail || tail - pos > count_) return false;
    if (seconds_ == 0) return true;
    const std::uint64_t t = b.times[w].load(std::memory_order_relaxed);
    return now <= t || now - t < std::uint64_t(seconds_) * 1'000'000'000ull;
  }
  std::uint64_t tail() const noexcept;
  std::uint32_t pick_way(const DedupBucket& b, std::uint64_t now_pos, std::uint64_t now) noexcept;
  void write_way(DedupBucket& b, std::uint32_t w, std::uint64_t id, std::uint64_t word,
                 std::uint64_t now) const noexcept;
  // Returns the lock word written, for unlock: a CAS from it, so a holder whose lock was
  // broken never releases the next holder's.
  // max_yields: give up (return 0) after that many yields to a live holder.
  std::uint64_t lock(DedupBucket& b, std::uint32_t owner,
                     std::uint32_t max_yields = UINT32_MAX) const noexcept;
  static void unlock(DedupBucket& b, std::uint64_t mine) noexcept {
    b.lock.compare_exchange_strong(mine, 0, std::memory_order_release, std::memory_order_relaxed);
  }

  Segment* seg_ = nullptr;
  DedupHeader* header_ = nullptr;
  DedupBucket* buckets_ = nullptr;
  std::uint64_t mask_ = 0;
  std::uint32_t count_ = 0;
  std::uint32_t seconds_ = 0;
};

}  // namespace shmq::detail
