// Dead letters: messages that reached their queue's max_deliveries, expired (TTL), were
// rejected (nack without requeue) or, on a checksummed queue, were found corrupt move to the
// queue "<name>.dlq", itself an ordinary shmq queue. Each dead letter is the original payload behind a 32-byte envelope that says why;
// its message id is the original id.
//
//   offset  size  field (little-endian)
//        0     4  magic "SDLQ" (0x51444c53)
//        4     2  envelope version (1)
//        6     2  reason (DeadLetterReason)
//        8     4  delivery count when it was dead-lettered
//       12     4  priority of the original message (0 on a queue without priorities)
//       16     8  original position in the source queue
//       24     8  original message id
//       32     -  original payload
//
// Envelope version 2 (issue 14): the same 32 bytes, then the original's properties block
// (properties.hpp) and then its payload: the dead letter of a message sent with properties.
// A dead letter of a message without properties is still version 1, byte for byte.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

#include "shmq/properties.hpp"

namespace shmq {

enum class DeadLetterReason : std::uint16_t {
  max_deliveries = 1,  // delivered max_deliveries times and given back again
  expired = 2,         // older than the queue's TTL when it would have been delivered
  rejected = 3,        // nack(requeue = false) on a queue with dead-lettering
  corrupt = 4,         // checksummed queue: its checksum did not match (QueueOptions::checksum)
};

std::string_view to_string(DeadLetterReason r) noexcept;

inline constexpr std::uint32_t kDeadLetterMagic = 0x51444c53;
inline constexpr std::size_t kDeadLetterEnvelopeSize = 32;

struct DeadLetter {
  DeadLetterReason reason;
  std::uint32_t delivery_count;
  std::uint64_t original_position;  // in its level's ring on a queue with priorities
  std::uint64_t original_id;
  std::span<const std::byte> payload;  // the original message's bytes
  std::uint32_t priority = 0;          // the original message's priority
  std::span<const std::byte> properties_block;  // version 2: the original's block; else empty
  // The original's properties (empty without).
  PropertiesView properties() const noexcept { return {properties_block, priority}; }
};

// Reads the envelope of a message from a dead-letter queue; nullopt if it is not one.
std::optional<DeadLetter> parse_dead_letter(std::span<const std::byte> message) noexcept;

}  // namespace shmq
