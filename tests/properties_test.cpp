// Message properties (issue 14): content type, correlation id, reply-to, send time and
// headers, carried with a message through everything that moves it (redelivery, lease
// expiry, relocation, dead-lettering and replay, the log and a reboot, browse, checksums),
// with their limits enforced and messages without properties unchanged.
#include <cstring>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "core/checksum.hpp"
#include "log/log_format.hpp"
#include "persist/republish.hpp"
#include "platform/process.hpp"
#include "ring/slot_word.hpp"
#include "segment/segment.hpp"
#ifdef SHMQD_PATH  // built with the tools (a TSan build has none): the reboot test
#include "daemon_util.hpp"
#endif
#include "test_util.hpp"

namespace shmq {
namespace {

using namespace std::chrono_literals;
using test::ScopedQueue;
using test::text;

Properties sample() {
  Properties p;
  p.content_type = "application/json";
  p.correlation_id = "req-17";
  p.reply_to = "replies.client-3";
  p.headers = {{"tenant", "acme"}, {"trace", "00-4bf92f35"}, {"empty", ""}, {"tenant", "dup"}};
  return p;
}

// Everything `v` carries equals `p` (the send time is checked by the callers).
void expect_same(const PropertiesView& v, const Properties& p) {
  ASSERT_TRUE(v.present());
  EXPECT_EQ(v.content_type(), p.content_type);
  EXPECT_EQ(v.correlation_id(), p.correlation_id);
  EXPECT_EQ(v.reply_to(), p.reply_to);
  ASSERT_EQ(v.header_count(), p.headers.size());
  std::size_t i = 0;
  for (const auto& [k, val] : v.headers()) {
    ASSERT_LT(i, p.headers.size());
    EXPECT_EQ(k, p.headers[i].first);
    EXPECT_EQ(val, p.headers[i].second);
    ++i;
  }
  EXPECT_EQ(i, p.headers.size());
}

TEST(Properties, RoundTripWithPayloadOnlyInData) {
  ScopedQueue q("props-rt");
  auto p = q->producer().value();
  auto c = q->consumer().value();
  const Properties props = sample();
  const std::uint64_t before = detail::realtime_ns();
  ASSERT_EQ(p.send("payload bytes", SendOptions{.id = 5, .properties = &props}), Status::ok);
  const std::uint64_t after = detail::realtime_ns();
  Message m;
  ASSERT_EQ(c.try_receive(m), Status::ok);
  EXPECT_EQ(text(m), "payload bytes");
  EXPECT_EQ(m.size(), 13u);
  EXPECT_EQ(m.id(), 5u);
  expect_same(m.properties(), props);
  EXPECT_GE(m.properties().timestamp_ns(), before);
  EXPECT_LE(m.properties().timestamp_ns(), after);
  EXPECT_EQ(m.properties().header("tenant"), std::optional<std::string_view>("acme"));
  EXPECT_EQ(m.properties().header("empty"), std::optional<std::string_view>(""));
  EXPECT_FALSE(m.properties().header("missing").has_value());
  EXPECT_EQ(m.properties().priority(), 0u);
  // A move keeps them (the copy moves with the handle).
  Message moved = std::move(m);
  expect_same(moved.properties(), props);
  EXPECT_EQ(text(moved), "payload bytes");
  // An owning copy sends the same on.
  const Properties again = moved.properties().to_properties();
  EXPECT_EQ(again.headers, props.headers);
  ASSERT_EQ(c.ack(moved), Status::ok);
}

TEST(Properties, PriorityIsInTheView) {
  ScopedQueue q("props-prio", {.max_priority = 3});
  auto p = q->producer().value();
  auto c = q->consumer().value();
  const Properties props = sample();
  ASSERT_EQ(p.send("x", SendOptions{.priority = 2, .properties = &props}), Status::ok);
  Message m;
  ASSERT_EQ(c.receive_for(m, 5s), Status::ok);
  EXPECT_EQ(m.priority(), 2u);
  EXPECT_EQ(m.properties().priority(), 2u);
  expect_same(m.properties(), props);
  ASSERT_EQ(c.ack(m), Status::ok);
}

TEST(Properties, MessageWithoutPropertiesIsUnchanged) {
  ScopedQueue q("props-none", {.checksum = true});
  auto p = q->producer().value();
  auto c = q->consumer().value();
  ASSERT_EQ(p.send("plain", 9), Status::ok);
  const detail::Segment& seg = *q->segment();
  // The slot holds exactly what it held before properties existed: the length without its
  // flag, the bytes, and the same seal.
  EXPECT_EQ(seg.slot(0).length.load(), 5u);
  EXPECT_EQ(std::memcmp(seg.payload(0), "plain", 5), 0);
  EXPECT_EQ(seg.checksum_word(0).load(), detail::message_checksum(0, 9, 0, as_bytes("plain")));
  Message m;
  ASSERT_EQ(c.try_receive(m), Status::ok);
  EXPECT_EQ(text(m), "plain");
  EXPECT_FALSE(m.properties().present());
  EXPECT_EQ(m.properties().content_type(), "");
  EXPECT_EQ(m.properties().timestamp_ns(), 0u);
  EXPECT_EQ(m.properties().header_count(), 0u);
  EXPECT_TRUE(m.properties().headers().begin() == m.properties().headers().end());
  ASSERT_EQ(c.ack(m), Status::ok);
  // And one with properties sets the flag and stores [block][payload].
  const Properties props = sample();
  ASSERT_EQ(p.send("with", SendOptions{.properties = &props}), Status::ok);
  const std::uint32_t len = seg.slot(1).length.load();
  EXPECT_NE(len & detail::kLengthHasProperties, 0u);
  EXPECT_EQ(len & detail::kLengthMask, *encoded_properties_size(props) + 4);
}

TEST(Properties, LimitsAreRejectedAndNothingIsSent) {
  ScopedQueue q("props-limits", {.slot_count = 16, .slot_size = 1024, .max_message_size = 8192});
  auto p = q->producer().value();
  Properties ok;
  ok.content_type = std::string(kMaxPropertyString, 'c');
  ok.headers.emplace_back(std::string(kMaxPropertyString, 'k'), std::string(kMaxPropertyString, 'v'));
  ASSERT_EQ(p.send("fits", SendOptions{.properties = &ok}), Status::ok);

  Properties long_string;
  long_string.correlation_id = std::string(kMaxPropertyString + 1, 'x');
  EXPECT_EQ(p.send("x", SendOptions{.properties = &long_string}), Status::invalid);
  EXPECT_EQ(p.try_send("x", SendOptions{.properties = &long_string}), Status::invalid);
  Properties long_value;
  long_value.headers.emplace_back("k", std::string(kMaxPropertyString + 1, 'v'));
  EXPECT_EQ(p.send("x", SendOptions{.properties = &long_value}), Status::invalid);
  Properties empty_key;
  empty_key.headers.emplace_back("", "v");
  EXPECT_EQ(p.send("x", SendOptions{.properties = &empty_key}), Status::invalid);
  // 16 fixed + 3 empty strings + n headers of (1 + 10) + (1 + 10) bytes: over 4096 at 186.
  Properties too_many;
  for (int i = 0; i < 186; ++i) too_many.headers.emplace_back("key-" + std::to_string(100000 + i), "0123456789");
  ASSERT_FALSE(encoded_properties_size(too_many).has_value());
  EXPECT_EQ(p.send_for(as_bytes("x"), 1s, SendOptions{.properties = &too_many}), Status::invalid);
  too_many.headers.pop_back();
  ASSERT_TRUE(encoded_properties_size(too_many).has_value());
  EXPECT_LE(*encoded_properties_size(too_many), kMaxPropertiesSize);
  // Block + payload over max_message_size: too large (the block counts).
  const std::string big(8192 - *encoded_properties_size(ok) + 1, 'b');
  EXPECT_EQ(p.send(big, SendOptions{.properties = &ok}), Status::too_large);
  EXPECT_EQ(p.send(big.substr(1), SendOptions{.properties = &ok}), Status::ok);
  // Only the two that fit went in.
  EXPECT_EQ(q->stats().ready, 2u);
  // A reservation cannot carry them.
  Reservation r;
  ASSERT_EQ(p.try_reserve(4, r), Status::ok);
  EXPECT_EQ(p.commit(r, SendOptions{.properties = &ok}), Status::invalid);
}

TEST(Properties, ZeroCopyConsumerSeesThem) {
  ScopedQueue q("props-zc");
  auto p = q->producer().value();
  auto c = q->consumer({.zero_copy = true}).value();
  const Properties props = sample();
  ASSERT_EQ(p.send("zero copy", SendOptions{.properties = &props}), Status::ok);
  Message m;
  ASSERT_EQ(c.try_receive(m), Status::ok);
  EXPECT_EQ(text(m), "zero copy");
  expect_same(m.properties(), props);
  // Pointing into the slot, after the block.
  EXPECT_EQ(m.data().data(), q->segment()->payload(0) + *encoded_properties_size(props));
  EXPECT_TRUE(m.valid());
  ASSERT_EQ(c.ack(m), Status::ok);
}

TEST(Properties, SurviveNackRedeliveryAndSpanningSlots) {
  ScopedQueue q("props-nack", {.slot_count = 64, .slot_size = 128, .max_message_size = 4096});
  auto p = q->producer().value();
  auto c = q->consumer().value();
  const Properties props = sample();
  const std::string big(1000, 'z');  // block + payload span several slots
  ASSERT_EQ(p.send(big, SendOptions{.id = 3, .properties = &props}), Status::ok);
  Message m;
  ASSERT_EQ(c.try_receive(m), Status::ok);
  const std::uint64_t ts = m.properties().timestamp_ns();
  ASSERT_EQ(c.nack(m), Status::ok);
  ASSERT_EQ(c.receive_for(m, 5s), Status::ok);
  EXPECT_TRUE(m.redelivered());
  EXPECT_EQ(text(m), big);
  expect_same(m.properties(), props);
  EXPECT_EQ(m.properties().timestamp_ns(), ts);
  ASSERT_EQ(c.nack_after(m, 1ms), Status::ok);
  ASSERT_EQ(c.receive_for(m, 5s), Status::ok);
  EXPECT_EQ(m.delivery_count(), 3u);
  EXPECT_EQ(text(m), big);
  expect_same(m.properties(), props);
  ASSERT_EQ(c.ack(m), Status::ok);
}

TEST(Properties, SurviveLeaseExpiry) {
  ScopedQueue q("props-lease", {.lease = 30ms});
  auto p = q->producer().value();
  auto c = q->consumer().value();
  const Properties props = sample();
  ASSERT_EQ(p.send("leased", SendOptions{.properties = &props}), Status::ok);
  Message first;
  ASSERT_EQ(c.try_receive(first), Status::ok);
  // Not acked: the (embedded) watchdog takes it back after the lease.
  Message again;
  ASSERT_EQ(c.receive_for(again, 10s), Status::ok);
  EXPECT_EQ(again.position(), first.position());
  EXPECT_EQ(again.delivery_count(), 2u);
  EXPECT_EQ(text(again), "leased");
  expect_same(again.properties(), props);
  EXPECT_EQ(c.ack(first), Status::lease_lost);
  ASSERT_EQ(c.ack(again), Status::ok);
}

// A nacked message that producers lap is relocated (its slot moves to a later position):
// it keeps its properties, on a queue with checksums too (the seal is remade for the new
// position over the flag and the block).
class Relocated : public ::testing::TestWithParam<bool> {};

TEST_P(Relocated, KeepsItsProperties) {
  constexpr std::uint32_t kSlots = 8;
  ScopedQueue q("props-reloc", {.slot_count = kSlots, .slot_size = 256, .checksum = GetParam()});
  auto p = q->producer().value();
  auto c = q->consumer().value();
  Properties props;
  props.correlation_id = "moved";
  props.headers = {{"k", "v"}};
  ASSERT_EQ(p.try_send("parked", SendOptions{.id = 77, .properties = &props}), Status::ok);
  Message m;
  ASSERT_EQ(c.try_receive(m), Status::ok);
  const std::uint64_t first = m.position();
  ASSERT_EQ(c.nack(m), Status::ok);
  for (int lap = 0; lap < 3; ++lap) {
    for (std::uint32_t j = 0; j < kSlots - 1; ++j)
      ASSERT_EQ(p.try_send("filler", 1000 + lap * 10 + j), Status::ok) << lap << " " << j;
    Message r;
    ASSERT_EQ(c.try_receive(r), Status::ok);
    ASSERT_EQ(r.id(), 77u);
    EXPECT_EQ(text(r), "parked");
    EXPECT_EQ(r.properties().correlation_id(), "moved");
    EXPECT_EQ(r.properties().header("k"), std::optional<std::string_view>("v"));
    for (std::uint32_t j = 0; j < kSlots - 1; ++j) {
      Message f;
      ASSERT_EQ(c.try_receive(f), Status::ok);
      EXPECT_EQ(text(f), "filler");
      EXPECT_FALSE(f.properties().present());
      ASSERT_EQ(c.ack(f), Status::ok);
    }
    if (lap == 2) {
      EXPECT_GT(r.position(), first);  // it moved on with the producers
    }
    ASSERT_EQ(c.nack(r), Status::ok);
  }
}
INSTANTIATE_TEST_SUITE_P(Properties, Relocated, ::testing::Values(false, true));

TEST(Properties, SendBatchGivesEveryMessageThem) {
  ScopedQueue q("props-batch");
  auto p = q->producer().value();
  auto c = q->consumer().value();
  const Properties props = sample();
  const std::vector<Bytes> batch = {as_bytes("a"), as_bytes("bb"), as_bytes("ccc")};
  Status s = Status::invalid;
  ASSERT_EQ(p.send_batch(batch, 1s, &s, SendOptions{.properties = &props}), 3u);
  ASSERT_EQ(s, Status::ok);
  for (const char* want : {"a", "bb", "ccc"}) {
    Message m;
    ASSERT_EQ(c.try_receive(m), Status::ok);
    EXPECT_EQ(text(m), want);
    expect_same(m.properties(), props);
    ASSERT_EQ(c.ack(m), Status::ok);
  }
}

TEST(Properties, BrowseShowsThem) {
  ScopedQueue q("props-browse");
  auto p = q->producer().value();
  const Properties props = sample();
  ASSERT_EQ(p.send("browsed", SendOptions{.properties = &props}), Status::ok);
  ASSERT_EQ(p.send("bare"), Status::ok);
  const auto b = q->browse(10);
  ASSERT_EQ(b.size(), 2u);
  EXPECT_EQ(b[0].size, 7u);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(b[0].data.data()), b[0].data.size()),
            "browsed");
  expect_same(b[0].properties(), props);
  EXPECT_FALSE(b[1].properties().present());
  EXPECT_EQ(b[1].size, 4u);
  // Cut to max_bytes: the payload's first bytes, the whole block.
  const auto cut = q->browse(1, false, 3);
  ASSERT_EQ(cut.size(), 1u);
  EXPECT_EQ(cut[0].data.size(), 3u);
  expect_same(cut[0].properties(), props);
}

