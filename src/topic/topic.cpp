// Topics: one ring written once, any number of subscriber groups (issue 15).
//
// The state machine, in short (the full version with its crash analysis is design note 23):
//
// Ring slot word (segment/layout.hpp SlotHeader::word, states of ring/slot_word.hpp):
//   free(L) / free_skipped(L)  --publisher P claims position p (lap L)-->  claimed(L, P)
//   ready(L-1) / free_skipped(L) after a hole --claim--> claimed(L, P)   [reuse: see limit]
//   claimed(L, P) --P commits (release)--> ready(L)
//   claimed(L, P) --P dead, or stalled past claim_timeout (any waiter)--> skipped(L, P)
//   skipped(L, P) --P's commit failed: P is done writing--> free_skipped(L+1)
//   skipped(L, P) --P dead: a publisher at lap L+1 claims it directly
// A slot is reused for position p + N only when p is below every reliable group's floor
// (and, durable topics, below `persisted`): readers of reliable groups hold zero-copy views.
//
// Group word of position p (topic/topic_layout.hpp), per group:
//   (lap < L, any)  --subscriber S claims at dispatch, slot ready(L)-->  held(L, S, 1)
//   (lap < L, any)  --slot a hole at lap L-->                             done(L)
//   held(L, S, d)   --ack-->  done(L)        --nack / lease / S dead-->  requeued(L, d)
//   requeued(L, d)  --any subscriber of the group, timer due-->          held(L, S', d+1)
//   requeued(L, d), d >= max_deliveries --> held (by the dead-letterer) --> done
// The claim of a group word comes before the dispatch cursor moves past it (anyone helps the
// cursor), so a subscriber that dies between the two leaves a held word (redelivered), never
// a position that nobody took. The floor moves past p only when p's word is done at p's lap.
#include "shmq/topic.hpp"

#include <algorithm>
#include <bit>
#include <cstring>
#include <optional>
#include <thread>

#include <sys/types.h>
#include <unistd.h>

#include "core/call_util.hpp"
#include "platform/crash_point.hpp"
#include "platform/futex.hpp"
#include "platform/idle.hpp"
#include "shmq/dead_letter.hpp"
#include "platform/process.hpp"
#include "ring/ring.hpp"
#include "ring/slot_word.hpp"
#include "segment/layout.hpp"
#include "segment/segment.hpp"
#include "topic/topic_internal.hpp"
#include "topic/topic_layout.hpp"
#include "topic/topic_log.hpp"
#include "persist/meta.hpp"
#include "log/file.hpp"

