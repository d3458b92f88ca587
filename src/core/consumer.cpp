#include "shmq/consumer.hpp"

#include <algorithm>
#include <cstring>

#include "platform/process.hpp"
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

namespace {

inline void bump(std::atomic<std::uint64_t>& c, std::uint64_t n = 1) noexcept {
  c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}

Clock::time_point deadline_after(std::chrono::nanoseconds timeout) {
  const auto now = Clock::now();
  if (timeout >= Clock::time_point::max() - now) return Clock::time_point::max();
  return now + timeout;
}

}  // namespace

Consumer::Consumer(std::shared_ptr<detail::Segment> segment, std::uint32_t member)
    : seg_(std::move(segment)),
      member_(member),
      interrupted_(std::make_unique<std::atomic<bool>>(false)) {
  // Start one behind the current epoch so that the first receive scans for messages
  // requeued before we came.
  seen_requeue_epoch_ = seg_->header().requeue_epoch.value.load(std::memory_order_acquire) - 1;
}

Consumer::Consumer(Consumer&& o) noexcept
    : seg_(std::move(o.seg_)),
      member_(o.member_),
      seen_requeue_epoch_(o.seen_requeue_epoch_),
      interrupted_(std::move(o.interrupted_)) {}

Consumer& Consumer::operator=(Consumer&& o) noexcept {
  if (this != &o) {
    release_member();
    seg_ = std::move(o.seg_);
    member_ = o.member_;
    seen_requeue_epoch_ = o.seen_requeue_epoch_;
    interrupted_ = std::move(o.interrupted_);
  }
  return *this;
}

Consumer::~Consumer() { release_member(); }

void Consumer::release_member() noexcept {
  if (seg_) {
    release_all();
    seg_->unregister_member(member_);
    seg_.reset();
  }
}

