// The ring and the producer/consumer API in one process: delivery, acks, backpressure,
// requeue, large messages, zero-copy, and the errors of bad input.
#include <algorithm>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "shmq/watchdog.hpp"

#include "ring/requeue_map.hpp"
#include "ring/slot_word.hpp"
#include "segment/segment.hpp"
#include "test_util.hpp"

namespace shmq {

// The ring protocol alone, member rows counted exactly: no embedded watchdog
// (healing by default is tested in healing_test.cpp).
const bool kNoEmbeddedWatchdog = (set_embedded_watchdog(false), true);
namespace {

using test::ScopedQueue;
using namespace std::chrono_literals;

using test::text;

TEST(Ring, SendReceiveAckRoundTrip) {
  ScopedQueue q("rt");
  auto p = q->producer().value();
  auto c = q->consumer().value();
  ASSERT_EQ(p.send("hello", 42), Status::ok);
  Message m;
  ASSERT_EQ(c.try_receive(m), Status::ok);
  EXPECT_EQ(text(m), "hello");
  EXPECT_EQ(m.id(), 42u);
  EXPECT_EQ(m.position(), 0u);
  EXPECT_EQ(m.delivery_count(), 1u);
  EXPECT_FALSE(m.redelivered());
  EXPECT_TRUE(m.held());
  EXPECT_EQ(c.ack(m), Status::ok);
  EXPECT_FALSE(m.held());
  EXPECT_EQ(c.try_receive(m), Status::empty);
}

TEST(Ring, PositionsIncreaseAndAutoIdsAreDistinct) {
  ScopedQueue q("pos", {.slot_count = 4});
  auto p = q->producer().value();
  auto c = q->consumer().value();
  std::uint64_t last_id = 0;
  for (std::uint64_t i = 0; i < 20; ++i) {  // five laps of a 4-slot ring
    ASSERT_EQ(p.send(std::to_string(i)), Status::ok);
    Message m;
    ASSERT_EQ(c.try_receive(m), Status::ok);
    EXPECT_EQ(m.position(), i);
    EXPECT_EQ(text(m), std::to_string(i));
    EXPECT_NE(m.id(), 0u);
    EXPECT_NE(m.id(), last_id);
    last_id = m.id();
    ASSERT_EQ(c.ack(m), Status::ok);
  }
}

TEST(Ring, EmptyMessageIsDelivered) {
  ScopedQueue q("emptymsg");
  auto p = q->producer().value();
  auto c = q->consumer().value();
  ASSERT_EQ(p.send(Bytes{}), Status::ok);
  Message m;
  ASSERT_EQ(c.try_receive(m), Status::ok);
  EXPECT_EQ(m.size(), 0u);
  EXPECT_EQ(c.ack(m), Status::ok);
}

TEST(Ring, FullRingRefusesTrySendUntilAck) {
  ScopedQueue q("full", {.slot_count = 8});
  auto p = q->producer().value();
  auto c = q->consumer().value();
  for (int i = 0; i < 8; ++i) ASSERT_EQ(p.try_send("m" + std::to_string(i)), Status::ok);
  EXPECT_EQ(p.try_send("overflow"), Status::full);
  EXPECT_EQ(p.send_for(as_bytes("overflow"), 1ms), Status::timeout);
  // Received but unacked messages still occupy their slots: nothing is overwritten.
  std::vector<Message> held(8);
  for (auto& m : held) ASSERT_EQ(c.try_receive(m), Status::ok);
  EXPECT_EQ(p.try_send("overflow"), Status::full);
  for (int i = 0; i < 8; ++i) EXPECT_EQ(text(held[i]), "m" + std::to_string(i));
  ASSERT_EQ(c.ack(held[0]), Status::ok);
  EXPECT_EQ(p.try_send("fits"), Status::ok);
  EXPECT_EQ(p.try_send("overflow"), Status::full);
}

TEST(Ring, OutOfOrderAcksFreeSlotsInRingOrder) {
  ScopedQueue q("ooo", {.slot_count = 4});
  auto p = q->producer().value();
  auto c = q->consumer().value();
  for (int i = 0; i < 4; ++i) ASSERT_EQ(p.try_send(std::to_string(i)), Status::ok);
  std::vector<Message> ms(4);
  for (auto& m : ms) ASSERT_EQ(c.try_receive(m), Status::ok);
  // Acking a later message frees its slot, but the producer needs the slot at the tail.
  ASSERT_EQ(c.ack(ms[2]), Status::ok);
  EXPECT_EQ(p.try_send("x"), Status::full);
  ASSERT_EQ(c.ack(ms[0]), Status::ok);
  EXPECT_EQ(p.try_send("x"), Status::ok);
}

TEST(Ring, TooLargeMessageIsRefusedNotTruncated) {
  ScopedQueue q("large", {.slot_count = 8, .slot_size = 128, .max_message_size = 300});
  auto p = q->producer().value();
  EXPECT_EQ(p.try_send(std::string(301, 'x')), Status::too_large);
  EXPECT_EQ(p.try_send(std::string(300, 'x')), Status::ok);
  EXPECT_EQ(p.max_message_size(), 300u);
}

TEST(Ring, MessagesLargerThanASlotSpanSlotsAndArriveWhole) {
  // 64-byte payload per slot; messages up to 8 slots.
  ScopedQueue q("span", {.slot_count = 16, .slot_size = 128, .max_message_size = 512});
  auto p = q->producer().value();
  auto c = q->consumer().value();
  for (int round = 0; round < 10; ++round) {  // wraps the ring several times
    for (std::size_t len : {1u, 64u, 65u, 200u, 512u}) {
      std::string s(len, 'a');
      for (std::size_t i = 0; i < len; ++i) s[i] = char('a' + (i * 7 + round) % 26);
      ASSERT_EQ(p.send_for(as_bytes(s), 1s), Status::ok) << len;
      Message m;
      ASSERT_EQ(c.try_receive(m), Status::ok);
      EXPECT_EQ(text(m), s) << len;
      ASSERT_EQ(c.ack(m), Status::ok);
    }
  }
}

TEST(Ring, LargeMessageWaitsForAllItsSlots) {
  ScopedQueue q("spanfull", {.slot_count = 8, .slot_size = 128, .max_message_size = 512});
  auto p = q->producer().value();
  auto c = q->consumer().value();
  for (int i = 0; i < 6; ++i) ASSERT_EQ(p.try_send("s"), Status::ok);
  EXPECT_EQ(p.try_send(std::string(130, 'L')), Status::full);  // needs 3, 2 free
  Message m;
  ASSERT_EQ(c.try_receive(m), Status::ok);
  ASSERT_EQ(c.ack(m), Status::ok);
  EXPECT_EQ(p.try_send(std::string(130, 'L')), Status::ok);
}

TEST(Ring, NackRequeuesWithDeliveryCountRaised) {
  ScopedQueue q("nack");
  auto p = q->producer().value();
  auto c = q->consumer().value();
  ASSERT_EQ(p.send("a", 7), Status::ok);
  ASSERT_EQ(p.send("b", 8), Status::ok);
  Message m;
  ASSERT_EQ(c.try_receive(m), Status::ok);
  ASSERT_EQ(text(m), "a");
  ASSERT_EQ(c.nack(m), Status::ok);
  // The requeued message comes back before newer ones, marked redelivered.
  Message again;
  ASSERT_EQ(c.try_receive(again), Status::ok);
  EXPECT_EQ(text(again), "a");
  EXPECT_EQ(again.id(), 7u);
  EXPECT_EQ(again.delivery_count(), 2u);
  EXPECT_TRUE(again.redelivered());
  ASSERT_EQ(c.nack(again), Status::ok);
  ASSERT_EQ(c.try_receive(again), Status::ok);
  EXPECT_EQ(again.delivery_count(), 3u);
  ASSERT_EQ(c.ack(again), Status::ok);
  Message b;
  ASSERT_EQ(c.try_receive(b), Status::ok);
  EXPECT_EQ(text(b), "b");
  EXPECT_EQ(b.delivery_count(), 1u);
  ASSERT_EQ(c.ack(b), Status::ok);
  EXPECT_EQ(c.try_receive(b), Status::empty);
}

TEST(Ring, NackWithoutRequeueDropsTheMessageWhenTheQueueDoesNotDeadLetter) {
  ScopedQueue q("nackdrop", {.slot_count = 2, .dead_letter = false});
  auto p = q->producer().value();
  auto c = q->consumer().value();
  ASSERT_EQ(p.send("x"), Status::ok);
  Message m;
  ASSERT_EQ(c.try_receive(m), Status::ok);
  ASSERT_EQ(c.nack(m, /*requeue=*/false), Status::ok);
  EXPECT_EQ(c.try_receive(m), Status::empty);
  EXPECT_EQ(p.try_send("y"), Status::ok);
  EXPECT_EQ(p.try_send("z"), Status::ok);
}

TEST(Ring, RequeuedMessageGoesToAnotherConsumer) {
  ScopedQueue q("nack2");
  auto p = q->producer().value();
  auto c1 = q->consumer().value();
  auto c2 = q->consumer().value();
  ASSERT_EQ(p.send("only"), Status::ok);
  Message m;
  ASSERT_EQ(c1.try_receive(m), Status::ok);
  Message none;
  EXPECT_EQ(c2.try_receive(none), Status::empty);  // held by c1: one consumer at a time
  ASSERT_EQ(c1.nack(m), Status::ok);
  ASSERT_EQ(c2.try_receive(none), Status::ok);
  EXPECT_EQ(text(none), "only");
  EXPECT_TRUE(none.redelivered());
}

TEST(Ring, ClosingConsumerHandsUnackedMessagesToAnother) {
  ScopedQueue q("close");
  auto p = q->producer().value();
  for (int i = 0; i < 5; ++i) ASSERT_EQ(p.send(std::to_string(i)), Status::ok);
  auto c2 = q->consumer().value();
  {
    auto c1 = q->consumer().value();
    std::vector<Message> ms(3);
    for (auto& m : ms) ASSERT_EQ(c1.try_receive(m), Status::ok);
    ASSERT_EQ(c1.ack(ms[1]), Status::ok);
    // c1 closes holding "0" and "2".
  }
  std::vector<std::string> got;
  Message m;
  while (c2.try_receive(m) == Status::ok) {
    got.push_back(text(m));
    if (m.view() == "0" || m.view() == "2") {
      EXPECT_TRUE(m.redelivered());
    }
    ASSERT_EQ(c2.ack(m), Status::ok);
  }
  std::sort(got.begin(), got.end());
  EXPECT_EQ(got, (std::vector<std::string>{"0", "2", "3", "4"}));
}

TEST(Ring, SecondAckOfTheSameMessageIsRefused) {
  ScopedQueue q("dblack");
  auto p = q->producer().value();
  auto c = q->consumer().value();
  ASSERT_EQ(p.send("x"), Status::ok);
  Message m;
  ASSERT_EQ(c.try_receive(m), Status::ok);
  ASSERT_EQ(c.ack(m), Status::ok);
  // As error.hpp documents: a message this consumer no longer holds is lease_lost.
  EXPECT_EQ(c.ack(m), Status::lease_lost);
  EXPECT_EQ(c.nack(m), Status::lease_lost);
  EXPECT_EQ(c.nack_after(m, std::chrono::milliseconds(0)), Status::lease_lost);
  EXPECT_EQ(c.extend_lease(m, std::chrono::milliseconds(10)), Status::lease_lost);
  Message n;
  ASSERT_EQ(p.send("y"), Status::ok);
  ASSERT_EQ(c.try_receive(n), Status::ok);
  ASSERT_EQ(c.nack(n), Status::ok);
  EXPECT_EQ(c.ack(n), Status::lease_lost);  // nacked, then acked: no longer ours
}

TEST(Ring, AckOfAHandleThatNeverHeldAMessageIsInvalid) {
  ScopedQueue q("neverheld");
  auto c = q->consumer().value();
  Message m;
  EXPECT_EQ(c.ack(m), Status::invalid);
  EXPECT_EQ(c.nack(m), Status::invalid);
  EXPECT_EQ(c.extend_lease(m, std::chrono::milliseconds(10)), Status::invalid);
}

TEST(Ring, BrowseCopiesReadyMessagesWithoutTakingThem) {
  ScopedQueue q("browse");
  auto p = q->producer().value();
  auto c = q->consumer().value();
  ASSERT_EQ(p.send("zero", 10), Status::ok);
  ASSERT_EQ(p.send("one", 11), Status::ok);
  ASSERT_EQ(p.send("two", 12), Status::ok);
  Message held;
  ASSERT_EQ(c.try_receive(held), Status::ok);  // position 0 is in flight
  Message back;
  ASSERT_EQ(c.try_receive(back), Status::ok);  // position 1: delivered once, given back
  ASSERT_EQ(c.nack(back), Status::ok);

  auto ready = q->browse(10);
  ASSERT_EQ(ready.size(), 2u);
  EXPECT_EQ(ready[0].position, 1u);
  EXPECT_EQ(ready[0].id, 11u);
  EXPECT_EQ(ready[0].delivery_count, 1u);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(ready[0].data.data()), ready[0].size), "one");
  EXPECT_EQ(ready[1].position, 2u);
  EXPECT_EQ(ready[1].delivery_count, 0u);
  EXPECT_EQ(ready[1].state, BrowsedMessage::State::ready);
  EXPECT_EQ(q->browse(1).size(), 1u);  // at most N
  auto all = q->browse(10, /*include_in_flight=*/true, /*max_bytes=*/2);
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[0].state, BrowsedMessage::State::in_flight);
  EXPECT_EQ(all[0].size, 4u);
  EXPECT_EQ(all[0].data.size(), 2u);  // cut at max_bytes

  // Browsing took nothing: the same messages come, with the same counts.
  const auto stats = q->stats();
  EXPECT_EQ(stats.ready, 2u);
  EXPECT_EQ(stats.in_flight, 1u);
  Message m;
  ASSERT_EQ(c.try_receive(m), Status::ok);
  EXPECT_EQ(m.position(), 1u);
  EXPECT_EQ(m.delivery_count(), 2u);
  ASSERT_EQ(c.ack(m), Status::ok);
  ASSERT_EQ(c.try_receive(m), Status::ok);
  EXPECT_EQ(m.position(), 2u);
  EXPECT_EQ(m.delivery_count(), 1u);
  ASSERT_EQ(c.ack(m), Status::ok);
  ASSERT_EQ(c.ack(held), Status::ok);
  EXPECT_TRUE(q->browse(10, true).empty());
}

