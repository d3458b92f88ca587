// The watchdog and the delivery policy: real processes killed with SIGKILL (some at exact
// crash points compiled into this test's build of the library), leases, delayed nacks,
// dead letters, TTL, election.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "shmq/watchdog.hpp"

#include "platform/crash_point.hpp"
#include "platform/process.hpp"
#include "ring/slot_word.hpp"
#include "segment/segment.hpp"
#include "test_util.hpp"

namespace shmq {

// These tests drive watchdogs tick by tick and check what the elected one did: no
// embedded watchdog (healing by default) may be elected in their place.
const bool kNoEmbeddedWatchdog = (set_embedded_watchdog(false), true);
namespace {

using test::ScopedQueue;
using test::spawn;
using test::wait_exit;
using namespace std::chrono_literals;

// A pipe a child writes one byte to when it reached the state the parent waits for.
class Signal {
 public:
  Signal() { EXPECT_EQ(::pipe(fd_), 0); }
  ~Signal() {
    ::close(fd_[0]);
    ::close(fd_[1]);
  }
  void notify() { (void)!::write(fd_[1], "x", 1); }
  // Blocks until notified; false if every writer closed first (the child died before).
  bool wait() {
    ::close(fd_[1]);
    fd_[1] = -1;
    char c;
    return ::read(fd_[0], &c, 1) == 1;
  }