namespace shmq {

using detail::GroupRow;
using detail::GroupSlot;
using detail::GroupStatus;
using detail::Segment;
using detail::SlotState;

std::string_view to_string(GroupPolicy p) noexcept {
  return p == GroupPolicy::lossy ? "lossy" : "reliable";
}
std::string_view to_string(StallAction a) noexcept {
  return a == StallAction::detach ? "detach" : "hold";
}

namespace detail {

TopicHeader& topic_header(const Segment& s) noexcept {
  return *reinterpret_cast<TopicHeader*>(s.topic_region());
}
GroupRow& group_row(const Segment& s, std::uint32_t g) noexcept {
  return reinterpret_cast<GroupRow*>(s.topic_region() + sizeof(TopicHeader))[g];
}
std::atomic<std::uint64_t>& group_word(const Segment& s, std::uint32_t g, std::uint64_t pos) noexcept {
  auto* base = s.topic_region() + group_arrays_offset(s.max_groups()) +
               std::uint64_t(g) * group_arrays_bytes(s.slot_count());
  return reinterpret_cast<std::atomic<std::uint64_t>*>(base)[pos & (s.slot_count() - 1)];
}
std::atomic<std::uint64_t>& group_timer(const Segment& s, std::uint32_t g, std::uint64_t pos) noexcept {
  auto* base = s.topic_region() + group_arrays_offset(s.max_groups()) +
               std::uint64_t(g) * group_arrays_bytes(s.slot_count());
  return reinterpret_cast<std::atomic<std::uint64_t>*>(base)[s.slot_count() + (pos & (s.slot_count() - 1))];
}

std::uint64_t now_ms() noexcept { return monotonic_coarse_ns() / 1'000'000; }

// The queue options a topic's segment is made with (geometry, policy, durability).
QueueOptions topic_segment_options(const TopicOptions& o) {
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


std::string group_name_of(const GroupRow& r) {
  char n[kGroupNameField];
  std::memcpy(n, r.name, sizeof n);
  n[kMaxGroupNameLength] = '\0';
  return std::string(n, ::strnlen(n, kMaxGroupNameLength));
}

// True while the member that `owner` (row | generation tag) names is registered and its
// process runs. A row taken again since (another generation) names somebody else: false.
bool owner_alive(const Segment& s, std::uint32_t owner) noexcept {
  const std::uint32_t row = owner_row(owner);
  if (row >= s.max_members()) return false;
  const std::uint64_t st = s.member(row).state.load(std::memory_order_acquire);
  const auto status = member_status(st);
  if (status != MemberStatus::active && status != MemberStatus::joining) return false;
  if ((member_generation(st) & 0xff) != owner_tag(owner)) return false;
  return process_alive(static_cast<pid_t>(member_pid(st)),
                       s.member(row).start_time.load(std::memory_order_relaxed));
}

// Subscriber rows carry their group in the `requeued` counter (unused by subscribers):
// group index + 1 | group generation << 8.
std::uint64_t member_group_tag(std::uint32_t g, std::uint32_t gen) noexcept {
  return (std::uint64_t(g) + 1) | (std::uint64_t(gen & 0xffff) << 8);
}

std::uint32_t live_members_of(const Segment& s, std::uint32_t g, std::uint32_t gen) noexcept {
  std::uint32_t n = 0;
  const std::uint64_t tag = member_group_tag(g, gen);
  for (std::uint32_t i = 0; i < s.max_members(); ++i) {
    const std::uint64_t st = s.member(i).state.load(std::memory_order_acquire);
    if (member_status(st) != MemberStatus::active || member_role(st) != Role::subscriber) continue;
    if (s.member(i).requeued.load(std::memory_order_relaxed) != tag) continue;
    if (process_alive(static_cast<pid_t>(member_pid(st)),
                      s.member(i).start_time.load(std::memory_order_relaxed)))
      ++n;
  }
  return n;
}

// Moves the group's floor past every done position; wakes publishers that wait for it.
void advance_floor(Segment& s, std::uint32_t g) noexcept {
  GroupRow& r = group_row(s, g);
  const std::uint32_t shift = s.slot_shift();
  std::uint64_t f = r.floor.value.load(std::memory_order_acquire);
  bool moved = false;
  // Bounded: a process that keeps rewriting words cannot keep us here.
  for (std::uint64_t steps = 0; steps < 2 * std::uint64_t(s.slot_count()); ++steps) {
    const std::uint64_t d = r.dispatch.value.load(std::memory_order_acquire);
    if (f >= d) break;
    const std::uint64_t w = group_word(s, g, f).load(std::memory_order_acquire);
    if (gword_lap(w) != lap_of(f, shift) || gword_state(w) != GroupSlot::done) break;
    // Release: our reads of the slot's bytes (an ack) happen-before a publisher's acquire
    // of the floor and its overwrite.
    // seq_cst: pairs with a sleeping publisher's bit and re-check (wait_on).
    if (r.floor.value.compare_exchange_weak(f, f + 1, std::memory_order_seq_cst)) {
      ++f;
      moved = true;
    }
  }
  if (!moved) return;
  if (r.blocked_since_ns.load(std::memory_order_relaxed) != 0)
    r.blocked_since_ns.store(0, std::memory_order_relaxed);
  std::uint64_t st = r.state.load(std::memory_order_relaxed);
  if (group_status(st) == GroupStatus::stalled &&
      r.state.compare_exchange_strong(st, with_group_status(st, GroupStatus::active)))
    topic_header(s).groups_epoch.fetch_add(1, std::memory_order_seq_cst);
  wake_waiters(s.header().producers_wait, s.max_members());
}

// The claim at position `pos` with word `w` (claimed(L, P)): if P is dead, or has been in
// this claim longer than the claim timeout (its row's heartbeat is the start of its current
// claim), turn it into a hole that every group passes. True if it is (now) a hole.
bool repair_claim(Segment& s, std::uint64_t pos, std::uint64_t w) noexcept {
  if (word_state(w) != SlotState::claimed) return false;
  const std::uint32_t owner = word_owner(w);
  bool stuck = !owner_alive(s, owner);
  if (!stuck) {
    const std::uint64_t started =
        s.member(owner_row(owner)).heartbeat_ns.load(std::memory_order_relaxed);
    stuck = started != 0 &&
            monotonic_coarse_ns() > started + std::uint64_t(s.claim_timeout_ms()) * 1'000'000;
  }
  if (!stuck) return false;
  std::uint64_t expected = w;
  if (s.slot(pos).word.compare_exchange_strong(
          expected, make_word(word_lap(w), SlotState::skipped, owner, 1), std::memory_order_seq_cst)) {
    topic_header(s).holes.fetch_add(1, std::memory_order_relaxed);
    wake_waiters(s.header().consumers_wait, s.max_members());
    wake_waiters(s.header().producers_wait, s.max_members());
    return true;
  }
  return false;
}

// Turns held words of dead subscribers and expired leases into requeued ones; returns how
// many. Anyone may run it at any time: every change is a CAS from the word it judged.
std::uint64_t heal_group(Segment& s, std::uint32_t g) noexcept {
  GroupRow& r = group_row(s, g);
  const std::uint32_t shift = s.slot_shift();
  const std::uint64_t f = r.floor.value.load(std::memory_order_acquire);
  const std::uint64_t d = r.dispatch.value.load(std::memory_order_acquire);
  if (d - f > s.slot_count()) return 0;  // scribbled cursors: nothing sane to walk
  const std::uint64_t now = now_ms();
  std::uint64_t changed = 0;
  std::uint32_t last_dead = kNoOwner, last_alive = kNoOwner;
  for (std::uint64_t p = f; p < d; ++p) {
    std::uint64_t w = group_word(s, g, p).load(std::memory_order_acquire);
    if (gword_lap(w) != lap_of(p, shift) || gword_state(w) != GroupSlot::held) continue;
    const std::uint32_t owner = gword_owner(w);
    bool dead;
    if (owner == last_dead) dead = true;
    else if (owner == last_alive) dead = false;
    else {
      dead = !owner_alive(s, owner);
      (dead ? last_dead : last_alive) = owner;
    }
    bool expired = false;
    std::atomic<std::uint64_t>& timer = group_timer(s, g, p);
    std::uint64_t t = timer.load(std::memory_order_acquire);
    const bool lease_here = timer_lap(t) == (lap_of(p, shift) & 0xffffff) && timer_kind(t) == kTimerLease;
    if (!dead) {
      if (!lease_here) {
        // Held, but its holder has not written its lease (stopped right after its claim,
        // or its timer was overwritten): give it one, so that it expires one lease later.
        const std::uint32_t lease = s.lease_ms();
        if (lease != 0)
          timer.compare_exchange_strong(t, timer_word(lap_of(p, shift), kTimerLease, now + lease));
        continue;
      }
      expired = timer_ms(t) != 0 && timer_ms(t) <= now;
    }
    if (!dead && !expired) continue;
    // The timer by CAS from the value judged: a new holder's lease is never overwritten.
    if (!timer.compare_exchange_strong(t, timer_word(lap_of(p, shift), kTimerDue, 0))) continue;
    if (group_word(s, g, p).compare_exchange_strong(
            w, gword(lap_of(p, shift), GroupSlot::requeued, kNoOwner, gword_deliveries(w)),
            std::memory_order_seq_cst)) {
      ++changed;
      r.counters.redelivered.fetch_add(1, std::memory_order_relaxed);
    }
  }
  if (changed != 0) {
    r.requeue_epoch.value.fetch_add(1, std::memory_order_seq_cst);
    wake_waiters(s.header().consumers_wait, s.max_members());
  }
  // A dead or stalled publisher's claim where the group waits: a hole it passes (here, so
  // that a group without a waiting subscriber does not hold publishers behind a hole).
  for (std::uint64_t p = d; p < d + s.slot_count(); ++p) {
    const std::uint64_t w = s.slot(p).word.load(std::memory_order_acquire);
    const std::uint64_t lap = lap_of(p, shift);
    if (word_lap(w) == lap && repair_claim(s, p, w)) ++changed;
    const std::uint64_t w2 = s.slot(p).word.load(std::memory_order_acquire);
    const bool hole = (word_lap(w2) == lap && word_state(w2) == SlotState::skipped) ||
                      (lap_diff(word_lap(w2), lap) == 1 && word_state(w2) == SlotState::free_skipped);
    if (!hole) break;
    std::atomic<std::uint64_t>& gw = group_word(s, g, p);
    std::uint64_t gv = gw.load(std::memory_order_acquire);
    const std::int64_t gl = lap_diff(gword_lap(gv), lap);
    if (gl > 0) break;  // stale: the group is past p
    if (!(gl == 0 && gword_state(gv) != GroupSlot::none) &&
        !gw.compare_exchange_strong(gv, gword(lap, GroupSlot::done, kNoOwner, 0)))
      break;
    std::uint64_t e = p;
    if (!r.dispatch.value.compare_exchange_strong(e, p + 1, std::memory_order_acq_rel)) break;
  }
  // An acker that died between its ack and its floor update left the floor behind.
  advance_floor(s, g);
  return changed;
}

// Applies a reliable group's stall policy once it has held a publisher back for its stall
// timeout with no live subscriber.
void check_stall(Segment& s, std::uint32_t g, std::uint64_t now_ns) noexcept {
  GroupRow& r = group_row(s, g);
  std::uint64_t st = r.state.load(std::memory_order_acquire);
  if (group_status(st) != GroupStatus::active || group_policy(st) != 0) return;
  const std::uint64_t timeout = r.stall_timeout_ms.load(std::memory_order_relaxed);
  if (timeout == 0) return;
  std::uint64_t since = r.blocked_since_ns.load(std::memory_order_relaxed);
  if (since == 0) {
    r.blocked_since_ns.compare_exchange_strong(since, now_ns, std::memory_order_relaxed);
    return;
  }
  if (now_ns < since + timeout * 1'000'000) return;
  if (live_members_of(s, g, group_generation(st)) != 0) return;
  const auto to = group_on_stall(st) == 1 ? GroupStatus::detached : GroupStatus::stalled;
  if (r.state.compare_exchange_strong(st, with_group_status(st, to), std::memory_order_seq_cst)) {
    topic_header(s).groups_epoch.fetch_add(1, std::memory_order_seq_cst);
    wake_waiters(s.header().producers_wait, s.max_members());
    wake_all(s.header().consumers_wait);
  }
}

// First position publishers may not claim: every reliable, not detached group's floor + N,
// and on a durable topic persisted + N. `blocking` gets the group that sets it (or -1).
std::uint64_t publish_limit(const Segment& s, int* blocking) noexcept {
  std::uint64_t limit = UINT64_MAX;
  if (blocking) *blocking = -1;
  for (std::uint32_t g = 0; g < s.max_groups(); ++g) {
    const GroupRow& r = group_row(s, g);
    const std::uint64_t st = r.state.load(std::memory_order_acquire);
    if (!group_live(st) || group_policy(st) != 0) continue;
    // seq_cst: a sleeping publisher's re-check pairs with the floor's seq_cst CAS.
    const std::uint64_t f = r.floor.value.load(std::memory_order_seq_cst) + s.slot_count();
    if (f < limit) {
      limit = f;
      if (blocking) *blocking = static_cast<int>(g);
    }
  }
  if (s.durable()) {
    const std::uint64_t p = s.header().persisted.value.load(std::memory_order_acquire) + s.slot_count();
    if (p < limit) {
      limit = p;
      if (blocking) *blocking = -1;
    }
  }
  return limit;
}

std::uint64_t topic_heal(Segment& s) noexcept {
  std::uint64_t changed = 0;
  for (std::uint32_t g = 0; g < s.max_groups(); ++g) {
    GroupRow& r = group_row(s, g);
    const std::uint64_t st = r.state.load(std::memory_order_acquire);
    if (group_status(st) == GroupStatus::creating) {
      // A creator that died before publishing the row: free it.
      if (!process_alive(static_cast<pid_t>(group_creator(st)), 0)) {
        std::uint64_t e = st;
        if (r.state.compare_exchange_strong(
                e, group_state(GroupStatus::free, 0, 0, group_generation(st)))) ++changed;
      }
      continue;
    }
    if (!group_live(st)) continue;
    changed += heal_group(s, g);
    // Stall policy: a reliable group that holds the ring full is blocking publishers (or
    // would block the next one); one that does not is not blocked (the clock restarts).
    if (group_policy(st) == 0) {
      const std::uint64_t tail = s.header().tail.value.load(std::memory_order_acquire);
      if (tail >= r.floor.value.load(std::memory_order_acquire) + s.slot_count())
        check_stall(s, g, monotonic_coarse_ns());
      else if (r.blocked_since_ns.load(std::memory_order_relaxed) != 0)
        r.blocked_since_ns.store(0, std::memory_order_relaxed);
    }
  }
  // The oldest claim in the ring, which a publisher waiting for reuse may be stuck behind.
  const std::uint64_t t = s.header().tail.value.load(std::memory_order_acquire);
  if (t >= s.slot_count()) {
    const std::uint64_t p = t - s.slot_count();
    const std::uint64_t w = s.slot(p).word.load(std::memory_order_acquire);
    if (word_lap(w) == lap_of(p, s.slot_shift()) && repair_claim(s, p, w)) ++changed;
  }
  // Rows of dead members: their holds were requeued and their claims repaired above (a
  // word names a row with its generation, so a row freed and taken again is never
  // mistaken for its former self).
  // A row left `joining` or `leaving` by a process that died while it registered or
  // unregistered is freed the same way (pid only: a start time may not be written yet).
  for (std::uint32_t i = 0; i < s.max_members(); ++i) {
    std::uint64_t st = s.member(i).state.load(std::memory_order_acquire);
    const MemberStatus status = member_status(st);
    if (status == MemberStatus::free) continue;
    if (member_role(st) != Role::publisher && member_role(st) != Role::subscriber &&
        status == MemberStatus::active)
      continue;
    const std::uint64_t start = status == MemberStatus::active
                                    ? s.member(i).start_time.load(std::memory_order_relaxed)
                                    : 0;
    if (process_alive(static_cast<pid_t>(member_pid(st)), start)) continue;
    const std::uint64_t leaving = with_status(st, MemberStatus::leaving);
    if (status == MemberStatus::leaving || s.member(i).state.compare_exchange_strong(st, leaving)) {
      // Publish the holds of this row as requeued before the row can be reused.
      for (std::uint32_t g = 0; g < s.max_groups(); ++g)
        if (group_live(group_row(s, g).state.load(std::memory_order_acquire)))
          changed += heal_group(s, g);
      s.free_member(i, leaving);
      ++changed;
    }
  }
  return changed;
}

}  // namespace detail

using namespace detail;

namespace {


Error topic_error(Errc c, std::string m) { return Error(c, std::move(m)); }

// Copies `n` bytes that a publisher may overwrite meanwhile (a lossy group's read): word by
// word with relaxed atomic loads, so the race is a defined one; the caller validates the
// slot word afterwards (seqlock).
void racy_copy(std::byte* dst, const std::byte* src, std::size_t n) noexcept {
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const std::uint64_t v = __atomic_load_n(reinterpret_cast<const std::uint64_t*>(src + i), __ATOMIC_RELAXED);
    std::memcpy(dst + i, &v, 8);
  }
  for (; i < n; ++i) dst[i] = static_cast<std::byte>(__atomic_load_n(reinterpret_cast<const unsigned char*>(src + i), __ATOMIC_RELAXED));
}


// A group's dead-letter queue: the topic's slots, room for the 32-byte envelope.
QueueOptions dlq_options(const Segment& s) {
  QueueOptions dq;
  dq.slot_count = s.slot_count();
  dq.slot_size = std::min<std::uint32_t>(s.slot_size() + 64, 1u << 20);
  dq.max_members = s.max_members();
  dq.mode = s.options().mode;
  dq.max_deliveries = 0;
  dq.dead_letter = false;
  dq.lease = std::chrono::milliseconds(30'000);
  return dq;
}

std::string dlq_name(std::string_view topic, std::string_view group) {
  std::string n(topic);
  n.append(".").append(group).append(".dlq");
  return n;
}

}  // namespace

// ---------------------------------------------------------------------------------------
// Topic

std::string Topic::validate_group_name(std::string_view name) {
  if (name.empty() || name.size() > kMaxGroupNameLength)
    return "invalid group name: 1 to " + std::to_string(kMaxGroupNameLength) + " characters";
  for (char c : name)
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
          c == '-'))
      return "invalid group name '" + std::string(name) + "': only [A-Za-z0-9_-]";
  return {};
}

