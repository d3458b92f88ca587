#include "shmq/consumer.hpp"

#include <algorithm>
#include <bit>
#include <cstring>
#include <optional>

#include "core/dead_letter.hpp"
#include "core/healer.hpp"
#include "core/properties_block.hpp"
#include "core/call_util.hpp"
#include "core/checksum.hpp"
#include "core/slot_ops.hpp"
#include "platform/crash_point.hpp"
#include "platform/process.hpp"
#include "platform/idle.hpp"
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
// Messages one poll() may dead-letter (max deliveries, TTL, a failed checksum) before it
// returns busy: each is a send to the dead-letter queue, and a backlog of expired messages
// must not keep one try_receive or receive_for(10 ms) from its caller's deadline.
constexpr int kMaxDivertedPerPoll = 64;
}  // namespace

// The consumers of levels 1 .. max_priority of a queue with priorities (by_level[p - 1]),
// each with a member row in its level's segment. The priority consumer polls them and
// sleeps on its own (the base's) consumers_wait, which every level's producers and
// requeuers wake (detail::signal_level).
struct Consumer::Levels {
  // The DLQ producer every level's dead letters go through (declared first: destroyed
  // after the level consumers that use it).
  std::unique_ptr<detail::DeadLetterSink> dead_letters;
  std::vector<std::unique_ptr<Consumer>> by_level;
  std::uint32_t all = 0;             // bits 1 .. max_priority
  std::uint64_t next_sweep_ns = 0;   // coarse clock: when poll_levels next looks everywhere
  bool evicted = false;              // a level's row was taken from it (seen by a sweep)
};

// How often a busy priority consumer looks at every level, whatever the bitmap says: the
// bound on how late it finds a delayed message that fell due in a level whose bit was
// cleared (nothing sets a bit when time passes), or a requeue by a process whose level
// segment has no base mapped (one that created it before its base, shmqd after a reboot).
constexpr std::uint64_t kLevelSweepNs = 1'000'000;


Consumer::Consumer(std::shared_ptr<detail::Segment> segment, const detail::MemberTicket& member,
                   const ConsumerOptions& options)
    : seg_(std::move(segment)),
      member_(member.row),
      owner_(member.owner),
      row_word_(member.word),
      zero_copy_(options.zero_copy),
      wait_(options.wait),
      interrupted_(std::make_unique<std::atomic<bool>>(false)) {
  // Start one behind the current epoch so that the first receive scans for messages
  // requeued before we came.
  seen_requeue_epoch_ = seg_->header().requeue_epoch.value.load(std::memory_order_acquire) - 1;
}

Consumer::Consumer(Consumer&& o) noexcept
    : seg_(std::move(o.seg_)),
      member_(o.member_),
      owner_(o.owner_),
      row_word_(o.row_word_),
      zero_copy_(o.zero_copy_),
      wait_(o.wait_),
      seen_requeue_epoch_(o.seen_requeue_epoch_),
      next_due_ns_(o.next_due_ns_),
      held_lo_(o.held_lo_),
      held_hi_(o.held_hi_),
      held_count_(o.held_count_),
      interrupted_(std::move(o.interrupted_)),
      dead_letters_(std::move(o.dead_letters_)),
      levels_(std::move(o.levels_)),
      shared_dead_letters_(o.shared_dead_letters_) {}

Consumer& Consumer::operator=(Consumer&& o) noexcept {
  if (this != &o) {
    release_member();
    seg_ = std::move(o.seg_);
    member_ = o.member_;
    owner_ = o.owner_;
    row_word_ = o.row_word_;
    zero_copy_ = o.zero_copy_;
    wait_ = o.wait_;
    seen_requeue_epoch_ = o.seen_requeue_epoch_;
    next_due_ns_ = o.next_due_ns_;
    held_lo_ = o.held_lo_;
    held_hi_ = o.held_hi_;
    held_count_ = o.held_count_;
    interrupted_ = std::move(o.interrupted_);
    dead_letters_ = std::move(o.dead_letters_);
    levels_ = std::move(o.levels_);
    shared_dead_letters_ = o.shared_dead_letters_;
  }
  return *this;
}

Consumer::~Consumer() { release_member(); }

void Consumer::heartbeat() noexcept {
  if (!seg_ || evicted()) return;
  beat();
}

void Consumer::beat() noexcept {
  // One clock read per receive call: the heartbeat, leases and TTL checks share it.
  now_ns_ = detail::monotonic_coarse_ns();
  seg_->member(member_).heartbeat_ns.store(now_ns_, std::memory_order_relaxed);
}

bool Consumer::evicted() const noexcept {
  return !seg_->owns(detail::MemberTicket{member_, owner_, row_word_}) ||
         (levels_ && levels_->evicted);
}

void Consumer::release_member() noexcept {
  // A copy inherited through fork(): the row is the parent's, and so is what it holds.
  if (seg_ && detail::member_pid(row_word_) != static_cast<std::uint32_t>(::getpid())) {
    dead_letters_.release();  // the parent's too: never closed here (leaked with the copy)
    seg_.reset();
    return;
  }
  levels_.reset();  // each level's consumer gives back what it holds and unregisters
  if (seg_) {
    release_all();  // only slots that name our owner id: harmless if we were evicted
    dead_letters_.reset();  // unregisters from the DLQ first
    seg_->unregister_member(detail::MemberTicket{member_, owner_, row_word_});
    detail::healer_release(seg_.get(), detail::MemberTicket{member_, owner_, row_word_});
    seg_.reset();
  }
}

void Consumer::interrupt() noexcept {
  if (!interrupted_) return;
  interrupted_->store(true, std::memory_order_seq_cst);
  // A priority consumer sleeps on its own (the base's) line; its levels never sleep.
  if (seg_) detail::wake_all(seg_->header().consumers_wait);
}

void Consumer::clear_interrupt() noexcept {
  if (interrupted_) interrupted_->store(false, std::memory_order_relaxed);
}

void Consumer::wake_producers() noexcept {
  detail::wake_waiters(seg_->header().producers_wait, seg_->max_members());
}