TEST(Ring, AckOfAMessageTakenBackIsLeaseLost) {
  ScopedQueue q("lease");
  auto p = q->producer().value();
  auto c = q->consumer().value();
  ASSERT_EQ(p.send("x"), Status::ok);
  Message m;
  ASSERT_EQ(c.try_receive(m), Status::ok);
  // What the watchdog does when a lease expires: the slot goes back to ready.
  EXPECT_EQ(c.release_all(), 1u);
  EXPECT_EQ(c.ack(m), Status::lease_lost);
  Message again;
  ASSERT_EQ(c.try_receive(again), Status::ok);
  EXPECT_EQ(again.delivery_count(), 2u);
  EXPECT_EQ(c.ack(again), Status::ok);
}

TEST(Ring, ReceiveIntoAHeldHandleIsRefused) {
  ScopedQueue q("heldhandle");
  auto p = q->producer().value();
  auto c = q->consumer().value();
  ASSERT_EQ(p.send("a"), Status::ok);
  ASSERT_EQ(p.send("b"), Status::ok);
  Message m;
  ASSERT_EQ(c.try_receive(m), Status::ok);
  EXPECT_EQ(c.try_receive(m), Status::invalid);
  EXPECT_EQ(text(m), "a");
}

TEST(Ring, ZeroCopyReserveWriteCommit) {
  ScopedQueue q("zc", {.slot_count = 4, .slot_size = 128});
  auto p = q->producer().value();
  auto c = q->consumer().value();
  Reservation r;
  ASSERT_EQ(p.try_reserve(10, r), Status::ok);
  ASSERT_EQ(r.data().size(), 10u);
  std::memcpy(r.data().data(), "0123456789", 10);
  r.resize(4);
  ASSERT_EQ(p.commit(r, 99), Status::ok);
  EXPECT_FALSE(r.valid());
  Message m;
  ASSERT_EQ(c.try_receive(m), Status::ok);
  EXPECT_EQ(text(m), "0123");
  EXPECT_EQ(m.id(), 99u);
  EXPECT_EQ(c.ack(m), Status::ok);
  Reservation big;
  EXPECT_EQ(p.try_reserve(65, big), Status::too_large);  // more than one slot's payload
}

