// Priorities (issue 13): a queue created with max_priority N has levels 0 .. N, each a ring of
// its own; consumers always take the highest-priority deliverable message first, FIFO per
// producer within a level. Processes are forked before any thread starts (no embedded
// watchdog here: repairs are asked for with Queue::repair, so nothing races the asserts).
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "shmq/watchdog.hpp"

#include "segment/segment.hpp"
#include "test_util.hpp"

namespace shmq {

const bool kNoEmbeddedWatchdog = (set_embedded_watchdog(false), true);
namespace {

using test::ScopedQueue;
using test::text;
using namespace std::chrono_literals;

// "<producer>:<level>:<seq>"
std::string body(int producer, std::uint32_t level, std::uint64_t seq) {
  return std::to_string(producer) + ":" + std::to_string(level) + ":" + std::to_string(seq);
}
struct Parsed {
  int producer;
  std::uint32_t level;
  std::uint64_t seq;
};
Parsed parse(const std::string& s) {
  Parsed p{};
  std::sscanf(s.c_str(), "%d:%u:%lu", &p.producer, &p.level, &p.seq);
  return p;
}

TEST(Priority, OptionsAreValidated) {
  auto bad = Queue::create(test::unique_name("prio-bad"), {.max_priority = kMaxPriority + 1});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code(), Errc::invalid_argument);
  // A queue with priorities may not take a level's name.
  auto level_like = Queue::create(test::unique_name("prio") + ".p2", {.max_priority = 3});
  ASSERT_FALSE(level_like.ok());
  EXPECT_EQ(level_like.error().code(), Errc::invalid_argument);