// Fills `out` for the message at `pos` that we now hold with word `held`. The header was
// written before the producer's release of ready, which our CAS read with acquire; it is
// stable while we hold the slot. It is still checked: a hostile process could have written
// anything, and we must never read outside the ring because of it.
//
// A copy (the default) is checked after it is taken: if this process was stopped between
// its claim and the end of the copy for longer than the lease, the slot may have been taken
// back, acked by another consumer and reused, and the copy may hold another message's bytes.
// Then the delivery is not ours any more: lost, and nothing is delivered. The id (and on a
// checksummed queue the origin and the checksum) is read before the copy, so that the same
// check covers it.
//
// On a checksummed queue, what `out` would deliver (the id, the bytes and their length) is
// then checked against the checksum its producer sealed: corrupt if it does not match (the
// message was changed after it was sent), and nothing is delivered.
Consumer::Fill Consumer::fill(std::uint64_t pos, std::uint64_t held,
                              std::uint32_t delivery_count, Message& out) {
  detail::Segment& seg = *seg_;
  const detail::SlotHeader& hdr = seg.slot(pos);
  const std::uint32_t k = word_aux(held);
  const std::uint64_t id = hdr.id.load(std::memory_order_relaxed);
  const bool checked = seg.checksummed();
  detail::Seal seal = checked ? detail::read_seal(seg, pos) : detail::Seal{};
  // Read once, before the copy like the id: its flag says whether the bytes start with a
  // properties block (layout.hpp kLengthHasProperties).
  const std::uint32_t length = hdr.length.load(std::memory_order_relaxed);
  seal.length_flags = length & detail::kLengthHasProperties;
  if (k == 1 && zero_copy_) {
    out.copy_.clear();
    out.size_ = std::min<std::size_t>(length & detail::kLengthMask,
                                      std::min<std::size_t>(seg.max_message_size(),
                                                            seg.payload_size()));
    out.data_ = seg.payload(pos);
    out.copied_ = false;
  } else {
    if (k == 1) {
      // The hot case, inline: one bounded memcpy into the reused buffer (it only grows; the
      // message's length is size_).
      const std::size_t len = std::min<std::size_t>(
          length & detail::kLengthMask,
          std::min<std::size_t>(seg.max_message_size(), seg.payload_size()));
      if (out.copy_.size() < len) out.copy_.resize(len);
      if (len != 0) std::memcpy(out.copy_.data(), seg.payload(pos), len);
      out.size_ = len;
    } else {
      out.size_ = detail::copy_message(seg, pos, k, out.copy_);
    }
    detail::acquire_fence_after_copy();
    if (hdr.word.load(std::memory_order_relaxed) != held) {
      out.data_ = nullptr;
      out.size_ = 0;
      out.props_size_ = 0;
      return Fill::lost;
    }
    out.data_ = out.copy_.data();
    out.copied_ = true;
  }
  if (checked && !detail::seal_matches(seal, pos, id, out.data())) {
    out.data_ = nullptr;
    out.size_ = 0;
    out.props_size_ = 0;
    return Fill::corrupt;
  }
  out.props_size_ = 0;
  if ((length & detail::kLengthHasProperties) != 0) [[unlikely]] {
    // [block][payload]: data() is the payload. A block that does not parse inside the
    // message (a scribble; a checksummed queue caught it above) is treated as corrupt.
    const std::size_t ps = detail::checked_properties_size(out.data());
    if (ps == 0) {
      out.data_ = nullptr;
      out.size_ = 0;
      return Fill::corrupt;
    }
    out.props_size_ = ps;
    out.data_ += ps;
    out.size_ -= ps;
  }
  out.position_ = pos;
  out.id_ = id;
  out.word_ = held;
  out.delivery_count_ = delivery_count;
  out.fragments_ = k;
  out.priority_ = seg.priority_level();
  out.owner_ = owner_;
  // Steady state (a Message reused in a loop): no reference count traffic.
  if (out.seg_ != seg_) out.seg_ = seg_;
  out.held_ = true;
  ++held_count_;
  held_lo_ = std::min(held_lo_, pos);
  held_hi_ = std::max(held_hi_, pos + 1);
  bump(seg.member(member_).received);
  return Fill::taken;
}

bool Message::held() const noexcept {
  if (!held_ || !seg_) return false;
  const detail::SlotHeader& h = seg_->slot(position_);
  return h.word.load(std::memory_order_acquire) == word_ &&
         h.delivery_count.load(std::memory_order_relaxed) == delivery_count_;
}

bool Message::valid() const noexcept {
  if (copied_) return word_ != 0;  // a copy, checked when it was taken
  if (!held_ || !seg_) return false;
  detail::acquire_fence_after_copy();  // the caller's reads of data() come before this
  const detail::SlotHeader& h = seg_->slot(position_);
  return h.word.load(std::memory_order_relaxed) == word_ &&
         h.delivery_count.load(std::memory_order_relaxed) == delivery_count_;
}

bool Consumer::foreign(const Message& m) const noexcept {
  return m.owner_ != owner_ || m.seg_.get() != seg_.get();
}

