#include "shmq/queue.hpp"

#include "core/dead_letter.hpp"
#include "core/healer.hpp"
#include "persist/meta.hpp"
#include "platform/process.hpp"
#include "ring/slot_word.hpp"
#include "segment/segment.hpp"
#include "shmq/consumer.hpp"
#include "shmq/producer.hpp"

#include <climits>
#include <cstdio>
#include <cstdlib>

namespace shmq {

using detail::SlotState;

std::string Queue::validate_name(std::string_view name) {
  // Built with append(): GCC 12 warns falsely (-Wrestrict, bug 105329) on "'" + string.
  std::string shown(1, '\'');
  shown.append(name.substr(0, 64)).append(name.size() > 64 ? "...'" : "'");
  if (name.empty()) return "invalid queue name '': the name is empty";
  if (name.size() > detail::kMaxNameLength)
    return "invalid queue name " + shown + ": longer than " +
           std::to_string(detail::kMaxNameLength) + " characters";
  for (const char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) {
      if (c == '/') return "invalid queue name " + shown + ": '/' is not allowed";
      return "invalid queue name " + shown +
             ": only letters, digits, '.', '_' and '-' are allowed";
    }
  }
  if (name.front() == '.') return "invalid queue name " + shown + ": may not start with '.'";
  // A leading '-' reads as an option to every command line that names the queue.
  if (name.front() == '-') return "invalid queue name " + shown + ": may not start with '-'";
  if (name.find("..") != std::string_view::npos)
    return "invalid queue name " + shown + ": '..' is not allowed";
  return {};
}

std::string_view to_string(Durability d) noexcept {
  switch (d) {
    case Durability::none: return "none";
    case Durability::async: return "async";
    case Durability::sync: return "sync";
  }
  return "unknown";
}

namespace {
std::string options_mismatch(const QueueOptions& want, const QueueOptions& have);
}  // namespace

Result<Queue> Queue::create(std::string_view name, const QueueOptions& options) {
  if (options.max_priority == 0) return create_one(name, options, true);
  // A queue with priorities: its levels 1 .. max_priority first, each a queue of its own
  // ("<name>.p<level>") with the same options and no dead-letter queue of its own (a level
  // dead-letters into the queue's), then the queue itself (level 0) with its DLQ. Levels
  // first: a queue that exists has all its levels, whatever crash interrupted its create.
  if (auto e = validate_name(name); !e.empty()) return Error(Errc::invalid_argument, e);
  if (auto e = detail::Segment::validate_options(options); !e.empty())
    return Error(Errc::invalid_argument, "cannot create queue '" + std::string(name) + "': " + e);
  if (detail::Segment::level_of(name, options.max_priority) != 0)
    return Error(Errc::invalid_argument,
                 "invalid queue name '" + std::string(name) + "': a queue with priorities may "
                 "not be named like a level of another (<name>.p<N>)");
  if (name.size() + 4 > detail::kMaxNameLength)
    return Error(Errc::invalid_argument,
                 "invalid queue name '" + std::string(name.substr(0, 64)) + "...': a queue with "
                 "priorities takes at most " + std::to_string(detail::kMaxNameLength - 4) +
                 " characters (its levels '<name>.p<N>' must fit " +
                 std::to_string(detail::kMaxNameLength) + ")");
  // The queue exists: nothing to make (its levels are its own).
  if (detail::Segment::owner_of(name).ok())
    return Error(Errc::already_exists, "queue '" + std::string(name) + "' already exists");
  // Levels are never removed by a create that fails: another creator racing with this one
  // may have adopted them already (and made the queue), and a level left over is adopted
  // by the next create (below) or removed by `shmqctl delete`.
  for (std::uint32_t p = 1; p <= options.max_priority; ++p) {
    const std::string level = detail::Segment::level_name(name, p);
    auto q = create_one(level, options, false);
    if (q.ok()) continue;
    // A level left by an earlier create of this queue that did not finish, by a racing
    // create, or by the queue's earlier life (it may hold messages), is kept if it is this
    // queue's level: ours, level p, and every option as given. Anything else under that name
    // is not ours to use.
    if (q.error().code() == Errc::already_exists) {
      auto old = detail::Segment::open(level);
      if (old.ok() && old.value()->owner_uid() == ::geteuid() &&
          old.value()->priority_level() == p) {
        const std::string diff = options_mismatch(options, old.value()->options());
        if (diff.empty()) continue;
        return Error(Errc::mismatch, "cannot create queue '" + std::string(name) + "': its level '" +
                                         level + "' exists with other options: " + diff +
                                         " (delete it: shmqctl delete " + level + ")");
      }
      if (old.ok())
        return Error(Errc::permission_denied,
                     "cannot create queue '" + std::string(name) + "': '" + level +
                         "' exists and is not its level " + std::to_string(p) +
                         " (another owner's, or another queue's); remove it or pick another name");
    }
    return Error(q.error().code(), "cannot create level " + std::to_string(p) + " of queue '" +
                                       std::string(name) + "': " + q.error().message());
  }
  return create_one(name, options, true);
}

