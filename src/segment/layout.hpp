// The shared-memory segment layout: an ABI between processes, fixed at compile time.
//
//   offset 0                 SegmentHeader (identity, geometry, policy, cursors; 2048 bytes)
//   header.members_offset    MemberRow[max_members]            (128 bytes each)
//   header.ring_offset       slot[slot_count], slot_size bytes each:
//                              SlotHeader (64 bytes) + payload (slot_size - 64 bytes;
//                              checksummed queues: checksum (8) + slot_size - 72 bytes)
//   (4 KiB aligned)          queues with a dedup window: the dedup table (core/dedup.hpp)
//
// Every field is fixed-width; every atomic is always lock-free; fields written by
// different roles sit on different 128-byte lines (adjacent-line prefetch pairs 64-byte
// lines on x86). Nothing here is trusted on read: the opener re-derives offsets and sizes
// from the geometry and checks them against the size fstat reports (see segment.cpp).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace shmq::detail {

inline constexpr std::size_t kCacheLine = 64;
inline constexpr std::size_t kFalseSharingRange = 128;

inline constexpr std::uint64_t kMagic = 0x31'4f'45'55'51'4d'48'53ull;  // "SHMQUEO1" LE
inline constexpr std::uint32_t kLayoutVersion = 6;  // 2: member generations, 32-bit laps;
                                                    // 3: relocating states (issue 11);
                                                    // 4: priority levels (issue 13);
                                                    // 5: dedup table (issue 14);
                                                    // 6: topics (issue 15)

inline constexpr std::uint32_t kMinSlots = 2;
inline constexpr std::uint32_t kMaxSlots = 1u << 24;
inline constexpr std::uint32_t kMinSlotSize = 128;
inline constexpr std::uint32_t kMaxSlotSize = 1u << 20;
inline constexpr std::uint32_t kMaxMembers = 255;  // owner field is 8 bits, 0xFF = none
inline constexpr std::uint32_t kMaxFragments = 4095;  // aux field is 12 bits
inline constexpr std::size_t kMaxNameLength = 200;
inline constexpr std::size_t kMaxDataDirLength = 480;

// Segment state (header.state).
enum class SegmentState : std::uint32_t { active = 1, removed = 2 };

// What a segment holds (header.kind).
enum class SegmentKind : std::uint32_t { queue = 0, topic = 1 };
inline constexpr std::uint32_t kMaxTopicGroups = 64;

struct alignas(kFalseSharingRange) CursorLine {
  std::atomic<std::uint64_t> value;
  std::uint8_t pad[kFalseSharingRange - sizeof(std::atomic<std::uint64_t>)];
};
static_assert(sizeof(CursorLine) == kFalseSharingRange);

// The persister's cursors (see SegmentHeader::persisted): `synced` lies in what was the
// padding of a CursorLine, so a segment made before it existed reads 0 there ("nothing
// known to be on disk"), which only makes a dead-letter check wait for the next fdatasync.
struct alignas(kFalseSharingRange) PersistedLine {
  std::atomic<std::uint64_t> value;   // in the log (see SegmentHeader::persisted)
  std::atomic<std::uint64_t> synced;  // on disk
  std::uint8_t pad[kFalseSharingRange - 2 * sizeof(std::atomic<std::uint64_t>)];
};
static_assert(sizeof(PersistedLine) == kFalseSharingRange);

// A futex word and the bitmap of members sleeping on it (bit i = member row i).
struct alignas(kFalseSharingRange) WaitLine {
  std::atomic<std::uint32_t> futex;  // bumped before every wake
  // consumers_wait of a queue with priorities, in its base segment (level 0) only: bit p
  // set = level p (1 .. 31) may have a deliverable message. A hint, set after a message is
  // made deliverable in level p (sent, requeued), cleared by a consumer that found level p
  // empty (and then looks once more). Unused (0) elsewhere. See design note 20.
  std::atomic<std::uint32_t> levels;
  std::atomic<std::uint64_t> waiting[4];  // 256 bits: one per member row
  std::uint8_t pad[kFalseSharingRange - 8 - 4 * 8];
};
static_assert(sizeof(WaitLine) == kFalseSharingRange);

