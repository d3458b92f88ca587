// Durable topics (issue 15): shmqd's persister pass and the rebuild after a reboot.
//
// Persisting. The log holds every position from its first on, contiguously. A pass appends
// positions [persisted, p) where p is the first position not yet committed (a claim still
// being written stops the pass; a dead or stalled publisher's claim is first repaired into a
// hole), fdatasyncs, and only then publishes persisted = p (release) and wakes sync
// publishers. Publishers of a durable topic never reuse a slot whose position is not below
// persisted (publish_limit), so the bytes a pass copies cannot change under it.
//
// What a crash leaves: before the sync, a torn tail (cut at recovery; nobody was told it
// was durable); after the sync and before `persisted` moved, records logged twice? No: the
// next shmqd starts from the log's end, not from `persisted`, and moves `persisted` up to it.
// The positions file is written after the log sync (write new, rename): a crash before it
// leaves the older file, and a group resumes from an older floor: redelivery, never loss.
#include <chrono>
#include <cstring>
#include <sstream>

#include "log/file.hpp"
#include "persist/meta.hpp"
#include "platform/crash_point.hpp"
#include "platform/process.hpp"
#include "ring/ring.hpp"
#include "ring/slot_word.hpp"
#include "segment/segment.hpp"
#include "topic/topic_internal.hpp"
#include "topic/topic_log.hpp"

namespace shmq::detail {

bool repair_claim(Segment& s, std::uint64_t pos, std::uint64_t w) noexcept;

namespace {
QueueOptions segment_options_of(const TopicOptions& o) {
  QueueOptions q;
  q.slot_count = o.slot_count;
  q.slot_size = o.slot_size;
  q.max_members = o.max_members;
  q.mode = o.mode;
  q.lease = o.lease;
  q.max_deliveries = o.max_deliveries;
  q.dead_letter = o.dead_letter;
  q.claim_timeout = o.claim_timeout;
  q.durability = o.durability;
  q.data_dir = o.data_dir;
  q.flush_interval = o.flush_interval;
  return q;
}
}  // namespace

Result<std::shared_ptr<Segment>> recreate_topic(
    const std::string& name, const TopicOptions& o, std::uint64_t head, std::uint64_t log_first,
    const std::vector<std::pair<GroupMeta, std::uint64_t>>& groups) {
  if (groups.size() > o.max_groups)
    return Error(Errc::corrupt, "topic '" + name + "' has " + std::to_string(groups.size()) +
                                    " groups in its data dir, more than its max groups");
  return Segment::create(name, segment_options_of(o), head, {}, o.max_groups, [&](Segment& s) {
    TopicHeader& th = topic_header(s);
    th.history = o.history == 0 ? o.slot_count : o.history;
    th.max_groups = o.max_groups;
    th.retain_bytes = o.retain_bytes;
    th.retain_age_s = static_cast<std::uint64_t>(o.retain_age.count());
    th.log_first.store(log_first, std::memory_order_relaxed);
    std::uint32_t g = 0;
    for (const auto& [meta, saved] : groups) {
      GroupRow& r = group_row(s, g);
      std::memset(r.name, 0, sizeof r.name);
      std::memcpy(r.name, meta.name.data(), std::min(meta.name.size(), kMaxGroupNameLength));
      const std::uint64_t floor = std::min(std::max(saved, log_first), head);
      r.stall_timeout_ms.store(static_cast<std::uint64_t>(meta.options.stall_timeout.count()),
                               std::memory_order_relaxed);
      r.created_ns.store(monotonic_ns(), std::memory_order_relaxed);
      r.dispatch.value.store(floor, std::memory_order_relaxed);
      r.floor.value.store(floor, std::memory_order_relaxed);
      r.state.store(group_state(GroupStatus::active, meta.options.policy == GroupPolicy::lossy ? 1 : 0,
                                meta.options.on_stall == StallAction::detach ? 1 : 0, 1),
                    std::memory_order_relaxed);
      ++g;
    }
  });
}

Result<std::uint64_t> persist_topic(Segment& s, TopicLogWriter& log, std::string& saved) {
  const std::uint32_t shift = s.slot_shift();
  std::uint64_t p = s.header().persisted.value.load(std::memory_order_acquire);
  if (log.next() > p) {
    // Logged by an earlier shmqd that died before it moved `persisted`.
    s.header().persisted.value.store(log.next(), std::memory_order_release);
    p = log.next();
  }
  log.start_at(p);
  const std::uint64_t tail = s.header().tail.value.load(std::memory_order_acquire);
  const std::uint64_t first = p;
  const std::uint64_t batch_end = std::min(tail, p + s.slot_count());
  while (p < batch_end) {
    const std::uint64_t w = s.slot(p).word.load(std::memory_order_acquire);
    const std::uint64_t lap = lap_of(p, shift);
    const SlotState st = word_state(w);
    if (word_lap(w) == lap && st == SlotState::ready) {
      SlotHeader& sh = s.slot(p);
      std::uint32_t len = sh.length.load(std::memory_order_relaxed);
      if (len > s.max_message_size()) len = s.max_message_size();
      const std::uint64_t unix_ns =
          monotonic_to_unix_ns(sh.enqueued_ns.load(std::memory_order_relaxed));
      log.append(sh.id.load(std::memory_order_relaxed), unix_ns, false,
                 std::span<const std::byte>(s.payload(p), len));
    } else if ((word_lap(w) == lap && st == SlotState::skipped) ||
               (lap_diff(word_lap(w), lap) == 1 && st == SlotState::free_skipped)) {
      log.append(0, realtime_ns(), true, {});
    } else if (word_lap(w) == lap && st == SlotState::claimed) {
      if (!repair_claim(s, p, w)) break;  // being written: the next pass
      continue;                           // now a hole
    } else {
      break;
    }
    ++p;
  }
  if (p != first) {
    if (auto r = log.sync(); !r.ok()) return r.error();
    SHMQ_CRASH_POINT("topic.persist.after_sync");
    s.header().persisted.value.store(p, std::memory_order_seq_cst);
    wake_waiters(s.header().persist_wait, s.max_members());
    wake_waiters(s.header().producers_wait, s.max_members());
  }
  // Retention, then what a group could start at.
  if (auto r = log.retain(topic_header(s).retain_bytes, topic_header(s).retain_age_s, realtime_ns());
      !r.ok())
    return r.error();
  topic_header(s).log_first.store(log.first(), std::memory_order_release);
  // Group positions: written when one moved. A floor is saved no further than what is
  // persisted: a group never resumes past the end of the log.
  std::ostringstream pos;
  for (std::uint32_t g = 0; g < s.max_groups(); ++g) {
    const GroupRow& r = group_row(s, g);
    const std::uint64_t st = r.state.load(std::memory_order_acquire);
    if (!group_live(st) && group_status(st) != GroupStatus::detached) continue;
    const std::uint64_t f = std::min(r.floor.value.load(std::memory_order_acquire), p);
    pos << group_name_of(r) << ' ' << f << '\n';
  }
  const std::string text = pos.str();
  if (text != saved) {
    if (auto w = log.dir().write_new_file(kTopicPositionsFile, std::as_bytes(std::span(text)), true);
        !w.ok())
      return w.error();
    saved = text;
  }
  return p - first;
}

}  // namespace shmq::detail