Result<Queue> Queue::create_one(std::string_view name, const QueueOptions& options,
                                bool with_dead_letter_queue) {
  QueueOptions o = options;
  if (o.dead_letter && with_dead_letter_queue && validate_name(name).empty() &&
      name.size() + 4 > detail::kMaxNameLength)
    return Error(Errc::invalid_argument,
                 "invalid queue name '" + std::string(name.substr(0, 64)) + "...': " +
                     std::to_string(name.size()) + " characters; a queue with dead letters "
                     "takes at most " + std::to_string(detail::kMaxNameLength - 4) +
                     " (its dead-letter queue '<name>.dlq' must fit " +
                     std::to_string(detail::kMaxNameLength) + "), or create it without");
  if (o.durability != Durability::none) {
    if (auto e = validate_name(name); !e.empty()) return Error(Errc::invalid_argument, e);
    if (auto e = detail::Segment::validate_options(o); !e.empty())
      return Error(Errc::invalid_argument, "cannot create queue '" + std::string(name) + "': " + e);
    // The data dir and the queue's queue.meta first: a segment that exists is always
    // rebuildable. The queue's files live in <data_dir>/<name>/.
    auto root = detail::prepare_data_dir(o.data_dir);
    if (!root.ok()) return root.error();
    o.data_dir = root.value();
    auto dir = detail::prepare_data_dir(detail::queue_dir(o.data_dir, name));
    if (!dir.ok()) return dir.error();
    if (o.max_message_size == 0)
      o.max_message_size =
          o.slot_size - static_cast<std::uint32_t>(detail::payload_offset(o.checksum));
    if (auto w = detail::write_queue_meta(dir.value(), std::string(name), o); !w.ok())
      return w.error();
  }
  auto seg = detail::Segment::create(name, o);
  if (!seg.ok()) return seg.error();
  // The dead-letter queue is made with its queue, durable like it (its own data dir beside
  // the queue's, so that shmqd persists and rebuilds it too), so that dead-lettering only
  // ever opens it: a consumer never creates a queue on a hot path, and a DLQ that is
  // missing means dead letters wait in the queue instead of going to a stranger's segment.
  // One left by an earlier queue of this name is kept (it may hold dead letters), but only
  // if it is ours: another user could have made it first to receive, or to refuse, this
  // queue's dead letters.
  if (o.dead_letter && with_dead_letter_queue) {
    // From the segment's options: they carry the defaults create filled in.
    QueueOptions parent = seg.value()->options();
    parent.data_dir = o.data_dir;
    QueueOptions dlq_options = detail::dead_letter_options(parent);
    dlq_options.max_priority = 0;  // dead letters carry their priority in the envelope
    auto dlq = create(dead_letter_name(name), dlq_options);
    if (!dlq.ok()) {
      if (dlq.error().code() != Errc::already_exists) {
        (void)detail::Segment::remove(name);
        return Error(dlq.error().code(), "cannot create the dead-letter queue of '" +
                                             std::string(name) + "': " + dlq.error().message());
      }
      const std::string why =
          detail::foreign_dead_letter_queue(name, seg.value()->owner_uid(), o.mode);
      if (!why.empty()) {
        (void)detail::Segment::remove(name);
        return Error(Errc::permission_denied,
                     "cannot create queue '" + std::string(name) + "': " + why);
      }
    }
  }
  return Queue(std::move(seg.value()));
}