// Dead letters keep them (envelope version 2), also on a checksummed queue where the dead
// letter's reason must stay "rejected" (the seal covers the flag and the block as sent);
// a replay (what shmqctl dlq replay does) restores them, send time included.
class DeadLettered : public ::testing::TestWithParam<bool> {};

TEST_P(DeadLettered, KeepsThemAndReplayRestoresThem) {
  ScopedQueue q("props-dlq", {.checksum = GetParam()});
  auto p = q->producer().value();
  auto c = q->consumer().value();
  const Properties props = sample();
  ASSERT_EQ(p.send("poison", SendOptions{.id = 41, .properties = &props}), Status::ok);
  ASSERT_EQ(p.send("plain poison", 42), Status::ok);
  Message m;
  ASSERT_EQ(c.try_receive(m), Status::ok);
  const std::uint64_t ts = m.properties().timestamp_ns();
  ASSERT_EQ(c.nack(m, false), Status::ok);
  ASSERT_EQ(c.try_receive(m), Status::ok);
  ASSERT_EQ(c.nack(m, false), Status::ok);

  auto dlq = Queue::open(Queue::dead_letter_name(q.name())).value();
  auto dc = dlq.consumer().value();
  Message d;
  ASSERT_EQ(dc.receive_for(d, 5s), Status::ok);
  auto dl = parse_dead_letter(d.data());
  ASSERT_TRUE(dl.has_value());
  EXPECT_EQ(dl->reason, DeadLetterReason::rejected);
  EXPECT_EQ(dl->original_id, 41u);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(dl->payload.data()), dl->payload.size()),
            "poison");
  expect_same(dl->properties(), props);
  EXPECT_EQ(dl->properties().timestamp_ns(), ts);
  std::uint16_t version = 0;
  std::memcpy(&version, d.data().data() + 4, 2);
  EXPECT_EQ(version, 2u);

  const Properties owned = dl->properties().to_properties();
  ASSERT_EQ(detail::ProducerAccess::send_replayed(
                p, dl->payload, SendOptions{.id = dl->original_id, .properties = &owned},
                dl->properties().timestamp_ns()),
            Status::ok);
  ASSERT_EQ(dc.ack(d), Status::ok);

  Message plain;
  ASSERT_EQ(dc.receive_for(plain, 5s), Status::ok);
  auto pl = parse_dead_letter(plain.data());
  ASSERT_TRUE(pl.has_value());
  EXPECT_FALSE(pl->properties().present());
  std::memcpy(&version, plain.data().data() + 4, 2);
  EXPECT_EQ(version, 1u);  // unchanged for a message without properties
  ASSERT_EQ(dc.ack(plain), Status::ok);

  Message back;
  ASSERT_EQ(c.receive_for(back, 5s), Status::ok);
  EXPECT_EQ(back.id(), 41u);
  EXPECT_EQ(text(back), "poison");
  expect_same(back.properties(), props);
  EXPECT_EQ(back.properties().timestamp_ns(), ts);
  ASSERT_EQ(c.ack(back), Status::ok);
}
INSTANTIATE_TEST_SUITE_P(Properties, DeadLettered, ::testing::Values(false, true));