// Tries to take the ready (or due delayed) message at `pos` whose word we read as `w`.
// diverted: we took it but it was dead-lettered instead of delivered (over max deliveries,
// or expired); the caller looks for another.
Consumer::Claim Consumer::claim_at(std::uint64_t pos, std::uint64_t w, Message& out) {
  detail::Segment& seg = *seg_;
  const std::uint32_t k = word_aux(w);
  if (k < 1 || k > seg.max_fragments()) return Claim::lost;  // garbage: never deliver it
  const std::uint64_t held = make_word(word_lap(w), SlotState::held, owner_, k);
  detail::SlotHeader& hdr = seg.slot(pos);
  // The holder's fields as they are before our claim: we change them after it with CAS
  // from these values, so that if we are stopped after the claim long enough for the slot
  // to be taken back and given to another consumer, our late writes fail instead of
  // landing on that consumer's delivery (its count and lease).
  const std::uint32_t dc = hdr.delivery_count.load(std::memory_order_relaxed);
  const std::uint64_t dl = hdr.deadline_ns.load(std::memory_order_relaxed);
  // Acquire: pairs with the producer's release of ready (the header and payload are
  // visible to us) or with the requeue's release.
  if (!seg.slot(pos).word.compare_exchange_strong(w, held, std::memory_order_seq_cst))
    return Claim::lost;
  SHMQ_CRASH_POINT("consumer.after_claim");
  const auto give_back = [&] {
    (void)detail::requeue_held(seg, pos, held, 0);  // if it is still ours
    return Claim::lost;
  };
  const std::uint64_t now = now_ns_ != 0 ? now_ns_ : detail::monotonic_coarse_ns();
  // `now` is coarse (up to one tick behind): the lease ends a tick later rather than early.
  if (const std::uint32_t lease_ms = seg.lease_ms(); lease_ms != 0) {
    std::uint64_t expected = dl;
    if (!hdr.deadline_ns.compare_exchange_strong(
            expected, now + std::uint64_t(lease_ms) * 1'000'000 + detail::coarse_resolution_ns(),
            std::memory_order_relaxed))
      return give_back();
  }
  // A crash before the count is written means the message never reached the application:
  // that delivery does not count.
  const std::uint32_t next = dc == UINT32_MAX ? dc : dc + 1;
  // Each policy field read once (they may change at run time: Queue::set_policy).
  const std::uint32_t max_deliveries = seg.max_deliveries();
  const std::uint32_t ttl_ms = seg.ttl_ms();
  const bool too_many = max_deliveries != 0 && next > max_deliveries;
  const std::uint64_t enq = hdr.enqueued_ns.load(std::memory_order_relaxed);
  // Both readings are coarse: allow one tick so that a message never expires early.
  const bool expired = ttl_ms != 0 && enq != 0 && now > enq &&
                       now - enq > std::uint64_t(ttl_ms) * 1'000'000 +
                                       detail::coarse_resolution_ns();
  // A diverted message is not delivered: its count stays the number of times it was, which
  // is what its dead-letter envelope then carries (the same as its last delivery_count()).
  if (!too_many && !expired) {
    std::uint32_t expected = dc;
    if (!hdr.delivery_count.compare_exchange_strong(expected, next, std::memory_order_relaxed))
      return give_back();
  }
  if (too_many || expired) {
    if (!dead_letters_) make_dead_letter_sink();
    (void)dead_letters_->move(pos, held,
                              expired ? DeadLetterReason::expired
                                      : DeadLetterReason::max_deliveries,
                              owner_, /*requeue_on_failure=*/true);
    return Claim::diverted;
  }
  switch (fill(pos, held, next, out)) {
    case Fill::taken: return Claim::taken;
    case Fill::lost: return Claim::lost;
    case Fill::corrupt: break;
  }
  // Changed after it was sent (checksummed queue): never delivered, but dead-lettered with
  // reason corrupt (dropped without dead letters), and counted by the move once it left the
  // queue; one the dead-letter queue could not take comes back after a delay, is found
  // corrupt again and counted then. Its count goes back to the deliveries that happened
  // (by CAS from what we wrote: a slot taken back meanwhile is left alone).
  if (std::uint32_t expected = next;
      !hdr.delivery_count.compare_exchange_strong(expected, dc, std::memory_order_relaxed))
    return Claim::lost;
  if (!dead_letters_) make_dead_letter_sink();
  (void)dead_letters_->move(pos, held, DeadLetterReason::corrupt, owner_,
                            /*requeue_on_failure=*/true);
  return Claim::diverted;
}

// Claims the lowest requeued (or due delayed) message behind the dispatch cursor, if any.
// Such messages are ready or delayed slots that dispatch has passed; the requeue map
// (ring/requeue_map.hpp) marks their slots, so the search costs one word per level of the
// map plus one look per marked slot, not a walk of the window [tail - N, dispatch). Marked
// slots are visited in position order from the bottom of the window. Notes the earliest
// delayed message not yet due in next_due_ns_.
Consumer::Scan Consumer::scan_requeued(Message& out, int& diverted) {
  detail::Segment& seg = *seg_;
  detail::SegmentHeader& h = seg.header();
  const std::uint32_t shift = seg.slot_shift();
  const std::uint64_t d = h.dispatch.value.load(std::memory_order_seq_cst);
  const std::uint64_t t = h.tail.value.load(std::memory_order_seq_cst);
  const std::uint64_t n = seg.slot_count();
  const std::uint64_t mask = n - 1;
  std::uint64_t now = 0;
  next_due_ns_ = UINT64_MAX;
  // The due hint as this scan starts: updated at its end from this value only (a delayed
  // message announced meanwhile changes it, and the update then fails).
  const std::uint64_t due_seen = h.requeue_epoch.next_due.load(std::memory_order_seq_cst);
  // Every message in the ring lies in [t - N, t): slot i holds position base + (i - base
  // mod N) of it. d <= t for honest peers; clamp anyway (a scribbled cursor).
  const std::uint64_t base = t > n ? t - n : 0;
  const std::uint64_t end = std::min(d, t);
  detail::RequeueMap map(seg);
  // Slots [base mod N, N), then [0, base mod N): position order.
  const std::uint64_t start = base & mask;
  for (int pass = 0; pass < 2; ++pass) {
    const std::uint64_t hi = pass == 0 ? n : start;
    for (std::uint64_t i = map.next(pass == 0 ? start : 0); i < hi; i = map.next(i + 1)) {
      const std::uint64_t pos = base + ((i - base) & mask);
      const std::uint64_t w = seg.slot(i).word.load(std::memory_order_seq_cst);
      const SlotState st = word_state(w);
      if (!detail::is_requeued_state(st)) {
        map.unmark(i);  // taken, acked, or a stale bit: clear it (re-marks if requeued since)
        continue;
      }
      // At another lap: the window moved on since we read the tail. Ready at or after
      // dispatch: the dispatch walk gets it; the bit stays until the slot is seen taken.
      // Delayed wherever it is (a relocated one lands at the tail, ahead of dispatch, and
      // the walk only steps over it): its due time is noted here, or it is claimed.
      if (word_lap(w) != detail::lap_of(pos, shift)) continue;
      if (pos >= end && st != SlotState::delayed) continue;
      if (st == SlotState::delayed) {
        if (now == 0) now = detail::monotonic_coarse_ns();
        const std::uint64_t due = seg.slot(i).deadline_ns.load(std::memory_order_relaxed);
        if (due > now) {
          next_due_ns_ = std::min(next_due_ns_, due);
          continue;  // stays marked until due
        }
      }
      const Claim c = claim_at(pos, w, out);
      // Ours now, dead-lettered, or taken by another consumer: clear the bit (a message
      // requeued again meanwhile, or requeued by a failed dead-lettering, is marked again).
      map.unmark(i);
      if (c == Claim::taken) return Scan::got;
      if (c == Claim::diverted && ++diverted >= kMaxDivertedPerPoll) return Scan::busy;
    }
  }
  // Not marked, yet behind dispatch: a ready message that the cursor passed without a
  // requeue. An honest cursor never does; one written ahead of the tail, but within the
  // F positions an honest one may be ahead (see repair_dispatch: so it is not clamped),
  // makes the next messages sent land behind it. They lie in [end - F, end): look there (F
  // is 1 unless messages may span slots). The watchdog marks any other such message.
  const std::uint64_t f = detail::max_span(seg);
  for (std::uint64_t pos = std::max(base, end > f ? end - f : 0); pos < end; ++pos) {
    const std::uint64_t w = seg.slot(pos).word.load(std::memory_order_seq_cst);
    if (word_state(w) == SlotState::ready && word_lap(w) == detail::lap_of(pos, shift) &&
        claim_at(pos, w, out) == Claim::taken)
      return Scan::got;
  }
  // A whole scan: the hint now says when the earliest delayed message it left is due.
  detail::settle_due_hint(seg, due_seen, next_due_ns_);
  return Scan::none;
}