 private:
  int fd_[2] = {-1, -1};
};

void kill_and_reap(pid_t pid) {
  ::kill(pid, SIGKILL);
  EXPECT_EQ(wait_exit(pid), 128 + SIGKILL);
}

// Ticks until `done(report)` or a hang guard of 10 s; returns whether `done` held.
template <typename Done>
bool tick_until(Watchdog& w, Done&& done) {
  const auto give_up = std::chrono::steady_clock::now() + 10s;
  while (std::chrono::steady_clock::now() < give_up) {
    if (done(w.tick())) return true;
    std::this_thread::yield();
  }
  return false;
}

std::vector<std::string> drain(Consumer& c, std::vector<std::uint32_t>* counts = nullptr) {
  std::vector<std::string> got;
  Message m;
  while (c.try_receive(m) == Status::ok) {
    got.emplace_back(m.view());
    if (counts != nullptr) counts->push_back(m.delivery_count());
    EXPECT_EQ(c.ack(m), Status::ok);
  }
  return got;
}

// An elected watchdog beats once a tick, and a standby takes over from one whose beat is
// older than the takeover time (1 s by pid, the heartbeat timeout in heartbeat mode): ticks
// that far apart made the role change hands between them. Refused, with the bound in the
// message; the embedded watchdog of a queue with a short heartbeat timeout ticks faster.
TEST(Watchdog, AnIntervalAsLongAsTheTakeoverTimeIsRefused) {
  ScopedQueue q("wd-interval");
  auto bad = Watchdog::attach(*q, {.interval = 600ms});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code(), Errc::invalid_argument);
  EXPECT_NE(bad.error().message().find("500 ms"), std::string::npos) << bad.error().message();
  EXPECT_TRUE(Watchdog::attach(*q, {.interval = 500ms}).ok());
  ScopedQueue hb("wd-interval-hb", {.heartbeat_liveness = true, .heartbeat_timeout = 40ms});
  EXPECT_FALSE(Watchdog::attach(*hb, {.interval = 21ms}).ok());
  EXPECT_TRUE(Watchdog::attach(*hb, {.interval = 20ms}).ok());
  ScopedQueue tiny("wd-interval-tiny", {.heartbeat_liveness = true, .heartbeat_timeout = 4ms});
  EXPECT_TRUE(Watchdog::attach(*tiny).ok());  // the default, shortened to 1 ms
}

// A producer whose claim the watchdog repairs (stalled past the claim timeout: a hole)
// sends again at a new position. If every claim is repaired, a try_send must still not
// block: it gives up after 4 repaired claims with `full` (it used to retry for ever). Here
// the producer stops itself (SIGSTOP) before each publish and the test repairs the claim.
TEST(Watchdog, ATrySendWhoseClaimsAreAllRepairedReturns) {
  ScopedQueue q("wd-repaired-claims", {.claim_timeout = 1ms});
  const pid_t child = spawn([&] {
    set_embedded_watchdog(false);
    auto p = q->producer().value();
    detail::arm_stop_point_every("producer.before_publish");
    return p.try_send("x") == Status::full ? 0 : 1;
  });
  struct Reap {  // a failed assertion must not leave the child stopped for ever
    pid_t pid;
    bool done = false;
    ~Reap() {
      if (!done) {
        ::kill(pid, SIGKILL);
        (void)test::wait_exit(pid);
      }
    }
  } reap{child};
  auto w = Watchdog::attach(*q).value();
  int stops = 0;
  int status = 0;
  for (;;) {
    ASSERT_EQ(::waitpid(child, &status, WUNTRACED), child);
    reap.done = !WIFSTOPPED(status);
    if (!WIFSTOPPED(status)) break;
    ++stops;
    ASSERT_LE(stops, 8) << "try_send kept sending again";
    // Repair its claim: a hole once the claim is older than the claim timeout.
    std::uint64_t repaired = 0;
    const std::uint64_t since = detail::monotonic_coarse_ns();
    while (repaired == 0 && detail::monotonic_coarse_ns() < since + 5'000'000'000)
      repaired += w.tick().holes_repaired;
    ASSERT_EQ(repaired, 1u);
    ::kill(child, SIGCONT);
  }
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_EQ(stops, 5);  // the first claim and four more
}

TEST(Watchdog, KilledConsumersMessagesAreRedeliveredToAnother) {
  ScopedQueue q("wd-deadcons");
  auto p = q->producer().value();
  for (int i = 0; i < 8; ++i) ASSERT_EQ(p.send("m" + std::to_string(i)), Status::ok);
  Signal holding;
  const pid_t child = spawn([&] {
    auto cq = Queue::open(q.name());
    auto c = cq->consumer().value();
    std::vector<Message> ms(5);
    for (auto& m : ms)
      if (c.try_receive(m) != Status::ok) return 1;
    holding.notify();
    ::pause();  // holds five unacked messages until killed
    return 0;
  });
  ASSERT_TRUE(holding.wait());
  auto live = q->consumer().value();
  EXPECT_EQ(drain(live).size(), 3u);  // the other three
  kill_and_reap(child);

  auto w = Watchdog::attach(*q).value();
  const WatchdogReport r = w.tick();
  EXPECT_TRUE(r.active);
  EXPECT_EQ(r.members_reclaimed, 1u);
  EXPECT_EQ(r.redelivered, 5u);
  std::vector<std::uint32_t> counts;
  auto got = drain(live, &counts);
  std::sort(got.begin(), got.end());
  EXPECT_EQ(got, (std::vector<std::string>{"m0", "m1", "m2", "m3", "m4"}));
  for (auto dc : counts) EXPECT_EQ(dc, 2u);
  const QueueStats s = q->stats();
  EXPECT_EQ(s.consumers, 1u);  // the dead one's row was freed
  EXPECT_EQ(s.redelivered, 5u);
  EXPECT_EQ(s.members_reclaimed, 1u);
}

TEST(Watchdog, ZombieConsumerCountsAsDead) {
  // Killed but not yet reaped by its parent: the pid still exists, the process does not run.
  ScopedQueue q("wd-zombie");
  auto p = q->producer().value();
  ASSERT_EQ(p.send("z"), Status::ok);
  Signal holding;
  const pid_t child = spawn([&] {
    auto c = Queue::open(q.name())->consumer().value();
    Message m;
    if (c.try_receive(m) != Status::ok) return 1;
    holding.notify();
    ::pause();
    return 0;
  });
  ASSERT_TRUE(holding.wait());
  ::kill(child, SIGKILL);
  siginfo_t info{};
  ASSERT_EQ(::waitid(P_PID, static_cast<id_t>(child), &info, WEXITED | WNOWAIT), 0);  // zombie
  auto w = Watchdog::attach(*q).value();
  EXPECT_EQ(w.tick().redelivered, 1u);
  EXPECT_EQ(wait_exit(child), 128 + SIGKILL);
}

TEST(Watchdog, ConsumerKilledInsideReceiveLosesNothing) {
  ScopedQueue q("wd-inrecv");
  auto p = q->producer().value();
  ASSERT_EQ(p.send("a"), Status::ok);
  ASSERT_EQ(p.send("b"), Status::ok);
  const pid_t child = spawn([&] {
    auto c = Queue::open(q.name())->consumer().value();
    Message m;
    if (c.try_receive(m) != Status::ok) return 1;
    detail::arm_crash_point("consumer.after_claim", 1);  // dies holding "b", mid-receive
    Message second;
    (void)c.try_receive(second);
    return 2;
  });
  EXPECT_EQ(wait_exit(child), 128 + SIGKILL);
  auto w = Watchdog::attach(*q).value();
  EXPECT_EQ(w.tick().redelivered, 2u);
  auto c = q->consumer().value();
  auto got = drain(c);
  std::sort(got.begin(), got.end());
  EXPECT_EQ(got, (std::vector<std::string>{"a", "b"}));
}

// Issue 16: a batch takes a run of ready messages and moves dispatch once, after the run. A
// consumer killed in the middle of the run (right after its fourth claim) holds four and had
// not moved dispatch: the watchdog takes them back and every message is delivered.
TEST(Watchdog, ConsumerKilledInTheMiddleOfABatchRunLosesNothing) {
  ScopedQueue q("wd-batchrun");
  auto p = q->producer().value();
  for (int i = 0; i < 10; ++i) ASSERT_EQ(p.send("m" + std::to_string(i)), Status::ok);
  const pid_t child = spawn([&] {
    auto c = Queue::open(q.name())->consumer().value();
    std::vector<Message> ms(10);
    detail::arm_crash_point("consumer.after_claim", 4);  // dies after its fourth claim
    (void)c.receive_batch(ms, std::chrono::seconds(1));
    return 2;
  });
  EXPECT_EQ(wait_exit(child), 128 + SIGKILL);
  EXPECT_EQ(q->stats().dispatch, 0u) << "the run's single dispatch move never happened";
  auto w = Watchdog::attach(*q).value();
  EXPECT_EQ(w.tick().redelivered, 4u);
  auto c = q->consumer().value();
  auto got = drain(c);
  std::sort(got.begin(), got.end());
  std::vector<std::string> want;
  for (int i = 0; i < 10; ++i) want.push_back("m" + std::to_string(i));
  std::sort(want.begin(), want.end());
  EXPECT_EQ(got, want);
}

TEST(Watchdog, ConsumerKilledHalfwayThroughALargeAckIsFinished) {
  ScopedQueue q("wd-bigack", {.slot_count = 8, .slot_size = 128, .max_message_size = 400});
  auto p = q->producer().value();
  ASSERT_EQ(p.send(std::string(300, 'L')), Status::ok);  // 5 slots
  const pid_t child = spawn([&] {
    auto c = Queue::open(q.name())->consumer().value();
    Message m;
    if (c.try_receive(m) != Status::ok) return 1;
    detail::arm_crash_point("release.after_releasing", 1);
    (void)c.ack(m);
    return 2;
  });
  EXPECT_EQ(wait_exit(child), 128 + SIGKILL);
  auto w = Watchdog::attach(*q).value();
  w.tick();
  // The acked message's slots are all free again: 8 one-slot messages fit.
  for (int i = 0; i < 8; ++i) EXPECT_EQ(p.try_send("x"), Status::ok) << i;
  auto c = q->consumer().value();
  EXPECT_EQ(drain(c).size(), 8u);  // and the acked one is not delivered again
}

// A producer killed in the middle of relocating a requeued message (issue 11) leaves it
// relocating (or relocated but not marked): the watchdog finishes the move, and the message
// is delivered as it was (bytes, id, count; a checksummed queue's seal valid for the new
// position, so it is not taken for corrupt), its three slots moved whole.
class DeadRelocator : public ::testing::TestWithParam<const char*> {};

TEST_P(DeadRelocator, MessageIsStillDeliveredUnchanged) {
  ScopedQueue q("wd-reloc", {.slot_count = 8,
                             .slot_size = 128,
                             .max_message_size = 300,
                             .checksum = true});
  auto p = q->producer().value();
  auto c = q->consumer().value();
  const std::string parked(150, 'P');  // 3 slots
  ASSERT_EQ(p.send(parked, 77), Status::ok);
  Message m;
  ASSERT_EQ(c.try_receive(m), Status::ok);
  ASSERT_EQ(c.nack(m), Status::ok);  // ready at 0, behind dispatch
  for (int i = 0; i < 5; ++i) ASSERT_EQ(p.try_send("x"), Status::ok);  // positions 3..7
  std::vector<Message> got(6);  // the requeued message first, then the five
  for (Message& f : got) ASSERT_EQ(c.try_receive(f), Status::ok);
  ASSERT_EQ(got[0].id(), 77u);
  for (int i = 1; i < 6; ++i) ASSERT_EQ(c.ack(got[i]), Status::ok);
  ASSERT_EQ(c.nack(got[0]), Status::ok);  // behind dispatch (8) again, every other slot free
  const char* point = GetParam();
  const pid_t child = spawn([&] {
    auto pr = Queue::open(q.name())->producer().value();
    detail::arm_crash_point(point, 1);
    (void)pr.try_send("new");  // laps the requeued message at 0: relocates it to 8
    return 2;
  });
  EXPECT_EQ(wait_exit(child), 128 + SIGKILL);
  auto w = Watchdog::attach(*q).value();
  for (int i = 0; i < 3; ++i) w.tick();
  Message again;
  ASSERT_EQ(c.receive_for(again, 10s), Status::ok);
  EXPECT_EQ(again.view(), parked);
  EXPECT_EQ(again.id(), 77u);
  EXPECT_EQ(again.delivery_count(), 3u);
  EXPECT_EQ(again.position(), 8u);
  ASSERT_EQ(c.ack(again), Status::ok);
  Message none;
  EXPECT_EQ(c.try_receive(none), Status::empty);
  EXPECT_EQ(q->stats().corrupt, 0u);
  // Its slots are whole again: the ring takes eight one-slot messages.
  for (int i = 0; i < 8; ++i) EXPECT_EQ(p.try_send("y"), Status::ok) << i;
}

INSTANTIATE_TEST_SUITE_P(Watchdog, DeadRelocator,
                         ::testing::Values("producer.after_relocate", "relocate.before_mark"));

class DeadProducer : public ::testing::TestWithParam<const char*> {};

TEST_P(DeadProducer, HoleIsRepairedAndConsumersGoOn) {
  ScopedQueue q("wd-deadprod", {.slot_count = 16, .slot_size = 128, .max_message_size = 500});
  const char* point = GetParam();
  const pid_t child = spawn([&] {
    auto pr = Queue::open(q.name())->producer().value();
    if (pr.send("before") != Status::ok) return 1;
    detail::arm_crash_point(point, 1);
    (void)pr.send(std::string(200, 'H'));  // 4 slots; dies in the middle of it
    return 2;
  });
  EXPECT_EQ(wait_exit(child), 128 + SIGKILL);
  auto c = q->consumer().value();
  Message m;
  ASSERT_EQ(c.try_receive(m), Status::ok);
  EXPECT_EQ(m.view(), "before");
  ASSERT_EQ(c.ack(m), Status::ok);
  EXPECT_EQ(c.try_receive(m), Status::empty);  // wedged behind the dead claim

  auto w = Watchdog::attach(*q).value();
  const WatchdogReport r = w.tick();
  EXPECT_EQ(r.holes_repaired, 1u);
  EXPECT_EQ(r.members_reclaimed, 1u);
  auto p = q->producer().value();
  for (int i = 0; i < 20; ++i) {  // wraps the ring over the repaired slots
    ASSERT_EQ(p.try_send("after" + std::to_string(i)), Status::ok) << i;
    ASSERT_EQ(c.try_receive(m), Status::ok) << i;
    EXPECT_EQ(m.view(), "after" + std::to_string(i));  // the torn message never shows
    ASSERT_EQ(c.ack(m), Status::ok);
  }
}

INSTANTIATE_TEST_SUITE_P(CrashPoints, DeadProducer,
                         ::testing::Values("producer.after_claim", "producer.mid_write",
                                           "producer.before_publish"));

TEST(Watchdog, StalledProducersClaimBecomesAHoleAndItsCommitFails) {
  ScopedQueue q("wd-stall", {.slot_count = 4, .claim_timeout = 1ms});
  auto p = q->producer().value();
  auto c = q->consumer().value();
  Reservation r;
  ASSERT_EQ(p.try_reserve(5, r), Status::ok);
  std::memcpy(r.data().data(), "stall", 5);
  auto w = Watchdog::attach(*q).value();
  ASSERT_TRUE(tick_until(w, [](const WatchdogReport& rep) { return rep.holes_repaired == 1; }));
  ASSERT_EQ(p.try_send("next"), Status::ok);
  Message m;
  ASSERT_EQ(c.try_receive(m), Status::ok);  // consumers pass the hole
  EXPECT_EQ(m.view(), "next");
  ASSERT_EQ(c.ack(m), Status::ok);
  // The slow producer comes back: its commit fails, nothing of it is delivered, and the
  // slot is given back.
  EXPECT_EQ(p.commit(r), Status::lease_lost);
  EXPECT_EQ(c.try_receive(m), Status::empty);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(p.try_send("f"), Status::ok);
}

TEST(Watchdog, ExpiredLeaseIsRedeliveredAndTheLateAckIsRefused) {
  ScopedQueue q("wd-lease", {.lease = 1ms});
  auto p = q->producer().value();
  auto slow = q->consumer().value();
  auto other = q->consumer().value();
  ASSERT_EQ(p.send("work"), Status::ok);
  Message m;
  ASSERT_EQ(slow.try_receive(m), Status::ok);
  auto w = Watchdog::attach(*q).value();
  ASSERT_TRUE(tick_until(w, [](const WatchdogReport& r) { return r.leases_expired == 1; }));
  Message again;
  ASSERT_EQ(other.try_receive(again), Status::ok);
  EXPECT_EQ(again.view(), "work");
  EXPECT_EQ(again.delivery_count(), 2u);
  EXPECT_EQ(slow.ack(m), Status::lease_lost);
  EXPECT_EQ(other.ack(again), Status::ok);
}

// A consumer killed between its nack's CAS (the message is ready again) and its mark in the
// requeue map: no consumer walks the ring any more, so the watchdog finds the
// unmarked message behind dispatch and marks it.
TEST(Watchdog, ARequeueWhoseMarkWasLostToACrashIsMarkedByTheWatchdog) {
  ScopedQueue q("wd-lostmark", {.slot_count = 4096, .slot_size = 128});
  auto p = q->producer().value();
  ASSERT_EQ(p.send("bounced"), Status::ok);
  const pid_t child = spawn([&] {
    auto cq = Queue::open(q.name());
    auto cp = cq->producer().value();
    auto c = cq->consumer().value();
    Message m;
    if (c.try_receive(m) != Status::ok) return 1;
    // Dispatch moves on, so that "bounced" is not among the positions just behind it
    // (which consumers also look at).
    for (int i = 0; i < 3; ++i) {
      Message other;
      if (cp.send("other") != Status::ok || c.try_receive(other) != Status::ok ||
          c.ack(other) != Status::ok)
        return 2;
    }
    detail::arm_crash_point("requeue.before_mark", 1);
    (void)c.nack(m);
    return 3;
  });
  EXPECT_EQ(wait_exit(child), 128 + SIGKILL);
  auto c = q->consumer().value();
  Message m;
  EXPECT_EQ(c.try_receive(m), Status::empty);  // "bounced" is ready, behind dispatch, unmarked
  auto w = Watchdog::attach(*q).value();
  EXPECT_TRUE(w.tick().active);
  ASSERT_EQ(c.try_receive(m), Status::ok);
  EXPECT_EQ(m.view(), "bounced");
  EXPECT_EQ(m.delivery_count(), 2u);
  EXPECT_EQ(c.ack(m), Status::ok);
}

// On a big ring whose window is the whole ring (a message held at its bottom, the rest of
// the ring gone round behind it, another held at its top), the watchdog, once it has looked
// at every position (a few ticks), looks only at the live ones: both expired leases are
// found in one tick.
TEST(Watchdog, ExpiredLeasesAtBothEndsOfABigRingAreFoundInOneTick) {
  constexpr std::uint32_t kSlots = 1u << 18;  // 8 ticks' worth of new positions
  ScopedQueue q("wd-bigwindow", {.slot_count = kSlots, .slot_size = 128, .lease = 1h});
  auto p = q->producer().value();
  auto holder = q->consumer().value();
  auto other = q->consumer().value();
  ASSERT_EQ(p.send("old"), Status::ok);
  Message old;
  ASSERT_EQ(holder.try_receive(old), Status::ok);
  std::vector<Bytes> batch(256, as_bytes("x"));
  std::vector<Message> in(256);
  for (std::uint32_t sent = 1; sent + 256 < kSlots; sent += 256) {
    ASSERT_EQ(p.send_batch(batch, 1s), 256u);
    for (std::size_t got = 0; got < 256;)
      got += other.receive_batch({in.data() + got, 256 - got}, 1s);
    ASSERT_EQ(other.ack(in), Status::ok);
  }
  ASSERT_EQ(p.send("young"), Status::ok);
  Message young;
  ASSERT_EQ(holder.try_receive(young), Status::ok);  // held at the far end of the window
  auto w = Watchdog::attach(*q).value();
  for (int i = 0; i < 20; ++i) ASSERT_EQ(w.tick().leases_expired, 0u);
  // Both leases end now (white box: the test does not wait an hour): a 1 ms lease, whose
  // time has passed since the watchdog first saw both held words (20 ticks looked at every
  // position), and deadlines in the past.
  ASSERT_TRUE(q->set_policy({.lease = 1ms}).ok());
  for (const auto t0 = std::chrono::steady_clock::now();
       std::chrono::steady_clock::now() - t0 < 2ms;)
    std::this_thread::yield();
  q->segment()->slot(young.position()).deadline_ns.store(1);
  q->segment()->slot(old.position()).deadline_ns.store(1);
  EXPECT_EQ(w.tick().leases_expired, 2u);
  EXPECT_EQ(holder.ack(young), Status::lease_lost);
  EXPECT_EQ(holder.ack(old), Status::lease_lost);
  EXPECT_EQ(drain(other).size(), 2u);
}

// The elected watchdog of an empty ring sleeps on the consumers' wait line (a timed tick
// every 5 ms costs about 1% of a core); the first send wakes it, and a consumer that then
// dies holding the message loses it to redelivery as before.
TEST(Watchdog, AnIdleWatchdogSleepsUntilTheFirstSendAndStillHeals) {
  ScopedQueue q("wd-idle", {.slot_count = 1024, .slot_size = 128});
  auto w = Watchdog::attach(*q).value();
  std::uint32_t row = UINT32_MAX;
  for (const auto& m : q->stats().members)
    if (m.role == "watchdog") row = m.index;
  ASSERT_LT(row, 64u * 4);
  auto& bits = q->segment()->header().consumers_wait.waiting[row / 64];
  const std::uint64_t bit = std::uint64_t{1} << (row % 64);
  // The child that will hold the message is forked before the watchdog's thread starts:
  // under ASan (GCC 12's libasan has no fork handler for its allocator) a fork while that
  // thread allocates can leave the child waiting for the allocator's lock for ever.
  Signal sent, holding;
  const pid_t child = spawn([&] {
    if (!sent.wait()) return 2;
    auto c = Queue::open(q.name())->consumer().value();
    Message m;
    if (c.try_receive(m) != Status::ok) return 1;
    holding.notify();
    ::pause();
    return 0;
  });
  w.start();
  // Asleep: its bit is set (a hang guard, not a timing assertion).
  const auto give_up = std::chrono::steady_clock::now() + 10s;
  while ((bits.load() & bit) == 0 && std::chrono::steady_clock::now() < give_up)
    std::this_thread::yield();
  ASSERT_NE(bits.load() & bit, 0u) << "the watchdog of an empty ring did not go to sleep";
  auto p = q->producer().value();
  ASSERT_EQ(p.send("x"), Status::ok);
  EXPECT_EQ(bits.load() & bit, 0u) << "the send did not wake the watchdog";
  sent.notify();
  ASSERT_TRUE(holding.wait());
  kill_and_reap(child);
  auto live = q->consumer().value();
  Message m;
  ASSERT_EQ(live.receive_for(m, 10s), Status::ok);
  EXPECT_EQ(m.view(), "x");
  EXPECT_EQ(m.delivery_count(), 2u);
  EXPECT_EQ(live.ack(m), Status::ok);
}

// A standby sleeps on the elected watchdog's process (a pidfd), not only on its interval:
// when that process dies, the standby takes over at once, even with an interval of an hour.
TEST(Watchdog, AStandbyTakesOverAsSoonAsTheElectedWatchdogsProcessDies) {
  ScopedQueue q("wd-pidfd");
  Signal elected;
  const pid_t child = spawn([&] {
    auto cq = Queue::open(q.name());
    auto w = Watchdog::attach(*cq).value();
    if (!w.tick().active) return 1;
    elected.notify();
    ::pause();
    return 0;
  });
  ASSERT_TRUE(elected.wait());
  auto w = Watchdog::attach(*q, {.interval = 5ms, .standby_interval = 1h}).value();
  w.start();
  kill_and_reap(child);
  // A hang guard, not a timing assertion: without the pidfd this would take an hour.
  const auto give_up = std::chrono::steady_clock::now() + 10s;
  while (!w.totals().active && std::chrono::steady_clock::now() < give_up)
    std::this_thread::yield();
  EXPECT_TRUE(w.totals().active) << "the standby did not take over";
}

TEST(Watchdog, ExtendedLeaseIsNotTakenBack) {
  ScopedQueue q("wd-extend", {.lease = 20ms});
  auto p = q->producer().value();
  auto c = q->consumer().value();
  ASSERT_EQ(p.send("long job"), Status::ok);
  Message m;
  ASSERT_EQ(c.try_receive(m), Status::ok);
  ASSERT_EQ(c.extend_lease(m, 1h), Status::ok);
  auto w = Watchdog::attach(*q).value();
  // Tick for several original lease periods: nothing may expire.
  const auto until = std::chrono::steady_clock::now() + 100ms;
  std::uint64_t expired = 0;
  while (std::chrono::steady_clock::now() < until) expired += w.tick().leases_expired;
  EXPECT_EQ(expired, 0u);
  EXPECT_EQ(c.ack(m), Status::ok);
}

TEST(Watchdog, NackWithDelayIsNotRedeliveredBeforeTheDelay) {
  ScopedQueue q("wd-delay");
  auto p = q->producer().value();
  auto c = q->consumer().value();
  ASSERT_EQ(p.send("retry me"), Status::ok);
  Message m;
  ASSERT_EQ(c.try_receive(m), Status::ok);
  const auto nacked = std::chrono::steady_clock::now();
  ASSERT_EQ(c.nack_after(m, 50ms), Status::ok);
  EXPECT_EQ(c.try_receive(m), Status::empty);
  EXPECT_EQ(q->stats().delayed, 1u);
  ASSERT_EQ(c.receive_for(m, 10s), Status::ok);  // sleeps until it is due
  EXPECT_GE(std::chrono::steady_clock::now() - nacked, 50ms);
  EXPECT_EQ(m.view(), "retry me");
  EXPECT_EQ(m.delivery_count(), 2u);
  EXPECT_EQ(c.ack(m), Status::ok);
}

TEST(Watchdog, DefaultBackoffDoublesAndIsCapped) {
  ScopedQueue q("wd-backoff", {.backoff_initial = 100ms, .backoff_max = 300ms});
  auto p = q->producer().value();
  auto c = q->consumer().value();
  ASSERT_EQ(p.send("x"), Status::ok);
  auto& hdr = q->segment()->slot(0);
  for (std::uint64_t expected_ms : {100u, 200u, 300u, 300u}) {
    Message m;
    // Make the delayed message due at once (white box), so the test does not wait.
    if (detail::word_state(hdr.word.load()) == detail::SlotState::delayed) hdr.deadline_ns.store(1);
    ASSERT_EQ(c.receive_for(m, 10s), Status::ok);
    const std::uint64_t before = detail::monotonic_coarse_ns();
    ASSERT_EQ(c.nack(m), Status::ok);
    const std::uint64_t delay = hdr.deadline_ns.load() - before;
    EXPECT_GE(delay + 5'000'000, expected_ms * 1'000'000) << expected_ms;
    // Upper bound loose enough for a descheduled test thread, tight enough to tell the steps
    // (100, 200, 300 ms) apart.
    EXPECT_LE(delay, expected_ms * 1'000'000 + 40'000'000) << expected_ms;
  }
}

TEST(Watchdog, MaxDeliveriesSendsToTheDeadLetterQueueWithTheReason) {
  ScopedQueue q("wd-maxdel", {.max_deliveries = 2});
  auto p = q->producer().value();
  auto c = q->consumer().value();
  ASSERT_EQ(p.send("poison", 4242), Status::ok);
  Message m;
  std::uint32_t last_count = 0;
  for (int i = 0; i < 2; ++i) {
    ASSERT_EQ(c.try_receive(m), Status::ok);
    last_count = m.delivery_count();
    ASSERT_EQ(c.nack(m), Status::ok);
  }
  EXPECT_EQ(last_count, 2u);
  EXPECT_EQ(c.try_receive(m), Status::empty);  // a third delivery would be one too many
  auto dlq = Queue::open(Queue::dead_letter_name(q.name()));
  ASSERT_TRUE(dlq.ok()) << dlq.error().message();
  auto dc = dlq->consumer().value();
  ASSERT_EQ(dc.try_receive(m), Status::ok);
  const auto dl = parse_dead_letter(m.data());
  ASSERT_TRUE(dl.has_value());
  EXPECT_EQ(dl->reason, DeadLetterReason::max_deliveries);
  // The envelope counts deliveries as delivery_count() does: delivered twice, it says 2.
  EXPECT_EQ(dl->delivery_count, last_count);
  EXPECT_EQ(dl->original_position, 0u);
  EXPECT_EQ(dl->original_id, 4242u);
  EXPECT_EQ(m.id(), 4242u);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(dl->payload.data()), dl->payload.size()),
            "poison");
  EXPECT_EQ(q->stats().dead_lettered, 1u);
  (void)Queue::remove(Queue::dead_letter_name(q.name()));
}

