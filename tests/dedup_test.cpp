// Deduplication (issue 14): a retried send never makes a duplicate, through crashes of the
// sender at every point of a send, concurrent senders of the same ids, stopped senders,
// and idempotent producer sessions.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <cstring>
#include <map>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "core/dedup.hpp"
#include "platform/crash_point.hpp"
#include "ring/slot_word.hpp"
#include "segment/segment.hpp"
#include "shmq/shmq.hpp"
#include "test_util.hpp"

namespace shmq {
namespace {

using namespace std::chrono_literals;
using test::ScopedQueue;
using test::spawn;
using test::wait_exit;

QueueOptions dedup_options(std::uint32_t window, std::uint32_t slots = 64) {
  QueueOptions o;
  o.slot_count = slots;
  o.max_message_size = 1000;
  o.dedup_window.count = window;
  return o;
}

// Every message in the queue now, by id (acked as read).
std::map<std::uint64_t, int> drain(Queue& q) {
  std::map<std::uint64_t, int> seen;
  auto c = q.consumer().value();
  Message m;
  while (c.try_receive(m) == Status::ok) {
    ++seen[m.id()];
    EXPECT_EQ(c.ack(m), Status::ok);
  }
  return seen;
}

TEST(Dedup, ASecondSendOfAnIdIsADuplicateAndNamesTheOriginal) {
  ScopedQueue q("dd-basic", dedup_options(100));
  auto p = q->producer().value();
  ASSERT_EQ(p.send("first", 42), Status::ok);
  const std::uint64_t original = p.last_position();
  ASSERT_EQ(p.send("again", 42), Status::duplicate);
  EXPECT_EQ(p.last_position(), original);
  ASSERT_EQ(p.try_send("again", 42), Status::duplicate);
  ASSERT_EQ(p.send_for(as_bytes("again"), 1s, 42), Status::duplicate);
  // Another producer, and another id.
  auto p2 = q->producer().value();
  ASSERT_EQ(p2.send("again", {.id = 42}), Status::duplicate);
  ASSERT_EQ(p2.send("other", 43), Status::ok);
  // Generated ids are never looked up.
  ASSERT_EQ(p.send("gen"), Status::ok);
  ASSERT_EQ(p.send("gen"), Status::ok);
  auto seen = drain(*q);
  EXPECT_EQ(seen.size(), 4u);
  EXPECT_EQ(seen[42], 1);
  EXPECT_EQ(seen[43], 1);
  EXPECT_EQ(q->segment()->dedup().header().duplicates.load(), 4u);
  // Still a duplicate after the original was acked: the window is of ids sent.
  ASSERT_EQ(p.send("late", 42), Status::duplicate);
}

TEST(Dedup, IdsBeyondTheCountWindowAreAcceptedAgain) {
  ScopedQueue q("dd-window", dedup_options(100, 256));
  auto p = q->producer().value();
  auto c = q->consumer().value();
  Message m;
  for (std::uint64_t id = 1; id <= 100; ++id) {
    ASSERT_EQ(p.send("m", id), Status::ok);
    ASSERT_EQ(c.try_receive(m), Status::ok);
    ASSERT_EQ(c.ack(m), Status::ok);
  }
  for (std::uint64_t id = 1; id <= 100; ++id) EXPECT_EQ(p.try_send("m", id), Status::duplicate) << id;
  // One more id: the oldest (1) leaves the window, 2 .. 101 stay.
  ASSERT_EQ(p.send("m", 101), Status::ok);
  EXPECT_EQ(p.try_send("m", 2), Status::duplicate);
  EXPECT_EQ(p.try_send("m", 1), Status::ok);
  EXPECT_EQ(q->segment()->dedup().header().evicted_early.load(), 0u);
}

TEST(Dedup, IdsOlderThanTheTimeWindowAreAcceptedAgain) {
  QueueOptions o = dedup_options(100);
  o.dedup_window.time = 1s;
  ScopedQueue q("dd-time", o);
  auto p = q->producer().value();
  ASSERT_EQ(p.send("m", 7), Status::ok);
  ASSERT_EQ(p.send("m", 7), Status::duplicate);
  // The feature under test is time itself: wait it out (then the id is accepted again).
  std::this_thread::sleep_for(1100ms);
  EXPECT_EQ(p.send("m", 7), Status::ok);
  EXPECT_EQ(p.send("m", 7), Status::duplicate);
}

TEST(Dedup, OptionsAreValidatedAndReported) {
  QueueOptions o = dedup_options(kMaxDedupWindow + 1);
  auto q = Queue::create(test::unique_name("dd-bad"), o);
  ASSERT_FALSE(q.ok());
  EXPECT_NE(q.error().message().find("dedup window"), std::string::npos);
  o = dedup_options(0);
  o.dedup_window.time = 5s;
  EXPECT_FALSE(Queue::create(test::unique_name("dd-bad"), o).ok());
  ScopedQueue ok("dd-opts", dedup_options(1000));
  EXPECT_EQ(Queue::open(ok.name())->options().dedup_window.count, 1000u);
  // open_or_create names the difference.
  auto mismatch = Queue::open_or_create(ok.name(), dedup_options(10));
  ASSERT_FALSE(mismatch.ok());
  EXPECT_NE(mismatch.error().message().find("dedup_window"), std::string::npos);
  // No window, no sessions.
  ScopedQueue plain("dd-plain");
  auto s = plain->idempotent_producer();
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code(), Errc::invalid_argument);
}

TEST(Dedup, ReservationsCommittedWithAnIdAreDeduplicated) {
  ScopedQueue q("dd-reserve", dedup_options(100));
  auto p = q->producer().value();
  Reservation r;
  ASSERT_EQ(p.try_reserve(3, r), Status::ok);
  std::memcpy(r.data().data(), "one", 3);
  ASSERT_EQ(p.commit(r, 9), Status::ok);
  ASSERT_EQ(p.try_reserve(3, r), Status::ok);
  std::memcpy(r.data().data(), "two", 3);
  ASSERT_EQ(p.commit(r, 9), Status::duplicate);
  auto seen = drain(*q);
  EXPECT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[9], 1);
}

