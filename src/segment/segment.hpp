// Segment: creates, opens, validates and maps one queue's shared memory, and owns the
// member table. The geometry is validated once at open and then copied into this object:
// nothing the logic indexes with is re-read from shared memory afterwards.
#pragma once

#include <cstddef>
#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <atomic>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>

#include "core/dedup.hpp"
#include "segment/layout.hpp"
#include "shmq/error.hpp"
#include "shmq/queue.hpp"

namespace shmq::detail {

// What a member needs to act: its row, its owner id in slot words (row + generation tag)
// and its row's state word as it registered it (active, its generation).
struct MemberTicket {
  std::uint32_t row = 0;
  std::uint32_t owner = 0;
  std::uint64_t word = 0;
};

class Segment {
 public:
  // `base_position`: the first position of the ring (a queue rebuilt from its log keeps
  // its positions increasing); 0 for a new queue.
  static Result<std::shared_ptr<Segment>> create(std::string_view name,
                                                 const QueueOptions& options,
                                                 std::uint64_t base_position = 0,
                                                 std::span<const std::pair<std::uint64_t, std::uint64_t>> recovered_ids = {},
                                                 std::uint32_t topic_groups = 0,
                                                 const std::function<void(Segment&)>& before_publish = {});
  static Result<std::shared_ptr<Segment>> open(std::string_view name);
  static VoidResult remove(std::string_view name);

  // Owner and mode of /dev/shm/shmq.<name> as it is now (lstat: it need not be readable
  // by us), for ownership checks before a segment is adopted or removed. /dev/shm is
  // sticky: nobody but its owner (or root) can replace an entry once it is there.
  struct FileOwner {
    uid_t uid;
    gid_t gid;
    std::uint32_t mode;  // permission bits
    bool regular;
  };
  static Result<FileOwner> owner_of(std::string_view name);

  // "shmq.<name>": the object name under /dev/shm.
  static std::string object_name(std::string_view name);
  // Empty if `options` describe a valid geometry, else what is wrong.
  static std::string validate_options(const QueueOptions& options);

  Segment(const Segment&) = delete;
  Segment& operator=(const Segment&) = delete;
  ~Segment();

  SegmentHeader& header() const noexcept { return *header_; }
  // Precondition: i < max_members().
  MemberRow& member(std::uint32_t i) const noexcept { return members_[i]; }
  SlotHeader& slot(std::uint64_t pos) const noexcept {
    return *reinterpret_cast<SlotHeader*>(ring_ + (pos & mask_) * slot_size_);
  }
  std::byte* payload(std::uint64_t pos) const noexcept {
    return ring_ + (pos & mask_) * slot_size_ + payload_offset_;
  }
  // Checksummed queues only (checksummed()): the checksum word of the message whose first
  // slot is `pos` (layout.hpp, kChecksumSize).
  std::atomic<std::uint64_t>& checksum_word(std::uint64_t pos) const noexcept {
    return *reinterpret_cast<std::atomic<std::uint64_t>*>(ring_ + (pos & mask_) * slot_size_ +
                                                          kSlotHeaderSize);
  }

  const std::string& name() const noexcept { return name_; }
  // Who owns the segment: fstat at open (geteuid() for one we created). Not the header's
  // creator_uid, which anybody who may write the segment can change.
  uid_t owner_uid() const noexcept { return owner_uid_; }
  std::uint32_t slot_count() const noexcept { return slot_count_; }
  std::uint32_t slot_shift() const noexcept { return slot_shift_; }
  std::uint32_t slot_size() const noexcept { return slot_size_; }
  // Payload bytes per slot: slot_size - 64, and 8 fewer on a checksummed queue.
  std::uint32_t payload_size() const noexcept { return slot_size_ - payload_offset_; }
  std::uint32_t max_message_size() const noexcept { return max_message_size_; }
  std::uint32_t max_members() const noexcept { return max_members_; }
  std::uint32_t max_fragments() const noexcept { return max_fragments_; }
  std::size_t mapped_size() const noexcept { return size_; }