// Issue 16: a batch takes the run of ready messages behind the first with one dispatch
// move. The run ends at a message still being written: nothing behind it is taken past it,
// and once it is committed the next batch starts there, in order.
TEST(Ring, ABatchRunStopsAtAMessageStillBeingWrittenAndKeepsTheOrder) {
  ScopedQueue q("batchrun", {.slot_count = 16});
  auto p = q->producer().value();
  auto c = q->consumer().value();
  ASSERT_EQ(p.send("m0"), Status::ok);
  ASSERT_EQ(p.send("m1"), Status::ok);
  Reservation r;
  ASSERT_EQ(p.try_reserve(2, r), Status::ok);  // position 2, being written
  for (int i = 3; i < 8; ++i) ASSERT_EQ(p.send("m" + std::to_string(i)), Status::ok);
  std::vector<Message> ms(16);
  ASSERT_EQ(c.receive_batch(ms, 1s), 2u);
  EXPECT_EQ(text(ms[0]), "m0");
  EXPECT_EQ(text(ms[1]), "m1");
  EXPECT_EQ(q->stats().dispatch, 2u);
  ASSERT_EQ(c.ack(std::span<Message>(ms.data(), 2)), Status::ok);
  std::memcpy(r.data().data(), "m2", 2);
  ASSERT_EQ(p.commit(r), Status::ok);
  ASSERT_EQ(c.receive_batch(ms, 1s), 6u);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(text(ms[i]), "m" + std::to_string(i + 2)) << i;
  EXPECT_EQ(q->stats().dispatch, 8u);
  // A batch that ends inside a run leaves the rest for the next one.
  ASSERT_EQ(c.ack(std::span<Message>(ms.data(), 6)), Status::ok);
  for (int i = 8; i < 12; ++i) ASSERT_EQ(p.send("m" + std::to_string(i)), Status::ok);
  std::vector<Message> two(2);
  ASSERT_EQ(c.receive_batch(two, 1s), 2u);
  EXPECT_EQ(text(two[1]), "m9");
  EXPECT_EQ(q->stats().dispatch, 10u);
  ASSERT_EQ(c.receive_batch(two, 1s), 0u) << "the handles still hold their messages";
  ASSERT_EQ(c.ack(std::span<Message>(two)), Status::ok);
  ASSERT_EQ(c.receive_batch(two, 1s), 2u);
  EXPECT_EQ(text(two[0]), "m10");
}