TEST(Watchdog, ADeadLetterQueueRemovedAndCreatedAgainGetsTheNextDeadLetters) {
  ScopedQueue q("wd-dlq-again");
  auto p = q->producer().value();
  auto c = q->consumer().value();
  ASSERT_EQ(p.send("first", 1), Status::ok);
  ASSERT_EQ(p.send("second", 2), Status::ok);
  Message m;
  ASSERT_EQ(c.try_receive(m), Status::ok);
  ASSERT_EQ(c.nack(m, /*requeue=*/false), Status::ok);  // the consumer's sink opens the DLQ
  // The DLQ is deleted and made again (as shmqctl delete QUEUE.dlq, then a new one).
  const std::string dlq = Queue::dead_letter_name(q.name());
  ASSERT_TRUE(Queue::remove(dlq).ok());
  ASSERT_TRUE(Queue::create(dlq, {.dead_letter = false}).ok());
  ASSERT_EQ(c.try_receive(m), Status::ok);
  ASSERT_EQ(c.nack(m, /*requeue=*/false), Status::ok);
  // The second dead letter is in the new DLQ, not in the unlinked old segment.
  auto dc = Queue::open(dlq)->consumer().value();
  ASSERT_EQ(dc.try_receive(m), Status::ok);
  EXPECT_EQ(parse_dead_letter(m.data())->original_id, 2u);
  EXPECT_EQ(dc.ack(m), Status::ok);
}