  ScopedQueue q("prio-opt", {.slot_count = 8, .max_priority = 3});
  EXPECT_EQ(q->options().max_priority, 3u);
  auto p = q->producer().value();
  EXPECT_EQ(p.send("x", SendOptions{.priority = 4}), Status::invalid);
  EXPECT_EQ(p.send("x", SendOptions{.priority = 3}), Status::ok);
  // A queue without priorities takes priority 0 only.
  ScopedQueue plain("prio-plain", {.slot_count = 8});
  auto pp = plain->producer().value();
  EXPECT_EQ(pp.send("x", SendOptions{.priority = 1}), Status::invalid);
  EXPECT_EQ(pp.send("x", SendOptions{.priority = 0}), Status::ok);
  // Its policy is every level's.
  ASSERT_TRUE(q->set_policy({.lease = 1234ms}).ok());
  for (std::uint32_t l = 1; l <= 3; ++l)
    EXPECT_EQ(q->open_level(l).value().options().lease, 1234ms) << l;
  // Removing the queue removes its levels.
  const std::string name = q.name();
  ASSERT_TRUE(Queue::remove(name).ok());
  for (std::uint32_t l = 1; l <= 3; ++l)
    EXPECT_EQ(Queue::open(detail::Segment::level_name(name, l)).error().code(), Errc::not_found);
}

// Two processes creating the same queue with priorities at once: both succeed (one
// creates, the other opens), and every level is there afterwards (a losing create never
// removes levels another creator adopted).
TEST(Priority, ConcurrentCreatesLeaveEveryLevel) {
  for (int round = 0; round < 20; ++round) {
    const std::string name = test::unique_name("prio-race");
    const QueueOptions o{.slot_count = 8, .max_priority = 31};
    int go[2];
    ASSERT_EQ(::pipe(go), 0);
    std::vector<pid_t> kids;
    for (int k = 0; k < 2; ++k)
      kids.push_back(test::spawn([&] {
        char c = 0;
        if (::read(go[0], &c, 1) != 1) return 2;
        return Queue::open_or_create(name, o).ok() ? 0 : 3;
      }));
    const char two[2] = {1, 1};
    ASSERT_EQ(::write(go[1], two, 2), 2);
    for (const pid_t kid : kids) EXPECT_EQ(test::wait_exit(kid), 0) << "round " << round;
    auto q = Queue::open(name);
    ASSERT_TRUE(q.ok()) << round;
    for (std::uint32_t l = 1; l <= 31; ++l)
      ASSERT_TRUE(q.value().open_level(l).ok()) << "round " << round << ", level " << l;
    EXPECT_TRUE(q.value().consumer().ok());
    ::close(go[0]);
    ::close(go[1]);
    ASSERT_TRUE(Queue::remove(name).ok());
  }
}

// A level left behind (a remove that died half-way) is adopted by the next create only if
// it has the queue's options; otherwise the create fails naming it.
TEST(Priority, LeftoverLevelIsAdoptedOnlyWithTheSameOptions) {
  const std::string name = test::unique_name("prio-left");
  {
    auto q = Queue::create(name, {.slot_count = 8, .max_priority = 2}).value();
    auto p = q.producer().value();
    ASSERT_EQ(p.send("kept", SendOptions{.priority = 2}), Status::ok);
  }
  ASSERT_TRUE(detail::Segment::remove(name).ok());  // the queue goes, its levels stay
  auto other = Queue::create(name, {.slot_count = 64, .max_priority = 2});
  ASSERT_FALSE(other.ok());
  EXPECT_EQ(other.error().code(), Errc::mismatch);
  EXPECT_NE(other.error().message().find(name + ".p1"), std::string::npos)
      << other.error().message();
  auto same = Queue::create(name, {.slot_count = 8, .max_priority = 2});
  ASSERT_TRUE(same.ok()) << same.error().message();
  auto c = same.value().consumer().value();
  Message m;
  ASSERT_EQ(c.try_receive(m), Status::ok);
  EXPECT_EQ(text(m), "kept");
  EXPECT_EQ(m.priority(), 2u);
  ASSERT_EQ(c.ack(m), Status::ok);
  ASSERT_TRUE(Queue::remove(name).ok());
}

// 10,000 messages at random priorities from two producers, sent before any consumer
// starts: received in non-increasing priority, FIFO within a level per producer, each once.
TEST(Priority, BacklogIsReceivedHighestFirstFifoPerProducerWithinALevel) {
  constexpr std::uint32_t kMax = 16;
  constexpr int kMessages = 10'000;
  ScopedQueue q("prio-order", {.slot_count = 4096, .slot_size = 128, .max_priority = kMax});
  Producer producers[2] = {q->producer().value(), q->producer().value()};
  std::mt19937_64 rng(13);
  std::map<std::pair<int, std::uint32_t>, std::uint64_t> next_seq;
  std::vector<int> per_level(kMax + 1, 0);
  for (int i = 0; i < kMessages; ++i) {
    const int who = int(rng() % 2);
    const auto level = std::uint32_t(rng() % (kMax + 1));
    const std::uint64_t seq = next_seq[{who, level}]++;
    ASSERT_EQ(producers[who].try_send(body(who, level, seq), SendOptions{.priority = level}),
              Status::ok);
    ++per_level[level];
  }
  const QueueStats st = q->stats();
  ASSERT_EQ(st.levels.size(), kMax + 1);
  EXPECT_EQ(st.ready, std::uint64_t(kMessages));
  for (const auto& l : st.levels) EXPECT_EQ(l.ready, std::uint64_t(per_level[l.priority]));

  auto c = q->consumer().value();
  std::uint32_t last_level = kMax;
  std::map<std::pair<int, std::uint32_t>, std::uint64_t> expect_seq;
  std::set<std::uint64_t> ids;  // generated: unique across levels too
  for (int i = 0; i < kMessages; ++i) {
    Message m;
    ASSERT_EQ(c.try_receive(m), Status::ok) << i;
    const Parsed p = parse(text(m));
    ASSERT_EQ(m.priority(), p.level);
    ASSERT_LE(p.level, last_level) << "message " << i << " of a higher level after a lower one";
    last_level = p.level;
    ASSERT_EQ(p.seq, (expect_seq[{p.producer, p.level}]++)) << "FIFO per producer and level";
    ASSERT_TRUE(ids.insert(m.id()).second) << "id " << m.id() << " twice";
    ASSERT_EQ(c.ack(m), Status::ok);
  }
  Message none;
  EXPECT_EQ(c.try_receive(none), Status::empty);
}

// Nack, nack_after and a dead letter keep the priority: the requeued message is still the
// highest, and its dead letter's envelope names it.
TEST(Priority, RequeuedAndDeadLetteredMessagesKeepTheirPriority) {
  ScopedQueue q("prio-keep", {.slot_count = 16, .max_priority = 5});
  auto p = q->producer().value();
  auto c = q->consumer().value();
  ASSERT_EQ(p.send("low", SendOptions{.priority = 1}), Status::ok);
  ASSERT_EQ(p.send("high", SendOptions{.priority = 5}), Status::ok);
  Message m;
  ASSERT_EQ(c.try_receive(m), Status::ok);
  ASSERT_EQ(text(m), "high");
  ASSERT_EQ(c.nack(m), Status::ok);
  ASSERT_EQ(c.try_receive(m), Status::ok);
  EXPECT_EQ(text(m), "high");
  EXPECT_EQ(m.priority(), 5u);
  EXPECT_EQ(m.delivery_count(), 2u);
  ASSERT_EQ(c.extend_lease(m, 10s), Status::ok);
  ASSERT_EQ(c.nack(m, false), Status::ok);  // rejected: dead-lettered
  ASSERT_EQ(c.try_receive(m), Status::ok);
  EXPECT_EQ(text(m), "low");
  EXPECT_EQ(m.priority(), 1u);
  ASSERT_EQ(c.ack(m), Status::ok);
  auto dlq = Queue::open(Queue::dead_letter_name(q.name())).value();
  auto dc = dlq.consumer().value();
  ASSERT_EQ(dc.try_receive(m), Status::ok);
  const auto dl = parse_dead_letter(m.data());
  ASSERT_TRUE(dl.has_value());
  EXPECT_EQ(dl->priority, 5u);
  EXPECT_EQ(dl->reason, DeadLetterReason::rejected);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(dl->payload.data()), dl->payload.size()),
            "high");
}