// The checksum covers the flag and the block: a message whose flag or block is changed
// after it was sent is never delivered (dead-lettered as corrupt).
TEST(Properties, ChecksumCoversFlagAndBlock) {
  ScopedQueue q("props-seal", {.checksum = true});
  auto p = q->producer().value();
  auto c = q->consumer().value();
  const Properties props = sample();
  ASSERT_EQ(p.send("one", SendOptions{.properties = &props}), Status::ok);
  ASSERT_EQ(p.send("two", SendOptions{.properties = &props}), Status::ok);
  ASSERT_EQ(p.send("three", SendOptions{.properties = &props}), Status::ok);
  detail::Segment& seg = *q->segment();
  seg.slot(0).length.fetch_and(detail::kLengthMask);  // flag cleared
  seg.payload(1)[20] ^= std::byte{1};                  // a byte of the block
  Message m;
  ASSERT_EQ(c.receive_for(m, 5s), Status::ok);
  EXPECT_EQ(text(m), "three");
  expect_same(m.properties(), props);
  ASSERT_EQ(c.ack(m), Status::ok);
  EXPECT_EQ(q->stats().corrupt, 2u);
}

// Without checksums, a block that does not parse (a scribble) is not handed out as one:
// the message is treated as corrupt, and nothing outside the message is read.
TEST(Properties, ScribbledBlockIsNotDelivered) {
  ScopedQueue q("props-scribble");
  auto p = q->producer().value();
  auto c = q->consumer().value();
  const Properties props = sample();
  ASSERT_EQ(p.send("one", SendOptions{.properties = &props}), Status::ok);
  ASSERT_EQ(p.send("two", SendOptions{.properties = &props}), Status::ok);
  detail::Segment& seg = *q->segment();
  seg.payload(0)[0] = std::byte{0xff};  // block size past the message
  seg.payload(0)[1] = std::byte{0xff};
  Message m;
  ASSERT_EQ(c.receive_for(m, 5s), Status::ok);
  EXPECT_EQ(text(m), "two");
  ASSERT_EQ(c.ack(m), Status::ok);
  // Its dead letter still parses: a version 1 envelope of the bytes as they were, corrupt.
  auto dlq = Queue::open(Queue::dead_letter_name(q.name())).value();
  auto dc = dlq.consumer().value();
  Message d;
  ASSERT_EQ(dc.receive_for(d, 5s), Status::ok);
  const auto dl = parse_dead_letter(d.data());
  ASSERT_TRUE(dl.has_value());
  EXPECT_EQ(dl->reason, DeadLetterReason::corrupt);
  EXPECT_FALSE(dl->properties().present());
  ASSERT_EQ(dc.ack(d), Status::ok);
}

