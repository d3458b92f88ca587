#include "persist/persister.hpp"

#include <algorithm>
#include <optional>
#include <thread>

#include "core/checksum.hpp"
#include "core/slot_ops.hpp"
#include "platform/crash_point.hpp"
#include "platform/process.hpp"
#include "ring/ring.hpp"
#include "ring/slot_word.hpp"

namespace shmq::detail {

namespace {
constexpr std::size_t kMaxRecordsPerRound = 8192;
constexpr auto kCheckpointEvery = std::chrono::seconds(1);

// True if the logged message at `pos`, whose slot word is now `w`, is done with: its slot
// is at a later lap, and the message is not still in the ring at a later position. A
// producer may have relocated it (issue 11: a requeued or delayed message moved to the
// position that laps it, same slot, see slot_state_machine.md); then its ack here may be
// journalled only once the new position is logged, or a crash in between loses it. So:
// a later lap free (the position of the lap before it was released: the message, or the
// last position it was moved to, was acked; relocating never leaves a hole), or a later
// position below `logged` (everything below it was logged, or found released). Otherwise
// the slot's current occupant, the message itself or a newer one, is not logged yet: wait
// (the ack of an old message whose slot was reused is journalled a round later, no harm).
bool released_at(const Segment& s, std::uint64_t pos, std::uint64_t w, std::uint64_t logged) {
  const std::int64_t d = lap_diff(word_lap(w), lap_of(pos, s.slot_shift()));
  if (d <= 0) return false;
  if (is_free(word_state(w))) return true;
  return pos + (std::uint64_t(d) << s.slot_shift()) < logged;
}

bool committed(SlotState s) {
  return s == SlotState::ready || s == SlotState::held || s == SlotState::delayed ||
         s == SlotState::releasing;
}

// The due time, as unix time (ns), of the message whose slot word we loaded as `w` if it
// was sent delayed and is not due yet: logged with it (a delayed record), so that after a
// reboot it is not delivered before then. Only a message never delivered in this ring
// (delivery count 0, or 1 for a copy republished after a rebuild, which starts at 1): a
// delay from a nack (a retry's backoff) is not a property of the message, and a recovered
// message is delivered again at once after a reboot, as it always was.
// The monotonic deadline is the due time only while the word stays delayed (a holder
// writes its lease there), so the word is read again after it: a word that changed (taken
// when due) is logged as a plain message. One that went delayed -> held -> delayed in
// between (the same word) has a delivery count above `never` once its holder wrote it
// (read before the word again); a race with that write can at worst log a nack's delay.
std::optional<std::uint64_t> due_unix_ns(const SlotHeader& hdr, std::uint64_t w,
                                         std::uint64_t origin) {
  if (word_state(w) != SlotState::delayed) return std::nullopt;
  // Relaxed: written before the release that made the word delayed, which our seq_cst load
  // of the word saw; the seq_cst re-read below is after them.
  const std::uint64_t due = hdr.deadline_ns.load(std::memory_order_relaxed);
  const std::uint32_t count = hdr.delivery_count.load(std::memory_order_relaxed);
  if (hdr.word.load(std::memory_order_seq_cst) != w) return std::nullopt;
  if (count != (origin != 0 ? 1u : 0u)) return std::nullopt;
  const std::uint64_t unix_due = monotonic_to_unix_ns(due);
  if (unix_due == 0) return std::nullopt;  // due already: delivered at once after a reboot
  return unix_due;
}
}  // namespace

std::set<std::uint64_t> copies_in_ring(Segment& s) {
  std::set<std::uint64_t> out;
  const SegmentHeader& h = s.header();
  const std::uint32_t shift = s.slot_shift();
  std::uint64_t pos = h.persisted.value.load(std::memory_order_seq_cst);
  const std::uint64_t tail = h.tail.value.load(std::memory_order_seq_cst);
  for (std::uint64_t steps = 0; pos < tail && steps < s.slot_count(); ++steps) {
    SlotHeader& hdr = s.slot(pos);
    const std::uint64_t w = hdr.word.load(std::memory_order_seq_cst);
    const std::int64_t d = lap_diff(word_lap(w), lap_of(pos, shift));
    const SlotState st = word_state(w);
    const std::uint32_t k = std::clamp<std::uint32_t>(word_aux(w), 1, s.max_fragments());
    if (d < 0 || (d == 0 && is_free(st))) break;  // not claimed yet: the end
    if ((d == 0 && committed(st)) || (d == 1 && st == SlotState::free))
      if (const std::uint64_t origin = hdr.origin.load(std::memory_order_relaxed); origin != 0)
        out.insert(origin - 1);
    pos += k;
  }
  return out;
}

Persister::Persister(std::shared_ptr<Segment> segment, log::Wal& wal, std::uint32_t member)
    : seg_(std::move(segment)), wal_(wal), member_(member) {
  const SegmentHeader& h = seg_->header();
  // Never above the tail: no honest `persisted` is, and one scribbled above it would keep
  // the walk from ever starting (and, published as ours, let producers reuse unlogged slots).
  next_ = std::min(h.persisted.value.load(std::memory_order_acquire),
                   h.tail.value.load(std::memory_order_acquire));
  sync_queue_ = seg_->durability() == Durability::sync;
  rewalk_end_ = next_;
  // An async persister that died (or failed: an fdatasync that returned EIO) after writing
  // positions it had not synced: their records are in the page cache at best. A failed
  // writeback marks the pages clean, and our own fdatasync would then "succeed" over the
  // loss. So we trust the disk only up to `synced` and log [synced, persisted) again from
  // the ring: every message there that is still unacked is still in its slot (a slot is
  // reused only once acked); the rest is released, and its ack is journalled from adopt().
  // A `synced` that is not below `persisted` and at or above the segment's base is not one
  // a persister wrote (older segments read 0 there): then nothing is walked again.
  if (const std::uint64_t synced = h.persisted.synced.load(std::memory_order_acquire);
      !sync_queue_ && synced < next_ && synced >= h.base_position) {
    next_ = synced;
    // Every position below tail - N has had its slot claimed again (the tail passed the
    // position a lap on), so its message was released: none needs logging again, and the
    // walk need not pass them one at a time (as many as the gap, which a `synced` scribbled
    // low would make any length). Only with an honest-looking tail (producers claim at most
    // a lap past `persisted`); a message starting below tail - N cannot cover position
    // tail - N while live, so the walk starts on a boundary or on a released position.
    const std::uint64_t n = seg_->slot_count();
    const std::uint64_t tail = h.tail.value.load(std::memory_order_acquire);
    if (tail >= rewalk_end_ && tail - rewalk_end_ <= n && tail > n)
      next_ = std::max(next_, tail - n);
  }
  // Everything below next_ is on disk: the log below `synced` was synced by the persister
  // that wrote it, and Wal::open syncs the segment it reopens.
  synced_ = next_;
  flush_interval_ = std::chrono::milliseconds(seg_->flush_interval_ms());
  last_checkpoint_ = std::chrono::steady_clock::now();
  last_sync_ = last_checkpoint_;
}

VoidResult Persister::adopt(const log::RecoveryReport& report) {
  const std::uint64_t base = seg_->header().base_position;
  // Every unacked message the log holds below the ring's `persisted` is tracked: still in
  // the ring (at its position, or relocated), or released while no persister ran. The first
  // round journals the acks of the released ones through the same checks as any other
  // (released_at, and the dead-letter gate: a message dead-lettered while shmqd was down
  // leaves this log only once its copy is on the DLQ's disk), and syncs them with the
  // round. Those at or above `persisted` are logged again by the rounds.
  for (const auto& m : report.unacked) {
    if (m.position < base) continue;          // an earlier epoch's: see expect_copies()
    if (m.position >= rewalk_end_) continue;  // not yet persisted by the ring's account
    track(m.position);
  }
  return {};
}

void Persister::expect_copies(const std::vector<std::uint64_t>& origins) {
  pending_origins_.insert(origins.begin(), origins.end());
}

// Acks and releases are journalled only once every dead letter that may have been made of
// them is on disk in the dead-letter queue: a dead-lettering consumer sends the copy to the
// DLQ (claiming a DLQ position below the DLQ's tail) *before* it releases the original, so
// once we have seen a release, any copy made of it is below the DLQ tail we read after that;
// when the DLQ's synced cursor has reached that tail, the copy is on disk. Otherwise a
// crash between our ack record and the DLQ's fdatasync would lose the message from both.
// `synced`, not `persisted`: an async DLQ's persisted positions may still be in the page
// cache only, and our own ack record may reach the disk before them (a host crash then
// loses the message from both). The same holds for a message released before we logged
// it, which we pass without a record: it leaves our log's care only once the copy is on
// disk. The cost: an async queue that dead-letters waits up to the DLQ's flush interval.
Segment* Persister::dead_letter_queue() {
  if (!seg_->dead_letter()) return nullptr;
  if (dlq_ && dlq_->header().state.load(std::memory_order_acquire) !=
                  static_cast<std::uint32_t>(SegmentState::active))
    dlq_.reset();  // deleted; a new one may have been created
  if (!dlq_) {
    // The DLQ is created with its queue; if it is not there, nothing can have been moved
    // into it (dead-lettering only opens it), so there is nothing to wait for.
    auto d = Segment::open(seg_->base_name() + ".dlq");  // a level's: its queue's DLQ
    if (!d.ok() || !d.value()->durable()) return nullptr;
    dlq_ = std::move(d.value());
  }
  return dlq_.get();
}

bool Persister::dead_letters_durable(DlqGate& gate, bool on_disk) {
  Segment* dlq = dead_letter_queue();
  if (dlq == nullptr) {
    gate.armed = false;
    return true;
  }
  const SegmentHeader& h = dlq->header();
  // Both seq_cst: the tail is read after the releases we observed (program order, and the
  // release CAS we loaded seq_cst precedes it in the single total order). Read once per
  // wait: the releases waiting on it were all observed before it, and later dead letters
  // do not move it (they used to: a steady stream of them kept an async DLQ's `synced`
  // below its tail, and this queue waiting, for as long as the stream lasted).
  if (!gate.armed) {
    gate.target = h.tail.value.load(std::memory_order_seq_cst);
    gate.armed = true;
  }
  const std::uint64_t cursor = on_disk ? h.persisted.synced.load(std::memory_order_seq_cst)
                                       : h.persisted.value.load(std::memory_order_seq_cst);
  if (cursor < gate.target) return false;
  gate.armed = false;
  return true;
}

// fdatasync of everything written so far, which then covers every position below `upto`
// (the positions the log holds, or found released, up to the round's end).
VoidResult Persister::sync_log(std::uint64_t upto) {
  SHMQ_CRASH_POINT("persister.before_sync");
  // Group commit: one fdatasync for everything written. Only after it returned 0 may
  // anything be confirmed; a failure is final (the Wal refuses every later call).
  const auto t0 = std::chrono::steady_clock::now();
  if (auto r = wal_.sync(); !r.ok()) return r;
  SHMQ_CRASH_POINT("persister.after_sync");
  // Moving average (1/4 weight to the newest) of the fdatasync time: bounds group waits.
  const auto t1 = std::chrono::steady_clock::now();
  const std::chrono::nanoseconds took = t1 - t0;
  sync_time_ += (took - sync_time_) / 4;
  stats_.sync_ns += static_cast<std::uint64_t>(took.count());
  ++stats_.syncs;
  last_sync_ = t1;
  synced_ = std::max(synced_, upto);
  return {};
}

bool Persister::sync_due(std::chrono::steady_clock::time_point now) const noexcept {
  return sync_queue_ || now - last_sync_ >= flush_interval_;
}

Result<std::size_t> Persister::round() {
  Segment& s = *seg_;
  SegmentHeader& h = s.header();
  const std::uint32_t shift = s.slot_shift();
  std::size_t records = 0, acks = 0;
  std::size_t found = 0;  // messages logged, or released before we logged them
  std::uint64_t pos = next_;
  dlq_behind_ = false;
  std::chrono::steady_clock::time_point gather_deadline{};
  // Bounded by the ring as well as by records: the positions to log lie in [next_, tail),
  // at most N + F of them for an honest tail (producers wait for `persisted`), and every
  // step passes at least one. A scribbled tail and slot words that claim later laps could
  // otherwise keep one round walking (and the daemon from its shutdown) for ever; the next
  // round goes on from where this one stopped.
  std::uint64_t steps = std::uint64_t(s.slot_count()) + s.max_fragments();
  for (;;) {
    const std::uint64_t tail = h.tail.value.load(std::memory_order_seq_cst);
    // "steps != 0" then "--steps", not "steps-- != 0": that left steps at 2^64 - 1 when the
    // budget ran out, and gather_more's next pass walked without a bound.
    while (pos < tail && records < kMaxRecordsPerRound && steps != 0) {
      --steps;
      SlotHeader& hdr = s.slot(pos);
      const std::uint64_t w = hdr.word.load(std::memory_order_seq_cst);
      const std::int64_t d = lap_diff(word_lap(w), lap_of(pos, shift));
      const SlotState st = word_state(w);
      const std::uint32_t k = std::clamp<std::uint32_t>(word_aux(w), 1, s.max_fragments());
      if (d < 0) break;
      if (d > 0) {
        // Released before we logged it: acked or dead-lettered (free), or a hole
        // (free_skipped). Producers cannot have reused it (they wait for `persisted`), so the
        // free word's aux is its size and the header is still the message's. Except below
        // rewalk_end_ (see the constructor), where slots may have been reused since: there
        // only a free word one lap on still describes this position's message, and any
        // other is passed a position at a time (each of the positions it covered was
        // released too: a continuation slot is released with its head).
        const bool reused = pos < rewalk_end_ && !(d == 1 && st == SlotState::free);
        if (st == SlotState::free || reused) {
          // Its dead-letter copy, if it became one, must be in the DLQ's log first, and on
          // its disk for a sync queue's confirmation. The gate is held for this position.
          if (walk_gate_pos_ != pos) walk_gate_.armed = false;
          if (!dead_letters_durable(walk_gate_, sync_queue_)) {
            walk_gate_pos_ = pos;
            dlq_behind_ = true;
            break;
          }
          ++found;  // its sync sender is confirmed by this round too
          // A copy republished after a rebuild, acked before we logged it: its origin is done.
          if (!reused) {
            if (const std::uint64_t origin = hdr.origin.load(std::memory_order_relaxed);
                origin != 0 && pending_origins_.erase(origin - 1) != 0) {
              if (auto r = wal_.append_ack(origin - 1); !r.ok()) return r.error();
              ++acks;
            }
          }
        }
        pos += reused ? 1 : k;
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
      // Relaxed: written by the producer before its publish (release), which our seq_cst load
      // of the word saw.
      const std::uint64_t origin = hdr.origin.load(std::memory_order_relaxed);
      // The bytes start with a properties block: the record says so (kTypeHasProperties).
      const bool properties =
          (hdr.length.load(std::memory_order_relaxed) & kLengthHasProperties) != 0;
      if (s.checksummed() && !message_intact(s, pos, id, buf_)) {
        // Scribbled after it was sent: no consumer will deliver it (it is dead-lettered or
        // dropped as corrupt), and a record of it would come back from a rebuild as a valid
        // message with a fresh checksum. Not logged, and not tracked for its ack; its sync
        // sender is confirmed with the round (nothing more will be done for it). If it
        // claims to be a republished copy, its origin stays live in the log: the intact
        // earlier record is kept, never lost.
        ++stats_.corrupt;
        ++found;
        pos += k;
        continue;
      }
      // A delayed message is logged with its due time (a delayed record).
      const std::optional<std::uint64_t> due = due_unix_ns(hdr, w, origin);
      if (origin != 0 && pending_origins_.contains(origin - 1)) {
        // Republished after a rebuild: the copy record supersedes the origin once synced.
        if (auto r = wal_.append_copy(pos, origin - 1, id, buf_, due, properties); !r.ok())
          return r.error();
        pending_origins_.erase(origin - 1);
      } else {
        if (auto r = wal_.append_message(pos, id, buf_, due, properties); !r.ok())
          return r.error();
      }
      ++records;
      ++found;
      track(pos);  // even if releasing: its ack goes through the loop below
      pos += k;
    }
    // Sync queue: more senders may be about to commit; share this round's fdatasync with them
    // (not past the round's budget: the next round goes on).
    if (steps == 0 || !gather_more(found, pos, gather_deadline)) break;
  }
  // Acks: a logged message whose slot moved to a later lap is done, unless it may have
  // moved with it (released_at: its new position must be on disk, `synced_` as of before
  // this round's sync, or a power cut could keep the old position's ack and lose the new
  // record). Journalled once its dead letter, if it became one, is on the DLQ's disk: the
  // acks found while the DLQ is behind wait in ack_wait_ for the DLQ's tail as it was
  // then (ack_gate_); later ones are found again once those are journalled.
  const auto journal = [&](std::vector<std::uint64_t>& ps) -> VoidResult {
    for (const std::uint64_t p : ps) {
      if (auto r = wal_.append_ack(p); !r.ok()) return r;
      ++acks;
    }
    // ps is a subsequence of outstanding_ (both in position order): one pass removes it.
    std::size_t j = 0, kept = 0;
    for (const std::uint64_t p : outstanding_) {
      if (j < ps.size() && ps[j] == p) {
        ++j;
        continue;
      }
      outstanding_[kept++] = p;
    }
    outstanding_.resize(kept);
    ps.clear();
    return {};
  };
  if (!ack_wait_.empty()) {
    if (!dead_letters_durable(ack_gate_, /*on_disk=*/true)) {
      dlq_behind_ = true;
    } else if (auto r = journal(ack_wait_); !r.ok()) {
      return r.error();
    }
  }
  if (ack_wait_.empty()) {
    std::vector<std::uint64_t>& done = done_;  // reused: no allocation per round
    done.clear();
    for (const std::uint64_t p : outstanding_) {
      const std::uint64_t w = s.slot(p).word.load(std::memory_order_seq_cst);
      if (released_at(s, p, w, synced_) ||
          (word_lap(w) == lap_of(p, shift) && word_state(w) == SlotState::releasing))
        done.push_back(p);
    }
    if (!done.empty()) {
      ack_gate_.armed = false;  // a new wait: the DLQ's tail as of now
      if (dead_letters_durable(ack_gate_, /*on_disk=*/true)) {
        if (auto r = journal(done); !r.ok()) return r.error();
      } else {
        ack_wait_.swap(done);
        dlq_behind_ = true;
      }
    }
  }
  stats_.records += records;
  stats_.acks += acks;
  // Sync queue: one fdatasync for what this round wrote (group commit), before `persisted`
  // moves and confirms it. Async queue: written to the log file now (write(2): the kernel
  // has it, no process crash can lose it), and `persisted` moves at once, so producers reuse
  // the slots without waiting for the disk; one fdatasync per flush interval covers what
  // was written meanwhile (here when due, after wait_for_work's wake-up, or at a
  // checkpoint). Before, an async queue's slots waited for an fdatasync per round as a sync
  // queue's do (design note 25).
  if (sync_queue_ ? (records != 0 || acks != 0) : wal_.unsynced()) {
    if (sync_due(std::chrono::steady_clock::now())) {
      if (auto r = sync_log(pos); !r.ok()) return r.error();
    } else if (auto r = wal_.flush(); !r.ok()) {
      return r.error();
    }
  } else if (!wal_.unsynced()) {
    synced_ = std::max(synced_, pos);  // nothing unsynced: what we passed without a record
  }
  // Also when only the header disagrees: a `persisted` scribbled away from ours (another
  // process wrote garbage) would wedge producers of a durable queue, or let them overwrite
  // slots not in the log; ours is the truth, so it is put back every round. The same for
  // `synced`, which the dead-letter check of the queue that feeds a DLQ trusts.
  const bool synced_moved = h.persisted.synced.load(std::memory_order_seq_cst) != synced_;
  // While walking again below rewalk_end_ (see the constructor), `persisted` stays where the
  // persister before us left it: those positions are written (we log again only what a
  // failed writeback may have lost), their slots may already be reused, and a persister
  // started after us again must see the same range to walk (interrupted twice, it would
  // otherwise trust a `persisted` we had moved back and walk reused slots as unreused).
  const std::uint64_t published = std::max(pos, rewalk_end_);
  if (pos != next_ || h.persisted.value.load(std::memory_order_seq_cst) != published) {
    next_ = pos;
    // Publishes "everything below is in the log" (sync: on disk); pairs with producers'
    // and sync senders' seq_cst loads.
    h.persisted.value.store(published, std::memory_order_seq_cst);
    // The sync senders woken now are likely to send again at once: the next round waits
    // for that many (gather_more).
    expected_senders_ = wake_waiters(h.persist_wait, s.max_members());
    wake_waiters(h.producers_wait, s.max_members());
  }
  // After `persisted`: a reader never sees synced above it.
  if (synced_moved) h.persisted.synced.store(synced_, std::memory_order_seq_cst);
  if (std::chrono::steady_clock::now() - last_checkpoint_ >= kCheckpointEvery) {
    if (auto r = checkpoint(); !r.ok()) return r.error();
  }
  return records;
}

VoidResult Persister::checkpoint() {
  last_checkpoint_ = std::chrono::steady_clock::now();
  // An async queue's writes since its last fdatasync first: the checkpoint then refers to
  // nothing that is not on disk.
  if (wal_.unsynced()) {
    if (auto r = sync_log(next_); !r.ok()) return r;
    seg_->header().persisted.synced.store(synced_, std::memory_order_seq_cst);
  }
  std::uint64_t min_unacked = outstanding_.empty() ? next_ : outstanding_.front();
  // An earlier epoch's message whose copy is not yet durable stays live in the log.
  if (!pending_origins_.empty()) min_unacked = std::min(min_unacked, *pending_origins_.begin());
  // Unchanged (a long-unacked message holds it): no new checkpoint, but the log may still
  // need compacting behind it.
  if (min_unacked == checkpointed_min_) return wal_.compact();
  SHMQ_CRASH_POINT("persister.before_checkpoint");
  if (auto r = wal_.checkpoint(min_unacked, next_); !r.ok()) return r;
  checkpointed_min_ = min_unacked;
  ++stats_.checkpoints;
  return {};
}

void Persister::track(std::uint64_t pos) {
  // Rounds log in position order, above everything adopt() tracked: almost always an append.
  if (outstanding_.empty() || outstanding_.back() < pos) {
    outstanding_.push_back(pos);
    return;
  }
  const auto it = std::lower_bound(outstanding_.begin(), outstanding_.end(), pos);
  if (it == outstanding_.end() || *it != pos) outstanding_.insert(it, pos);
}

bool Persister::settled(std::uint64_t pos) {
  Segment& s = *seg_;
  const std::uint64_t w = s.slot(pos).word.load(std::memory_order_seq_cst);
  const std::int64_t d = lap_diff(word_lap(w), lap_of(pos, s.slot_shift()));
  if (d < 0) return false;
  if (d > 0) return true;
  const SlotState st = word_state(w);
  // A move in progress (relocating) is not settled either: round() stops at it, and a
  // round that found it settled would be run again at once, spinning until it is finished.
  return !(is_free(st) || st == SlotState::claimed || detail::is_relocating(st));
}

// Why: with N senders each waiting for its own confirmation, a confirmation wakes all N
// and the persister's next round starts at once; it used to find the first one or two that
// were scheduled, sync them alone, and the rest (committing during that fdatasync) waited a
// whole sync more, so the senders split into groups that alternated. Waiting a fraction of
// an fdatasync for the senders just woken puts them all into one.
bool Persister::gather_more(std::size_t found, std::uint64_t pos,
                            std::chrono::steady_clock::time_point& deadline) {
  if (!sync_queue_ || found == 0 || found >= expected_senders_ ||
      found >= kMaxRecordsPerRound || dlq_behind_)
    return false;
  const auto now = std::chrono::steady_clock::now();
  if (deadline == std::chrono::steady_clock::time_point{}) {
    auto window = group_wait_cap_;
    if (group_wait_scaled_) window = std::min(window, sync_time_ / 4);
    if (window <= std::chrono::nanoseconds::zero()) return false;
    deadline = now + window;
    ++stats_.group_waits;
  }
  if (now >= deadline) {
    ++stats_.group_wait_timeouts;
    return false;
  }
  if (!settled(pos)) {
    // Producers wake consumers' sleepers after every commit; we sleep among them.
    wait_on(seg_->header().consumers_wait, member_, deadline, [&] { return settled(pos); });
  }
  return true;  // round() looks again (a new tail), then asks again
}

void Persister::wait_for_work(std::chrono::milliseconds timeout) {
  Segment& s = *seg_;
  SegmentHeader& h = s.header();
  auto deadline = std::chrono::steady_clock::now() + timeout;
  // An async queue's unsynced writes: wake when their fdatasync is due (round() does it).
  if (wal_.unsynced()) deadline = std::min(deadline, last_sync_ + flush_interval_);
  const std::uint64_t next = next_;
  // Work is there when round() would get past `next`. Checked after our waiting bit is set,
  // so a commit that happened just before we sleep is seen here, not 5 ms later.
  auto work = [&] { return settled(next); };
  if (dlq_behind_) {
    // Waiting for the dead-letter queue's persister, which does not wake us (we have no
    // member row in its segment): look again in a millisecond rather than spin, since
    // settled(next) is true for the released slot we stopped at.
    std::this_thread::sleep_until(
        std::min(deadline, std::chrono::steady_clock::now() + std::chrono::milliseconds(1)));
    return;
  }
  if (work()) return;
  // Producers wake consumers' sleepers after every commit; we sleep among them.
  wait_on(h.consumers_wait, member_, deadline, work);
}

}  // namespace shmq::detail