void Consumer::interrupt() noexcept {
  if (!interrupted_) return;
  interrupted_->store(true, std::memory_order_seq_cst);
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
void Consumer::fill(std::uint64_t pos, std::uint64_t held, Message& out) {
  detail::Segment& seg = *seg_;
  detail::SlotHeader& hdr = seg.slot(pos);
  const std::uint32_t k = word_aux(held);
  const std::size_t cap = std::min<std::size_t>(seg.max_message_size(),
                                                std::size_t(k) * seg.payload_size());
  const std::size_t len = std::min<std::size_t>(hdr.length.load(std::memory_order_relaxed), cap);
  const std::uint32_t dc = hdr.delivery_count.load(std::memory_order_relaxed);
  const std::uint32_t next = dc == UINT32_MAX ? dc : dc + 1;
  hdr.delivery_count.store(next, std::memory_order_relaxed);
  out.position_ = pos;
  out.id_ = hdr.id.load(std::memory_order_relaxed);
  out.word_ = held;
  out.delivery_count_ = next;
  out.fragments_ = k;
  out.size_ = len;
  out.held_ = true;
  if (k == 1) {
    out.copy_.clear();
    out.data_ = seg.payload(pos);
  } else {
    out.copy_.resize(len);
    const std::size_t p = seg.payload_size();
    std::size_t off = 0;
    for (std::uint64_t q = pos; off < len; ++q) {
      const std::size_t n = std::min(p, len - off);
      std::memcpy(out.copy_.data() + off, seg.payload(q), n);
      off += n;
    }
    out.data_ = out.copy_.data();
  }
  bump(seg.member(member_).received);
}

// Tries to take the ready message at `pos` whose word we read as `w`.
bool Consumer::claim_at(std::uint64_t pos, std::uint64_t w, Message& out) {
  const std::uint32_t k = word_aux(w);
  if (k < 1 || k > seg_->max_fragments()) return false;  // garbage word: never deliver it
  const std::uint64_t held = make_word(word_lap(w), SlotState::held, member_, k);
  // Acquire: pairs with the producer's release of ready (the header and payload are
  // visible to us). Release half: orders nothing we rely on.
  if (!seg_->slot(pos).word.compare_exchange_strong(w, held, std::memory_order_seq_cst))
    return false;
  fill(pos, held, out);
  return true;
}

// Claims the lowest requeued message behind the dispatch cursor, if any. Requeued
// messages are ready slots that dispatch has passed; the only record of them is their slot
// word, so they are found by walking the window [tail - N, dispatch).
bool Consumer::scan_requeued(Message& out) {
  detail::Segment& seg = *seg_;
  detail::SegmentHeader& h = seg.header();
  const std::uint32_t shift = seg.slot_shift();
  const std::uint64_t d = h.dispatch.value.load(std::memory_order_seq_cst);
  const std::uint64_t t = h.tail.value.load(std::memory_order_seq_cst);
  const std::uint64_t n = seg.slot_count();
  std::uint64_t pos = t > n ? t - n : 0;
  for (; pos < d; ++pos) {
    const std::uint64_t w = seg.slot(pos).word.load(std::memory_order_seq_cst);
    if (word_state(w) == SlotState::ready && word_lap(w) == detail::lap_of(pos, shift) &&
        claim_at(pos, w, out))
      return true;
  }
  return false;
}

// One non-blocking attempt: requeued messages first, then the dispatch cursor.
Status Consumer::poll(Message& out) {
  detail::Segment& seg = *seg_;
  detail::SegmentHeader& h = seg.header();
  const std::uint64_t epoch = h.requeue_epoch.value.load(std::memory_order_seq_cst);
  if (epoch != seen_requeue_epoch_) {
    if (scan_requeued(out)) return Status::ok;
    // Requeues after our load of `epoch` bump it again, so we scan again next time.
    seen_requeue_epoch_ = epoch;
  }
  const std::uint32_t shift = seg.slot_shift();
  for (;;) {
    const std::uint64_t d = h.dispatch.value.load(std::memory_order_seq_cst);
    const std::uint64_t lap = detail::lap_of(d, shift);
    std::atomic<std::uint64_t>& word = seg.slot(d).word;
    const std::uint64_t w = word.load(std::memory_order_seq_cst);
    const std::int64_t diff = detail::lap_diff(word_lap(w), lap);
    if (diff < 0) return Status::empty;  // position d not produced yet
    std::uint64_t expected = d;
    if (diff > 0) {
      // Position d was delivered and released already; move on.
      h.dispatch.value.compare_exchange_strong(expected, d + 1, std::memory_order_seq_cst);
      continue;
    }
    switch (word_state(w)) {
      case SlotState::ready: {
        if (claim_at(d, w, out)) {
          h.dispatch.value.compare_exchange_strong(expected, d + out.fragments_,
                                                   std::memory_order_seq_cst);
          return Status::ok;
        }
        if (word_aux(w) < 1 || word_aux(w) > seg.max_fragments())
          h.dispatch.value.compare_exchange_strong(expected, d + 1, std::memory_order_seq_cst);
        continue;
      }
      case SlotState::held:
      case SlotState::skipped:
      case SlotState::releasing:
      case SlotState::releasing_skipped:
        // Taken by someone else, or a hole: skip the whole message.
        h.dispatch.value.compare_exchange_strong(
            expected, d + std::clamp<std::uint32_t>(word_aux(w), 1, seg.max_fragments()),
            std::memory_order_seq_cst);
        continue;
      case SlotState::claimed:
        return Status::empty;  // a producer is writing position d
      case SlotState::free:
      case SlotState::free_skipped: {
        // Free at d's lap: either nothing was claimed at d yet (empty), or d is a
        // continuation of a message that starts before it. The tail tells which: it only
        // passes d once d is claimed as a head or covered by one. Load the tail first, then
        // the word again: a head claim of d that the tail has passed is visible to us then.
        const std::uint64_t t = h.tail.value.load(std::memory_order_seq_cst);
        if (word.load(std::memory_order_seq_cst) != w) continue;
        if (d >= t) return Status::empty;
        h.dispatch.value.compare_exchange_strong(expected, d + 1, std::memory_order_seq_cst);
        continue;
      }
      default:
        // Unknown state (garbage): step over it rather than wedge.
        h.dispatch.value.compare_exchange_strong(expected, d + 1, std::memory_order_seq_cst);
        continue;
    }
  }
}

Status Consumer::try_receive(Message& out) {
  if (!seg_ || out.held_) return Status::invalid;
  return poll(out);
}

Status Consumer::receive(Message& out) { return receive_for(out, std::chrono::nanoseconds::max()); }

Status Consumer::receive_for(Message& out, std::chrono::nanoseconds timeout) {
  if (!seg_ || out.held_) return Status::invalid;
  const Clock::time_point deadline = deadline_after(timeout);
  detail::SegmentHeader& h = seg_->header();
  int spins = 0;
  for (;;) {
    if (poll(out) == Status::ok) return Status::ok;
    if (interrupted_->load(std::memory_order_relaxed)) return Status::interrupted;
    if (++spins < detail::kSpinBeforeSleep) {
      detail::cpu_relax();
      continue;
    }
    spins = 0;
    if (Clock::now() >= deadline) return Status::timeout;
    seg_->member(member_).heartbeat_ns.store(detail::monotonic_ns(), std::memory_order_relaxed);
    bool got = false;
    detail::wait_on(h.consumers_wait, member_, deadline, [&] {
      if (interrupted_->load(std::memory_order_seq_cst)) return true;
      // A full re-check, requeued messages included: a message requeued by a process that
      // died before bumping the epoch is still found before we sleep.
      seen_requeue_epoch_ = h.requeue_epoch.value.load(std::memory_order_seq_cst) - 1;
      got = poll(out) == Status::ok;
      return got;
    });
    if (got) return Status::ok;
  }
}

std::size_t Consumer::receive_batch(std::span<Message> out, std::chrono::nanoseconds timeout) {
  if (out.empty()) return 0;
  std::size_t n = 0;
  if (receive_for(out[0], timeout) != Status::ok) return 0;
  n = 1;
  while (n < out.size() && !out[n].held_ && poll(out[n]) == Status::ok) ++n;
  return n;
}

Status Consumer::ack(Message& m) {
  if (!seg_ || !m.held_) return Status::invalid;
  detail::Segment& seg = *seg_;
  std::atomic<std::uint64_t>& word = seg.slot(m.position_).word;
  std::uint64_t expected = m.word_;
  const std::uint64_t lap = word_lap(m.word_);
  const std::uint32_t k = m.fragments_;
  m.held_ = false;
  m.data_ = nullptr;
  m.size_ = 0;
  bool ok;
  if (k == 1) {
    // Release: our reads of the payload happen-before the next producer's claim (acquire)
    // and overwrite. One CAS: the ack and the release of the slot are the same step.
    ok = word.compare_exchange_strong(expected, make_word(lap + 1, SlotState::free, 0, 1),
                                      std::memory_order_seq_cst);
  } else {
    const std::uint64_t rel = make_word(lap, SlotState::releasing, member_, k);
    ok = word.compare_exchange_strong(expected, rel, std::memory_order_seq_cst);
    if (ok) detail::finish_release(seg, m.position_, rel);
  }
  if (!ok) return Status::lease_lost;
  bump(seg.member(member_).acked);
  wake_producers();
  return Status::ok;
}

Status Consumer::ack(std::span<Message> ms) {
  Status first = Status::ok;
  for (Message& m : ms) {
    if (!m.held_) continue;
    const Status s = ack(m);
    if (s != Status::ok && first == Status::ok) first = s;
  }
  return first;
}

Status Consumer::nack(Message& m, bool requeue) {
  if (!requeue) return ack(m);
  if (!seg_ || !m.held_) return Status::invalid;
  detail::Segment& seg = *seg_;
  std::uint64_t expected = m.word_;
  m.held_ = false;
  m.data_ = nullptr;
  m.size_ = 0;
  const std::uint64_t ready =
      make_word(word_lap(m.word_), SlotState::ready, detail::kNoOwner, m.fragments_);
  if (!seg.slot(m.position_).word.compare_exchange_strong(expected, ready,
                                                          std::memory_order_seq_cst))
    return Status::lease_lost;
  // After the slot is ready again: a consumer that sees the new epoch finds it.
  seg.header().requeue_epoch.value.fetch_add(1, std::memory_order_seq_cst);
  bump(seg.member(member_).requeued);
  detail::wake_waiters(seg.header().consumers_wait, seg.max_members());
  return Status::ok;
}

// Requeues every slot held by our member row. The ring is the record of what we hold, so
// this is the same walk the watchdog makes for a dead consumer.
std::size_t Consumer::release_all() {
  if (!seg_) return 0;
  detail::Segment& seg = *seg_;
  const std::uint64_t n = seg.slot_count();
  std::size_t released = 0;
  for (std::uint64_t i = 0; i < n; ++i) {
    std::atomic<std::uint64_t>& word = seg.slot(i).word;
    std::uint64_t w = word.load(std::memory_order_seq_cst);
    if (word_state(w) != SlotState::held || word_owner(w) != member_) continue;
    const std::uint64_t ready =
        make_word(word_lap(w), SlotState::ready, detail::kNoOwner, word_aux(w));
    if (word.compare_exchange_strong(w, ready, std::memory_order_seq_cst)) ++released;
  }
  if (released > 0) {
    seg.header().requeue_epoch.value.fetch_add(1, std::memory_order_seq_cst);
    bump(seg.member(member_).requeued, released);
    detail::wake_waiters(seg.header().consumers_wait, seg.max_members());
  }
  return released;
}

}  // namespace shmq
