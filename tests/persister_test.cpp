// The persister over the fault-injecting file system: what it confirms (the `persisted`
// cursor) is exactly what is on disk, nothing is confirmed after a failed fdatasync or a
// full disk, acks are journalled, and durable slots are reused only once persisted.
#include <map>
#include <set>
#include <cstring>

#include <gtest/gtest.h>

#include <bit>
#include <chrono>
#include <thread>
#include <vector>

#include "fault_fs.hpp"
#include "core/slot_ops.hpp"
#include "log/log_format.hpp"
#include "log/wal.hpp"
#include "persist/persister.hpp"
#include "ring/slot_word.hpp"
#include "segment/segment.hpp"
#include "test_util.hpp"

namespace shmq {
namespace {

using log::test::FaultFs;
using test::unique_name;

const std::string kDir = "/data/q";

// A durable queue segment (async unless told); its data dir lives in the fault file system
// only. Its flush interval is 0 unless told: an async queue then syncs every round, as a sync
// queue does, which these tests of what a sync confirms rely on (and which keeps the file
// operations of a run independent of the clock, as the power-loss test needs). The
// deferred fdatasync of a longer interval has tests of its own (AsyncQueue...).
struct Fixture {
  std::string name = unique_name("persist");
  Queue queue;
  detail::MemberTicket member;
  FaultFs fs;
  log::RecoveryReport report;
  std::unique_ptr<log::Wal> wal;
  std::unique_ptr<detail::Persister> persister;

  std::uint64_t segment_bytes = 64 << 20;

  explicit Fixture(std::uint32_t slots = 8, Durability durability = Durability::async,
                   FaultFs file_system = FaultFs(), bool checksum = false,
                   std::chrono::milliseconds flush_interval = std::chrono::milliseconds(0))
      : queue(Queue::recreate(name,
                              {.slot_count = slots,
                               .slot_size = 128,
                               .durability = durability,
                               .data_dir = "/data",
                               .flush_interval = flush_interval,
                               .checksum = checksum},
                              0)
                  .value()),
        member(queue.segment()->register_member(detail::Role::persister).value()),
        fs(std::move(file_system)) {
    open_wal();
  }
  ~Fixture() {
    (void)Queue::remove(name);
    (void)Queue::remove(name + ".dlq");
  }
  void open_wal() {
    report = {};
    persister.reset();
    wal.reset();
    log::WalOptions o;
    o.dir = kDir;
    o.segment_bytes = segment_bytes;
    wal = std::move(log::Wal::open(o, fs, report).value());
    persister = std::make_unique<detail::Persister>(queue.segment(), *wal, member.row);
  }
  std::uint64_t persisted() { return queue.stats().persisted; }
  std::uint64_t synced() { return queue.stats().synced; }
};

TEST(Persister, LogsCommittedMessagesThenAdvancesTheCursor) {
  Fixture f;
  auto p = f.queue.producer().value();
  for (int i = 1; i <= 5; ++i) ASSERT_EQ(p.try_send("m" + std::to_string(i), i), Status::ok);
  auto r = f.persister->round();
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(r.value(), 5u);
  EXPECT_EQ(f.persisted(), 5u);
  // What the cursor confirmed survives a crash that drops everything unsynced.
  f.fs.crash(FaultFs::CrashMode::drop);
  f.open_wal();
  ASSERT_EQ(f.report.unacked.size(), 5u);
  EXPECT_EQ(f.report.unacked[4].id, 5u);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(f.report.unacked[4].payload.data()),
                        f.report.unacked[4].payload.size()),
            "m5");
}

TEST(Persister, FailedFdatasyncConfirmsNothingThenOrAfter) {
  Fixture f;
  auto p = f.queue.producer().value();
  ASSERT_EQ(p.try_send("a", 1), Status::ok);
  ASSERT_TRUE(f.persister->round().ok());
  ASSERT_EQ(f.persisted(), 1u);
  ASSERT_EQ(p.try_send("b", 2), Status::ok);
  f.fs.fail_next_sync(EIO);
  auto r = f.persister->round();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(f.persisted(), 1u);  // "b" is not confirmed
  // Fail-stop: no later round may confirm anything, even though the disk works again.
  ASSERT_EQ(p.try_send("c", 3), Status::ok);
  EXPECT_FALSE(f.persister->round().ok());
  EXPECT_EQ(f.persisted(), 1u);
  // A restart recovers from the log: at least everything confirmed.
  f.fs.crash(FaultFs::CrashMode::drop);
  f.open_wal();
  ASSERT_GE(f.report.unacked.size(), 1u);
  EXPECT_EQ(f.report.unacked[0].id, 1u);
}

TEST(Persister, FullDiskIsReportedAndConfirmsNothing) {
  Fixture f;
  auto p = f.queue.producer().value();
  f.fs.set_space_left(10);  // not even one record header
  ASSERT_EQ(p.try_send("x", 1), Status::ok);
  auto r = f.persister->round();
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("no space"), std::string::npos) << r.error().message();
  EXPECT_EQ(f.persisted(), 0u);
}

// Checksummed queue (issue 12): a message scribbled in the ring before the persister got to
// it is not logged, so a rebuild from the log cannot bring it back as a valid message with a
// fresh checksum. The messages around it are logged and confirmed as usual.
TEST(Persister, CorruptMessageOfAChecksummedQueueIsNotLogged) {
  Fixture f(8, Durability::async, FaultFs(), /*checksum=*/true);
  auto p = f.queue.producer().value();
  for (int i = 1; i <= 3; ++i) ASSERT_EQ(p.try_send("m" + std::to_string(i), i), Status::ok);
  f.queue.segment()->payload(1)[0] = std::byte{'X'};  // "m2"
  auto r = f.persister->round();
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(r.value(), 2u);
  EXPECT_EQ(f.persister->stats().corrupt, 1u);
  EXPECT_EQ(f.persisted(), 3u) << "the persister stopped at the corrupt message";
  f.fs.crash(FaultFs::CrashMode::drop);
  f.open_wal();
  ASSERT_EQ(f.report.unacked.size(), 2u);
  EXPECT_EQ(f.report.unacked[0].id, 1u);
  EXPECT_EQ(f.report.unacked[1].id, 3u);
}