TEST(Ring, AbandonedReservationIsSkippedNotDelivered) {
  ScopedQueue q("zcabandon", {.slot_count = 2});
  auto p = q->producer().value();
  auto c = q->consumer().value();
  {
    Reservation r;
    ASSERT_EQ(p.try_reserve(8, r), Status::ok);
    Message none;
    EXPECT_EQ(c.try_receive(none), Status::empty);  // claimed, not committed
  }
  ASSERT_EQ(p.send("after"), Status::ok);
  Message m;
  ASSERT_EQ(c.try_receive(m), Status::ok);
  EXPECT_EQ(text(m), "after");
  EXPECT_EQ(m.position(), 1u);
  ASSERT_EQ(c.ack(m), Status::ok);
  // The abandoned position's slot is free again: the ring holds two new messages.
  EXPECT_EQ(p.try_send("1"), Status::ok);
  EXPECT_EQ(p.try_send("2"), Status::ok);
  EXPECT_EQ(p.try_send("3"), Status::full);
}

TEST(Ring, BatchSendAndReceive) {
  ScopedQueue q("batch", {.slot_count = 64});
  auto p = q->producer().value();
  auto c = q->consumer().value();
  std::vector<std::string> payloads;
  for (int i = 0; i < 40; ++i) payloads.push_back("msg" + std::to_string(i));
  std::vector<Bytes> views;
  for (auto& s : payloads) views.push_back(as_bytes(s));
  Status st = Status::invalid;
  ASSERT_EQ(p.send_batch(views, 1s, &st), 40u);
  EXPECT_EQ(st, Status::ok);
  std::vector<Message> ms(32);
  ASSERT_EQ(c.receive_batch(ms, 1s), 32u);
  for (int i = 0; i < 32; ++i) EXPECT_EQ(text(ms[i]), payloads[i]);
  EXPECT_EQ(c.ack(ms), Status::ok);
  std::vector<Message> rest(32);
  ASSERT_EQ(c.receive_batch(rest, 1s), 8u);
  EXPECT_EQ(text(rest[7]), "msg39");
  EXPECT_EQ(c.ack(std::span<Message>(rest.data(), 8)), Status::ok);
}

TEST(Ring, BatchSendStopsAtFullAndSaysWhy) {
  ScopedQueue q("batchfull", {.slot_count = 4});
  auto p = q->producer().value();
  std::vector<Bytes> views(6, as_bytes("x"));
  Status st = Status::ok;
  EXPECT_EQ(p.send_batch(views, 1ms, &st), 4u);
  EXPECT_EQ(st, Status::timeout);
}