TEST(Properties, LogRecordCarriesTheFlag) {
  std::vector<std::byte> out;
  const std::vector<std::byte> body = {std::byte{1}, std::byte{2}};
  log::encode_record(out, log::RecordType::message, 7, 8, body, 1234, /*properties=*/true);
  log::encode_copy_record(out, 9, 7, 8, body, 1234, std::nullopt, /*properties=*/true);
  log::encode_delayed_record(out, 10, 8, 99, body, 1234, /*properties=*/false);
  log::DecodedRecord r;
  ASSERT_EQ(log::check_record(out, 0, 1234, r), log::RecordCheck::ok);
  EXPECT_EQ(r.type, log::RecordType::message);
  EXPECT_TRUE(r.properties);
  std::size_t off = r.size;
  ASSERT_EQ(log::check_record(out, off, 1234, r), log::RecordCheck::ok);
  EXPECT_EQ(r.type, log::RecordType::copy);
  EXPECT_TRUE(r.properties);
  EXPECT_EQ(r.origin, 7u);
  EXPECT_EQ(r.payload.size(), 2u);
  off += r.size;
  ASSERT_EQ(log::check_record(out, off, 1234, r), log::RecordCheck::ok);
  EXPECT_EQ(r.type, log::RecordType::delayed);
  EXPECT_FALSE(r.properties);
  EXPECT_EQ(log::kFormatVersion, 3u);
  // An ack with the flag is not a record.
  std::vector<std::byte> ack;
  log::encode_record(ack, log::RecordType::ack, 7, 0, {}, 1234, /*properties=*/true);
  EXPECT_EQ(log::check_record(ack, 0, 1234, r), log::RecordCheck::bad_header);
}