TEST(Persister, DurableSlotsAreReusedOnlyOnceAckedAndPersisted) {
  Fixture f(4);
  auto p = f.queue.producer().value();
  auto c = f.queue.consumer().value();
  for (int i = 1; i <= 4; ++i) ASSERT_EQ(p.try_send("m", i), Status::ok);
  Message m;
  ASSERT_EQ(c.try_receive(m), Status::ok);
  ASSERT_EQ(c.ack(m), Status::ok);
  EXPECT_EQ(p.try_send("m", 5), Status::full);  // acked, but not yet on disk
  ASSERT_TRUE(f.persister->round().ok());
  EXPECT_EQ(p.try_send("m", 5), Status::ok);  // acked and persisted
}

// `persisted` is a shared word: scribbled near 2^64 it made "persisted + N" wrap, so that
// every slot looked taken for ever (the persister stored it only when its own cursor moved);
// scribbled ahead of the tail it claimed slots were on disk when they were not. Producers
// treat a value outside [tail + k - N, tail] as full, and the persister's next round puts
// its own value back.
TEST(Persister, AScribbledPersistedCursorIsPutBackAndNeverFreesASlotEarly) {
  for (const std::uint64_t wild : {UINT64_MAX - 2, std::uint64_t{1} << 40}) {
    Fixture f(4);
    auto p = f.queue.producer().value();
    auto c = f.queue.consumer().value();
    for (int i = 1; i <= 4; ++i) ASSERT_EQ(p.try_send("m", i), Status::ok);
    ASSERT_TRUE(f.persister->round().ok());
    const std::uint64_t honest = f.persisted();
    Message m;
    ASSERT_EQ(c.try_receive(m), Status::ok);
    ASSERT_EQ(c.ack(m), Status::ok);
    ASSERT_TRUE(f.persister->round().ok());  // the ack journalled; nothing new to log
    ASSERT_EQ(f.persisted(), honest);
    f.queue.segment()->header().persisted.value.store(wild);
    EXPECT_EQ(p.try_send("m", 5), Status::full) << wild;  // not freed by a wild value
    ASSERT_TRUE(f.persister->round().ok());
    EXPECT_EQ(f.persisted(), honest) << wild;
    EXPECT_EQ(p.try_send("m", 5), Status::ok) << wild;
  }
}

TEST(Persister, AcksAreJournalledSoAckedMessagesDoNotComeBack) {
  Fixture f;
  auto p = f.queue.producer().value();
  auto c = f.queue.consumer().value();
  for (int i = 1; i <= 4; ++i) ASSERT_EQ(p.try_send("m", i), Status::ok);
  ASSERT_TRUE(f.persister->round().ok());
  Message m;
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(c.try_receive(m), Status::ok);
    ASSERT_EQ(c.ack(m), Status::ok);
  }
  ASSERT_TRUE(f.persister->round().ok());
  EXPECT_EQ(f.persister->stats().acks, 3u);
  f.fs.crash(FaultFs::CrashMode::drop);
  f.open_wal();
  ASSERT_EQ(f.report.unacked.size(), 1u);
  EXPECT_EQ(f.report.unacked[0].id, 4u);
}

// Issue 11: a producer that laps a requeued message moves it to its own position (same
// slot, a later lap). The old position's slot is then at a later lap, which used to mean
// "acked": journalled before the new position was logged, a crash in between lost the
// message. Its ack is journalled only once the new position is on disk.
TEST(Persister, RelocatedMessageIsNotAckedInTheLogBeforeItsNewPositionIsLogged) {
  Fixture f(4, Durability::async, FaultFs(), /*checksum=*/true);
  auto p = f.queue.producer().value();
  auto c = f.queue.consumer().value();
  detail::Segment& seg = *f.queue.segment();
  ASSERT_EQ(p.try_send("parked", 77), Status::ok);
  for (int i = 1; i <= 3; ++i) ASSERT_EQ(p.try_send("m", i), Status::ok);
  ASSERT_TRUE(f.persister->round().ok());  // positions 0..3 on disk
  std::vector<Message> got(4);
  for (Message& m : got) ASSERT_EQ(c.try_receive(m), Status::ok);
  ASSERT_EQ(got[0].id(), 77u);
  for (int i = 1; i <= 3; ++i) ASSERT_EQ(c.ack(got[i]), Status::ok);
  ASSERT_EQ(c.nack(got[0]), Status::ok);  // ready at 0, behind dispatch (4)
  ASSERT_TRUE(f.persister->round().ok());  // acks of 1..3
  // A producer stopped right after its relocation CAS (white box: the first step alone):
  // position 0's slot is at lap 1, the message not yet published (nor logged) at 4.
  const std::uint64_t w = seg.slot(0).word.load();
  ASSERT_TRUE(detail::try_relocate(seg, 4, w, f.member.owner));
  std::uint64_t t = 4;
  ASSERT_TRUE(seg.header().tail.value.compare_exchange_strong(t, 5));
  const std::uint64_t acks = f.persister->stats().acks;
  ASSERT_TRUE(f.persister->round().ok());
  EXPECT_EQ(f.persister->stats().acks, acks);  // 0 is not journalled as acked
  f.fs.crash(FaultFs::CrashMode::drop);
  f.open_wal();
  ASSERT_EQ(f.report.unacked.size(), 1u);
  EXPECT_EQ(f.report.unacked[0].id, 77u);
  EXPECT_EQ(f.report.unacked[0].position, 0u);
  ASSERT_TRUE(f.persister->adopt(f.report).ok());  // a restarted persister keeps it too
  // The move is finished (by the relocator, or the watchdog): 4 is logged, then 0 acked.
  ASSERT_TRUE(detail::finish_relocation(
      seg, 4, detail::make_word(1, detail::SlotState::relocating, f.member.owner, 1)));
  ASSERT_TRUE(f.persister->round().ok());  // 4 logged and synced
  ASSERT_TRUE(f.persister->round().ok());  // 0 acked: its new position is on disk now
  f.fs.crash(FaultFs::CrashMode::drop);
  f.open_wal();
  ASSERT_EQ(f.report.unacked.size(), 1u);
  EXPECT_EQ(f.report.unacked[0].id, 77u);
  EXPECT_EQ(f.report.unacked[0].position, 4u);
  Message m;
  ASSERT_EQ(c.try_receive(m), Status::ok);
  EXPECT_EQ(m.view(), "parked");
  EXPECT_EQ(m.id(), 77u);
  EXPECT_EQ(m.position(), 4u);
  EXPECT_EQ(m.delivery_count(), 2u);
}

