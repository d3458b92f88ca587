#include "shmq/watchdog.hpp"

#include <condition_variable>
#include <mutex>
#include <thread>

#include <unistd.h>
#include <unordered_map>

#include "core/dead_letter.hpp"
#include "core/slot_ops.hpp"
#include "platform/crash_point.hpp"
#include "platform/process.hpp"
#include "ring/ring.hpp"
#include "ring/slot_word.hpp"
#include "segment/segment.hpp"

namespace shmq {

using detail::make_word;
using detail::MemberStatus;
using detail::Role;
using detail::SlotState;
using detail::word_aux;
using detail::word_lap;
using detail::word_owner;
using detail::word_state;

namespace {

constexpr std::uint64_t kMs = 1'000'000;

// When a slot word was first seen with its current value: timeouts that have no timestamp
// in shared memory (a claim's age, a lease whose holder has not written it yet) are timed
// from the watchdog's own first sight, which costs the hot path nothing.
struct Sighting {
  std::uint64_t word;
  std::uint64_t since_ns;
};

}  // namespace

struct Watchdog::Impl {
  std::shared_ptr<detail::Segment> seg;
  std::uint32_t member = 0;
  WatchdogOptions options;
  detail::DeadLetterSink dead_letters;
  std::unordered_map<std::uint64_t, Sighting> sightings;       // slot index -> sighting
  std::unordered_map<std::uint32_t, Sighting> leaving_rows;    // row -> when seen leaving
  std::unordered_map<std::uint32_t, Sighting> joining_rows;    // row -> when seen joining
  WatchdogReport totals;
  mutable std::mutex totals_mutex;

  std::thread thread;
  std::mutex mutex;
  std::condition_variable cv;
  bool stopping = false;

  Impl(std::shared_ptr<detail::Segment> s, std::uint32_t m, const WatchdogOptions& o)
      : seg(std::move(s)), member(m), options(o), dead_letters(seg) {}

