#include "shmq/watchdog.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <unordered_map>
#include <vector>

#include "core/dead_letter.hpp"
#include "core/healer.hpp"
#include "core/slot_ops.hpp"
#include "platform/crash_point.hpp"
#include "platform/fd.hpp"
#include "platform/process.hpp"
#include "ring/requeue_map.hpp"
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
// Pid liveness: an elected watchdog whose process lives but that has not beaten for this
// long (stopped, wedged) loses the election to a standby.
constexpr std::uint32_t kWatchdogTakeoverMs = 1000;

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
  // Our member row; row >= max_members for a repair pass (Queue::repair), which has none.
  detail::MemberTicket me;
  WatchdogOptions options;
  detail::DeadLetterSink dead_letters;
  std::unordered_map<std::uint64_t, Sighting> sightings;       // slot index -> sighting
  std::unordered_map<std::uint32_t, Sighting> joining_rows;    // row -> when seen joining
  std::vector<std::uint64_t> rows;  // every row's state word, read at the start of a tick
  // What is live in the ring (see track): every position below `frontier` was looked at
  // once; those then claimed, committed or held (not released, not a continuation) are in
  // `live`, ascending (entries found released since are kNone until compacted). No other
  // position below `frontier` can need the watchdog again: a released position stays
  // released, and no producer claims below the tail.
  std::vector<std::uint64_t> live;
  std::uint64_t frontier = 0;
  bool tracking = false;
  std::size_t live_next = 0;   // where the next slice of `live` starts
  std::size_t live_dead = 0;   // kNone entries in `live`
  // A ready message we took to dead-letter (TTL) and have not released or requeued yet.
  std::uint64_t holding_pos = UINT64_MAX;
  std::uint64_t holding_word = 0;
  // The last scan found the ring empty (nothing claimed, waiting, held or half-released) with
  // this tail and this word in the tail's slot: the thread may sleep until either changes
  // (see sleep_while_idle).
  bool ring_empty = false;
  std::uint64_t empty_tail = 0;
  std::uint64_t empty_word = 0;
  std::atomic<bool> stop_requested{false};
  WatchdogReport totals;
  mutable std::mutex totals_mutex;

  void sleep_while_idle();
  void sleep_standing_by(std::chrono::milliseconds wait);
  int elected_pidfd();
  // Standby sleeps (sleep_standing_by): a pidfd of the elected watchdog's process, for the
  // row word it was opened for, and an eventfd that stop() writes to.
  int pidfd = -1;
  std::uint64_t pidfd_row_word = 0;
  std::uint64_t pidfd_row = UINT64_MAX;
  int stop_fd = -1;

  std::thread thread;
  std::mutex mutex;
  std::condition_variable cv;
  bool stopping = false;

  Impl(std::shared_ptr<detail::Segment> s, const detail::MemberTicket& m, const WatchdogOptions& o)
      : seg(std::move(s)), me(m), options(o), dead_letters(seg) {}
  ~Impl() {
    if (pidfd >= 0) ::close(pidfd);
    if (stop_fd >= 0) ::close(stop_fd);
  }

  bool has_row() const { return me.row < seg->max_members(); }
  WatchdogReport tick();
  WatchdogReport repair();
  bool elect();
  void resign();
  bool still_elected();
  bool alive(const detail::MemberRow& row, std::uint64_t state, std::uint64_t now_coarse) const;
  bool elected_watchdog_alive(std::uint64_t v, std::uint64_t now_coarse) const;
  std::uint64_t takeover_ns() const;
  bool orphan(std::uint32_t owner, bool fresh);
  bool take_back(std::uint64_t i, std::uint64_t pos, std::uint64_t w, std::uint64_t now,
                 std::unordered_map<std::uint64_t, Sighting>& next, WatchdogReport& r);
  bool reap_members(std::uint64_t now, std::unordered_map<std::uint64_t, Sighting>& next,
                    WatchdogReport& r);
  bool reclaim(std::uint32_t row, std::uint64_t leaving, std::uint64_t now,
               std::unordered_map<std::uint64_t, Sighting>& next, WatchdogReport& r);
  bool scan_slots(std::uint64_t now, std::unordered_map<std::uint64_t, Sighting>& next,
                  WatchdogReport& r);
  void help_tail();
  bool track(std::uint64_t tail);
  bool examine(std::uint64_t pos, std::uint64_t dispatch, detail::RequeueMap& map,
               std::uint64_t now, std::unordered_map<std::uint64_t, Sighting>& next,
               WatchdogReport& r);
  void remark(detail::RequeueMap& map, std::uint64_t i, std::uint64_t pos, std::uint64_t dispatch);
  void carry_sightings(std::unordered_map<std::uint64_t, Sighting>& next);
  std::uint64_t since(std::unordered_map<std::uint64_t, Sighting>& next, std::uint64_t key,
                      std::uint64_t word, std::uint64_t now);
  // Only while the row is ours: a watchdog whose row was taken (evicted while its process
  // was stopped) must not keep the row's next occupant looking alive.
  void beat() {
    if (has_row() && seg->owns(me))
      seg->member(me.row).heartbeat_ns.store(detail::monotonic_coarse_ns(),
                                             std::memory_order_relaxed);
  }
};