TEST(Persister, CheckpointRetiresAckedPrefix) {
  Fixture f;
  auto p = f.queue.producer().value();
  auto c = f.queue.consumer().value();
  Message m;
  for (int i = 1; i <= 6; ++i) {
    ASSERT_EQ(p.try_send("m", i), Status::ok);
    ASSERT_EQ(c.try_receive(m), Status::ok);
    ASSERT_EQ(c.ack(m), Status::ok);
  }
  ASSERT_EQ(p.try_send("keep", 7), Status::ok);
  ASSERT_TRUE(f.persister->round().ok());
  ASSERT_TRUE(f.persister->checkpoint().ok());
  f.fs.crash(FaultFs::CrashMode::drop);
  f.open_wal();
  EXPECT_EQ(f.report.min_unacked, 6u);
  ASSERT_EQ(f.report.unacked.size(), 1u);
  EXPECT_EQ(f.report.unacked[0].id, 7u);
  EXPECT_EQ(f.report.next_position, 7u);
}

// Sync senders on threads of this process, each with its own producer (member row). Each
// sends `per_sender` messages one at a time, each send waiting for its confirmation. On
// destruction the producers are interrupted (a failed assertion must not hang the test).
struct SyncSenders {
  std::vector<Producer> producers;
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};

  SyncSenders(Queue& q, int n, int per_sender) {
    for (int i = 0; i < n; ++i) producers.push_back(q.producer().value());
    for (int i = 0; i < n; ++i)
      threads.emplace_back([this, i, per_sender] {
        for (int j = 0; j < per_sender; ++j)
          if (producers[i].send("m", static_cast<std::uint64_t>(i * 100 + j + 1)) != Status::ok) {
            failures.fetch_add(1);
            return;
          }
      });
  }
  ~SyncSenders() {
    for (auto& p : producers) p.interrupt();
    for (auto& t : threads) t.join();
  }
};

// Members sleeping on the queue's confirmation line (sync senders waiting for `persisted`).
int waiting_for_confirmation(Queue& q) {
  const auto& line = q.segment()->header().persist_wait;
  int n = 0;
  for (const auto& w : line.waiting) n += std::popcount(w.load());
  return n;
}

// shmqd's loop: rounds, and a wait for work when a round wrote nothing, until `records`
// messages are logged (or a generous bound passes: a failure, not a timing assertion).
void persist_until(Fixture& f, std::uint64_t records) {
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (f.persister->stats().records < records && std::chrono::steady_clock::now() < give_up) {
    auto r = f.persister->round();
    ASSERT_TRUE(r.ok()) << r.error().message();
    if (r.value() == 0) f.persister->wait_for_work(std::chrono::milliseconds(5));
  }
  ASSERT_EQ(f.persister->stats().records, records);
}

// Issue 9.6: eight concurrent single sync sends share one fdatasync. The first round is made
// to find all eight first messages (every sender is asleep waiting for its confirmation);
// the confirmation wakes all eight, and the round that follows waits for every one of their
// second messages before it syncs, however late each sender is scheduled. The wait's bound
// is set far beyond any scheduling delay: it ends when the eighth message is in, so the
// counts below do not depend on timing.
TEST(Persister, ConcurrentSyncSendersShareOneFdatasync) {
  Fixture f(64, Durability::sync);
  f.persister->set_group_wait(std::chrono::seconds(60), false);
  constexpr int kSenders = 8;
  SyncSenders senders(f.queue, kSenders, 2);
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while ((waiting_for_confirmation(f.queue) < kSenders || f.queue.stats().tail < kSenders) &&
         std::chrono::steady_clock::now() < give_up)
    std::this_thread::yield();
  ASSERT_EQ(f.queue.stats().tail, static_cast<std::uint64_t>(kSenders));
  ASSERT_EQ(waiting_for_confirmation(f.queue), kSenders);

  auto r = f.persister->round();
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(r.value(), static_cast<std::size_t>(kSenders));
  EXPECT_EQ(f.persister->stats().syncs, 1u);

  ASSERT_NO_FATAL_FAILURE(persist_until(f, 2 * kSenders));
  EXPECT_EQ(f.persister->stats().syncs, 2u) << "the second messages were not synced together";
  EXPECT_EQ(f.persister->stats().group_wait_timeouts, 0u);
  EXPECT_EQ(f.persisted(), static_cast<std::uint64_t>(2 * kSenders));
  EXPECT_EQ(senders.failures.load(), 0);
  // Confirmed means on disk: all sixteen survive a crash that drops everything unsynced.
  f.fs.crash(FaultFs::CrashMode::drop);
  f.open_wal();
  EXPECT_EQ(f.report.unacked.size(), static_cast<std::size_t>(2 * kSenders));
}

// A lone sync sender is never held back for company: one sender waiting, one message found.
TEST(Persister, LoneSyncSenderNeverWaitsForOthers) {
  Fixture f(64, Durability::sync);
  f.persister->set_group_wait(std::chrono::seconds(60), false);
  SyncSenders sender(f.queue, 1, 20);
  ASSERT_NO_FATAL_FAILURE(persist_until(f, 20));
  EXPECT_EQ(f.persister->stats().syncs, 20u);  // each send waits for its own confirmation
  EXPECT_EQ(f.persister->stats().group_waits, 0u);
  EXPECT_EQ(sender.failures.load(), 0);
}

