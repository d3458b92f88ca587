// shmqctl: a queue's statistics as text (stat, watch) and as JSON (stat --json, list --json).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "shmq/shmq.hpp"

namespace shmqctl {

// Counter rates per second between two samples.
struct Rates {
  std::uint64_t interval_ms = 0;
  double sent = 0, received = 0, acked = 0, requeued = 0, redelivered = 0, dead_lettered = 0;
};
Rates compute_rates(const shmq::QueueStats& before, const shmq::QueueStats& after,
                    std::uint64_t interval_ms);

// One word or a few joined by ',': "ok", or any of "full", "no-shmqd" (a durable queue
// without a live persister), "dead-members" (rows of dead processes not yet reclaimed).
std::string queue_state(const shmq::QueueOptions& o, const shmq::QueueStats& s);

// depth = ready + delayed.
inline std::uint64_t depth(const shmq::QueueStats& s) { return s.ready + s.delayed; }

// The earliest delayed message is due in this many ms (rounded up; 0: due now); none when
// nothing is delayed.
std::optional<std::uint64_t> next_due_in_ms(const shmq::QueueStats& s);
// Durable queues: messages committed but not yet on disk (tail - persisted); else nullopt.
std::optional<std::uint64_t> persisted_lag(const shmq::QueueOptions& o,
                                           const shmq::QueueStats& s);

// The `stat --json` document (schema 1, documented in shmqctl.cpp and docs/shmqctl.md).
nlohmann::ordered_json stat_json(const shmq::Queue& q, const shmq::QueueStats& s,
                                 const std::optional<Rates>& rates);
// The human-readable form of the same.
std::string stat_text(const shmq::Queue& q, const shmq::QueueStats& s,
                      const std::optional<Rates>& rates);

// JSON text on one line per document is not friendly; always pretty with 2 spaces, invalid
// UTF-8 replaced.
std::string dump_json(const nlohmann::ordered_json& j);

}  // namespace shmqctl