// Slots between two checks that we are still the elected watchdog (and beats of our own
// heartbeat, so that a long pass over a big ring is not taken for a stopped watchdog).
constexpr std::uint64_t kElectionCheckEvery = 4096;

// Positions looked at per tick, twice over (scan_slots): new positions classified (track),
// and live ones examined, round-robin. A state that needs the watchdog (a lease, a stalled
// claim, a TTL, a half-done release, an orphan, a requeue whose mark was lost) is therefore
// seen within ceil(live / kSweepSlice) ticks: one tick unless more than 32 Ki messages are
// in flight (then up to 512 ticks, 2.6 s at the 5 ms interval, for the 16 Mi a ring can
// hold), on top of the lease, claim timeout and TTL, which are seconds. A watchdog just
// elected classifies the ring's N positions once, 32 Ki a tick.
constexpr std::uint64_t kSweepSlice = 32768;
constexpr std::uint64_t kNone = UINT64_MAX;

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

// How long an elected watchdog may go without a heartbeat before a standby takes over even
// though its process lives: it is stopped (SIGSTOP, a debugger) or wedged. Its heartbeat is
// written at every tick and every kElectionCheckEvery slots of a pass.
std::uint64_t Watchdog::Impl::takeover_ns() const {
  if (seg->heartbeat_liveness()) return std::uint64_t(seg->heartbeat_timeout_ms()) * kMs;
  return std::uint64_t(kWatchdogTakeoverMs) * kMs;
}

bool Watchdog::Impl::elected_watchdog_alive(std::uint64_t v, std::uint64_t now_coarse) const {
  if (v == 0 || v - 1 >= seg->max_members()) return false;
  const detail::MemberRow& row = seg->member(static_cast<std::uint32_t>(v - 1));
  const std::uint64_t st = row.state.load(std::memory_order_acquire);
  if (detail::member_status(st) != MemberStatus::active ||
      detail::member_role(st) != Role::watchdog || !alive(row, st, now_coarse))
    return false;
  const std::uint64_t hb = row.heartbeat_ns.load(std::memory_order_relaxed);
  return hb + takeover_ns() >= now_coarse;
}

bool Watchdog::Impl::elect() {
  detail::SegmentHeader& h = seg->header();
  if (!seg->owns(me)) return false;
  const std::uint64_t mine = me.row + 1;
  std::uint64_t v = h.watchdog.value.load(std::memory_order_acquire);
  if (v == mine) return true;
  // A live watchdog is elected and beating: stand by. Nobody, a dead or stopped one, or
  // garbage: take over.
  if (elected_watchdog_alive(v, detail::monotonic_coarse_ns())) return false;
  return h.watchdog.value.compare_exchange_strong(v, mine, std::memory_order_acq_rel) &&
         seg->owns(me);
}

// Checked during a pass: a watchdog that was stopped long enough for another to take over
// stops acting as soon as it runs again (what it did in between is one CAS at most per slot
// from a word it had just read, which fails if anything moved on).
bool Watchdog::Impl::still_elected() {
  if (!has_row()) return true;  // a repair pass (see repair())
  beat();
  return seg->header().watchdog.value.load(std::memory_order_acquire) == me.row + 1 &&
         seg->owns(me);
}

void Watchdog::Impl::resign() {
  // Not if our row was taken: the election word may then be its new occupant's.
  if (!has_row() || !seg->owns(me)) return;
  std::uint64_t mine = me.row + 1;
  seg->header().watchdog.value.compare_exchange_strong(mine, 0, std::memory_order_acq_rel);
}

std::uint64_t Watchdog::Impl::since(std::unordered_map<std::uint64_t, Sighting>& next,
                                    std::uint64_t key, std::uint64_t word, std::uint64_t now) {
  std::uint64_t first = now;
  if (auto it = sightings.find(key); it != sightings.end() && it->second.word == word)
    first = it->second.since_ns;
  else if (auto jt = next.find(key); jt != next.end() && jt->second.word == word)
    first = jt->second.since_ns;
  next[key] = {word, first};
  return now - first;
}

// True if the member that created a slot state (its owner id: row + generation tag) is no
// longer there: its row is free, leaving, or taken by a later generation. Such a state is
// nobody's to finish: the watchdog takes it back. The row is read after the slot word: a
// member registers (and so bumps the generation) before it creates any state, so a state
// of a new occupant is never judged by the row's previous word. `fresh`: do not trust the
// rows read at the start of the tick (a "not an orphan" from them is always safe: a tick
// later at worst).
bool Watchdog::Impl::orphan(std::uint32_t owner, bool fresh) {
  const std::uint32_t row = detail::owner_row(owner);
  if (row >= seg->max_members()) return true;
  const auto judge = [owner](std::uint64_t st) {
    const MemberStatus status = detail::member_status(st);
    return !(status == MemberStatus::active || status == MemberStatus::joining) ||
           (detail::member_generation(st) & 0xff) != detail::owner_tag(owner);
  };
  if (!fresh && row < rows.size() && !judge(rows[row])) return false;
  return judge(seg->member(row).state.load(std::memory_order_seq_cst));
}