TEST(Watchdog, RejectedMessageIsDeadLettered) {
  ScopedQueue q("wd-reject");
  auto p = q->producer().value();
  auto c = q->consumer().value();
  ASSERT_EQ(p.send("bad"), Status::ok);
  Message m;
  ASSERT_EQ(c.try_receive(m), Status::ok);
  ASSERT_EQ(m.delivery_count(), 1u);
  ASSERT_EQ(c.nack(m, /*requeue=*/false), Status::ok);
  auto dc = Queue::open(Queue::dead_letter_name(q.name()))->consumer().value();
  ASSERT_EQ(dc.try_receive(m), Status::ok);
  EXPECT_EQ(parse_dead_letter(m.data())->reason, DeadLetterReason::rejected);
  EXPECT_EQ(parse_dead_letter(m.data())->delivery_count, 1u);  // as delivery_count() said
  (void)Queue::remove(Queue::dead_letter_name(q.name()));
}

// Each expired message a consumer meets costs a send to the dead-letter queue: one call
// dead-letters at most 64 of them, then says empty (busy inside), so that a backlog of
// expired messages never keeps try_receive (or receive_for's deadline check) waiting on a
// whole ring of them. The next calls go on; nothing is lost.
TEST(Watchdog, AConsumerDeadLettersABoundedNumberOfExpiredMessagesPerCall) {
  ScopedQueue q("wd-ttl-bound", {.slot_count = 512, .ttl = 1ms});
  const pid_t child = test::spawn([&] {
    set_embedded_watchdog(false);  // only the consumer dead-letters here
    auto p = q->producer().value();
    for (int i = 0; i < 200; ++i)
      if (p.send("old") != Status::ok) return 10;
    const std::uint64_t sent = detail::monotonic_coarse_ns();
    while (detail::monotonic_coarse_ns() < sent + 20'000'000) std::this_thread::yield();
    auto c = q->consumer().value();
    auto dlq = Queue::open(Queue::dead_letter_name(q.name()));
    Message m;
    if (c.try_receive(m) != Status::empty) return 11;
    if (!dlq.ok() || dlq->stats().ready != 64) return 12;
    int calls = 1;
    while (dlq->stats().ready < 200 && calls < 10) {
      if (c.try_receive(m) != Status::empty) return 13;
      ++calls;
    }
    if (dlq->stats().ready != 200 || calls != 4) return 14;
    if (p.send("fresh") != Status::ok) return 15;
    return c.try_receive(m) == Status::ok && m.view() == "fresh" ? 0 : 16;
  });
  EXPECT_EQ(test::wait_bounded(child, 30s), 0);
}