// try_send never hangs on a sync queue: no_persister at once when no persister serves it
// (the message is sent), a bounded wait for the confirmation otherwise (unconfirmed);
// send_for keeps its timeout meaning.
TEST(Persister, SyncTrySendWithoutAPersisterReturnsNoPersister) {
  Fixture f(64, Durability::sync);
  auto p = f.queue.producer().value();
  f.queue.segment()->unregister_member(f.member);
  EXPECT_EQ(p.try_send("a"), Status::no_persister);
  EXPECT_EQ(p.try_send("b"), Status::no_persister);
  EXPECT_EQ(p.send_for(as_bytes("c"), std::chrono::milliseconds(1)), Status::timeout);
  EXPECT_EQ(f.queue.stats().tail, 3u);  // all three are in the ring
  // A persister attached but not (yet) syncing: try_send waits only a bounded time.
  f.member = f.queue.segment()->register_member(detail::Role::persister).value();
  EXPECT_EQ(p.try_send("d"), Status::unconfirmed);
  // Once it writes them, all four are confirmed.
  ASSERT_NO_FATAL_FAILURE(persist_until(f, 4));
  EXPECT_EQ(f.persisted(), 4u);
}

// Async senders never wait for confirmations, so the persister never waits for them.
TEST(Persister, AsyncQueueNeverWaitsForSenders) {
  Fixture f(64, Durability::async);
  f.persister->set_group_wait(std::chrono::seconds(60), false);
  auto p = f.queue.producer().value();
  for (int i = 1; i <= 3; ++i) {
    ASSERT_EQ(p.try_send("m", i), Status::ok);
    ASSERT_TRUE(f.persister->round().ok());
  }
  EXPECT_EQ(f.persister->stats().syncs, 3u);
  EXPECT_EQ(f.persister->stats().group_waits, 0u);
}

// Issue 16: an async queue's persister writes every round and moves `persisted` at once (the
// slots are reused without waiting for the disk), and fdatasyncs once per flush interval:
// `synced` says what is on disk. A crash of the process loses nothing written; a power cut
// loses what was not synced yet (the async contract), nothing synced.
TEST(AsyncQueue, WritesEveryRoundReusesSlotsAtOnceAndSyncsOncePerFlushInterval) {
  Fixture f(8, Durability::async, FaultFs(), false, std::chrono::hours(1));
  auto p = f.queue.producer().value();
  auto c = f.queue.consumer().value();
  for (int i = 1; i <= 8; ++i) ASSERT_EQ(p.try_send("m" + std::to_string(i), i), Status::ok);
  EXPECT_EQ(p.try_send("m9", 9), Status::full);  // the ring is full, nothing logged yet
  ASSERT_TRUE(f.persister->round().ok());
  EXPECT_EQ(f.persisted(), 8u);
  EXPECT_EQ(f.synced(), 0u);
  EXPECT_EQ(f.persister->stats().syncs, 0u);
  // Acked, then the slots are reused before any fdatasync.
  Message m;
  for (int i = 0; i < 8; ++i) {
    ASSERT_EQ(c.try_receive(m), Status::ok);
    ASSERT_EQ(c.ack(m), Status::ok);
  }
  for (int i = 9; i <= 12; ++i) ASSERT_EQ(p.try_send("m" + std::to_string(i), i), Status::ok);
  ASSERT_TRUE(f.persister->round().ok());
  EXPECT_EQ(f.persisted(), 12u);
  EXPECT_EQ(f.persister->stats().syncs, 0u);
  // A crash of the persister's process: the file keeps what was written: 9..12, and the
  // acks of 5..8. Those of 1..4 wait until the messages now in their slots (9..12) are on
  // disk (released_at cannot tell a slot reused from a message moved).
  f.open_wal();
  std::set<std::uint64_t> ids;
  for (const auto& r : f.report.unacked) ids.insert(r.id);
  EXPECT_EQ(ids, (std::set<std::uint64_t>{1, 2, 3, 4, 9, 10, 11, 12}));
  // The next one adopts what the log holds, as shmqd does, and trusts the disk only up to
  // `synced` (0), or tail - N (4) below which every slot was claimed again: 9..12 are
  // logged again from the ring.
  ASSERT_TRUE(f.persister->adopt(f.report).ok());
  for (int i = 13; i <= 14; ++i) ASSERT_EQ(p.try_send("m" + std::to_string(i), i), Status::ok);
  ASSERT_TRUE(f.persister->round().ok());
  EXPECT_EQ(f.persisted(), 14u);
  EXPECT_EQ(f.synced(), 4u);
  // A checkpoint syncs first: everything it refers to is on disk.
  ASSERT_TRUE(f.persister->checkpoint().ok());
  EXPECT_EQ(f.synced(), 14u);
  EXPECT_EQ(f.persister->stats().syncs, 1u);
  ASSERT_EQ(p.try_send("m15", 15), Status::ok);
  ASSERT_TRUE(f.persister->round().ok());  // m15, and the acks of 1..4: written
  ASSERT_TRUE(f.persister->checkpoint().ok());
  EXPECT_EQ(f.synced(), 15u);
  ASSERT_EQ(p.try_send("m16", 16), Status::ok);
  ASSERT_TRUE(f.persister->round().ok());
  EXPECT_EQ(f.persisted(), 16u);
  EXPECT_EQ(f.synced(), 15u);
  // A power cut loses what no fdatasync covered (m16), nothing else.
  f.fs.crash(FaultFs::CrashMode::drop);
  f.open_wal();
  ids.clear();
  for (const auto& r : f.report.unacked) ids.insert(r.id);
  EXPECT_EQ(ids, (std::set<std::uint64_t>{9, 10, 11, 12, 13, 14, 15}));
}

