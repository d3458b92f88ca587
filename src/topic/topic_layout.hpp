// The shared-memory layout of a topic's group table (issue 15): an ABI between processes.
//
// A topic is a Segment (segment/layout.hpp) of kind `topic`: the usual header, member table
// and ring of slots (one message per slot), followed, 4 KiB aligned, by
//
//   TopicHeader                       (1024 bytes)
//   GroupRow[max_groups]              (1024 bytes each)
//   per group, 4 KiB aligned:  GroupWord[slot_count]    (8 bytes each)
//                              GroupTimer[slot_count]   (8 bytes each)
//
// The ring holds each message once. A group's state of position p lives in its own arrays
// at index p mod slot_count, so the groups never write the ring and never share a line with
// each other. Zero-filled memory is a valid empty table. Design and crash analysis:
// docs/design_notes.md, "Topics".
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "segment/layout.hpp"

namespace shmq::detail {

inline constexpr std::size_t kGroupNameField = 72;  // kMaxGroupNameLength (64) + NUL, padded

// GroupRow::state: status (low 8 bits) | policy << 8 | on_stall << 9 | generation << 16 |
// creator pid << 32 (creating rows only).
enum class GroupStatus : std::uint8_t {
  free = 0,
  active = 1,
  stalled = 2,    // reliable, held publishers back past its stall timeout, on_stall = hold
  detached = 3,   // reliable, stalled with on_stall = detach: no longer holds publishers
  creating = 4,   // a creator claimed the row and is writing it
};

inline constexpr std::uint64_t group_state(GroupStatus s, std::uint32_t policy,
                                           std::uint32_t on_stall, std::uint32_t generation,
                                           std::uint32_t pid = 0) {
  return std::uint64_t(s) | (std::uint64_t(policy & 1) << 8) | (std::uint64_t(on_stall & 1) << 9) |
         (std::uint64_t(generation & 0xffff) << 16) | (std::uint64_t(pid) << 32);
}
inline constexpr GroupStatus group_status(std::uint64_t w) { return GroupStatus(w & 0xff); }
inline constexpr std::uint32_t group_policy(std::uint64_t w) { return (w >> 8) & 1; }
inline constexpr std::uint32_t group_on_stall(std::uint64_t w) { return (w >> 9) & 1; }
inline constexpr std::uint32_t group_generation(std::uint64_t w) { return (w >> 16) & 0xffff; }
inline constexpr std::uint32_t group_creator(std::uint64_t w) { return std::uint32_t(w >> 32); }
inline constexpr std::uint64_t with_group_status(std::uint64_t w, GroupStatus s) {
  return (w & ~std::uint64_t{0xff}) | std::uint64_t(s);
}
// Rows that take part in delivery (subscribers may attach, publishers may wait for them).
inline constexpr bool group_live(std::uint64_t w) {
  const auto s = group_status(w);
  return s == GroupStatus::active || s == GroupStatus::stalled;
}

struct alignas(kFalseSharingRange) TopicHeader {
  std::uint32_t history;        // messages a group starting at `earliest` gets (<= slots)
  std::uint32_t max_groups;
  std::uint64_t retain_bytes;   // durable topics: retention of the log
  std::uint64_t retain_age_s;
  std::uint8_t pad0[kFalseSharingRange - 24];
  // Bumped (seq_cst) after a group row changes status: publishers recompute their limit.
  std::atomic<std::uint64_t> groups_epoch;
  std::uint8_t pad1[kFalseSharingRange - 8];
  std::atomic<std::uint64_t> holes;           // claims turned into holes (dead/stalled publishers)
  std::atomic<std::uint64_t> retired_published;
  // Durable topics: the oldest position the retained log holds (written by the persister;
  // a hint for start positions: a reader finds out from the log itself).
  std::atomic<std::uint64_t> log_first;
  std::uint8_t pad2[1024 - 3 * kFalseSharingRange + kFalseSharingRange - 24];
};
static_assert(sizeof(TopicHeader) == 1024);

struct alignas(kFalseSharingRange) GroupRow {
  // --- identity: written by the creator before the row is published active ---------------
  std::atomic<std::uint64_t> state;           // group_state(...)
  std::atomic<std::uint64_t> stall_timeout_ms;
  char name[kGroupNameField];
  std::atomic<std::uint64_t> created_ns;      // CLOCK_MONOTONIC
  std::atomic<std::uint64_t> blocked_since_ns;  // a publisher first waited for it (0: not)
  std::uint8_t pad0[kFalseSharingRange - 16 - kGroupNameField - 16];
  // --- cursors: hints advanced by CAS; the group words are the truth ----------------------
  CursorLine dispatch;  // next position to look at
  CursorLine floor;     // every position below is done for the group
  // Bumped after a message is given back (nack, lease expiry, dead subscriber): consumers
  // that saw another value scan [floor, dispatch) for it.
  CursorLine requeue_epoch;
  // --- counters (approximate; written by its subscribers and healers) ---------------------
  struct alignas(kFalseSharingRange) Counters {
    std::atomic<std::uint64_t> delivered;
    std::atomic<std::uint64_t> acks;
    std::atomic<std::uint64_t> redelivered;
    std::atomic<std::uint64_t> missed;
    std::atomic<std::uint64_t> dead_lettered;
    std::uint8_t pad[kFalseSharingRange - 40];
  } counters;
  std::uint8_t pad1[1024 - 5 * kFalseSharingRange];
};
static_assert(sizeof(GroupRow) == 1024);
static_assert(std::is_trivially_destructible_v<GroupRow>);

// The group's word for position p (index p mod N): lap of p (32) | state (4) | owner (16) |
// deliveries (12). A word whose lap is older than p's lap says "not yet taken by the group".
enum class GroupSlot : std::uint8_t {
  none = 0,      // not taken at this lap (zero memory)
  held = 1,      // delivered to subscriber `owner`
  done = 2,      // acked, dead-lettered, a hole passed, or lost (lossy, overwritten)
  requeued = 3,  // given back: any subscriber of the group may take it (after its timer)
};
inline constexpr std::uint64_t gword(std::uint64_t lap, GroupSlot s, std::uint32_t owner,
                                     std::uint32_t deliveries) {
  return ((lap & 0xffffffffull) << 32) | (std::uint64_t(std::uint8_t(s) & 0xf) << 28) |
         (std::uint64_t(owner & 0xffff) << 12) | std::uint64_t(deliveries > 0xfff ? 0xfff : deliveries);
}
inline constexpr std::uint64_t gword_lap(std::uint64_t w) { return w >> 32; }
inline constexpr GroupSlot gword_state(std::uint64_t w) { return GroupSlot((w >> 28) & 0xf); }
inline constexpr std::uint32_t gword_owner(std::uint64_t w) { return (w >> 12) & 0xffff; }
inline constexpr std::uint32_t gword_deliveries(std::uint64_t w) { return w & 0xfff; }

// The group's timer of position p: lap of p (low 24 bits) | kind (1) | CLOCK_MONOTONIC ms
// (39 bits). kind lease: the holder's lease ends then; kind due: a requeued message may be
// taken again from then. A timer of another lap is not this delivery's (never written yet).
inline constexpr std::uint64_t kTimerLease = 1;
inline constexpr std::uint64_t kTimerDue = 0;
inline constexpr std::uint64_t timer_word(std::uint64_t lap, std::uint64_t kind, std::uint64_t ms) {
  return ((lap & 0xffffff) << 40) | ((kind & 1) << 39) | (ms & ((std::uint64_t{1} << 39) - 1));
}
inline constexpr std::uint64_t timer_lap(std::uint64_t t) { return t >> 40; }
inline constexpr std::uint64_t timer_kind(std::uint64_t t) { return (t >> 39) & 1; }
inline constexpr std::uint64_t timer_ms(std::uint64_t t) { return t & ((std::uint64_t{1} << 39) - 1); }

inline constexpr std::uint64_t topic_align(std::uint64_t v) { return (v + 4095) & ~std::uint64_t{4095}; }
inline constexpr std::uint64_t group_arrays_bytes(std::uint32_t slot_count) {
  return topic_align(std::uint64_t(slot_count) * 16);
}
inline constexpr std::uint64_t group_arrays_offset(std::uint32_t max_groups) {
  return topic_align(sizeof(TopicHeader) + std::uint64_t(max_groups) * sizeof(GroupRow));
}
inline constexpr std::uint64_t topic_region_bytes(std::uint32_t slot_count, std::uint32_t max_groups) {
  return group_arrays_offset(max_groups) + std::uint64_t(max_groups) * group_arrays_bytes(slot_count);
}

}  // namespace shmq::detail