Result<Topic> Topic::create(std::string_view name, const TopicOptions& o) {
  if (o.max_groups < 1 || o.max_groups > kMaxGroups)
    return topic_error(Errc::invalid_argument, "max groups must be from 1 to " +
                                                   std::to_string(kMaxGroups) + ", got " +
                                                   std::to_string(o.max_groups));
  if (o.history > o.slot_count)
    return topic_error(Errc::invalid_argument, "history must be from 0 to the slot count (" +
                                                   std::to_string(o.slot_count) + "), got " +
                                                   std::to_string(o.history));
  if (o.max_deliveries > 4095)
    return topic_error(Errc::invalid_argument, "max deliveries must be from 0 to 4095 on a topic, got " +
                                                   std::to_string(o.max_deliveries));
  if (o.durability != Durability::none && o.data_dir.empty())
    return topic_error(Errc::invalid_argument, "a durable topic needs a data dir");
  if (o.durability != Durability::none && o.data_dir.size() > kMaxDataDirLength)
    return topic_error(Errc::invalid_argument, "data dir path longer than " +
                                                   std::to_string(kMaxDataDirLength) + " bytes");
  if (o.lease.count() < 0 || o.lease.count() > UINT32_MAX || o.claim_timeout.count() <= 0 ||
      o.claim_timeout.count() > UINT32_MAX || o.retain_age.count() < 0 ||
      o.flush_interval.count() < 0 || o.flush_interval.count() > UINT32_MAX)
    return topic_error(Errc::invalid_argument, "lease, claim timeout, flush interval or retain age out of range");
  if (name.size() > kMaxNameLength - 4 - 2 - kMaxGroupNameLength && o.dead_letter)
    return topic_error(Errc::invalid_argument,
                       "invalid topic name: longer than " +
                           std::to_string(kMaxNameLength - 4 - 2 - kMaxGroupNameLength) +
                           " characters (room is kept for its groups' dead-letter queues "
                           "'<topic>.<group>.dlq')");
  if (auto e = Queue::validate_name(name); !e.empty()) return topic_error(Errc::invalid_argument, e);
  QueueOptions q = topic_segment_options(o);
  if (auto e = Segment::validate_options(q); !e.empty())
    return topic_error(Errc::invalid_argument, "cannot create '" + std::string(name) + "': " + e);
  if (o.durability != Durability::none) {
    // The topic's files: DIR/NAME/topic.meta first (so that shmqd can rebuild the topic from
    // its data dir alone). A dir that already holds a topic's log is never reused silently.
    auto dir = prepare_data_dir(queue_dir(o.data_dir, name));
    if (!dir.ok()) return dir.error();
    auto d = log::posix_file_system().open_dir(dir.value(), {.create = false, .require_private = true});
    if (!d.ok()) return d.error();
    auto names = d.value()->list();
    if (!names.ok()) return names.error();
    for (const auto& n : names.value())
      if (n == kTopicMetaFile || n.starts_with("t-"))
        return topic_error(Errc::already_exists,
                           dir.value() + " already holds topic '" + std::string(name) +
                               "' (its log): start shmqd --data-dir " + o.data_dir + " " +
                               std::string(name) + " to rebuild it, or remove that directory");
    const std::string meta = format_topic_meta(std::string(name), o);
    if (auto w = d.value()->write_new_file(kTopicMetaFile, std::as_bytes(std::span(meta)), false); !w.ok())
      return w.error();
    auto r = log::posix_file_system().open_dir(o.data_dir, {.create = false, .require_private = false});
    if (r.ok()) q.data_dir = r.value()->path();
  }
  auto seg = Segment::create(name, q, 0, {}, o.max_groups, [&](Segment& s) {
    TopicHeader& th = topic_header(s);
    th.history = o.history == 0 ? o.slot_count : o.history;
    th.max_groups = o.max_groups;
    th.retain_bytes = o.retain_bytes;
    th.retain_age_s = static_cast<std::uint64_t>(o.retain_age.count());
  });
  if (!seg.ok()) return seg.error();
  return Topic(std::move(seg.value()));
}

Result<Topic> Topic::open(std::string_view name) {
  auto seg = Segment::open(name);
  if (!seg.ok()) return seg.error();
  if (!seg.value()->is_topic())
    return topic_error(Errc::mismatch, "'" + std::string(name) + "' is a queue, not a topic");
  const TopicHeader& th = topic_header(*seg.value());
  if (th.max_groups != seg.value()->max_groups() || th.history > seg.value()->slot_count())
    return topic_error(Errc::corrupt, "corrupt topic '" + std::string(name) + "': group table header");
  return Topic(std::move(seg.value()));
}

bool Topic::is_topic(std::string_view name) {
  auto seg = Segment::open(name);
  return seg.ok() && seg.value()->is_topic();
}

VoidResult Topic::remove(std::string_view name) {
  std::vector<std::string> dlqs;
  {
    auto t = open(name);
    if (!t.ok()) return t.error();
    for (const auto& g : t.value().groups()) dlqs.push_back(dlq_name(name, g.name));
    t.value().segment()->mark_removed();
  }
  auto r = Segment::remove(name);
  if (!r.ok()) return r;
  const auto owner = Segment::owner_of(name);
  for (const auto& d : dlqs) {
    const auto o = Segment::owner_of(d);
    if (o.ok() && o.value().uid == ::geteuid()) (void)Segment::remove(d);
  }
  (void)owner;
  return {};
}

const std::string& Topic::name() const noexcept { return segment_->name(); }

TopicOptions Topic::options() const {
  const Segment& s = *segment_;
  const QueueOptions q = s.options();
  TopicOptions o;
  o.slot_count = q.slot_count;
  o.slot_size = q.slot_size;
  o.max_members = q.max_members;
  o.max_groups = s.max_groups();
  o.mode = q.mode;
  o.history = topic_header(s).history;
  o.lease = q.lease;
  o.max_deliveries = q.max_deliveries;
  o.dead_letter = q.dead_letter;
  o.claim_timeout = q.claim_timeout;
  o.durability = q.durability;
  o.data_dir = q.data_dir;
  o.flush_interval = q.flush_interval;
  o.retain_bytes = topic_header(s).retain_bytes;
  o.retain_age = std::chrono::seconds(topic_header(s).retain_age_s);
  return o;
}

namespace {

GroupStats group_stats(const Segment& s, std::uint32_t g, std::uint64_t st) {
  const GroupRow& r = group_row(s, g);
  GroupStats gs;
  gs.name = group_name_of(r);
  gs.policy = group_policy(st) ? GroupPolicy::lossy : GroupPolicy::reliable;
  gs.on_stall = group_on_stall(st) ? StallAction::detach : StallAction::hold;
  gs.stall_timeout_ms = r.stall_timeout_ms.load(std::memory_order_relaxed);
  switch (group_status(st)) {
    case GroupStatus::stalled: gs.state = "stalled"; break;
    case GroupStatus::detached: gs.state = "detached"; break;
    default: gs.state = "active"; break;
  }
  gs.position = r.dispatch.value.load(std::memory_order_acquire);
  gs.acked = r.floor.value.load(std::memory_order_acquire);
  const std::uint64_t head = s.header().tail.value.load(std::memory_order_acquire);
  gs.lag = head > gs.acked ? head - gs.acked : 0;
  const std::uint32_t shift = s.slot_shift();
  if (gs.position >= gs.acked && gs.position - gs.acked <= s.slot_count()) {
    for (std::uint64_t p = gs.acked; p < gs.position; ++p) {
      const std::uint64_t w = group_word(s, g, p).load(std::memory_order_relaxed);
      if (gword_lap(w) != lap_of(p, shift)) continue;
      if (gword_state(w) == GroupSlot::held) ++gs.in_flight;
      if (gword_state(w) == GroupSlot::requeued) ++gs.requeued;
    }
  }
  gs.members = live_members_of(s, g, group_generation(st));
  gs.delivered = r.counters.delivered.load(std::memory_order_relaxed);
  gs.acks = r.counters.acks.load(std::memory_order_relaxed);
  gs.redelivered = r.counters.redelivered.load(std::memory_order_relaxed);
  gs.missed = r.counters.missed.load(std::memory_order_relaxed);
  gs.dead_lettered = r.counters.dead_lettered.load(std::memory_order_relaxed);
  gs.dropped = r.counters.dropped.load(std::memory_order_relaxed);
  return gs;
}

// The row of live (or detached) group `name`: index, or -1.
int find_group(const Segment& s, std::string_view name, std::uint64_t* state = nullptr) {
  for (std::uint32_t g = 0; g < s.max_groups(); ++g) {
    const std::uint64_t st = group_row(s, g).state.load(std::memory_order_acquire);
    const auto status = group_status(st);
    if (status == GroupStatus::free || status == GroupStatus::creating) continue;
    if (group_name_of(group_row(s, g)) != name) continue;
    if (state) *state = st;
    return static_cast<int>(g);
  }
  return -1;
}

// The oldest position a group can start at now.
std::uint64_t earliest_position(const Segment& s) {
  const std::uint64_t head = s.header().tail.value.load(std::memory_order_acquire);
  const std::uint64_t base = s.header().base_position;
  // At most N - 1 back: the slot of head - N is the next one a publisher overwrites.
  const std::uint64_t hist = std::min<std::uint64_t>(topic_header(s).history, s.slot_count() - 1);
  std::uint64_t e = head > hist ? head - hist : 0;
  e = std::max(e, base);
  if (s.durable()) {
    // What the retained log still holds (replayed from disk).
    const std::uint64_t lf = topic_header(s).log_first.load(std::memory_order_acquire);
    if (lf < e) e = lf;
  }
  return e;
}

}  // namespace