Result<Queue> Queue::recreate(std::string_view name, const QueueOptions& options,
                              std::uint64_t first_position,
                              std::span<const std::pair<std::uint64_t, std::uint64_t>> recovered_ids) {
  auto seg = detail::Segment::create(name, options, first_position, recovered_ids);
  if (!seg.ok()) return seg.error();
  return Queue(std::move(seg.value()));
}

Result<Queue> Queue::open(std::string_view name) {
  auto seg = detail::Segment::open(name);
  if (!seg.ok()) return seg.error();
  if (seg.value()->is_topic())
    return Error(Errc::mismatch, "'" + std::string(name) + "' is a topic, not a queue (shmq::Topic)");
  return Queue(std::move(seg.value()));
}

namespace {

// What differs between `want` (open_or_create's options) and `have` (the queue's), as
// "field (queue: X, given: Y)" items; empty if nothing that matters differs. The rule is
// documented at Queue::open_or_create.
std::string options_mismatch(const QueueOptions& want, const QueueOptions& have) {
  std::string out;
  auto differ = [&](const char* field, auto have_v, auto want_v) {
    if (have_v == want_v) return;
    if (!out.empty()) out += ", ";
    out.append(field).append(" (queue: ").append(have_v).append(", given: ").append(want_v)
        .append(")");
  };
  auto num = [](auto v) { return std::to_string(v); };
  auto ms = [](std::chrono::milliseconds v) { return std::to_string(v.count()) + " ms"; };
  auto yes = [](bool b) { return std::string(b ? "on" : "off"); };
  auto oct = [](std::uint32_t m) {
    char b[16];
    std::snprintf(b, sizeof b, "0%o", m);
    return std::string(b);
  };
  differ("slot_count", num(have.slot_count), num(want.slot_count));
  differ("slot_size", num(have.slot_size), num(want.slot_size));
  const std::size_t payload_at = detail::payload_offset(want.checksum);
  const std::uint32_t want_max = want.max_message_size != 0 || want.slot_size < payload_at
                                     ? want.max_message_size
                                     : want.slot_size - static_cast<std::uint32_t>(payload_at);
  differ("max_message_size", num(have.max_message_size), num(want_max));
  differ("max_members", num(have.max_members), num(want.max_members));
  differ("mode", oct(have.mode), oct(want.mode));
  differ("durability", std::string(to_string(have.durability)),
         std::string(to_string(want.durability)));
  differ("lease", ms(have.lease), ms(want.lease));
  differ("max_deliveries", num(have.max_deliveries), num(want.max_deliveries));
  differ("ttl", ms(have.ttl), ms(want.ttl));
  differ("backoff_initial", ms(have.backoff_initial), ms(want.backoff_initial));
  differ("backoff_max", ms(have.backoff_max), ms(want.backoff_max));
  differ("dead_letter", yes(have.dead_letter), yes(want.dead_letter));
  differ("heartbeat_liveness", yes(have.heartbeat_liveness), yes(want.heartbeat_liveness));
  if (have.heartbeat_liveness && want.heartbeat_liveness)
    differ("heartbeat_timeout", ms(have.heartbeat_timeout), ms(want.heartbeat_timeout));
  differ("claim_timeout", ms(have.claim_timeout), ms(want.claim_timeout));
  differ("checksum", yes(have.checksum), yes(want.checksum));
  differ("max_priority", num(have.max_priority), num(want.max_priority));
  differ("dedup_window", num(have.dedup_window.count) + "/" + num(have.dedup_window.time.count()) + " s",
         num(want.dedup_window.count) + "/" + num(want.dedup_window.time.count()) + " s");
  if (have.durability != Durability::none && want.durability != Durability::none) {
    std::string dir = want.data_dir;
    char resolved[PATH_MAX];
    if (!dir.empty() && ::realpath(dir.c_str(), resolved) != nullptr) dir = resolved;
    differ("data_dir", have.data_dir, dir);
    differ("flush_interval", ms(have.flush_interval), ms(want.flush_interval));
  }
  return out;
}

}  // namespace

