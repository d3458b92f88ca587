// Per-message checksums (issue 12, QueueOptions::checksum): a consumer of a checksummed
// queue never receives a message that was changed in shared memory after it was sent. It is
// dead-lettered with reason corrupt (dropped on a queue without dead letters) and counted;
// an intact message passes on every send and receive path.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "core/checksum.hpp"
#include "segment/layout.hpp"
#include "segment/segment.hpp"
#include "test_util.hpp"

namespace shmq {
namespace {

using namespace std::chrono_literals;
using test::ScopedQueue;

QueueOptions checksummed(bool on = true) {
  QueueOptions o;
  o.slot_count = 16;
  o.slot_size = 128;  // 64 payload bytes per slot
  o.max_message_size = 64 * 8;
  o.checksum = on;
  return o;
}

TEST(ChecksumOption, IsOffByDefaultSetAtCreateAndSeenByEveryOpener) {
  EXPECT_FALSE(QueueOptions{}.checksum);
  ScopedQueue plain("ck-off", checksummed(false));
  EXPECT_FALSE(plain->options().checksum);
  ScopedQueue q("ck-on", checksummed());
  EXPECT_TRUE(q->options().checksum);
  auto again = Queue::open(q.name());
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->options().checksum);
  // Its dead-letter queue checksums its dead letters too.
  auto dlq = Queue::open(Queue::dead_letter_name(q.name()));
  ASSERT_TRUE(dlq.ok());
  EXPECT_TRUE(dlq->options().checksum);
}

// The checksum takes the first 8 bytes after each slot's header: 8 payload bytes less.
TEST(ChecksumOption, ASlotCarriesEightPayloadBytesLess) {
  QueueOptions o = checksummed();
  o.max_message_size = 0;  // one slot's payload
  ScopedQueue q("ck-geometry", o);
  EXPECT_EQ(q->segment()->payload_size(), 128u - 64 - 8);
  EXPECT_EQ(q->max_message_size(), 56u);
  EXPECT_TRUE(Queue::open_or_create(q.name(), o).ok()) << "0 means one slot's payload here too";
  auto p = q->producer().value();
  auto c = q->consumer().value();
  EXPECT_EQ(p.try_send(std::string(57, 'x')), Status::too_large);
  ASSERT_EQ(p.try_send(std::string(56, 'y')), Status::ok);
  Reservation r;
  EXPECT_EQ(p.try_reserve(57, r), Status::too_large);
  Message m;
  ASSERT_EQ(c.receive_for(m, 1s), Status::ok);
  EXPECT_EQ(m.view(), std::string(56, 'y'));
  EXPECT_EQ(c.ack(m), Status::ok);
  EXPECT_EQ(q->stats().corrupt, 0u);
}

TEST(ChecksumOption, OpenOrCreateWithTheOtherSettingIsAMismatch) {
  ScopedQueue q("ck-mismatch", checksummed());
  auto off = Queue::open_or_create(q.name(), checksummed(false));
  ASSERT_FALSE(off.ok());
  EXPECT_EQ(off.error().code(), Errc::mismatch);
  EXPECT_NE(off.error().message().find("checksum (queue: on, given: off)"), std::string::npos)
      << off.error().message();
  EXPECT_TRUE(Queue::open_or_create(q.name(), checksummed()).ok());
}

// Every way a message gets into the ring, and back after a nack: delivered intact, nothing
// counted as corrupt.
TEST(Checksum, IntactMessagesPassOnEverySendPath) {
  ScopedQueue q("ck-intact", checksummed());
  auto p = q->producer().value();
  auto c = q->consumer().value();
  const std::string big(64 * 5 + 7, 'x');  // six slots
  ASSERT_EQ(p.send("one", 7), Status::ok);
  ASSERT_EQ(p.send(""), Status::ok);
  ASSERT_EQ(p.send(as_bytes(big)), Status::ok);
  const std::vector<Bytes> batch = {as_bytes("b1"), as_bytes("b2")};
  ASSERT_EQ(p.send_batch(batch), 2u);
  Reservation r;
  ASSERT_EQ(p.reserve(8, r), Status::ok);
  std::memcpy(r.data().data(), "reserved", 8);
  r.resize(5);
  ASSERT_EQ(p.commit(r), Status::ok);
  Message m;
  for (const std::string want : {"one", "", big.c_str(), "b1", "b2", "reser"}) {
    ASSERT_EQ(c.receive_for(m, 1s), Status::ok) << want;
    EXPECT_EQ(m.view(), want);
    if (want == "one") {
      // Redelivered after a nack (its delivery count changed): still intact.
      ASSERT_EQ(c.nack(m), Status::ok);
      ASSERT_EQ(c.receive_for(m, 1s), Status::ok);
      EXPECT_EQ(m.view(), "one");
      EXPECT_EQ(m.id(), 7u);
      EXPECT_EQ(m.delivery_count(), 2u);
    }
    ASSERT_EQ(c.ack(m), Status::ok);
  }
  EXPECT_EQ(q->stats().corrupt, 0u);
}

struct Scribble {
  const char* what;
  std::function<void(detail::Segment&, std::uint64_t)> apply;  // to the message at a position
};

// What a hostile or buggy writer of the segment can change after a message was sent.
std::vector<Scribble> scribbles() {
  auto hdr = [](detail::Segment& s, std::uint64_t pos) -> detail::SlotHeader& {
    return s.slot(pos);
  };
  return {
      {"a payload byte", [](detail::Segment& s, std::uint64_t pos) { s.payload(pos)[1] ^= std::byte{1}; }},
      {"the length, shorter",
       [hdr](detail::Segment& s, std::uint64_t pos) { hdr(s, pos).length.store(2); }},
      {"the length, longer",
       [hdr](detail::Segment& s, std::uint64_t pos) { hdr(s, pos).length.store(40); }},
      {"the id", [hdr](detail::Segment& s, std::uint64_t pos) { hdr(s, pos).id.fetch_add(1); }},
      {"the origin", [hdr](detail::Segment& s, std::uint64_t pos) { hdr(s, pos).origin.store(5); }},
      {"the checksum", [](detail::Segment& s, std::uint64_t pos) { s.checksum_word(pos).fetch_xor(1); }},
      // Another message's whole slot copied over this one (header fields, checksum and
      // bytes; the slot word and the requeue map's word aside): intact in itself, but not
      // the message of this position.
      {"another slot's content copied in",
       [](detail::Segment& s, std::uint64_t pos) {
         auto* dst = reinterpret_cast<std::byte*>(&s.slot(pos));
         const auto* src = reinterpret_cast<const std::byte*>(&s.slot(pos + 1));
         constexpr std::size_t kMap = offsetof(detail::SlotHeader, map_word);
         std::memcpy(dst + 8, src + 8, kMap - 8);
         std::memcpy(dst + kMap + 8, src + kMap + 8, s.slot_size() - kMap - 8);
       }},
  };
}

TEST(Checksum, ScribbledMessageIsDeadLetteredAsCorruptNeverDelivered) {
  for (const Scribble& sc : scribbles()) {
    ScopedQueue q("ck-scribble", checksummed());
    auto p = q->producer().value();
    auto c = q->consumer().value();
    ASSERT_EQ(p.send("victim message", 41), Status::ok);
    ASSERT_EQ(p.send("next message", 42), Status::ok);
    sc.apply(*q->segment(), 0);
    Message m;
    ASSERT_EQ(c.receive_for(m, 1s), Status::ok) << sc.what;
    EXPECT_EQ(m.view(), "next message") << sc.what << ": the scribbled one was delivered";
    EXPECT_EQ(m.position(), 1u);
    ASSERT_EQ(c.ack(m), Status::ok);
    EXPECT_EQ(c.try_receive(m), Status::empty) << sc.what;
    const QueueStats s = q->stats();
    EXPECT_EQ(s.corrupt, 1u) << sc.what;
    EXPECT_EQ(s.dead_lettered, 1u) << sc.what;
    EXPECT_EQ(s.received, 1u) << sc.what;
    // The dead letter names why, and where the message was.
    auto dlq = Queue::open(Queue::dead_letter_name(q.name()));
    ASSERT_TRUE(dlq.ok());
    auto dc = dlq->consumer().value();
    ASSERT_EQ(dc.receive_for(m, 1s), Status::ok) << sc.what;
    const auto dl = parse_dead_letter(m.data());
    ASSERT_TRUE(dl.has_value()) << sc.what;
    EXPECT_EQ(dl->reason, DeadLetterReason::corrupt);
    EXPECT_EQ(to_string(dl->reason), "corrupt");
    EXPECT_EQ(dl->original_position, 0u);
    EXPECT_EQ(dc.ack(m), Status::ok);
  }
}

TEST(Checksum, ScribbleInALaterFragmentIsCaught) {
  ScopedQueue q("ck-fragments", checksummed());
  auto p = q->producer().value();
  auto c = q->consumer().value();
  std::string big(64 * 3 + 10, 'y');  // four slots
  ASSERT_EQ(p.send(as_bytes(big)), Status::ok);
  ASSERT_EQ(p.send(as_bytes(big)), Status::ok);
  q->segment()->payload(3)[4] = std::byte{'!'};  // the last fragment of the first
  Message m;
  ASSERT_EQ(c.receive_for(m, 1s), Status::ok);
  EXPECT_EQ(m.position(), 4u);
  EXPECT_EQ(m.view(), big);
  ASSERT_EQ(c.ack(m), Status::ok);
  EXPECT_EQ(q->stats().corrupt, 1u);
}

// dead_letter = false: dropped (acked), still counted, never delivered.
TEST(Checksum, WithoutDeadLettersACorruptMessageIsDropped) {
  QueueOptions o = checksummed();
  o.dead_letter = false;
  ScopedQueue q("ck-drop", o);
  auto p = q->producer().value();
  auto c = q->consumer().value();
  ASSERT_EQ(p.send("scribbled"), Status::ok);
  q->segment()->payload(0)[0] = std::byte{'S'};
  Message m;
  EXPECT_EQ(c.receive_for(m, 50ms), Status::timeout);
  const QueueStats s = q->stats();
  EXPECT_EQ(s.corrupt, 1u);
  EXPECT_EQ(s.ready + s.in_flight + s.delayed, 0u) << "the slot was not released";
  ASSERT_EQ(p.send("fine"), Status::ok);
  ASSERT_EQ(c.receive_for(m, 1s), Status::ok);
  EXPECT_EQ(m.view(), "fine");
  EXPECT_EQ(c.ack(m), Status::ok);
}

// Whatever else sends a message to the dead-letter queue (here a rejection after a scribble
// that came after its delivery), a copy that fails its checksum goes as corrupt: a dead letter
// replayed into a queue gets a fresh checksum.
TEST(Checksum, DeadLetterOfAScribbledMessageSaysCorruptWhateverTheReason) {
  ScopedQueue q("ck-reject", checksummed());
  auto p = q->producer().value();
  auto c = q->consumer().value();
  ASSERT_EQ(p.send("fine at delivery"), Status::ok);
  Message m;
  ASSERT_EQ(c.receive_for(m, 1s), Status::ok);
  ASSERT_EQ(m.view(), "fine at delivery");
  q->segment()->payload(0)[2] = std::byte{'#'};  // after its delivery (our copy is intact)
  ASSERT_EQ(c.nack(m, /*requeue=*/false), Status::ok);
  EXPECT_EQ(q->stats().corrupt, 1u);
  auto dlq = Queue::open(Queue::dead_letter_name(q.name()));
  ASSERT_TRUE(dlq.ok());
  auto dc = dlq->consumer().value();
  ASSERT_EQ(dc.receive_for(m, 1s), Status::ok);
  const auto dl = parse_dead_letter(m.data());
  ASSERT_TRUE(dl.has_value());
  EXPECT_EQ(dl->reason, DeadLetterReason::corrupt);
  EXPECT_EQ(dc.ack(m), Status::ok);
}

// Off by default: without the option nothing is checked (the scribble is delivered), which
// is what the option is for.
TEST(Checksum, AQueueWithoutTheOptionDeliversWhatIsInTheSlot) {
  ScopedQueue q("ck-none", checksummed(false));
  auto p = q->producer().value();
  auto c = q->consumer().value();
  ASSERT_EQ(p.send("abc"), Status::ok);
  q->segment()->payload(0)[0] = std::byte{'X'};
  Message m;
  ASSERT_EQ(c.receive_for(m, 1s), Status::ok);
  EXPECT_EQ(m.view(), "Xbc");
  EXPECT_EQ(c.ack(m), Status::ok);
  EXPECT_EQ(q->stats().corrupt, 0u);
}

TEST(Checksum, CoversPositionIdOriginLengthAndEveryByte) {
  const std::string msg = "payload";
  const auto b = as_bytes(msg);
  const std::uint64_t base = detail::message_checksum(10, 20, 0, b);
  EXPECT_EQ(detail::message_checksum(10, 20, 0, b), base);
  EXPECT_NE(detail::message_checksum(11, 20, 0, b), base);
  EXPECT_NE(detail::message_checksum(10, 21, 0, b), base);
  EXPECT_NE(detail::message_checksum(10, 20, 1, b), base);
  EXPECT_NE(detail::message_checksum(10, 20, 0, b.first(6)), base);
  std::string flipped = msg;
  for (std::size_t i = 0; i < msg.size(); ++i) {
    flipped[i] ^= 0x20;
    EXPECT_NE(detail::message_checksum(10, 20, 0, as_bytes(flipped)), base) << i;
    flipped[i] ^= 0x20;
  }
}

}  // namespace
}  // namespace shmq
