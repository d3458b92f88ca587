// Republishing messages recovered from the log into a rebuilt ring (after a reboot).
#pragma once

#include <cstdint>

#include "shmq/producer.hpp"

namespace shmq::detail {

struct ProducerAccess {
  // Sends `message` with its original id, marked as delivered once already (its next
  // delivery says redelivered()). Blocks while the ring is full. `*end` receives the
  // position after it.
  static Status send_recovered(Producer& p, Bytes message, std::uint64_t id, std::uint64_t* end) {
    return p.send_impl(message, id, std::chrono::steady_clock::time_point::max(), true,
                       /*redelivery=*/true, end);
  }
};

}  // namespace shmq::detail
