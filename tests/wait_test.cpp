// Wait strategies (issue 16, shmq/wait.hpp): every strategy delivers what is sent while it
// waits, times out, honours interrupt(), sees a removed queue, and a producer waiting on a
// full ring with any strategy gets room when a consumer acks; the same for a topic's
// subscriber and publisher. Threads of one process; no
// sleeps: each side waits on the other's progress with a deadline.
#include <atomic>
#include <chrono>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "shmq/topic.hpp"
#include "shmq/wait.hpp"
#include "shmq/watchdog.hpp"
#include "test_util.hpp"

namespace shmq {

const bool kNoEmbeddedWatchdogWait = (set_embedded_watchdog(false), true);

namespace {

using namespace std::chrono_literals;
using test::ScopedQueue;
using test::text;

class WaitStrategies : public ::testing::TestWithParam<WaitStrategy> {
 protected:
  WaitOptions options() const {
    WaitOptions o{.strategy = GetParam()};
    if (GetParam() == WaitStrategy::spin_sleep) o.sleep = 20us;
    return o;
  }
};

// Spins (yielding) until `done` or 10 s: a bounded wait on another thread's progress.
template <typename F>
bool eventually(F&& done) {
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::yield();
  }
  return true;
}

TEST_P(WaitStrategies, ReceiveGetsWhatIsSentWhileItWaits) {
  ScopedQueue q("wait-recv");
  auto c = q->consumer({.wait = options()}).value();
  auto p = q->producer().value();
  constexpr int kMessages = 2000;
  std::atomic<int> received{0};
  std::thread consumer([&] {
    for (int i = 0; i < kMessages; ++i) {
      Message m;
      ASSERT_EQ(c.receive_for(m, 20s), Status::ok) << "message " << i;
      ASSERT_EQ(text(m), std::to_string(i));
      ASSERT_EQ(c.ack(m), Status::ok);
      received.store(i + 1, std::memory_order_release);
    }
  });
  // Every tenth message is sent only once the consumer has taken everything before it, so
  // it waits (spins, yields, sleeps or blocks) for that one.
  for (int i = 0; i < kMessages; ++i) {
    if (i % 10 == 0) {
      ASSERT_TRUE(eventually([&] { return received.load() == i; }));
    }
    ASSERT_EQ(p.send(std::to_string(i)), Status::ok);
  }
  consumer.join();
  EXPECT_EQ(received.load(), kMessages);
}

TEST_P(WaitStrategies, ReceiveTimesOut) {
  ScopedQueue q("wait-timeout");
  auto c = q->consumer({.wait = options()}).value();
  Message m;
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(c.receive_for(m, 30ms), Status::timeout);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 30ms);
  EXPECT_EQ(c.receive_for(m, 0ns), Status::timeout);
}

TEST_P(WaitStrategies, InterruptEndsAWait) {
  ScopedQueue q("wait-intr");
  auto c = q->consumer({.wait = options()}).value();
  std::atomic<bool> started{false};
  Status got = Status::ok;
  std::thread t([&] {
    started.store(true);
    Message m;
    got = c.receive(m);
  });
  ASSERT_TRUE(eventually([&] { return started.load(); }));
  c.interrupt();
  t.join();
  EXPECT_EQ(got, Status::interrupted);
}

TEST_P(WaitStrategies, RemovedQueueEndsAWait) {
  ScopedQueue q("wait-removed");
  auto c = q->consumer({.wait = options()}).value();
  std::atomic<bool> started{false};
  Status got = Status::ok;
  std::thread t([&] {
    started.store(true);
    Message m;
    got = c.receive_for(m, 20s);
  });
  ASSERT_TRUE(eventually([&] { return started.load(); }));
  ASSERT_TRUE(Queue::remove(q.name()).ok());
  t.join();
  EXPECT_EQ(got, Status::closed);
}

