// The persister: copies committed messages of a durable queue from the ring into its log in
// position order, group-commits them with one fdatasync (an async queue: writes them, and
// fdatasyncs once per flush interval), then advances the segment's `persisted` cursor
// (which lets producers reuse those slots and confirms sync sends). It
// also journals acks: a logged message whose slot has moved to a later lap was acked (or
// dead-lettered), and an ack record says so; a periodic checkpoint retires old log files.
//
// One persister per queue: shmqd holds the data dir's lock while it runs one.
#pragma once

#include <chrono>
#include <cstdint>
#include <set>
#include <memory>
#include <vector>

#include "log/wal.hpp"
#include "segment/segment.hpp"
#include "shmq/error.hpp"

namespace shmq::detail {

struct PersisterStats {
  std::uint64_t records = 0;  // message records written
  std::uint64_t acks = 0;     // ack records written
  std::uint64_t syncs = 0;    // group commits
  std::uint64_t checkpoints = 0;
  // Sync queues: rounds that waited for more senders before their fdatasync (see round()),
  // and how many of those waits ended at their bound rather than with every sender in.
  std::uint64_t group_waits = 0;
  std::uint64_t group_wait_timeouts = 0;
  std::uint64_t sync_ns = 0;  // total time in the group commits' fdatasync
  // Checksummed queues: committed messages not logged because they failed their checksum.
  std::uint64_t corrupt = 0;
};

// Origins (positions of an earlier epoch) of the copies republished into the ring that are
// not yet logged: committed slots at or above `persisted`, and slots released there before
// the persister reached them (their headers are intact: nothing reuses a slot before
// `persisted` passes it). A claim that is still being written is not counted: its producer
// may be dead, and the watchdog turns it into a hole. Bounded by the ring size.
std::set<std::uint64_t> copies_in_ring(Segment& segment);

class Persister {
 public:
  // `member`: the persister's own row in the segment (Role::persister).
  Persister(std::shared_ptr<Segment> segment, log::Wal& wal, std::uint32_t member);

  // Reattach after a crash of shmqd (the segment survived): what the log holds that the ring
  // has acked since is journalled as acked (and synced), the rest is tracked until it is.
  // Recovered positions below the segment's base belong to an earlier epoch: they are
  // expected to be copied (expect_copies), never acked from the ring.
  VoidResult adopt(const log::RecoveryReport& report);

  // Positions of an earlier epoch (below the segment's base) that the log holds unacked and
  // that are, or will be, republished into the ring as copies. Each one stays live in the
  // log (the checkpoint keeps it) until its copy is durable, or its copy was acked before
  // it was logged (then an ack of the origin is written).
  void expect_copies(const std::vector<std::uint64_t>& origins);

  // True while the last round could not journal acks or advance past released messages
  // because the dead-letter queue has not yet persisted what it took (see round()).
  bool waiting_for_dead_letters() const noexcept { return dlq_behind_; }

  // One round: logs what was committed and acked since the last one, syncs (async: writes,
  // and syncs when the flush interval is up), advances `persisted`, wakes producers and
  // sync senders, checkpoints now and then. Returns the
  // number of records written. An error is final: nothing more may be confirmed (fail-stop).
  //
  // Group commit on a sync queue: the senders woken by the last confirmation are expected to
  // send again. When a round has found some messages (logged, or acked before it got to them)
  // but fewer than that many, it waits
  // (bounded, see set_group_wait) for the rest to commit before its fdatasync, so that
  // concurrent single sends share one. A lone sender (one waiter, one message) never waits,
  // nor does an async queue.
  Result<std::size_t> round();

  // Bound of the wait for more sync senders: `cap`, and with `scale_by_sync` also a quarter
  // of the recent fdatasync time (a wait longer than the sync it saves does not pay).
  // Default: 500 us, scaled. Tests set a long unscaled cap: the wait still ends as soon as
  // every expected sender has committed.
  void set_group_wait(std::chrono::nanoseconds cap, bool scale_by_sync) noexcept {
    group_wait_cap_ = cap;
    group_wait_scaled_ = scale_by_sync;
  }

