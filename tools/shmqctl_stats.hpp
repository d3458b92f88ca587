// shmqctl: a queue's statistics as text (stat, watch) and as JSON (stat --json, list --json).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "shmq/shmq.hpp"
#include "shmq/topic.hpp"

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

// --- topics (issue 15) ----------------------------------------------------------------------

// "ok", or ','-joined: "full" (a reliable group is a whole ring behind: publishers wait),
// "stalled" / "detached" (a group is).
std::string topic_state(const shmq::TopicStats& s);
// What `list` shows as a topic's depth: the largest lag of its groups (0 without groups).
std::uint64_t topic_depth(const shmq::TopicStats& s);
// The dead-letter queue of a group: "<topic>.<group>.dlq".
std::string group_dead_letter_name(std::string_view topic, std::string_view group);

// One group as JSON (stat --json's "groups", group list --json).
nlohmann::ordered_json group_json(const shmq::Topic& t, const shmq::GroupStats& g);
// The group table: a header line and one line per group.
std::string group_table(const std::vector<shmq::GroupStats>& groups);

// `stat --json` of a topic: schema 1 with "kind": "topic" (docs/shmqctl.md).
nlohmann::ordered_json topic_stat_json(const shmq::Topic& t, const shmq::TopicStats& s);
std::string topic_stat_text(const shmq::Topic& t, const shmq::TopicStats& s);

// JSON text on one line per document is not friendly; always pretty with 2 spaces, invalid
// UTF-8 replaced.
std::string dump_json(const nlohmann::ordered_json& j);

}  // namespace shmqctl