std::vector<GroupStats> Topic::groups() const {
  std::vector<GroupStats> out;
  const Segment& s = *segment_;
  for (std::uint32_t g = 0; g < s.max_groups(); ++g) {
    const std::uint64_t st = group_row(s, g).state.load(std::memory_order_acquire);
    const auto status = group_status(st);
    if (status == GroupStatus::free || status == GroupStatus::creating) continue;
    out.push_back(group_stats(s, g, st));
  }
  return out;
}

Result<GroupStats> Topic::create_group(std::string_view name, const GroupOptions& o) {
  if (auto e = validate_group_name(name); !e.empty()) return topic_error(Errc::invalid_argument, e);
  Segment& s = *segment_;
  if (o.stall_timeout.count() < 0)
    return topic_error(Errc::invalid_argument, "stall timeout must not be negative");
  if (find_group(s, name) >= 0)
    return topic_error(Errc::already_exists, "group '" + std::string(name) + "' of topic '" +
                                                  s.name() + "' already exists");
  auto no_row = [&] {
    return topic_error(Errc::no_space, "topic '" + s.name() + "' has no free group row (max " +
                                           std::to_string(s.max_groups()) + ")");
  };
  bool any_free = false;
  for (std::uint32_t g = 0; g < s.max_groups() && !any_free; ++g)
    any_free = group_status(group_row(s, g).state.load(std::memory_order_acquire)) == GroupStatus::free;
  if (!any_free) return no_row();
  // The group's dead-letter queue, made before the group can deliver anything (and
  // removed again if the group cannot be made after all).
  bool made_dlq = false;
  if (s.dead_letter()) {
    auto d = Queue::create(dlq_name(s.name(), name), dlq_options(s));
    if (!d.ok() && d.error().code() != Errc::already_exists)
      return topic_error(d.error().code(), "cannot create the dead-letter queue of group '" +
                                               std::string(name) + "': " + d.error().message());
    made_dlq = d.ok();
  }
  auto undo_dlq = [&] {
    if (made_dlq) (void)Queue::remove(dlq_name(s.name(), name));
  };
  // Where it starts, checked before anything is claimed (and as late as can be: the
  // publishers run on meanwhile).
  const std::uint64_t head = s.header().tail.value.load(std::memory_order_acquire);
  std::uint64_t start = head;
  if (o.start.kind == StartAt::Kind::earliest) {
    start = earliest_position(s);
  } else if (o.start.kind == StartAt::Kind::position) {
    const std::uint64_t e = earliest_position(s);
    if (o.start.position < e || o.start.position > head) {
      undo_dlq();
      return topic_error(Errc::invalid_argument,
                         "start position " + std::to_string(o.start.position) +
                             " is not retained: topic '" + s.name() + "' keeps positions " +
                             std::to_string(e) + " to " + std::to_string(head));
    }
    start = o.start.position;
  }
  const std::uint32_t pid = static_cast<std::uint32_t>(::getpid());
  for (std::uint32_t g = 0; g < s.max_groups(); ++g) {
    GroupRow& r = group_row(s, g);
    std::uint64_t st = r.state.load(std::memory_order_acquire);
    if (group_status(st) != GroupStatus::free) continue;
    const std::uint32_t gen = group_generation(st) + 1;
    const std::uint64_t creating = group_state(GroupStatus::creating, 0, 0, gen, pid);
    if (!r.state.compare_exchange_strong(st, creating, std::memory_order_acq_rel)) continue;
    std::memset(r.name, 0, sizeof r.name);
    std::memcpy(r.name, name.data(), name.size());
    // Another creator of the same name. Each writes its name, then (seq_cst) scans: of two
    // concurrent creators at least one sees the other's name. A live row of that name, or
    // a lower row creating it, wins over us; a higher row creating it is waited for (it
    // either sees us and gives up, or became live: then we give up). Exactly one survives.
    r.created_ns.fetch_add(0, std::memory_order_seq_cst);  // a full barrier after the name
    bool lost = false;
    for (std::uint32_t o2 = 0; o2 < s.max_groups() && !lost; ++o2) {
      if (o2 == g) continue;
      for (int waited = 0;; ++waited) {
        const std::uint64_t w = group_row(s, o2).state.load(std::memory_order_seq_cst);
        const auto status = group_status(w);
        if (status == GroupStatus::free) break;
        if (group_name_of(group_row(s, o2)) != name) break;
        if (status != GroupStatus::creating || o2 < g) {
          lost = true;
          break;
        }
        // A higher row creating the same name: it resolves in microseconds (or its
        // creator died: healing frees it). Bounded.
        if (waited > 2000 || !process_alive(static_cast<pid_t>(group_creator(w)), 0)) break;
        std::this_thread::sleep_for(std::chrono::microseconds(500));  // another creator's step
      }
    }
    if (lost) {
      r.state.store(group_state(GroupStatus::free, 0, 0, gen), std::memory_order_release);
      return topic_error(Errc::already_exists, "group '" + std::string(name) + "' of topic '" +
                                                    s.name() + "' already exists");
    }
    const std::uint32_t shift = s.slot_shift();
    // A fresh table: zero is "not taken" for every position of the first lap, and any older
    // lap for later ones. A previous group's words in this row could say otherwise.
    for (std::uint64_t i = 0; i < s.slot_count(); ++i) {
      group_word(s, g, i).store(0, std::memory_order_relaxed);
      group_timer(s, g, i).store(0, std::memory_order_relaxed);
    }
    (void)shift;
    r.stall_timeout_ms.store(static_cast<std::uint64_t>(o.stall_timeout.count()), std::memory_order_relaxed);
    r.created_ns.store(monotonic_ns(), std::memory_order_relaxed);
    r.blocked_since_ns.store(0, std::memory_order_relaxed);
    r.dispatch.value.store(start, std::memory_order_relaxed);
    r.floor.value.store(start, std::memory_order_relaxed);
    r.requeue_epoch.value.store(0, std::memory_order_relaxed);
    r.counters.delivered.store(0, std::memory_order_relaxed);
    r.counters.acks.store(0, std::memory_order_relaxed);
    r.counters.redelivered.store(0, std::memory_order_relaxed);
    r.counters.missed.store(0, std::memory_order_relaxed);
    r.counters.dead_lettered.store(0, std::memory_order_relaxed);
    r.counters.dropped.store(0, std::memory_order_relaxed);
    if (s.durable()) {
      // DIR/TOPIC/group-<name>.meta: the group survives a reboot from the moment it exists.
      GroupMeta gm{std::string(name), o, start};
      const std::string text = format_group_meta(gm);
      VoidResult w = Error(Errc::system_error, "no data dir");
      auto d = log::posix_file_system().open_dir(queue_dir(s.data_dir(), s.name()),
                                                 {.create = false, .require_private = false});
      if (d.ok()) w = d.value()->write_new_file(group_meta_file(name), std::as_bytes(std::span(text)), true);
      else w = d.error();
      if (!w.ok()) {
        r.state.store(group_state(GroupStatus::free, 0, 0, gen), std::memory_order_release);
        undo_dlq();
        return topic_error(w.error().code(), "cannot save group '" + std::string(name) + "': " +
                                                 w.error().message());
      }
    }
    const std::uint64_t active =
        group_state(GroupStatus::active, o.policy == GroupPolicy::lossy ? 1 : 0,
                    o.on_stall == StallAction::detach ? 1 : 0, gen);
    // seq_cst: a publisher that computes its limit after this sees the group (and its floor).
    r.state.store(active, std::memory_order_seq_cst);
    topic_header(s).groups_epoch.fetch_add(1, std::memory_order_seq_cst);
    if (!s.durable()) {
      // Publishers that ran on while we created the group may have lapped its start: move
      // it to the oldest position they cannot overwrite any more (unless a subscriber
      // already took from it). A publisher's claim is bounded by the tail it read, which
      // was at most this tail; its limit now includes this group.
      const std::uint64_t t = s.header().tail.value.load(std::memory_order_seq_cst);
      if (t > start + s.slot_count() - 1) {
        const std::uint64_t to = t - (s.slot_count() - 1);
        std::uint64_t e = start;
        if (r.dispatch.value.compare_exchange_strong(e, to, std::memory_order_seq_cst)) {
          std::uint64_t f = start;
          r.floor.value.compare_exchange_strong(f, to, std::memory_order_seq_cst);
        }
      }
    }
    return group_stats(s, g, active);
  }
  undo_dlq();
  return no_row();
}

VoidResult Topic::delete_group(std::string_view name) {
  Segment& s = *segment_;
  std::uint64_t st = 0;
  const int g = find_group(s, name, &st);
  if (g < 0)
    return topic_error(Errc::not_found, "topic '" + s.name() + "' has no group '" + std::string(name) + "'");
  GroupRow& r = group_row(s, static_cast<std::uint32_t>(g));
  // Durable: the group's .meta goes first, so that a crash between the two never brings
  // a deleted group back after a reboot (a crash leaves it live in memory, gone on disk).
  if (s.durable()) {
    auto d = log::posix_file_system().open_dir(queue_dir(s.data_dir(), s.name()),
                                               {.create = false, .require_private = false});
    if (d.ok() && d.value()->unlink(group_meta_file(name)).ok()) (void)d.value()->sync();
  }
  if (!r.state.compare_exchange_strong(st, group_state(GroupStatus::free, 0, 0, group_generation(st)),
                                       std::memory_order_seq_cst))
    return topic_error(Errc::system_error, "group '" + std::string(name) + "' changed meanwhile; try again");
  topic_header(s).groups_epoch.fetch_add(1, std::memory_order_seq_cst);
  wake_all(s.header().consumers_wait);
  wake_all(s.header().producers_wait);
  // Its dead-letter queue goes with it (ours only: another user's is not this group's).
  const std::string dlq = dlq_name(s.name(), name);
  if (const auto o = Segment::owner_of(dlq); o.ok() && o.value().uid == s.owner_uid())
    (void)Segment::remove(dlq);
  return {};
}

std::uint64_t Topic::heal() { return topic_heal(*segment_); }