TEST(Ring, ReceiveForTimesOutOnEmptyQueue) {
  ScopedQueue q("timeout");
  auto c = q->consumer().value();
  Message m;
  EXPECT_EQ(c.receive_for(m, 2ms), Status::timeout);
  EXPECT_EQ(c.try_receive(m), Status::empty);
}

TEST(Ring, InterruptWakesABlockedReceive) {
  ScopedQueue q("interrupt");
  auto c = q->consumer().value();
  std::atomic<int> result{-1};
  std::thread t([&] {
    Message m;
    result = static_cast<int>(c.receive(m));
  });
  // The receiver is either still spinning or asleep on the futex; both must see it.
  c.interrupt();
  t.join();
  EXPECT_EQ(result.load(), static_cast<int>(Status::interrupted));
  c.clear_interrupt();
  Message m;
  EXPECT_EQ(c.receive_for(m, 1ms), Status::timeout);
}

TEST(Ring, BlockedSendWakesWhenAConsumerAcks) {
  ScopedQueue q("wake", {.slot_count = 2});
  auto p = q->producer().value();
  auto c = q->consumer().value();
  ASSERT_EQ(p.send("1"), Status::ok);
  ASSERT_EQ(p.send("2"), Status::ok);
  std::thread t([&] { EXPECT_EQ(p.send("3"), Status::ok); });  // blocks: ring full
  Message m;
  for (int i = 1; i <= 3; ++i) {
    ASSERT_EQ(c.receive(m), Status::ok);
    EXPECT_EQ(text(m), std::to_string(i));
    ASSERT_EQ(c.ack(m), Status::ok);
  }
  t.join();
}

TEST(Ring, StatsCountWhatTheRingHolds) {
  ScopedQueue q("stats", {.slot_count = 8});
  auto p = q->producer().value();
  auto c = q->consumer().value();
  for (int i = 0; i < 5; ++i) ASSERT_EQ(p.send("x"), Status::ok);
  Message a, b;
  ASSERT_EQ(c.try_receive(a), Status::ok);
  ASSERT_EQ(c.try_receive(b), Status::ok);
  ASSERT_EQ(c.ack(a), Status::ok);
  const QueueStats s = q->stats();
  EXPECT_EQ(s.tail, 5u);
  EXPECT_EQ(s.ready, 3u);
  EXPECT_EQ(s.in_flight, 1u);
  EXPECT_EQ(s.producers, 1u);
  EXPECT_EQ(s.consumers, 1u);
  EXPECT_EQ(s.sent, 5u);
  EXPECT_EQ(s.received, 2u);
  EXPECT_EQ(s.acked, 1u);
  EXPECT_EQ(s.free_slots, 4u);  // 8 - 3 ready - 1 held
}

TEST(Ring, MemberTableFullIsAClearError) {
  ScopedQueue q("members", {.max_members = 2});
  auto a = q->producer().value();
  auto b = q->consumer().value();
  auto c = q->consumer();
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.error().code(), Errc::no_space);
  EXPECT_NE(c.error().message().find("no free member row"), std::string::npos);
  { auto gone = std::move(a); }  // unregisters
  EXPECT_TRUE(q->consumer().ok());
}

TEST(Ring, MembersRegisterPidAndStartTime) {
  ScopedQueue q("rows");
  auto p = q->producer().value();
  const auto& seg = *q->segment();
  const auto& row = seg.member(p.member_index());
  const std::uint64_t st = row.state.load();
  EXPECT_EQ(detail::member_status(st), detail::MemberStatus::active);
  EXPECT_EQ(detail::member_role(st), detail::Role::producer);
  EXPECT_EQ(detail::member_pid(st), static_cast<std::uint32_t>(::getpid()));
  EXPECT_NE(row.start_time.load(), 0u);
  EXPECT_NE(row.heartbeat_ns.load(), 0u);
}

TEST(Ring, GarbageSlotWordIsNeverDeliveredAndDoesNotWedge) {
  ScopedQueue q("garbage", {.slot_count = 8});
  auto p = q->producer().value();
  auto c = q->consumer().value();
  ASSERT_EQ(p.send("a"), Status::ok);
  ASSERT_EQ(p.send("b"), Status::ok);
  // Another process scribbles a ready word with an impossible fragment count on slot 0.
  q->segment()->slot(0).word.store(
      detail::make_word(0, detail::SlotState::ready, detail::kNoOwner, 4095));
  q->segment()->slot(1).length.store(0x7fffffffu);  // and a huge length on slot 1
  Message m;
  ASSERT_EQ(c.try_receive(m), Status::ok);
  EXPECT_EQ(m.position(), 1u);
  EXPECT_LE(m.size(), q->max_message_size());  // clamped, never read out of bounds
  // A length with its top bit set claims a properties block (issue 14) that is not there:
  // never delivered (dead-lettered as corrupt), and nothing outside the message is read.
  ASSERT_EQ(p.send("c"), Status::ok);
  q->segment()->slot(2).length.store(0xffffffffu);
  ASSERT_EQ(p.send("d"), Status::ok);
  Message next;
  ASSERT_EQ(c.try_receive(next), Status::ok);
  EXPECT_EQ(text(next), "d");
}

