// Internal entry points of the topic implementation (src/topic/topic.cpp) for shmqd, the
// topic persister and tests.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "shmq/topic.hpp"

#include "segment/segment.hpp"
#include "topic/topic_layout.hpp"

namespace shmq::detail {

TopicHeader& topic_header(const Segment& s) noexcept;
GroupRow& group_row(const Segment& s, std::uint32_t g) noexcept;
std::atomic<std::uint64_t>& group_word(const Segment& s, std::uint32_t g, std::uint64_t pos) noexcept;
std::atomic<std::uint64_t>& group_timer(const Segment& s, std::uint32_t g, std::uint64_t pos) noexcept;
std::string group_name_of(const GroupRow& r);
// The queue options a topic's segment is made with (geometry, policy, durability).
QueueOptions topic_segment_options(const TopicOptions& o);
// Redelivers dead subscribers' holds and expired leases of group g; returns how many.
std::uint64_t heal_group(Segment& s, std::uint32_t g) noexcept;
// Everything Topic::heal does.
std::uint64_t topic_heal(Segment& s) noexcept;
// First position publishers may not claim now.
std::uint64_t publish_limit(const Segment& s, int* blocking = nullptr) noexcept;

}  // namespace shmq::detail

namespace shmq::log {
class Directory;
}

namespace shmq::detail {

class TopicLogWriter;
struct GroupMeta;

// shmqd, after a reboot: creates the segment of durable topic `name` from its data dir: the
// ring starts at `head` (the log's end, or past every group's saved position), every group
// in `groups` at its saved position (floor; clamped to the log's first position), so that
// subscribers replay from the log what the ring does not hold.
// `dispatch`: where the group had delivered up to; positions in [floor, dispatch) come
// back marked redelivered (delivery count 1 before their next delivery).
struct RecoveredGroup {
  std::string name;
  GroupOptions options;
  std::uint64_t floor = 0;
  std::uint64_t dispatch = 0;
};
Result<std::shared_ptr<Segment>> recreate_topic(const std::string& name, const TopicOptions& options,
                                                std::uint64_t head, std::uint64_t log_first,
                                                const std::vector<RecoveredGroup>& groups);

// One persister pass over a durable topic: appends every committed position from
// `persisted` on to the log (holes as hole records), fdatasyncs, then moves `persisted` and
// wakes sync publishers; applies retention; rewrites the positions file (each group's floor
// and dispatch) when one moved, at most every 100 ms. Returns positions persisted, or an error
// (fail-stop: the caller stops persisting the topic).
struct TopicPersistState {
  bool started = false;         // the first pass checked the log against `persisted`
  bool final_pass = false;      // write the positions file whatever its age
  std::string saved;            // the positions file as last written
  std::uint64_t positions_written_ns = 0;
  std::uint64_t retain_bytes = 0;  // from topic.meta
  std::uint64_t retain_age_s = 0;
};
Result<std::uint64_t> persist_topic(Segment& s, TopicLogWriter& log, TopicPersistState& state);

}  // namespace shmq::detail