#ifdef SHMQD_PATH
// A durable queue: messages with and without properties, logged by shmqd, survive a
// reboot (the segment removed, shmqd restarted: it republishes them from the log) with
// their properties and send time; the ones without come back without.
TEST(Properties, SurviveAReboot) {
  test::TempDir dir;
  const std::string name = test::unique_name("props-reboot");
  const Properties props = sample();
  std::map<std::uint64_t, std::uint64_t> stamps;  // id -> send time (0: no properties)
  {
    QueueOptions o;
    o.slot_count = 64;
    o.slot_size = 256;
    o.durability = Durability::sync;
    o.data_dir = dir.path();
    o.checksum = true;
    auto q = Queue::create(name, o).value();
    test::Daemon d(dir.path(), name, dir.path() + "/shmqd.log");
    ASSERT_TRUE(d.wait_for("persisting", 2)) << d.log_text();
    auto p = q.producer().value();
    for (std::uint64_t id = 1; id <= 6; ++id) {
      const SendOptions so{.id = id, .properties = id % 2 == 1 ? &props : nullptr};
      ASSERT_EQ(p.send_for(as_bytes("m" + std::to_string(id)), 10s, so), Status::ok);
    }
    for (const auto& b : q.browse(10)) stamps[b.id] = b.properties().timestamp_ns();
    ASSERT_EQ(stamps.size(), 6u);
    d.kill9();
  }
  ASSERT_TRUE(Queue::remove(name).ok());
  test::Daemon d(dir.path(), name, dir.path() + "/shmqd2.log");
  ASSERT_TRUE(d.wait_for("persisting", 2)) << d.log_text();
  auto q = Queue::open(name).value();
  auto c = q.consumer().value();
  std::map<std::uint64_t, bool> got;
  Message m;
  while (got.size() < 6 && c.receive_for(m, 10s) == Status::ok) {
    const std::uint64_t id = m.id();
    ASSERT_TRUE(stamps.contains(id)) << id;
    EXPECT_EQ(text(m), "m" + std::to_string(id));
    if (id % 2 == 1) {
      expect_same(m.properties(), props);
      EXPECT_EQ(m.properties().timestamp_ns(), stamps[id]);
    } else {
      EXPECT_FALSE(m.properties().present()) << id;
    }
    got[id] = true;
    ASSERT_EQ(c.ack(m), Status::ok);
  }
  EXPECT_EQ(got.size(), 6u) << d.log_text();
  (void)Queue::remove(name);
}
#endif  // SHMQD_PATH

}  // namespace
}  // namespace shmq
