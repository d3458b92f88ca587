// Deduplication between threads of one process (issue 14), so that TSan checks the table's
// protocol (this binary is in the "ring" label, which CI runs under TSan too): threads
// racing with the same ids, each id delivered once.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <random>
#include <thread>
#include <vector>

#include "core/dedup.hpp"
#include "segment/segment.hpp"
#include "shmq/shmq.hpp"
#include "test_util.hpp"

namespace shmq {
namespace {

using namespace std::chrono_literals;
using test::ScopedQueue;

TEST(DedupThreads, FourThreadsRacingWithTheSameIdsDeliverEachOnce) {
  QueueOptions o;
  o.slot_count = 256;
  o.dedup_window.count = 50'000;  // positions: every send and every hole takes at most one
  ScopedQueue q("ddt-race", o);
  constexpr int kThreads = 4;
  constexpr std::uint64_t kIds = 5000;
  std::atomic<int> failures{0};
  std::atomic<std::uint64_t> duplicates{0};
  std::vector<std::thread> senders;
  for (int k = 0; k < kThreads; ++k)
    senders.emplace_back([&, k] {
      auto p = q->producer().value();
      std::vector<std::uint64_t> ids(kIds);
      for (std::uint64_t i = 0; i < kIds; ++i) ids[i] = i + 1;
      if (k % 2 == 1) std::shuffle(ids.begin(), ids.end(), std::mt19937_64(std::uint64_t(k)));
      for (const std::uint64_t id : ids) {
        const Status s = p.send_for(as_bytes("t"), 30s, id);
        if (s == Status::duplicate) duplicates.fetch_add(1, std::memory_order_relaxed);
        else if (s != Status::ok) failures.fetch_add(1, std::memory_order_relaxed);
      }
    });
  std::map<std::uint64_t, int> seen;
  {
    auto c = q->consumer().value();
    Message m;
    for (std::uint64_t total = 0; total < kIds; ++total) {
      ASSERT_EQ(c.receive_for(m, 30s), Status::ok) << "after " << total;
      ++seen[m.id()];
      ASSERT_EQ(c.ack(m), Status::ok);
    }
    for (auto& t : senders) t.join();
    while (c.try_receive(m) == Status::ok) {
      ++seen[m.id()];
      ASSERT_EQ(c.ack(m), Status::ok);
    }
  }
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(seen.size(), kIds);
  for (const auto& [id, n] : seen) ASSERT_EQ(n, 1) << id;
  EXPECT_EQ(duplicates.load(), (kThreads - 1) * kIds);
}

// Idempotent sessions in threads: each thread's session, resumed halfway by another
// producer, sends every sequence once.
TEST(DedupThreads, SessionsResumedInOtherThreadsSendEachSequenceOnce) {
  QueueOptions o;
  o.slot_count = 256;
  o.dedup_window.count = 10'000;
  ScopedQueue q("ddt-sessions", o);
  constexpr int kThreads = 3;
  constexpr std::uint32_t kSeq = 1000;
  std::atomic<int> failures{0};
  std::vector<std::thread> senders;
  for (int k = 0; k < kThreads; ++k)
    senders.emplace_back([&] {
      auto p = q->idempotent_producer().value();
      const std::uint32_t id = p.session()->producer_id;
      for (std::uint32_t s = 0; s < kSeq; ++s)
        if (p.send_for(as_bytes("s"), 30s, SendOptions{}) != Status::ok) failures.fetch_add(1);
      // "Crash" and resume at the middle: the second half again, all duplicates.
      auto again = q->idempotent_producer({id, kSeq / 2}).value();
      for (std::uint32_t s = kSeq / 2; s < kSeq; ++s)
        if (again.send_for(as_bytes("s"), 30s, SendOptions{}) != Status::duplicate)
          failures.fetch_add(1);
    });
  std::uint64_t got = 0;
  {
    auto c = q->consumer().value();
    Message m;
    std::map<std::uint64_t, int> seen;
    while (got < kThreads * kSeq) {
      ASSERT_EQ(c.receive_for(m, 30s), Status::ok);
      ASSERT_EQ(++seen[m.id()], 1) << m.id();
      ASSERT_EQ(c.ack(m), Status::ok);
      ++got;
    }
    for (auto& t : senders) t.join();
    EXPECT_EQ(c.try_receive(m), Status::empty);
  }
  EXPECT_EQ(failures.load(), 0);
}

}  // namespace
}  // namespace shmq