Result<Queue> Queue::open_or_create(std::string_view name, const QueueOptions& options) {
  for (int attempt = 0; attempt < 3; ++attempt) {
    auto q = open(name);
    if (!q.ok() && q.error().code() != Errc::not_found) return q;
    if (q.ok()) {
      const std::string diff = options_mismatch(options, q->options());
      if (diff.empty()) return q;
      return Error(Errc::mismatch, "queue '" + std::string(name) +
                                       "' exists with other options: " + diff +
                                       " (open() attaches whatever its options)");
    }
    auto c = create(name, options);
    if (c.ok() || c.error().code() != Errc::already_exists) return c;
    // Lost a race with another creator: compare with theirs.
  }
  return open(name);
}

VoidResult Queue::set_policy(const PolicyUpdate& u) {
  QueueOptions o = segment_->options();
  if (u.lease) o.lease = *u.lease;
  if (u.max_deliveries) o.max_deliveries = *u.max_deliveries;
  if (u.ttl) o.ttl = *u.ttl;
  if (u.backoff_initial) o.backoff_initial = *u.backoff_initial;
  if (u.backoff_max) o.backoff_max = *u.backoff_max;
  if (auto e = detail::Segment::validate_options(o); !e.empty())
    return Error(Errc::invalid_argument,
                 "cannot set the policy of queue '" + name() + "': " + e);
  if (o.durability != Durability::none) {
    // queue.meta first: a rebuild after a crash between the two keeps the new policy.
    if (auto w = detail::write_queue_meta(detail::queue_dir(o.data_dir, name()), name(), o);
        !w.ok())
      return Error(w.error().code(), "cannot set the policy of queue '" + name() +
                                         "': " + w.error().message());
  }
  segment_->set_policy(o);
  // A queue with priorities: every level has the queue's policy.
  for (std::uint32_t p = 1; segment_->priority_level() == 0 && p <= segment_->max_priority();
       ++p) {
    auto level = open_level(p);
    if (!level.ok()) return level.error();
    if (auto r = level.value().set_policy(u); !r.ok()) return r;
  }
  return {};
}

VoidResult Queue::remove(std::string_view name) {
  const auto owner = detail::Segment::owner_of(name);
  // A queue with priorities: its levels go with it (the same owner's only).
  std::uint32_t levels = 0;
  if (auto seg = detail::Segment::open(name); seg.ok() && seg.value()->priority_level() == 0)
    levels = seg.value()->max_priority();
  auto r = detail::Segment::remove(name);
  if (!r.ok()) return r;
  for (std::uint32_t p = 1; p <= levels && owner.ok(); ++p) {
    const std::string level = detail::Segment::level_name(name, p);
    const auto l = detail::Segment::owner_of(level);
    if (l.ok() && l.value().uid == owner.value().uid) (void)detail::Segment::remove(level);
  }
  // Its dead-letter queue goes with it (if there is one, and only if it has the queue's
  // owner: another user's "<name>.dlq" is not this queue's).
  if (!std::string_view(name).ends_with(".dlq") && owner.ok()) {
    const std::string dlq = dead_letter_name(name);
    if (validate_name(dlq).empty()) {
      const auto d = detail::Segment::owner_of(dlq);
      if (d.ok() && d.value().uid == owner.value().uid) (void)detail::Segment::remove(dlq);
    }
  }
  return r;
}

std::string Queue::dead_letter_name(std::string_view name) {
  std::string n(name);
  return n.append(".dlq");
}

QueueOptions Queue::options() const { return segment_->options(); }

Result<Producer> Queue::producer(const ProducerOptions& options) {
  auto m = detail::register_member_repairing(segment_, detail::Role::producer);
  if (!m.ok()) return m.error();
  segment_->prefault_dedup();
  detail::healer_acquire(segment_, m.value());  // released by the producer's close
  Producer p(segment_, m.value());
  p.wait_ = options.wait;
  return p;
}