// The requeue epoch and the top word of the requeue map (ring/requeue_map.hpp): both are
// written by whoever puts a message back behind dispatch, read by consumers.
struct alignas(kFalseSharingRange) RequeueLine {
  std::atomic<std::uint64_t> value;        // the epoch: bumped after every requeue into ready
  std::atomic<std::uint64_t> requeue_top;  // the map's top level; 0 = nothing marked
  // When consumers must next look for a due delayed message (core/slot_ops.hpp,
  // announce_delayed): a hint written by whoever makes a slot delayed (instead of bumping
  // the epoch, which made every consumer walk every delayed message at each delayed send)
  // and by consumers after a scan. Any value is safe: a low one costs a scan.
  std::atomic<std::uint64_t> next_due;
  std::uint8_t pad[kFalseSharingRange - 3 * sizeof(std::atomic<std::uint64_t>)];
};
static_assert(sizeof(RequeueLine) == kFalseSharingRange);
static_assert(offsetof(RequeueLine, value) == 0);

// Counters of what the watchdog (and dead-lettering consumers) did; rarely written.
struct alignas(kFalseSharingRange) WatchdogCounters {
  std::atomic<std::uint64_t> members_reclaimed;  // dead members whose rows were freed
  std::atomic<std::uint64_t> redelivered;        // held messages taken back (death, lease)
  std::atomic<std::uint64_t> leases_expired;
  std::atomic<std::uint64_t> holes_repaired;     // claims of dead or stalled producers
  std::atomic<std::uint64_t> dead_lettered;      // moved to <queue>.dlq, any reason
  std::atomic<std::uint64_t> expired;            // TTL expiries (also in dead_lettered)
  std::atomic<std::uint64_t> dead_letter_failed; // could not be moved (dlq full): requeued
  // Checksummed queues: messages that failed their checksum when taken from the ring (to be
  // delivered, or to be dead-lettered for another reason): dead-lettered with reason
  // corrupt, or dropped.
  std::atomic<std::uint64_t> corrupt;
  std::uint8_t pad[kFalseSharingRange - 64];
};
static_assert(sizeof(WatchdogCounters) == kFalseSharingRange);

inline constexpr std::uint32_t kFlagHeartbeatLiveness = 1u << 0;  // do not trust pids
inline constexpr std::uint32_t kFlagDeadLetter = 1u << 1;         // dead-letter, not drop
inline constexpr std::uint32_t kFlagChecksum = 1u << 2;           // messages carry a checksum

struct SegmentHeader {
  // --- identity and geometry: written once by the creator, then read-only -------------
  // magic and version are stored last, with release: an opener that reads them with
  // acquire sees every other field initialised.
  std::atomic<std::uint64_t> magic;
  std::atomic<std::uint32_t> version;
  std::uint32_t header_size;         // sizeof(SegmentHeader)
  std::uint64_t segment_size;        // bytes the creator allocated
  std::uint32_t slot_count;          // power of two
  std::uint32_t slot_shift;          // log2(slot_count)
  std::uint32_t slot_size;           // bytes per slot including SlotHeader
  std::uint32_t max_message_size;
  std::uint32_t max_members;
  std::uint32_t max_fragments;       // max slots one message may span
  std::uint64_t members_offset;
  std::uint64_t ring_offset;
  std::uint32_t creator_uid;
  std::uint32_t mode;
  std::uint64_t created_unix_ns;
  std::atomic<std::uint32_t> state;  // SegmentState
  std::uint32_t reserved0;
  char name[kMaxNameLength + 8];     // NUL-terminated queue name

  // --- totals of members that have left (their rows are reused); rarely written --------
  std::atomic<std::uint64_t> retired_sent;
  std::atomic<std::uint64_t> retired_received;
  std::atomic<std::uint64_t> retired_acked;
  std::atomic<std::uint64_t> retired_requeued;