// Takes back the state an orphan (see orphan()) left in slot i: a held message goes back
// to the queue; a claim becomes a hole and is given back (in heartbeat mode only after a
// quarantine of one heartbeat timeout: the "dead" producer may only be stopped and still
// write into the slot when it runs again, so the slot must not be reused before that); a
// half-done release is finished. Returns true if something is left to do at a later tick.
bool Watchdog::Impl::take_back(std::uint64_t i, std::uint64_t pos, std::uint64_t w,
                               std::uint64_t now,
                               std::unordered_map<std::uint64_t, Sighting>& next,
                               WatchdogReport& r) {
  detail::Segment& s = *seg;
  auto& counters = s.header().watchdog_counters;
  const bool heartbeat_mode = s.heartbeat_liveness();
  const std::uint32_t owner = word_owner(w);
  const std::uint32_t k = word_aux(w);
  switch (word_state(w)) {
    case SlotState::held:
      if (detail::requeue_held(s, pos, w, 0)) {
        ++r.redelivered;
        counters.redelivered.fetch_add(1, std::memory_order_relaxed);
      }
      return false;
    case SlotState::claimed:
      if (!heartbeat_mode) {
        // A dedup way naming this claim goes first: once the hole is free a producer may
        // reuse the slot, and the way could no longer tell a hole from a delivered message.
        if (s.dedup() && !s.dedup().forget_position(pos, me.owner)) return true;
        if (detail::release_claim(s, pos, owner, k)) {
          ++r.holes_repaired;
          counters.holes_repaired.fetch_add(1, std::memory_order_relaxed);
        }
        return false;
      } else {
        std::uint64_t expected = w;
        const std::uint64_t hole = make_word(word_lap(w), SlotState::skipped, owner, k);
        if (s.slot(i).word.compare_exchange_strong(expected, hole, std::memory_order_seq_cst)) {
          ++r.holes_repaired;
          counters.holes_repaired.fetch_add(1, std::memory_order_relaxed);
          detail::wake_all(s.header().consumers_wait);
          detail::signal_level(s);  // a priority consumer sleeps on its base
          (void)since(next, i, hole, now);  // the quarantine starts now
        }
        return true;
      }
    case SlotState::skipped:
      if (heartbeat_mode &&
          since(next, i, w, now) < std::uint64_t(s.heartbeat_timeout_ms()) * kMs)
        return true;
      if (s.dedup() && !s.dedup().forget_position(pos, me.owner)) return true;
      detail::release_claim(s, pos, owner, k);
      return false;
    case SlotState::releasing:
    case SlotState::releasing_skipped:
      detail::finish_release(s, pos, w);
      return false;
    case SlotState::relocating:
    case SlotState::relocating_delayed:
      detail::finish_relocation(s, pos, w);
      return false;
    default:
      return false;  // free/ready/delayed words carry no owner
  }
}

// Takes back everything the row's dead (or evicted) member left in the ring, then frees the
// row. `leaving` is the row's word: it is freed only if still exactly that. Returns true
// once the row was freed.
bool Watchdog::Impl::reclaim(std::uint32_t row, std::uint64_t leaving, std::uint64_t now,
                             std::unordered_map<std::uint64_t, Sighting>& next,
                             WatchdogReport& r) {
  detail::Segment& s = *seg;
  const std::uint64_t tail = s.header().tail.value.load(std::memory_order_seq_cst);
  const std::uint64_t n = s.slot_count();
  std::uint64_t remaining = 0;
  // Every state a member creates is at a live position or at one not classified yet,
  // [frontier, tail] (a claim may be at the tail itself until its producer moves the tail),
  // at that position's lap: all of them, at once (the dead member's messages are
  // redelivered this tick).
  const bool known = tracking && frontier <= tail && tail - frontier <= n;
  const std::uint64_t from = known ? frontier : (tail > n ? tail - n : 0);
  std::uint64_t steps = 0;
  auto visit = [&](std::uint64_t pos) {
    if (++steps % kElectionCheckEvery == 0 && !still_elected()) return false;
    const std::uint64_t i = pos & (n - 1);
    const std::uint64_t w = s.slot(i).word.load(std::memory_order_seq_cst);
    if (word_lap(w) != detail::lap_of(pos, s.slot_shift())) return true;
    const std::uint32_t owner = word_owner(w);
    if (detail::owner_row(owner) != row) return true;
    const SlotState st = word_state(w);
    if (st != SlotState::held && st != SlotState::claimed && st != SlotState::skipped &&
        st != SlotState::releasing && st != SlotState::releasing_skipped &&
        !detail::is_relocating(st))
      return true;
    const std::uint32_t k = word_aux(w);
    if (k < 1 || k > s.max_fragments()) return true;
    // The row is leaving, so every generation's state is an orphan, unless the row was
    // freed and taken again since we read it (a slow watchdog): then the new member's
    // are not.
    if (!orphan(owner, /*fresh=*/true)) return true;
    if (take_back(i, pos, w, now, next, r)) ++remaining;
    SHMQ_CRASH_POINT("watchdog.mid_reclaim");
    return true;
  };
  if (known)
    for (const std::uint64_t pos : live)
      if (pos != kNone && !visit(pos)) return false;
  // Counted, not "pos <= tail": a tail scribbled to 2^64 - 1 made that loop endless.
  for (std::uint64_t step = 0, pos = from; step <= tail - from; ++step, ++pos)
    if (!visit(pos)) return false;
  if (remaining != 0) return false;
  if (!s.free_member(row, leaving)) return false;
  ++r.members_reclaimed;
  s.header().watchdog_counters.members_reclaimed.fetch_add(1, std::memory_order_relaxed);
  return true;
}