Result<Producer> Queue::idempotent_producer(ProducerSession resume,
                                            const ProducerOptions& options) {
  if (!segment_->dedup())
    return Error(Errc::invalid_argument,
                 "queue '" + segment_->name() +
                     "' has no dedup window: an idempotent producer needs one (create it with "
                     "QueueOptions::dedup_window, shmqctl create --dedup-window N)");
  if (resume.producer_id > 0x3fffffff)
    return Error(Errc::invalid_argument, "producer id " + std::to_string(resume.producer_id) +
                                             " out of range (1 .. 2^30 - 1)");
  auto p = producer(options);
  if (!p.ok()) return p;
  if (resume.producer_id == 0) {
    // A new producer id: the table's counter, never handed out twice while the segment
    // lives. (After a rebuild from the log it starts again: a session should not outlive a
    // reboot; see the README.)
    const std::uint64_t n =
        segment_->dedup().header().sessions.fetch_add(1, std::memory_order_relaxed) + 1;
    resume.producer_id = static_cast<std::uint32_t>(((n - 1) % 0x3fffffff) + 1);
    resume.next_sequence = 0;
  }
  p.value().session_ = true;
  p.value().session_producer_ = resume.producer_id;
  p.value().session_next_ = resume.next_sequence;
  return p;
}

Result<Consumer> Queue::consumer(const ConsumerOptions& options) {
  auto m = detail::register_member_repairing(segment_, detail::Role::consumer);
  if (!m.ok()) return m.error();
  detail::healer_acquire(segment_, m.value());  // released by the consumer's close
  Consumer c(segment_, m.value(), options);
  const std::uint32_t levels = segment_->priority_level() == 0 ? segment_->max_priority() : 0;
  if (levels == 0) return c;
  // A queue with priorities: a consumer of every level, each with a row in its segment.
  for (std::uint32_t p = 1; p <= levels; ++p) {
    auto q = open_level(p);
    if (!q.ok()) return q.error();
    auto lc = q.value().consumer(options);
    if (!lc.ok()) return lc.error();
    c.add_level(p, std::move(lc.value()));
  }
  return c;
}

Result<Queue> Queue::open_level(std::uint32_t p) const {
  const std::string level = detail::Segment::level_name(name(), p);
  auto q = open(level);
  if (!q.ok()) return Error(q.error().code(), "level " + std::to_string(p) + " of queue '" +
                                                  name() + "': " + q.error().message());
  const detail::Segment& l = *q.value().segment();
  if (l.priority_level() != p || l.max_priority() != segment_->max_priority() ||
      l.owner_uid() != segment_->owner_uid())
    return Error(Errc::mismatch, "'" + level + "' is not level " + std::to_string(p) +
                                     " of queue '" + name() + "' (another queue, or another "
                                     "owner's); remove it and create the queue again");
  return q;
}

RepairReport Queue::repair() {
  const WatchdogReport w = detail::repair_members(segment_);
  RepairReport r;
  r.watchdog_running = !w.active;
  r.members_reclaimed = w.members_reclaimed;
  r.redelivered = w.redelivered;
  r.holes_repaired = w.holes_repaired;
  // A queue with priorities: each level's member table too.
  for (std::uint32_t p = 1; segment_->priority_level() == 0 && p <= segment_->max_priority();
       ++p) {
    auto q = open_level(p);
    if (!q.ok()) continue;
    const WatchdogReport l = detail::repair_members(q.value().segment());
    r.watchdog_running = r.watchdog_running || !l.active;
    r.members_reclaimed += l.members_reclaimed;
    r.redelivered += l.redelivered;
    r.holes_repaired += l.holes_repaired;
  }
  return r;
}

const std::string& Queue::name() const noexcept { return segment_->name(); }
std::uint32_t Queue::slot_count() const noexcept { return segment_->slot_count(); }
std::uint32_t Queue::slot_size() const noexcept { return segment_->slot_size(); }
std::uint32_t Queue::max_message_size() const noexcept { return segment_->max_message_size(); }
std::uint32_t Queue::max_members() const noexcept { return segment_->max_members(); }