  // --- policy (QueueOptions) -------------------------------------------------------------
  // The first five may be changed at run time (Queue::set_policy): they are atomics read
  // relaxed where they are used. Relaxed is enough: each is one self-contained number (a
  // duration or a count), no other memory is published with it, and a reader that sees the
  // old value for a moment acts as if it had run just before the change.
  std::atomic<std::uint32_t> lease_ms;            // visibility timeout of a delivery; 0 = none
  std::atomic<std::uint32_t> max_deliveries;      // dead-letter after this many; 0 = unlimited
  std::atomic<std::uint32_t> ttl_ms;              // dead-letter a message older than this; 0 = never
  std::atomic<std::uint32_t> backoff_initial_ms;  // delay of a plain nack's redelivery; 0 = none
  std::atomic<std::uint32_t> backoff_max_ms;      // cap of the doubling backoff
  // Fixed at create:
  std::uint32_t heartbeat_timeout_ms;  // liveness by heartbeat (pid namespaces)
  std::uint32_t claim_timeout_ms;      // a claim older than this is a stalled producer's
  std::uint32_t flags;                 // kFlag*
  // Priorities (issue 13): the queue's max_priority (0 = none), and which level this
  // segment is (0: the queue itself; p > 0: the segment "<queue>.p<p>").
  std::uint32_t max_priority;
  std::uint32_t priority_level;
  // Deduplication (issue 14): the window's count of ids (0 = no dedup table) and time
  // (seconds, 0 = count only). The table follows the ring (core/dedup.hpp).
  std::uint32_t dedup_count;
  std::uint32_t dedup_seconds;
  // Topics (issue 15): kind 0 = a queue, 1 = a topic, whose group table (topic/layout.hpp)
  // follows the ring; max_groups its rows (0 for a queue).
  std::uint32_t kind;
  std::uint32_t max_groups;

  // --- cursors: hints advanced by CAS; the slot words are the truth --------------------
  CursorLine tail;           // producers: next head position to claim
  CursorLine dispatch;       // consumers: next position to look at
  RequeueLine requeue_epoch;  // bumped after a message is put back behind dispatch
  WaitLine consumers_wait;   // consumers sleep here for data (futex), producers wake
  WaitLine producers_wait;   // producers sleep here for space, consumers wake

  // --- the watchdog ---------------------------------------------------------------------
  // The elected watchdog: its member row + 1, 0 = none. Only the elected one repairs, so
  // a member row is never freed (and reused) while another watchdog still walks the ring
  // for slots that row owned.
  CursorLine watchdog;
  WatchdogCounters watchdog_counters;

  // --- durability (async, sync) -----------------------------------------------------------
  // Written only by the persister. Every position below `persisted` is in the log (or was
  // a hole, or was released before it was logged): on a sync queue on disk (published
  // after fdatasync returned), on an async queue written to the log file (after write(2)
  // returned: it survives any process crash; fdatasync follows within the flush interval).
  // Producers of durable queues reuse a slot only once its previous message is below it;
  // sync senders wait on persist_wait until their message is. Every position below
  // `persisted.synced` is on disk (published after fdatasync; equal to `persisted` on a sync
  // queue): what the dead-letter check of the queue whose messages a DLQ took waits for.
  PersistedLine persisted;
  WaitLine persist_wait;
  std::uint32_t durability;        // Durability
  std::uint32_t flush_interval_ms;
  std::uint64_t base_position;     // first position of this segment (rebuilt from a log)
  char data_dir[kMaxDataDirLength + 8];
  std::uint8_t pad2[512 - 16 - (kMaxDataDirLength + 8)];
};