namespace {

// Puts a dispatch cursor that is out of range back into the window of the ring. Returns
// true if `d` was out of range: the cursor has then been moved, by us or by another
// consumer that found the same (our CAS from `d` fails if anyone moved it since).
//
// The cursor is a hint that every consumer advances one position (or one message) at a
// time. A value far from the ring's window, one 8-byte write by a hostile or buggy
// process, made every consumer walk towards it for ever (issue 12), so it is never walked:
// it is clamped. `t` is the tail loaded after `d` (the tail only grows). An honest cursor
// lies in [t - N, t + F]:
//  - below t - N every position's slot was claimed again for a later lap, which producers
//    do only once the message there was released: nothing there is left to deliver (and
//    requeued messages are found by the window scan, not by the cursor);
//  - up to F = max_span (the slots of the largest message the queue accepts) above t: a
//    producer may have claimed a message of up to F slots at t, and a consumer taken it,
//    before the producer moved the tail past it. Further up nothing was ever claimed.
// Either way the cursor goes to t - N, the bottom of the window, not to t: every message
// that can still be in the ring lies in [t - N, t), and a message the cursor never
// reached (it was scribbled past it) is found by the next walk, at most N steps. No
// ordering rides on the clamp: it only moves a hint, every delivery is a CAS on a slot
// word.
bool repair_dispatch(detail::Segment& seg, std::uint64_t d, std::uint64_t t) {
  const std::uint64_t n = seg.slot_count();
  if (d <= t ? t - d <= n : d - t <= detail::max_span(seg)) return false;
  std::uint64_t expected = d;
  seg.header().dispatch.value.compare_exchange_strong(expected, t > n ? t - n : 0,
                                                      std::memory_order_seq_cst);
  return true;
}

}  // namespace