// A persister that starts after its predecessor died between a write and its fdatasync
// (the bytes are in the page cache only) must not report them synced before they are: the
// log's last segment is synced when it is reopened.
TEST(AsyncQueue, ARestartedPersisterSyncsWhatItsDeadPredecessorWrote) {
  Fixture f(8, Durability::async, FaultFs(), false, std::chrono::hours(1));
  auto p = f.queue.producer().value();
  for (int i = 1; i <= 4; ++i) ASSERT_EQ(p.try_send("m", i), Status::ok);
  ASSERT_TRUE(f.persister->round().ok());
  EXPECT_EQ(f.persisted(), 4u);
  EXPECT_EQ(f.synced(), 0u);
  f.open_wal();  // the process died; the page cache kept its writes
  ASSERT_TRUE(f.persister->adopt(f.report).ok());
  ASSERT_TRUE(f.persister->round().ok());  // logs 1..4 again from the ring: not trusted
  EXPECT_EQ(f.synced(), 0u);
  ASSERT_TRUE(f.persister->checkpoint().ok());
  ASSERT_EQ(f.synced(), 4u);
  f.fs.crash(FaultFs::CrashMode::drop);  // then the power goes
  f.open_wal();
  EXPECT_EQ(f.report.unacked.size(), 4u) << "synced said 4, the disk has fewer";
}

// An idle persister with unsynced writes wakes when the flush interval is up (not at its
// idle timeout) and the next round syncs them.
TEST(AsyncQueue, AnIdlePersisterSyncsWithinTheFlushInterval) {
  Fixture f(8, Durability::async, FaultFs(), false, std::chrono::milliseconds(20));
  auto p = f.queue.producer().value();
  ASSERT_EQ(p.try_send("m", 1), Status::ok);
  ASSERT_TRUE(f.persister->round().ok());  // written (the interval started at its creation)
  EXPECT_EQ(f.persisted(), 1u);
  const std::uint64_t syncs = f.persister->stats().syncs;
  if (f.synced() == 1u) GTEST_SKIP() << "this slow machine took the whole interval to get here";
  const auto t0 = std::chrono::steady_clock::now();
  f.persister->wait_for_work(std::chrono::hours(1));  // nothing to log: sleeps till the sync
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::hours(1));
  ASSERT_TRUE(f.persister->round().ok());
  EXPECT_EQ(f.synced(), 1u);
  EXPECT_EQ(f.persister->stats().syncs, syncs + 1);
}

// A dead-lettered message leaves its queue's log (its release is journalled) only once the
// DLQ has it on disk: `synced`, not `persisted`, which on an async DLQ may be page cache.
TEST(AsyncQueue, ReleasesOfDeadLetteredMessagesWaitForTheDeadLetterQueuesSync) {
  Fixture f(8, Durability::async);
  // Queue::recreate (a rebuild from a log) leaves the DLQ to its own rebuild: made here.
  QueueOptions o;
  o.slot_count = 8;
  o.slot_size = 128;
  o.dead_letter = false;
  o.durability = Durability::async;
  o.data_dir = "/data";
  auto dlq = Queue::recreate(f.name + ".dlq", o, 0);
  ASSERT_TRUE(dlq.ok()) << dlq.error().message();
  ASSERT_TRUE(dlq->segment()->durable());
  auto p = f.queue.producer().value();
  auto c = f.queue.consumer().value();
  ASSERT_EQ(p.try_send("m", 1), Status::ok);
  ASSERT_TRUE(f.persister->round().ok());  // logged
  Message m;
  ASSERT_EQ(c.try_receive(m), Status::ok);
  ASSERT_EQ(c.nack(m, /*requeue=*/false), Status::ok);  // dead-lettered: the DLQ's tail is 1
  auto& dh = dlq->segment()->header();
  ASSERT_EQ(dh.tail.value.load(), 1u);
  // The DLQ's persister wrote it but has not synced it.
  dh.persisted.value.store(1);
  ASSERT_TRUE(f.persister->round().ok());
  EXPECT_TRUE(f.persister->waiting_for_dead_letters());
  EXPECT_EQ(f.persister->stats().acks, 0u);
  dh.persisted.synced.store(1);  // now on disk
  ASSERT_TRUE(f.persister->round().ok());
  EXPECT_FALSE(f.persister->waiting_for_dead_letters());
  EXPECT_EQ(f.persister->stats().acks, 1u);
}

// The queue's DLQ, made by hand (Queue::recreate leaves it to its own rebuild), as the
// AsyncQueue dead-letter test of aff0034 does.
Queue make_dead_letter_queue(const Fixture& f, Durability durability = Durability::async) {
  QueueOptions o;
  o.slot_count = 8;
  o.slot_size = 128;
  o.dead_letter = false;
  o.durability = durability;
  o.data_dir = "/data";
  auto dlq = Queue::recreate(f.name + ".dlq", o, 0);
  EXPECT_TRUE(dlq.ok());
  return std::move(dlq.value());
}