TEST(Watchdog, ExpiredMessagesAreDeadLetteredByConsumersAndByTheWatchdog) {
  ScopedQueue q("wd-ttl", {.ttl = 1ms});
  auto p = q->producer().value();
  ASSERT_EQ(p.send("old1"), Status::ok);
  ASSERT_EQ(p.send("old2"), Status::ok);
  // Let the coarse clock move well past the TTL (a wait for a condition, not a sync sleep).
  const std::uint64_t sent = detail::monotonic_coarse_ns();
  while (detail::monotonic_coarse_ns() < sent + 20'000'000) std::this_thread::yield();
  auto c = q->consumer().value();
  Message m;
  ASSERT_EQ(p.send("fresh"), Status::ok);
  // The consumer dead-letters expired messages instead of delivering them...
  ASSERT_EQ(c.try_receive(m), Status::ok);
  EXPECT_EQ(m.view(), "fresh");
  ASSERT_EQ(c.ack(m), Status::ok);
  // ...and the watchdog those nobody asked for.
  ASSERT_EQ(p.send("old3"), Status::ok);
  const std::uint64_t sent3 = detail::monotonic_coarse_ns();
  while (detail::monotonic_coarse_ns() < sent3 + 20'000'000) std::this_thread::yield();
  auto w = Watchdog::attach(*q).value();
  EXPECT_EQ(w.tick().expired, 1u);
  auto dc = Queue::open(Queue::dead_letter_name(q.name()))->consumer().value();
  std::vector<std::string> dead;
  while (dc.try_receive(m) == Status::ok) {
    const auto dl = parse_dead_letter(m.data());
    ASSERT_TRUE(dl.has_value());
    EXPECT_EQ(dl->reason, DeadLetterReason::expired);
    dead.emplace_back(reinterpret_cast<const char*>(dl->payload.data()), dl->payload.size());
    ASSERT_EQ(dc.ack(m), Status::ok);
  }
  std::sort(dead.begin(), dead.end());
  EXPECT_EQ(dead, (std::vector<std::string>{"old1", "old2", "old3"}));
  EXPECT_EQ(q->stats().expired, 3u);
  (void)Queue::remove(Queue::dead_letter_name(q.name()));
}