// One non-blocking attempt: requeued messages first, then the dispatch cursor.
//
// Bounded: the walk takes at most N + 64 steps (N = slot count) per call and then returns
// Poll::busy, so that the caller checks its deadline and interrupt flag before walking on.
// An honest walk is shorter: the cursor never lies more than N positions behind the tail
// (or is clamped there), and each step moves it at least one position or is a CAS lost to
// a consumer that did; the 64 allow for positions produced while we walk.
Consumer::Poll Consumer::poll(Message& out) {
  detail::Segment& seg = *seg_;
  int diverted = 0;  // messages dead-lettered by this call (each costs a send to the DLQ)
  detail::SegmentHeader& h = seg.header();
  const std::uint64_t epoch = h.requeue_epoch.value.load(std::memory_order_seq_cst);
  // The due hint shares the epoch's line: one more load, and a clock read only when either
  // hint names a time (an idle queue's says none).
  const std::uint64_t due_hint =
      detail::due_hint_time(h.requeue_epoch.next_due.load(std::memory_order_seq_cst));
  const std::uint64_t earliest = std::min(next_due_ns_, due_hint);
  if (epoch != seen_requeue_epoch_ ||
      (earliest < detail::kDueHintNone && detail::monotonic_coarse_ns() >= earliest)) {
    // Found one: scan again next time, there may be more. Found none: requeues after our
    // load of `epoch` bump it again, so we scan again when that happens.
    const Scan found = scan_requeued(out, diverted);
    if (found == Scan::got) return Poll::got;
    if (found == Scan::busy) return Poll::busy;  // the epoch stays unseen: scanned again
    seen_requeue_epoch_ = epoch;
  }
  const std::uint32_t shift = seg.slot_shift();
  for (std::uint64_t budget = std::uint64_t(seg.slot_count()) + 64; budget != 0; --budget) {
    const std::uint64_t d = h.dispatch.value.load(std::memory_order_seq_cst);
    const std::uint64_t lap = detail::lap_of(d, shift);
    std::atomic<std::uint64_t>& word = seg.slot(d).word;
    const std::uint64_t w = word.load(std::memory_order_seq_cst);
    const std::int64_t diff = detail::lap_diff(word_lap(w), lap);
    if (diff < 0) {
      // Position d not produced yet (its slot still holds an older lap), or d is far out
      // of range: not the hot path, so the tail is loaded to tell.
      if (repair_dispatch(seg, d, h.tail.value.load(std::memory_order_seq_cst))) continue;
      return Poll::empty;
    }
    std::uint64_t expected = d;
    if (diff > 0) {
      // Position d was delivered and released already; move on (after one look at the tail:
      // a cursor left far behind is clamped instead of walked).
      if (repair_dispatch(seg, d, h.tail.value.load(std::memory_order_seq_cst))) continue;
      h.dispatch.value.compare_exchange_strong(expected, d + 1, std::memory_order_seq_cst);
      continue;
    }
    switch (word_state(w)) {
      case SlotState::ready: {
        // The producer wrote the slot's position before its release of ready, which our
        // load of `w` acquired; the load is relaxed, on the word's own cache line. A
        // different position means d itself is wrong: a cursor scribbled onto a value
        // whose lap aliases this slot's (laps compare modulo 2^40). Only then is the tail
        // loaded; a position field scribbled on its own leaves d in range, and we go on.
        if (seg.slot(d).position.load(std::memory_order_relaxed) != d &&
            repair_dispatch(seg, d, h.tail.value.load(std::memory_order_seq_cst)))
          continue;
        const Claim c = claim_at(d, w, out);
        if (c != Claim::lost) {
          // A batch takes the run of ready messages behind this one first, then moves
          // dispatch once past all of it (a hint: each delivery is its own CAS on its slot
          // word, and a consumer killed before this CAS leaves held slots ahead of
          // dispatch, which the watchdog requeues and the next walk finds, as for one).
          const std::uint64_t end =
              c == Claim::taken && !run_.empty() ? take_run(d + word_aux(w)) : d + word_aux(w);
          h.dispatch.value.compare_exchange_strong(expected, end, std::memory_order_seq_cst);
          if (c == Claim::taken) return Poll::got;
          if (c == Claim::diverted && ++diverted >= kMaxDivertedPerPoll) return Poll::busy;
          continue;
        }
        if (word_aux(w) < 1 || word_aux(w) > seg.max_fragments())
          h.dispatch.value.compare_exchange_strong(expected, d + 1, std::memory_order_seq_cst);
        continue;
      }
      case SlotState::delayed:
        // Not due (or it would be ready): passed, and found again through the requeue map
        // once due, which this consumer now looks for (a busy consumer never sleeps, and
        // only a sleep or a requeue made it scan the map again).
        next_due_ns_ = std::min(next_due_ns_,
                                seg.slot(d).deadline_ns.load(std::memory_order_relaxed));
        h.dispatch.value.compare_exchange_strong(
            expected, d + std::clamp<std::uint32_t>(word_aux(w), 1, seg.max_fragments()),
            std::memory_order_seq_cst);
        continue;
      case SlotState::held:
      case SlotState::skipped:
      case SlotState::releasing:
      case SlotState::releasing_skipped:
      case SlotState::relocating:
      case SlotState::relocating_delayed:
        // Taken by someone else, or a hole: skip the whole message. A message being
        // relocated here is marked in the requeue map when its move is finished, and found
        // there (its relocator, or the watchdog for a dead one, finishes it).
        h.dispatch.value.compare_exchange_strong(
            expected, d + std::clamp<std::uint32_t>(word_aux(w), 1, seg.max_fragments()),
            std::memory_order_seq_cst);
        continue;
      case SlotState::claimed:
        return Poll::empty;  // a producer is writing position d
      case SlotState::free:
      case SlotState::free_skipped: {
        // Free at d's lap: either nothing was claimed at d yet (empty), or d is a
        // continuation of a message that starts before it. The tail tells which: it only
        // passes d once d is claimed as a head or covered by one. Load the tail first, then
        // the word again: a head claim of d that the tail has passed is visible to us then.
        const std::uint64_t t = h.tail.value.load(std::memory_order_seq_cst);
        if (word.load(std::memory_order_seq_cst) != w) continue;
        if (repair_dispatch(seg, d, t)) continue;
        if (d >= t) return Poll::empty;
        h.dispatch.value.compare_exchange_strong(expected, d + 1, std::memory_order_seq_cst);
        continue;
      }
      default:
        // Unknown state (garbage): step over it rather than wedge.
        h.dispatch.value.compare_exchange_strong(expected, d + 1, std::memory_order_seq_cst);
        continue;
    }
  }
  return Poll::busy;
}

std::uint64_t Consumer::take_run(std::uint64_t pos) {
  detail::Segment& seg = *seg_;
  const std::uint32_t shift = seg.slot_shift();
  int diverted = 0;
  while (run_taken_ < run_.size() && !run_[run_taken_].held_) {
    const detail::SlotHeader& hdr = seg.slot(pos);
    const std::uint64_t w = hdr.word.load(std::memory_order_seq_cst);
    // Only a ready message of pos's own lap, at its own position (as poll() checks it);
    // anything else (not produced yet, being written, someone else's, a hole, delayed)
    // ends the run, and the next walk deals with it from dispatch.
    if (detail::lap_diff(word_lap(w), detail::lap_of(pos, shift)) != 0 ||
        word_state(w) != SlotState::ready ||
        hdr.position.load(std::memory_order_relaxed) != pos)
      break;
    const Claim c = claim_at(pos, w, run_[run_taken_]);
    if (c == Claim::lost) break;  // not passed: whoever has it, or the requeue map, does
    pos += word_aux(w);           // claim_at checked 1 <= aux <= max_fragments
    if (c == Claim::taken) {
      ++run_taken_;
    } else if (++diverted >= kMaxDivertedPerPoll) {
      break;
    }
  }
  return pos;
}

Status Consumer::try_receive(Message& out) {
  if (!seg_ || out.held_) return Status::invalid;
  if (evicted()) return Status::evicted;
  if (levels_ && levels_->evicted) [[unlikely]]
    return Status::evicted;
  beat();  // the row is ours: checked just above
  // busy: the walk used its budget without finding a message; say empty, the next call
  // walks on from where this one stopped.
  return poll_any(out) == Poll::got ? Status::ok : Status::empty;
}