TEST(Ring, StaleHandleCannotAckOrNackALaterDelivery) {
  ScopedQueue q("stale", {.slot_count = 4});
  auto p = q->producer().value();
  auto c = q->consumer().value();
  auto other = q->consumer().value();
  ASSERT_EQ(p.send("x"), Status::ok);
  Message first;
  ASSERT_EQ(c.try_receive(first), Status::ok);
  ASSERT_EQ(c.release_all(), 1u);  // taken back (as a lease expiry would)
  Message second;
  ASSERT_EQ(c.try_receive(second), Status::ok);  // same slot, same consumer, same word
  EXPECT_EQ(second.delivery_count(), 2u);
  EXPECT_EQ(c.nack(first), Status::lease_lost);  // must not hand `second` to `other`
  Message none;
  EXPECT_EQ(other.try_receive(none), Status::empty);
  EXPECT_EQ(c.ack(second), Status::ok);
}

TEST(Ring, MovedFromMessageHoldsNothing) {
  ScopedQueue q("moved");
  auto p = q->producer().value();
  auto c = q->consumer().value();
  ASSERT_EQ(p.send("x"), Status::ok);
  Message a;
  ASSERT_EQ(c.try_receive(a), Status::ok);
  Message b = std::move(a);
  EXPECT_FALSE(a.held());  // NOLINT(bugprone-use-after-move): that is the point
  EXPECT_EQ(c.ack(a), Status::invalid);
  EXPECT_EQ(b.view(), "x");
  EXPECT_EQ(c.ack(b), Status::ok);
}

TEST(Ring, AbandonedReservationWakesSleepingProducers) {
  ScopedQueue q("abandonwake", {.slot_count = 2});
  auto p = q->producer().value();
  auto& wait = q->segment()->header().producers_wait;
  Reservation r;
  ASSERT_EQ(p.try_reserve(4, r), Status::ok);
  wait.waiting[0].fetch_or(1u << 7);  // a producer in row 7 sleeps for space
  const std::uint32_t before = wait.futex.load();
  r = Reservation();  // abandoned: its slot is free again
  EXPECT_NE(wait.futex.load(), before) << "the sleeper was not woken";
  wait.waiting[0].fetch_and(~(1u << 7));
}

TEST(Ring, ReservationSurvivesAMoveOfItsProducer) {
  ScopedQueue q("resmove", {.slot_count = 2});
  auto p = q->producer().value();
  Reservation r;
  ASSERT_EQ(p.try_reserve(4, r), Status::ok);
  Producer moved = std::move(p);
  r = Reservation();
  EXPECT_EQ(q->stats().claimed, 0u);
  EXPECT_EQ(moved.try_send("a"), Status::ok);
  EXPECT_EQ(moved.try_send("b"), Status::ok);
}

TEST(Ring, ClosingProducerReleasesItsOpenReservation) {
  ScopedQueue q("resclose", {.slot_count = 2});
  auto c = q->consumer().value();
  Reservation r;
  {
    auto p = q->producer().value();
    ASSERT_EQ(p.try_reserve(4, r), Status::ok);
  }
  EXPECT_EQ(q->stats().claimed, 0u);  // no slot names a freed member row
  auto p2 = q->producer().value();
  ASSERT_EQ(p2.try_send("after"), Status::ok);
  Message m;
  ASSERT_EQ(c.try_receive(m), Status::ok);
  EXPECT_EQ(m.view(), "after");
}

// --- The requeue map (ring/requeue_map.hpp) ----------------------------------------------

std::atomic<std::uint64_t>& requeue_top(Queue& q) {
  return q.segment()->header().requeue_epoch.requeue_top;
}

// Every map word of every level, summed: zero means nothing is marked anywhere.
std::uint64_t map_words_set(Queue& q) {
  const detail::Segment& seg = *q.segment();
  std::uint64_t set = requeue_top(q).load() != 0;
  for (std::uint64_t i = 0; i < seg.slot_count(); ++i) set += seg.slot(i).map_word.load() != 0;
  return set;
}

TEST(RequeueMap, FindsMarksInSlotOrderAtEveryDepthAndForgetsThemWhenCleared) {
  // 1 level (2, 64 slots), 2 (128), 3 (8192), 4 (2^19).
  for (const std::uint32_t slots : {2u, 64u, 128u, 8192u, 1u << 19}) {
    SCOPED_TRACE(slots);
    ScopedQueue q("map", {.slot_count = slots, .slot_size = 128});
    detail::RequeueMap map(*q->segment());
    EXPECT_EQ(map.next(0), slots);
    std::set<std::uint64_t> want = {0, 1, slots / 2, slots - 1};
    for (std::uint64_t i = 63; i < slots; i += 4097) want.insert(i);
    for (const std::uint64_t i : want) map.mark(i);
    std::vector<std::uint64_t> found;
    for (std::uint64_t i = map.next(0); i < slots; i = map.next(i + 1)) found.push_back(i);
    EXPECT_EQ(found, std::vector<std::uint64_t>(want.begin(), want.end()));
    EXPECT_EQ(map.next(slots - 1), slots - 1);
    for (const std::uint64_t i : want) EXPECT_TRUE(map.marked(i));
    // The slots are free (neither ready nor delayed): unmark clears each bit for good, and
    // with it every summary bit above, so the next search reads the top word only.
    for (const std::uint64_t i : want) map.unmark(i);
    EXPECT_EQ(map.next(0), slots);
    EXPECT_EQ(map_words_set(*q), 0u);
  }
}

