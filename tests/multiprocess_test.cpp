// Real processes: forked producers and consumers on one queue. Every message is counted in
// a shared tally (an anonymous MAP_SHARED mapping made before fork), so the parent can
// check that each one was delivered and acked exactly once, with its bytes intact.
#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <vector>

#include <gtest/gtest.h>

#include "test_util.hpp"

namespace shmq {
namespace {

using test::ScopedQueue;
using test::spawn;
using test::wait_exit;
using namespace std::chrono_literals;

// Shared between the parent and its children.
struct Tally {
  std::atomic<std::uint64_t> acked_total;
  std::atomic<std::uint64_t> corrupt;
  std::atomic<std::uint64_t> out_of_order;
  std::atomic<std::uint64_t> redelivered;
  // Followed by one std::atomic<uint8_t> per message: how often it was acked.
  std::atomic<std::uint8_t>& acks(std::size_t i) {
    return reinterpret_cast<std::atomic<std::uint8_t>*>(this + 1)[i];
  }

  static Tally* make(std::size_t messages) {
    const std::size_t bytes = sizeof(Tally) + messages;
    void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return nullptr;
    return static_cast<Tally*>(p);  // zero-filled: every atomic starts at 0
  }
  static void unmake(Tally* t, std::size_t messages) { ::munmap(t, sizeof(Tally) + messages); }
};

// Message layout: producer (4 bytes) | sequence (4) | bytes derived from both.
std::uint8_t pattern(std::uint32_t producer, std::uint32_t seq, std::size_t i) {
  return static_cast<std::uint8_t>((producer * 131u + seq * 7u + i * 13u) & 0xff);
}

std::vector<std::byte> make_message(std::uint32_t producer, std::uint32_t seq, std::size_t size) {
  std::vector<std::byte> m(std::max<std::size_t>(size, 8));
  std::memcpy(m.data(), &producer, 4);
  std::memcpy(m.data() + 4, &seq, 4);
  for (std::size_t i = 8; i < m.size(); ++i) m[i] = std::byte{pattern(producer, seq, i)};
  return m;
}

bool check_message(const Message& m, std::uint32_t& producer, std::uint32_t& seq) {
  if (m.size() < 8) return false;
  std::memcpy(&producer, m.data().data(), 4);
  std::memcpy(&seq, m.data().data() + 4, 4);
  for (std::size_t i = 8; i < m.size(); ++i)
    if (m.data()[i] != std::byte{pattern(producer, seq, i)}) return false;
  return true;
}

struct Scenario {
  QueueOptions options;
  std::uint32_t producers = 4;
  std::uint32_t consumers = 4;
  std::uint32_t per_producer = 250'000;
  std::size_t min_size = 64;
  std::size_t max_size = 64;
  bool check_order = false;        // one consumer: per-producer order must hold
  bool nack_first_delivery = false;
};

std::size_t size_for(const Scenario& s, std::uint32_t producer, std::uint32_t seq) {
  if (s.max_size == s.min_size) return s.min_size;
  return s.min_size + (producer * 7919u + seq * 104729u) % (s.max_size - s.min_size + 1);
}

int run_producer(const std::string& name, const Scenario& s, std::uint32_t index) {
  auto q = Queue::open(name);
  if (!q.ok()) return 10;
  auto p = q->producer();
  if (!p.ok()) return 11;
  for (std::uint32_t seq = 0; seq < s.per_producer; ++seq) {
    const auto m = make_message(index, seq, size_for(s, index, seq));
    const std::uint64_t id = (std::uint64_t(index + 1) << 32) | seq;  // never 0
    if (p->send(Bytes(m), id) != Status::ok) return 12;
  }
  return 0;
}

int run_consumer(const std::string& name, const Scenario& s, Tally* tally) {
  auto q = Queue::open(name);
  if (!q.ok()) return 20;
  auto c = q->consumer();
  if (!c.ok()) return 21;
  const std::uint64_t total = std::uint64_t(s.producers) * s.per_producer;
  std::vector<std::int64_t> last_seq(s.producers, -1);
  auto last_progress = std::chrono::steady_clock::now();
  Message m;
  while (tally->acked_total.load() < total) {
    const Status st = c->receive_for(m, 50ms);
    if (st == Status::timeout) {
      // A hang detector, not a synchronisation: the whole run normally takes seconds.
      if (std::chrono::steady_clock::now() - last_progress > 60s) return 22;
      continue;
    }
    if (st != Status::ok) return 23;
    last_progress = std::chrono::steady_clock::now();
    std::uint32_t producer = 0, seq = 0;
    if (!check_message(m, producer, seq) || producer >= s.producers || seq >= s.per_producer ||
        m.id() != ((std::uint64_t(producer + 1) << 32) | seq) ||
        m.size() != size_for(s, producer, seq)) {
      tally->corrupt.fetch_add(1);
      (void)c->ack(m);
      continue;
    }
    if (s.nack_first_delivery && m.delivery_count() == 1) {
      if (c->nack(m) != Status::ok) return 24;
      continue;
    }
    if (m.redelivered()) tally->redelivered.fetch_add(1);
    if (s.check_order) {
      if (std::int64_t(seq) <= last_seq[producer]) tally->out_of_order.fetch_add(1);
      last_seq[producer] = seq;
    }
    if (c->ack(m) != Status::ok) return 25;
    tally->acks(std::size_t(producer) * s.per_producer + seq).fetch_add(1);
    tally->acked_total.fetch_add(1);
  }
  return 0;
}

void run(const char* stem, const Scenario& s) {
  ScopedQueue q(stem, s.options);
  const std::size_t total = std::size_t(s.producers) * s.per_producer;
  Tally* tally = Tally::make(total);
  ASSERT_NE(tally, nullptr);
  std::vector<pid_t> pids;
  for (std::uint32_t i = 0; i < s.consumers; ++i)
    pids.push_back(spawn([&] { return run_consumer(q.name(), s, tally); }));
  for (std::uint32_t i = 0; i < s.producers; ++i)
    pids.push_back(spawn([&, i] { return run_producer(q.name(), s, i); }));
  for (pid_t pid : pids) EXPECT_EQ(wait_exit(pid), 0) << "child " << pid;

  EXPECT_EQ(tally->acked_total.load(), total);
  EXPECT_EQ(tally->corrupt.load(), 0u);
  EXPECT_EQ(tally->out_of_order.load(), 0u);
  std::size_t missing = 0, doubled = 0;
  for (std::size_t i = 0; i < total; ++i) {
    const auto n = tally->acks(i).load();
    missing += n == 0;
    doubled += n > 1;
  }
  EXPECT_EQ(missing, 0u) << "messages never delivered";
  EXPECT_EQ(doubled, 0u) << "messages delivered and acked twice";
  if (s.nack_first_delivery) {
    EXPECT_EQ(tally->redelivered.load(), total);
  }

  // Everything acked: the ring is empty and every slot is free again.
  const QueueStats st = q->stats();
  EXPECT_EQ(st.ready, 0u);
  EXPECT_EQ(st.in_flight, 0u);
  EXPECT_EQ(st.claimed, 0u);
  EXPECT_EQ(st.acked, total);
  EXPECT_EQ(st.producers + st.consumers, 0u);
  Tally::unmake(tally, total);
}

TEST(MultiProcess, FourProducersFourConsumersDeliverEveryMessageExactlyOnce) {
  Scenario s;
  s.options = {.slot_count = 1024, .slot_size = 128};
  s.per_producer = 250'000;  // 1,000,000 messages in all
  run("mp4x4", s);
}

TEST(MultiProcess, PerProducerOrderHoldsWithOneConsumer) {
  Scenario s;
  s.options = {.slot_count = 256, .slot_size = 128};
  s.consumers = 1;
  s.per_producer = 100'000;
  s.check_order = true;
  run("mporder", s);
}

TEST(MultiProcess, EightSlotRingUnderBackpressureAndWrapAround) {
  Scenario s;
  s.options = {.slot_count = 8, .slot_size = 128};
  s.per_producer = 100'000;  // 50,000 laps of the ring
  run("mpsmall", s);
}

TEST(MultiProcess, MessagesLargerThanASlotArriveWhole) {
  Scenario s;
  // 64 payload bytes per slot; messages of 8 .. 1000 bytes span up to 16 slots.
  s.options = {.slot_count = 64, .slot_size = 128, .max_message_size = 1000};
  s.per_producer = 25'000;
  s.min_size = 8;
  s.max_size = 1000;
  run("mpspan", s);
}

TEST(MultiProcess, EveryMessageNackedOnceIsRedeliveredAndAckedOnce) {
  Scenario s;
  s.options = {.slot_count = 64, .slot_size = 128};
  s.producers = 2;
  s.consumers = 3;
  s.per_producer = 20'000;
  s.nack_first_delivery = true;
  run("mpnack", s);
}

TEST(MultiProcess, ConsumerProcessClosingCleanlyHandsItsMessagesOver) {
  ScopedQueue q("mpclose", {.slot_count = 64});
  {
    auto p = q->producer().value();
    for (int i = 0; i < 20; ++i) ASSERT_EQ(p.send(std::to_string(i)), Status::ok);
  }
  // A child takes 10 messages, acks 3, and exits through its destructors holding 7.
  const pid_t child = spawn([&] {
    auto cq = Queue::open(q.name());
    if (!cq.ok()) return 1;
    auto c = cq->consumer();
    if (!c.ok()) return 2;
    std::vector<Message> ms(10);
    for (auto& m : ms)
      if (c->try_receive(m) != Status::ok) return 3;
    for (int i = 0; i < 3; ++i)
      if (c->ack(ms[i]) != Status::ok) return 4;
    return 0;
  });
  ASSERT_EQ(wait_exit(child), 0);
  auto c = q->consumer().value();
  std::vector<int> got;
  int redelivered = 0;
  Message m;
  while (c.try_receive(m) == Status::ok) {
    got.push_back(std::stoi(std::string(m.view())));
    redelivered += m.redelivered();
    ASSERT_EQ(c.ack(m), Status::ok);
  }
  std::sort(got.begin(), got.end());
  std::vector<int> want;
  for (int i = 3; i < 20; ++i) want.push_back(i);
  EXPECT_EQ(got, want);
  EXPECT_EQ(redelivered, 7);
}

}  // namespace
}  // namespace shmq