// A priority consumer's dead letters from every level go through one producer row of the
// queue's DLQ (a row per level would fill the DLQ's member table with a few consumers).
TEST(Priority, DeadLettersOfEveryLevelShareOneDeadLetterQueueRow) {
  ScopedQueue q("prio-dlq", {.slot_count = 16, .max_priority = 7});
  auto p = q->producer().value();
  for (std::uint32_t l = 0; l <= 7; ++l)
    ASSERT_EQ(p.send("m" + std::to_string(l), SendOptions{.priority = l}), Status::ok);
  auto c = q->consumer().value();
  for (std::uint32_t l = 0; l <= 7; ++l) {
    Message m;
    ASSERT_EQ(c.try_receive(m), Status::ok);
    ASSERT_EQ(m.priority(), 7 - l);
    ASSERT_EQ(c.nack(m, false), Status::ok);  // rejected: dead-lettered
  }
  auto dlq = Queue::open(Queue::dead_letter_name(q.name())).value();
  const QueueStats st = dlq.stats();
  EXPECT_EQ(st.ready, 8u);
  EXPECT_EQ(st.producers, 1u);
  std::set<std::uint32_t> priorities;
  auto dc = dlq.consumer().value();
  Message m;
  while (dc.try_receive(m) == Status::ok) {
    priorities.insert(parse_dead_letter(m.data())->priority);
    ASSERT_EQ(dc.ack(m), Status::ok);
  }
  EXPECT_EQ(priorities.size(), 8u);
}

