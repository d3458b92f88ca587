// Capacity that a slow message cannot take away (issue 11): a requeued or delayed message
// that a producer laps is relocated to the producer's position instead of blocking it; a
// held message blocks the producers that lap it until its lease ends (the README's capacity
// rule). Every send here is a try_send: "never blocks" is asserted as "never full" while
// the ring has a free slot, not timed.
#include <atomic>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "shmq/watchdog.hpp"

#include "ring/slot_word.hpp"
#include "segment/segment.hpp"
#include "test_util.hpp"

namespace shmq {

const bool kNoEmbeddedWatchdog = (set_embedded_watchdog(false), true);
namespace {

using test::ScopedQueue;
using namespace std::chrono_literals;

using test::text;

// White box: the slot index of the (only) delayed message in the ring, or N.
std::uint64_t delayed_slot(detail::Segment& seg) {
  for (std::uint64_t i = 0; i < seg.slot_count(); ++i)
    if (detail::word_state(seg.slot(i).word.load()) == detail::SlotState::delayed) return i;
  return seg.slot_count();
}

// Makes the delayed message in slot i due (the test does not wait an hour).
void make_due(detail::Segment& seg, std::uint64_t i) { seg.slot(i).deadline_ns.store(1); }

std::string body(std::uint64_t i, std::size_t size) {
  std::string s = "m" + std::to_string(i) + ":";
  while (s.size() < size) s.push_back(char('a' + (i + s.size()) % 26));
  return s;
}

// Sends `count` messages of sizes from `sizes` (cycled) with try_send, each received and
// acked by `c` right after: the ring never holds more than the parked message and one
// other, so a send is never refused. Checks every message arrives once, in order.
void churn(Producer& p, Consumer& c, std::uint64_t count, const std::vector<std::size_t>& sizes,
           std::uint64_t& seq) {
  for (std::uint64_t i = 0; i < count; ++i, ++seq) {
    const std::string s = body(seq, sizes[seq % sizes.size()]);
    ASSERT_EQ(p.try_send(s, 1000 + seq), Status::ok) << "send " << i;
    Message m;
    ASSERT_EQ(c.try_receive(m), Status::ok) << "receive " << i;
    ASSERT_EQ(text(m), s);
    ASSERT_EQ(m.id(), 1000 + seq);
    ASSERT_EQ(m.delivery_count(), 1u);
    ASSERT_EQ(c.ack(m), Status::ok);
  }
}

struct Case {
  const char* name;
  bool checksum;
  std::size_t parked_size;          // the delayed/requeued message's size
  std::vector<std::size_t> sizes;   // the churn's message sizes, cycled
};

// Producers lapping requeued and delayed messages while consumers race them for the same
// slots (a consumer's ready -> held CAS at the old lap against the producer's relocation
// CAS): every message is acked exactly once, with its own bytes. Threads of one process;
// the bound is the test's own (a deadline on every wait), not a timing assertion.
TEST(Capacity, RelocationRacingConsumersLosesAndDoublesNothing) {
  constexpr std::uint32_t kSlots = 16;
  constexpr std::uint64_t kPerProducer = 6000;
  constexpr int kProducers = 2, kConsumers = 2;
  ScopedQueue q("cap-race", {.slot_count = kSlots, .checksum = true});
  std::vector<std::atomic<std::uint32_t>> acked(kProducers * kPerProducer);
  std::atomic<std::uint64_t> total{0};
  std::atomic<bool> failed{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < kProducers; ++t)
    threads.emplace_back([&, t] {
      auto p = q->producer().value();
      for (std::uint64_t i = 0; i < kPerProducer && !failed; ++i) {
        const std::uint64_t id = t * kPerProducer + i;
        if (p.send_for(as_bytes(body(id, 12)), 20s, id + 1) != Status::ok) failed = true;
      }
    });
  for (int t = 0; t < kConsumers; ++t)
    threads.emplace_back([&, t] {
      auto c = q->consumer().value();
      std::uint64_t n = 0;
      while (total.load() < kProducers * kPerProducer && !failed) {
        Message m;
        const Status st = c.receive_for(m, 50ms);
        if (st == Status::timeout) continue;
        if (st != Status::ok || m.id() == 0 || m.id() > kProducers * kPerProducer ||
            text(m) != body(m.id() - 1, 12)) {
          failed = true;
          break;
        }
        ++n;
        // Every 5th delivery goes back (requeue, or a short delay), at most 3 times each.
        if (n % 5 == 0 && m.delivery_count() < 3) {
          const Status r = (n + t) % 2 == 0 ? c.nack(m) : c.nack_after(m, 1ms);
          if (r != Status::ok) failed = true;
          continue;
        }
        if (c.ack(m) != Status::ok) {
          failed = true;
          break;
        }
        acked[m.id() - 1].fetch_add(1);
        total.fetch_add(1);
      }
    });
  // Bounded: if anything wedges, the consumers' loop ends when `failed` is set.
  const auto give_up = std::chrono::steady_clock::now() + 120s;
  while (total.load() < kProducers * kPerProducer && !failed &&
         std::chrono::steady_clock::now() < give_up)
    std::this_thread::sleep_for(10ms);  // the main thread only watches the bound
  if (total.load() < kProducers * kPerProducer) failed = true;
  for (auto& th : threads) th.join();
  ASSERT_FALSE(failed);
  for (std::size_t i = 0; i < acked.size(); ++i) ASSERT_EQ(acked[i].load(), 1u) << "id " << i + 1;
  EXPECT_EQ(q->stats().corrupt, 0u);
}

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

class Lapped : public ::testing::TestWithParam<Case> {};

// One message nacked with a long delay; 10 x N messages sent and acked past it. Every send
// succeeds (the ring always has free slots: the delayed message and one other), and when due the delayed message comes back as it was: bytes, id, delivery count.
TEST_P(Lapped, DelayedMessageNeverBlocksSendsAndIsDeliveredUnchanged) {
  const Case& tc = GetParam();
  constexpr std::uint32_t kSlots = 8;
  ScopedQueue q("cap-delay", {.slot_count = kSlots,
                              .slot_size = 128,
                              .max_message_size = 300,
                              .checksum = tc.checksum});
  auto p = q->producer().value();
  auto c = q->consumer().value();
  const std::string parked = body(999, tc.parked_size);
  ASSERT_EQ(p.try_send(parked, 77), Status::ok);
  Message m;
  ASSERT_EQ(c.try_receive(m), Status::ok);
  const std::uint64_t first = m.position();
  ASSERT_EQ(c.nack_after(m, 1h), Status::ok);
  std::uint64_t seq = 0;
  churn(p, c, 10 * kSlots, tc.sizes, seq);
  if (HasFatalFailure()) return;
  Message none;
  EXPECT_EQ(c.try_receive(none), Status::empty);  // not due yet
  detail::Segment& seg = *q->segment();
  const std::uint64_t i = delayed_slot(seg);
  ASSERT_LT(i, kSlots);
  make_due(seg, i);
  Message again;
  ASSERT_EQ(c.receive_for(again, 10s), Status::ok);  // looks for due messages before it sleeps
  EXPECT_EQ(text(again), parked);
  EXPECT_EQ(again.id(), 77u);
  EXPECT_EQ(again.delivery_count(), 2u);
  EXPECT_TRUE(again.redelivered());
  // It moved with the producers: ten laps on, in the same slot(s).
  EXPECT_GE(again.position(), first + 10 * kSlots - kSlots);
  EXPECT_EQ(again.position() % kSlots, first % kSlots);
  ASSERT_EQ(c.ack(again), Status::ok);
  EXPECT_EQ(c.try_receive(none), Status::empty);
  // Nothing stayed behind: the ring takes N messages again.
  for (std::uint32_t k = 0; k < kSlots; ++k) ASSERT_EQ(p.try_send("f"), Status::ok);
  EXPECT_EQ(p.try_send("f"), Status::full);
}

// A busy consumer (try_receive in a loop, never asleep) must get a relocated delayed
// message once it is due: it lands at the tail, ahead of dispatch, which steps over it, and
// it used to be looked for again only when a consumer slept or another requeue happened.
TEST(Capacity, ABusyConsumerGetsARelocatedDelayedMessageWhenDue) {
  constexpr std::uint32_t kSlots = 8;
  ScopedQueue q("cap-delay-busy", {.slot_count = kSlots, .slot_size = 128});
  auto p = q->producer().value();
  auto c = q->consumer().value();
  ASSERT_EQ(p.try_send("parked", 77), Status::ok);
  Message m;
  ASSERT_EQ(c.try_receive(m), Status::ok);
  ASSERT_EQ(c.nack_after(m, 1h), Status::ok);
  std::uint64_t seq = 0;
  churn(p, c, 3 * kSlots, {8}, seq);  // relocated on every lap
  if (HasFatalFailure()) return;
  detail::Segment& seg = *q->segment();
  const std::uint64_t i = delayed_slot(seg);
  ASSERT_LT(i, kSlots);
  make_due(seg, i);
  bool got = false;
  for (std::uint32_t k = 0; k < 4 * kSlots && !got; ++k) {
    ASSERT_EQ(p.try_send("more"), Status::ok);
    for (int r = 0; r < 2; ++r) {
      Message x;
      if (c.try_receive(x) != Status::ok) continue;
      got = got || text(x) == "parked";
      ASSERT_EQ(c.ack(x), Status::ok);
    }
  }
  EXPECT_TRUE(got) << "the due message was never received by try_receive";
}

// A requeued (nacked) message that dispatch passed and no consumer took yet: the producer
// that laps it relocates it, and it is delivered next at its new position, unchanged.
// Each lap: the ring holds only the requeued message; N - k one-slot messages are sent
// with nobody receiving (without relocation the first send of every lap after the first
// is `full`: its slot holds the requeued message); then everything is received, the
// requeued message first, the others in order, and it is requeued again.
TEST_P(Lapped, RequeuedMessageBehindDispatchIsRelocatedAndDeliveredUnchanged) {
  const Case& tc = GetParam();
  constexpr std::uint32_t kSlots = 8;
  ScopedQueue q("cap-requeue", {.slot_count = kSlots,
                                .slot_size = 128,
                                .max_message_size = 300,
                                .checksum = tc.checksum});
  auto p = q->producer().value();
  auto c = q->consumer().value();
  const std::size_t payload = q->segment()->payload_size();
  const std::uint64_t parked_slots = (tc.parked_size + payload - 1) / payload;
  const std::string parked = body(999, tc.parked_size);
  ASSERT_EQ(p.try_send(parked, 77), Status::ok);
  Message m;
  ASSERT_EQ(c.try_receive(m), Status::ok);
  ASSERT_EQ(c.nack(m), Status::ok);
  std::uint64_t seq = 0;
  std::uint32_t deliveries = 1;
  std::uint64_t last_position = m.position();
  for (int lap = 0; lap < 10; ++lap) {
    std::vector<std::string> sent;
    for (std::uint64_t j = 0; j < kSlots - parked_slots; ++j, ++seq) {
      sent.push_back(body(seq, 10));
      ASSERT_EQ(p.try_send(sent.back(), 1000 + seq), Status::ok) << "lap " << lap << " send " << j;
    }
    Message r;
    ASSERT_EQ(c.try_receive(r), Status::ok);
    ASSERT_EQ(text(r), parked) << "lap " << lap;
    ASSERT_EQ(r.id(), 77u);
    ASSERT_EQ(r.delivery_count(), ++deliveries);
    ASSERT_TRUE(r.redelivered());
    if (lap > 0) {
      EXPECT_GT(r.position(), last_position);  // moved on with the producer
    }
    last_position = r.position();
    for (const std::string& s : sent) {
      Message f;
      ASSERT_EQ(c.try_receive(f), Status::ok);
      ASSERT_EQ(text(f), s);
      ASSERT_EQ(f.delivery_count(), 1u);
      ASSERT_EQ(c.ack(f), Status::ok);
    }
    Message none;
    ASSERT_EQ(c.try_receive(none), Status::empty);
    ASSERT_EQ(c.nack(r), Status::ok);
  }
}

// A ring whose every slot holds a delayed message is full: a send relocates them at most
// a lap's worth (it does not move them round for ever), then says `full`; nothing is lost.
TEST(Capacity, RingFullOfDelayedMessagesIsFullAndKeepsThemAll) {
  constexpr std::uint32_t kSlots = 4;
  ScopedQueue q("cap-alldelayed", {.slot_count = kSlots});
  auto p = q->producer().value();
  auto c = q->consumer().value();
  for (std::uint32_t i = 0; i < kSlots; ++i) ASSERT_EQ(p.try_send(body(i, 8), i + 1), Status::ok);
  for (std::uint32_t i = 0; i < kSlots; ++i) {
    Message m;
    ASSERT_EQ(c.try_receive(m), Status::ok);
    ASSERT_EQ(c.nack_after(m, 1h), Status::ok);
  }
  EXPECT_EQ(p.try_send("over"), Status::full);
  EXPECT_EQ(p.send_for(as_bytes("over"), 1ms), Status::timeout);
  detail::Segment& seg = *q->segment();
  for (std::uint64_t i = 0; i < kSlots; ++i) {
    ASSERT_EQ(detail::word_state(seg.slot(i).word.load()), detail::SlotState::delayed);
    make_due(seg, i);
  }
  std::vector<bool> seen(kSlots, false);
  for (std::uint32_t i = 0; i < kSlots; ++i) {
    Message m;
    ASSERT_EQ(c.receive_for(m, 10s), Status::ok);
    ASSERT_GE(m.id(), 1u);
    ASSERT_LE(m.id(), kSlots);
    EXPECT_EQ(text(m), body(m.id() - 1, 8));
    EXPECT_EQ(m.delivery_count(), 2u);
    EXPECT_FALSE(seen[m.id() - 1]);
    seen[m.id() - 1] = true;
    ASSERT_EQ(c.ack(m), Status::ok);
  }
  for (std::uint32_t i = 0; i < kSlots; ++i) EXPECT_EQ(p.try_send("f"), Status::ok);
}

// A held message is not relocated: its holder's ack, nack and lease name its position. It
// blocks the producer that laps it until its lease ends (README: "Capacity"): with one
// message held, exactly N - 1 more messages are sent however many slots are free, and the
// send after the lease expiry goes through (the message, requeued by the watchdog, is then
// relocated like any requeue).
TEST(Capacity, HeldMessageBlocksTheProducerThatLapsItUntilItsLeaseEnds) {
  constexpr std::uint32_t kSlots = 8;
  ScopedQueue q("cap-held", {.slot_count = kSlots, .lease = 1h});
  auto p = q->producer().value();
  auto holder = q->consumer().value();
  auto other = q->consumer().value();
  ASSERT_EQ(p.try_send("held", 77), Status::ok);
  Message h;
  ASSERT_EQ(holder.try_receive(h), Status::ok);
  ASSERT_EQ(holder.extend_lease(h, 1h), Status::ok);
  std::uint64_t sent = 0;
  for (; sent < 10 * kSlots; ++sent) {
    if (p.try_send(body(sent, 8)) != Status::ok) break;
    Message m;
    ASSERT_EQ(other.try_receive(m), Status::ok);
    ASSERT_EQ(other.ack(m), Status::ok);
  }
  EXPECT_EQ(sent, kSlots - 1);  // the capacity rule, measured
  // The lease ends (white box: a 1 ms lease instead of waiting an hour).
  ASSERT_TRUE(q->set_policy({.lease = 1ms}).ok());
  q->segment()->slot(h.position()).deadline_ns.store(1);
  auto w = Watchdog::attach(*q).value();
  const auto give_up = std::chrono::steady_clock::now() + 10s;
  std::uint32_t expired = 0;
  while (expired == 0 && std::chrono::steady_clock::now() < give_up) expired += w.tick().leases_expired;
  ASSERT_EQ(expired, 1u);
  ASSERT_EQ(p.try_send("next"), Status::ok);
  Message again;
  ASSERT_EQ(other.try_receive(again), Status::ok);
  EXPECT_EQ(text(again), "held");
  EXPECT_EQ(again.id(), 77u);
  EXPECT_EQ(again.delivery_count(), 2u);
  Message next;
  ASSERT_EQ(other.try_receive(next), Status::ok);
  EXPECT_EQ(text(next), "next");
  EXPECT_EQ(holder.ack(h), Status::lease_lost);
  ASSERT_EQ(other.ack(again), Status::ok);
  ASSERT_EQ(other.ack(next), Status::ok);
}

INSTANTIATE_TEST_SUITE_P(
    Capacity, Lapped,
    ::testing::Values(Case{"OneSlot", false, 10, {10}}, Case{"Checksummed", true, 10, {10}},
                      Case{"MultiSlotParked", false, 150, {10, 60}},
                      Case{"MultiSlotAround", true, 150, {10, 150, 250, 60}}),
    [](const auto& param_info) { return std::string(param_info.param.name); });

}  // namespace
}  // namespace shmq