TEST(Watchdog, OneOfTwoWatchdogsIsElectedAndASurvivorTakesOver) {
  ScopedQueue q("wd-elect");
  auto a = Watchdog::attach(*q).value();
  auto b = Watchdog::attach(*q).value();
  EXPECT_TRUE(a.tick().active);
  EXPECT_FALSE(b.tick().active);
  // A watchdog in a process that gets killed: the survivor takes over and frees its row.
  ScopedQueue q2("wd-elect2");
  Signal elected;
  const pid_t child = spawn([&] {
    auto oq = Queue::open(q2.name()).value();
    auto w = Watchdog::attach(oq).value();
    if (!w.tick().active) return 1;
    elected.notify();
    ::pause();
    return 0;
  });
  ASSERT_TRUE(elected.wait());
  auto survivor = Watchdog::attach(*q2).value();
  EXPECT_FALSE(survivor.tick().active);
  kill_and_reap(child);
  const WatchdogReport r = survivor.tick();
  EXPECT_TRUE(r.active);
  EXPECT_EQ(r.members_reclaimed, 1u);
}

TEST(Watchdog, LiveButSlowConsumerIsNeverReclaimedEvenOversubscribed) {
  ScopedQueue q("wd-slow", {.lease = 1h});
  auto p = q->producer().value();
  ASSERT_EQ(p.send("slow"), Status::ok);
  Signal holding;
  int release[2];
  ASSERT_EQ(::pipe(release), 0);
  const pid_t child = spawn([&] {
    auto c = Queue::open(q.name())->consumer().value();
    Message m;
    if (c.try_receive(m) != Status::ok) return 1;
    holding.notify();
    char b;
    if (::read(release[0], &b, 1) != 1) return 2;  // "working" far past any heartbeat
    return c.ack(m) == Status::ok ? 0 : 3;
  });
  ASSERT_TRUE(holding.wait());
  // More busy processes than cores.
  std::vector<pid_t> hogs;
  for (int i = 0; i < 4; ++i)
    hogs.push_back(spawn([] {
      for (;;) {
      }
      return 0;
    }));
  auto w = Watchdog::attach(*q).value();
  std::uint64_t taken = 0;
  const auto until = std::chrono::steady_clock::now() + 300ms;
  while (std::chrono::steady_clock::now() < until) {
    const WatchdogReport r = w.tick();
    taken += r.redelivered + r.leases_expired + r.members_reclaimed;
  }
  for (pid_t h : hogs) kill_and_reap(h);
  EXPECT_EQ(taken, 0u);
  ASSERT_EQ(::write(release[1], "x", 1), 1);
  EXPECT_EQ(wait_exit(child), 0);  // and its ack still works
  ::close(release[0]);
  ::close(release[1]);
}