// Under a backlog of 100,000 priority-0 messages, a priority-9 message is the next one
// received by every consumer that asks after it was sent. Consumers are processes; each
// round the parent sends one priority-9 message per consumer, then lets each consumer take
// exactly one message (a pipe, not a sleep): every consumer must get a priority-9 one,
// since a consumer that found level 9 empty would mean fewer than one each. Between rounds
// the consumers drain a random number of priority-0 messages.
TEST(Priority, UrgentMessageOvertakesABacklogInEveryConsumer) {
  constexpr int kConsumers = 3, kRounds = 20;
  constexpr int kBacklog = 100'000;
  ScopedQueue q("prio-urgent", {.slot_count = 131072, .slot_size = 128, .max_priority = 9});
  {
    auto p = q->producer().value();
    for (int i = 0; i < kBacklog; ++i)
      ASSERT_EQ(p.try_send("bulk" + std::to_string(i)), Status::ok);
  }
  int go[kConsumers][2], report[kConsumers][2];
  std::vector<pid_t> kids;
  for (int k = 0; k < kConsumers; ++k) {
    ASSERT_EQ(::pipe(go[k]), 0);
    ASSERT_EQ(::pipe(report[k]), 0);
    kids.push_back(test::spawn([&, k] {
      auto queue = Queue::open(q.name());
      if (!queue.ok()) return 2;
      auto c = queue.value().consumer();
      if (!c.ok()) return 3;
      for (;;) {
        // Command: n > 0 = take n messages and report the priority of the first; 0 = exit.
        std::uint32_t n = 0;
        if (::read(go[k][0], &n, sizeof n) != sizeof n) return 4;
        if (n == 0) return 0;
        std::uint32_t first = 99;
        for (std::uint32_t i = 0; i < n; ++i) {
          Message m;
          if (c.value().receive_for(m, 10s) != Status::ok) return 5;
          if (i == 0) first = m.priority();
          if (c.value().ack(m) != Status::ok) return 6;
        }
        if (::write(report[k][1], &first, sizeof first) != sizeof first) return 7;
      }
    }));
  }
  auto p = q->producer().value();
  std::mt19937 rng(9);
  for (int round = 0; round < kRounds; ++round) {
    // Drain some backlog concurrently in every consumer, then wait for them to finish it.
    for (int k = 0; k < kConsumers; ++k) {
      std::uint32_t n = 1 + rng() % 200;
      ASSERT_EQ(::write(go[k][1], &n, sizeof n), ssize_t(sizeof n));
    }
    for (int k = 0; k < kConsumers; ++k) {
      std::uint32_t first = 0;
      ASSERT_EQ(::read(report[k][0], &first, sizeof first), ssize_t(sizeof first));
      ASSERT_EQ(first, 0u) << "round " << round << ": only the backlog is there";
    }
    for (int k = 0; k < kConsumers; ++k)
      ASSERT_EQ(p.send("urgent" + std::to_string(round), SendOptions{.priority = 9}), Status::ok);
    for (int k = 0; k < kConsumers; ++k) {
      std::uint32_t one = 1;
      ASSERT_EQ(::write(go[k][1], &one, sizeof one), ssize_t(sizeof one));
    }
    for (int k = 0; k < kConsumers; ++k) {
      std::uint32_t got = 0;
      ASSERT_EQ(::read(report[k][0], &got, sizeof got), ssize_t(sizeof got));
      EXPECT_EQ(got, 9u) << "round " << round << ", consumer " << k;
    }
  }
  for (int k = 0; k < kConsumers; ++k) {
    std::uint32_t zero = 0;
    ASSERT_EQ(::write(go[k][1], &zero, sizeof zero), ssize_t(sizeof zero));
  }
  for (const pid_t kid : kids) EXPECT_EQ(test::wait_exit(kid), 0);
  EXPECT_LT(q->stats().ready, std::uint64_t(kBacklog));
}

