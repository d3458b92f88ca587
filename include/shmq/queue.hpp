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
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "shmq/error.hpp"

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
  // Messages up to slot_size - 64 bytes take one slot and are received zero-copy;
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
};

// What a queue looks like now. Counts are approximate while producers and consumers run.
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
  std::uint64_t delayed = 0;       // nacked with a delay, not yet due
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
  bool watchdog_active = false;    // some watchdog is elected
  std::uint64_t persisted = 0;     // durable queues: positions below are on disk

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
  static Result<Queue> recreate(std::string_view name, const QueueOptions& options,
                                std::uint64_t first_position);
  // Opens an existing queue; its geometry comes from the segment.
  static Result<Queue> open(std::string_view name);
  // The dead-letter queue's name for queue `name`: "<name>.dlq".
  static std::string dead_letter_name(std::string_view name);
  // Opens the queue, creating it with `options` if it does not exist.
  static Result<Queue> open_or_create(std::string_view name, const QueueOptions& options = {});
  // Removes the segment `name` and its dead-letter queue's ("<name>.dlq", if any). Data
  // dirs are kept. Processes that have them mapped keep working on the old ones.
  static VoidResult remove(std::string_view name);
  // Checks a queue name: 1..200 characters of [A-Za-z0-9._-], not starting with '.',
  // no "..". Returns a message saying what is wrong, or an empty string.
  static std::string validate_name(std::string_view name);

  // Registers a producer / consumer row in the member table of this queue.
  Result<Producer> producer();
  Result<Consumer> consumer();

  const std::string& name() const noexcept;
  std::uint32_t slot_count() const noexcept;
  std::uint32_t slot_size() const noexcept;
  std::uint32_t max_message_size() const noexcept;
  std::uint32_t max_members() const noexcept;
  // The policy it was created with (geometry fields included).
  QueueOptions options() const;

  // Walks the ring and the member table; safe to call at any time from any process.
  QueueStats stats() const;

  // Internal: the mapped segment.
  const std::shared_ptr<detail::Segment>& segment() const noexcept { return segment_; }

 private:
  explicit Queue(std::shared_ptr<detail::Segment> segment) : segment_(std::move(segment)) {}
  std::shared_ptr<detail::Segment> segment_;
};

}  // namespace shmq
