// Moving messages to a queue's dead-letter queue "<name>.dlq".
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
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

// Moves held messages of one queue to its dead-letter queue. Opens (or creates) the DLQ and
// registers a producer there on first use; one per consumer or watchdog.
class DeadLetterSink {
 public:
  explicit DeadLetterSink(std::shared_ptr<Segment> source) : src_(std::move(source)) {}

  // The message at `pos`, held by us with word `held`, goes to the DLQ with `reason`; then
  // its slot is released. If the queue drops dead letters (dead_letter = false) it is only
  // released. If the DLQ cannot take it now (full, cannot be created), the message is put
  // back delayed by one second instead and false is returned: never lost.
  bool move(std::uint64_t pos, std::uint64_t held, DeadLetterReason reason, std::uint32_t member);

 private:
  bool open();

  std::shared_ptr<Segment> src_;
  std::optional<Queue> dlq_;
  std::optional<Producer> producer_;
  std::vector<std::byte> buf_;
};

}  // namespace shmq::detail
