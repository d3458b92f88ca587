// Fencing (issues 10, 11): a member, holder or watchdog that lost what it had, stopped at an
// exact point (SIGSTOP from a stop point) and resumed, changes nothing that is not its own.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "platform/crash_point.hpp"
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

bool wait_stopped(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, WUNTRACED) < 0)
    if (errno != EINTR) return false;
  return WIFSTOPPED(status);
}

template <typename F>
bool eventually(F done, std::chrono::milliseconds limit = 5s) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::sleep_for(2ms);
  }
  return true;
}

// Finding: Watchdog::Impl::beat() writes the heartbeat of its row without checking that the
// row is still its own. A watchdog whose row was taken (evicted while stopped, then freed)
// keeps the row's next occupant "alive" in heartbeat mode: when that occupant dies, it is
// never reclaimed and what it holds is never taken back.
TEST(Fencing, AnEvictedWatchdogKeepsItsRowsNextOccupantAlive) {
  const std::string name = unique_name("zombie");
  QueueOptions o;
  o.slot_count = 16;
  o.heartbeat_liveness = true;
  o.heartbeat_timeout = 200ms;
  ASSERT_TRUE(Queue::create(name, o).ok());
  set_embedded_watchdog(false);
  auto q = Queue::open(name).value();
  detail::Segment& seg = *q.segment();
  auto w = Watchdog::attach(q).value();  // row 0: the elected one
  auto z = Watchdog::attach(q).value();  // row 1: will be evicted
  ASSERT_EQ(detail::member_role(seg.member(1).state.load()), detail::Role::watchdog);
  {
    auto p = q.producer().value();
    ASSERT_EQ(p.send("m"), Status::ok);
  }
  ASSERT_TRUE(w.tick().active);
  // What the elected watchdog does to z's row when z's process was stopped past the
  // heartbeat timeout: active -> leaving -> free.
  std::uint64_t st = seg.member(1).state.load();
  const std::uint64_t leaving = detail::with_status(st, detail::MemberStatus::leaving);
  ASSERT_TRUE(seg.member(1).state.compare_exchange_strong(st, leaving));
  ASSERT_TRUE(seg.free_member(1, leaving));
  // z's process runs again. A consumer process takes row 1, receives "m" and is killed.
  const pid_t y = test::spawn_holder(name, 1);
  ASSERT_GT(y, 0);
  ASSERT_EQ(detail::member_pid(seg.member(1).state.load()), static_cast<std::uint32_t>(y));
  ASSERT_EQ(::kill(y, SIGKILL), 0);
  EXPECT_EQ(wait_exit(y), 128 + SIGKILL);
  // Both watchdogs tick (z stands by). The dead consumer must be reclaimed after about one
  // heartbeat timeout and "m" delivered again.
  std::uint64_t redelivered = 0;
  EXPECT_TRUE(eventually(
      [&] {
        z.tick();
        redelivered += w.tick().redelivered;
        return redelivered != 0;
      },
      2s))
      << "the dead consumer in the evicted watchdog's old row was never reclaimed";
  set_embedded_watchdog(true);
  ASSERT_TRUE(Queue::remove(name).ok());
}

// Finding: Consumer::claim_at writes deadline_ns and delivery_count after its claim CAS
// without re-checking that it still holds the slot. A consumer stopped right after its CAS
// for longer than the lease resumes and writes into the next holder's delivery: the next
// holder's delivery count no longer matches, so its ack says lease_lost although it holds
// the message.
TEST(Fencing, AConsumerStoppedAfterItsClaimBreaksTheNextHoldersAck) {
  const std::string name = unique_name("straydc");
  QueueOptions o;
  o.slot_count = 16;
  o.lease = 100ms;
  ASSERT_TRUE(Queue::create(name, o).ok());
  set_embedded_watchdog(false);
  auto q = Queue::open(name).value();
  auto p = q.producer().value();
  ASSERT_EQ(p.send("m"), Status::ok);
  const pid_t s = spawn([&] {
    auto qq = Queue::open(name);
    if (!qq.ok()) return 2;
    auto c = qq->consumer();
    if (!c.ok()) return 3;
    detail::arm_stop_point("consumer.after_claim", 1);
    Message m;
    const Status st = c->receive_for(m, 500ms);
    return st == Status::timeout ? 0 : 4;  // its claim was taken back: nothing delivered
  });
  ASSERT_GT(s, 0);
  ASSERT_TRUE(wait_stopped(s));
  auto w = Watchdog::attach(q).value();
  ASSERT_TRUE(eventually([&] { return w.tick().leases_expired == 1; })) << (::kill(s, SIGKILL), "");
  auto c2 = q.consumer().value();
  Message m;
  ASSERT_EQ(c2.try_receive(m), Status::ok);
  EXPECT_EQ(m.view(), "m");
  EXPECT_TRUE(m.held());
  ASSERT_EQ(::kill(s, SIGCONT), 0);
  EXPECT_EQ(wait_exit(s), 0);
  EXPECT_TRUE(m.held()) << "the stopped consumer's late store changed c2's delivery";
  EXPECT_EQ(c2.ack(m), Status::ok);
  set_embedded_watchdog(true);
  ASSERT_TRUE(Queue::remove(name).ok());
}

// Finding: the lease-expiry rule ("same held word seen at an earlier tick") still reads the
// previous delivery's deadline when the holder has not written its own yet. A consumer
// preempted for two watchdog ticks (10 ms by default) between its claim CAS and its deadline
// store loses a 30 s lease on a message whose previous deadline has passed (a redelivered
// or delayed one).
TEST(Fencing, ALeaseIsNotExpiredByThePreviousDeliverysDeadline) {
  const std::string name = unique_name("earlylease");
  QueueOptions o;
  o.slot_count = 16;
  o.lease = 30s;
  ASSERT_TRUE(Queue::create(name, o).ok());
  set_embedded_watchdog(false);
  auto q = Queue::open(name).value();
  auto p = q.producer().value();
  ASSERT_EQ(p.send("m"), Status::ok);
  {
    auto c0 = q.consumer().value();
    Message m;
    ASSERT_EQ(c0.try_receive(m), Status::ok);
    ASSERT_EQ(c0.nack_after(m, 1ms), Status::ok);  // its deadline: 1 ms from now
  }
  std::this_thread::sleep_for(20ms);  // let the delay pass (a duration, not a sync)
  const pid_t s = spawn([&] {
    auto qq = Queue::open(name);
    if (!qq.ok()) return 2;
    auto c = qq->consumer();
    if (!c.ok()) return 3;
    detail::arm_stop_point("consumer.after_claim", 1);
    Message m;
    (void)c->receive_for(m, 500ms);
    return 0;
  });
  ASSERT_GT(s, 0);
  ASSERT_TRUE(wait_stopped(s));
  auto w = Watchdog::attach(q).value();
  std::uint64_t expired = 0;
  for (int i = 0; i < 3; ++i) {
    expired += w.tick().leases_expired;
    std::this_thread::sleep_for(5ms);  // the watchdog's interval
  }
  EXPECT_EQ(expired, 0u) << "a 30 s lease expired within three ticks";
  ASSERT_EQ(::kill(s, SIGCONT), 0);
  EXPECT_EQ(wait_exit(s), 0);
  set_embedded_watchdog(true);
  ASSERT_TRUE(Queue::remove(name).ok());
}

}  // namespace
}  // namespace shmq
