// In-process stress of the ring: many threads, one segment. Small enough to run under
// TSan (which checks the memory ordering the ring's comments argue), large enough to wrap a
// small ring thousands of times.
#include <cstring>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

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

}  // namespace
}  // namespace shmq