// ---------------------------------------------------------------------------------------
// Red-team finding L1 (loss), issue 16. An async queue publishes `persisted` after write(2); when the later
// fdatasync fails, Linux may have dropped (marked clean) the pages it could not write. The
// ring has already been told it may reuse those slots, the restarted shmqd's Wal::open
// fdatasync "succeeds" over the loss (errseq reports an error once), and `synced` then
// claims positions that the disk never got; they are never logged again.
// FaultFs keeps unsynced data "in the page cache" after a failed sync and writes it at the
// next successful one, which Linux does not do; the first crash(drop) below stands for the
// kernel dropping the pages it failed to write (the host stays up, /dev/shm survives).
// Before aff0034 `persisted` stayed below them and the restarted persister logged them again
// from the ring.
TEST(AsyncQueue, AFailedFdatasyncNeverLetsSyncedClaimWhatTheDiskNeverGot) {
  Fixture f(8, Durability::async, FaultFs(), false, std::chrono::hours(1));
  auto p = f.queue.producer().value();
  for (int i = 1; i <= 4; ++i) ASSERT_EQ(p.try_send("m", i), Status::ok);
  ASSERT_TRUE(f.persister->round().ok());
  ASSERT_EQ(f.persisted(), 4u);  // written, not synced: the slots may be reused now
  ASSERT_EQ(f.synced(), 0u);
  f.fs.fail_next_sync(EIO);
  EXPECT_FALSE(f.persister->checkpoint().ok());  // the flush interval's fdatasync fails
  f.fs.crash(FaultFs::CrashMode::drop);          // the pages it could not write are gone
  f.open_wal();                                  // shmqd exited 1; systemd restarts it
  ASSERT_TRUE(f.persister->adopt(f.report).ok());
  ASSERT_TRUE(f.persister->round().ok());
  EXPECT_LT(f.synced(), 4u) << "synced claims 4 positions that are on no disk";
  // They are logged again from the ring (still unacked there), and synced: a power cut then
  // loses none of them.
  ASSERT_TRUE(f.persister->checkpoint().ok());
  EXPECT_EQ(f.synced(), 4u);
  f.fs.crash(FaultFs::CrashMode::drop);
  f.open_wal();
  EXPECT_EQ(f.report.unacked.size(), 4u);
}

// ---------------------------------------------------------------------------------------
// Red-team finding L2 (loss), issue 16. A relocated message (issue 11) has its old position journalled as
// acked once its new position is *logged* (released_at(..., pos)), i.e. on an async queue
// once the new record is written, not synced. Both records then sit unsynced in the log for
// up to a flush interval; a power cut that persists the sector holding the ack but not the
// one holding the moved record (FaultFs garble mode: "pages persisted in any order") loses a
// message whose only durable record was synced long before the last fdatasync. The disk
// state is built by hand here (deterministic): the moved record's bytes zero, the ack
// present. In a real round the acks follow all of the round's message records, often
// kilobytes later, so the two rarely share a sector.
TEST(AsyncQueue, ARelocatedMessageIsNotAckedBeforeItsNewRecordIsOnDisk) {
  Fixture f(4, Durability::async, FaultFs(), /*checksum=*/true, std::chrono::hours(1));
  auto p = f.queue.producer().value();
  auto c = f.queue.consumer().value();
  detail::Segment& seg = *f.queue.segment();
  ASSERT_EQ(p.try_send("parked", 77), Status::ok);
  for (int i = 1; i <= 3; ++i) ASSERT_EQ(p.try_send("m", i), Status::ok);
  ASSERT_TRUE(f.persister->round().ok());
  std::vector<Message> got(4);
  for (Message& m : got) ASSERT_EQ(c.try_receive(m), Status::ok);
  ASSERT_EQ(got[0].id(), 77u);
  for (int i = 1; i <= 3; ++i) ASSERT_EQ(c.ack(got[i]), Status::ok);
  ASSERT_EQ(c.nack(got[0]), Status::ok);  // ready at 0, behind dispatch
  ASSERT_TRUE(f.persister->round().ok());
  ASSERT_TRUE(f.persister->checkpoint().ok());  // syncs: "parked" at 0 is on disk
  ASSERT_GE(f.synced(), 4u);
  const std::string file = f.wal->current_segment();
  const std::size_t on_disk = f.fs.read(kDir, file).size();
  // A producer laps it: moved to position 4 (same slot, lap 1).
  const std::uint64_t w = seg.slot(0).word.load();
  ASSERT_TRUE(detail::try_relocate(seg, 4, w, f.member.owner));
  std::uint64_t t = 4;
  ASSERT_TRUE(seg.header().tail.value.compare_exchange_strong(t, 5));
  ASSERT_TRUE(detail::finish_relocation(
      seg, 4, detail::make_word(1, detail::SlotState::relocating, f.member.owner, 1)));
  const std::uint64_t acks = f.persister->stats().acks;
  ASSERT_TRUE(f.persister->round().ok());  // record(4) and ack(0): written, not synced
  EXPECT_EQ(f.persister->stats().acks, acks)
      << "ack(0) journalled while record(4) is not on disk";
  // The power cut: the ack's sector reached the disk, the moved record's did not.
  std::vector<std::byte> disk = f.fs.read(kDir, file);
  if (disk.size() >= on_disk + log::kRecordHeaderSize) {
    const std::size_t ack_at = disk.size() - log::kRecordHeaderSize;  // an ack: header only
    std::memset(disk.data() + on_disk, 0, ack_at - on_disk);
    f.fs.write(kDir, file, disk);
  }
  f.fs.crash(FaultFs::CrashMode::drop);
  f.open_wal();
  std::set<std::uint64_t> ids;
  for (const auto& r : f.report.unacked) ids.insert(r.id);
  EXPECT_TRUE(ids.contains(77u)) << "\"parked\" was on disk before the last fdatasync, and is "
                                    "lost: its old position's ack survived, its new record not";
}

// ---------------------------------------------------------------------------------------
// Red-team finding L3 (loss; older than issue 16's async change, which widened it). adopt() journals (and syncs)
// the ack of every logged message it finds released, without the dead-letter check that
// round() applies: a message dead-lettered while shmqd was down is gone from its queue's
// log before its dead letter is on any disk (the DLQ's persister, restarting in another
// thread of the same shmqd, writes it in its first round and, async, syncs it only a flush
// interval later). A power cut in between loses it from both.
TEST(AsyncQueue, AdoptDoesNotJournalTheAckOfADeadLetterNotYetOnDisk) {
  Fixture f(8, Durability::async);
  Queue dlq = make_dead_letter_queue(f);
  auto p = f.queue.producer().value();
  auto c = f.queue.consumer().value();
  ASSERT_EQ(p.try_send("m", 1), Status::ok);
  ASSERT_TRUE(f.persister->round().ok());  // logged and synced (flush interval 0)
  Message m;
  ASSERT_EQ(c.try_receive(m), Status::ok);
  ASSERT_EQ(c.nack(m, /*requeue=*/false), Status::ok);  // dead-lettered: DLQ tail 1
  ASSERT_EQ(dlq.segment()->header().persisted.synced.load(), 0u);  // not on disk
  // A round holds the ack back (the check of aff0034) ...
  ASSERT_TRUE(f.persister->round().ok());
  EXPECT_TRUE(f.persister->waiting_for_dead_letters());
  // ... but a restart (shmqd killed and started again) does not.
  f.open_wal();
  ASSERT_TRUE(f.persister->adopt(f.report).ok());
  f.fs.crash(FaultFs::CrashMode::drop);  // power cut; the DLQ's copy was on no disk
  f.open_wal();
  EXPECT_EQ(f.report.unacked.size(), 1u)
      << "the message left its queue's log while its dead letter was only in memory";
}