void Consumer::make_dead_letter_sink() {
  // A priority consumer's own level (0) sends through its levels' shared sink too.
  detail::DeadLetterSink* shared =
      shared_dead_letters_ != nullptr ? shared_dead_letters_
      : levels_                       ? levels_->dead_letters.get()
                                      : nullptr;
  dead_letters_ = shared != nullptr ? std::make_unique<detail::DeadLetterSink>(seg_, shared)
                                    : std::make_unique<detail::DeadLetterSink>(seg_);
}

void Consumer::add_level(std::uint32_t p, Consumer&& level) {
  if (!levels_) levels_ = std::make_unique<Levels>();
  // One DLQ row for the whole priority consumer: its levels send through this sink (the
  // queue's; the DLQ is the queue's, whichever level a dead letter comes from).
  if (!levels_->dead_letters) levels_->dead_letters = std::make_unique<detail::DeadLetterSink>(seg_);
  level.shared_dead_letters_ = levels_->dead_letters.get();
  levels_->by_level.push_back(std::make_unique<Consumer>(std::move(level)));
  levels_->all |= std::uint32_t{1} << p;
}

Consumer& Consumer::route(const Message& m) noexcept {
  if (!levels_ || m.priority_ == 0 || m.priority_ > levels_->by_level.size()) return *this;
  return *levels_->by_level[m.priority_ - 1];
}

std::uint64_t Consumer::earliest_due() const noexcept {
  std::uint64_t due = next_due_ns_;
  if (levels_)
    for (const auto& c : levels_->by_level) due = std::min(due, c->next_due_ns_);
  return due;
}

Consumer::Poll Consumer::poll_levels(Message& out, bool sweep) {
  Levels& levels = *levels_;
  std::atomic<std::uint32_t>& hint = seg_->header().consumers_wait.levels;
  std::uint32_t bits = hint.load(std::memory_order_seq_cst);
  const std::uint64_t now = now_ns_ != 0 ? now_ns_ : detail::monotonic_coarse_ns();
  if (sweep || now >= levels.next_sweep_ns) {
    bits = levels.all;
    levels.next_sweep_ns = now + kLevelSweepNs;
    for (const auto& c : levels.by_level) {
      // Keeps each level's row alive where liveness is judged by heartbeat, while it is
      // ours (a row taken from us is not kept alive for its next occupant): a level whose row
      // was taken makes the whole consumer evicted, as its own row would.
      if (c->evicted()) {
        levels.evicted = true;
        return Poll::empty;
      }
      c->seg_->member(c->member_).heartbeat_ns.store(now, std::memory_order_relaxed);
      if (sweep)
        c->seen_requeue_epoch_ =
            c->seg_->header().requeue_epoch.value.load(std::memory_order_seq_cst) - 1;
    }
  }
  bits &= levels.all;
  while (bits != 0) {
    const std::uint32_t p = 31u - static_cast<std::uint32_t>(std::countl_zero(bits));
    const std::uint32_t bit = std::uint32_t{1} << p;
    bits &= ~bit;
    Consumer& c = *levels.by_level[p - 1];
    c.now_ns_ = now;
    Poll r = c.poll(out);
    if (r == Poll::got) {
      // Taken from a level whose bit was clear (a sweep found it: a message made deliverable
      // by a process with no link to the base, or one that fell due): there may be more
      // behind it, and every consumer's next look must start here again.
      if ((hint.load(std::memory_order_relaxed) & bit) == 0)
        hint.fetch_or(bit, std::memory_order_seq_cst);
      return r;
    }
    if (r == Poll::busy) return r;
    // Empty: clear the level's bit, then look once more. A message made deliverable after
    // our look either set the bit after our clear (its sender's seq_cst load saw it clear),
    // or its sender saw the bit still set, and then it was deliverable before our clear and
    // this second look (seq_cst) finds it.
    if ((hint.load(std::memory_order_relaxed) & bit) == 0) continue;
    hint.fetch_and(~bit, std::memory_order_seq_cst);
    r = c.poll(out);
    if (r == Poll::got || r == Poll::busy) {
      // There may be more behind it: the bit goes back for every consumer.
      hint.fetch_or(bit, std::memory_order_seq_cst);
      return r;
    }
  }
  return poll(out);
}

Status Consumer::receive(Message& out) { return receive_for(out, std::chrono::nanoseconds::max()); }

Status Consumer::receive_for(Message& out, std::chrono::nanoseconds timeout) {
  if (!seg_ || out.held_) return Status::invalid;
  if (evicted()) return Status::evicted;
  const Clock::time_point deadline = deadline_after(timeout);
  detail::SegmentHeader& h = seg_->header();
  beat();  // the row is ours: checked just above
  std::optional<detail::Idle> idle;  // made at the first look that finds nothing
  for (;;) {
    const Poll p = poll_any(out);
    if (p == Poll::got) return Status::ok;
    if (interrupted_->load(std::memory_order_relaxed)) return Status::interrupted;
    if (p == Poll::busy) {
      // The walk is not over: no spinning and no sleep, but the deadline is checked
      // between every bounded step of it.
      if (Clock::now() >= deadline) return Status::timeout;
      continue;
    }
    if (!idle) idle.emplace(wait_);
    if (idle->next() == detail::Idle::Step::again) continue;
    if (Clock::now() >= deadline) return Status::timeout;
    // Slow path only: nothing left to take and the queue was removed: nothing will come.
    if (seg_->removed()) return Status::closed;
    if (evicted()) return Status::evicted;
    if (levels_) {
      for (const auto& c : levels_->by_level)
        if (c->evicted()) levels_->evicted = true;
      if (levels_->evicted) return Status::evicted;
    }
    beat();
    if (idle->strategy() != WaitStrategy::futex) {
      // Spinning, yielding or sleeping between looks: nobody wakes us, so a delayed
      // message and a requeue are found by looking, as in the futex re-check below.
      seen_requeue_epoch_ = h.requeue_epoch.value.load(std::memory_order_seq_cst) - 1;
      if (levels_) {
        if (poll_levels(out, true) == Poll::got) return Status::ok;
      }
      idle->rest(deadline, [] {});
      continue;
    }
    // Sleep until the deadline, but wake for the earliest delayed message, and often
    // enough to keep the heartbeat fresh where liveness is judged by it.
    Clock::time_point wake = deadline;
    if (seg_->heartbeat_liveness())
      wake = std::min(wake, Clock::now() + std::chrono::milliseconds(
                                               std::max(1u, seg_->heartbeat_timeout_ms() / 3)));
    bool got = false;
    detail::wait_on(h.consumers_wait, member_, wake, [&] {
      if (interrupted_->load(std::memory_order_seq_cst) || seg_->removed()) return true;
      // A full re-check, requeued messages included: a message requeued by a process that
      // died before bumping the epoch is still found before we sleep.
      seen_requeue_epoch_ = h.requeue_epoch.value.load(std::memory_order_seq_cst) - 1;
      now_ns_ = detail::monotonic_coarse_ns();
      const Poll p2 = levels_ ? poll_levels(out, true) : poll(out);
      got = p2 == Poll::got;
      if (p2 == Poll::busy) return true;  // more to walk: do not sleep, loop again
      if (const std::uint64_t due_ns = earliest_due(); !got && due_ns != UINT64_MAX) {
        // Do not sleep past the earliest delayed message (both clocks are CLOCK_MONOTONIC).
        // Only a deadline that is near (a shared word: it may be scribbled to anything, and
        // a value past 2^63 converted to a time in the past made idle consumers spin).
        if (due_ns < now_ns_ + std::uint64_t{3600} * 1'000'000'000) {
          const auto due = Clock::time_point(std::chrono::nanoseconds(due_ns + 4'000'000));
          if (due < wake) wake = due;
        }
      }
      return got;
    });
    if (got) return Status::ok;
  }
}

