#include "shmq/producer.hpp"
#include "shmq/queue.hpp"

#include <sched.h>
#include <time.h>
#include <unistd.h>

#include <cstring>
#include <optional>

#include "core/call_util.hpp"
#include "core/checksum.hpp"
#include "core/healer.hpp"
#include "core/properties_block.hpp"
#include "core/slot_ops.hpp"
#include "platform/crash_point.hpp"
#include "platform/idle.hpp"
#include "platform/process.hpp"
#include "ring/requeue_map.hpp"
#include "ring/ring.hpp"
#include "ring/slot_word.hpp"
#include "segment/segment.hpp"

namespace shmq {

using detail::make_word;
using detail::SlotState;
using detail::word_aux;
using detail::word_lap;
using detail::word_owner;
using detail::word_state;
using Clock = std::chrono::steady_clock;
using detail::bump;
using detail::deadline_after;

namespace {

// A try_send whose claims a peer repairs (a stalled claim made a hole) sends again at a new
// position at most this many times, then reports `full`: it never blocks.
constexpr int kTrySendRepairedClaims = 4;

bool is_releasing(std::uint64_t w) {
  return word_state(w) == SlotState::releasing || word_state(w) == SlotState::releasing_skipped;
}

// True if the k - 1 continuation slots after head t are free for their laps.
bool all_free(const detail::Segment& seg, std::uint64_t t, std::uint32_t k) {
  for (std::uint32_t j = 1; j < k; ++j) {
    const std::uint64_t q = t + j;
    const std::uint64_t c = seg.slot(q).word.load(std::memory_order_seq_cst);
    if (!(word_lap(c) == detail::lap_of(q, seg.slot_shift()) && detail::is_free(word_state(c))))
      return false;
  }
  return true;
}

// True if `t`, loaded from the tail, cannot be an honest tail (issue 12), `w` being the
// word of its slot and `d` that word's lap minus t's lap. An honest tail's slot is at t's
// lap (free, or claimed by a producer that has not moved the tail yet), one lap behind
// (the ring is full) or one lap ahead and free (its claimer died between its two CASes);
// a tail that moved on after we loaded it is told apart by the caller. Laps compare modulo
// 2^kLapBits, so a tail scribbled onto a value that aliases a real position's lap passes
// that test: the slot's header, on the cache line of the word we just read, names the last
// position written there, which lies below t and less than a lap span away from an honest
// one (0: never written since the segment was made, which proves nothing).
bool tail_out_of_range(const detail::Segment& seg, std::uint64_t t, std::uint64_t w,
                       std::int64_t d) {
  if (d < -1 || d > 1 || (d == 1 && !detail::is_free(word_state(w)))) return true;
  const std::uint64_t last = seg.slot(t).position.load(std::memory_order_relaxed);
  if (last == 0 || last == t) return false;
  return last > t || ((t - last) >> seg.slot_shift()) > detail::kLapMask;
}

// True if the slot word `c` of position `pos` holds a message the producer at `pos` may
// relocate instead of waiting for it (issue 11): the previous lap's head (position
// pos - N), ready or delayed, that dispatch has passed (a requeue, a delayed retry). A ready
// message dispatch has not reached yet is not moved: the ring is full of undelivered
// messages, and the producer waits (backpressure). On a durable queue the message must be
// in the log at its old position first (the same rule as a claim of the slot): the
// persister then journals the old position's ack only once the new one is on disk
// (persister.cpp, released_at).
bool relocatable(const detail::Segment& seg, std::uint64_t pos, std::uint64_t c) {
  const SlotState st = word_state(c);
  if (st != SlotState::ready && st != SlotState::delayed) return false;
  const std::uint64_t n = seg.slot_count();
  if (pos < n || detail::lap_diff(word_lap(c), detail::lap_of(pos, seg.slot_shift())) != -1)
    return false;
  const std::uint32_t k = word_aux(c);
  if (k < 1 || k > seg.max_fragments()) return false;
  const detail::SegmentHeader& h = seg.header();
  if (seg.durable() && h.persisted.value.load(std::memory_order_seq_cst) < pos - n + k)
    return false;
  return pos - n < h.dispatch.value.load(std::memory_order_seq_cst);
}

}  // namespace

Producer::Producer(std::shared_ptr<detail::Segment> segment, const detail::MemberTicket& member)
    : seg_(std::move(segment)),
      member_(member.row),
      owner_(member.owner),
      row_word_(member.word),
      interrupted_(std::make_unique<std::atomic<bool>>(false)) {
  if (seg_->priority_level() == 0 && seg_->max_priority() != 0)
    levels_ = std::make_unique<std::atomic<Producer*>[]>(seg_->max_priority());
}

Producer::Producer(Producer&& o) noexcept
    : seg_(std::move(o.seg_)),
      member_(o.member_),
      owner_(o.owner_),
      row_word_(o.row_word_),
      interrupted_(std::move(o.interrupted_)),
      reserved_(std::move(o.reserved_)),
      levels_(std::move(o.levels_)),
      last_position_(o.last_position_),
      wait_(o.wait_),
      bypass_dedup_(o.bypass_dedup_),
      session_(o.session_),
      session_producer_(o.session_producer_),
      session_next_(o.session_next_) {}

Producer& Producer::operator=(Producer&& o) noexcept {
  if (this != &o) {
    release_member();
    seg_ = std::move(o.seg_);
    member_ = o.member_;
    owner_ = o.owner_;
    row_word_ = o.row_word_;
    interrupted_ = std::move(o.interrupted_);
    reserved_ = std::move(o.reserved_);
    levels_ = std::move(o.levels_);
    last_position_ = o.last_position_;
    wait_ = o.wait_;
    bypass_dedup_ = o.bypass_dedup_;
    session_ = o.session_;
    session_producer_ = o.session_producer_;
    session_next_ = o.session_next_;
  }
  return *this;
}

Producer::~Producer() { release_member(); }

void Producer::release_member() noexcept {
  if (!seg_) return;
  for (std::uint32_t i = 0; levels_ && i < seg_->max_priority(); ++i)
    delete levels_[i].exchange(nullptr, std::memory_order_acq_rel);  // each checks fork itself
  levels_.reset();
  // A copy inherited through fork(): the row is the parent's, and so are its claims.
  if (detail::member_pid(row_word_) != static_cast<std::uint32_t>(::getpid())) {
    seg_.reset();
    return;
  }
  // Open reservations (claims) go back as holes before the row is freed: a slot must never
  // name a member row that is free or reused. Between calls a producer holds no claim but
  // its reservations (a send claims and publishes, or gives the claim back, within the
  // call), so they are all in reserved_: no walk of the ring. An evicted producer has
  // nothing to give back: the watchdog took its claims.
  detail::Segment& seg = *seg_;
  if (!evicted())
    for (const std::uint64_t pos : reserved_) detail::release_claim(seg, pos, owner_, 1);
  reserved_.clear();
  seg.unregister_member(detail::MemberTicket{member_, owner_, row_word_});
  detail::healer_release(seg_.get(), detail::MemberTicket{member_, owner_, row_word_});
  seg_.reset();
}

bool Producer::evicted() const noexcept {
  return !seg_->owns(detail::MemberTicket{member_, owner_, row_word_});
}

void Producer::heartbeat() noexcept {
  if (seg_ && !evicted())
    seg_->member(member_).heartbeat_ns.store(detail::monotonic_coarse_ns(),
                                             std::memory_order_relaxed);
}

std::size_t Producer::max_message_size() const noexcept { return seg_->max_message_size(); }

void Producer::interrupt() noexcept {
  if (!interrupted_) return;
  interrupted_->store(true, std::memory_order_seq_cst);
  for (std::uint32_t i = 0; levels_ && i < seg_->max_priority(); ++i)
    if (Producer* p = levels_[i].load(std::memory_order_acquire)) p->interrupt();
  if (seg_) {
    detail::wake_all(seg_->header().producers_wait);  // waiting for room
    detail::wake_all(seg_->header().persist_wait);    // waiting for a sync confirmation
  }
}

void Producer::clear_interrupt() noexcept {
  if (interrupted_) interrupted_->store(false, std::memory_order_relaxed);
  for (std::uint32_t i = 0; levels_ && i < seg_->max_priority(); ++i)
    if (Producer* p = levels_[i].load(std::memory_order_acquire)) p->clear_interrupt();
}

void Producer::wake_consumers() noexcept {
  detail::wake_waiters(seg_->header().consumers_wait, seg_->max_members());
  if (seg_->priority_level() != 0) detail::signal_level(*seg_);
}

Status Producer::level(std::uint32_t priority, Producer*& out) {
  if (!seg_) return Status::invalid;
  // A producer of a level is not a priority producer itself: it sends at its own level.
  if (priority > seg_->max_priority() || seg_->priority_level() != 0) return Status::invalid;
  out = this;
  if (priority == 0) return Status::ok;
  // Allocated when the producer was made (interrupt() reads it from any thread).
  if (!levels_) return Status::invalid;
  std::atomic<Producer*>& slot = levels_[priority - 1];
  Producer* p = slot.load(std::memory_order_acquire);
  if (p == nullptr) {
    // Once per level and producer: a member row in the level's segment, which must be this
    // queue's level (its name, level, owner and max_priority), not a segment another user
    // made under the name.
    auto q = Queue::open(detail::Segment::level_name(seg_->name(), priority));
    if (!q.ok()) return Status::closed;
    const detail::Segment& l = *q.value().segment();
    if (l.priority_level() != priority || l.max_priority() != seg_->max_priority() ||
        l.owner_uid() != seg_->owner_uid())
      return Status::closed;
    auto made = q.value().producer();
    if (!made.ok()) return made.error().code() == Errc::no_space ? Status::full : Status::closed;
    p = new Producer(std::move(made.value()));
    p->bypass_dedup_ = bypass_dedup_;
    p->wait_ = wait_;
    slot.store(p, std::memory_order_release);
    // An interrupt() that ran before the store did not see it: pass it on.
    if (interrupted_->load(std::memory_order_seq_cst)) p->interrupt();
  }
  out = p;
  return Status::ok;
}

// Claims positions pos .. pos+k-1 for one message. The claim is a single CAS of the head
// slot word free(lap) -> claimed(lap, us, k); the tail cursor is only a hint that anyone
// advances past a claimed head (so a producer that dies right after its claim leaves a
// claimed slot owned by a dead member, which the watchdog repairs, and a tail that the next
// producer moves on).
Status Producer::claim(std::uint32_t k, std::uint64_t& pos, Clock::time_point deadline) {
  detail::Segment& seg = *seg_;
  detail::SegmentHeader& h = seg.header();
  const std::uint32_t shift = seg.slot_shift();
  const std::uint64_t n = seg.slot_count();
  std::optional<detail::Idle> idle;  // made at the first look that finds the ring full
  // Every `continue` below follows progress (a CAS of ours, or one we lost to a peer that
  // made it): an honest tail reaches a free slot within N + 64 of them. A scribbled tail
  // or slot word may not, so past that many the loop takes the "full" way out below,
  // which checks the deadline and the interrupt flag, and starts counting again.
  std::uint64_t steps = 0;
  bool exhausted = false;  // the last again() ran out: check the clock at once below
  const auto again = [&steps, &exhausted, n] {
    if (++steps <= n + 64) return true;
    steps = 0;
    exhausted = true;
    return false;
  };
  // A tail value the ring was found to agree with (repair_tail left it): not scanned again.
  std::optional<std::uint64_t> ring_agrees;
  // Messages moved out of our way (and padding holes) in this call: at most a lap's worth.
  // Past that the ring holds N messages in flight (all requeued or delayed): it is full,
  // and we wait as for any full ring instead of moving them round again.
  std::uint64_t relocations = 0;
  for (;;) {
    const std::uint64_t t = h.tail.value.load(std::memory_order_seq_cst);
    const std::uint64_t lap = detail::lap_of(t, shift);
    std::atomic<std::uint64_t>& word = seg.slot(t).word;
    std::uint64_t w = word.load(std::memory_order_seq_cst);
    const std::int64_t d = detail::lap_diff(word_lap(w), lap);
    bool full = false;
    // A tail out of range (a scribble) is put back where the ring says it is, never walked
    // (see repair_tail); the scan counts as a ring's worth of steps. If the ring agrees
    // with t (a scribbled slot word, not the tail), the cases below deal with the slot.
    bool repaired = false;
    if (tail_out_of_range(seg, t, w, d) && ring_agrees != t &&
        h.tail.value.load(std::memory_order_seq_cst) == t) {
      steps += n;
      repaired = detail::repair_tail(seg, t);
      if (!repaired) ring_agrees = t;
    }
    if (repaired) {
      if (again()) continue;
      full = true;
    } else if (d == 0 && detail::is_free(word_state(w))) {
      // Every continuation slot must be free for its own lap too.
      bool helped = false;
      bool pad = false;
      for (std::uint32_t j = 1; j < k && !full; ++j) {
        const std::uint64_t q = t + j;
        const std::uint64_t c = seg.slot(q).word.load(std::memory_order_seq_cst);
        if (word_lap(c) == detail::lap_of(q, shift) && detail::is_free(word_state(c))) continue;
        full = true;
        // A head of the previous lap in the middle of its release: finish it for them,
        // then look again.
        if (detail::lap_diff(word_lap(c), detail::lap_of(q, shift)) == -1 && is_releasing(c)) {
          detail::finish_release(seg, q - n, c);
          helped = true;
          break;
        }
        // A requeued or delayed message of the previous lap inside our span: it cannot move
        // into our own message. Pad position t (claim it, give it back as a hole) and
        // relocate that message when the tail reaches it.
        if (relocations < n && relocatable(seg, q, c)) pad = true;
      }
      // After helping, look again; if that did not free them (a scribbled word), wait.
      if (helped) full = !all_free(seg, t, k);
      if (pad && !helped &&
          !(seg.durable() && h.persisted.value.load(std::memory_order_seq_cst) + n < t + 1) &&
          word.compare_exchange_strong(w, make_word(lap, SlotState::claimed, owner_, 1),
                                       std::memory_order_seq_cst)) {
        std::uint64_t expected = t;
        h.tail.value.compare_exchange_strong(expected, t + 1, std::memory_order_seq_cst);
        (void)detail::release_claim(seg, t, owner_, 1);  // claimed(t) -> free_skipped
        ++relocations;
        if (again()) continue;
      }
      // Durable queues: the slots' previous messages must be on disk before we reuse them.
      // Written without a sum that wraps: a `persisted` scribbled near 2^64 made "+ n" wrap
      // and every slot look taken. One out of [t + k - n, t] (scribbled: it may claim the
      // slots are on disk when they are not) counts as full until the persister puts it
      // back (it does every round).
      if (!full && seg.durable()) {
        const std::uint64_t p = h.persisted.value.load(std::memory_order_seq_cst);
        full = p > t || t + k - p > n;
      }
      if (!full) {
        // Acquire: pairs with the release that freed this slot (an ack), so the consumer's
        // reads of the old payload happen-before our writes. seq_cst for wait_on's pairing.
        if (word.compare_exchange_strong(w, make_word(lap, SlotState::claimed, owner_, k),
                                         std::memory_order_seq_cst)) {
          // The writer's side of the copy check (consumers re-read the word after copying):
          // the claim is visible before any byte we write next.
          detail::release_fence_before_write();
          SHMQ_CRASH_POINT("producer.after_claim");
          std::uint64_t expected = t;
          h.tail.value.compare_exchange_strong(expected, t + k, std::memory_order_seq_cst);
          pos = t;
          return Status::ok;
        }
        if (again()) continue;  // lost the race for this position
      }
    } else if (d == 0) {
      // Someone claimed t (it may since have been committed, delivered, skipped or be
      // releasing): help the tail past the whole message.
      std::uint64_t expected = t;
      const std::uint32_t kk = std::max<std::uint32_t>(1, word_aux(w));
      h.tail.value.compare_exchange_strong(expected, t + kk, std::memory_order_seq_cst);
      if (again()) continue;
    } else if (d > 0) {
      if (h.tail.value.load(std::memory_order_seq_cst) != t) {
        if (again()) continue;  // stale tail
      } else if (d == 1 && detail::is_free(word_state(w))) {
        // Position t was claimed and already released, but the tail was never moved past
        // it (its claimer died between its two CASes). free's aux is that message's size.
        std::uint64_t expected = t;
        const std::uint32_t kk = std::max<std::uint32_t>(1, word_aux(w));
        h.tail.value.compare_exchange_strong(expected, t + kk, std::memory_order_seq_cst);
        if (again()) continue;
      }
      // Otherwise no honest process writes this (the slot of the tail is at most one lap
      // ahead, and then free) and the ring agreed with t above: a scribbled word. Wait like
      // on a full ring rather than spin forever.
      full = true;
    } else {
      // The slot still holds the previous lap: the ring is full, or that message is
      // half-released, which we finish and look again.
      if (d == -1 && is_releasing(w)) {
        detail::finish_release(seg, t - n, w);
        if (word.load(std::memory_order_seq_cst) != w && again()) continue;
      } else if (d == -1 && detail::is_relocating(word_state(w))) {
        // A move of the previous lap's message that its producer has not finished (stopped,
        // or dead and not yet seen by a watchdog): finish it for them, then look again.
        (void)detail::finish_relocation(seg, t - n, w);
        if (word.load(std::memory_order_seq_cst) != w && again()) continue;
      } else if (relocations < n && relocatable(seg, t, w)) {
        // A requeued or delayed message of the previous lap that dispatch has passed: move
        // it to position t (a claim of t on its behalf, transition 12), move the tail past
        // it as after any claim, publish it there (13), and go on to the next position.
        if (detail::try_relocate(seg, t, w, owner_)) {
          const std::uint32_t kk = word_aux(w);
          const std::uint64_t moving = make_word(
              lap,
              word_state(w) == SlotState::ready ? SlotState::relocating
                                                : SlotState::relocating_delayed,
              owner_, kk);
          SHMQ_CRASH_POINT("producer.after_relocate");
          std::uint64_t expected = t;
          h.tail.value.compare_exchange_strong(expected, t + kk, std::memory_order_seq_cst);
          (void)detail::finish_relocation(seg, t, moving);
        }
        ++relocations;
        if (again()) continue;
      }
      full = true;
    }

    // Full. Wait for a consumer to free a slot.
    if (deadline == Clock::time_point::min()) return Status::full;
    if (interrupted_->load(std::memory_order_relaxed)) return Status::interrupted;
    if (!idle) idle.emplace(wait_);
    // After N + 64 steps without a slot (a peer keeps moving the tail or the slot words), the
    // deadline is checked before any more spinning.
    if (!exhausted && idle->next() == detail::Idle::Step::again) continue;
    exhausted = false;
    // The clock only once per spin round, and not at all for an unbounded wait.
    if (deadline != Clock::time_point::max() && Clock::now() >= deadline) return Status::timeout;
    // Slow path only: a removed queue never frees a slot for us.
    if (seg.removed()) return Status::closed;
    if (evicted()) return Status::evicted;
    // Anything we committed without waking (batch sends) must be visible to consumers
    // before we sleep on them freeing space.
    wake_consumers();
    // The enqueue time of the message we wait to send is taken after the wait (a batch's
    // later messages would otherwise carry the batch's start time).
    now_ns_ = detail::monotonic_coarse_ns();
    seg.member(member_).heartbeat_ns.store(now_ns_, std::memory_order_relaxed);
    const std::uint64_t persisted_seen = h.persisted.value.load(std::memory_order_seq_cst);
    // The bound on moves is per wait, not per call: a slot freed elsewhere in a ring of
    // delayed messages is reached by moving them round again after the wait.
    relocations = 0;
    if (idle->strategy() != WaitStrategy::futex) {
      // Spinning, yielding or sleeping between looks: nobody wakes us, we look again.
      idle->rest(deadline, [] {});
      continue;
    }
    detail::wait_on(h.producers_wait, member_, deadline, [&] {
      if (interrupted_->load(std::memory_order_seq_cst) || seg.removed()) return true;
      if (h.persisted.value.load(std::memory_order_seq_cst) != persisted_seen) return true;
      // Re-check the slot we wait for (and the continuations) after our bit is visible.
      const std::uint64_t tt = h.tail.value.load(std::memory_order_seq_cst);
      if (tt != t) return true;
      const std::uint64_t ww = word.load(std::memory_order_seq_cst);
      if (ww != w) return true;
      // The head is unchanged. If it is free we are waiting for a continuation slot.
      if (!(detail::lap_diff(word_lap(ww), lap) == 0 && detail::is_free(word_state(ww))))
        return false;
      for (std::uint32_t j = 1; j < k; ++j) {
        const std::uint64_t q = t + j;
        const std::uint64_t c = seg.slot(q).word.load(std::memory_order_seq_cst);
        if (!(word_lap(c) == detail::lap_of(q, shift) && detail::is_free(word_state(c))))
          return false;
      }
      return true;
    });
  }
}

// Commits a claimed message: claimed(lap, us, k) -> ready(lap, k) (transition 2), or
// -> delayed(lap, k) (2d) when `due_ns` != 0. Fails only if the watchdog repaired our claim
// into a hole in the meantime (we were stalled too long).
bool Producer::publish(std::uint64_t pos, std::uint32_t k, std::uint64_t due_ns) {
  detail::Segment& seg = *seg_;
  const std::uint64_t lap = detail::lap_of(pos, seg.slot_shift());
  std::uint64_t expected = make_word(lap, SlotState::claimed, owner_, k);
  // A delayed message's due time, before the CAS that publishes it. Relaxed: nobody reads
  // the deadline of a claimed slot (the watchdog times claims by its own sightings), and
  // the release below publishes it with the state.
  if (due_ns != 0) seg.slot(pos).deadline_ns.store(due_ns, std::memory_order_relaxed);
  const SlotState to = due_ns != 0 ? SlotState::delayed : SlotState::ready;
  // Release: publishes the header fields and payload written since the claim; pairs with
  // the consumer's load of the word that sees ready (or its claim of a due delayed one).
  // seq_cst: pairs with wait_on().
  if (!seg.slot(pos).word.compare_exchange_strong(
          expected, make_word(lap, to, detail::kNoOwner, k), std::memory_order_seq_cst))
    return false;
  if (due_ns != 0) {
    SHMQ_CRASH_POINT("producer.delayed_before_mark");
    // Like a requeue (requeue_held): the dispatch walk steps over a delayed message, so it is
    // found through the requeue map when due. Marked after the CAS (requeue_map.hpp), then
    // the epoch, so a consumer that sees the new epoch finds the mark and notes the due time;
    // sleeping consumers are woken to shorten their sleep to it. A crash
    // between the CAS and the mark: the watchdog marks it once dispatch has passed it.
    detail::RequeueMap(seg).mark(pos & (seg.slot_count() - 1));
    // The due hint, not the epoch: consumers look for it when it is due, instead of every
    // consumer walking every delayed message at each delayed send.
    detail::announce_delayed(seg, due_ns);
    detail::wake_waiters(seg.header().consumers_wait, seg.max_members());
    detail::signal_level(seg);
  }
  return true;
}

void Producer::write_and_publish_prepare(std::uint64_t pos, Bytes message, std::uint64_t id) {
  detail::Segment& seg = *seg_;
  detail::SlotHeader& hdr = seg.slot(pos);
  hdr.position.store(pos, std::memory_order_relaxed);
  hdr.id.store(id, std::memory_order_relaxed);
  hdr.length.store(static_cast<std::uint32_t>(message.size()) | length_flags_,
                   std::memory_order_relaxed);
  hdr.delivery_count.store(0, std::memory_order_relaxed);
  hdr.deadline_ns.store(0, std::memory_order_relaxed);
  hdr.enqueued_ns.store(now_ns_, std::memory_order_relaxed);
  hdr.origin.store(0, std::memory_order_relaxed);
  SHMQ_CRASH_POINT("producer.mid_write");
  const std::size_t p = seg.payload_size();
  std::size_t off = 0;
  for (std::uint64_t q = pos; off < message.size(); ++q) {
    const std::size_t n = std::min(p, message.size() - off);
    std::memcpy(seg.payload(q), message.data() + off, n);
    off += n;
  }
}

Status Producer::wait_persisted(std::uint64_t upto, Clock::time_point deadline,
                                Confirm confirm) {
  detail::SegmentHeader& h = seg_->header();
  int spins = 0;
  for (;;) {
    if (h.persisted.value.load(std::memory_order_seq_cst) >= upto) return Status::ok;
    if (interrupted_->load(std::memory_order_relaxed)) return Status::interrupted;
    if (++spins < detail::kSpinBeforeSleep) {
      detail::cpu_relax();
      continue;
    }
    spins = 0;
    if (Clock::now() >= deadline)
      return confirm == Confirm::timed ? Status::timeout : Status::unconfirmed;
    if (seg_->removed()) return Status::closed;
    // try_send never waits for a persister that is not there. send (untimed) and send_for
    // (timed) do: a persister may attach at any time (shmqd starting or restarting, a
    // standby taking over), and failing a send in that window would make every restart of
    // shmqd an error for the producers.
    if (confirm == Confirm::bounded && !seg_->persister_alive()) return Status::no_persister;
    // Sent, not confirmed, and no longer a member (stopped past the heartbeat timeout): the
    // message may still be persisted and delivered; this handle cannot wait for it.
    if (evicted()) return Status::evicted;
    heartbeat();
    detail::wait_on(h.persist_wait, member_, deadline, [&] {
      return interrupted_->load(std::memory_order_seq_cst) || seg_->removed() ||
             h.persisted.value.load(std::memory_order_seq_cst) >= upto;
    });
  }
}

// Waits while another send of `id` holds its claim (it inserted its way and has not
// published yet; or it died there and the watchdog will free its hole). That window is a
// few hundred nanoseconds for a live sender; a dead or stopped one takes up to the
// watchdog's detection (liveness check, claim timeout). try_send waits at most
// kTrySendConfirmWait, then says timeout.
Status Producer::wait_in_flight(std::uint64_t id, Clock::time_point deadline) {
  const Clock::time_point until =
      deadline == Clock::time_point::min() ? Clock::now() + kTrySendConfirmWait : deadline;
  for (std::uint32_t round = 0;; ++round) {
    if (seg_->dedup().peek(id, nullptr) != detail::Admission::in_flight) return Status::ok;
    if (interrupted_->load(std::memory_order_relaxed)) return Status::interrupted;
    if (seg_->removed()) return Status::closed;
    if (evicted()) return Status::evicted;
    if (round < 64) {
      detail::cpu_relax();
      continue;
    }
    if (until != Clock::time_point::max() && Clock::now() >= until) return Status::timeout;
    if (round < 256) {
      ::sched_yield();
    } else {
      // A stopped or dead sender: poll at 200 us (a futex would need every publish to
      // wake; this wait is rare).
      const timespec ts{0, 200'000};
      ::nanosleep(&ts, nullptr);
    }
  }
}

Status Producer::send_impl(Bytes message, std::uint64_t id, Clock::time_point deadline,
                           bool wake, std::uint64_t origin, std::uint64_t* position,
                           std::uint64_t due_ns) {
  if (!seg_) return Status::invalid;
  if (message.size() > seg_->max_message_size()) return Status::too_large;
  // In a batch (send_batch), the eviction check and the clock read were done once for the
  // whole batch; a wait for room in claim() reads the clock again.
  if (!in_batch_) {
    // One load of our own row's line (we write its heartbeat): our row is still ours.
    if (evicted()) return Status::evicted;
    // One clock read per send: the heartbeat and the enqueue time (TTL) share it.
    now_ns_ = detail::monotonic_coarse_ns();
    seg_->member(member_).heartbeat_ns.store(now_ns_, std::memory_order_relaxed);
  }
  const std::uint32_t k = seg_->fragments_for(message.size());
  // Deduplication (issue 14; docs/design_notes.md, "Deduplication"): an id of the
  // application's (or an idempotent session's) is looked up first, without a claim, so a
  // duplicate costs no hole; admit() below decides, while we hold the claim.
  const bool dedup = seg_->dedup() && id != 0 && (id & kGeneratedIdBit) == 0 && origin == 0 &&
                     !bypass_dedup_;
  // An id of the generated ids' space (top bit set) is never looked up: on a queue with a
  // window that would be a send that silently escapes deduplication. Refused.
  if (seg_->dedup() && (id & kGeneratedIdBit) != 0 && origin == 0 && !bypass_dedup_)
    return Status::invalid;
  if (dedup) {
    for (;;) {
      std::uint64_t original = 0;
      const detail::Admission a = seg_->dedup().peek(id, &original);
      if (a == detail::Admission::duplicate) return duplicate(original);
      if (a == detail::Admission::admitted) break;
      if (const Status s = wait_in_flight(id, deadline); s != Status::ok) return s;
    }
  }
  int repaired = 0;
  for (;;) {
    std::uint64_t pos = 0;
    if (const Status s = claim(k, pos, deadline); s != Status::ok) return s;
    // A generated id is this claim's position: if the claim is repaired and we send again
    // at a new position, the message gets that one (the first was never delivered).
    const std::uint64_t message_id = id != 0 ? id : generated_id(pos, seg_->priority_level());
    write_and_publish_prepare(pos, message, message_id);
    if (origin != 0) {
      detail::SlotHeader& hdr = seg_->slot(pos);
      hdr.delivery_count.store(1, std::memory_order_relaxed);
      hdr.origin.store(origin, std::memory_order_relaxed);
    }
    if (seg_->checksummed())
      detail::seal_message(*seg_, pos, message_id, origin, message, length_flags_);
    if (dedup) {
      SHMQ_CRASH_POINT("producer.before_admit");
      std::uint64_t original = 0;
      const detail::Admission a = seg_->dedup().admit(id, pos, owner_, &original);
      if (a != detail::Admission::admitted) {
        // Nothing of ours is in the window: our claim becomes a hole (we never published).
        detail::release_claim(*seg_, pos, owner_, k);
        if (a == detail::Admission::duplicate) return duplicate(original);
        if (a == detail::Admission::lost) {
          // Our claim was repaired while we wrote (stalled, or evicted): as a failed publish.
          if (evicted()) return Status::evicted;
          continue;
        }
        if (const Status s = wait_in_flight(id, deadline); s != Status::ok) return s;
        continue;
      }
    }
    // With dedup: our way says "sent at pos" from here on; the watchdog voids it if we die
    // before the publish (it frees our hole only after that), and we withdraw it if the
    // publish fails.
    SHMQ_CRASH_POINT("producer.before_publish");
    if (publish(pos, k, due_ns)) {
      SHMQ_CRASH_POINT("producer.after_publish");
      if (position != nullptr) *position = pos + k;
      last_position_ = pos;
      break;
    }
    // Our claim was repaired while we wrote: nothing of it is delivered. Give the slot
    // back and send again at a new position (unless we were evicted: then the watchdog
    // gives it back, and we stop).
    if (dedup) seg_->dedup().withdraw(id, pos, owner_);
    detail::release_claim(*seg_, pos, owner_, k);
    if (evicted()) return Status::evicted;
    // A peer that keeps repairing our claims (a watchdog with a tiny claim timeout on a
    // loaded machine, or a hostile process) must not keep us here past the caller's
    // deadline or interrupt; a try_send gives up after a few rounds.
    if (interrupted_->load(std::memory_order_relaxed)) return Status::interrupted;
    if (deadline == Clock::time_point::min()) {
      if (++repaired > kTrySendRepairedClaims) return Status::full;
    } else if (deadline != Clock::time_point::max() && Clock::now() >= deadline) {
      return Status::timeout;
    }
  }
  bump(seg_->member(member_).sent);
  if (wake) wake_consumers();
  return Status::ok;
}

Status Producer::duplicate(std::uint64_t original) noexcept {
  seg_->dedup().header().duplicates.fetch_add(1, std::memory_order_relaxed);
  last_position_ = original;
  return Status::duplicate;
}

// Sends and, on a sync queue, waits for the confirmation (see the header).
Status Producer::send_confirmed(Bytes message, std::uint64_t id, Clock::time_point space_deadline,
                                Clock::time_point confirm_deadline, Confirm confirm,
                                std::uint64_t due_ns) {
  std::uint64_t end = 0;
  Status s = send_impl(message, id, space_deadline, true, 0, &end, due_ns);
  if (s == Status::duplicate) {
    // A duplicate on a sync queue is confirmed like a send: once the original is on disk
    // (a retry after a crash must not be dropped for an original a reboot would lose).
    // An original recovered from the log (position not known) is on disk already.
    if (seg_->durability() != Durability::sync || last_position_ == kNoPosition) return s;
    end = last_position_ + 1;
  }
  if ((s != Status::ok && s != Status::duplicate) || seg_->durability() != Durability::sync)
    return s;
  // The deadline of the confirmation is read only now: try_send's bounded wait starts when
  // the message is in the ring.
  const Clock::time_point deadline =
      confirm == Confirm::bounded ? Clock::now() + kTrySendConfirmWait : confirm_deadline;
  const Status c = wait_persisted(end, deadline, confirm);
  return c == Status::ok ? s : c;
}

Status Producer::send(Bytes message, std::uint64_t id) {
  return send_entry(message, {.id = id}, Clock::time_point::max(), Clock::time_point::max(),
                    Confirm::untimed);
}

Status Producer::try_send(Bytes message, std::uint64_t id) {
  return send_entry(message, {.id = id}, Clock::time_point::min(), Clock::time_point::max(),
                    Confirm::bounded);
}

Status Producer::send_for(Bytes message, std::chrono::nanoseconds timeout, std::uint64_t id) {
  const auto deadline = deadline_after(timeout);
  return send_entry(message, {.id = id}, deadline, deadline, Confirm::timed);
}

// Every single-message send comes here: the idempotent session's id, the priority level,
// the send, and the session's sequence.
Status Producer::send_entry(Bytes message, const SendOptions& o, Clock::time_point space_deadline,
                            Clock::time_point confirm_deadline, Confirm confirm) {
  Producer* p = this;
  if (o.priority != 0)
    if (const Status s = level(o.priority, p); s != Status::ok) return s;
  const bool session = session_ && o.id == 0;
  const std::uint64_t id = session ? session_message_id(session_producer_, session_next_) : o.id;
  Status s;
  if (o.properties != nullptr) {
    SendOptions with_id = o;
    with_id.id = id;
    s = p->send_with_properties(message, with_id, space_deadline, confirm_deadline, confirm);
  } else {
    s = p->send_confirmed(message, id, space_deadline, confirm_deadline, confirm,
                          o.delay.count() == 0 && o.not_before == decltype(o.not_before){}
                              ? 0
                              : detail::due_time_ns(o));
  }
  if (p != this) last_position_ = p->last_position_;
  // The sequence moves on once the message is known to be in the queue; after any other
  // status the next send is taken as this one's retry (same id).
  if (session && (s == Status::ok || s == Status::duplicate)) ++session_next_;
  return s;
}

// --- Properties (issue 14, design note 22) ------------------------------------------------

Status Producer::build_with_properties(Bytes message, const SendOptions& o, Bytes& out) {
  // One buffer per thread, reused: a send with properties makes one copy of the payload
  // (behind its block) and, in steady state, no allocation.
  thread_local std::vector<std::byte> buf;
  const std::uint64_t ts =
      properties_timestamp_ns_ != 0 ? properties_timestamp_ns_ : detail::realtime_ns();
  if (const Status s = detail::encode_properties(*o.properties, ts, buf); s != Status::ok)
    return s;
  const std::size_t block = buf.size();
  if (message.size() > seg_->max_message_size()) return Status::too_large;
  buf.resize(block + message.size());
  if (!message.empty()) std::memcpy(buf.data() + block, message.data(), message.size());
  out = Bytes(buf);
  return Status::ok;
}

Status Producer::send_with_properties(Bytes message, const SendOptions& o,
                                      Clock::time_point space_deadline,
                                      Clock::time_point confirm_deadline, Confirm confirm) {
  if (!seg_) return Status::invalid;
  Bytes with;
  if (const Status s = build_with_properties(message, o, with); s != Status::ok) return s;
  length_flags_ = detail::kLengthHasProperties;
  const Status s = send_confirmed(with, o.id, space_deadline, confirm_deadline, confirm,
                                  detail::due_time_ns(o));
  length_flags_ = 0;
  return s;
}

std::uint64_t detail::due_time_ns(const SendOptions& o) noexcept {
  std::uint64_t delay_ns = 0;
  if (o.delay.count() > 0)
    delay_ns = std::uint64_t(std::min<std::int64_t>(o.delay.count(), INT64_MAX / 1'000'000)) *
               1'000'000;
  if (o.not_before != std::chrono::system_clock::time_point{}) {
    const auto until = o.not_before - std::chrono::system_clock::now();
    if (until.count() > 0)
      delay_ns = std::max<std::uint64_t>(
          delay_ns, std::uint64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(until).count()));
  }
  // Precise clock: consumers compare a coarse reading (never ahead of it) with it, so the
  // message is never delivered early.
  return delay_ns == 0 ? 0 : detail::monotonic_ns() + delay_ns;
}

Status Producer::send(Bytes message, const SendOptions& o) {
  return send_entry(message, o, Clock::time_point::max(), Clock::time_point::max(),
                    Confirm::untimed);
}

Status Producer::try_send(Bytes message, const SendOptions& o) {
  return send_entry(message, o, Clock::time_point::min(), Clock::time_point::max(),
                    Confirm::bounded);
}

Status Producer::send_for(Bytes message, std::chrono::nanoseconds timeout, const SendOptions& o) {
  const auto deadline = deadline_after(timeout);
  return send_entry(message, o, deadline, deadline, Confirm::timed);
}

std::size_t Producer::send_batch(std::span<const Bytes> messages, std::chrono::nanoseconds timeout,
                                 Status* status, const SendOptions& o) {
  if (o.id != 0 || o.priority != 0) {
    Producer* p = this;
    Status ls = o.id != 0 ? Status::invalid : level(o.priority, p);
    if (ls != Status::ok) {
      if (status != nullptr) *status = ls;
      return 0;
    }
    SendOptions rest = o;
    rest.priority = 0;
    return p->send_batch(messages, timeout, status, rest);
  }
  const std::uint64_t due_ns = detail::due_time_ns(o);
  const auto deadline = deadline_after(timeout);
  std::size_t sent = 0;
  Status s = Status::ok;
  std::uint64_t end = 0;
  if (!seg_ || evicted()) {
    if (status != nullptr) *status = seg_ ? Status::evicted : Status::invalid;
    return 0;
  }
  // Once for the batch: send_impl skips them while in_batch_ is set.
  now_ns_ = detail::monotonic_coarse_ns();
  seg_->member(member_).heartbeat_ns.store(now_ns_, std::memory_order_relaxed);
  in_batch_ = true;
  struct EndBatch {
    bool& flag;
    ~EndBatch() { flag = false; }
  } end_batch{in_batch_};
  for (const Bytes& m : messages) {
    if (o.properties == nullptr) {
      s = send_impl(m, 0, deadline, false, 0, &end, due_ns);
    } else {
      Bytes with = m;
      s = build_with_properties(m, o, with);
      if (s == Status::ok) {
        length_flags_ = detail::kLengthHasProperties;
        s = send_impl(with, 0, deadline, false, 0, &end, due_ns);
        length_flags_ = 0;
      }
    }
    if (s != Status::ok) break;
    ++sent;
  }
  if (sent > 0) wake_consumers();
  // A sync batch is confirmed as a batch: one wait for its last message.
  if (sent > 0 && seg_ && seg_->durability() == Durability::sync) {
    const Status c = wait_persisted(
        end, deadline,
        deadline == Clock::time_point::max() ? Confirm::untimed : Confirm::timed);
    if (c != Status::ok) {
      if (status != nullptr) *status = c;
      return 0;  // sent, but not confirmed
    }
  }
  if (status != nullptr) *status = s;
  return sent;
}

Status Producer::reserve(std::size_t size, Reservation& out, std::chrono::nanoseconds timeout) {
  if (!seg_) return Status::invalid;
  if (out.valid()) return Status::invalid;
  if (size > seg_->payload_size() || size > seg_->max_message_size()) return Status::too_large;
  if (evicted()) return Status::evicted;
  std::uint64_t pos = 0;
  const auto deadline =
      timeout == std::chrono::nanoseconds::zero() ? Clock::time_point::min() : deadline_after(timeout);
  if (const Status s = claim(1, pos, deadline); s != Status::ok) return s;
  remember_reservation(pos);
  out.seg_ = seg_;
  out.owner_ = owner_;
  out.data_ = seg_->payload(pos);
  out.size_ = size;
  out.position_ = pos;
  return Status::ok;
}

// Notes a reservation at `pos`. Before the list grows past a few dozen, entries whose
// claim is gone (the reservation was abandoned, or its claim released) are dropped, so
// the list stays as long as the reservations really open.
void Producer::remember_reservation(std::uint64_t pos) {
  if (reserved_.size() >= 32) {
    detail::Segment& seg = *seg_;
    std::erase_if(reserved_, [&](std::uint64_t p) {
      const std::uint64_t w = seg.slot(p).word.load(std::memory_order_seq_cst);
      const SlotState st = word_state(w);
      return !((st == SlotState::claimed || st == SlotState::skipped) &&
               word_owner(w) == owner_ && word_lap(w) == detail::lap_of(p, seg.slot_shift()));
    });
  }
  reserved_.push_back(pos);
}

Status Producer::try_reserve(std::size_t size, Reservation& out) {
  return reserve(size, out, std::chrono::nanoseconds::zero());
}

Status Producer::reserve(std::size_t size, Reservation& out, std::chrono::nanoseconds timeout,
                         std::uint32_t priority) {
  Producer* p = this;
  if (priority != 0)
    if (const Status s = level(priority, p); s != Status::ok) return s;
  return p->reserve(size, out, timeout);
}

Status Producer::commit(Reservation& r, const SendOptions& o) {
  Producer* p = this;
  if (o.priority != 0)
    if (const Status s = level(o.priority, p); s != Status::ok) return s;
  if (r.seg_ != p->seg_) return Status::invalid;
  // A reservation holds the payload only: no room was reserved for a properties block.
  if (o.properties != nullptr) return Status::invalid;
  return p->commit_impl(r, o.id, detail::due_time_ns(o));
}

Status Producer::commit(Reservation& r, std::uint64_t id) { return commit_impl(r, id, 0); }

Status Producer::commit_impl(Reservation& r, std::uint64_t id, std::uint64_t due_ns) {
  if (!seg_ || r.seg_ != seg_ || r.owner_ != owner_) return Status::invalid;
  detail::SlotHeader& hdr = seg_->slot(r.position_);
  const std::uint64_t message_id =
      id != 0 ? id : generated_id(r.position_, seg_->priority_level());
  hdr.position.store(r.position_, std::memory_order_relaxed);
  hdr.id.store(message_id, std::memory_order_relaxed);
  hdr.origin.store(0, std::memory_order_relaxed);
  hdr.length.store(static_cast<std::uint32_t>(r.size_), std::memory_order_relaxed);
  hdr.delivery_count.store(0, std::memory_order_relaxed);
  hdr.deadline_ns.store(0, std::memory_order_relaxed);
  hdr.enqueued_ns.store(detail::monotonic_coarse_ns(), std::memory_order_relaxed);
  if (seg_->checksummed())
    detail::seal_message(*seg_, r.position_, message_id, 0, Bytes(r.data_, r.size_));
  const bool dedup = seg_->dedup() && id != 0 && (id & kGeneratedIdBit) == 0 && !bypass_dedup_;
  if (seg_->dedup() && (id & kGeneratedIdBit) != 0 && !bypass_dedup_) {
    // As in send_impl: refused (the reservation stays open: commit it with another id).
    return Status::invalid;
  }
  while (dedup) {
    std::uint64_t original = 0;
    const detail::Admission a = seg_->dedup().admit(id, r.position_, owner_, &original);
    if (a == detail::Admission::admitted) break;
    if (a == detail::Admission::lost) {
      detail::release_claim(*seg_, r.position_, owner_, 1);
      std::erase(reserved_, r.position_);
      r.seg_.reset();
      r.data_ = nullptr;
      return evicted() ? Status::evicted : Status::lease_lost;
    }
    if (a == detail::Admission::duplicate) {
      detail::release_claim(*seg_, r.position_, owner_, 1);
      std::erase(reserved_, r.position_);
      r.seg_.reset();
      r.data_ = nullptr;
      return duplicate(original);
    }
    // In flight: wait holding our claim (its data is written in place).
    if (const Status s = wait_in_flight(id, Clock::time_point::max()); s != Status::ok) {
      detail::release_claim(*seg_, r.position_, owner_, 1);
      std::erase(reserved_, r.position_);
      r.seg_.reset();
      r.data_ = nullptr;
      return s;
    }
  }
  const bool ok = publish(r.position_, 1, due_ns);
  if (!ok && dedup) seg_->dedup().withdraw(id, r.position_, owner_);
  if (!ok) detail::release_claim(*seg_, r.position_, owner_, 1);
  if (ok) last_position_ = r.position_;
  std::erase(reserved_, r.position_);
  r.seg_.reset();
  r.data_ = nullptr;
  if (!ok) return evicted() ? Status::evicted : Status::lease_lost;
  bump(seg_->member(member_).sent);
  wake_consumers();
  if (seg_->durability() == Durability::sync)
    return wait_persisted(r.position_ + 1, Clock::time_point::max(), Confirm::untimed);
  return Status::ok;
}

// --- Reservation ---------------------------------------------------------------------

Reservation::Reservation(Reservation&& o) noexcept
    : seg_(std::move(o.seg_)),
      owner_(o.owner_),
      data_(o.data_),
      size_(o.size_),
      position_(o.position_) {
  o.data_ = nullptr;
}

Reservation& Reservation::operator=(Reservation&& o) noexcept {
  if (this != &o) {
    abandon();
    seg_ = std::move(o.seg_);
    owner_ = o.owner_;
    data_ = o.data_;
    size_ = o.size_;
    position_ = o.position_;
    o.data_ = nullptr;
  }
  return *this;
}

Reservation::~Reservation() { abandon(); }

void Reservation::abandon() noexcept {
  if (seg_) detail::release_claim(*seg_, position_, owner_, 1);
  seg_.reset();
  data_ = nullptr;
}

}  // namespace shmq