TEST(Dedup, PriorityLevelsEachKeepAWindow) {
  QueueOptions o = dedup_options(100);
  o.max_priority = 3;
  ScopedQueue q("dd-prio", o);
  auto p = q->producer().value();
  ASSERT_EQ(p.send("a", {.id = 5, .priority = 2}), Status::ok);
  ASSERT_EQ(p.send("a", {.id = 5, .priority = 2}), Status::duplicate);
  ASSERT_EQ(p.send("a", {.id = 5, .priority = 0}), Status::ok);
  for (std::uint32_t l = 1; l <= 3; ++l) (void)Queue::remove(q.name() + ".p" + std::to_string(l));
}

// An idempotent session: ids without application ids; a resumed session's resends are
// duplicates, its new sends are not.
TEST(Dedup, IdempotentSessionsResendWithoutApplicationIds) {
  ScopedQueue q("dd-session", dedup_options(1000));
  auto p = q->idempotent_producer().value();
  ASSERT_TRUE(p.session().has_value());
  const ProducerSession start = *p.session();
  EXPECT_NE(start.producer_id, 0u);
  EXPECT_EQ(start.next_sequence, 0u);
  for (int i = 0; i < 10; ++i) ASSERT_EQ(p.send("m" + std::to_string(i)), Status::ok);
  EXPECT_EQ(p.session()->next_sequence, 10u);
  // A second session has another producer id.
  auto other = q->idempotent_producer().value();
  EXPECT_NE(other.session()->producer_id, start.producer_id);
  // "Crash" after the 10 sends, having confirmed only the first 6: resume at 6, resend.
  auto resumed = q->idempotent_producer({start.producer_id, 6}).value();
  for (int i = 6; i < 10; ++i) EXPECT_EQ(resumed.send("m" + std::to_string(i)), Status::duplicate);
  EXPECT_EQ(resumed.session()->next_sequence, 10u);
  ASSERT_EQ(resumed.send("m10"), Status::ok);
  auto seen = drain(*q);
  EXPECT_EQ(seen.size(), 11u);
  for (std::uint32_t s = 0; s <= 10; ++s)
    EXPECT_EQ(seen[session_message_id(start.producer_id, s)], 1) << s;
  // A plain producer has no session.
  EXPECT_FALSE(q->producer().value().session().has_value());
}