TopicStats Topic::stats() const {
  const Segment& s = *segment_;
  TopicStats t;
  t.slot_count = s.slot_count();
  t.slot_size = s.slot_size();
  t.max_message_size = s.max_message_size();
  t.max_groups = s.max_groups();
  t.history = topic_header(s).history;
  t.durability = s.durability();
  t.head = s.header().tail.value.load(std::memory_order_acquire);
  t.earliest = earliest_position(s);
  t.persisted = s.header().persisted.value.load(std::memory_order_acquire);
  t.published = s.header().retired_sent.load(std::memory_order_relaxed);
  t.holes = topic_header(s).holes.load(std::memory_order_relaxed);
  for (std::uint32_t i = 0; i < s.max_members(); ++i) {
    const std::uint64_t st = s.member(i).state.load(std::memory_order_acquire);
    if (member_status(st) != MemberStatus::active) continue;
    if (member_role(st) == Role::publisher) {
      ++t.publishers;
      t.published += s.member(i).sent.load(std::memory_order_relaxed);
    } else if (member_role(st) == Role::subscriber) {
      ++t.subscribers;
    }
  }
  t.groups = groups();
  return t;
}

Result<Publisher> Topic::publisher(const WaitOptions& wait) {
  auto p = publisher();
  if (p.ok()) p.value().wait_ = wait;
  return p;
}

Result<Subscriber> Topic::subscriber(std::string_view group, const WaitOptions& wait) {
  auto sub = subscriber(group);
  if (sub.ok()) sub.value().wait_ = wait;
  return sub;
}

Result<Publisher> Topic::publisher() {
  auto m = segment_->register_member(Role::publisher);
  if (!m.ok() && m.error().code() == Errc::no_space) {
    topic_heal(*segment_);
    m = segment_->register_member(Role::publisher);
  }
  if (!m.ok()) return m.error();
  return Publisher(segment_, m.value().row, m.value().owner, m.value().word);
}

Result<Subscriber> Topic::subscriber(std::string_view group) {
  Segment& s = *segment_;
  std::uint64_t st = 0;
  const int g = find_group(s, group, &st);
  if (g < 0)
    return topic_error(Errc::not_found, "topic '" + s.name() + "' has no group '" + std::string(group) + "'");
  if (group_status(st) == GroupStatus::detached)
    return topic_error(Errc::invalid_argument, "group '" + std::string(group) + "' of topic '" +
                                                   s.name() + "' is detached (it stalled); delete and create it again");
  auto m = s.register_member(Role::subscriber);
  if (!m.ok() && m.error().code() == Errc::no_space) {
    topic_heal(s);
    m = s.register_member(Role::subscriber);
  }
  if (!m.ok()) return m.error();
  s.member(m.value().row)
      .requeued.store(member_group_tag(static_cast<std::uint32_t>(g), group_generation(st)),
                      std::memory_order_release);
  return Subscriber(segment_, m.value().row, m.value().owner, m.value().word,
                    static_cast<std::uint32_t>(g), group_generation(st), std::string(group));
}

// ---------------------------------------------------------------------------------------
// Publisher

Publisher::Publisher(std::shared_ptr<Segment> seg, std::uint32_t row, std::uint32_t owner,
                     std::uint64_t row_word)
    : seg_(std::move(seg)), row_(row), owner_(owner), row_word_(row_word),
      interrupted_(std::make_shared<std::atomic<bool>>(false)) {
  next_id_ = (std::uint64_t(::getpid()) << 32) ^ (monotonic_ns() << 8);
  next_id_ |= std::uint64_t{1} << 63;
}

Publisher::Publisher(Publisher&& o) noexcept = default;
Publisher& Publisher::operator=(Publisher&& o) noexcept = default;

Publisher::~Publisher() {
  if (!seg_) return;
  seg_->unregister_member(MemberTicket{row_, owner_, row_word_});
}

void Publisher::interrupt() noexcept {
  if (interrupted_) interrupted_->store(true);
  if (seg_) wake_all(seg_->header().producers_wait);
}

Status Publisher::send(Bytes m, std::uint64_t id) {
  return publish(m, id, std::chrono::steady_clock::time_point::max(), true);
}
Status Publisher::try_send(Bytes m, std::uint64_t id) {
  return publish(m, id, std::chrono::steady_clock::now(), false);
}
Status Publisher::send_for(Bytes m, std::chrono::nanoseconds timeout, std::uint64_t id) {
  return publish(m, id, deadline_after(timeout), true);
}

