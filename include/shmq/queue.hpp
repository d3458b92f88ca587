// A queue: one shared-memory segment named /dev/shm/shmq.<name>, created once and opened
// by any number of producer and consumer processes.
//
//   auto q = shmq::Queue::create("orders", {.slot_count = 1024}).value();
//   auto producer = q.producer().value();
//   auto consumer = q.consumer().value();
//
// A Queue handle is cheap to copy (it shares the mapping). Producers and consumers keep the
// mapping alive on their own, so they may outlive the Queue they came from.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "shmq/consumer.hpp"
#include "shmq/error.hpp"
#include "shmq/producer.hpp"
#include "shmq/properties.hpp"

namespace shmq {

class Producer;
class Consumer;

namespace detail {
class Segment;
}

// How far a message is made durable before Producer::send returns.
enum class Durability : std::uint8_t {
  none = 0,   // memory only: lost with the host (or with /dev/shm)
  async = 1,  // written to the queue's log by shmqd soon after it is sent (group commit)
  sync = 2,   // send returns once the message is on disk (fdatasync): publisher confirms
};
std::string_view to_string(Durability d) noexcept;

// Geometry and policy, fixed when the queue is created.
struct QueueOptions {
  // Number of slots in the ring; a power of two, 2 .. 2^24.
  std::uint32_t slot_count = 1024;
  // Bytes per slot including its 64-byte header; a multiple of 64, 128 .. 1 MiB.
  // Messages up to slot_size - 64 bytes (slot_size - 72 with `checksum`) take one slot;
  // larger ones span consecutive slots.
  std::uint32_t slot_size = 256;
  // Largest message accepted; 0 means one slot's payload. Must fit in the ring
  // (at most min(slot_count, 4095) slots' payload).
  std::uint32_t max_message_size = 0;
  // Producer and consumer rows in the member table; 1 .. 255.
  std::uint32_t max_members = 64;
  // File mode of the segment: 0600 (owner only) or 0660 (owner and group). Exact, whatever
  // the umask.
  std::uint32_t mode = 0600;