bool Watchdog::Impl::scan_slots(std::uint64_t now,
                                std::unordered_map<std::uint64_t, Sighting>& next,
                                WatchdogReport& r) {
  detail::Segment& s = *seg;
  const std::uint64_t tail = s.header().tail.value.load(std::memory_order_seq_cst);
  // Requeues behind dispatch are re-marked (remark) only below an honest cursor: one
  // scribbled past the tail is clamped back by the next consumer, whose walk then finds
  // those messages itself.
  std::uint64_t dispatch = s.header().dispatch.value.load(std::memory_order_seq_cst);
  if (dispatch > tail + detail::max_span(s)) dispatch = 0;
  ring_empty = false;
  if (!track(tail)) return false;
  // One slice of the live positions per tick, round-robin: an idle queue (everything acked)
  // has none and costs nothing here, whatever the ring's size.
  detail::RequeueMap map(s);
  if (live_next >= live.size()) live_next = 0;
  const std::size_t end = std::min<std::size_t>(live.size(), live_next + kSweepSlice);
  for (std::size_t j = live_next; j < end; ++j) {
    if ((j - live_next) % kElectionCheckEvery == kElectionCheckEvery - 1 && !still_elected())
      return false;
    if (live[j] == kNone) continue;
    if (!examine(live[j], dispatch, map, now, next, r)) {
      live[j] = kNone;  // released: never live again
      ++live_dead;
    }
  }
  live_next = end;
  if (live_dead * 2 > live.size()) {
    std::erase(live, kNone);
    live_dead = 0;
    live_next = 0;
  }
  if (live.size() == live_dead && frontier == tail) {
    // Nothing live below the tail; the tail's slot not claimed (at its lap, free).
    const std::uint64_t w = s.slot(tail).word.load(std::memory_order_seq_cst);
    ring_empty =
        word_lap(w) != detail::lap_of(tail, s.slot_shift()) || detail::is_free(word_state(w));
    empty_tail = tail;
    empty_word = w;
  }
  return true;
}