// Kills the sender at each point of a send with an id, then retries the id from a new
// process: every id is delivered exactly once. 1,000 iterations over the crash points.
TEST(Dedup, ASenderKilledAnywhereThenRetriedDeliversEachIdOnce) {
  ScopedQueue q("dd-crash", dedup_options(4096, 64));
  const char* points[] = {"producer.after_claim", "producer.mid_write", "producer.before_admit",
                          "producer.before_publish", "producer.after_publish"};
  auto w = Watchdog::attach(*q).value();  // ticked here, never started: no thread before forks
  constexpr int kIterations = 1000;
  std::map<std::uint64_t, int> seen;
  std::map<std::string, int> killed;
  for (int i = 0; i < kIterations; ++i) {
    const std::uint64_t id = 1000 + std::uint64_t(i);
    const char* point = points[i % 5];
    const std::string body(i % 3 == 0 ? 300 : 20, char('a' + i % 26));  // 1 or 2+ slots
    const pid_t first = spawn([&] {
      auto p = Queue::open(q.name())->producer().value();
      detail::arm_crash_point(point, 1);
      const Status s = p.send(body, id);
      return s == Status::ok ? 0 : 3;
    });
    const int rc = wait_exit(first);
    ASSERT_TRUE(rc == 128 + SIGKILL) << point << " rc " << rc;
    ++killed[point];
    (void)w.tick();  // the dead producer's claim and row: repaired, and its way voided
    for (const auto& [k, v] : drain(*q)) seen[k] += v;
    // A whole lap of other messages before the retry: the slot of a hole is reused, so only
    // the voided way (not the slot) can say that the id was never delivered.
    const pid_t filler = spawn([&] {
      auto fq = Queue::open(q.name()).value();
      auto p = fq.producer().value();
      auto c = fq.consumer().value();
      Message m;
      for (int f = 0; f < 64; ++f) {
        if (p.send("f") != Status::ok || c.try_receive(m) != Status::ok) return 4;
        if (c.ack(m) != Status::ok) return 5;
      }
      return 0;
    });
    ASSERT_EQ(wait_exit(filler), 0);
    const pid_t retry = spawn([&] {
      auto p = Queue::open(q.name())->producer().value();
      const Status s = p.send_for(as_bytes(body), 10s, id);
      if (s == Status::ok) return 0;
      if (s == Status::duplicate) return 1;
      return 10 + int(s);
    });
    const int rr = wait_exit(retry);
    ASSERT_TRUE(rr == 0 || rr == 1) << point << " retry rc " << rr;
    // Died after its publish: the retry is the duplicate. Before: the retry sends it.
    EXPECT_EQ(rr, std::string(point) == "producer.after_publish" ? 1 : 0) << point;
    (void)w.tick();
    for (const auto& [k, v] : drain(*q)) seen[k] += v;
  }
  ASSERT_EQ(seen.size(), std::size_t(kIterations));
  for (const auto& [id, n] : seen) EXPECT_EQ(n, 1) << id;
  for (const char* p : points) EXPECT_EQ(killed[p], kIterations / 5) << p;
}

