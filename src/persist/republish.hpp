// Republishing messages recovered from the log into a rebuilt ring (after a reboot).
#pragma once

#include <cstdint>

#include "shmq/producer.hpp"

namespace shmq::detail {

struct ProducerAccess {
  // Sends `message`, logged at position `origin` by an earlier epoch of the queue, with its
  // original id, marked as delivered once already (its next delivery says redelivered()),
  // and tagged with its origin so that the persister logs it as a copy that supersedes the
  // origin. Blocks while the ring is full. `*end` receives the position after it.
  // `due_ns` != 0: a delayed message, republished as delayed until CLOCK_MONOTONIC due_ns
  // (unix_to_monotonic_ns of its logged due time).
  static Status send_recovered(Producer& p, Bytes message, std::uint64_t id,
                               std::uint64_t origin, std::uint64_t* end,
                               std::uint64_t due_ns = 0) {
    return p.send_impl(message, id, std::chrono::steady_clock::time_point::max(), true,
                       origin + 1, end, due_ns);
  }
  // Sends without waiting for a confirmation on a sync queue, and without waiting for room
  // (Status::full at once): the dead-letter path, which must never block.
  static Status send_unconfirmed(Producer& p, Bytes message, std::uint64_t id) {
    return p.send_impl(message, id, std::chrono::steady_clock::time_point::min(), true);
  }
  // Makes `p` (and the level producers it opens) send without looking ids up in the
  // queue's dedup window: shmqctl dlq replay, whose messages keep ids that are in it.
  static void bypass_dedup(Producer& p) { p.bypass_dedup_ = true; }
};

}  // namespace shmq::detail