  // --- delivery policy (enforced by consumers and the watchdog) -------------------------
  // Visibility timeout: a delivered message not acked within this time is taken back by
  // the watchdog and redelivered (Consumer::extend_lease pushes it out). 0 = no lease.
  std::chrono::milliseconds lease{30'000};
  // A message delivered this many times and given back again (nack, lease expiry, death of
  // its consumer) goes to the dead-letter queue "<name>.dlq" instead. 0 = unlimited.
  std::uint32_t max_deliveries = 20;
  // A message older than this when it would be delivered goes to the dead-letter queue
  // with reason "expired". 0 = messages never expire.
  std::chrono::milliseconds ttl{0};
  // Redelivery delay of a plain nack(): backoff_initial * 2^(delivery_count - 1), at most
  // backoff_max. 0 = redeliver at once.
  std::chrono::milliseconds backoff_initial{0};
  std::chrono::milliseconds backoff_max{60'000};
  // false: messages that reach max_deliveries, expire or are rejected are dropped instead
  // of dead-lettered.
  bool dead_letter = true;
  // Liveness. By default the watchdog decides that a member died from its process (pid and
  // process start time). Set heartbeat_liveness where pids cannot be checked (processes in
  // separate pid namespaces sharing /dev/shm): a member whose heartbeat is older than
  // heartbeat_timeout is then taken for dead.
  bool heartbeat_liveness = false;
  std::chrono::milliseconds heartbeat_timeout{5'000};
  // A producer that holds a claimed slot longer than this (stopped, swapped out) has it
  // turned into a hole that consumers pass; its late commit fails and it sends again.
  std::chrono::milliseconds claim_timeout{5'000};

  // --- durability (needs shmqd running on data_dir) ----------------------------------------
  Durability durability = Durability::none;
  // The data dir; the queue's files (log segments, checkpoint, queue.meta) live in
  // <data_dir>/<name>/. Required for async and sync; created 0700 if missing. shmqd is
  // started with the same --data-dir.
  std::string data_dir{};
  // async: the longest a committed message waits before the persister writes it.
  std::chrono::milliseconds flush_interval{5};

  // --- integrity ---------------------------------------------------------------------------
  // Every message carries a checksum (XXH3-64) over its position, id, length and payload,
  // computed by its producer before it publishes the message and checked by the consumer
  // that takes it, before receive returns it. A message whose bytes or header were changed
  // in shared memory after it was sent (a stray write, a buggy or hostile process) is then
  // never delivered: it is dead-lettered with reason `corrupt` (dropped if dead_letter is
  // false) and counted (QueueStats::corrupt). shmqd does not log a message that fails the
  // check. Integrity, not authentication: a writer of the segment that recomputes the
  // checksum is not detected. Costs one hash of each message on send and on receive, and
  // 8 bytes of each slot (the checksum's place): a slot carries slot_size - 72 payload bytes.
  bool checksum = false;

  // --- priorities (issue 13) ----------------------------------------------------------------
  // 0: no priorities. N (1 .. kMaxPriority): messages carry a priority 0 .. N
  // (SendOptions::priority) and consumers always receive the highest-priority deliverable
  // message first. Each level above 0 is a ring of its own, in a segment of its own named
  // "<name>.p<level>", with this queue's geometry and policy: the memory of the queue is
  // N + 1 times one ring's. See docs/design_notes.md, "Priorities".
  std::uint32_t max_priority = 0;

  // --- deduplication (issue 14) ---------------------------------------------------------------
  // A send whose id (SendOptions::id, or an idempotent producer's) was already sent to
  // this queue within the window enqueues nothing and returns Status::duplicate. The window
  // is the messages at the queue's last `count` positions (1 .. kMaxDedupWindow; 0 = no
  // deduplication, the default): the last `count` messages sent, holes included; and, if
  // `time` is not 0, only those sent less than `time` ago (CLOCK_MONOTONIC: no clock step
  // moves it). Generated ids (id 0) are never looked up: they are unique by construction;
  // an explicit id with the top bit set (the generated ids' space) is refused with
  // Status::invalid on a queue with a window. A queue with priorities keeps one window
  // per priority level (resend at the same priority). The exact guarantee, through crashes
  // and reboots, is in docs/design_notes.md ("Deduplication") and the README. Costs 192
  // bytes of shared memory per id of `count`.
  struct DedupWindow {
    std::uint32_t count = 0;
    std::chrono::seconds time{0};
    bool operator==(const DedupWindow&) const = default;
  };
  DedupWindow dedup_window{};
};
inline constexpr std::uint32_t kMaxPriority = 31;
inline constexpr std::uint32_t kMaxDedupWindow = 1u << 20;

// Policy that Queue::set_policy may change while the queue is in use; a field left empty
// keeps its value. These five live in the segment header as atomics and are read where they
// are used, so a change applies to every attached process from its next delivery, nack or
// watchdog tick. The rest of QueueOptions (geometry, durability, data dir, liveness, claim
// timeout, flush interval, dead-lettering, checksum, mode) is fixed at create.
struct PolicyUpdate {
  std::optional<std::chrono::milliseconds> lease{};
  std::optional<std::uint32_t> max_deliveries{};
  std::optional<std::chrono::milliseconds> ttl{};
  std::optional<std::chrono::milliseconds> backoff_initial{};
  std::optional<std::chrono::milliseconds> backoff_max{};
};

// A copy of one message in the ring, made by Queue::browse without taking it.
struct BrowsedMessage {
  enum class State : std::uint8_t { ready, in_flight, delayed };
  std::uint64_t position = 0;
  std::uint64_t id = 0;
  // Deliveries so far (0: never delivered); the next delivery's delivery_count() is one more.
  std::uint32_t delivery_count = 0;
  State state = State::ready;
  std::uint32_t priority = 0;
  // A delayed message: when it becomes due, CLOCK_MONOTONIC ns (0: not delayed).
  std::uint64_t due_ns = 0;
  std::vector<std::byte> data;  // the payload, or its first max_bytes
  std::size_t size = 0;         // the payload's whole length
  std::vector<std::byte> properties_block;  // its properties block (empty: none)
  PropertiesView properties() const noexcept { return {properties_block, priority}; }
};

// What a queue looks like now. Counts are approximate while producers and consumers run.
struct RepairReport {
  bool watchdog_running = false;        // a live watchdog is elected: left to it
  std::uint32_t members_reclaimed = 0;  // rows of dead members freed
  std::uint64_t redelivered = 0;        // messages they held, back in the queue
  std::uint64_t holes_repaired = 0;     // their claims, given back
};

struct QueueStats {
  std::uint32_t slot_count = 0;
  std::uint32_t slot_size = 0;
  std::uint32_t max_message_size = 0;
  std::uint32_t max_members = 0;
  std::uint64_t tail = 0;         // next position producers will claim
  std::uint64_t dispatch = 0;     // next position consumers will look at
  std::uint64_t ready = 0;        // committed messages not delivered (incl. requeued)
  std::uint64_t in_flight = 0;    // delivered, not yet acked
  std::uint64_t claimed = 0;      // slots being written by producers
  std::uint64_t free_slots = 0;   // slots free for the current lap
  std::uint32_t producers = 0;
  std::uint32_t consumers = 0;
  std::uint64_t sent = 0;         // counters summed over members, live and gone
  std::uint64_t received = 0;
  std::uint64_t acked = 0;
  std::uint64_t requeued = 0;
  std::uint64_t delayed = 0;       // delayed (sent with a delay, or nacked with one)
  // The earliest due time of a delayed message, CLOCK_MONOTONIC ns; 0 if none.
  std::uint64_t next_due_ns = 0;
  // Queues with priorities: one entry per level, highest first; empty otherwise. The
  // totals above (ready, in_flight, delayed, ...) are summed over the levels.
  struct Level {
    std::uint32_t priority = 0;
    std::uint64_t ready = 0;
    std::uint64_t in_flight = 0;
    std::uint64_t delayed = 0;
  };
  std::vector<Level> levels;
  std::uint32_t max_priority = 0;
  // Age of the oldest message in the ring not yet acked (ready, delayed or in flight), from
  // when it entered this ring (a message republished after a rebuild: from then); 0 if none.
  std::uint64_t oldest_unacked_age_ms = 0;
  // What the watchdog and dead-lettering did.
  std::uint64_t members_reclaimed = 0;
  std::uint64_t redelivered = 0;   // taken back from dead or lease-expired consumers
  std::uint64_t leases_expired = 0;
  std::uint64_t holes_repaired = 0;
  std::uint64_t dead_lettered = 0;
  std::uint64_t expired = 0;
  std::uint64_t dead_letter_failed = 0;
  std::uint64_t corrupt = 0;       // checksum failures: dead-lettered (reason corrupt) or dropped
  // Deduplication (QueueOptions::dedup_window; summed over priority levels): sends refused
  // as duplicates, ids that left the window early (their bucket of the table was full:
  // rare), and ways of dead senders' holes voided.
  std::uint64_t dedup_duplicates = 0;
  std::uint64_t dedup_evicted_early = 0;
  std::uint64_t dedup_voided = 0;
  bool watchdog_active = false;    // some watchdog is elected
  // Durable queues. persisted: positions below are in the log (sync: on disk; async: written
  // to the log file, so no process crash loses them, and on disk within the flush interval).
  // synced: positions below are on disk (fdatasync returned); equal to persisted on a sync
  // queue.
  std::uint64_t persisted = 0;
  std::uint64_t synced = 0;

  struct Member {
    std::uint32_t index = 0;
    std::string role;              // "producer", "consumer", "watchdog"
    std::string status;            // "active", "leaving"
    std::uint32_t pid = 0;
    std::uint64_t heartbeat_age_ms = 0;
    std::uint64_t held = 0;        // messages it holds (consumers), slots it claims (producers)
    bool alive = true;             // its process runs (pid and start time)
  };
  std::vector<Member> members;
};

class Queue {
 public:
  // Creates a new queue; fails with already_exists if it exists.
  static Result<Queue> create(std::string_view name, const QueueOptions& options = {});
  // Creates the segment of a queue whose positions start at `first_position` (shmqd, when
  // it rebuilds a durable queue from its log after a reboot). Writes nothing to data_dir.
  // `recovered_ids` ((position, id) as logged, oldest first) enter the dedup window before
  // the segment can be opened.
  static Result<Queue> recreate(
      std::string_view name, const QueueOptions& options, std::uint64_t first_position,
      std::span<const std::pair<std::uint64_t, std::uint64_t>> recovered_ids = {});
  // Opens an existing queue; its geometry comes from the segment.
  static Result<Queue> open(std::string_view name);
  // The dead-letter queue's name for queue `name`: "<name>.dlq".
  static std::string dead_letter_name(std::string_view name);
  // Opens the queue, creating it with `options` if it does not exist. If it exists, every
  // field of `options` must equal the queue's, or this fails with Errc::mismatch naming each
  // field that differs (use open() to attach whatever the options). The rule, field by
  // field: slot_count, slot_size, max_members, mode, durability, lease, max_deliveries, ttl,
  // backoff_initial, backoff_max, dead_letter, heartbeat_liveness, claim_timeout, checksum,
  // max_priority:
  // exactly
  // equal (a plain struct cannot tell a default from a value you chose, so a default is
  // compared like any other value); max_message_size: 0 means one slot's payload, then equal;
  // heartbeat_timeout: only with heartbeat_liveness; data_dir and flush_interval: only on a
  // durable queue, data_dir compared as resolved by realpath. Policy changed with
  // set_policy is compared as it is now.
  static Result<Queue> open_or_create(std::string_view name, const QueueOptions& options = {});
  // Removes the segment `name` and its dead-letter queue's ("<name>.dlq", if any). Data
  // dirs are kept. The segment is first marked removed and every sleeper woken: processes
  // still attached to it get Status::closed from their blocking calls (send, receive, ...)
  // instead of waiting on a segment nobody can open any more.
  static VoidResult remove(std::string_view name);
  // Checks a queue name: 1..kMaxNameLength (200) characters of [A-Za-z0-9._-], not starting
  // with '.' or '-', no "..". A queue that dead-letters (the default) also needs
  // "<name>.dlq" to pass, so its name is at most 196 characters; create() checks that.
  // Returns a message saying what is wrong, or an empty string.
  static std::string validate_name(std::string_view name);

  // Registers a producer / consumer row in the member table of this queue. If every row
  // is taken, first reclaims the rows of dead members (as repair() does).
  // An idempotent producer (issue 14): its sends with id 0 carry session ids
  // (session_message_id(producer_id, sequence)), so that resending a message under its
  // sequence number is deduplicated by the queue's dedup window without ids of your own.
  // `resume` = {} starts a new session (a new producer id); a session saved from
  // Producer::session() resumes it: after a crash, resume at the first sequence number not
  // known to be confirmed and resend from there, in order. Errc::invalid_argument on a
  // queue without a dedup window.
  Result<Producer> idempotent_producer(ProducerSession resume = {},
                                       const ProducerOptions& options = {});
  Result<Producer> producer(const ProducerOptions& options = {});
  Result<Consumer> consumer(const ConsumerOptions& options = {});

  // Reclaims the member rows of dead processes (and redelivers what they held) without a
  // row of its own: the way out of a member table full of dead rows. Does nothing if a
  // live watchdog is elected: it does the same at its next tick. shmqctl repair.
  RepairReport repair();

  const std::string& name() const noexcept;
  std::uint32_t slot_count() const noexcept;
  std::uint32_t slot_size() const noexcept;
  std::uint32_t max_message_size() const noexcept;
  std::uint32_t max_members() const noexcept;
  // Its options now (geometry fields included; policy as last set).
  QueueOptions options() const;
  // Changes the run-time policy (see PolicyUpdate) of this queue for every attached process.
  // Validated like create's options (invalid_argument). On a durable queue, queue.meta in
  // the data dir is rewritten first, so that a queue rebuilt by shmqd keeps the new policy.
  // Messages already delivered keep the lease they were given; a new ttl or max_deliveries
  // applies to each message at its next delivery. Any process with the queue open may call
  // it (it writes the segment header only).
  VoidResult set_policy(const PolicyUpdate& update);

  // Copies out up to `max_count` messages, oldest position first, without taking them:
  // nothing changes in the queue (no claim, no delivery count, no lease), so looking never
  // needs a try_receive + nack loop. By default only ready messages (what a consumer would
  // receive; due delayed ones are not included); `include_in_flight` adds held and delayed
  // ones. Each copy is validated (the slot word is read again after the copy, seqlock-style):
  // a message that changed while it was copied is read again or left out, never torn. A
  // snapshot: messages may be taken or sent while it runs. Any process, any thread.
  std::vector<BrowsedMessage> browse(std::size_t max_count, bool include_in_flight = false,
                                     std::size_t max_bytes = SIZE_MAX) const;

  // Walks the ring and the member table; safe to call at any time from any process.
  QueueStats stats() const;

  // Queues with priorities: level p (1 .. max_priority) as a queue of its own, "<name>.p<p>",
  // checked to be this queue's.
  Result<Queue> open_level(std::uint32_t p) const;

  // Internal: the mapped segment.
  const std::shared_ptr<detail::Segment>& segment() const noexcept { return segment_; }

 private:
  explicit Queue(std::shared_ptr<detail::Segment> segment) : segment_(std::move(segment)) {}
  static Result<Queue> create_one(std::string_view name, const QueueOptions& options,
                                  bool with_dead_letter_queue);
  QueueStats stats_one() const;
  std::vector<BrowsedMessage> browse_one(std::size_t max_count, bool include_in_flight,
                                         std::size_t max_bytes) const;
  std::shared_ptr<detail::Segment> segment_;
};

}  // namespace shmq
