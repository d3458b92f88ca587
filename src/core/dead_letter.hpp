// Moving messages to a queue's dead-letter queue "<name>.dlq".
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "segment/segment.hpp"
#include "shmq/dead_letter.hpp"
#include "shmq/producer.hpp"
#include "shmq/queue.hpp"

namespace shmq::detail {

// The options of the dead-letter queue of a queue created with `parent`: the same slots,
// room for the 32-byte envelope, no lease expiry games of its own (no max deliveries, no
// TTL, no dead-lettering).
QueueOptions dead_letter_options(const QueueOptions& parent);

// Empty if the existing dead-letter queue of `queue` may be used with it: a regular file
// owned by `owner` (the queue's owner) whose mode is no wider than `queue_mode`; else why
// not, in one line naming the owner. A DLQ made by another user would receive (and could
// withhold) the queue's dead letters, so it is refused, never adopted.
std::string foreign_dead_letter_queue(std::string_view queue, uid_t owner,
                                      std::uint32_t queue_mode);

// Moves held messages of one queue to its dead-letter queue. Opens the DLQ (made with the
// queue: Queue::create) and registers a producer there on first use; one per consumer or
// watchdog. Every open checks that the DLQ has the source queue's owner (a group member
// may open both a 0660 queue and another user's 0660 "<queue>.dlq"): a refused DLQ is a
// failed move, the message stays in the queue.
class DeadLetterSink {
 public:
  explicit DeadLetterSink(std::shared_ptr<Segment> source) : src_(std::move(source)) {}
  // A sink that sends through `shared`'s DLQ producer (one row in the DLQ for a priority
  // consumer and all its levels, instead of one per level): `shared` must outlive it.
  DeadLetterSink(std::shared_ptr<Segment> source, DeadLetterSink* shared)
      : src_(std::move(source)), shared_(shared) {}

  enum class Outcome : std::uint8_t {
    moved,       // in the DLQ (or dropped: dead_letter = false), the slot released
    not_moved,   // the DLQ cannot take it now (full, missing): the message is still held
                 // by us, untouched, or (requeue_on_failure) put back delayed by 1 s
    lease_lost,  // copied to the DLQ, but the slot was no longer ours to release (the
                 // watchdog took it back meanwhile): it may be delivered again
  };

  // The message at `pos`, held by us with word `held`, goes to the DLQ with `reason` (on a
  // checksummed queue: `corrupt` if its copy fails its checksum, whatever the reason given;
  // counted in the segment's `corrupt` counter once moved or, without a DLQ, dropped); then
  // its slot is released. Never blocks: the DLQ send neither waits for room nor, on a sync
  // queue, for its confirmation (shmqd journals the original's release only once the dead
  // letter is on disk: see Persister::dead_letters_durable). Never loses the message.
  Outcome move(std::uint64_t pos, std::uint64_t held, DeadLetterReason reason,
               std::uint32_t member, bool requeue_on_failure);

 private:
  bool open();

  std::shared_ptr<Segment> src_;
  DeadLetterSink* shared_ = nullptr;
  std::optional<Queue> dlq_;
  std::optional<Producer> producer_;
  std::vector<std::byte> buf_;
};

}  // namespace shmq::detail
