// Republishing messages recovered from the log into a rebuilt ring (after a reboot).
#pragma once

#include <cstdint>

#include "segment/layout.hpp"
#include "shmq/producer.hpp"

namespace shmq::detail {

struct ProducerAccess {
  // Sends `message`, logged at position `origin` by an earlier epoch of the queue, with its
  // original id, marked as delivered once already (its next delivery says redelivered()),
  // and tagged with its origin so that the persister logs it as a copy that supersedes the
  // origin. Blocks while the ring is full. `*end` receives the position after it.
  // `due_ns` != 0: a delayed message, republished as delayed until CLOCK_MONOTONIC due_ns
  // (unix_to_monotonic_ns of its logged due time).
  // `properties`: `message` is [properties block][payload] (a record with the properties
  // flag): it is republished with the flag, as it was sent.
  static Status send_recovered(Producer& p, Bytes message, std::uint64_t id,
                               std::uint64_t origin, std::uint64_t* end,
                               std::uint64_t due_ns = 0, bool properties = false) {
    p.length_flags_ = properties ? kLengthHasProperties : 0;
    const Status s = p.send_impl(message, id, std::chrono::steady_clock::time_point::max(),
                                 true, origin + 1, end, due_ns);
    p.length_flags_ = 0;
    return s;
  }
  // Sends `payload` with `options` (its properties, if any, stamped with `timestamp_ns`
  // instead of now): shmqctl dlq replay restores a dead letter's properties as they were.
  static Status send_replayed(Producer& p, Bytes payload, const SendOptions& options,
                              std::uint64_t timestamp_ns) {
    Producer* target = &p;
    if (options.priority != 0)
      if (const Status s = p.level(options.priority, target); s != Status::ok) return s;
    target->properties_timestamp_ns_ = timestamp_ns;
    SendOptions o = options;
    o.priority = 0;
    const Status s = target->send(payload, o);
    target->properties_timestamp_ns_ = 0;
    return s;
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