TEST(RequeueMap, StaleSummaryBitsAreClearedAndScribbledOnesAreHarmless) {
  constexpr std::uint32_t kSlots = 8192;  // three levels
  ScopedQueue q("mapstale", {.slot_count = kSlots, .slot_size = 128});
  detail::RequeueMap map(*q->segment());
  // A top word with every bit set and nothing under it (a marker that died half-way, or a
  // scribble): the search finds nothing, and a mark made afterwards is found.
  requeue_top(*q).store(~std::uint64_t{0});
  EXPECT_EQ(map.next(0), kSlots);
  map.mark(5000);
  EXPECT_EQ(map.next(0), 5000u);
  map.unmark(5000);
  EXPECT_EQ(map.next(0), kSlots);
  // Every map word scribbled to all ones: the search is bounded by the ring and finds
  // every slot; unmarking the (free) slots clears it all again.
  const detail::Segment& seg = *q->segment();
  requeue_top(*q).store(~std::uint64_t{0});
  for (std::uint64_t i = 0; i < kSlots; ++i) seg.slot(i).map_word.store(~std::uint64_t{0});
  std::uint64_t n = 0;
  for (std::uint64_t i = map.next(0); i < kSlots; i = map.next(i + 1)) {
    ++n;
    map.unmark(i);
  }
  EXPECT_EQ(n, kSlots);
  EXPECT_EQ(map.next(0), kSlots);
}

TEST(RequeueMap, UnmarkKeepsTheBitOfASlotThatIsReady) {
  ScopedQueue q("mapready", {.slot_count = 256, .slot_size = 128});
  auto p = q->producer().value();
  ASSERT_EQ(p.send("x"), Status::ok);  // slot 0 ready
  detail::RequeueMap map(*q->segment());
  map.mark(0);
  map.mark(1);
  map.unmark(0);  // as if a consumer had seen it taken a moment before it was requeued
  map.unmark(1);
  EXPECT_TRUE(map.marked(0));
  EXPECT_FALSE(map.marked(1));
  EXPECT_EQ(map.next(0), 0u);
  EXPECT_EQ(map.next(1), 256u);
}

// Sends and acks `n` messages through `p` and `c`, in batches.
void run_through(Producer& p, Consumer& c, std::uint64_t n) {
  std::vector<Bytes> out(64, as_bytes("x"));
  std::vector<Message> in(64);
  for (std::uint64_t done = 0; done < n;) {
    const std::size_t k = std::min<std::uint64_t>(64, n - done);
    ASSERT_EQ(p.send_batch({out.data(), k}, 1s), k);
    for (std::size_t got = 0; got < k;) {
      const std::size_t r = c.receive_batch({in.data() + got, k - got}, 1s);
      ASSERT_NE(r, 0u);
      got += r;
    }
    ASSERT_EQ(c.ack(std::span<Message>(in.data(), k)), Status::ok);
    done += k;
  }
}

// The race the clear-then-recheck rule is for, step by step: a consumer sees a stale bit on
// a slot that is held, and before it clears the bit the holder nacks the message (its mark
// finds the bit already set). The clear must not lose that mark.
TEST(RequeueMap, AClearRacingARequeueKeepsTheMark) {
  ScopedQueue q("maprace", {.slot_count = 4096, .slot_size = 128});
  auto p = q->producer().value();
  auto c = q->consumer().value();
  auto other = q->consumer().value();
  run_through(p, c, 5000);
  ASSERT_EQ(p.send("x"), Status::ok);
  Message m;
  ASSERT_EQ(c.try_receive(m), Status::ok);
  const std::uint64_t i = m.position() & 4095;
  detail::RequeueMap map(*q->segment());
  map.mark(i);  // stale: left over from an earlier requeue of this slot
  // The scanning consumer looks: held, so it will clear the bit ...
  ASSERT_EQ(detail::word_state(q->segment()->slot(i).word.load()), detail::SlotState::held);
  ASSERT_EQ(c.nack(m), Status::ok);  // ... but the holder requeues first
  map.unmark(i);                     // ... and then the clear lands
  EXPECT_TRUE(map.marked(i));
  Message again;
  ASSERT_EQ(other.try_receive(again), Status::ok);
  EXPECT_EQ(again.view(), "x");
  EXPECT_FALSE(map.marked(i));
  ASSERT_EQ(other.ack(again), Status::ok);
}

TEST(Ring, RequeuedMessageARingBehindDispatchIsFoundAndNothingStaysMarked) {
  constexpr std::uint32_t kSlots = 1u << 16;
  ScopedQueue q("farback", {.slot_count = kSlots, .slot_size = 128});
  auto p = q->producer().value();
  auto c = q->consumer().value();
  auto other = q->consumer().value();
  run_through(p, other, kSlots + 7);  // the window is the whole ring
  ASSERT_EQ(p.send("old"), Status::ok);
  Message old;
  ASSERT_EQ(c.try_receive(old), Status::ok);
  // Everything else goes round the ring once more, behind the held message.
  run_through(p, other, kSlots - 1);
  ASSERT_EQ(c.nack(old), Status::ok);
  EXPECT_NE(requeue_top(*q).load(), 0u);
  Message m;
  ASSERT_EQ(c.try_receive(m), Status::ok);
  EXPECT_EQ(m.view(), "old");
  EXPECT_EQ(m.position(), old.position());
  EXPECT_EQ(m.delivery_count(), 2u);
  // Taken: its bit and every summary bit above it are clear again.
  EXPECT_EQ(map_words_set(*q), 0u);
  ASSERT_EQ(c.ack(m), Status::ok);
  ASSERT_EQ(p.send("new"), Status::ok);
  ASSERT_EQ(c.try_receive(m), Status::ok);
  EXPECT_EQ(m.view(), "new");
  ASSERT_EQ(c.ack(m), Status::ok);
  EXPECT_EQ(c.try_receive(m), Status::empty);
}

