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


Result<std::shared_ptr<Segment>> recreate_topic(
    const std::string& name, const TopicOptions& o, std::uint64_t head, std::uint64_t log_first,
    const std::vector<RecoveredGroup>& groups) {
  if (groups.size() > o.max_groups)
    return Error(Errc::corrupt, "topic '" + name + "' has " + std::to_string(groups.size()) +
                                    " groups in its data dir, more than its max groups");
  return Segment::create(name, topic_segment_options(o), head, {}, o.max_groups, [&](Segment& s) {
    TopicHeader& th = topic_header(s);
    th.history = o.history == 0 ? o.slot_count : o.history;
    th.max_groups = o.max_groups;
    th.retain_bytes = o.retain_bytes;
    th.retain_age_s = static_cast<std::uint64_t>(o.retain_age.count());
    th.log_first.store(log_first, std::memory_order_relaxed);
    std::uint32_t g = 0;
    const std::uint32_t shift = s.slot_shift();
    for (const auto& rg : groups) {
      GroupRow& r = group_row(s, g);
      std::memset(r.name, 0, sizeof r.name);
      std::memcpy(r.name, rg.name.data(), std::min(rg.name.size(), kMaxGroupNameLength));
      const std::uint64_t floor = std::min(std::max(rg.floor, log_first), head);
      const std::uint64_t dispatch =
          std::min({std::max(rg.dispatch, floor), head, floor + s.slot_count()});
      // What the group had delivered and not acked comes back requeued, its delivery
      // count 1: its next delivery says redelivered.
      for (std::uint64_t p = floor; p < dispatch; ++p)
        group_word(s, g, p).store(gword(lap_of(p, shift), GroupSlot::requeued, kNoOwner, 1),
                                  std::memory_order_relaxed);
      r.stall_timeout_ms.store(static_cast<std::uint64_t>(rg.options.stall_timeout.count()),
                               std::memory_order_relaxed);
      r.created_ns.store(monotonic_ns(), std::memory_order_relaxed);
      r.dispatch.value.store(dispatch, std::memory_order_relaxed);
      r.floor.value.store(floor, std::memory_order_relaxed);
      r.requeue_epoch.value.store(dispatch != floor ? 1 : 0, std::memory_order_relaxed);
      r.state.store(group_state(GroupStatus::active, rg.options.policy == GroupPolicy::lossy ? 1 : 0,
                                rg.options.on_stall == StallAction::detach ? 1 : 0, 1),
                    std::memory_order_relaxed);
      ++g;
    }
  });
}

Result<std::uint64_t> persist_topic(Segment& s, TopicLogWriter& log, TopicPersistState& state) {
  const std::uint32_t shift = s.slot_shift();
  std::uint64_t p = s.header().persisted.value.load(std::memory_order_acquire);
  if (!state.started) {
    // First pass of this shmqd. `persisted` is what the last one published after a
    // successful fdatasync; anything the log holds beyond it (a shmqd that died after its
    // sync, or whose sync failed) is cut and appended again from the ring, which holds
    // every position from `persisted` on (publishers do not reuse a slot past it).
    if (log.first() == log.next()) log.start_at(p);
    if (log.next() > p) {
      if (auto t = log.truncate_to(p); !t.ok()) return t.error();
    }
    if (log.next() != p)
      return Error(Errc::corrupt, "the topic's log ends at position " + std::to_string(log.next()) +
                                      " but its segment says " + std::to_string(p) +
                                      " are persisted: files of the log are missing");
    state.started = true;
  }
  const std::uint64_t tail = s.header().tail.value.load(std::memory_order_acquire);
  const std::uint64_t first = p;
  const std::uint64_t batch_end = std::min(tail, p + s.slot_count());
  while (p < batch_end) {
    const std::uint64_t w = s.slot(p).word.load(std::memory_order_acquire);
    const std::uint64_t lap = lap_of(p, shift);
    const SlotState st = word_state(w);
    VoidResult a;
    if (word_lap(w) == lap && st == SlotState::ready) {
      SlotHeader& sh = s.slot(p);
      std::uint32_t len = sh.length.load(std::memory_order_relaxed);
      if (len > s.max_message_size()) len = s.max_message_size();
      const std::uint64_t unix_ns =
          monotonic_to_unix_ns(sh.enqueued_ns.load(std::memory_order_relaxed));
      a = log.append(p, sh.id.load(std::memory_order_relaxed), unix_ns, false,
                     std::span<const std::byte>(s.payload(p), len));
    } else if ((word_lap(w) == lap && st == SlotState::skipped) ||
               (lap_diff(word_lap(w), lap) == 1 && st == SlotState::free_skipped)) {
      a = log.append(p, 0, realtime_ns(), true, {});
    } else if (word_lap(w) == lap && st == SlotState::claimed) {
      if (!repair_claim(s, p, w)) break;  // being written: the next pass
      continue;                           // now a hole
    } else {
      break;
    }
    if (!a.ok()) return a.error();
    ++p;
  }
  if (p != first) {
    if (auto r = log.sync(); !r.ok()) return r.error();
    SHMQ_CRASH_POINT("topic.persist.after_sync");
    s.header().persisted.value.store(p, std::memory_order_seq_cst);
    wake_waiters(s.header().persist_wait, s.max_members());
    wake_waiters(s.header().producers_wait, s.max_members());
  }
  // Retention (from topic.meta, never from the segment: a writer of a 0660 segment must
  // not be able to make shmqd delete the owner's log), then what a group could start at.
  if (auto r = log.retain(state.retain_bytes, state.retain_age_s, realtime_ns()); !r.ok())
    return r.error();
  topic_header(s).log_first.store(log.first(), std::memory_order_release);
  // Group positions: at most every 100 ms (each write is two fsyncs), and at the end.
  const std::uint64_t now = monotonic_coarse_ns();
  if (!state.final_pass && now - state.positions_written_ns < 100'000'000) return p - first;
  std::ostringstream pos;
  for (std::uint32_t g = 0; g < s.max_groups(); ++g) {
    const GroupRow& r = group_row(s, g);
    const std::uint64_t st = r.state.load(std::memory_order_acquire);
    if (!group_live(st) && group_status(st) != GroupStatus::detached) continue;
    // Never past what is persisted: a group never resumes past the end of the log.
    const std::uint64_t f = std::min(r.floor.value.load(std::memory_order_acquire), p);
    const std::uint64_t d = std::min(std::max(r.dispatch.value.load(std::memory_order_acquire), f), p);
    pos << group_name_of(r) << ' ' << f << ' ' << d << '\n';
  }
  const std::string text = pos.str();
  if (text != state.saved) {
    if (auto w = log.dir().write_new_file(kTopicPositionsFile, std::as_bytes(std::span(text)), true);
        !w.ok())
      return w.error();
    state.saved = text;
  }
  state.positions_written_ns = now;
  return p - first;
}

}  // namespace shmq::detail