Status Publisher::publish(Bytes msg, std::uint64_t id, std::chrono::steady_clock::time_point deadline,
                          bool wait) {
  if (!seg_) return Status::invalid;
  Segment& s = *seg_;
  if (msg.size() > s.max_message_size()) return Status::too_large;
  if (!s.owns(MemberTicket{row_, owner_, row_word_})) return Status::evicted;
  const std::uint64_t n = s.slot_count();
  const std::uint32_t shift = s.slot_shift();
  MemberRow& me = s.member(row_);
  if (id == 0) id = ++next_id_;
  std::optional<Idle> idle;  // made at the first look that finds the ring full
  for (;;) {
    const std::uint64_t h = s.header().tail.value.load(std::memory_order_acquire);
    const std::uint64_t lap = lap_of(h, shift);
    std::atomic<std::uint64_t>& word = s.slot(h).word;
    std::uint64_t w = word.load(std::memory_order_acquire);
    const std::int64_t dl = lap_diff(word_lap(w), lap);
    if (dl > 0 || (dl == 0 && !is_free(word_state(w)))) {
      // Claimed at this lap already: help the cursor on.
      std::uint64_t e = h;
      s.header().tail.value.compare_exchange_strong(e, h + 1, std::memory_order_acq_rel);
      continue;
    }
    bool may_claim = true;
    if (h >= n) {
      // The slot held position h - N (a message or a hole): reuse it only once every
      // reliable group (and the persister) is past it, and never under a writer that may
      // still write.
      const std::uint64_t epoch = topic_header(s).groups_epoch.load(std::memory_order_acquire);
      if (h >= limit_ || epoch != limit_epoch_) {
        limit_epoch_ = epoch;
        limit_ = publish_limit(s);
      }
      if (h >= limit_) may_claim = false;
    }
    bool stuck_claim = false;
    if (dl < 0 && may_claim) {
      const SlotState ps = word_state(w);
      if (ps == SlotState::claimed) {
        // The previous lap's claim never committed: a dead or stopped publisher. Repaired
        // into a hole after the claim timeout (or at once if it is dead); wait meanwhile.
        may_claim = false;
        stuck_claim = !repair_claim(s, h - n, w);
        if (!stuck_claim) continue;
      } else if (ps == SlotState::skipped && owner_alive(s, word_owner(w))) {
        // A hole whose writer may still be writing into it (stopped past its claim
        // timeout): the slot cannot be reused, but the position need not wait for it.
        // Carry the hole to this lap (h is a hole for every group too) and go on at h + 1;
        // the writer, once it runs again, frees the slot at whatever lap it finds it.
        if (word.compare_exchange_strong(w, make_word(lap, SlotState::skipped, word_owner(w), 1),
                                         std::memory_order_seq_cst)) {
          topic_header(s).holes.fetch_add(1, std::memory_order_relaxed);
          std::uint64_t e = h;
          s.header().tail.value.compare_exchange_strong(e, h + 1, std::memory_order_acq_rel);
          wake_waiters(s.header().consumers_wait, s.max_members());
        }
        continue;
      }
    }
    if (may_claim) {
      // The start of this claim, for repair_claim's stall test.
      me.heartbeat_ns.store(monotonic_coarse_ns(), std::memory_order_relaxed);
      const std::uint64_t claimed = make_word(lap, SlotState::claimed, owner_, 1);
      if (!word.compare_exchange_strong(w, claimed, std::memory_order_acq_rel)) continue;
      release_fence_before_write();
      SHMQ_CRASH_POINT("topic.publish.after_claim");
      std::uint64_t e = h;
      s.header().tail.value.compare_exchange_strong(e, h + 1, std::memory_order_acq_rel);
      SlotHeader& sh = s.slot(h);
      sh.position.store(h, std::memory_order_relaxed);
      sh.id.store(id, std::memory_order_relaxed);
      sh.length.store(static_cast<std::uint32_t>(msg.size()), std::memory_order_relaxed);
      sh.enqueued_ns.store(monotonic_coarse_ns(), std::memory_order_relaxed);
      if (!msg.empty()) std::memcpy(s.payload(h), msg.data(), msg.size());
      std::uint64_t c = claimed;
      // seq_cst: pairs with a sleeping subscriber's bit (wait_on), as on queues.
      if (!word.compare_exchange_strong(c, make_word(lap, SlotState::ready, 0, 1),
                                        std::memory_order_seq_cst)) {
        // Repaired into a hole while we wrote (we were stopped past the claim timeout), and
        // perhaps carried to later laps by other publishers: we are done writing, so the
        // hole may be reused at whatever lap it is now; publish again at a new position.
        for (int i = 0; i < 4; ++i) {
          std::uint64_t sk = word.load(std::memory_order_acquire);
          if (word_state(sk) != SlotState::skipped || word_owner(sk) != owner_) break;
          if (word.compare_exchange_strong(sk, make_word(word_lap(sk) + 1, SlotState::free_skipped, 0, 1),
                                           std::memory_order_seq_cst)) {
            wake_waiters(s.header().producers_wait, s.max_members());
            break;
          }
        }
        continue;
      }
      last_position_ = h;
      me.sent.store(me.sent.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
      wake_waiters(s.header().consumers_wait, s.max_members());
      if (s.durability() == Durability::sync) {
        // Publisher confirm: wait until the persister has the message on disk. try_send
        // waits at most 20 ms (as on queues), and not at all without a live persister.
        const auto confirm_by =
            wait ? deadline : std::chrono::steady_clock::now() + std::chrono::milliseconds(20);
        for (;;) {
          if (s.header().persisted.value.load(std::memory_order_seq_cst) > h) break;
          if (s.removed()) return Status::closed;
          if (!wait && !s.persister_alive()) return Status::no_persister;
          if (std::chrono::steady_clock::now() >= confirm_by)
            return wait ? Status::timeout : Status::unconfirmed;
          wait_on(s.header().persist_wait, row_, confirm_by, [&] {
            return s.header().persisted.value.load(std::memory_order_seq_cst) > h || s.removed();
          });
        }
      }
      return Status::ok;
    }
    // Full: a reliable group (or the persister) holds the slot.
    if (interrupted_->load(std::memory_order_relaxed)) {
      interrupted_->store(false);
      return Status::interrupted;
    }
    if (s.removed()) return Status::closed;
    if (!wait) return Status::full;
    if (!idle) idle.emplace(wait_);
    if (idle->next() == Idle::Step::again) continue;  // the spin (shmq/wait.hpp)
    if (std::chrono::steady_clock::now() >= deadline) return Status::timeout;
    int blocking = -1;
    limit_ = publish_limit(s, &blocking);
    if (h < limit_ && !stuck_claim) continue;
    if (blocking >= 0 && !stuck_claim) {
      const auto g = static_cast<std::uint32_t>(blocking);
      heal_group(s, g);
      check_stall(s, g, monotonic_coarse_ns());
      limit_ = publish_limit(s);
      if (h < limit_) continue;
    }
    if (idle->strategy() != WaitStrategy::futex) {
      // Yielding, sleeping or spinning between looks: nobody wakes us, and nothing needs to
      // (the groups' floors and a stuck claim are read at every look).
      idle->rest(deadline, [] {});
      continue;
    }
    const auto cap = std::min(deadline, std::chrono::steady_clock::now() + std::chrono::milliseconds(100));
    wait_on(s.header().producers_wait, row_, cap, [&] {
      if (stuck_claim) return word.load(std::memory_order_seq_cst) != w || s.removed();
      return publish_limit(s) > h || s.removed() || interrupted_->load(std::memory_order_relaxed);
    });
  }
}

// ---------------------------------------------------------------------------------------
// Delivery

Delivery::Delivery(Delivery&& o) noexcept { *this = std::move(o); }
Delivery& Delivery::operator=(Delivery&& o) noexcept {
  if (this == &o) return *this;
  seg_ = std::move(o.seg_);
  position_ = o.position_;
  id_ = o.id_;
  word_ = o.word_;
  group_ = o.group_;
  group_gen_ = o.group_gen_;
  delivery_count_ = o.delivery_count_;
  missed_before_ = o.missed_before_;
  size_ = o.size_;
  held_ = o.held_;
  const bool copied = !o.copy_.empty() && o.data_ == o.copy_.data();
  copy_ = std::move(o.copy_);
  data_ = copied ? copy_.data() : o.data_;
  o.held_ = false;
  o.word_ = 0;
  o.data_ = nullptr;
  o.size_ = 0;
  return *this;
}

// ---------------------------------------------------------------------------------------
// Subscriber

struct detail::TopicState {
  std::optional<Queue> dlq;
  std::optional<Producer> producer;
  std::vector<std::byte> buf;
  std::uint64_t last_heal_ns = 0;
  std::unique_ptr<TopicLogReader> reader;  // durable topics: replays from the log
};

Subscriber::Subscriber(std::shared_ptr<Segment> seg, std::uint32_t row, std::uint32_t owner,
                       std::uint64_t row_word, std::uint32_t group, std::uint64_t group_gen,
                       std::string group_name)
    : seg_(std::move(seg)), row_(row), owner_(owner), row_word_(row_word), group_(group),
      group_gen_(group_gen), group_name_(std::move(group_name)),
      interrupted_(std::make_shared<std::atomic<bool>>(false)),
      state_(std::make_shared<detail::TopicState>()) {}

Subscriber::Subscriber(Subscriber&&) noexcept = default;
Subscriber& Subscriber::operator=(Subscriber&&) noexcept = default;

Subscriber::~Subscriber() {
  if (!seg_) return;
  (void)release_all();
  seg_->member(row_).requeued.store(0, std::memory_order_relaxed);
  seg_->unregister_member(MemberTicket{row_, owner_, row_word_});
}

void Subscriber::interrupt() noexcept {
  if (interrupted_) interrupted_->store(true);
  if (seg_) wake_all(seg_->header().consumers_wait);
}

Status Subscriber::receive(Delivery& out) {
  return take(out, std::chrono::steady_clock::time_point::max(), true);
}
Status Subscriber::try_receive(Delivery& out) {
  return take(out, std::chrono::steady_clock::now(), false);
}
Status Subscriber::receive_for(Delivery& out, std::chrono::nanoseconds timeout) {
  return take(out, deadline_after(timeout), true);
}

namespace {

// Is our group still the one we joined (same generation, not deleted or detached)?
bool group_ok(const Segment& s, std::uint32_t g, std::uint64_t gen) noexcept {
  const std::uint64_t st = group_row(s, g).state.load(std::memory_order_acquire);
  return group_live(st) && group_generation(st) == gen;
}

}  // namespace


Status Subscriber::take(Delivery& out, std::chrono::steady_clock::time_point deadline, bool wait) {
  if (!seg_) return Status::invalid;
  Segment& s = *seg_;
  if (out.held_) return Status::invalid;  // would drop a delivery we hold
  if (!s.owns(MemberTicket{row_, owner_, row_word_})) return Status::evicted;
  GroupRow& r = group_row(s, group_);
  const std::uint64_t n = s.slot_count();
  const std::uint32_t shift = s.slot_shift();
  std::uint64_t missed_now = 0;
  std::uint64_t d_seen = 0;
  int spins = 0;  // looks that found nothing in this call (a claim is repaired after a few)
  std::optional<Idle> idle;  // made at the first look that finds nothing, if we wait
  for (;;) {
    const std::uint64_t gst = r.state.load(std::memory_order_acquire);
    if (!group_live(gst) || group_generation(gst) != group_gen_) return Status::closed;
    const bool lossy = group_policy(gst) == 1;
    // 1. Messages given back to the group (nack, lease, dead subscriber).
    const std::uint64_t epoch = r.requeue_epoch.value.load(std::memory_order_acquire);
    if (epoch != seen_requeue_) {
      bool pending = false;
      const Status st = take_requeued(out, lossy, pending);
      if (st == Status::ok) return st;
      if (!pending) seen_requeue_ = epoch;
    }
    // 2. The next position.
    const std::uint64_t d = r.dispatch.value.load(std::memory_order_acquire);
    d_seen = d;
    std::uint64_t f = r.floor.value.load(std::memory_order_acquire);
    bool nothing = false;
    if (d - f >= n) {
      if (lossy && d >= n) {
        // A lossy group's window: what it held a ring ago is gone anyway.
        r.floor.value.compare_exchange_strong(f, d - n + 1, std::memory_order_acq_rel);
        continue;
      }
      nothing = true;  // every position of the window is in flight: wait for acks
    } else {
      const std::uint64_t lap = lap_of(d, shift);
      const std::uint64_t w = s.slot(d).word.load(std::memory_order_acquire);
      const std::int64_t dl = lap_diff(word_lap(w), lap);
      const SlotState ws = word_state(w);
      std::atomic<std::uint64_t>& gw = group_word(s, group_, d);
      std::uint64_t gv = gw.load(std::memory_order_acquire);
      const std::int64_t gl = lap_diff(gword_lap(gv), lap);
      if (gl > 0) continue;  // a later lap's word: our d is stale (we were preempted)
      if (gl == 0 && gword_state(gv) != GroupSlot::none) {
        // Taken already (by another subscriber of the group): help the cursor on.
        std::uint64_t e = d;
        r.dispatch.value.compare_exchange_strong(e, d + 1, std::memory_order_acq_rel);
        continue;
      }
      if (dl == 0 && ws == SlotState::ready) {
        const std::uint64_t held = gword(lap, GroupSlot::held, owner_, 1);
        if (!gw.compare_exchange_strong(gv, held, std::memory_order_acq_rel)) continue;
        SHMQ_CRASH_POINT("topic.receive.after_claim");
        std::uint64_t e = d;
        r.dispatch.value.compare_exchange_strong(e, d + 1, std::memory_order_acq_rel);
        if (!fill(lossy, d, held, out, missed_now)) {
          // Overwritten while we copied it (lossy): missed.
          std::uint64_t hv = held;
          gw.compare_exchange_strong(hv, gword(lap, GroupSlot::done, kNoOwner, 1));
          r.counters.missed.fetch_add(1, std::memory_order_relaxed);
          ++missed_;
          ++missed_now;
          advance_floor(s, group_);
          continue;
        }
        r.counters.delivered.fetch_add(1, std::memory_order_relaxed);
        return Status::ok;
      }
      const bool hole_here = dl == 0 && (ws == SlotState::skipped);
      const bool hole_next = dl == 1 && ws == SlotState::free_skipped;
      if (hole_here || hole_next) {
        // A hole (a dead or stalled publisher's claim): done for the group.
        if (gw.compare_exchange_strong(gv, gword(lap, GroupSlot::done, kNoOwner, 0))) {
          std::uint64_t e = d;
          r.dispatch.value.compare_exchange_strong(e, d + 1, std::memory_order_acq_rel);
          advance_floor(s, group_);
        }
        continue;
      }
      if (dl > 0) {
        bool wait_for_log = false;
        if (s.durable()) {
          // The ring no longer holds d (or never did: a topic rebuilt after a reboot starts
          // its ring after the log): the retained log does. The record read here is the
          // one delivered (no second read).
          const int got = from_log(d, out);
          if (got == 2) {  // a hole
            if (gw.compare_exchange_strong(gv, gword(lap, GroupSlot::done, kNoOwner, 0))) {
              std::uint64_t e = d;
              r.dispatch.value.compare_exchange_strong(e, d + 1, std::memory_order_acq_rel);
              advance_floor(s, group_);
            }
            continue;
          }
          if (got == 1) {
            const std::uint64_t held = gword(lap, GroupSlot::held, owner_, 1);
            if (!gw.compare_exchange_strong(gv, held, std::memory_order_acq_rel)) continue;
            std::uint64_t e = d;
            r.dispatch.value.compare_exchange_strong(e, d + 1, std::memory_order_acq_rel);
            deliver_copied(d, held, out, missed_now);
            r.counters.delivered.fetch_add(1, std::memory_order_relaxed);
            return Status::ok;
          }
          // Not in the log: deleted by retention (below its first position), or the log
          // could not be read now (an I/O error: wait and try again, never skip).
          const std::uint64_t lf = topic_header(s).log_first.load(std::memory_order_acquire);
          wait_for_log = got == 3 || d >= lf;
        }
        if (wait_for_log) {
          nothing = true;
        } else if (!lossy) {
          // A reliable group never jumps: this one position is gone (retention, or it was
          // overwritten while the group was being created); it is done, and counted.
          if (gw.compare_exchange_strong(gv, gword(lap, GroupSlot::done, kNoOwner, 0))) {
            std::uint64_t e = d;
            r.dispatch.value.compare_exchange_strong(e, d + 1, std::memory_order_acq_rel);
            r.counters.missed.fetch_add(1, std::memory_order_relaxed);
            ++missed_;
            ++missed_now;
            advance_floor(s, group_);
          }
          continue;
        } else {
          // A lossy group a ring behind: skip to the oldest position still in the ring
          // (durable: in the log), and count what it skipped.
          const std::uint64_t h = s.header().tail.value.load(std::memory_order_acquire);
          std::uint64_t to = std::max(d + 1, h >= n ? h - n + 1 : d + 1);
          if (s.durable()) {
            const std::uint64_t lf = topic_header(s).log_first.load(std::memory_order_acquire);
            if (lf > d && lf < to) to = lf;
          }
          std::uint64_t e = d;
          if (r.dispatch.value.compare_exchange_strong(e, to, std::memory_order_acq_rel)) {
            const std::uint64_t k = to - d;
            r.counters.missed.fetch_add(k, std::memory_order_relaxed);
            missed_ += k;
            missed_now += k;
            std::uint64_t fl = r.floor.value.load(std::memory_order_acquire);
            while (fl < to && !r.floor.value.compare_exchange_weak(fl, to, std::memory_order_acq_rel)) {
            }
            wake_waiters(s.header().producers_wait, s.max_members());
          }
          continue;
        }
      }
      if (dl == 0 && ws == SlotState::claimed) {
        // A publisher is writing it: short wait; a dead or stalled one's claim is repaired.
        if (spins > kSpinBeforeSleep / 2) repair_claim(s, d, w);
      }
      nothing = true;
    }
    if (!nothing) continue;
    if (interrupted_->load(std::memory_order_relaxed)) {
      interrupted_->store(false);
      return Status::interrupted;
    }
    if (s.removed()) return Status::closed;
    // The spin (shmq/wait.hpp): look again at once, or go the slow way below.
    if (wait) {
      if (!idle) idle.emplace(wait_);
      if (idle->next() == Idle::Step::again) {
        ++spins;
        continue;
      }
    }
    {
      // Before giving up or sleeping: heal the group (dead subscribers, leases, a dead
      // publisher's claim where it waits) at most every 50 ms, and look once for a requeued
      // message (its announcement may have died with its announcer).
      const std::uint64_t now_ns = monotonic_coarse_ns();
      if (now_ns - state_->last_heal_ns > 50'000'000) {
        state_->last_heal_ns = now_ns;
        if (heal_group(s, group_) != 0) continue;
        bool pending = false;
        if (take_requeued(out, lossy, pending) == Status::ok) return Status::ok;
        if (r.dispatch.value.load(std::memory_order_acquire) != d_seen) continue;
      }
    }
    if (!wait) return Status::empty;
    ++spins;
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) return Status::timeout;
    if (idle->strategy() != WaitStrategy::futex) {
      // Yielding, sleeping or spinning between looks: nobody wakes us; requeued messages
      // are found through the group's epoch, read at every look.
      idle->rest(deadline, [] {});
      continue;
    }
    const std::uint64_t d0 = r.dispatch.value.load(std::memory_order_acquire);
    const std::uint64_t e0 = r.requeue_epoch.value.load(std::memory_order_acquire);
    const auto cap = std::min(deadline, now + std::chrono::milliseconds(50));
    wait_on(s.header().consumers_wait, row_, cap, [&] {
      if (r.dispatch.value.load(std::memory_order_acquire) != d0) return true;
      if (r.requeue_epoch.value.load(std::memory_order_seq_cst) != e0) return true;
      const std::uint64_t w = s.slot(d0).word.load(std::memory_order_seq_cst);
      const std::int64_t dl = lap_diff(word_lap(w), lap_of(d0, shift));
      return dl > 0 || (dl == 0 && word_state(w) != SlotState::claimed && !is_free(word_state(w))) ||
             s.removed() || interrupted_->load(std::memory_order_relaxed) ||
             !group_ok(s, group_, group_gen_);
    });
  }
}