std::size_t Consumer::receive_batch(std::span<Message> out, std::chrono::nanoseconds timeout) {
  if (out.empty()) return 0;
  // Without priorities each look takes a run: the message it finds and the ready ones
  // behind it (take_run), with one dispatch move. With priorities message by message, so
  // that a batch never takes a lower level's run past a higher level's message.
  const auto look_with_run = [this, out](std::size_t from) {
    run_ = levels_ ? std::span<Message>{} : out.subspan(from + 1);
    run_taken_ = 0;
  };
  look_with_run(0);
  const Status s = receive_for(out[0], timeout);
  std::size_t n = s == Status::ok ? 1 + run_taken_ : 0;
  while (n != 0 && n < out.size() && !out[n].held_) {
    look_with_run(n);
    if (poll_any(out[n]) != Poll::got) break;
    n += 1 + run_taken_;
  }
  run_ = {};
  run_taken_ = 0;
  return n;
}

void Consumer::drop(Message& m) noexcept {
  // One of our deliveries ends: release_all has one fewer to look for.
  if (m.held_ && word_owner(m.word_) == owner_ && held_count_ > 0) --held_count_;
  m.held_ = false;
  m.data_ = nullptr;
  m.size_ = 0;
  m.props_size_ = 0;
}

// True if `m` is this consumer's current delivery of its slot. The word alone cannot tell
// two deliveries of one message to the same consumer apart (a stale handle kept across a
// redelivery); the delivery count can: only the holder writes it, and this consumer is
// single-threaded, so no new delivery to us can start between this check and our CAS.
static bool is_current(const detail::Segment& seg, const Message& m, std::uint32_t dc) {
  return seg.slot(m.position()).delivery_count.load(std::memory_order_relaxed) == dc;
}

Status Consumer::ack(Message& m) {
  if (levels_ && m.priority_ != 0) [[unlikely]]
    if (Consumer& c = route(m); &c != this) return c.ack(m);
  if (!seg_) return Status::invalid;
  // A handle that held a delivery and no longer does (acked, nacked, moved from): the
  // header's lease_lost. A handle that never held anything: invalid.
  if (!m.held_) return m.word_ != 0 ? Status::lease_lost : Status::invalid;
  if (foreign(m)) return Status::wrong_consumer;
  if (evicted()) return drop(m), Status::evicted;
  if (!is_current(*seg_, m, m.delivery_count_)) {
    drop(m);
    return Status::lease_lost;
  }
  drop(m);
  if (!detail::release_held(*seg_, m.position_, m.word_, owner_)) return Status::lease_lost;
  bump(seg_->member(member_).acked);
  wake_producers();
  return Status::ok;
}

// The batch form of ack(m): the same checks and the same release per message, but the
// eviction check, the counter and the wake of sleeping producers once for the batch (the
// per-call costs of ack(m), about a third of it). A message of a priority level goes
// through its level's consumer as in ack(m).
Status Consumer::ack(std::span<Message> ms) {
  if (!seg_) return Status::invalid;
  Status first = Status::ok;
  const auto note = [&first](Status s) {
    if (s != Status::ok && first == Status::ok) first = s;
  };
  const bool evicted_now = evicted();
  std::uint64_t acked = 0;
  for (Message& m : ms) {
    if (!m.held_) continue;
    if (levels_ && m.priority_ != 0) [[unlikely]] {
      note(ack(m));
      continue;
    }
    if (foreign(m)) {
      note(Status::wrong_consumer);
      continue;
    }
    if (evicted_now) {
      drop(m);
      note(Status::evicted);
      continue;
    }
    const bool current = is_current(*seg_, m, m.delivery_count_);
    drop(m);
    if (!current || !detail::release_held(*seg_, m.position_, m.word_, owner_)) {
      note(Status::lease_lost);
      continue;
    }
    ++acked;
  }
  if (acked != 0) {
    bump(seg_->member(member_).acked, acked);
    wake_producers();
  }
  return first;
}