// Looks at live position `pos` and does what its state needs (a lease, a stalled claim, a
// half-done release, a TTL, an orphan, a lost requeue mark). Returns false if the position
// is released (its slot is at a later lap): it needs nothing any more.
bool Watchdog::Impl::examine(std::uint64_t pos, std::uint64_t dispatch, detail::RequeueMap& map,
                             std::uint64_t now,
                             std::unordered_map<std::uint64_t, Sighting>& next,
                             WatchdogReport& r) {
  detail::Segment& s = *seg;
  auto& counters = s.header().watchdog_counters;
  const std::uint64_t now_coarse = detail::monotonic_coarse_ns();
  const std::uint64_t lease_ns = std::uint64_t(s.lease_ms()) * kMs;
  const std::uint64_t claim_ns = std::uint64_t(s.claim_timeout_ms()) * kMs;
  const std::uint64_t ttl_ns = std::uint64_t(s.ttl_ms()) * kMs;
  const std::uint64_t i = pos & (s.slot_count() - 1);
  std::atomic<std::uint64_t>& word = s.slot(i).word;
  const std::uint64_t w = word.load(std::memory_order_seq_cst);
  // A later lap: released. (An earlier one is garbage: nothing an honest process left.)
  if (word_lap(w) != detail::lap_of(pos, s.slot_shift())) return false;
  const std::uint32_t k = word_aux(w);
  if (k < 1 || k > s.max_fragments()) return true;
  const SlotState st = word_state(w);
  if ((st == SlotState::held || st == SlotState::claimed || st == SlotState::skipped) &&
      orphan(word_owner(w), /*fresh=*/false)) {
    // Left by a member that lost its row (evicted, then went on) or by a dead member a
    // watchdog died reclaiming.
    take_back(i, pos, w, now, next, r);
    return true;
  }
  switch (st) {
    case SlotState::held: {
      if (lease_ns == 0) break;
      const std::uint64_t dl = s.slot(i).deadline_ns.load(std::memory_order_relaxed);
      if (word.load(std::memory_order_seq_cst) != w) break;
      // Timed from our first sight of this held word as well as by its deadline: right
      // after its claim a holder's deadline is still the previous delivery's (or 0)
      // until it writes its own lease, and that must not expire the new delivery. An
      // expiry is at most a round over the live positions late (kSweepSlice); a new
      // watchdog restarts the timing (later, never earlier).
      const std::uint64_t seen = since(next, i, w, now);
      const bool expired = seen > lease_ns && (dl == 0 || now_coarse > dl);
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
        detail::signal_level(s);  // a priority consumer sleeps on its base
      }
      break;
    }
    case SlotState::releasing:
    case SlotState::releasing_skipped:
      // An ack (or hole release) whose process died half-way: finish it.
      if (since(next, i, w, now) > 0) detail::finish_release(s, pos, w);
      break;
    case SlotState::relocating:
    case SlotState::relocating_delayed:
      // A relocation whose producer died or stalled half-way (seen on two ticks): finish
      // it. Every step is a CAS from the exact value, so racing the live relocator is safe.
      if (since(next, i, w, now) > 0) detail::finish_relocation(s, pos, w);
      break;
    case SlotState::delayed:
      remark(map, i, pos, dispatch);
      break;
    case SlotState::ready: {
      remark(map, i, pos, dispatch);
      if (ttl_ns == 0 || !has_row()) break;
      const std::uint64_t enq = s.slot(i).enqueued_ns.load(std::memory_order_relaxed);
      if (enq == 0 || now_coarse <= enq ||
          now_coarse - enq <= ttl_ns + detail::coarse_resolution_ns())
        break;
      // Expired while waiting: take it like a consumer would, and dead-letter it.
      std::uint64_t expected = w;
      const std::uint64_t held = make_word(word_lap(w), SlotState::held, me.owner, k);
      holding_pos = pos;
      holding_word = held;
      if (!word.compare_exchange_strong(expected, held, std::memory_order_seq_cst)) {
        holding_pos = UINT64_MAX;
        break;
      }
      if (dead_letters.move(pos, held, DeadLetterReason::expired, me.owner,
                            /*requeue_on_failure=*/true) ==
          detail::DeadLetterSink::Outcome::moved)
        ++r.expired;
      holding_pos = UINT64_MAX;
      break;
    }
    default:
      break;
  }
  return true;
}

// Keeps `live` and `frontier` up to date: classifies the positions produced since the last
// tick, [frontier, tail), at most kSweepSlice of them (a watchdog just elected starts at
// tail - N and catches up over a few ticks). A position below the tail was claimed as a
// head or covered by one; one that is not free at its lap is live. Returns false if we
// lost the election on the way.
bool Watchdog::Impl::track(std::uint64_t tail) {
  detail::Segment& s = *seg;
  const std::uint64_t n = s.slot_count();
  const std::uint64_t bottom = tail > n ? tail - n : 0;
  if (!tracking || frontier > tail) {
    // First tick, or the tail moved back (scribbled: producers will claim below our
    // frontier): start again from the window.
    live.clear();
    live_dead = 0;
    live_next = 0;
    frontier = bottom;
    tracking = true;
  } else if (frontier < bottom) {
    // The ring went round since: everything below tail - N was released (its slot is in
    // use for a later position).
    frontier = bottom;
    std::erase_if(live, [bottom](std::uint64_t p) { return p == kNone || p < bottom; });
    live_dead = 0;
    live_next = 0;
  }
  // Not "frontier + kSweepSlice": near 2^64 (a scribbled tail) that sum wraps.
  const std::uint64_t until = tail - frontier > kSweepSlice ? frontier + kSweepSlice : tail;
  for (std::uint64_t steps = 1; frontier < until; ++frontier, ++steps) {
    if (steps % kElectionCheckEvery == 0 && !still_elected()) return false;
    const std::uint64_t w = s.slot(frontier).word.load(std::memory_order_seq_cst);
    if (word_lap(w) == detail::lap_of(frontier, s.slot_shift()) && !detail::is_free(word_state(w)))
      live.push_back(frontier);
  }
  return true;
}

// A ready or delayed message that dispatch has passed must be marked in the requeue map,
// or no consumer finds it. Every requeue marks it, after its CAS; a process that died in
// between (or a dispatch cursor scribbled past ready messages) leaves it unmarked: mark it,
// and tell the consumers.
void Watchdog::Impl::remark(detail::RequeueMap& map, std::uint64_t i, std::uint64_t pos,
                            std::uint64_t dispatch) {
  if (pos >= dispatch) return;  // the dispatch walk gets it
  const bool was = map.marked(i);
  map.mark(i);  // also sets summary bits a marker that died half-way left clear
  if (was) return;
  seg->header().requeue_epoch.value.fetch_add(1, std::memory_order_seq_cst);
  detail::wake_waiters(seg->header().consumers_wait, seg->max_members());
  detail::signal_level(*seg);
}