static_assert(sizeof(SegmentHeader) == 2048);
static_assert(offsetof(SegmentHeader, persisted) == 1280);
static_assert(offsetof(SegmentHeader, durability) == 1536);
static_assert(offsetof(SegmentHeader, magic) == 0);
static_assert(offsetof(SegmentHeader, version) == 8);
static_assert(offsetof(SegmentHeader, slot_count) == 24);
static_assert(offsetof(SegmentHeader, name) == 88);
static_assert(offsetof(SegmentHeader, retired_sent) == 296);
static_assert(offsetof(SegmentHeader, lease_ms) == 328);
static_assert(offsetof(SegmentHeader, max_deliveries) == 332);
static_assert(offsetof(SegmentHeader, backoff_max_ms) == 344);
static_assert(offsetof(SegmentHeader, flags) == 356);
static_assert(offsetof(SegmentHeader, max_priority) == 360);
static_assert(offsetof(SegmentHeader, dedup_count) == 368);
static_assert(offsetof(SegmentHeader, kind) == 376);
static_assert(offsetof(SegmentHeader, watchdog) == 1024);
static_assert(offsetof(SegmentHeader, tail) == 384);
static_assert(offsetof(SegmentHeader, dispatch) == 512);
static_assert(offsetof(SegmentHeader, requeue_epoch) == 640);
static_assert(offsetof(SegmentHeader, requeue_epoch) + offsetof(RequeueLine, requeue_top) == 648);
static_assert(offsetof(SegmentHeader, consumers_wait) == 768);
static_assert(offsetof(SegmentHeader, producers_wait) == 896);
static_assert(std::is_standard_layout_v<SegmentHeader>);

// Member row status (low 8 bits of MemberRow::state).
//   free(g) -> joining(g+1) (a registering process claimed it: role, pid and the next
//   generation are in the word; it is writing start time, heartbeat and counters) ->
//   active(g+1) (published with release once they are written, so no watchdog ever judges
//   a new member by its predecessor's heartbeat) -> leaving(g+1) (the member closes, or a
//   watchdog found it dead or evicted it) -> free(g+1) once nothing in the ring names it.
// The generation changes only when the row is taken, so each incarnation of a row has its
// own; slot words carry its low 8 bits in the owner id (slot_word.hpp). A member compares
// the row's whole word with the one it registered before it acts: any difference means
// its row was taken from it (Status::evicted).
enum class MemberStatus : std::uint8_t { free = 0, active = 1, leaving = 2, joining = 3 };
enum class Role : std::uint8_t { none = 0, producer = 1, consumer = 2, watchdog = 3, persister = 4,
                                   publisher = 5, subscriber = 6 };

// One producer or consumer. `state` packs status, role and pid into one word so that a
// claim (CAS free -> active) and a release are single atomic stores a crash cannot tear.
struct alignas(kFalseSharingRange) MemberRow {
  std::atomic<std::uint64_t> state;         // status | role << 8 | generation << 16 | pid << 32
  std::atomic<std::uint64_t> start_time;    // /proc/<pid>/stat field 22; 0 = not yet known
  std::atomic<std::uint64_t> heartbeat_ns;  // CLOCK_MONOTONIC, written by the member
  std::atomic<std::uint64_t> sent;          // counters written only by the member
  std::atomic<std::uint64_t> received;
  std::atomic<std::uint64_t> acked;
  std::atomic<std::uint64_t> requeued;
  std::atomic<std::uint64_t> registered_ns;
  std::uint8_t pad[kFalseSharingRange - 64];
};
static_assert(sizeof(MemberRow) == 128);

inline constexpr std::uint64_t member_state(MemberStatus s, Role r, std::uint32_t pid,
                                            std::uint32_t generation) {
  return std::uint64_t(s) | (std::uint64_t(r) << 8) |
         (std::uint64_t(generation & 0xffff) << 16) | (std::uint64_t(pid) << 32);
}
inline constexpr MemberStatus member_status(std::uint64_t w) { return MemberStatus(w & 0xff); }
inline constexpr Role member_role(std::uint64_t w) { return Role((w >> 8) & 0xff); }
inline constexpr std::uint32_t member_generation(std::uint64_t w) {
  return std::uint32_t((w >> 16) & 0xffff);
}
inline constexpr std::uint32_t member_pid(std::uint64_t w) { return std::uint32_t(w >> 32); }
// The same word with another status (role, pid and generation kept).
inline constexpr std::uint64_t with_status(std::uint64_t w, MemberStatus s) {
  return (w & ~std::uint64_t{0xff}) | std::uint64_t(s);
}