Status Consumer::nack(Message& m, bool requeue) {
  if (levels_ && m.priority_ != 0) [[unlikely]]
    if (Consumer& c = route(m); &c != this) return c.nack(m, requeue);
  if (!seg_) return Status::invalid;
  // A handle that held a delivery and no longer does (acked, nacked, moved from): the
  // header's lease_lost. A handle that never held anything: invalid.
  if (!m.held_) return m.word_ != 0 ? Status::lease_lost : Status::invalid;
  if (foreign(m)) return Status::wrong_consumer;
  if (evicted()) return drop(m), Status::evicted;
  if (!requeue) {
    detail::Segment& seg = *seg_;
    const std::uint64_t w = seg.slot(m.position_).word.load(std::memory_order_seq_cst);
    if (w != m.word_ || !is_current(seg, m, m.delivery_count_)) {
      drop(m);
      return Status::lease_lost;
    }
    if (!dead_letters_) make_dead_letter_sink();
    using Outcome = detail::DeadLetterSink::Outcome;
    const Outcome o = dead_letters_->move(m.position_, m.word_, DeadLetterReason::rejected,
                                          owner_, /*requeue_on_failure=*/false);
    // Not moved: the message stays in this queue, still held by us (the caller may retry,
    // nack it back, or ack it); `full` says the dead-letter queue could not take it.
    if (o == Outcome::not_moved) return Status::full;
    drop(m);
    if (o == Outcome::lease_lost) return Status::lease_lost;
    bump(seg.member(member_).acked);
    wake_producers();
    return Status::ok;
  }
  // The queue's backoff: initial * 2^(deliveries - 1), capped.
  std::uint64_t delay_ms = 0;
  if (const std::uint64_t initial = seg_->backoff_initial_ms(); initial != 0) {
    const std::uint32_t shift = std::min<std::uint32_t>(m.delivery_count_ - 1, 32);
    delay_ms = std::min<std::uint64_t>(initial << shift, seg_->backoff_max_ms());
    delay_ms = std::max<std::uint64_t>(delay_ms, 1);
  }
  return nack_after(m, std::chrono::milliseconds(delay_ms));
}

Status Consumer::nack_after(Message& m, std::chrono::milliseconds delay) {
  if (levels_ && m.priority_ != 0) [[unlikely]]
    if (Consumer& c = route(m); &c != this) return c.nack_after(m, delay);
  if (!seg_) return Status::invalid;
  // A handle that held a delivery and no longer does (acked, nacked, moved from): the
  // header's lease_lost. A handle that never held anything: invalid.
  if (!m.held_) return m.word_ != 0 ? Status::lease_lost : Status::invalid;
  if (foreign(m)) return Status::wrong_consumer;
  if (evicted()) return drop(m), Status::evicted;
  if (!is_current(*seg_, m, m.delivery_count_)) {
    drop(m);
    return Status::lease_lost;
  }
  drop(m);
  // Precise clock here: consumers compare a coarse reading (never ahead of it) with it, so
  // the message is never delivered before the delay.
  const std::uint64_t not_before =
      delay.count() > 0 ? detail::monotonic_ns() + std::uint64_t(delay.count()) * 1'000'000 : 0;
  if (!detail::requeue_held(*seg_, m.position_, m.word_, not_before)) return Status::lease_lost;
  bump(seg_->member(member_).requeued);
  return Status::ok;
}

Status Consumer::extend_lease(Message& m, std::chrono::milliseconds extension) {
  if (levels_ && m.priority_ != 0) [[unlikely]]
    if (Consumer& c = route(m); &c != this) return c.extend_lease(m, extension);
  if (!seg_) return Status::invalid;
  // A handle that held a delivery and no longer does (acked, nacked, moved from): the
  // header's lease_lost. A handle that never held anything: invalid.
  if (!m.held_) return m.word_ != 0 ? Status::lease_lost : Status::invalid;
  if (foreign(m)) return Status::wrong_consumer;
  if (evicted()) return drop(m), Status::evicted;
  if (!is_current(*seg_, m, m.delivery_count_)) return Status::lease_lost;
  detail::SlotHeader& hdr = seg_->slot(m.position_);
  // Read the deadline, check the slot is still ours, then CAS: if we were stopped between
  // the check and the write, the slot's next holder has written its own lease since, and
  // our CAS fails instead of overwriting it.
  if (!detail::write_deadline(
          hdr, m.word_,
          detail::monotonic_coarse_ns() +
              std::uint64_t(std::max<std::int64_t>(extension.count(), 0)) * 1'000'000 +
              detail::coarse_resolution_ns()))
    return Status::lease_lost;
  // Still ours after the write? If the watchdog took it back in between, the ack will say
  // lease_lost; say it now.
  if (hdr.word.load(std::memory_order_seq_cst) != m.word_) return Status::lease_lost;
  heartbeat();
  return Status::ok;
}

// Requeues every slot held by our member row. The ring is the record of what we hold; we
// only remember where to look: the positions we were given since the last release_all
// ([held_lo_, held_hi_)), and how many of those deliveries are not yet acked, nacked or
// lost (held_count_). A consumer that acked everything walks nothing; otherwise the walk
// is bounded by that range (and by the ring's window [tail - N, tail)).
std::size_t Consumer::release_all() {
  if (!seg_) return 0;
  std::size_t from_levels = 0;
  if (levels_)
    for (const auto& c : levels_->by_level) from_levels += c->release_all();
  if (from_levels != 0) return from_levels + release_all_own();
  return release_all_own();
}

std::size_t Consumer::release_all_own() {
  if (held_count_ == 0) {
    held_lo_ = UINT64_MAX;
    held_hi_ = 0;
    return 0;
  }
  detail::Segment& seg = *seg_;
  const std::uint32_t shift = seg.slot_shift();
  const std::uint64_t n = seg.slot_count();
  const std::uint64_t t = seg.header().tail.value.load(std::memory_order_seq_cst);
  std::size_t released = 0;
  for (std::uint64_t pos = std::max(held_lo_, t > n ? t - n : 0); pos < std::min(held_hi_, t);
       ++pos) {
    const std::uint64_t w = seg.slot(pos).word.load(std::memory_order_seq_cst);
    if (word_state(w) != SlotState::held || word_owner(w) != owner_ ||
        word_lap(w) != detail::lap_of(pos, shift))
      continue;
    if (detail::requeue_held(seg, pos, w, 0)) ++released;
    SHMQ_CRASH_POINT("consumer.mid_release_all");
  }
  held_count_ = 0;
  held_lo_ = UINT64_MAX;
  held_hi_ = 0;
  if (released > 0) bump(seg.member(member_).requeued, released);
  return released;
}

}  // namespace shmq
