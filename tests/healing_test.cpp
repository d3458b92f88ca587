// Healing by default (issue 10): a queue nobody runs a watchdog for heals anyway, because
// every process with a producer or consumer on it runs the library's embedded watchdog
// (elected: one works, the others stand by and take over when it dies).
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <set>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "platform/crash_point.hpp"
#include "shmq/shmq.hpp"
#include "test_util.hpp"

namespace shmq {
namespace {

using namespace std::chrono_literals;
using test::spawn;
using test::unique_name;
using test::wait_exit;

TEST(Healing, ANonDurableQueueWithNoDaemonHealsItselfByDefault) {
  ASSERT_TRUE(embedded_watchdog());  // the default
  const std::string name = unique_name("heal");
  QueueOptions o;
  o.slot_count = 256;
  o.claim_timeout = std::chrono::milliseconds(60'000);  // only death may repair the hole
  ASSERT_TRUE(Queue::create(name, o).ok());

  // A producer sends 100 messages and exits normally.
  const pid_t producer = spawn([&] {
    auto q = Queue::open(name);
    if (!q.ok()) return 2;
    auto p = q->producer();
    if (!p.ok()) return 3;
    for (std::uint64_t i = 1; i <= 100; ++i)
      if (p->send(as_bytes("m" + std::to_string(i)), i) != Status::ok) return 4;
    return 0;
  });
  ASSERT_EQ(wait_exit(producer), 0);

  // A consumer takes 10 and is killed holding them.
  const pid_t holder = test::spawn_holder(name, 10);
  ASSERT_GT(holder, 0);
  ASSERT_EQ(::kill(holder, SIGKILL), 0);
  EXPECT_EQ(wait_exit(holder), 128 + SIGKILL);

  // A producer killed between its claim and its publish leaves a hole.
  const pid_t torn = spawn([&] {
    auto q = Queue::open(name);
    if (!q.ok()) return 2;
    auto p = q->producer();
    if (!p.ok()) return 3;
    detail::arm_crash_point("producer.after_claim", 1);
    (void)p->send(as_bytes("never"), 1000);
    return 6;  // not reached
  });
  EXPECT_EQ(wait_exit(torn), 128 + SIGKILL);

  // A new consumer (which, like every attached process, runs the embedded watchdog): all
  // 100 messages arrive, the 10 held ones redelivered, the hole passed.
  auto q = Queue::open(name).value();
  auto c = q.consumer().value();
  std::set<std::uint64_t> ids;
  int redelivered = 0;
  Message m;
  while (ids.size() < 100 && c.receive_for(m, 10s) == Status::ok) {
    ids.insert(m.id());
    redelivered += m.redelivered();
    ASSERT_EQ(c.ack(m), Status::ok);
  }
  EXPECT_EQ(ids.size(), 100u);
  EXPECT_EQ(redelivered, 10);
  EXPECT_EQ(c.try_receive(m), Status::empty);  // nothing from the torn send
  // The dead rows are freed and the hole repaired too (the messages came back first: wait,
  // bounded, for the rest of the watchdog's work).
  QueueStats s = q.stats();
  for (const auto give_up = std::chrono::steady_clock::now() + 10s;
       (s.members_reclaimed < 2 || s.holes_repaired < 1) &&
       std::chrono::steady_clock::now() < give_up;
       s = q.stats())
    std::this_thread::sleep_for(1ms);  // polling the watchdog's counters
  EXPECT_GE(s.members_reclaimed, 2u);
  EXPECT_GE(s.holes_repaired, 1u);
  EXPECT_TRUE(s.watchdog_active);
  (void)Queue::remove(name);
}

TEST(Healing, TheLastHandleStopsTheEmbeddedWatchdogAndFreesItsRow) {
  const std::string name = unique_name("healrow");
  auto q = Queue::create(name, {}).value();
  {
    auto p = q.producer().value();
    auto c = q.consumer().value();
    const QueueStats s = q.stats();
    int watchdogs = 0;
    for (const auto& mem : s.members) watchdogs += mem.role == "watchdog";
    EXPECT_EQ(watchdogs, 1);  // one per process, shared by its handles
  }
  EXPECT_TRUE(q.stats().members.empty());
  set_embedded_watchdog(false);
  {
    auto p = q.producer().value();
    EXPECT_EQ(q.stats().members.size(), 1u);  // opted out: no watchdog row
  }
  set_embedded_watchdog(true);
  (void)Queue::remove(name);
}

}  // namespace
}  // namespace shmq