TEST(Watchdog, HeartbeatLivenessKeepsAnIdleMemberOfALiveProcessAlive) {
  // The watchdog thread of a process beats for that process's members: a handle that makes
  // no call for longer than the timeout is not taken for dead while its process lives.
  ScopedQueue q("wd-idle", {.heartbeat_liveness = true, .heartbeat_timeout = 300ms});
  auto c = q->consumer().value();
  auto p = q->producer().value();
  ASSERT_EQ(p.send("m"), Status::ok);
  Message m;
  ASSERT_EQ(c.try_receive(m), Status::ok);
  q->segment()->member(c.member_index()).heartbeat_ns.store(1);  // idle "forever"
  auto w = Watchdog::attach(*q).value();
  const WatchdogReport rep = w.tick();
  EXPECT_EQ(rep.members_reclaimed, 0u);
  EXPECT_EQ(rep.redelivered, 0u);
  EXPECT_EQ(c.ack(m), Status::ok);
}

TEST(Watchdog, AJoiningRowIsJudgedByItsPidNotByItsPredecessorsHeartbeat) {
  ScopedQueue q("wd-joining");
  auto& seg = *q->segment();
  // Row 5: a registration in progress by this (live) process, over a predecessor's stale
  // heartbeat and start time. Row 6: one left joining by a process that died.
  seg.member(5).heartbeat_ns.store(1);
  seg.member(5).start_time.store(12345);
  seg.member(5).state.store(detail::member_state(detail::MemberStatus::joining,
                                                 detail::Role::consumer,
                                                 static_cast<std::uint32_t>(::getpid()), 1));
  std::fflush(nullptr);
  const pid_t dead = ::fork();
  if (dead == 0) std::_Exit(0);
  ASSERT_EQ(test::wait_exit(dead), 0);
  seg.member(6).state.store(detail::member_state(detail::MemberStatus::joining,
                                                 detail::Role::producer,
                                                 static_cast<std::uint32_t>(dead), 1));
  auto w = Watchdog::attach(*q).value();
  const WatchdogReport rep = w.tick();
  EXPECT_EQ(rep.members_reclaimed, 1u);
  EXPECT_EQ(detail::member_status(seg.member(5).state.load()), detail::MemberStatus::joining);
  EXPECT_EQ(detail::member_status(seg.member(6).state.load()), detail::MemberStatus::free);
  seg.member(5).state.store(0);
}