// What the retained log holds at `pos` (durable topics), into `out`'s copy: 1 a message, 2 a
// hole, 0 not retained (deleted by retention, or not yet written), 3 the log could not be
// read (an I/O error, too many open files, ...: try again later).
int Subscriber::from_log(std::uint64_t pos, Delivery& out) {
  Segment& s = *seg_;
  if (!s.durable()) return 0;
  if (!state_->reader)
    state_->reader = std::make_unique<TopicLogReader>(queue_dir(s.data_dir(), s.name()));
  auto r = state_->reader->read(pos);
  if (!r.ok()) {
    state_->reader.reset();  // reopened next time
    return 3;
  }
  if (!r.value().has_value()) return 0;
  TopicRecord& rec = *r.value();
  if (rec.hole) return 2;
  out.id_ = rec.id;
  out.size_ = rec.payload.size();
  out.copy_ = std::move(rec.payload);
  if (out.copy_.empty()) out.copy_.resize(1);
  out.data_ = out.copy_.data();
  return 1;
}

// Fills `out` from position `pos`, which our group word `held` says we hold: from the ring
// (a reliable group's bytes in place; a lossy group's copied and the slot checked afterwards,
// seqlock-style), else, on a durable topic, from the retained log. False if neither has it
// (a lossy group that fell behind: the caller counts it missed).
bool Subscriber::fill(bool lossy, std::uint64_t pos, std::uint64_t held, Delivery& out,
                      std::uint64_t missed_before) {
  Segment& s = *seg_;
  const std::uint32_t shift = s.slot_shift();
  const std::uint64_t ready = make_word(lap_of(pos, shift), SlotState::ready, 0, 1);
  bool ok = false;
  if (s.slot(pos).word.load(std::memory_order_acquire) == ready) {
    SlotHeader& sh = s.slot(pos);
    out.id_ = sh.id.load(std::memory_order_relaxed);
    std::uint32_t len = sh.length.load(std::memory_order_relaxed);
    if (len > s.max_message_size()) len = s.max_message_size();  // a scribbled length
    out.size_ = len;
    if (lossy) {
      out.copy_.resize(std::max<std::size_t>(len, 1));
      racy_copy(out.copy_.data(), s.payload(pos), len);
      acquire_fence_after_copy();
      ok = s.slot(pos).word.load(std::memory_order_relaxed) == ready;
      out.data_ = out.copy_.data();
    } else {
      // The slot is not reused before our group's floor passes pos (publish_limit).
      out.copy_.clear();
      out.data_ = s.payload(pos);
      ok = true;
    }
  }
  if (!ok && from_log(pos, out) == 1) ok = true;
  if (!ok) {
    out.size_ = 0;
    out.data_ = nullptr;
    return false;
  }
  deliver_copied(pos, held, out, missed_before);
  return true;
}

// Completes a delivery whose bytes are in place (`out`'s id, size and data set): marks it
// held by us and writes its lease.
void Subscriber::deliver_copied(std::uint64_t pos, std::uint64_t held, Delivery& out,
                                std::uint64_t missed_before) {
  Segment& s = *seg_;
  out.position_ = pos;
  out.word_ = held;
  out.group_ = group_;
  out.group_gen_ = group_gen_;
  out.delivery_count_ = gword_deliveries(held);
  out.missed_before_ = missed_before;
  out.seg_ = seg_;
  out.held_ = true;
  // The lease: written after the claim, by CAS from what is there, tagged with the lap (a
  // timer of another lap is never taken for this delivery's).
  const std::uint32_t lease = s.lease_ms();
  std::atomic<std::uint64_t>& timer = group_timer(s, group_, pos);
  std::uint64_t t = timer.load(std::memory_order_acquire);
  timer.compare_exchange_strong(
      t, timer_word(lap_of(pos, s.slot_shift()), kTimerLease, lease == 0 ? 0 : now_ms() + lease),
      std::memory_order_acq_rel);
}

Status Subscriber::take_requeued(Delivery& out, bool lossy, bool& pending) {
  Segment& s = *seg_;
  GroupRow& r = group_row(s, group_);
  const std::uint32_t shift = s.slot_shift();
  const std::uint64_t f = r.floor.value.load(std::memory_order_acquire);
  const std::uint64_t d = r.dispatch.value.load(std::memory_order_acquire);
  if (d - f > s.slot_count()) return Status::empty;
  const std::uint64_t now = now_ms();
  const std::uint32_t max_del = s.max_deliveries();
  for (std::uint64_t p = f; p < d; ++p) {
    std::atomic<std::uint64_t>& gw = group_word(s, group_, p);
    std::uint64_t w = gw.load(std::memory_order_acquire);
    const std::uint64_t lap = lap_of(p, shift);
    if (gword_lap(w) != lap || gword_state(w) != GroupSlot::requeued) continue;
    const std::uint64_t t = group_timer(s, group_, p).load(std::memory_order_acquire);
    if (timer_lap(t) == (lap & 0xffffff) && timer_kind(t) == kTimerDue && timer_ms(t) > now) {
      pending = true;  // not due yet
      continue;
    }
    const std::uint32_t dc = gword_deliveries(w) + 1;
    const std::uint64_t held = gword(lap, GroupSlot::held, owner_, dc);
    if (!gw.compare_exchange_strong(w, held, std::memory_order_acq_rel)) {
      pending = true;
      continue;
    }
    if (max_del != 0 && dc > max_del) {
      // Delivered max_deliveries times and given back again: dead-letter it.
      if (!dead_letter(p, held, lossy, DeadLetterReason::max_deliveries)) pending = true;
      continue;
    }
    if (!fill(lossy, p, held, out, 0)) {
      std::uint64_t hv = held;
      gw.compare_exchange_strong(hv, gword(lap, GroupSlot::done, kNoOwner, dc));
      r.counters.missed.fetch_add(1, std::memory_order_relaxed);
      ++missed_;
      advance_floor(s, group_);
      continue;
    }
    r.counters.delivered.fetch_add(1, std::memory_order_relaxed);
    return Status::ok;
  }
  return Status::empty;
}