// A sender stopped between admitting its id and publishing: a retry waits for it, the
// watchdog turns its stalled claim into a hole, the retry goes through, and the stopped
// sender, resumed, finds its id sent: exactly one copy.
TEST(Dedup, AStoppedSendersRetryGoesThroughOnceAndTheSenderYieldsOnResume) {
  QueueOptions o = dedup_options(100);
  o.claim_timeout = 50ms;
  ScopedQueue q("dd-stop", o);
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  const pid_t stopped = spawn([&] {
    auto p = Queue::open(q.name())->producer().value();
    detail::arm_stop_point("producer.before_publish", 1);
    const Status s = p.send("x", 77);
    return s == Status::duplicate ? 0 : 10 + int(s);
  });
  // Wait until it is stopped at the point.
  int status = 0;
  ASSERT_EQ(::waitpid(stopped, &status, WUNTRACED), stopped);
  ASSERT_TRUE(WIFSTOPPED(status));
  const pid_t retry = spawn([&] {
    auto p = Queue::open(q.name())->producer().value();
    return p.send_for(as_bytes("x"), 30s, 77) == Status::ok ? 0 : 1;
  });
  // The retry waits while the claim is in flight; the watchdog makes it a hole once it
  // has been held past the claim timeout.
  auto w = Watchdog::attach(*q).value();
  int rr = -1;
  for (int i = 0; i < 3000 && rr < 0; ++i) {
    (void)w.tick();
    int st = 0;
    if (::waitpid(retry, &st, WNOHANG) == retry) rr = WIFEXITED(st) ? WEXITSTATUS(st) : 128;
    else std::this_thread::sleep_for(10ms);  // spaces the ticks
  }
  ASSERT_EQ(rr, 0);
  ::kill(stopped, SIGCONT);
  EXPECT_EQ(wait_exit(stopped), 0);
  auto seen = drain(*q);
  EXPECT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[77], 1);
  ::close(ready[0]);
  ::close(ready[1]);
}

// 8 processes send the same 10,000 ids at once: 10,000 messages, each id once.
TEST(Dedup, EightProcessesRacingWithTheSameIdsDeliverEachOnce) {
  // A window of 100,000 positions: every send of the 80,000 (and each hole a collision
  // makes) takes at most one.
  ScopedQueue q("dd-race", dedup_options(100000, 1024));
  constexpr int kProcs = 8;
  constexpr std::uint64_t kIds = 10000;
  std::vector<pid_t> kids;
  for (int k = 0; k < kProcs; ++k) {
    kids.push_back(spawn([&, k] {
      auto p = Queue::open(q.name())->producer().value();
      std::vector<std::uint64_t> ids(kIds);
      for (std::uint64_t i = 0; i < kIds; ++i) ids[i] = i + 1;
      // Half in order (maximal contention), half shuffled.
      if (k % 2 == 1) std::shuffle(ids.begin(), ids.end(), std::mt19937_64(std::uint64_t(k)));
      int dup = 0;
      for (const std::uint64_t id : ids) {
        const Status s = p.send_for(as_bytes("r"), 60s, id);
        if (s == Status::duplicate) ++dup;
        else if (s != Status::ok) return 3;
      }
      return dup == int(kIds) ? 1 : 0;  // exit code unused beyond "no error"
    }));
  }
  // Consume while they send (the ring is smaller than the ids).
  std::map<std::uint64_t, int> seen;
  {
    auto c = q->consumer().value();
    Message m;
    std::uint64_t total = 0;
    while (total < kIds) {
      ASSERT_EQ(c.receive_for(m, 60s), Status::ok) << "after " << total;
      ++seen[m.id()];
      ++total;
      ASSERT_EQ(c.ack(m), Status::ok);
    }
  }
  for (const pid_t k : kids) {
    const int rc = wait_exit(k);
    EXPECT_TRUE(rc == 0 || rc == 1) << rc;
  }
  for (const auto& [k, v] : drain(*q)) seen[k] += v;
  EXPECT_EQ(seen.size(), kIds);
  for (const auto& [id, n] : seen) ASSERT_EQ(n, 1) << id;
  EXPECT_EQ(q->segment()->dedup().header().duplicates.load(), (kProcs - 1) * kIds);
}