TEST(Watchdog, HeartbeatLivenessDeclaresSilentMembersDead) {
  // A timeout long enough that the live producer, beating between ticks, never looks silent
  // even on a loaded machine; the silent ones are made a whole epoch old.
  ScopedQueue q("wd-heartbeat",
               {.heartbeat_liveness = true, .heartbeat_timeout = 300ms, .claim_timeout = 1h});
  auto p = q->producer().value();
  ASSERT_EQ(p.send("held"), Status::ok);
  auto c = q->consumer().value();
  Message m;
  ASSERT_EQ(c.try_receive(m), Status::ok);
  Reservation r;
  auto silent_producer = q->producer().value();
  ASSERT_EQ(silent_producer.try_reserve(3, r), Status::ok);
  // Both go silent, as members of another process (in another pid namespace) that stopped
  // would: their rows name another pid, so this process's watchdog does not beat for them,
  // and their heartbeat is old.
  auto go_silent = [&](std::uint32_t i) {
    auto& row = q->segment()->member(i);
    const std::uint64_t st = row.state.load();
    row.state.store(detail::member_state(detail::member_status(st), detail::member_role(st),
                                         0x7ffffff0u, detail::member_generation(st)));
    row.heartbeat_ns.store(1);
  };
  go_silent(c.member_index());
  go_silent(silent_producer.member_index());
  auto w = Watchdog::attach(*q).value();
  p.heartbeat();
  WatchdogReport first = w.tick();
  EXPECT_EQ(first.redelivered, 1u);
  EXPECT_EQ(first.holes_repaired, 1u);  // quarantined, not yet released
  EXPECT_EQ(first.members_reclaimed, 1u);  // the consumer; the producer waits for its grace
  ASSERT_TRUE(tick_until(w, [&](const WatchdogReport& rep) {
    p.heartbeat();  // the live producer keeps beating
    return rep.members_reclaimed != 0;
  }));
  EXPECT_EQ(q->stats().producers, 1u);  // the live one was never taken for dead
  EXPECT_EQ(q->stats().claimed, 0u);
  EXPECT_EQ(p.commit(r), Status::invalid);  // not this producer's reservation
  EXPECT_EQ(p.try_send("after"), Status::ok);
}

}  // namespace
}  // namespace shmq