// Moves the message at `pos` (held by us with `held`) to the group's dead-letter queue, then
// marks it done. If the DLQ cannot take it now, gives it back due in 1 s (false).
bool Subscriber::dead_letter(std::uint64_t pos, std::uint64_t held, bool lossy,
                             DeadLetterReason reason) {
  Segment& s = *seg_;
  GroupRow& r = group_row(s, group_);
  const std::uint32_t shift = s.slot_shift();
  const std::uint64_t lap = lap_of(pos, shift);
  std::atomic<std::uint64_t>& gw = group_word(s, group_, pos);
  bool moved = true;
  // The message's bytes: from the ring, or (a position the ring no longer holds) the log.
  Delivery copy;
  if (!fill(lossy, pos, held, copy, 0)) {
    r.counters.missed.fetch_add(1, std::memory_order_relaxed);  // gone (lossy): nothing to move
  } else if (!s.dead_letter()) {
    r.counters.dead_lettered.fetch_add(1, std::memory_order_relaxed);  // dropped by policy
  } else {
    TopicState& ts = *state_;
    if (!ts.producer) {
      // The group's DLQ, made with the group; made again if it is gone (a reboot, a
      // Topic::remove while we ran). Another user's is never used.
      const std::string name = dlq_name(s.name(), group_name_);
      auto q = Queue::open(name);
      if (!q.ok() && q.error().code() == Errc::not_found) {
        q = Queue::create(name, dlq_options(s));
        if (!q.ok() && q.error().code() == Errc::already_exists) q = Queue::open(name);
      }
      if (q.ok() && q.value().segment()->owner_uid() == s.owner_uid()) {
        auto p = q.value().producer();
        if (p.ok()) {
          ts.dlq.emplace(std::move(q.value()));
          ts.producer.emplace(std::move(p.value()));
        }
      }
    }
    if (!ts.producer) {
      // No DLQ can be had: drop it (counted), rather than hold the group for ever.
      r.counters.dropped.fetch_add(1, std::memory_order_relaxed);
    } else {
      ts.buf.assign(kDeadLetterEnvelopeSize + copy.size(), std::byte{0});
      auto put = [&](std::size_t off, auto v) { std::memcpy(ts.buf.data() + off, &v, sizeof v); };
      put(0, kDeadLetterMagic);
      put(4, std::uint16_t{1});
      put(6, static_cast<std::uint16_t>(reason));
      // Deliveries so far: a message past max_deliveries was claimed for the dead letter
      // (one more than it was delivered); a rejected one is held by its last delivery.
      put(8, std::uint32_t{gword_deliveries(held)} -
                 (reason == DeadLetterReason::max_deliveries ? 1u : 0u));
      put(12, std::uint32_t{0});
      put(16, pos);
      put(24, copy.id());
      if (copy.size() != 0)
        std::memcpy(ts.buf.data() + kDeadLetterEnvelopeSize, copy.data().data(), copy.size());
      const Status st = ts.producer->try_send(ts.buf, copy.id());
      moved = st == Status::ok;
      last_dlq_status_ = st;
      if (moved) {
        r.counters.dead_lettered.fetch_add(1, std::memory_order_relaxed);
      } else if (st != Status::full) {
        ts.producer.reset();  // closed, evicted: open it again next time
        ts.dlq.reset();
      }
    }
  }
  std::uint64_t e = held;
  if (moved) {
    gw.compare_exchange_strong(e, gword(lap, GroupSlot::done, kNoOwner, gword_deliveries(held)),
                               std::memory_order_acq_rel);
    advance_floor(s, group_);
    return true;
  }
  if (reason == DeadLetterReason::rejected) return false;  // still held by the rejecter
  // The DLQ is full now: back to the group, due again in 1 s (its count not raised).
  std::atomic<std::uint64_t>& timer = group_timer(s, group_, pos);
  std::uint64_t t = timer.load(std::memory_order_acquire);
  timer.compare_exchange_strong(t, timer_word(lap, kTimerDue, now_ms() + 1000));
  gw.compare_exchange_strong(e, gword(lap, GroupSlot::requeued, kNoOwner, gword_deliveries(held) - 1),
                             std::memory_order_acq_rel);
  return false;
}

Status Subscriber::ack(Delivery& d) {
  if (!seg_ || !d.held_ || d.seg_ != seg_ || d.group_ != group_ || d.group_gen_ != group_gen_)
    return Status::invalid;
  Segment& s = *seg_;
  const std::uint32_t shift = s.slot_shift();
  std::uint64_t e = d.word_;
  const bool ok = group_word(s, group_, d.position_)
                      .compare_exchange_strong(
                          e, gword(lap_of(d.position_, shift), GroupSlot::done, kNoOwner,
                                   d.delivery_count_),
                          std::memory_order_acq_rel);
  d.held_ = false;
  if (!ok) return Status::lease_lost;
  SHMQ_CRASH_POINT("topic.ack.before_floor");
  group_row(s, group_).counters.acks.fetch_add(1, std::memory_order_relaxed);
  advance_floor(s, group_);
  return Status::ok;
}

Status Subscriber::nack(Delivery& d, std::chrono::milliseconds delay) {
  if (!seg_ || !d.held_ || d.seg_ != seg_ || d.group_ != group_ || d.group_gen_ != group_gen_)
    return Status::invalid;
  if (delay.count() < 0) return Status::invalid;
  Segment& s = *seg_;
  GroupRow& r = group_row(s, group_);
  const std::uint64_t lap = lap_of(d.position_, s.slot_shift());
  std::atomic<std::uint64_t>& gw = group_word(s, group_, d.position_);
  if (gw.load(std::memory_order_acquire) != d.word_) {
    d.held_ = false;
    return Status::lease_lost;
  }
  // The due time, by CAS from our own lease (a failure means the message is no longer ours:
  // its new holder's lease stays).
  std::atomic<std::uint64_t>& timer = group_timer(s, group_, d.position_);
  std::uint64_t t = timer.load(std::memory_order_acquire);
  const std::uint64_t ms = std::min<std::uint64_t>(static_cast<std::uint64_t>(delay.count()), 1ull << 36);
  if (!timer.compare_exchange_strong(t, timer_word(lap, kTimerDue, ms == 0 ? 0 : now_ms() + ms))) {
    d.held_ = false;
    return Status::lease_lost;
  }
  std::uint64_t e = d.word_;
  const bool ok = gw.compare_exchange_strong(
      e, gword(lap, GroupSlot::requeued, kNoOwner, d.delivery_count_), std::memory_order_seq_cst);
  d.held_ = false;
  if (!ok) return Status::lease_lost;
  r.counters.redelivered.fetch_add(1, std::memory_order_relaxed);
  r.requeue_epoch.value.fetch_add(1, std::memory_order_seq_cst);
  wake_waiters(s.header().consumers_wait, s.max_members());
  return Status::ok;
}

Status Subscriber::reject(Delivery& d) {
  if (!seg_ || !d.held_ || d.seg_ != seg_ || d.group_ != group_ || d.group_gen_ != group_gen_)
    return Status::invalid;
  Segment& s = *seg_;
  if (group_word(s, group_, d.position_).load(std::memory_order_acquire) != d.word_) {
    d.held_ = false;
    return Status::lease_lost;
  }
  const bool lossy = group_policy(group_row(s, group_).state.load(std::memory_order_acquire)) == 1;
  last_dlq_status_ = Status::ok;
  if (dead_letter(d.position_, d.word_, lossy, DeadLetterReason::rejected)) {
    d.held_ = false;
    return Status::ok;
  }
  return Status::full;  // the DLQ cannot take it now: still held by us
}

Status Subscriber::extend_lease(Delivery& d, std::chrono::milliseconds extension) {
  if (!seg_ || !d.held_ || d.seg_ != seg_ || d.group_ != group_ || d.group_gen_ != group_gen_)
    return Status::invalid;
  if (extension.count() <= 0) return Status::invalid;
  Segment& s = *seg_;
  const std::uint64_t lap = lap_of(d.position_, s.slot_shift());
  std::atomic<std::uint64_t>& t = group_timer(s, group_, d.position_);
  std::uint64_t cur = t.load(std::memory_order_acquire);
  if (group_word(s, group_, d.position_).load(std::memory_order_acquire) != d.word_)
    return Status::lease_lost;
  if (!t.compare_exchange_strong(cur, timer_word(lap, kTimerLease, now_ms() + std::uint64_t(extension.count()))))
    return Status::lease_lost;
  if (group_word(s, group_, d.position_).load(std::memory_order_acquire) != d.word_)
    return Status::lease_lost;
  return Status::ok;
}

std::size_t Subscriber::release_all() {
  if (!seg_) return 0;
  Segment& s = *seg_;
  GroupRow& r = group_row(s, group_);
  if (!group_ok(s, group_, group_gen_)) return 0;
  const std::uint32_t shift = s.slot_shift();
  const std::uint64_t f = r.floor.value.load(std::memory_order_acquire);
  const std::uint64_t d = r.dispatch.value.load(std::memory_order_acquire);
  if (d - f > s.slot_count()) return 0;
  std::size_t n = 0;
  for (std::uint64_t p = f; p < d; ++p) {
    std::atomic<std::uint64_t>& gw = group_word(s, group_, p);
    std::uint64_t w = gw.load(std::memory_order_acquire);
    if (gword_lap(w) != lap_of(p, shift) || gword_state(w) != GroupSlot::held ||
        gword_owner(w) != owner_)
      continue;
    std::atomic<std::uint64_t>& timer = group_timer(s, group_, p);
    std::uint64_t t = timer.load(std::memory_order_acquire);
    if (!timer.compare_exchange_strong(t, timer_word(lap_of(p, shift), kTimerDue, 0))) continue;
    if (gw.compare_exchange_strong(w, gword(lap_of(p, shift), GroupSlot::requeued, kNoOwner,
                                            gword_deliveries(w)),
                                   std::memory_order_seq_cst))
      ++n;
  }
  if (n != 0) {
    r.counters.redelivered.fetch_add(n, std::memory_order_relaxed);
    r.requeue_epoch.value.fetch_add(1, std::memory_order_seq_cst);
    wake_waiters(s.header().consumers_wait, s.max_members());
  }
  return n;
}

}  // namespace shmq