QueueStats Queue::stats() const {
  QueueStats s = stats_one();
  s.max_priority = segment_->max_priority();
  if (segment_->priority_level() != 0 || segment_->max_priority() == 0) return s;
  // A queue with priorities: each level's ring, summed; levels listed highest first.
  const QueueStats::Level own{0, s.ready, s.in_flight, s.delayed};
  std::vector<QueueStats::Level> levels;
  for (std::uint32_t p = segment_->max_priority(); p >= 1; --p) {
    auto q = open_level(p);
    if (!q.ok()) continue;  // a level removed under us: nothing in it to count
    const QueueStats l = q.value().stats_one();
    levels.push_back({p, l.ready, l.in_flight, l.delayed});
    s.ready += l.ready;
    s.in_flight += l.in_flight;
    s.claimed += l.claimed;
    s.delayed += l.delayed;
    if (l.next_due_ns != 0 && (s.next_due_ns == 0 || l.next_due_ns < s.next_due_ns))
      s.next_due_ns = l.next_due_ns;
    s.oldest_unacked_age_ms = std::max(s.oldest_unacked_age_ms, l.oldest_unacked_age_ms);
    s.sent += l.sent;
    s.received += l.received;
    s.acked += l.acked;
    s.requeued += l.requeued;
    s.members_reclaimed += l.members_reclaimed;
    s.redelivered += l.redelivered;
    s.leases_expired += l.leases_expired;
    s.holes_repaired += l.holes_repaired;
    s.dead_lettered += l.dead_lettered;
    s.expired += l.expired;
    s.dead_letter_failed += l.dead_letter_failed;
    s.corrupt += l.corrupt;
    s.dedup_duplicates += l.dedup_duplicates;
    s.dedup_evicted_early += l.dedup_evicted_early;
    s.dedup_voided += l.dedup_voided;
  }
  levels.push_back(own);
  s.levels = std::move(levels);
  return s;
}

