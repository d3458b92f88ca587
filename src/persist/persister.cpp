#include "persist/persister.hpp"

#include <algorithm>

#include "core/slot_ops.hpp"
#include "platform/crash_point.hpp"
#include "ring/ring.hpp"
#include "ring/slot_word.hpp"

namespace shmq::detail {

namespace {
constexpr std::size_t kMaxRecordsPerRound = 8192;
constexpr auto kCheckpointEvery = std::chrono::seconds(1);

bool committed(SlotState s) {
  return s == SlotState::ready || s == SlotState::held || s == SlotState::delayed ||
         s == SlotState::releasing;
}
}  // namespace

Persister::Persister(std::shared_ptr<Segment> segment, log::Wal& wal, std::uint32_t member)
    : seg_(std::move(segment)), wal_(wal), member_(member) {
  next_ = seg_->header().persisted.value.load(std::memory_order_acquire);
  last_checkpoint_ = std::chrono::steady_clock::now();
}

void Persister::adopt(const log::RecoveryReport& report) {
  Segment& s = *seg_;
  const std::uint32_t shift = s.slot_shift();
  for (const auto& m : report.unacked) {
    if (m.position >= next_) continue;  // not yet persisted by the ring's account: relogged
    const std::uint64_t w = s.slot(m.position).word.load(std::memory_order_seq_cst);
    if (word_lap(w) == lap_of(m.position, shift) && committed(word_state(w)))
      outstanding_[m.position] = std::max<std::uint32_t>(1, word_aux(w));
    else
      (void)wal_.append_ack(m.position);  // acked while no persister ran; synced next round
  }
}

Result<std::size_t> Persister::round() {
  Segment& s = *seg_;
  SegmentHeader& h = s.header();
  const std::uint32_t shift = s.slot_shift();
  const std::uint64_t tail = h.tail.value.load(std::memory_order_seq_cst);
  std::size_t records = 0, acks = 0;
  std::uint64_t pos = next_;
  // Bounded by the ring as well as by records: the positions to log lie in [next_, tail),
  // at most N + F of them for an honest tail (producers wait for `persisted`), and every
  // step passes at least one. A scribbled tail and slot words that claim later laps could
  // otherwise keep one round walking (and the daemon from its shutdown) for ever; the next
  // round goes on from where this one stopped.
  std::uint64_t steps = std::uint64_t(s.slot_count()) + s.max_fragments();
  while (pos < tail && records < kMaxRecordsPerRound && steps-- != 0) {
    SlotHeader& hdr = s.slot(pos);
    const std::uint64_t w = hdr.word.load(std::memory_order_seq_cst);
    const std::int64_t d = lap_diff(word_lap(w), lap_of(pos, shift));
    const SlotState st = word_state(w);
    const std::uint32_t k = std::clamp<std::uint32_t>(word_aux(w), 1, s.max_fragments());
    if (d < 0) break;
    if (d > 0) {
      // Released before we logged it: acked (nothing to keep) or a hole. Producers cannot
      // have reused it (they wait for `persisted`), so the free word's aux is its size.
      pos += k;
      continue;
    }
    if (st == SlotState::claimed || is_free(st)) break;  // not committed yet
    if (st == SlotState::skipped || st == SlotState::releasing_skipped) {
      pos += k;
      continue;
    }
    if (!committed(st)) break;  // unknown state: wait for it to settle
    // The payload is stable: nobody may overwrite the slot before `persisted` passes it.
    copy_message(s, pos, k, buf_);
    const std::uint64_t id = hdr.id.load(std::memory_order_relaxed);
    if (auto r = wal_.append_message(pos, id, buf_); !r.ok()) return r.error();
    ++records;
    if (st == SlotState::releasing) {
      if (auto r = wal_.append_ack(pos); !r.ok()) return r.error();
      ++acks;
    } else {
      outstanding_[pos] = k;
    }
    pos += k;
  }
  // Acks: a logged message whose slot moved to a later lap is done.
  for (auto it = outstanding_.begin(); it != outstanding_.end();) {
    const std::uint64_t w = s.slot(it->first).word.load(std::memory_order_seq_cst);
    if (lap_diff(word_lap(w), lap_of(it->first, shift)) > 0 ||
        (word_lap(w) == lap_of(it->first, shift) && word_state(w) == SlotState::releasing)) {
      if (auto r = wal_.append_ack(it->first); !r.ok()) return r.error();
      ++acks;
      it = outstanding_.erase(it);
    } else {
      ++it;
    }
  }
  if (records != 0 || acks != 0) {
    SHMQ_CRASH_POINT("persister.before_sync");
    // Group commit: one fdatasync for everything above. Only after it returned 0 may
    // anything be confirmed; a failure is final (the Wal refuses every later call).
    if (auto r = wal_.sync(); !r.ok()) return r.error();
    ++stats_.syncs;
    stats_.records += records;
    stats_.acks += acks;
  }
  if (pos != next_) {
    next_ = pos;
    // Publishes "everything below pos is on disk"; pairs with producers' and sync senders'
    // seq_cst loads.
    h.persisted.value.store(pos, std::memory_order_seq_cst);
    wake_waiters(h.persist_wait, s.max_members());
    wake_waiters(h.producers_wait, s.max_members());
  }
  if (std::chrono::steady_clock::now() - last_checkpoint_ >= kCheckpointEvery) {
    if (auto r = checkpoint(); !r.ok()) return r.error();
  }
  return records;
}

VoidResult Persister::checkpoint() {
  last_checkpoint_ = std::chrono::steady_clock::now();
  std::uint64_t min_unacked = outstanding_.empty() ? next_ : outstanding_.begin()->first;
  if (checkpoint_hold_ != 0 && next_ < checkpoint_hold_) return {};  // republishing
  if (min_unacked == checkpointed_min_) return {};
  if (auto r = wal_.checkpoint(min_unacked, next_); !r.ok()) return r;
  checkpointed_min_ = min_unacked;
  ++stats_.checkpoints;
  return {};
}

void Persister::wait_for_work(std::chrono::milliseconds timeout) {
  Segment& s = *seg_;
  SegmentHeader& h = s.header();
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  const std::uint64_t next = next_;
  const std::uint32_t shift = s.slot_shift();
  // Work is there when round() would get past `next`: its slot holds anything but "not
  // claimed yet" or "being written" at its lap. Checked after our waiting bit is set, so a
  // commit that happened just before we sleep is seen here, not 5 ms later.
  auto work = [&] {
    const std::uint64_t w = s.slot(next).word.load(std::memory_order_seq_cst);
    const std::int64_t d = lap_diff(word_lap(w), lap_of(next, shift));
    if (d < 0) return false;
    if (d > 0) return true;
    const SlotState st = word_state(w);
    return !(is_free(st) || st == SlotState::claimed);
  };
  if (work()) return;
  // Producers wake consumers' sleepers after every commit; we sleep among them.
  wait_on(h.consumers_wait, member_, deadline, work);
}

}  // namespace shmq::detail