// The first 64 bytes of every slot. `word` is the slot's whole state (slot_word.hpp); the
// other fields describe the message and are written by the slot's current owner before it
// publishes with a release store of `word`. They are atomics (relaxed) only because other
// processes may read them while they change (stats, a hostile writer); no ordering rides
// on them.
struct alignas(kCacheLine) SlotHeader {
  std::atomic<std::uint64_t> word;
  std::atomic<std::uint64_t> position;        // producer: the message's position
  std::atomic<std::uint64_t> id;              // producer: message id
  std::atomic<std::uint32_t> length;          // producer: total message length
  std::atomic<std::uint32_t> delivery_count;  // consumer: deliveries so far
  std::atomic<std::uint64_t> enqueued_ns;     // producer: CLOCK_MONOTONIC (coarse) at commit
  // producer: 0, or for a message republished from the log into a rebuilt ring, 1 + the
  // position it was logged at before (its origin): the persister logs it as a copy.
  std::atomic<std::uint64_t> origin;
  // The deadline of the slot's current state, CLOCK_MONOTONIC (coarse): for held, the
  // lease (0 = the consumer has not written it yet); for delayed, when it may be delivered.
  // Written only by the slot's holder, always by CAS from the value it read before it
  // claimed the slot or after it checked the word (a holder stopped past its lease must not
  // overwrite the next holder's): the lease right after its claim, a delay before the CAS
  // that makes the slot delayed. Meaningless while ready (it keeps the last value): the
  // watchdog expires a lease only a lease after its first sight of the held word, and only
  // once the deadline has passed too. delivery_count is written the same way.
  std::atomic<std::uint64_t> deadline_ns;
  // Not this slot's: a word of the requeue map's lower levels (ring/requeue_map.hpp), in
  // the headers of slots 0 .. about N/63. Only ever changed by fetch_or / fetch_and.
  std::atomic<std::uint64_t> map_word;
};
static_assert(sizeof(SlotHeader) == 64);

// SlotHeader::length: the low 31 bits are the message's length in bytes (max_message_size
// is below 2^31, Segment::validate_options); the top bit says that the message's bytes
// start with a properties block (include/shmq/properties.hpp, design note 22):
// [properties block][payload], the block's first u32 its own size. A message without
// properties has the bit clear and is byte for byte what it was before properties existed.
inline constexpr std::uint32_t kLengthHasProperties = std::uint32_t{1} << 31;
inline constexpr std::uint32_t kLengthMask = kLengthHasProperties - 1;
static_assert(offsetof(SlotHeader, word) == 0);
static_assert(offsetof(SlotHeader, length) == 24);

static_assert(std::atomic<std::uint64_t>::is_always_lock_free);
static_assert(std::atomic<std::uint32_t>::is_always_lock_free);
static_assert(sizeof(std::atomic<std::uint64_t>) == 8);
static_assert(sizeof(std::atomic<std::uint32_t>) == 4);
// Zero-filled memory is a valid "all free" state for every structure above.
static_assert(std::is_trivially_destructible_v<SegmentHeader>);
static_assert(std::is_trivially_destructible_v<MemberRow>);
static_assert(std::is_trivially_destructible_v<SlotHeader>);

inline constexpr std::size_t kSlotHeaderSize = sizeof(SlotHeader);

// Queues created with QueueOptions::checksum (kFlagChecksum) keep a message's checksum
// (core/checksum.hpp) in the 8 bytes after its first slot's header, before the payload:
//   slot = SlotHeader (64) | checksum (u64, atomic, written by the producer before it
//          publishes the message; meaningless in continuation slots) | payload
// so such a slot carries slot_size - 72 payload bytes, and the checksum shares the payload's
// first cache line. (The slot header has no spare word: its last one holds the requeue map.)
inline constexpr std::size_t kChecksumSize = 8;
inline std::size_t payload_offset(bool checksummed) {
  return kSlotHeaderSize + (checksummed ? kChecksumSize : 0);
}
static_assert(kSlotHeaderSize % alignof(std::atomic<std::uint64_t>) == 0);

}  // namespace shmq::detail