  // Policy (copied at open, like the geometry).
  // The run-time-changeable five (Queue::set_policy) are read from the header each time,
  // relaxed (see layout.hpp). They are durations and counts, never indexes: a scribbled
  // value changes timing, never memory safety.
  std::uint32_t lease_ms() const noexcept {
    return header_->lease_ms.load(std::memory_order_relaxed);
  }
  std::uint32_t max_deliveries() const noexcept {
    return header_->max_deliveries.load(std::memory_order_relaxed);
  }
  std::uint32_t ttl_ms() const noexcept { return header_->ttl_ms.load(std::memory_order_relaxed); }
  std::uint32_t backoff_initial_ms() const noexcept {
    return header_->backoff_initial_ms.load(std::memory_order_relaxed);
  }
  std::uint32_t backoff_max_ms() const noexcept {
    return header_->backoff_max_ms.load(std::memory_order_relaxed);
  }
  // Writes the five changeable policy fields (validated by the caller).
  void set_policy(const QueueOptions& o) noexcept;

  // True once the queue was removed (Queue::remove): blocking calls check it in their slow
  // paths only (before they sleep, and in the sleep's re-check) and return Status::closed.
  // Acquire: pairs with the release in mark_removed().
  bool removed() const noexcept {
    return header_->state.load(std::memory_order_acquire) ==
           static_cast<std::uint32_t>(SegmentState::removed);
  }
  // Sets state = removed and wakes every sleeper on the segment's futex words.
  void mark_removed() noexcept;
  // True if some member row has role persister, is active and its process lives (by pid
  // and start time; on a heartbeat-liveness queue: its heartbeat is younger than the
  // heartbeat timeout). Walks the member table: slow paths only (sync senders before they
  // sleep for a confirmation).
  bool persister_alive() const noexcept;
  std::uint32_t heartbeat_timeout_ms() const noexcept { return heartbeat_timeout_ms_; }
  std::uint32_t claim_timeout_ms() const noexcept { return claim_timeout_ms_; }
  bool heartbeat_liveness() const noexcept { return flags_ & kFlagHeartbeatLiveness; }
  bool dead_letter() const noexcept { return flags_ & kFlagDeadLetter; }
  // Messages carry a checksum (QueueOptions::checksum; core/checksum.hpp).
  bool checksummed() const noexcept { return flags_ & kFlagChecksum; }
  Durability durability() const noexcept { return durability_; }
  bool durable() const noexcept { return durability_ != Durability::none; }
  std::uint32_t flush_interval_ms() const noexcept { return flush_interval_ms_; }
  const std::string& data_dir() const noexcept { return data_dir_; }
  // The options this queue was created with.
  QueueOptions options() const;

  // Priorities (issue 13). max_priority: of the queue this segment belongs to (0 = none);
  // priority_level: which of its levels this segment is (0 = the queue itself).
  // The dedup table (issue 14); false when the queue has no dedup window.
  DedupTable& dedup() noexcept { return dedup_; }
  // Maps the dedup table's pages into this process now (a producer does it when it is
  // made): else each first touch of a page is a fault on the send path (~6,000 for a
  // 100,000-id window, several microseconds each here).
  void prefault_dedup() noexcept;
  const DedupTable& dedup() const noexcept { return dedup_; }
  // Topics (issue 15): true for a topic's segment; its group table (topic/topic_layout.hpp)
  // and its number of group rows. Queue::open refuses a topic, Topic::open a queue.
  bool is_topic() const noexcept { return max_groups_ != 0; }
  std::uint32_t max_groups() const noexcept { return max_groups_; }
  std::byte* topic_region() const noexcept { return topic_; }

  std::uint32_t max_priority() const noexcept { return max_priority_; }
  std::uint32_t priority_level() const noexcept { return priority_level_; }
  // A level > 0: its queue's base segment (level 0), mapped when this one was opened (null
  // if it did not exist then). Its consumers_wait line is where a priority consumer sleeps
  // and where the level bitmap lives.
  Segment* base() const noexcept { return base_ptr_.load(std::memory_order_acquire); }
  // The same, linking it first if it was not there when this segment was opened (a level
  // that shmqd rebuilt after a reboot before the base): at most one attempt per 100 ms.
  Segment* base_or_link() noexcept;
  // The name of level `level` of queue `base`: "<base>.p<level>" (level 0: base).
  static std::string level_name(std::string_view base, std::uint32_t level);
  // The level a queue named `name` with `max_priority` would be: p if `name` is
  // "<base>.p<p>" with 1 <= p <= max_priority, else 0; `base` gets the base name.
  static std::uint32_t level_of(std::string_view name, std::uint32_t max_priority,
                                std::string* base = nullptr);
  // The base queue's name (this segment's own name for level 0).
  std::string base_name() const;