  // Durable checkpoint now (shutdown).
  VoidResult checkpoint();

  // Sleeps until a producer commits something (it wakes consumers' sleepers, and we sleep
  // among them) or `timeout` passes.
  void wait_for_work(std::chrono::milliseconds timeout);

  const PersisterStats& stats() const noexcept { return stats_; }
  std::uint64_t next_to_log() const noexcept { return next_; }

 private:
  // round() would get past `pos`: its slot holds anything but "not claimed yet" or "being
  // written" at its lap.
  bool settled(std::uint64_t pos);
  // Whether round() should wait for more sync senders before it syncs, having found `found`
  // messages (logged, or released before it logged them); if so, waits until one more
  // message may be at `pos` or the deadline passed.
  bool gather_more(std::size_t found, std::uint64_t pos,
                   std::chrono::steady_clock::time_point& deadline);

  // fdatasync of what was written; then every position below `upto` is on disk (synced_).
  VoidResult sync_log(std::uint64_t upto);
  // Whether round() syncs now: always on a sync queue; on an async one once per flush
  // interval.
  bool sync_due(std::chrono::steady_clock::time_point now) const noexcept;

  std::shared_ptr<Segment> seg_;
  log::Wal& wal_;
  std::uint32_t member_;
  std::uint64_t next_ = 0;                        // first position not yet logged
  // Positions below it were passed by a persister before us (the header's `persisted` when
  // we started) and may be walked again (see the constructor): slots there may be reused.
  std::uint64_t rewalk_end_ = 0;

  // A wait for the dead-letter queue: releases observed before `target` (the DLQ's tail,
  // read once when the wait started) may leave this log once the DLQ's cursor reaches it.
  struct DlqGate {
    std::uint64_t target = 0;
    bool armed = false;
  };
  // The durable DLQ of this queue, or null when nothing can have been moved into one.
  Segment* dead_letter_queue();
  // True once the DLQ holds, in its log (`on_disk`: on its disk), every copy that may have
  // been made of the releases observed before the gate was armed (arms it if it is not).
  bool dead_letters_durable(DlqGate& gate, bool on_disk);
  DlqGate walk_gate_;                      // the walk's, held for one position:
  std::uint64_t walk_gate_pos_ = UINT64_MAX;
  DlqGate ack_gate_;                       // the acks', held for ack_wait_
  std::vector<std::uint64_t> ack_wait_;    // acks found, waiting for ack_gate_ (ascending)

  // Logged, not yet acked: positions, ascending, unique. A sorted vector, not a map: a
  // record used to cost a tree node (malloc, rebalance) in and out, ~5% of an async
  // queue's persister (perf, 1x1 64 B through 1,024 slots).
  std::vector<std::uint64_t> outstanding_;
  void track(std::uint64_t pos);  // adds pos to outstanding_
  std::set<std::uint64_t> pending_origins_;             // earlier epoch, copy not yet durable
  std::vector<std::uint64_t> done_;                     // round(): acks found this round
  std::shared_ptr<Segment> dlq_;                        // the dead-letter queue, once open
  bool dlq_behind_ = false;
  std::chrono::steady_clock::time_point last_checkpoint_{};
  std::uint64_t checkpointed_min_ = 0;
  std::vector<std::byte> buf_;
  PersisterStats stats_;
  bool sync_queue_ = false;
  std::chrono::milliseconds flush_interval_{0};      // async: at most this between fdatasyncs
  std::chrono::steady_clock::time_point last_sync_{};
  std::uint64_t synced_ = 0;  // every position below is on disk (published as persisted.synced)
  std::uint32_t expected_senders_ = 0;  // sync senders woken by the last confirmation
  std::chrono::nanoseconds sync_time_{0};  // recent fdatasync time (moving average)
  std::chrono::nanoseconds group_wait_cap_ = std::chrono::microseconds(500);
  bool group_wait_scaled_ = true;
};

}  // namespace shmq::detail