// The table itself: a way whose slot became a hole stops counting; scribbled ways never
// make a send a duplicate of nothing.
TEST(Dedup, WaysOfHolesAndScribbledWaysDoNotStand) {
  ScopedQueue q("dd-table", dedup_options(64, 16));
  auto p = q->producer().value();
  detail::DedupTable& t = q->segment()->dedup();
  // A way naming a position that was never claimed.
  EXPECT_EQ(t.classify(5, detail::kWayCommitted | 3), detail::WayVerdict::hole);
  ASSERT_EQ(p.send("a", 5), Status::ok);
  const std::uint64_t pos = p.last_position();
  EXPECT_EQ(t.classify(5, detail::kWayCommitted | pos), detail::WayVerdict::stands);
  // The same position under another id: the slot says otherwise.
  EXPECT_EQ(t.classify(6, detail::kWayCommitted | pos), detail::WayVerdict::hole);
  EXPECT_EQ(t.classify(6, detail::kWayRecovered), detail::WayVerdict::stands);
  // forget_position voids it: the id may be sent again.
  EXPECT_TRUE(t.forget_position(pos, detail::kNoOwner));
  EXPECT_EQ(t.header().voided.load(), 1u);
  EXPECT_EQ(p.send("a", 5), Status::ok);
}


// Review findings (issue 14's red-team pass), each failed before its fix.

// A new session after a rebuild from the log must not get the producer id of a session
// whose ids were restored into the window (its first sends would be refused as duplicates).
TEST(Dedup, ANewSessionAfterARebuildDoesNotReuseARecoveredProducerId) {
  const std::string name = test::unique_name("dd-rebuilt");
  std::vector<std::pair<std::uint64_t, std::uint64_t>> recovered;
  for (std::uint32_t s = 0; s < 10; ++s) recovered.emplace_back(100 + s, session_message_id(1, s));
  auto q = Queue::recreate(name, dedup_options(1000), 110, recovered);
  ASSERT_TRUE(q.ok()) << q.error().message();
  auto fresh = q.value().idempotent_producer().value();
  EXPECT_GT(fresh.session()->producer_id, 1u);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(fresh.send("new event"), Status::ok) << i;
  // The recovered ids themselves are still duplicates, with no known position.
  auto old = q.value().idempotent_producer({1, 3}).value();
  EXPECT_EQ(old.send("old"), Status::duplicate);
  EXPECT_EQ(old.last_position(), Producer::kNoPosition);
  EXPECT_EQ(drain(q.value()).size(), 10u);
  (void)Queue::remove(name);
}

// classify() reads the slot word, then the id: a slot that moves on (acked, reused) in
// between must not make a published message look like a hole (a retry would be a second
// copy). Checkers race a producer and a consumer on a 4-slot ring for a while.
TEST(Dedup, ClassifyNeverCallsAPublishedMessageAHoleWhileTheRingLaps) {
  QueueOptions o = dedup_options(64, 4);
  o.max_message_size = 100;
  ScopedQueue q("dd-toctou", o);
  detail::DedupTable& t = q->segment()->dedup();
  // One record per message, never reused (a reused record could pair one message's id
  // with the next one's position): the producer stops when they run out.
  struct Sent {
    std::atomic<std::uint64_t> pos{0}, id{0};
  };
  constexpr std::uint64_t kRecords = 1 << 22;
  std::vector<Sent> sent(kRecords);
  std::atomic<std::uint64_t> latest{0}, holes{0}, checks{0};
  std::atomic<bool> stop{false};
  std::thread producer([&] {
    auto p = q->producer().value();
    for (std::uint64_t i = 1; !stop.load() && i < kRecords; ++i) {
      if (p.send_for(as_bytes("x"), 100ms, i) != Status::ok) continue;
      Sent& r = sent[i];
      r.pos.store(p.last_position(), std::memory_order_relaxed);
      r.id.store(i, std::memory_order_release);
      latest.store(i, std::memory_order_release);
    }
  });
  std::thread consumer([&] {
    auto c = q->consumer().value();
    Message m;
    while (!stop.load())
      if (c.try_receive(m) == Status::ok) (void)c.ack(m);
  });
  std::thread checker([&] {
    while (!stop.load()) {
      const std::uint64_t i = latest.load(std::memory_order_acquire);
      const Sent& r = sent[i];
      if (i == 0 || r.id.load(std::memory_order_acquire) != i) continue;
      checks.fetch_add(1, std::memory_order_relaxed);
      if (t.classify(i, detail::kWayCommitted | r.pos.load(std::memory_order_relaxed)) ==
          detail::WayVerdict::hole)
        holes.fetch_add(1, std::memory_order_relaxed);
    }
  });
  // The race needs time, not an event: let it run for two seconds.
  std::this_thread::sleep_for(2s);
  stop = true;
  producer.join();
  consumer.join();
  checker.join();
  EXPECT_GT(checks.load(), 0u);
  EXPECT_EQ(holes.load(), 0u) << "of " << checks.load();
}