QueueStats Queue::stats_one() const {
  const detail::Segment& seg = *segment_;
  detail::SegmentHeader& h = seg.header();
  QueueStats s;
  s.slot_count = seg.slot_count();
  s.slot_size = seg.slot_size();
  s.max_message_size = seg.max_message_size();
  s.max_members = seg.max_members();
  s.tail = h.tail.value.load(std::memory_order_acquire);
  s.dispatch = h.dispatch.value.load(std::memory_order_acquire);
  if (const detail::DedupTable& d = seg.dedup()) {
    s.dedup_duplicates = d.header().duplicates.load(std::memory_order_relaxed);
    s.dedup_evicted_early = d.header().evicted_early.load(std::memory_order_relaxed);
    s.dedup_voided = d.header().voided.load(std::memory_order_relaxed);
  }
  const std::uint32_t shift = seg.slot_shift();
  const std::uint64_t t = s.tail;
  const std::uint64_t n = seg.slot_count();
  // Positions [tail - N, tail): every message that can be in the ring.
  const std::uint64_t now_ns = detail::monotonic_coarse_ns();
  std::uint64_t oldest_ns = now_ns;
  for (std::uint64_t pos = t > n ? t - n : 0; pos < t; ++pos) {
    const std::uint64_t w = seg.slot(pos).word.load(std::memory_order_acquire);
    if (detail::word_lap(w) != detail::lap_of(pos, shift)) continue;
    const SlotState st = detail::word_state(w);
    if (st == SlotState::ready || st == SlotState::held || st == SlotState::delayed) {
      // Relaxed: a hint for operators; a scribbled value only shows a wrong age.
      const std::uint64_t enq = seg.slot(pos).enqueued_ns.load(std::memory_order_relaxed);
      if (enq != 0 && enq < oldest_ns) oldest_ns = enq;
    }
    switch (st) {
      case SlotState::ready:
      case SlotState::relocating: ++s.ready; break;  // being moved to a later position
      case SlotState::held: ++s.in_flight; break;
      case SlotState::claimed: ++s.claimed; break;
      case SlotState::delayed:
      case SlotState::relocating_delayed: {
        ++s.delayed;
        // Relaxed: a hint for operators (the state was read first; a due time that changed
        // since only shows a stale figure).
        const std::uint64_t due = seg.slot(pos).deadline_ns.load(std::memory_order_relaxed);
        if (due != 0 && (s.next_due_ns == 0 || due < s.next_due_ns)) s.next_due_ns = due;
        break;
      }
      default: break;
    }
  }
  // What each member holds: held heads (consumers, watchdog) or claimed/skipped heads.
  std::vector<std::uint64_t> held(seg.max_members(), 0);
  for (std::uint64_t i = 0; i < n; ++i) {
    const std::uint64_t w = seg.slot(i).word.load(std::memory_order_relaxed);
    const SlotState st = detail::word_state(w);
    if ((st == SlotState::held || st == SlotState::claimed || st == SlotState::skipped) &&
        detail::owner_row(detail::word_owner(w)) < seg.max_members())
      ++held[detail::owner_row(detail::word_owner(w))];
  }
  s.oldest_unacked_age_ms = (now_ns - oldest_ns) / 1'000'000;
  auto& wc = h.watchdog_counters;
  s.members_reclaimed = wc.members_reclaimed.load(std::memory_order_relaxed);
  s.redelivered = wc.redelivered.load(std::memory_order_relaxed);
  s.leases_expired = wc.leases_expired.load(std::memory_order_relaxed);
  s.holes_repaired = wc.holes_repaired.load(std::memory_order_relaxed);
  s.dead_lettered = wc.dead_lettered.load(std::memory_order_relaxed);
  s.expired = wc.expired.load(std::memory_order_relaxed);
  s.dead_letter_failed = wc.dead_letter_failed.load(std::memory_order_relaxed);
  s.corrupt = wc.corrupt.load(std::memory_order_relaxed);
  s.watchdog_active = h.watchdog.value.load(std::memory_order_relaxed) != 0;
  s.persisted = h.persisted.value.load(std::memory_order_relaxed);
  s.synced = h.persisted.synced.load(std::memory_order_relaxed);
  const std::uint64_t now = detail::monotonic_coarse_ns();
  for (std::uint64_t i = 0; i < n; ++i) {
    const std::uint64_t w = seg.slot(i).word.load(std::memory_order_relaxed);
    const std::uint64_t pos_lap = detail::lap_of(t + ((i - t) & (n - 1)), shift);
    if (detail::is_free(detail::word_state(w)) && detail::word_lap(w) == pos_lap) ++s.free_slots;
  }
  s.sent = h.retired_sent.load(std::memory_order_relaxed);
  s.received = h.retired_received.load(std::memory_order_relaxed);
  s.acked = h.retired_acked.load(std::memory_order_relaxed);
  s.requeued = h.retired_requeued.load(std::memory_order_relaxed);
  for (std::uint32_t i = 0; i < seg.max_members(); ++i) {
    const detail::MemberRow& row = seg.member(i);
    const std::uint64_t st = row.state.load(std::memory_order_acquire);
    const auto status = detail::member_status(st);
    if (status != detail::MemberStatus::active && status != detail::MemberStatus::leaving)
      continue;
    QueueStats::Member m;
    m.index = i;
    switch (detail::member_role(st)) {
      case detail::Role::producer: m.role = "producer"; break;
      case detail::Role::consumer: m.role = "consumer"; break;
      case detail::Role::watchdog: m.role = "watchdog"; break;
      case detail::Role::persister: m.role = "persister"; break;
      default: m.role = "unknown"; break;
    }
    m.status = status == detail::MemberStatus::active ? "active" : "leaving";
    m.pid = detail::member_pid(st);
    const std::uint64_t hb = row.heartbeat_ns.load(std::memory_order_relaxed);
    m.heartbeat_age_ms = now > hb ? (now - hb) / 1'000'000 : 0;
    m.held = held[i];
    m.alive = detail::process_alive(static_cast<pid_t>(m.pid),
                                    row.start_time.load(std::memory_order_relaxed));
    s.members.push_back(m);
    if (status != detail::MemberStatus::active) continue;
    if (detail::member_role(st) == detail::Role::producer) ++s.producers;
    if (detail::member_role(st) == detail::Role::consumer) ++s.consumers;
    s.sent += row.sent.load(std::memory_order_relaxed);
    s.received += row.received.load(std::memory_order_relaxed);
    s.acked += row.acked.load(std::memory_order_relaxed);
    s.requeued += row.requeued.load(std::memory_order_relaxed);
  }
  return s;
}

}  // namespace shmq