// ---------------------------------------------------------------------------------------
// Red-team finding W1 (stall), issue 16. The dead-letter check compares the DLQ's `synced` with the
// DLQ's *current* tail. An async DLQ syncs once per flush interval; while dead letters keep
// arriving, each sync is overtaken by the next dead letter, and the feeding queue's walk
// stops at every message released before it was logged, even those whose dead letters are
// long on disk: its `persisted` (and so its producers) waits as long as the stream lasts.
// (Before aff0034 the check used the DLQ's `persisted`, which an async DLQ moved every
// round.) Here the DLQ's persister is played by hand: it syncs everything it has just
// before the next dead letter arrives.
TEST(AsyncQueue, DeadLettersArrivingFasterThanTheDlqSyncsDoNotStallTheQueue) {
  Fixture f(8, Durability::async);
  Queue dlq = make_dead_letter_queue(f);
  auto& dh = dlq.segment()->header();
  auto p = f.queue.producer().value();
  auto c = f.queue.consumer().value();
  for (std::uint64_t i = 1; i <= 5; ++i) {
    ASSERT_EQ(p.try_send("poison", i), Status::ok);
    Message m;
    ASSERT_EQ(c.try_receive(m), Status::ok);
    ASSERT_EQ(c.nack(m, /*requeue=*/false), Status::ok);  // released before it was logged
    ASSERT_EQ(dh.tail.value.load(), i);
    ASSERT_TRUE(f.persister->round().ok());
    // The DLQ's persister writes and syncs all it has (dead letters 0 .. i-1).
    dh.persisted.value.store(i);
    dh.persisted.synced.store(i);
  }
  // Dead letters 0..3 were on disk before the 5th arrived; the queue may pass 0..3 at least
  // (on an async queue it need not wait for the DLQ's disk at all for them: no record of
  // them is ever written to its own log).
  EXPECT_GE(f.persisted(), 4u) << "the queue's persisted cursor never moved";
}

// Recovery interrupted, twice: a persister that restarts over unsynced writes walks them
// again from `synced`, and until it is past them it leaves `persisted` where it was, so that
// a persister started after it (the second restart) walks the same range, and producers
// never see the cursor move back. Here the walk is held at its first position by the
// dead-letter gate (a message was dead-lettered, the DLQ has not written it).
TEST(AsyncQueue, ARecoveryInterruptedTwiceNeverMovesPersistedBack) {
  Fixture f(8, Durability::async, FaultFs(), false, std::chrono::hours(1));
  Queue dlq = make_dead_letter_queue(f);
  auto p = f.queue.producer().value();
  auto c = f.queue.consumer().value();
  for (int i = 1; i <= 4; ++i) ASSERT_EQ(p.try_send("m", i), Status::ok);
  ASSERT_TRUE(f.persister->round().ok());
  ASSERT_EQ(f.persisted(), 4u);
  Message m;
  for (int i = 1; i <= 4; ++i) {
    ASSERT_EQ(c.try_receive(m), Status::ok);
    ASSERT_EQ(i == 4 ? c.nack(m, /*requeue=*/false) : c.ack(m), Status::ok);
  }
  for (int i = 5; i <= 8; ++i) ASSERT_EQ(p.try_send("m", i), Status::ok);  // not logged
  for (int restart = 0; restart < 2; ++restart) {
    f.open_wal();
    ASSERT_TRUE(f.persister->adopt(f.report).ok());
    ASSERT_TRUE(f.persister->round().ok());
    EXPECT_TRUE(f.persister->waiting_for_dead_letters());
    EXPECT_EQ(f.persisted(), 4u) << "restart " << restart;
  }
  dlq.segment()->header().persisted.value.store(1);
  dlq.segment()->header().persisted.synced.store(1);
  ASSERT_TRUE(f.persister->round().ok());
  EXPECT_EQ(f.persisted(), 8u);
  ASSERT_TRUE(f.persister->checkpoint().ok());
  f.fs.crash(FaultFs::CrashMode::drop);
  f.open_wal();
  std::set<std::uint64_t> ids;
  for (const auto& r : f.report.unacked) ids.insert(r.id);
  EXPECT_EQ(ids, (std::set<std::uint64_t>{5, 6, 7, 8}));
}

// A `synced` far below `persisted` (many laps of unsynced writes, or a scribble) is not
// walked a position at a time: below tail - N every slot was claimed again.
TEST(AsyncQueue, ARestartedPersisterSkipsWhatTheRingHasLappedSince) {
  Fixture f(8, Durability::async, FaultFs(), false, std::chrono::hours(1));
  auto p = f.queue.producer().value();
  auto c = f.queue.consumer().value();
  Message m;
  for (int i = 1; i <= 100; ++i) {
    ASSERT_EQ(p.try_send("m", i), Status::ok);
    ASSERT_TRUE(f.persister->round().ok());
    ASSERT_EQ(c.try_receive(m), Status::ok);
    ASSERT_EQ(c.ack(m), Status::ok);
  }
  ASSERT_TRUE(f.persister->round().ok());
  ASSERT_EQ(f.persisted(), 100u);
  ASSERT_EQ(f.synced(), 0u);
  f.open_wal();
  EXPECT_EQ(f.persister->next_to_log(), 92u);  // tail - N, not synced (0)
  ASSERT_TRUE(f.persister->adopt(f.report).ok());
  ASSERT_TRUE(f.persister->round().ok());
  EXPECT_EQ(f.persisted(), 100u);
  ASSERT_TRUE(f.persister->checkpoint().ok());
  f.fs.crash(FaultFs::CrashMode::drop);
  f.open_wal();
  EXPECT_TRUE(f.report.unacked.empty()) << f.report.unacked.size();
}