TEST(Ring, DelayedMessageStaysMarkedUntilDueThenIsDelivered) {
  constexpr std::uint32_t kSlots = 1u << 13;
  ScopedQueue q("delaymark", {.slot_count = kSlots, .slot_size = 128});
  auto p = q->producer().value();
  auto c = q->consumer().value();
  run_through(p, c, kSlots + 3);
  ASSERT_EQ(p.send("later"), Status::ok);
  ASSERT_EQ(p.send("now"), Status::ok);
  Message m;
  ASSERT_EQ(c.try_receive(m), Status::ok);
  const std::uint64_t pos = m.position();
  ASSERT_EQ(c.nack_after(m, std::chrono::hours(1)), Status::ok);
  // Not due: the fresh message comes first, the delayed one stays marked.
  Message n;
  ASSERT_EQ(c.try_receive(n), Status::ok);
  EXPECT_EQ(n.view(), "now");
  ASSERT_EQ(c.ack(n), Status::ok);
  EXPECT_EQ(c.try_receive(n), Status::empty);
  detail::RequeueMap map(*q->segment());
  EXPECT_TRUE(map.marked(pos & (kSlots - 1)));
  // Make it due (white box: the test does not wait an hour); a blocking receive finds it.
  q->segment()->slot(pos).deadline_ns.store(1);
  ASSERT_EQ(c.receive_for(n, 10s), Status::ok);
  EXPECT_EQ(n.view(), "later");
  EXPECT_EQ(n.delivery_count(), 2u);
  EXPECT_FALSE(map.marked(pos & (kSlots - 1)));
  ASSERT_EQ(c.ack(n), Status::ok);
}

TEST(Ring, ReleaseAllFindsAMessageWhoseHandleWasDroppedAndSkipsAckedOnes) {
  ScopedQueue q("relall", {.slot_count = 1024, .slot_size = 128});
  auto p = q->producer().value();
  auto c = q->consumer().value();
  run_through(p, c, 100);
  EXPECT_EQ(c.release_all(), 0u);  // everything acked
  ASSERT_EQ(p.send("dropped"), Status::ok);
  {
    Message m;
    ASSERT_EQ(c.try_receive(m), Status::ok);
  }  // the handle is gone, the delivery is still ours
  run_through(p, c, 50);
  Message moved_to;
  {
    ASSERT_EQ(p.send("moved"), Status::ok);
    Message m;
    ASSERT_EQ(c.try_receive(m), Status::ok);
    moved_to = std::move(m);
  }
  EXPECT_EQ(c.release_all(), 2u);
  EXPECT_EQ(c.ack(moved_to), Status::lease_lost);
  auto other = q->consumer().value();
  std::set<std::string> got;
  Message m;
  while (other.try_receive(m) == Status::ok) {
    got.insert(std::string(m.view()));
    EXPECT_TRUE(m.redelivered());
    ASSERT_EQ(other.ack(m), Status::ok);
  }
  EXPECT_EQ(got, (std::set<std::string>{"dropped", "moved"}));
  EXPECT_EQ(c.release_all(), 0u);
}

TEST(Ring, ClosingProducerReleasesEveryOpenReservationAndNoOther) {
  ScopedQueue q("resmany", {.slot_count = 256, .slot_size = 128});
  auto c = q->consumer().value();
  std::vector<Reservation> open;
  {
    auto p = q->producer().value();
    // More than the list keeps before pruning: committed, abandoned and open ones mixed.
    for (int i = 0; i < 100; ++i) {
      Reservation r;
      ASSERT_EQ(p.try_reserve(8, r), Status::ok);
      std::memcpy(r.data().data(), "12345678", 8);
      if (i % 3 == 0) {
        ASSERT_EQ(p.commit(r), Status::ok);
      } else if (i % 3 == 1) {
        r = Reservation();  // abandoned
      } else {
        open.push_back(std::move(r));
      }
    }
    EXPECT_EQ(q->stats().claimed, open.size());
  }
  EXPECT_EQ(q->stats().claimed, 0u);  // no slot names the freed member row
  std::size_t got = 0;
  Message m;
  while (c.try_receive(m) == Status::ok) {
    ++got;
    ASSERT_EQ(c.ack(m), Status::ok);
  }
  EXPECT_EQ(got, 34u);
  open.clear();  // abandoning after the close finds nothing left to give back
  EXPECT_EQ(q->stats().claimed, 0u);
}

TEST(Ring, ScribbledCursorsAndWordsNeitherHangNorSpin) {
  ScopedQueue q("hostile", {.slot_count = 8});
  auto p = q->producer().value();
  auto c = q->consumer().value();
  auto& h = q->segment()->header();
  // A dispatch cursor far in the future and a requeue epoch bump: the requeue walk is
  // bounded by the ring, try_receive returns.
  h.dispatch.value.store(std::uint64_t{1} << 50);
  h.requeue_epoch.value.fetch_add(1);
  Message m;
  EXPECT_EQ(c.try_receive(m), Status::empty);
  // A slot word five laps ahead of the tail: try_send gives up instead of spinning.
  h.dispatch.value.store(0);
  q->segment()->slot(0).word.store(detail::make_word(5, detail::SlotState::claimed, 3, 1));
  EXPECT_EQ(p.try_send("x"), Status::full);
  EXPECT_EQ(p.send_for(as_bytes("x"), 1ms), Status::timeout);
}

}  // namespace
}  // namespace shmq
