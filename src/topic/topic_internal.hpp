// Internal entry points of the topic implementation (src/topic/topic.cpp) for shmqd, the
// topic persister and tests.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

#include "segment/segment.hpp"
#include "topic/topic_layout.hpp"

namespace shmq::detail {

TopicHeader& topic_header(const Segment& s) noexcept;
GroupRow& group_row(const Segment& s, std::uint32_t g) noexcept;
std::atomic<std::uint64_t>& group_word(const Segment& s, std::uint32_t g, std::uint64_t pos) noexcept;
std::atomic<std::uint64_t>& group_timer(const Segment& s, std::uint32_t g, std::uint64_t pos) noexcept;
std::string group_name_of(const GroupRow& r);
// Redelivers dead subscribers' holds and expired leases of group g; returns how many.
std::uint64_t heal_group(Segment& s, std::uint32_t g) noexcept;
// Everything Topic::heal does.
std::uint64_t topic_heal(Segment& s) noexcept;
// First position publishers may not claim now.
std::uint64_t publish_limit(const Segment& s, int* blocking = nullptr) noexcept;

}  // namespace shmq::detail