// A consumer SIGKILLed while holding high-priority messages: once they are taken back they
// are redelivered before every lower-priority message.
TEST(Priority, KilledConsumersHighPriorityMessagesComeBackFirst) {
  ScopedQueue q("prio-kill", {.slot_count = 64, .max_priority = 7});
  auto p = q->producer().value();
  for (int i = 0; i < 10; ++i) {
    ASSERT_EQ(p.send("low" + std::to_string(i), SendOptions{.priority = 2}), Status::ok);
    ASSERT_EQ(p.send("zero" + std::to_string(i)), Status::ok);
  }
  for (int i = 0; i < 5; ++i)
    ASSERT_EQ(p.send("top" + std::to_string(i), SendOptions{.priority = 7}), Status::ok);
  int held[2];
  ASSERT_EQ(::pipe(held), 0);
  const pid_t kid = test::spawn([&] {
    auto c = Queue::open(q.name()).value().consumer().value();
    std::vector<Message> ms(5);
    for (auto& m : ms)
      if (c.try_receive(m) != Status::ok || m.priority() != 7) return 2;
    const char one = 1;
    if (::write(held[1], &one, 1) != 1) return 3;
    for (;;) ::pause();  // holds them until SIGKILL
  });
  char one = 0;
  ASSERT_EQ(::read(held[0], &one, 1), 1);
  ASSERT_EQ(::kill(kid, SIGKILL), 0);
  EXPECT_EQ(test::wait_exit(kid), 128 + SIGKILL);
  const RepairReport r = q->repair();
  EXPECT_EQ(r.redelivered, 5u);
  auto c = q->consumer().value();
  for (int i = 0; i < 5; ++i) {
    Message m;
    ASSERT_EQ(c.try_receive(m), Status::ok);
    EXPECT_EQ(m.priority(), 7u) << i;
    EXPECT_TRUE(m.redelivered());
    EXPECT_EQ(text(m).substr(0, 3), "top");
    ASSERT_EQ(c.ack(m), Status::ok);
  }
  Message m;
  ASSERT_EQ(c.try_receive(m), Status::ok);
  EXPECT_EQ(m.priority(), 2u);
}

// A blocked receive on a queue with priorities wakes for a message sent at any level.
TEST(Priority, BlockedConsumerWakesForAnyLevel) {
  ScopedQueue q("prio-wake", {.slot_count = 16, .max_priority = 4});
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  const pid_t kid = test::spawn([&] {
    auto c = Queue::open(q.name()).value().consumer().value();
    const char one = 1;
    if (::write(ready[1], &one, 1) != 1) return 2;
    for (std::uint32_t want : {3u, 0u, 4u}) {
      Message m;
      if (c.receive_for(m, 20s) != Status::ok) return 3;
      if (m.priority() != want) return 4;
      if (c.ack(m) != Status::ok) return 5;
      if (::write(ready[1], &one, 1) != 1) return 6;
    }
    return 0;
  });
  char one = 0;
  ASSERT_EQ(::read(ready[0], &one, 1), 1);
  auto p = q->producer().value();
  // The child may or may not be asleep when each comes: either way it must get it.
  ASSERT_EQ(p.send("a", SendOptions{.priority = 3}), Status::ok);
  ASSERT_EQ(::read(ready[0], &one, 1), 1);
  ASSERT_EQ(p.send("b"), Status::ok);
  ASSERT_EQ(::read(ready[0], &one, 1), 1);
  ASSERT_EQ(p.send("c", SendOptions{.priority = 4}), Status::ok);
  ASSERT_EQ(::read(ready[0], &one, 1), 1);
  EXPECT_EQ(test::wait_exit(kid), 0);
}

// Zero-copy sends and batches at a level.
TEST(Priority, ReserveAndBatchAtALevel) {
  ScopedQueue q("prio-zc", {.slot_count = 16, .max_priority = 2});
  auto p = q->producer().value();
  Reservation r;
  ASSERT_EQ(p.reserve(5, r, 1s, 2), Status::ok);
  std::memcpy(r.data().data(), "zcopy", 5);
  EXPECT_EQ(p.commit(r, SendOptions{.priority = 1}), Status::invalid);  // not its level
  ASSERT_EQ(p.commit(r, SendOptions{.priority = 2}), Status::ok);
  const Bytes batch[] = {as_bytes("b1"), as_bytes("b2")};
  Status s = Status::ok;
  ASSERT_EQ(p.send_batch(batch, 1s, &s, SendOptions{.priority = 1}), 2u);
  auto c = q->consumer().value();
  const std::pair<const char*, std::uint32_t> want[] = {{"zcopy", 2}, {"b1", 1}, {"b2", 1}};
  for (const auto& [t, level] : want) {
    Message m;
    ASSERT_EQ(c.try_receive(m), Status::ok);
    EXPECT_EQ(text(m), t);
    EXPECT_EQ(m.priority(), level);
    ASSERT_EQ(c.ack(m), Status::ok);
  }
  const auto browsed = q->browse(10);
  EXPECT_TRUE(browsed.empty());
}

}  // namespace
}  // namespace shmq