  // Fragments (slots) a message of `size` bytes takes.
  std::uint32_t fragments_for(std::size_t size) const noexcept {
    const std::size_t p = payload_size();
    return size == 0 ? 1 : std::uint32_t((size + p - 1) / p);
  }

  // Claims a free member row for this process (a new generation of it). Fails with
  // no_space when every row is taken.
  Result<MemberTicket> register_member(Role role);
  // True while the row is still the member's: active, same generation.
  bool owns(const MemberTicket& m) const noexcept {
    return m.row < max_members_ &&
           members_[m.row].state.load(std::memory_order_acquire) == m.word;
  }
  // Frees our own row: retires its counters into the header totals. Does nothing if the
  // row is no longer ours (a watchdog took it: it frees it once the ring is clean).
  void unregister_member(const MemberTicket& m) noexcept;
  // Frees a row in state `leaving` (exactly that word: a late caller whose row was freed
  // and taken again since does nothing). Keeps the generation; the next taker bumps it.
  bool free_member(std::uint32_t index, std::uint64_t leaving) noexcept;

 private:
  Segment() = default;
  // Maps `size` bytes of the object open on `fd` (the caller keeps and closes `fd`) and
  // checks the header and geometry against that size.
  static Result<std::shared_ptr<Segment>> attach(std::string_view name, int fd,
                                                 std::size_t size, bool created);

  // Reads the header's geometry and policy once, checks them against the mapped size and
  // adopts them; empty on success, else what is wrong.
  std::string load_geometry();
  // Takes geometry and policy from validated values (never from shared memory).
  void adopt(const QueueOptions& o, std::uint32_t flags, std::uint32_t max_groups = 0) noexcept;
  // A level > 0: maps its base segment (base_), if it exists and is this queue's.
  void link_base() noexcept;

  std::string name_;
  uid_t owner_uid_ = 0;
  void* map_ = nullptr;  // the whole segment, `size_` bytes; unmapped by the destructor
  std::size_t size_ = 0;
  SegmentHeader* header_ = nullptr;
  MemberRow* members_ = nullptr;
  std::byte* ring_ = nullptr;
  DedupTable dedup_;
  std::byte* topic_ = nullptr;
  std::uint32_t max_groups_ = 0;
  std::uint32_t slot_count_ = 0;
  std::uint32_t slot_shift_ = 0;
  std::uint64_t mask_ = 0;
  std::uint32_t slot_size_ = 0;
  std::uint32_t max_message_size_ = 0;
  std::uint32_t max_members_ = 0;
  std::uint32_t max_fragments_ = 0;
  std::uint32_t heartbeat_timeout_ms_ = 0;
  std::uint32_t claim_timeout_ms_ = 0;
  std::uint32_t flags_ = 0;
  std::uint32_t payload_offset_ = kSlotHeaderSize;  // payload_offset(checksummed())
  Durability durability_ = Durability::none;
  std::uint32_t flush_interval_ms_ = 0;
  std::uint32_t max_priority_ = 0;
  std::uint32_t priority_level_ = 0;
  std::shared_ptr<Segment> base_;            // set once, under base_mutex_
  std::atomic<Segment*> base_ptr_{nullptr};  // base_.get(), published after base_ is set
  std::atomic<std::uint64_t> next_link_ns_{0};
  std::mutex base_mutex_;
  std::string data_dir_;
};

// Wakes a priority consumer for level `seg` (a level > 0 of a queue with priorities): sets
// the level's bit in its base's bitmap (if not set) and wakes the consumers sleeping on the
// base's consumers_wait. Called after a message was made deliverable in `seg` (sent,
// requeued) by a seq_cst RMW of its slot word. Does nothing for a level-0 segment.
void signal_level(Segment& seg) noexcept;

// Byte offsets of the member table and the ring, and the total size, for a geometry.
struct SegmentGeometry {
  std::uint64_t members_offset;
  std::uint64_t ring_offset;
  std::uint64_t dedup_offset;  // the dedup table (0: none)
  std::uint64_t topic_offset;  // a topic's group table (0: a queue)
  std::uint64_t total_size;
};
SegmentGeometry compute_geometry(std::uint32_t slot_count, std::uint32_t slot_size,
                                 std::uint32_t max_members, std::uint32_t dedup_count = 0,
                                 std::uint32_t topic_groups = 0) noexcept;

}  // namespace shmq::detail
