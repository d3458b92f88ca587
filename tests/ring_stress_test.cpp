// In-process stress of the ring: many threads, one segment. Small enough to run under
// TSan (which checks the memory ordering the ring's comments argue), large enough to wrap a
// small ring thousands of times.
#include <algorithm>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "ring/requeue_map.hpp"
#include "segment/segment.hpp"
#include "test_util.hpp"

namespace shmq {
namespace {

using test::ScopedQueue;
using namespace std::chrono_literals;

struct Params {
  int producers;
  int consumers;
  std::uint32_t slots;
  std::uint32_t per_producer;
  std::size_t max_size;  // > 64 makes some messages span slots
  bool nack_some;
};

void stress(const char* stem, const Params& prm) {
  ScopedQueue q(stem, {.slot_count = prm.slots, .slot_size = 128,
                       .max_message_size = static_cast<std::uint32_t>(prm.max_size)});
  const std::uint64_t total = std::uint64_t(prm.producers) * prm.per_producer;
  std::vector<std::atomic<std::uint8_t>> acks(total);
  std::atomic<std::uint64_t> done{0}, bad{0};
  std::vector<std::thread> threads;
  for (int c = 0; c < prm.consumers; ++c) {
    threads.emplace_back([&] {
      auto con = q->consumer().value();
      Message m;
      while (done.load() < total) {
        if (con.receive_for(m, 20ms) != Status::ok) continue;
        const std::uint64_t id = m.id();  // 1 .. total
        const std::size_t want = 1 + id % prm.max_size;
        bool ok = id >= 1 && id <= total && m.size() == want;
        for (std::size_t i = 0; ok && i < m.size(); ++i)
          ok = m.data()[i] == std::byte(static_cast<std::uint8_t>(id + i));
        if (!ok) bad.fetch_add(1);
        if (prm.nack_some && m.delivery_count() == 1 && id % 5 == 0) {
          EXPECT_EQ(con.nack(m), Status::ok);
          continue;
        }
        EXPECT_EQ(con.ack(m), Status::ok);
        if (ok) acks[id - 1].fetch_add(1);
        done.fetch_add(1);
      }
    });
  }
  for (int p = 0; p < prm.producers; ++p) {
    threads.emplace_back([&, p] {
      auto pro = q->producer().value();
      std::vector<std::byte> buf(prm.max_size);
      for (std::uint32_t i = 0; i < prm.per_producer; ++i) {
        const std::uint64_t id = 1 + std::uint64_t(p) * prm.per_producer + i;
        const std::size_t n = 1 + id % prm.max_size;
        for (std::size_t j = 0; j < n; ++j) buf[j] = std::byte(static_cast<std::uint8_t>(id + j));
        if (n <= 64 && id % 3 == 0) {  // the zero-copy path for some of those that fit a slot
          Reservation r;
          ASSERT_EQ(pro.reserve(n, r), Status::ok);
          std::memcpy(r.data().data(), buf.data(), n);
          ASSERT_EQ(pro.commit(r, id), Status::ok);
          continue;
        }
        ASSERT_EQ(pro.send(Bytes(buf.data(), n), id), Status::ok);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(bad.load(), 0u);
  std::uint64_t missing = 0, doubled = 0;
  for (std::uint64_t i = 0; i < total; ++i) {
    missing += acks[i].load() == 0;
    doubled += acks[i].load() > 1;
  }
  EXPECT_EQ(missing, 0u);
  EXPECT_EQ(doubled, 0u);
}

TEST(RingStress, ManyThreadsSmallRing) { stress("st-small", {4, 4, 8, 100'000, 64, false}); }
TEST(RingStress, ManyThreadsSpanningMessages) { stress("st-span", {3, 3, 32, 40'000, 300, false}); }
TEST(RingStress, ManyThreadsWithRequeues) { stress("st-nack", {3, 3, 16, 40'000, 64, true}); }
TEST(RingStress, OneProducerOneConsumer) { stress("st-spsc", {1, 1, 4, 200'000, 64, false}); }

// Requeues race with claims all over a ring whose requeue map has three levels: consumers
// hold a few messages each and give most of them back (up to three times each) in a
// shuffled order, so requeued messages sit in many regions of the ring while others are
// claimed, cleared and marked again. A mark lost on the way would strand its message (no
// consumer would find it: nothing walks the ring), and progress would stop short of the
// total: the test fails after a long stall instead of hanging.
TEST(RingStress, RequeueMarksAreNeverLost) {
  constexpr std::uint64_t kTotal = 200'000;
  ScopedQueue q("st-marks", {.slot_count = 8192, .slot_size = 128});
  std::vector<std::atomic<std::uint8_t>> acks(kTotal);
  std::atomic<std::uint64_t> done{0};
  std::atomic<bool> give_up{false};
  // A bound on a stall (not a timing assertion): the time of the last ack, checked by a
  // consumer whose receive found nothing.
  using Clock = std::chrono::steady_clock;
  std::atomic<Clock::rep> last_progress{Clock::now().time_since_epoch().count()};
  std::vector<std::thread> threads;
  for (int c = 0; c < 8; ++c) {
    threads.emplace_back([&, c] {
      auto con = q->consumer().value();
      std::mt19937 rng(c);
      std::vector<Message> held(6);
      while (done.load() < kTotal && !give_up.load()) {
        const std::size_t n = con.receive_batch(held, 20ms);
        if (n == 0 && Clock::now().time_since_epoch().count() - last_progress.load() >
                          Clock::duration(10s).count())
          give_up.store(true);
        std::shuffle(held.begin(), held.begin() + n, rng);
        for (std::size_t i = 0; i < n; ++i) {
          Message& m = held[i];
          const std::uint64_t id = m.id();
          if (m.delivery_count() <= id % 4) {
            EXPECT_EQ(con.nack(m), Status::ok);
            continue;
          }
          EXPECT_EQ(con.ack(m), Status::ok);
          if (id >= 1 && id <= kTotal) acks[id - 1].fetch_add(1);
          done.fetch_add(1);
          last_progress.store(Clock::now().time_since_epoch().count());
        }
      }
    });
  }
  // Scanners that do nothing but what every consumer's search does to bits whose slot is
  // not requeued (clear them): they widen the race between a clear and a requeue's mark.
  for (int s = 0; s < 2; ++s) threads.emplace_back([&] {
    detail::RequeueMap map(*q->segment());
    const std::uint64_t n = map.size();
    while (done.load() < kTotal && !give_up.load()) {
      for (std::uint64_t i = map.next(0); i < n; i = map.next(i + 1)) {
        const auto st = detail::word_state(q->segment()->slot(i).word.load());
        if (detail::is_requeued_state(st)) continue;
        std::this_thread::yield();  // a scanner preempted between its look and its clear
        map.unmark(i);
      }
    }
  });
  threads.emplace_back([&] {
    auto pro = q->producer().value();
    for (std::uint64_t id = 1; id <= kTotal && !give_up.load(); ++id)
      while (pro.send_for(as_bytes("m"), 100ms, id) != Status::ok && !give_up.load()) {
      }
  });
  for (auto& t : threads) t.join();
  EXPECT_FALSE(give_up.load()) << "stalled at " << done.load() << " of " << kTotal
                               << " acked: a requeued message was not found";
  std::uint64_t missing = 0, doubled = 0;
  for (std::uint64_t i = 0; i < kTotal; ++i) {
    missing += acks[i].load() == 0;
    doubled += acks[i].load() > 1;
  }
  EXPECT_EQ(missing, 0u);
  EXPECT_EQ(doubled, 0u);
}

}  // namespace
}  // namespace shmq