// On a sync queue a duplicate waits for its original to be on disk, position 0 included.
TEST(Dedup, ASyncDuplicateOfTheFirstPositionWaitsForItsOriginal) {
  char tmpl[] = "/tmp/dd-sync0-XXXXXX";
  const std::string dir = ::mkdtemp(tmpl);
  QueueOptions o = dedup_options(64);
  o.durability = Durability::sync;
  o.data_dir = dir;
  ScopedQueue q("dd-sync0", o);
  auto p = q->producer().value();
  // No shmqd: nothing is ever on disk, so neither the send nor its resend is confirmed.
  EXPECT_EQ(p.try_send(as_bytes("a"), 100), Status::no_persister);
  EXPECT_EQ(p.last_position(), 0u);
  EXPECT_EQ(p.try_send(as_bytes("a"), 100), Status::no_persister);
  EXPECT_EQ(p.try_send(as_bytes("b"), 101), Status::no_persister);
  EXPECT_EQ(p.try_send(as_bytes("b"), 101), Status::no_persister);
  std::filesystem::remove_all(dir);
}

// Ids with the top bit (the generated ids' space) would escape deduplication: refused.
TEST(Dedup, IdsWithTheTopBitAreRefusedOnAQueueWithAWindow) {
  ScopedQueue q("dd-topbit", dedup_options(64));
  auto p = q->producer().value();
  const std::uint64_t id = (std::uint64_t{1} << 63) | 12345;
  EXPECT_EQ(p.send(as_bytes("x"), id), Status::invalid);
  Reservation r;
  ASSERT_EQ(p.try_reserve(1, r), Status::ok);
  EXPECT_EQ(p.commit(r, id), Status::invalid);
  EXPECT_EQ(p.commit(r, 12345), Status::ok);  // the reservation was still open
  EXPECT_EQ(drain(*q).size(), 1u);
}


// A bucket whose lock a live process holds (stopped inside it) must not stop the watchdog:
// the dead sender's hole in that bucket waits for a later tick, everything else goes on.
TEST(Dedup, TheWatchdogDoesNotHangBehindABucketLockedByALiveProcess) {
  ScopedQueue q("dd-wdlock", dedup_options(64));
  const pid_t child = spawn([&] {
    auto p = Queue::open(q.name())->producer().value();
    detail::arm_crash_point("producer.before_publish", 1);  // dies with its way inserted
    (void)p.send("x", 77);
    return 2;
  });
  ASSERT_EQ(wait_exit(child), 128 + SIGKILL);
  set_embedded_watchdog(false);  // only `w` below repairs, when told
  auto w = Watchdog::attach(*q).value();
  auto p = q->producer().value();  // a live member, to hold the lock "stopped"
  const std::uint64_t st = q->segment()->member(p.member_index()).state.load();
  const std::uint32_t owner = detail::owner_id(p.member_index(), detail::member_generation(st));
  detail::DedupBucket& b = q->segment()->dedup().bucket_of(77);
  b.lock.store(std::uint64_t(owner) + 1);
  const WatchdogReport held = w.tick();  // returns
  EXPECT_EQ(held.holes_repaired, 0u);
  // The id is still in flight (its dead sender's claim is kept for a later tick).
  EXPECT_EQ(p.try_send("x", 77), Status::timeout);
  b.lock.store(0);  // "resumed"
  const WatchdogReport freed = w.tick();
  EXPECT_EQ(freed.holes_repaired, 1u);
  EXPECT_GE(freed.members_reclaimed, 1u);  // the dead producer's row (its watchdog's too)
  EXPECT_EQ(p.send("x", 77), Status::ok);  // its way was voided: the id is free
  set_embedded_watchdog(true);
  EXPECT_EQ(drain(*q).size(), 1u);
}

}  // namespace
}  // namespace shmq
