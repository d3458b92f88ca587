// The persister over the fault-injecting file system: what it confirms (the `persisted`
// cursor) is exactly what is on disk, nothing is confirmed after a failed fdatasync or a
// full disk, acks are journalled, and durable slots are reused only once persisted.
#include <cstring>

#include <gtest/gtest.h>

#include "fault_fs.hpp"
#include "log/wal.hpp"
#include "persist/persister.hpp"
#include "segment/segment.hpp"
#include "test_util.hpp"

namespace shmq {
namespace {

using log::test::FaultFs;
using test::unique_name;

const std::string kDir = "/data/q";

// A durable (async) queue segment; its data dir lives in the fault file system only.
struct Fixture {
  std::string name = unique_name("persist");
  Queue queue;
  std::uint32_t member;
  FaultFs fs;
  log::RecoveryReport report;
  std::unique_ptr<log::Wal> wal;
  std::unique_ptr<detail::Persister> persister;

  explicit Fixture(std::uint32_t slots = 8)
      : queue(Queue::recreate(name,
                              {.slot_count = slots,
                               .slot_size = 128,
                               .durability = Durability::async,
                               .data_dir = "/data"},
                              0)
                  .value()),
        member(queue.segment()->register_member(detail::Role::persister).value()) {
    open_wal();
  }
  ~Fixture() { (void)Queue::remove(name); }
  void open_wal() {
    report = {};
    persister.reset();
    wal.reset();
    log::WalOptions o;
    o.dir = kDir;
    wal = std::move(log::Wal::open(o, fs, report).value());
    persister = std::make_unique<detail::Persister>(queue.segment(), *wal, member);
  }
  std::uint64_t persisted() { return queue.stats().persisted; }
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

}  // namespace
}  // namespace shmq