// The power-loss test of the real persister (what shmqd runs) over the fault-injecting file
// system: a workload of sends, acks, rounds (group commits), segment rotation, checkpoints
// with deletion, and compaction, cut at every file operation; each cut is then turned into
// every state a power loss could leave (unsynced data dropped or garbled, any prefix of the
// directory operations since the last directory fsync). Recovery must return every message
// the persister confirmed (the `persisted` cursor passed it) that was not acked.
struct PowerLossOracle {
  std::set<std::uint64_t> confirmed, acked;  // ids
  std::uint64_t compactions = 0;
};

void power_loss_workload(Fixture& f, PowerLossOracle& o) {
  auto p = f.queue.producer().value();
  auto c = f.queue.consumer().value();
  std::map<std::uint64_t, std::uint64_t> position_of;  // id -> position
  std::vector<Message> held;
  std::uint64_t id = 0;
  for (int step = 0; step < 60; ++step) {
    for (int i = 0; i < 1 + step % 3; ++i) {
      ++id;
      if (p.try_send("message-" + std::to_string(id), id) != Status::ok) break;
    }
    // Log them before a consumer acks them (acked first, they would never be written).
    if (!f.persister->round().ok()) return;
    // Receive what is there; ack all but the first message (held until step 40), so that
    // one live record sits in an old segment while others are acked behind it.
    Message m;
    while (c.try_receive(m) == Status::ok) {
      position_of[m.id()] = m.position();
      if (m.id() == 1) {
        held.push_back(std::move(m));
        continue;
      }
      if (c.ack(m) == Status::ok) o.acked.insert(m.id());
    }
    if (step == 40)
      for (auto& h : held)
        if (c.ack(h) == Status::ok) o.acked.insert(1);
    auto r = f.persister->round();
    if (!r.ok()) return;  // the cut: nothing more reaches the disk
    // On disk: `synced` (the same as `persisted` with a flush interval of 0; with a long one
    // it moves at checkpoints only).
    const std::uint64_t synced = f.synced();
    EXPECT_LE(synced, f.persisted());
    for (const auto& [i, pos] : position_of)
      if (pos < synced) o.confirmed.insert(i);
    o.compactions = f.wal->compactions();
    if (step % 4 == 3) {
      if (!f.persister->checkpoint().ok()) return;
      o.compactions = f.wal->compactions();
    }
  }
}

// flush_interval 0: a sync every round. One hour: an async queue's deferred sync, here at
// the workload's checkpoints only (the file operations of a run stay independent of the
// clock), so that a cut meets written but unsynced records, acks and rotations.
void power_loss_run(std::chrono::milliseconds flush_interval) {
  auto make = [flush_interval](std::uint64_t seed) {
    auto f = std::make_unique<Fixture>(64, Durability::async, FaultFs(seed), false,
                                       flush_interval);
    f->segment_bytes = 256;
    f->open_wal();
    return f;
  };
  std::uint64_t total = 0;
  {
    auto f = make(1);
    PowerLossOracle o;
    power_loss_workload(*f, o);
    total = f->fs.ops();
    std::printf("power-loss workload: %llu file operations, %zu confirmed, %llu compactions\n",
                static_cast<unsigned long long>(total), o.confirmed.size(),
                static_cast<unsigned long long>(o.compactions));
    ASSERT_GT(o.confirmed.size(), 20u);
    EXPECT_GT(o.compactions, 0u) << "the workload must compact";
    EXPECT_GT(f->persister->stats().checkpoints, 0u);
  }
  int cases = 0;
  for (std::uint64_t n = 0; n <= total; ++n) {
    for (auto mode : {FaultFs::CrashMode::drop, FaultFs::CrashMode::garble}) {
      std::size_t pending = 0;
      {
        auto f = make(n + 7);
        f->fs.die_after(n);
        PowerLossOracle o;
        power_loss_workload(*f, o);
        pending = f->fs.pending_dir_ops(kDir);
      }
      for (std::size_t keep = 0; keep <= pending; ++keep) {
        auto f = make(n + 7);
        f->fs.die_after(n);
        PowerLossOracle o;
        power_loss_workload(*f, o);
        f->fs.crash(mode, keep);
        f->persister.reset();
        f->wal.reset();
        log::RecoveryReport r;
        log::WalOptions opts;
        opts.dir = kDir;
        opts.segment_bytes = 256;
        auto w = log::Wal::open(opts, f->fs, r);
        ASSERT_TRUE(w.ok()) << "cut after op " << n << ": " << w.error().message();
        std::set<std::uint64_t> got;
        for (const auto& m : r.unacked) got.insert(m.id);
        for (const std::uint64_t i : o.confirmed) {
          if (o.acked.contains(i)) continue;
          ASSERT_TRUE(got.contains(i)) << "lost confirmed message " << i << " (cut after op "
                                       << n << ", keep " << keep << ")";
        }
        ++cases;
      }
    }
  }
  EXPECT_GT(cases, 100);
}

TEST(PersisterPowerLoss, EveryConfirmedMessageSurvivesAPowerCutAtEveryFileOperation) {
  power_loss_run(std::chrono::milliseconds(0));
}

TEST(PersisterPowerLoss, EverySyncedMessageOfAnAsyncQueueSurvivesAPowerCutAtEveryFileOperation) {
  power_loss_run(std::chrono::hours(1));
}

}  // namespace
}  // namespace shmq