// Keeps the sightings of slots this tick did not look at (they are timed across ticks):
// those not in `next` whose word is unchanged. (A slot looked at whose state still needs
// timing is in `next` already; one whose state changed has another word.)
void Watchdog::Impl::carry_sightings(std::unordered_map<std::uint64_t, Sighting>& next) {
  for (const auto& [i, seen] : sightings)
    if (!next.contains(i) && seg->slot(i).word.load(std::memory_order_relaxed) == seen.word)
      next.emplace(i, seen);
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

// Judges every other member row and reclaims the dead ones'. Returns true if it changed
// anything; stops early if we lose the election.
bool Watchdog::Impl::reap_members(std::uint64_t now,
                                  std::unordered_map<std::uint64_t, Sighting>& next,
                                  WatchdogReport& r) {
  detail::Segment& s = *seg;
  const std::uint64_t now_coarse = detail::monotonic_coarse_ns();
  bool changed = false;
  for (std::uint32_t i = 0; i < s.max_members(); ++i) {
    if (i == me.row) continue;
    if (!still_elected()) break;
    detail::MemberRow& row = s.member(i);
    std::uint64_t st = row.state.load(std::memory_order_acquire);
    const MemberStatus status = detail::member_status(st);
    if (status == MemberStatus::free) continue;
    std::uint64_t leaving = detail::with_status(st, MemberStatus::leaving);
    if (status == MemberStatus::joining) {
      // Being registered (microseconds). Its start time and heartbeat may still be the
      // previous occupant's: judge it by its pid alone, and in heartbeat mode (pids of other
      // namespaces mean nothing) only once it has stayed joining for a heartbeat timeout.
      // If it was only slow, its own CAS joining -> active fails and it takes another row.
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
      if (!row.state.compare_exchange_strong(st, leaving, std::memory_order_acq_rel)) continue;
    } else if (status == MemberStatus::active) {
      if (alive(row, st, now_coarse)) continue;
      // Dead, or in heartbeat mode silent for a heartbeat timeout: evicted. If it runs
      // again, every call it makes returns Status::evicted, and every slot state it
      // creates names a generation the row no longer has.
      if (!row.state.compare_exchange_strong(st, leaving, std::memory_order_acq_rel)) continue;
    } else if (status != MemberStatus::leaving) {
      // Garbage status: treat the row as a dead member's.
      leaving = detail::member_state(MemberStatus::leaving, Role::none, 0,
                                     detail::member_generation(st));
      if (!row.state.compare_exchange_strong(st, leaving, std::memory_order_acq_rel)) continue;
    }
    reclaim(i, leaving, now, next, r);
    changed = true;
  }
  return changed;
}

WatchdogReport Watchdog::Impl::tick() {
  WatchdogReport r;
  detail::Segment& s = *seg;
  if (has_row() && !s.owns(me)) {
    // Our row was taken from us (evicted while this process was stopped): register again
    // as a new member, or sit this tick out.
    auto m = detail::register_member_repairing(seg, Role::watchdog);
    if (!m.ok()) return r;
    me = m.value();
    sightings.clear();
  }
  beat();
  // The library's own heartbeat for this process's producers and consumers (heartbeat
  // liveness): this thread runs while the process does.
  detail::healer_beat(seg.get());
  if (!elect()) {
    std::lock_guard<std::mutex> lock(totals_mutex);
    totals.active = false;
    return r;
  }
  r.active = true;
  const std::uint64_t now = detail::monotonic_ns();
  rows.resize(s.max_members());
  for (std::uint32_t i = 0; i < s.max_members(); ++i)
    rows[i] = s.member(i).state.load(std::memory_order_acquire);
  std::unordered_map<std::uint64_t, Sighting> next;
  const bool changed = reap_members(now, next, r);
  if (still_elected() && scan_slots(now, next, r)) {
    help_tail();
    carry_sightings(next);
    sightings.swap(next);
  }
  if (changed || r.redelivered != 0 || r.leases_expired != 0 || r.holes_repaired != 0 ||
      r.expired != 0) {
    // Whatever we freed or put back, sleepers must look again (requeue_held and
    // release_claim wake them already; this also covers a member that died between its own
    // CAS and its wake).
    detail::wake_all(s.header().consumers_wait);
    detail::signal_level(s);  // a priority consumer sleeps on its base
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

// A repair pass without a member row: reclaims the rows of dead members (a table full of
// them, which no watchdog could attach to). Stands aside if a live watchdog is elected (it
// does the same at its next tick). Not elected itself: if a watchdog is elected while it
// runs, both may act on one dead row, which is safe: every step is a CAS from the exact
// word read, and the orphan check re-reads the row.
WatchdogReport Watchdog::Impl::repair() {
  WatchdogReport r;
  detail::Segment& s = *seg;
  if (elected_watchdog_alive(s.header().watchdog.value.load(std::memory_order_acquire),
                             detail::monotonic_coarse_ns()))
    return r;
  r.active = true;
  rows.clear();
  std::unordered_map<std::uint64_t, Sighting> next;
  if (reap_members(detail::monotonic_ns(), next, r)) {
    detail::wake_all(s.header().consumers_wait);
    detail::signal_level(s);  // a priority consumer sleeps on its base
    detail::wake_all(s.header().producers_wait);
  }
  return r;
}

// The elected watchdog of an empty ring sleeps until something is produced, up to
// kIdleInterval (250 ms, the longest any sleeper sleeps; in heartbeat mode at most a quarter
// of the heartbeat timeout, so that it keeps beating for this process): a timed wake-up
// every 5 ms alone costs about 1% of a core on a VM, and on this one each wake-up of a
// process whose page tables map a big ring costs more (0.7 ms at 512 MiB). It sleeps on the
// consumers' wait line with its
// own row's bit, like a consumer waiting for data, so the first send after it fell asleep
// wakes it (one futex_wake per idle period) and it ticks at its interval again. While the
// ring is empty nothing can be lost to a death: no member holds anything. What the longer
// sleep delays is only what no send announces: a producer that dies between its claim and
// its publish on an empty ring leaves its hole for up to kIdleInterval instead of the
// interval.
void Watchdog::Impl::sleep_while_idle() {
  constexpr auto kIdleInterval = std::chrono::milliseconds(250);
  detail::Segment& s = *seg;
  auto idle = std::max<std::chrono::milliseconds>(options.interval, kIdleInterval);
  if (s.heartbeat_liveness())
    idle = std::min(idle, std::chrono::milliseconds(std::max(1u, s.heartbeat_timeout_ms() / 4)));
  auto& tail = s.header().tail.value;
  // Compared with what the scan saw (not read again now: a send between the scan and our
  // sleep would be missed). wait_on's pairing: our bit is set before these loads, and a
  // producer's claim (slot CAS, tail CAS) comes before its wake's load of the bits: one of
  // us sees the other.
  detail::wait_on(s.header().consumers_wait, me.row, std::chrono::steady_clock::now() + idle, [&] {
    return stop_requested.load(std::memory_order_seq_cst) ||
           tail.load(std::memory_order_seq_cst) != empty_tail ||
           s.slot(empty_tail).word.load(std::memory_order_seq_cst) != empty_word;
  });
}

// A pidfd of the elected watchdog's process (pid liveness only), opened once per occupant
// of its row: -1 if there is none to watch (nobody elected, heartbeat liveness, no
// pidfds), -2 if the elected one's process is already gone (do not sleep).
int Watchdog::Impl::elected_pidfd() {
  detail::Segment& s = *seg;
  const std::uint64_t v = s.header().watchdog.value.load(std::memory_order_acquire);
  if (v == 0 || v - 1 >= s.max_members() || s.heartbeat_liveness()) return -1;
  const detail::MemberRow& row = s.member(static_cast<std::uint32_t>(v - 1));
  const std::uint64_t st = row.state.load(std::memory_order_acquire);
  if (v - 1 == pidfd_row && st == pidfd_row_word) return pidfd;
  if (pidfd >= 0) ::close(pidfd);
  pidfd = -1;
  pidfd_row = v - 1;
  pidfd_row_word = st;
  if (detail::member_status(st) != MemberStatus::active ||
      detail::member_role(st) != Role::watchdog)
    return -1;
  const auto pid = static_cast<pid_t>(detail::member_pid(st));
  // start_time is stored after the row's claim: read it between two reads of the state.
  const std::uint64_t start = row.start_time.load(std::memory_order_acquire);
  if (start == 0 || row.state.load(std::memory_order_acquire) != st) return -1;
  const int fd = detail::open_pidfd(pid);
  if (fd < 0) return -1;
  // Opened first, checked after: if the pid named another process by then, the start
  // time tells; once open, the pidfd names this process whatever happens to the pid.
  if (!detail::process_alive(pid, start)) {
    ::close(fd);
    pidfd_row = UINT64_MAX;
    return -2;
  }
  pidfd = fd;
  return pidfd;
}

// A standby sleeps until the elected watchdog's process exits (its pidfd becomes readable:
// the takeover follows at once) or `wait` has passed (the check that the elected one still
// beats, since a stopped process lives, and the heartbeats this thread writes). The
// embedded watchdogs' standby interval can therefore be long (healer.cpp) without slowing
// the takeover from a watchdog whose process died.
void Watchdog::Impl::sleep_standing_by(std::chrono::milliseconds wait) {
  if (seg->heartbeat_liveness())
    wait = std::min(wait, std::chrono::milliseconds(std::max(1u, seg->heartbeat_timeout_ms() / 4)));
  const int fd = elected_pidfd();
  if (fd == -2) return;
  pollfd fds[2] = {{stop_fd, POLLIN, 0}, {fd, POLLIN, 0}};
  const int n = fd >= 0 ? 2 : 1;
  (void)::poll(fds, n, static_cast<int>(wait.count()));
}

Result<Watchdog> Watchdog::attach(const Queue& queue, const WatchdogOptions& options) {
  return attach_segment(queue.segment(), options);
}

Result<Watchdog> Watchdog::attach_segment(std::shared_ptr<detail::Segment> segment,
                                          const WatchdogOptions& options) {
  if (options.interval.count() <= 0 || options.standby_interval.count() < 0)
    return Error(Errc::invalid_argument, "watchdog interval must be above 0 ms");
  // An elected watchdog beats once a tick: ticks as far apart as the takeover time would
  // have standbys take the role over between them, again and again.
  const std::uint64_t takeover_ms = segment && segment->heartbeat_liveness()
                                        ? segment->heartbeat_timeout_ms()
                                        : kWatchdogTakeoverMs;
  const std::uint64_t most = std::max<std::uint64_t>(1, takeover_ms / 2);
  WatchdogOptions o = options;
  if (std::uint64_t(o.interval.count()) > most && o.interval <= WatchdogOptions{}.interval) {
    // The default (or shorter) on a queue whose heartbeat timeout is a few ms: shortened.
    o.interval = std::chrono::milliseconds(std::max<std::uint64_t>(1, takeover_ms / 4));
  }
  if (std::uint64_t(o.interval.count()) > most)
    return Error(Errc::invalid_argument,
                 "watchdog interval must be at most half the takeover time (" +
                     std::to_string(most) + " ms on this queue)");
  auto m = detail::register_member_repairing(segment, Role::watchdog);
  if (!m.ok()) return m.error();
  return Watchdog(std::make_unique<Impl>(std::move(segment), m.value(), o));
}

namespace detail {

WatchdogReport repair_members(const std::shared_ptr<Segment>& segment) {
  Watchdog::Impl impl(segment, MemberTicket{UINT32_MAX, kNoOwner, 0}, WatchdogOptions{});
  return impl.repair();
}

Result<MemberTicket> register_member_repairing(const std::shared_ptr<Segment>& segment,
                                               Role role) {
  auto m = segment->register_member(role);
  if (m.ok() || m.error().code() != Errc::no_space) return m;
  // Every row taken: if some are dead members' (killed while no watchdog ran), reclaim
  // them and try again.
  if (repair_members(segment).members_reclaimed == 0) return m;
  return segment->register_member(role);
}

}  // namespace detail

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
  // Release anything we hold ourselves (a TTL dead-lettering cut short) before leaving: at
  // most the one message a tick was moving (a CAS from its exact held word).
  detail::Segment& s = *impl_->seg;
  if (impl_->holding_pos != UINT64_MAX)
    detail::requeue_held(s, impl_->holding_pos, impl_->holding_word, 0);
  impl_->resign();
  s.unregister_member(impl_->me);
  impl_.reset();
}

WatchdogReport Watchdog::tick() { return impl_->tick(); }

void Watchdog::start() {
  if (!impl_ || impl_->thread.joinable()) return;
  impl_->stopping = false;
  if (impl_->stop_fd < 0)
    impl_->stop_fd = detail::fd_above_stdio(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  std::uint64_t drained = 0;  // a stop() before this start()
  if (impl_->stop_fd >= 0) (void)!::read(impl_->stop_fd, &drained, sizeof drained);
  impl_->thread = std::thread([impl = impl_.get()] {
    std::unique_lock<std::mutex> lock(impl->mutex);
    while (!impl->stopping) {
      lock.unlock();
      const bool active = impl->tick().active;
      if (active && impl->ring_empty) {
        impl->sleep_while_idle();
        lock.lock();
        // Woken (by a send, most likely) or idle for its whole sleep: the next tick comes an
        // interval later, as when busy, not at once. Ticking at once found a ring that a
        // fast consumer had already emptied again, and went back to sleep on the consumers'
        // line: then every send paid a futex_wake and woke this thread (measured: a 1x1
        // run at half speed whenever the elected watchdog was in one of its processes).
        impl->cv.wait_for(lock, impl->options.interval, [impl] { return impl->stopping; });
        continue;
      }
      if (!active && impl->options.standby_interval.count() != 0 && impl->stop_fd >= 0) {
        impl->sleep_standing_by(impl->options.standby_interval);
        lock.lock();
        continue;
      }
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
  // The thread may be asleep on the consumers' line (sleep_while_idle): wake it (and the
  // consumers there, who look again and sleep again).
  impl_->stop_requested.store(true, std::memory_order_seq_cst);
  detail::wake_all(impl_->seg->header().consumers_wait);
  // ... or in a standby sleep (sleep_standing_by).
  const std::uint64_t one = 1;
  if (impl_->stop_fd >= 0) (void)!::write(impl_->stop_fd, &one, sizeof one);
  impl_->thread.join();
  impl_->stop_requested.store(false, std::memory_order_relaxed);
}

bool Watchdog::running() const noexcept { return impl_ && impl_->thread.joinable(); }

WatchdogReport Watchdog::totals() const {
  if (!impl_) return {};
  std::lock_guard<std::mutex> lock(impl_->totals_mutex);
  return impl_->totals;
}

}  // namespace shmq