  WatchdogReport tick();
  bool elect();
  void resign();
  bool alive(const detail::MemberRow& row, std::uint64_t state, std::uint64_t now_coarse) const;
  bool reclaim(std::uint32_t row, std::uint64_t now, WatchdogReport& r);
  void scan_slots(std::uint64_t now, WatchdogReport& r);
  void help_tail();
  std::uint64_t since(std::unordered_map<std::uint64_t, Sighting>& next, std::uint64_t key,
                      std::uint64_t word, std::uint64_t now);
};

bool Watchdog::Impl::alive(const detail::MemberRow& row, std::uint64_t state,
                           std::uint64_t now_coarse) const {
  if (seg->heartbeat_liveness()) {
    const std::uint64_t hb = row.heartbeat_ns.load(std::memory_order_relaxed);
    return hb + std::uint64_t(seg->heartbeat_timeout_ms()) * kMs >= now_coarse;
  }
  // start_time is stored after the row's claim: read state, start time, state again, so
  // that both come from one occupant of the row.
  const std::uint64_t start = row.start_time.load(std::memory_order_acquire);
  if (row.state.load(std::memory_order_acquire) != state) return true;  // changed: not now
  return detail::process_alive(static_cast<pid_t>(detail::member_pid(state)), start);
}

bool Watchdog::Impl::elect() {
  detail::SegmentHeader& h = seg->header();
  const std::uint64_t me = member + 1;
  std::uint64_t v = h.watchdog.value.load(std::memory_order_acquire);
  if (v == me) return true;
  if (v != 0 && v - 1 < seg->max_members() && v - 1 != member) {
    const detail::MemberRow& row = seg->member(static_cast<std::uint32_t>(v - 1));
    const std::uint64_t st = row.state.load(std::memory_order_acquire);
    if (detail::member_status(st) == MemberStatus::active &&
        detail::member_role(st) == Role::watchdog &&
        alive(row, st, detail::monotonic_coarse_ns()))
      return false;  // a live watchdog is elected: stand by
  }
  // Nobody, a dead one, or garbage: take over.
  return h.watchdog.value.compare_exchange_strong(v, me, std::memory_order_acq_rel);
}

void Watchdog::Impl::resign() {
  std::uint64_t me = member + 1;
  seg->header().watchdog.value.compare_exchange_strong(me, 0, std::memory_order_acq_rel);
}

std::uint64_t Watchdog::Impl::since(std::unordered_map<std::uint64_t, Sighting>& next,
                                    std::uint64_t key, std::uint64_t word, std::uint64_t now) {
  std::uint64_t first = now;
  if (auto it = sightings.find(key); it != sightings.end() && it->second.word == word)
    first = it->second.since_ns;
  next[key] = {word, first};
  return now - first;
}

// Takes back everything member `row` (leaving: its process is dead) owns in the ring.
// Returns true once nothing is left and the row was freed.
bool Watchdog::Impl::reclaim(std::uint32_t row, std::uint64_t now, WatchdogReport& r) {
  detail::Segment& s = *seg;
  auto& counters = s.header().watchdog_counters;
  const bool heartbeat_mode = s.heartbeat_liveness();
  // With heartbeat liveness, "dead" may be a process that is only stopped: its claims are
  // quarantined (skipped) and released only after another heartbeat timeout, so that a late
  // writer finds its claim gone and fails instead of writing into a reused slot.
  bool grace_over = true;
  if (heartbeat_mode) {
    const std::uint64_t st = s.member(row).state.load(std::memory_order_acquire);
    auto [it, fresh] = leaving_rows.try_emplace(row, Sighting{st, now});
    if (!fresh && it->second.word != st) it->second = {st, now};
    grace_over = now - it->second.since_ns >= std::uint64_t(s.heartbeat_timeout_ms()) * kMs;
  }
  std::uint64_t remaining = 0;
  bool requeued = false;
  for (std::uint64_t i = 0; i < s.slot_count(); ++i) {
    const std::uint64_t w = s.slot(i).word.load(std::memory_order_seq_cst);
    if (word_owner(w) != row) continue;
    const std::uint64_t pos = (word_lap(w) << s.slot_shift()) | i;
    const std::uint32_t k = word_aux(w);
    if (k < 1 || k > s.max_fragments()) continue;
    switch (word_state(w)) {
      case SlotState::held:
        if (detail::requeue_held(s, pos, w, 0)) {
          ++r.redelivered;
          counters.redelivered.fetch_add(1, std::memory_order_relaxed);
          requeued = true;
        }
        break;
      case SlotState::claimed:
        if (heartbeat_mode) {
          std::uint64_t expected = w;
          if (s.slot(i).word.compare_exchange_strong(
                  expected, make_word(word_lap(w), SlotState::skipped, row, k),
                  std::memory_order_seq_cst)) {
            ++r.holes_repaired;
            counters.holes_repaired.fetch_add(1, std::memory_order_relaxed);
            detail::wake_all(s.header().consumers_wait);
          }
          ++remaining;
        } else if (detail::release_claim(s, pos, row, k)) {
          ++r.holes_repaired;
          counters.holes_repaired.fetch_add(1, std::memory_order_relaxed);
        }
        break;
      case SlotState::skipped:
        if (grace_over)
          detail::release_claim(s, pos, row, k);
        else
          ++remaining;
        break;
      case SlotState::releasing:
      case SlotState::releasing_skipped:
        detail::finish_release(s, pos, w);
        break;
      default:
        break;  // free/ready/delayed words carry no owner
    }
    SHMQ_CRASH_POINT("watchdog.mid_reclaim");
  }
  (void)requeued;
  if (remaining != 0) return false;
  s.free_member(row);
  leaving_rows.erase(row);
  ++r.members_reclaimed;
  counters.members_reclaimed.fetch_add(1, std::memory_order_relaxed);
  return true;
}

void Watchdog::Impl::scan_slots(std::uint64_t now, WatchdogReport& r) {
  detail::Segment& s = *seg;
  auto& counters = s.header().watchdog_counters;
  const std::uint64_t now_coarse = detail::monotonic_coarse_ns();
  const std::uint64_t lease_ns = std::uint64_t(s.lease_ms()) * kMs;
  const std::uint64_t claim_ns = std::uint64_t(s.claim_timeout_ms()) * kMs;
  const std::uint64_t ttl_ns = std::uint64_t(s.ttl_ms()) * kMs;
  std::unordered_map<std::uint64_t, Sighting> next;
  for (std::uint64_t i = 0; i < s.slot_count(); ++i) {
    std::atomic<std::uint64_t>& word = s.slot(i).word;
    const std::uint64_t w = word.load(std::memory_order_seq_cst);
    const std::uint32_t k = word_aux(w);
    if (k < 1 || k > s.max_fragments()) continue;
    const std::uint64_t pos = (word_lap(w) << s.slot_shift()) | i;
    switch (word_state(w)) {
      case SlotState::held: {
        if (lease_ns == 0) break;
        const std::uint64_t dl = s.slot(i).deadline_ns.load(std::memory_order_relaxed);
        if (word.load(std::memory_order_seq_cst) != w) break;
        // 0: the holder has not written its lease yet; time it from our first sight.
        const bool expired = dl == 0 ? since(next, i, w, now) > lease_ns : now_coarse > dl;
        if (expired && detail::requeue_held(s, pos, w, 0)) {
          ++r.leases_expired;
          counters.leases_expired.fetch_add(1, std::memory_order_relaxed);
          counters.redelivered.fetch_add(1, std::memory_order_relaxed);
        }
        break;
      }
      case SlotState::claimed: {
        if (since(next, i, w, now) <= claim_ns) break;
        // A claim held longer than the claim timeout by a producer that is alive (dead ones
        // are reclaimed with their rows): stalled. Make it a hole the consumers pass; the
        // producer's publish will fail and it will send again. The slot stays its own
        // until it comes back (or dies).
        std::uint64_t expected = w;
        if (word.compare_exchange_strong(
                expected, make_word(word_lap(w), SlotState::skipped, word_owner(w), k),
                std::memory_order_seq_cst)) {
          ++r.holes_repaired;
          counters.holes_repaired.fetch_add(1, std::memory_order_relaxed);
          detail::wake_all(s.header().consumers_wait);
        }
        break;
      }
      case SlotState::skipped: {
        // A quarantined claim whose owner row is gone or reused by someone else
        // (only possible after a watchdog died mid-reclaim): nobody will release it.
        const std::uint32_t owner = word_owner(w);
        if (owner >= s.max_members()) {
          detail::release_claim(s, pos, owner, k);
          break;
        }
        const std::uint64_t st = s.member(owner).state.load(std::memory_order_acquire);
        if (detail::member_status(st) == MemberStatus::free ||
            detail::member_role(st) != Role::producer)
          detail::release_claim(s, pos, owner, k);
        break;
      }
      case SlotState::releasing:
      case SlotState::releasing_skipped:
        // An ack (or hole release) whose process died half-way: finish it.
        if (since(next, i, w, now) > 0) detail::finish_release(s, pos, w);
        break;
      case SlotState::ready: {
        if (ttl_ns == 0) break;
        const std::uint64_t enq = s.slot(i).enqueued_ns.load(std::memory_order_relaxed);
        if (enq == 0 || now_coarse <= enq ||
            now_coarse - enq <= ttl_ns + detail::coarse_resolution_ns())
          break;
        // Expired while waiting: take it like a consumer would, and dead-letter it.
        std::uint64_t expected = w;
        const std::uint64_t held = make_word(word_lap(w), SlotState::held, member, k);
        if (!word.compare_exchange_strong(expected, held, std::memory_order_seq_cst)) break;
        if (dead_letters.move(pos, held, DeadLetterReason::expired, member,
                              /*requeue_on_failure=*/true) ==
            detail::DeadLetterSink::Outcome::moved)
          ++r.expired;
        break;
      }
      default:
        break;
    }
  }
  sightings.swap(next);
}

// Moves the tail past a head whose claimer died between its claim and its tail CAS, so
// that consumers see the continuation rule right and producers need not do it.
void Watchdog::Impl::help_tail() {
  detail::Segment& s = *seg;
  auto& tail = s.header().tail.value;
  std::uint64_t t = tail.load(std::memory_order_seq_cst);
  const std::uint64_t w = s.slot(t).word.load(std::memory_order_seq_cst);
  const std::int64_t d = detail::lap_diff(word_lap(w), detail::lap_of(t, s.slot_shift()));
  const std::uint32_t k = std::max<std::uint32_t>(1, std::min(word_aux(w), s.max_fragments()));
  if ((d == 0 && !detail::is_free(word_state(w))) || (d == 1 && detail::is_free(word_state(w))))
    tail.compare_exchange_strong(t, t + k, std::memory_order_seq_cst);
}

WatchdogReport Watchdog::Impl::tick() {
  WatchdogReport r;
  detail::Segment& s = *seg;
  const std::uint64_t beat = detail::monotonic_coarse_ns();
  s.member(member).heartbeat_ns.store(beat, std::memory_order_relaxed);
  if (s.heartbeat_liveness()) {
    // Liveness by heartbeat: this process is alive while this thread runs, so it beats for
    // every member row of this process (an idle handle is not taken for dead; a stopped or
    // dead process stops beating for all of them).
    const auto me = static_cast<std::uint32_t>(::getpid());
    for (std::uint32_t i = 0; i < s.max_members(); ++i) {
      const std::uint64_t st = s.member(i).state.load(std::memory_order_acquire);
      if (detail::member_status(st) == MemberStatus::active && detail::member_pid(st) == me)
        s.member(i).heartbeat_ns.store(beat, std::memory_order_relaxed);
    }
  }
  if (!elect()) {
    std::lock_guard<std::mutex> lock(totals_mutex);
    totals.active = false;
    return r;
  }
  r.active = true;
  const std::uint64_t now = detail::monotonic_ns();
  const std::uint64_t now_coarse = detail::monotonic_coarse_ns();
  bool changed = false;
  for (std::uint32_t i = 0; i < s.max_members(); ++i) {
    if (i == member) continue;
    detail::MemberRow& row = s.member(i);
    std::uint64_t st = row.state.load(std::memory_order_acquire);
    const MemberStatus status = detail::member_status(st);
    if (status == MemberStatus::free) continue;
    if (status == MemberStatus::joining) {
      // Being registered (microseconds). Its start time and heartbeat may still be the
      // previous occupant's: judge it by its pid alone, and in heartbeat mode (pids of other
      // namespaces mean nothing) only once it has stayed joining for a heartbeat timeout.
      bool dead;
      if (s.heartbeat_liveness()) {
        auto [it, fresh] = joining_rows.try_emplace(i, Sighting{st, now});
        if (!fresh && it->second.word != st) it->second = Sighting{st, now};
        dead = now - it->second.since_ns > std::uint64_t(s.heartbeat_timeout_ms()) * kMs;
      } else {
        dead = !detail::process_alive(static_cast<pid_t>(detail::member_pid(st)), 0);
      }
      if (!dead) continue;
      joining_rows.erase(i);
      const std::uint64_t leaving =
          detail::member_state(MemberStatus::leaving, detail::member_role(st), detail::member_pid(st));
      if (!row.state.compare_exchange_strong(st, leaving, std::memory_order_acq_rel)) continue;
    } else if (status == MemberStatus::active) {
      if (alive(row, st, now_coarse)) continue;
      const std::uint64_t leaving =
          detail::member_state(MemberStatus::leaving, detail::member_role(st), detail::member_pid(st));
      if (!row.state.compare_exchange_strong(st, leaving, std::memory_order_acq_rel)) continue;
    } else if (status != MemberStatus::leaving) {
      // Garbage status: treat the row as a dead member's.
      const std::uint64_t leaving = detail::member_state(MemberStatus::leaving, Role::none, 0);
      if (!row.state.compare_exchange_strong(st, leaving, std::memory_order_acq_rel)) continue;
    }
    reclaim(i, now, r);
    changed = true;
  }
  scan_slots(now, r);
  help_tail();
  if (changed || r.leases_expired != 0 || r.holes_repaired != 0 || r.expired != 0) {
    // Whatever we freed or put back, sleepers must look again (requeue_held and
    // release_claim wake them already; this also covers a member that died between its own
    // CAS and its wake).
    detail::wake_all(s.header().consumers_wait);
    detail::wake_all(s.header().producers_wait);
  }
  std::lock_guard<std::mutex> lock(totals_mutex);
  totals.members_reclaimed += r.members_reclaimed;
  totals.redelivered += r.redelivered;
  totals.leases_expired += r.leases_expired;
  totals.holes_repaired += r.holes_repaired;
  totals.expired += r.expired;
  totals.active = r.active;
  return r;
}

Result<Watchdog> Watchdog::attach(const Queue& queue, const WatchdogOptions& options) {
  return attach_segment(queue.segment(), options);
}

Result<Watchdog> Watchdog::attach_segment(std::shared_ptr<detail::Segment> segment,
                                          const WatchdogOptions& options) {
  if (options.interval.count() <= 0 || options.standby_interval.count() < 0)
    return Error(Errc::invalid_argument, "watchdog interval must be above 0 ms");
  auto m = segment->register_member(Role::watchdog);
  if (!m.ok()) return m.error();
  return Watchdog(std::make_unique<Impl>(std::move(segment), m.value(), options));
}

Watchdog::Watchdog(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Watchdog::Watchdog(Watchdog&&) noexcept = default;

Watchdog& Watchdog::operator=(Watchdog&& o) noexcept {
  if (this != &o) {
    close();
    impl_ = std::move(o.impl_);
  }
  return *this;
}

Watchdog::~Watchdog() { close(); }

void Watchdog::close() noexcept {
  if (!impl_) return;
  stop();
  // Release anything we hold ourselves (a TTL dead-lettering cut short) before leaving.
  detail::Segment& s = *impl_->seg;
  for (std::uint64_t i = 0; i < s.slot_count(); ++i) {
    const std::uint64_t w = s.slot(i).word.load(std::memory_order_seq_cst);
    if (word_state(w) == SlotState::held && word_owner(w) == impl_->member)
      detail::requeue_held(s, (word_lap(w) << s.slot_shift()) | i, w, 0);
  }
  impl_->resign();
  s.unregister_member(impl_->member, Role::watchdog);
  impl_.reset();
}

WatchdogReport Watchdog::tick() { return impl_->tick(); }

void Watchdog::start() {
  if (!impl_ || impl_->thread.joinable()) return;
  impl_->stopping = false;
  impl_->thread = std::thread([impl = impl_.get()] {
    std::unique_lock<std::mutex> lock(impl->mutex);
    while (!impl->stopping) {
      lock.unlock();
      const bool active = impl->tick().active;
      lock.lock();
      const auto wait = active || impl->options.standby_interval.count() == 0
                            ? impl->options.interval
                            : impl->options.standby_interval;
      impl->cv.wait_for(lock, wait, [impl] { return impl->stopping; });
    }
  });
}

void Watchdog::stop() {
  if (!impl_ || !impl_->thread.joinable()) return;
  {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    impl_->stopping = true;
  }
  impl_->cv.notify_all();
  impl_->thread.join();
}

bool Watchdog::running() const noexcept { return impl_ && impl_->thread.joinable(); }

WatchdogReport Watchdog::totals() const {
  if (!impl_) return {};
  std::lock_guard<std::mutex> lock(impl_->totals_mutex);
  return impl_->totals;
}

}  // namespace shmq