TEST_P(WaitStrategies, ProducerOnAFullRingGetsRoomWhenAConsumerAcks) {
  ScopedQueue q("wait-full", {.slot_count = 4});
  auto p = q->producer({.wait = options()}).value();
  auto c = q->consumer().value();
  constexpr int kMessages = 500;
  std::atomic<int> sent{0};
  std::thread producer([&] {
    for (int i = 0; i < kMessages; ++i) {
      ASSERT_EQ(p.send_for(as_bytes(std::to_string(i)), 20s), Status::ok) << "message " << i;
      sent.store(i + 1, std::memory_order_release);
    }
  });
  for (int i = 0; i < kMessages; ++i) {
    // Let the ring fill before each tenth receive: the producer waits for room.
    if (i % 10 == 0) {
      ASSERT_TRUE(eventually([&] { return sent.load() >= std::min(kMessages, i + 4); }));
    }
    Message m;
    ASSERT_EQ(c.receive_for(m, 20s), Status::ok);
    ASSERT_EQ(text(m), std::to_string(i));
    ASSERT_EQ(c.ack(m), Status::ok);
  }
  producer.join();
  // And a full ring still times out.
  for (int i = 0; i < 4; ++i) ASSERT_EQ(p.try_send("x"), Status::ok);
  EXPECT_EQ(p.send_for(as_bytes(std::string_view("y")), 20ms), Status::timeout);
}

// Topics take the same strategies: a subscriber waiting for a publisher, and a publisher
// held back by a reliable group until its subscriber acks.
TEST_P(WaitStrategies, TopicSubscriberAndHeldBackPublisherGetThrough) {
  const std::string name = test::unique_name("wait-topic");
  auto t = Topic::create(name, {.slot_count = 4});
  ASSERT_TRUE(t.ok()) << t.error().message();
  struct Remove {
    std::string n;
    ~Remove() { (void)Topic::remove(n); }
  } remove{name};
  ASSERT_TRUE(t->create_group("g").ok());
  auto sub = t->subscriber("g", options()).value();
  auto pub = t->publisher(options()).value();
  constexpr int kMessages = 500;
  std::atomic<int> sent{0};
  std::thread publisher([&] {
    for (int i = 0; i < kMessages; ++i) {
      ASSERT_EQ(pub.send_for(as_bytes(std::to_string(i)), 20s), Status::ok) << "message " << i;
      sent.store(i + 1, std::memory_order_release);
    }
  });
  for (int i = 0; i < kMessages; ++i) {
    // Every tenth: let the ring fill first (the publisher waits for room); in between the
    // subscriber often finds the ring empty and waits for the publisher.
    if (i % 10 == 0) {
      ASSERT_TRUE(eventually([&] { return sent.load() >= std::min(kMessages, i + 4); }));
    }
    Delivery d;
    ASSERT_EQ(sub.receive_for(d, 20s), Status::ok) << "message " << i;
    const auto b = d.data();
    ASSERT_EQ(std::string(reinterpret_cast<const char*>(b.data()), b.size()), std::to_string(i));
    ASSERT_EQ(sub.ack(d), Status::ok);
  }
  publisher.join();
  Delivery none;
  EXPECT_EQ(sub.receive_for(none, 20ms), Status::timeout);
  for (int i = 0; i < 4; ++i) ASSERT_EQ(pub.try_send("x"), Status::ok);
  EXPECT_EQ(pub.send_for(as_bytes(std::string_view("y")), 20ms), Status::timeout);
}

INSTANTIATE_TEST_SUITE_P(Wait, WaitStrategies,
                         ::testing::Values(WaitStrategy::futex, WaitStrategy::busy_spin,
                                           WaitStrategy::spin_yield, WaitStrategy::spin_sleep),
                         [](const auto& param_info) {
                           std::string s(to_string(param_info.param));
                           for (char& ch : s)
                             if (ch == '-') ch = '_';
                           return s;
                         });

TEST(WaitStrategy, Names) {
  EXPECT_EQ(to_string(WaitStrategy::futex), "futex");
  EXPECT_EQ(to_string(WaitStrategy::busy_spin), "busy-spin");
  EXPECT_EQ(to_string(WaitStrategy::spin_yield), "spin-yield");
  EXPECT_EQ(to_string(WaitStrategy::spin_sleep), "spin-sleep");
}

}  // namespace
}  // namespace shmq
