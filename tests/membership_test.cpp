// Member rows with generations (issue 10): a member whose row was taken from it (evicted
// while stopped, in heartbeat mode) gets Status::evicted and never touches what the row's
// next occupant holds; a live but idle member keeps its row by the library's heartbeat; a
// member table full of dead rows heals; a stopped elected watchdog loses the election.
// Real processes, real SIGSTOP and SIGKILL.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <set>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "core/slot_ops.hpp"
#include "ring/slot_word.hpp"
#include "segment/segment.hpp"
#include "shmq/shmq.hpp"
#include "test_util.hpp"

namespace shmq {
namespace {

using namespace std::chrono_literals;
using test::spawn;
using test::unique_name;
using test::wait_exit;

// A one-byte channel between the test and a child.
struct Pipe {
  int fd[2] = {-1, -1};
  Pipe() { EXPECT_EQ(::pipe(fd), 0); }
  ~Pipe() {
    for (int f : fd)
      if (f >= 0) ::close(f);
  }
  bool put(char c) { return ::write(fd[1], &c, 1) == 1; }
  // After the fork, in the reader: a writer that exits without writing gives EOF (0), not a
  // read that blocks for ever.
  void reader_only() {
    ::close(fd[1]);
    fd[1] = -1;
  }
  char get() {
    char c = 0;
    return ::read(fd[0], &c, 1) == 1 ? c : char(0);
  }
};

// Polls `done` until it holds or `limit` passes (a condition, not a sleep: the small pause
// only keeps the loop from burning the core the watchdog needs).
template <typename F>
bool eventually(F done, std::chrono::milliseconds limit = 10s) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

bool row_free(Queue& q, std::uint32_t row) {
  return detail::member_status(q.segment()->member(row).state.load()) ==
         detail::MemberStatus::free;
}

TEST(Membership, AStoppedConsumerIsEvictedAndNeverTouchesItsRowsNextOccupant) {
  // The scenario of issue 10: C1 holds m1 and is stopped past the heartbeat timeout; C2
  // gets m1; C3 takes C1's row and holds m3; C1 runs again: every call says evicted, and
  // its close leaves C3's m3 alone.
  const std::string name = unique_name("evict");
  QueueOptions o;
  o.slot_count = 64;
  o.heartbeat_liveness = true;
  o.heartbeat_timeout = 1000ms;  // not reached by a live process on a loaded machine
  ASSERT_TRUE(Queue::create(name, o).ok());
  auto q = Queue::open(name).value();

  // Forked before this process starts any thread (its producer's embedded watchdog): under
  // ASan, a fork while another thread is inside the sanitizer's allocator leaves the child
  // its lock, held for ever (GCC 12's libasan has no fork handler for it). C1 waits for m1.
  Pipe ready, go, row_of;
  const pid_t c1 = spawn([&] {
    auto qq = Queue::open(name);
    if (!qq.ok()) return 2;
    auto c = qq->consumer();
    if (!c.ok()) return 3;
    Message m;
    if (c->receive_for(m, 10s) != Status::ok || m.view() != "m1") return 4;
    if (!row_of.put(static_cast<char>(c->member_index())) || !ready.put('r')) return 5;
    if (go.get() != 'g') return 6;
    // Running again after the eviction.
    if (c->ack(m) != Status::evicted) return 7;
    Message m2;
    if (c->try_receive(m2) != Status::evicted) return 8;
    if (c->receive_for(m2, 50ms) != Status::evicted) return 9;
    return 0;  // closes C1: must leave the row's new occupant alone
  });
  ASSERT_GT(c1, 0);
  auto p = q.producer().value();  // this process also runs the embedded watchdog
  ASSERT_EQ(p.send("m1"), Status::ok);
  row_of.reader_only();
  ready.reader_only();
  const auto c1_row = static_cast<std::uint32_t>(static_cast<unsigned char>(row_of.get()));
  ASSERT_EQ(ready.get(), 'r');
  ASSERT_EQ(::kill(c1, SIGSTOP), 0);

  auto c2 = q.consumer().value();
  Message m1;
  ASSERT_EQ(c2.receive_for(m1, 20s), Status::ok);  // redelivered once C1 was evicted
  EXPECT_EQ(m1.view(), "m1");
  EXPECT_EQ(m1.delivery_count(), 2u);
  ASSERT_TRUE(eventually([&] { return row_free(q, c1_row); }));

  auto c3 = q.consumer().value();
  ASSERT_EQ(c3.member_index(), c1_row);  // the lowest free row: C1's
  ASSERT_EQ(p.send("m3"), Status::ok);
  Message m3;
  ASSERT_EQ(c3.receive_for(m3, 10s), Status::ok);
  EXPECT_EQ(m3.view(), "m3");

  ASSERT_EQ(::kill(c1, SIGCONT), 0);
  ASSERT_TRUE(go.put('g'));
  EXPECT_EQ(wait_exit(c1), 0);

  EXPECT_EQ(c3.ack(m3), Status::ok);  // C1's close did not requeue it
  EXPECT_EQ(c2.ack(m1), Status::ok);
  Message none;
  EXPECT_EQ(c2.try_receive(none), Status::empty);
  ASSERT_TRUE(Queue::remove(name).ok());
}

TEST(Membership, AnIdleConsumerKeepsItsRowByTheLibrarysHeartbeat) {
  // A consumer that makes no call for many heartbeat timeouts (blocked elsewhere) is alive:
  // the library beats for it (here its beat-only thread: this test runs the watchdog itself).
  const std::string name = unique_name("idle");
  QueueOptions o;
  o.slot_count = 64;
  o.heartbeat_liveness = true;
  o.heartbeat_timeout = 500ms;  // beats every 125 ms: a loaded machine stays well inside it
  ASSERT_TRUE(Queue::create(name, o).ok());
  set_embedded_watchdog(false);
  auto q = Queue::open(name).value();
  auto w = Watchdog::attach(q).value();

  // Forked before the watchdog's thread starts (see the test above: ASan and fork).
  Pipe ready, go;
  const pid_t idle = spawn([&] {
    auto qq = Queue::open(name);
    if (!qq.ok()) return 2;
    auto c = qq->consumer();
    if (!c.ok()) return 3;
    if (!ready.put('r')) return 4;
    if (go.get() != 'g') return 5;  // idle: no call into shmq meanwhile
    Message m;
    if (c->receive_for(m, 10s) != Status::ok) return 6;
    return c->ack(m) == Status::ok ? 0 : 7;
  });
  w.start();
  ready.reader_only();
  ASSERT_EQ(ready.get(), 'r');
  // Five heartbeat timeouts pass (a timed wait on an empty queue is this test's clock).
  auto c = q.consumer().value();
  Message m;
  EXPECT_EQ(c.receive_for(m, 2500ms), Status::timeout);
  auto p = q.producer().value();
  ASSERT_EQ(p.send("for the idle one"), Status::ok);
  ASSERT_TRUE(go.put('g'));
  EXPECT_EQ(wait_exit(idle), 0);
  w.stop();
  EXPECT_EQ(w.totals().members_reclaimed, 0u);
  set_embedded_watchdog(true);
  ASSERT_TRUE(Queue::remove(name).ok());
}

TEST(Membership, ATableFullOfDeadRowsHealsOnTheNextRegistration) {
  // Every row taken by killed processes while no watchdog ran (each child opted out): the
  // next registration reclaims them, and what they held is delivered again.
  const std::string name = unique_name("fulltable");
  QueueOptions o;
  o.slot_count = 64;
  o.max_members = 4;
  ASSERT_TRUE(Queue::create(name, o).ok());
  {
    auto q = Queue::open(name).value();
    set_embedded_watchdog(false);
    auto p = q.producer().value();
    for (int i = 0; i < 4; ++i) ASSERT_EQ(p.send("m" + std::to_string(i)), Status::ok);
  }
  std::vector<pid_t> holders;
  for (int i = 0; i < 4; ++i) {
    const pid_t h = test::spawn_holder(name, 1);  // embedded watchdog off: inherited
    ASSERT_GT(h, 0);
    holders.push_back(h);
  }
  set_embedded_watchdog(true);
  auto q = Queue::open(name).value();
  EXPECT_EQ(q.stats().members.size(), 4u);
  for (pid_t h : holders) {
    ASSERT_EQ(::kill(h, SIGKILL), 0);
    EXPECT_EQ(wait_exit(h), 128 + SIGKILL);
  }
  auto c = q.consumer();
  ASSERT_TRUE(c.ok()) << c.error().message();
  std::set<std::string> got;
  for (int i = 0; i < 4; ++i) {
    Message m;
    ASSERT_EQ(c->receive_for(m, 10s), Status::ok);
    got.insert(std::string(m.view()));
    EXPECT_EQ(c->ack(m), Status::ok);
  }
  EXPECT_EQ(got.size(), 4u);
  ASSERT_TRUE(Queue::remove(name).ok());
}

TEST(Membership, RepairReclaimsDeadRowsAndStandsAsideForALiveWatchdog) {
  const std::string name = unique_name("repair");
  QueueOptions o;
  o.slot_count = 64;
  ASSERT_TRUE(Queue::create(name, o).ok());
  set_embedded_watchdog(false);
  auto q = Queue::open(name).value();
  {
    auto p = q.producer().value();
    ASSERT_EQ(p.send("held"), Status::ok);
  }
  {
    // A live elected watchdog: repair leaves the work to it.
    auto w = Watchdog::attach(q).value();
    ASSERT_TRUE(w.tick().active);
    const pid_t h = test::spawn_holder(name, 1);
    ASSERT_GT(h, 0);
    ASSERT_EQ(::kill(h, SIGKILL), 0);
    EXPECT_EQ(wait_exit(h), 128 + SIGKILL);
    const RepairReport r = q.repair();
    EXPECT_TRUE(r.watchdog_running);
    EXPECT_EQ(r.members_reclaimed, 0u);
  }  // closed: resigned
  const RepairReport r = q.repair();
  EXPECT_FALSE(r.watchdog_running);
  EXPECT_EQ(r.redelivered, 1u);
  auto c = q.consumer().value();
  Message m;
  ASSERT_EQ(c.try_receive(m), Status::ok);
  EXPECT_EQ(m.view(), "held");
  EXPECT_EQ(c.ack(m), Status::ok);
  set_embedded_watchdog(true);
  ASSERT_TRUE(Queue::remove(name).ok());
}

TEST(Membership, AStoppedElectedWatchdogLosesTheElection) {
  // Pid liveness: a stopped process is alive, so only its silence can unseat its watchdog.
  const std::string name = unique_name("wdstop");
  QueueOptions o;
  o.slot_count = 64;
  ASSERT_TRUE(Queue::create(name, o).ok());
  set_embedded_watchdog(false);
  auto q = Queue::open(name).value();
  Pipe ready, go;
  const pid_t elected = spawn([&] {
    auto qq = Queue::open(name);
    if (!qq.ok()) return 2;
    auto w = Watchdog::attach(*qq);
    if (!w.ok() || !w->tick().active) return 3;
    w->start();
    if (!ready.put('r')) return 4;
    if (go.get() != 'g') return 5;
    w->stop();
    return w->tick().active ? 6 : 0;  // running again: it stands by
  });
  ready.reader_only();
  ASSERT_EQ(ready.get(), 'r');
  ASSERT_EQ(::kill(elected, SIGSTOP), 0);
  auto standby = Watchdog::attach(q).value();
  ASSERT_TRUE(eventually([&] { return standby.tick().active; }));

  // The new one heals: a consumer killed holding a message.
  {
    auto p = q.producer().value();
    ASSERT_EQ(p.send("x"), Status::ok);
  }
  const pid_t h = test::spawn_holder(name, 1);
  ASSERT_GT(h, 0);
  ASSERT_EQ(::kill(h, SIGKILL), 0);
  EXPECT_EQ(wait_exit(h), 128 + SIGKILL);
  ASSERT_TRUE(eventually([&] { return standby.tick().redelivered == 1; }));

  ASSERT_EQ(::kill(elected, SIGCONT), 0);
  ASSERT_TRUE(go.put('g'));
  EXPECT_EQ(wait_exit(elected), 0);
  set_embedded_watchdog(true);
  ASSERT_TRUE(Queue::remove(name).ok());
}

TEST(Membership, AStateNamingAGenerationItsRowNoLongerHasIsTakenBack) {
  // What an evicted member does after its row was freed and taken again: a claim of a
  // ready message under its old owner id. The watchdog gives it back.
  const std::string name = unique_name("orphan");
  QueueOptions o;
  o.slot_count = 16;
  ASSERT_TRUE(Queue::create(name, o).ok());
  set_embedded_watchdog(false);
  auto q = Queue::open(name).value();
  auto p = q.producer().value();
  auto c = q.consumer().value();
  ASSERT_EQ(p.send("a"), Status::ok);
  detail::Segment& seg = *q.segment();
  const std::uint64_t w = seg.slot(0).word.load();
  ASSERT_EQ(detail::word_state(w), detail::SlotState::ready);
  const std::uint32_t stale_owner =
      detail::owner_id(c.member_index(),
                       detail::member_generation(seg.member(c.member_index()).state.load()) - 1);
  seg.slot(0).word.store(detail::make_word(detail::word_lap(w), detail::SlotState::held,
                                           stale_owner, 1));
  auto wd = Watchdog::attach(q).value();
  EXPECT_EQ(wd.tick().redelivered, 1u);
  Message m;
  ASSERT_EQ(c.try_receive(m), Status::ok);
  EXPECT_EQ(m.view(), "a");
  EXPECT_EQ(c.ack(m), Status::ok);
  set_embedded_watchdog(true);
  ASSERT_TRUE(Queue::remove(name).ok());
}

TEST(Membership, ALateWatchdogRequeueDoesNotCancelADelay) {
  // The watchdog read the held word, then the holder nacked with a delay: the watchdog's
  // requeue (lease expiry) fails and must leave the delay as it is.
  const std::string name = unique_name("delayrace");
  QueueOptions o;
  o.slot_count = 16;
  ASSERT_TRUE(Queue::create(name, o).ok());
  set_embedded_watchdog(false);
  auto q = Queue::open(name).value();
  auto p = q.producer().value();
  auto c = q.consumer().value();
  ASSERT_EQ(p.send("later"), Status::ok);
  Message m;
  ASSERT_EQ(c.try_receive(m), Status::ok);
  detail::Segment& seg = *q.segment();
  const std::uint64_t held = seg.slot(m.position()).word.load();
  const std::uint64_t pos = m.position();
  ASSERT_EQ(c.nack_after(m, 60s), Status::ok);
  const std::uint64_t due = seg.slot(pos).deadline_ns.load();
  EXPECT_FALSE(detail::requeue_held(seg, pos, held, 0));  // the stale watchdog's attempt
  EXPECT_EQ(seg.slot(pos).deadline_ns.load(), due);
  Message again;
  EXPECT_EQ(c.try_receive(again), Status::empty);
  set_embedded_watchdog(true);
  ASSERT_TRUE(Queue::remove(name).ok());
}

}  // namespace
}  // namespace shmq
