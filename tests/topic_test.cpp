// Topics (issue 15): one message, every subscriber group. Groups see every message; inside a
// group subscribers compete; reliable groups lose nothing, lossy ones count what they skip;
// dead publishers and subscribers never wedge or lose a reliable group's messages.
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "platform/crash_point.hpp"
#include "shmq/topic.hpp"
#include "test_util.hpp"
#ifdef SHMQD_PATH
#include "daemon_util.hpp"
#include "topic/topic_log.hpp"
#endif

namespace shmq::test {
namespace {

using namespace std::chrono_literals;

class ScopedTopic {
 public:
  explicit ScopedTopic(const std::string& stem, TopicOptions o = {}) : name_(unique_name(stem)) {
    auto t = Topic::create(name_, o);
    if (!t.ok()) {
      ADD_FAILURE() << "create " << name_ << ": " << t.error().message();
      std::abort();
    }
    topic_ = std::make_unique<Topic>(std::move(t.value()));
  }
  ~ScopedTopic() { (void)Topic::remove(name_); }
  Topic* operator->() { return topic_.get(); }
  Topic& operator*() { return *topic_; }
  const std::string& name() const { return name_; }

 private:
  std::string name_;
  std::unique_ptr<Topic> topic_;
};

// Shared between the test and its forked children (MAP_SHARED, anonymous).
template <typename T>
T* shared_array(std::size_t n) {
  void* p = ::mmap(nullptr, sizeof(T) * n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) std::abort();
  return new (p) T[n]();
}

std::uint64_t body_seq(const Delivery& d) {
  std::uint64_t v = 0;
  if (d.size() >= 8) std::memcpy(&v, d.data().data(), 8);
  return v;
}

Bytes seq_bytes(const std::uint64_t& v) { return {reinterpret_cast<const std::byte*>(&v), 8}; }

GroupStats group_of(Topic& t, const std::string& g) {
  for (auto& s : t.groups())
    if (s.name == g) return s;
  ADD_FAILURE() << "no group " << g;
  return {};
}

[[maybe_unused]] std::vector<std::uint64_t> drain_seqs(Topic& t, const char* group, std::size_t want,
                                      std::chrono::milliseconds wait = 5000ms) {
  auto s = t.subscriber(group).value();
  std::vector<std::uint64_t> got;
  Delivery d;
  while (got.size() < want && s.receive_for(d, wait) == Status::ok) {
    got.push_back(body_seq(d));
    EXPECT_EQ(s.ack(d), Status::ok);
  }
  return got;
}

std::vector<std::uint64_t> iota_vec(std::uint64_t from, std::uint64_t to) {
  std::vector<std::uint64_t> v;
  for (std::uint64_t i = from; i < to; ++i) v.push_back(i);
  return v;
}

// Forks a subscriber of `group` that takes `count` messages, holds them unacked, and is
// SIGKILLed by this function once it holds them all (reaped). False if it could not.
bool kill_subscriber_holding(const std::string& topic, const char* group, std::size_t count) {
  int fds[2];
  if (::pipe(fds) != 0) return false;
  const pid_t child = spawn([&] {
    auto tt = Topic::open(topic).value();
    auto s = tt.subscriber(group).value();
    std::vector<Delivery> held(count);
    for (auto& d : held)
      if (s.try_receive(d) != Status::ok) return 1;
    char c = 'x';
    if (::write(fds[1], &c, 1) != 1) return 2;
    for (;;) ::pause();
  });
  char c;
  const bool holding = ::read(fds[0], &c, 1) == 1;
  ::kill(child, SIGKILL);
  const int rc = wait_exit(child);
  ::close(fds[0]);
  ::close(fds[1]);
  return holding && rc == 128 + SIGKILL;
}

TEST(Topic, EveryGroupGetsEveryMessageOnce) {
  ScopedTopic t("topic-basic", {.slot_count = 8});
  ASSERT_TRUE(t->create_group("a").ok());
  ASSERT_TRUE(t->create_group("b").ok());
  auto pub = t->publisher().value();
  auto a = t->subscriber("a").value();
  auto b = t->subscriber("b").value();
  // 20 messages through an 8-slot ring: the publisher waits for both reliable groups.
  for (std::uint64_t i = 0; i < 20; ++i) {
    ASSERT_EQ(pub.send(seq_bytes(i)), Status::ok);
    for (auto* s : {&a, &b}) {
      Delivery d;
      ASSERT_EQ(s->try_receive(d), Status::ok);
      EXPECT_EQ(body_seq(d), i);
      EXPECT_EQ(d.position(), i);
      EXPECT_EQ(s->ack(d), Status::ok);
    }
  }
  Delivery d;
  EXPECT_EQ(a.try_receive(d), Status::empty);
  EXPECT_EQ(group_of(*t, "a").acked, 20u);
  EXPECT_EQ(group_of(*t, "b").lag, 0u);
}

TEST(Topic, ReliableGroupHoldsPublishersBackAndLossyDoesNot) {
  ScopedTopic t("topic-overflow", {.slot_count = 4});
  ASSERT_TRUE(t->create_group("r").ok());
  ASSERT_TRUE(t->create_group("l", {.policy = GroupPolicy::lossy}).ok());
  auto pub = t->publisher().value();
  for (std::uint64_t i = 0; i < 4; ++i) ASSERT_EQ(pub.try_send(seq_bytes(i)), Status::ok);
  EXPECT_EQ(pub.try_send(seq_bytes(4)), Status::full);  // "r" holds all 4 slots
  ASSERT_TRUE(t->delete_group("r").ok());
  // Only the lossy group now: the publisher never waits.
  for (std::uint64_t i = 4; i < 10; ++i) ASSERT_EQ(pub.try_send(seq_bytes(i)), Status::ok);
  auto l = t->subscriber("l").value();
  std::uint64_t received = 0, missed = 0;
  Delivery d;
  while (l.try_receive(d) == Status::ok) {
    missed += d.missed_before();
    EXPECT_EQ(body_seq(d), d.position());
    ++received;
    ASSERT_EQ(l.ack(d), Status::ok);
  }
  EXPECT_EQ(received + missed, 10u);
  EXPECT_EQ(missed, 10u - 3u) << "a 4-slot ring keeps the last 3 safely";
  EXPECT_EQ(group_of(*t, "l").missed, missed);
  EXPECT_EQ(l.missed(), missed);
}

TEST(Topic, StartPositions) {
  ScopedTopic t("topic-start", {.slot_count = 16, .history = 5});
  auto pub = t->publisher().value();
  for (std::uint64_t i = 0; i < 10; ++i) ASSERT_EQ(pub.send(seq_bytes(i)), Status::ok);
  ASSERT_TRUE(t->create_group("latest").ok());
  ASSERT_TRUE(t->create_group("early", {.start = StartAt::earliest()}).ok());
  ASSERT_TRUE(t->create_group("at7", {.start = StartAt::at(7)}).ok());
  auto bad = t->create_group("at2", {.start = StartAt::at(2)});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code(), Errc::invalid_argument);
  EXPECT_EQ(t->create_group("early").error().code(), Errc::already_exists);
  EXPECT_EQ(t->create_group("bad name!").error().code(), Errc::invalid_argument);
  ASSERT_EQ(pub.send(seq_bytes(10)), Status::ok);
  auto drain = [&](const char* g) {
    auto s = t->subscriber(g).value();
    std::vector<std::uint64_t> got;
    Delivery d;
    while (s.try_receive(d) == Status::ok) {
      got.push_back(body_seq(d));
      EXPECT_EQ(s.ack(d), Status::ok);
    }
    return got;
  };
  EXPECT_EQ(drain("latest"), (std::vector<std::uint64_t>{10}));
  EXPECT_EQ(drain("early"), (std::vector<std::uint64_t>{5, 6, 7, 8, 9, 10}));
  EXPECT_EQ(drain("at7"), (std::vector<std::uint64_t>{7, 8, 9, 10}));
}

TEST(Topic, NackRedeliversToTheGroupAndDeadLettersAfterMaxDeliveries) {
  ScopedTopic t("topic-nack", {.slot_count = 8, .max_deliveries = 2});
  ASSERT_TRUE(t->create_group("g").ok());
  ASSERT_TRUE(t->create_group("other").ok());
  auto pub = t->publisher().value();
  auto s1 = t->subscriber("g").value();
  auto s2 = t->subscriber("g").value();
  ASSERT_EQ(pub.send("m"), Status::ok);
  Delivery d;
  ASSERT_EQ(s1.try_receive(d), Status::ok);
  EXPECT_EQ(d.delivery_count(), 1u);
  ASSERT_EQ(s1.nack(d), Status::ok);
  EXPECT_EQ(s1.ack(d), Status::invalid);  // no longer held through this handle
  Delivery e;
  ASSERT_EQ(s2.try_receive(e), Status::ok);
  EXPECT_EQ(e.view(), "m");
  EXPECT_TRUE(e.redelivered());
  ASSERT_EQ(s2.nack(e), Status::ok);
  // Third delivery would exceed max_deliveries = 2: dead-lettered instead.
  Delivery f;
  EXPECT_EQ(s1.try_receive(f), Status::empty);
  auto dlq = Queue::open(t.name() + ".g.dlq").value();
  auto c = dlq.consumer().value();
  Message m;
  ASSERT_EQ(c.try_receive(m), Status::ok);
  auto dl = parse_dead_letter(m.data());
  ASSERT_TRUE(dl.has_value());
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(dl->payload.data()), dl->payload.size()), "m");
  EXPECT_EQ(dl->reason, DeadLetterReason::max_deliveries);
  (void)c.ack(m);
  EXPECT_EQ(group_of(*t, "g").dead_lettered, 1u);
  EXPECT_EQ(group_of(*t, "g").acked, 1u);
  // The other group is untouched by g's nacks.
  auto o = t->subscriber("other").value();
  ASSERT_EQ(o.try_receive(f), Status::ok);
  EXPECT_EQ(f.delivery_count(), 1u);
  // reject: to "other"'s DLQ at once, reason rejected, its delivery count as delivered.
  ASSERT_EQ(o.reject(f), Status::ok);
  EXPECT_EQ(o.ack(f), Status::invalid);
  auto odlq = Queue::open(t.name() + ".other.dlq").value();
  auto oc = odlq.consumer().value();
  Message om;
  ASSERT_EQ(oc.try_receive(om), Status::ok);
  auto odl = parse_dead_letter(om.data());
  ASSERT_TRUE(odl.has_value());
  EXPECT_EQ(odl->reason, DeadLetterReason::rejected);
  EXPECT_EQ(odl->delivery_count, 1u);
  (void)oc.ack(om);
  EXPECT_EQ(group_of(*t, "other").dead_lettered, 1u);
  EXPECT_EQ(group_of(*t, "other").lag, 0u);
  (void)Queue::remove(t.name() + ".g.dlq");
  (void)Queue::remove(t.name() + ".other.dlq");
}

TEST(Topic, NackWithDelayAndLeaseExpiry) {
  ScopedTopic t("topic-lease", {.slot_count = 8, .lease = 100ms, .max_deliveries = 0});
  ASSERT_TRUE(t->create_group("g").ok());
  auto pub = t->publisher().value();
  auto s = t->subscriber("g").value();
  ASSERT_EQ(pub.send("x"), Status::ok);
  Delivery d;
  ASSERT_EQ(s.try_receive(d), Status::ok);
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_EQ(s.nack(d, 200ms), Status::ok);
  Delivery e;
  ASSERT_EQ(s.receive_for(e, 5s), Status::ok);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 190ms) << "never early";
  EXPECT_EQ(e.delivery_count(), 2u);
  // Not acked within its 100 ms lease: redelivered (the receive that waits heals).
  Delivery f;
  ASSERT_EQ(s.receive_for(f, 5s), Status::ok);
  EXPECT_EQ(f.delivery_count(), 3u);
  EXPECT_EQ(s.ack(e), Status::lease_lost);
  EXPECT_EQ(s.ack(f), Status::ok);
  (void)Queue::remove(t.name() + ".g.dlq");
}

// A subscriber SIGKILLed while it holds messages: they go back to its group (and only to it).
TEST(Topic, DeadSubscribersMessagesAreRedeliveredToItsGroup) {
  ScopedTopic t("topic-deadsub", {.slot_count = 16});
  ASSERT_TRUE(t->create_group("g").ok());
  ASSERT_TRUE(t->create_group("h").ok());
  auto pub = t->publisher().value();
  for (std::uint64_t i = 0; i < 5; ++i) ASSERT_EQ(pub.send(seq_bytes(i)), Status::ok);
  const std::string name = t.name();
  ASSERT_TRUE(kill_subscriber_holding(name, "g", 5));
  EXPECT_EQ(group_of(*t, "g").in_flight, 5u);
  auto s = t->subscriber("g").value();
  std::set<std::uint64_t> got;
  Delivery d;
  while (got.size() < 5 && s.receive_for(d, 5s) == Status::ok) {
    EXPECT_TRUE(d.redelivered());
    got.insert(body_seq(d));
    ASSERT_EQ(s.ack(d), Status::ok);
  }
  EXPECT_EQ(got, (std::set<std::uint64_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(group_of(*t, "g").redelivered, 5u);
  EXPECT_EQ(group_of(*t, "h").redelivered, 0u);
  EXPECT_EQ(group_of(*t, "h").lag, 5u);
  (void)Queue::remove(name + ".g.dlq");
  (void)Queue::remove(name + ".h.dlq");
}

// A publisher killed between its claim and its commit leaves a hole every group passes.
TEST(Topic, PublisherKilledMidWriteNeverWedgesAGroup) {
  ScopedTopic t("topic-deadpub", {.slot_count = 8});
  ASSERT_TRUE(t->create_group("g").ok());
  ASSERT_TRUE(t->create_group("l", {.policy = GroupPolicy::lossy}).ok());
  const std::string name = t.name();
  const pid_t child = spawn([&] {
    auto tt = Topic::open(name).value();
    auto p = tt.publisher().value();
    if (p.send(seq_bytes(0)) != Status::ok) return 1;
    detail::arm_crash_point("topic.publish.after_claim", 1);
    (void)p.send(seq_bytes(1));
    return 2;
  });
  EXPECT_EQ(wait_exit(child), 128 + SIGKILL);
  auto pub = t->publisher().value();
  // The ring keeps going past the dead claim, for both groups, 3 laps round.
  auto g = t->subscriber("g").value();
  auto l = t->subscriber("l").value();
  std::vector<std::uint64_t> got_g, got_l;
  for (std::uint64_t i = 2; i < 26; ++i) {
    ASSERT_EQ(pub.send_for(seq_bytes(i), 10s), Status::ok) << i;
    for (auto [s, v] : {std::pair{&g, &got_g}, std::pair{&l, &got_l}}) {
      Delivery d;
      while (s->try_receive(d) == Status::ok) {
        v->push_back(body_seq(d));
        ASSERT_EQ(s->ack(d), Status::ok);
      }
    }
  }
  // The hole: receive_for waits at it until the dead publisher's claim is repaired.
  for (auto [s, v] : {std::pair{&g, &got_g}, std::pair{&l, &got_l}}) {
    Delivery d;
    while (v->size() < 25 && s->receive_for(d, 5s) == Status::ok) {
      v->push_back(body_seq(d));
      ASSERT_EQ(s->ack(d), Status::ok);
    }
  }
  std::vector<std::uint64_t> want{0};
  for (std::uint64_t i = 2; i < 26; ++i) want.push_back(i);
  EXPECT_EQ(got_g, want);
  EXPECT_EQ(got_l, want);
  EXPECT_EQ(t->stats().holes, 1u);
  (void)Queue::remove(name + ".g.dlq");
  (void)Queue::remove(name + ".l.dlq");
}

// A reliable group whose subscribers are all gone: held past its stall timeout, then
// detached (publishers go on) or kept holding (marked stalled).
TEST(Topic, StalledGroupIsDetachedOrHeldByPolicy) {
  for (StallAction action : {StallAction::detach, StallAction::hold}) {
    ScopedTopic t("topic-stall", {.slot_count = 4});
    ASSERT_TRUE(t->create_group("slow", {.stall_timeout = 200ms, .on_stall = action}).ok());
    auto pub = t->publisher().value();
    for (std::uint64_t i = 0; i < 4; ++i) ASSERT_EQ(pub.send(seq_bytes(i)), Status::ok);
    const Status st = pub.send_for(seq_bytes(4), 2s);
    if (action == StallAction::detach) {
      EXPECT_EQ(st, Status::ok);
      EXPECT_EQ(group_of(*t, "slow").state, "detached");
      auto s = t->subscriber("slow");
      EXPECT_FALSE(s.ok());
    } else {
      EXPECT_EQ(st, Status::timeout);
      EXPECT_EQ(group_of(*t, "slow").state, "stalled");
      // A subscriber that catches up makes it active again.
      auto s = t->subscriber("slow").value();
      Delivery d;
      ASSERT_EQ(s.try_receive(d), Status::ok);
      ASSERT_EQ(s.ack(d), Status::ok);
      EXPECT_EQ(group_of(*t, "slow").state, "active");
      EXPECT_EQ(pub.try_send(seq_bytes(4)), Status::ok);
    }
    (void)Queue::remove(t.name() + ".slow.dlq");
  }
}

// The scenario: 1 publisher, 4 groups (2 reliable with 2 competing subscribers each,
// 1 lossy, 1 late joiner from earliest), all processes.
TEST(Topic, OnePublisherFourGroups) {
  constexpr std::uint64_t kMessages = 100'000;
  constexpr std::uint32_t kHistory = 1000;
  ScopedTopic t("topic-four", {.slot_count = 1024, .history = kHistory});
  ASSERT_TRUE(t->create_group("r1").ok());
  ASSERT_TRUE(t->create_group("r2").ok());
  ASSERT_TRUE(t->create_group("lossy", {.policy = GroupPolicy::lossy}).ok());
  const std::string name = t.name();
  // counts[g * kMessages + seq]: deliveries of seq to group g (0 r1, 1 r2, 2 lossy, 3 late).
  auto* counts = shared_array<std::atomic<std::uint32_t>>(4 * kMessages);
  auto* missed = shared_array<std::atomic<std::uint64_t>>(4);
  auto* late_order_ok = shared_array<std::atomic<std::uint32_t>>(1);
  auto* published = shared_array<std::atomic<std::uint64_t>>(1);
  late_order_ok[0] = 1;

  auto subscriber = [&](std::uint32_t gi, const char* group) {
    return spawn([=] {
      auto tt = Topic::open(name).value();
      auto s = tt.subscriber(group).value();
      Delivery d;
      std::uint64_t last = 0;
      bool first = true;
      for (;;) {
        const Status st = s.receive_for(d, 200ms);
        if (st == Status::ok) {
          const std::uint64_t v = body_seq(d);
          if (v >= kMessages) return 3;
          counts[gi * kMessages + v].fetch_add(1);
          missed[gi].fetch_add(d.missed_before());
          if (gi == 3) {
            if (!first && v != last + 1) late_order_ok[0] = 0;
            last = v;
            first = false;
          }
          if (s.ack(d) != Status::ok) return 4;
          continue;
        }
        if (st != Status::timeout) return 5;
        // Done once everything published was taken and acked by the group.
        if (published[0].load() == kMessages) {
          for (auto& g : tt.groups())
            if (g.name == group && g.acked == kMessages) return 0;
        }
      }
    });
  };
  std::vector<pid_t> kids;
  kids.push_back(subscriber(0, "r1"));
  kids.push_back(subscriber(0, "r1"));
  kids.push_back(subscriber(1, "r2"));
  kids.push_back(subscriber(1, "r2"));
  kids.push_back(subscriber(2, "lossy"));
  const pid_t pub = spawn([=] {
    auto tt = Topic::open(name).value();
    auto p = tt.publisher().value();
    for (std::uint64_t i = 0; i < kMessages; ++i) {
      if (i == kMessages / 2) {
        // The late joiner: created mid-stream, from the earliest retained message.
        if (!tt.create_group("late", {.start = StartAt::earliest()}).ok()) return 6;
        published[0].store(i + 1000'000'000);  // marks "late exists"
      }
      if (p.send(seq_bytes(i)) != Status::ok) return 7;
    }
    published[0].store(kMessages);
    return 0;
  });
  // Start the late joiner's subscriber once its group exists.
  while (published[0].load() < 1000'000'000 && published[0].load() != kMessages)
    std::this_thread::yield();
  kids.push_back(subscriber(3, "late"));
  EXPECT_EQ(wait_bounded(pub, 120s), 0);
  for (pid_t k : kids) EXPECT_EQ(wait_bounded(k, 120s), 0);

  for (std::uint32_t gi : {0u, 1u}) {
    std::uint64_t once = 0, other = 0;
    for (std::uint64_t i = 0; i < kMessages; ++i)
      (counts[gi * kMessages + i].load() == 1 ? once : other)++;
    EXPECT_EQ(once, kMessages) << "reliable group " << gi << ": exactly once each";
  }
  std::uint64_t lossy_received = 0;
  for (std::uint64_t i = 0; i < kMessages; ++i) {
    EXPECT_LE(counts[2 * kMessages + i].load(), 1u);
    lossy_received += counts[2 * kMessages + i].load();
  }
  EXPECT_EQ(lossy_received + missed[2].load(), kMessages) << "lossy: received + missed";
  // The late joiner: a contiguous run from its start to the end (history, then live).
  std::uint64_t first = kMessages, late_received = 0;
  for (std::uint64_t i = 0; i < kMessages; ++i)
    if (counts[3 * kMessages + i].load() != 0) {
      first = std::min(first, i);
      ++late_received;
    }
  EXPECT_EQ(late_order_ok[0].load(), 1u);
  EXPECT_LE(first, kMessages / 2 - 1) << "it got history from before it joined";
  EXPECT_GE(first + kHistory, kMessages / 2) << "at most `history` messages back";
  EXPECT_EQ(late_received, kMessages - first);
  for (const char* g : {"r1", "r2", "lossy", "late"}) (void)Queue::remove(name + "." + g + ".dlq");
}

// Random SIGKILLs of publishers and subscribers in every group; an oracle per group.
TEST(Topic, RandomKillsLoseNothingInReliableGroups) {
  constexpr std::uint64_t kPerPublisher = 300'000;
  constexpr int kPublishers = 2;
  constexpr std::uint64_t kIds = kPerPublisher * kPublishers;
  ScopedTopic t("topic-kills", {.slot_count = 256, .lease = 60s, .max_deliveries = 0,
                                .claim_timeout = 60s});
  ASSERT_TRUE(t->create_group("r1").ok());
  ASSERT_TRUE(t->create_group("r2").ok());
  ASSERT_TRUE(t->create_group("lossy", {.policy = GroupPolicy::lossy}).ok());
  const std::string name = t.name();
  const char* groups[] = {"r1", "r2", "lossy"};
  // Per id: attempted (publisher about to send), confirmed (send returned ok), and per group
  // the deliveries.
  auto* attempted = shared_array<std::atomic<std::uint8_t>>(kIds);
  auto* confirmed = shared_array<std::atomic<std::uint8_t>>(kIds);
  auto* got = shared_array<std::atomic<std::uint32_t>>(3 * kIds);
  auto* next = shared_array<std::atomic<std::uint64_t>>(kPublishers);  // resume points
  auto* unexpected = shared_array<std::atomic<std::uint64_t>>(1);

  auto publisher = [&](int p) {
    return spawn([=] {
      auto tt = Topic::open(name).value();
      auto pub = tt.publisher().value();
      for (std::uint64_t i = next[p].load(); i < kPerPublisher; ++i) {
        const std::uint64_t id = std::uint64_t(p) * kPerPublisher + i;
        attempted[id] = 1;
        if (pub.send(seq_bytes(id)) != Status::ok) return 1;
        confirmed[id] = 1;
        next[p] = i + 1;
      }
      return 0;
    });
  };
  auto subscriber = [&](int g) {
    return spawn([=] {
      auto tt = Topic::open(name).value();
      auto s = tt.subscriber(groups[g]).value();
      Delivery d;
      for (;;) {
        const Status st = s.receive_for(d, 100ms);
        if (st == Status::timeout) continue;
        if (st != Status::ok) return 1;
        const std::uint64_t v = body_seq(d);
        if (v >= kIds || attempted[v].load() == 0) {
          unexpected[0].fetch_add(1);
        } else {
          got[g * kIds + v].fetch_add(1);
        }
        if (s.ack(d) != Status::ok && g != 2) { /* lease lost: redelivered, counted */ }
      }
    });
  };
  std::vector<pid_t> pubs(kPublishers), subs(6);
  for (int p = 0; p < kPublishers; ++p) pubs[p] = publisher(p);
  for (int i = 0; i < 6; ++i) subs[i] = subscriber(i / 2);
  std::mt19937 rng(12345);
  int kills = 0, publisher_kills = 0, subscriber_kills = 0;
  for (;;) {
    bool all_done = true;
    for (int p = 0; p < kPublishers; ++p) {
      int status = 0;
      if (pubs[p] > 0 && ::waitpid(pubs[p], &status, WNOHANG) == pubs[p]) {
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0) pubs[p] = 0;
        else pubs[p] = publisher(p);  // killed: resume after its last confirmed send
      }
      if (pubs[p] != 0) all_done = false;
    }
    if (all_done) break;
    std::this_thread::sleep_for(10ms);  // paces the kills, not a synchronisation
    const int victim = static_cast<int>(rng() % 8);
    if (kills < 60) {
      ++kills;
      if (victim < kPublishers) {
        if (pubs[victim] > 0 && ::kill(pubs[victim], SIGKILL) == 0) ++publisher_kills;
      } else {
        ++subscriber_kills;
        const int i = victim - kPublishers;
        ::kill(subs[i], SIGKILL);
        (void)wait_exit(subs[i]);
        subs[i] = subscriber(i / 2);
      }
    }
  }
  // Drain: wait until every reliable group has acked everything published.
  const std::uint64_t head = t->stats().head;
  for (const char* g : {"r1", "r2"}) {
    const auto until = std::chrono::steady_clock::now() + 60s;
    while (group_of(*t, g).acked < head && std::chrono::steady_clock::now() < until) {
      t->heal();
      std::this_thread::sleep_for(20ms);  // polling the group's state
    }
    EXPECT_EQ(group_of(*t, g).acked, head) << g;
  }
  for (pid_t s : subs) {
    ::kill(s, SIGKILL);
    (void)wait_exit(s);
  }
  EXPECT_EQ(unexpected[0].load(), 0u);
  for (int g = 0; g < 2; ++g) {
    std::uint64_t lost = 0;
    for (std::uint64_t id = 0; id < kIds; ++id)
      if (confirmed[id].load() && got[g * kIds + id].load() == 0) ++lost;
    EXPECT_EQ(lost, 0u) << groups[g];
  }
  EXPECT_GT(publisher_kills, 0);
  EXPECT_GT(subscriber_kills, 0);
  for (const char* g : groups) (void)Queue::remove(name + "." + g + ".dlq");
}

// Waits (bounded) until `pid` has stopped itself (SIGSTOP at a stop point).
bool wait_stopped(pid_t pid) {
  int status = 0;
  return ::waitpid(pid, &status, WUNTRACED) == pid && WIFSTOPPED(status);
}

// A subscriber stopped right after it claimed a message, before it wrote its lease: the
// message comes back to its group one lease later, not never.
TEST(Topic, SubscriberStoppedRightAfterItsClaimLosesItsLease) {
  ScopedTopic t("topic-stopsub", {.slot_count = 8, .lease = 200ms});
  ASSERT_TRUE(t->create_group("g").ok());
  auto pub = t->publisher().value();
  ASSERT_EQ(pub.send("m"), Status::ok);
  const std::string name = t.name();
  const pid_t child = spawn([&] {
    auto tt = Topic::open(name).value();
    auto s = tt.subscriber("g").value();
    detail::arm_stop_point("topic.receive.after_claim", 1);
    Delivery d;
    (void)s.try_receive(d);
    return 0;
  });
  ASSERT_TRUE(wait_stopped(child));
  auto s = t->subscriber("g").value();
  Delivery d;
  ASSERT_EQ(s.receive_for(d, 10s), Status::ok);
  EXPECT_EQ(d.view(), "m");
  EXPECT_TRUE(d.redelivered());
  EXPECT_EQ(s.ack(d), Status::ok);
  ::kill(child, SIGKILL);
  EXPECT_EQ(wait_exit(child), 128 + SIGKILL);
}

// A publisher stopped between its claim and its commit: after the claim timeout its
// position is a hole, other publishers go on round the ring (the hole carried from lap to
// lap), and once it runs again its message is published at a new position, once.
TEST(Topic, StoppedPublisherDoesNotStopTheOthers) {
  ScopedTopic t("topic-stoppub", {.slot_count = 8, .claim_timeout = 200ms});
  ASSERT_TRUE(t->create_group("g").ok());
  const std::string name = t.name();
  const pid_t child = spawn([&] {
    auto tt = Topic::open(name).value();
    auto p = tt.publisher().value();
    detail::arm_stop_point("topic.publish.after_claim", 1);
    return p.send(seq_bytes(1000)) == Status::ok ? 0 : 1;
  });
  ASSERT_TRUE(wait_stopped(child));
  // The group's subscriber runs beside the publisher (a thread; the child was forked first).
  std::vector<std::uint64_t> got;
  std::thread sub([&] {
    auto s = t->subscriber("g").value();
    Delivery d;
    while (got.size() < 41 && s.receive_for(d, 20s) == Status::ok) {
      got.push_back(body_seq(d));
      if (s.ack(d) != Status::ok) break;
    }
  });
  auto pub = t->publisher().value();
  for (std::uint64_t i = 0; i < 40; ++i) ASSERT_EQ(pub.send_for(seq_bytes(i), 10s), Status::ok) << i;
  EXPECT_GE(t->stats().holes, 1u);
  ::kill(child, SIGCONT);
  EXPECT_EQ(wait_bounded(child, 30s), 0);
  sub.join();
  std::vector<std::uint64_t> want = iota_vec(0, 40);
  want.push_back(1000);  // the stopped one's message, published again when it ran
  EXPECT_EQ(got, want);
}

#ifdef SHMQD_PATH
// Nobody of the topic waits or publishes: shmqd alone gives a dead subscriber's messages back
// to its group, and exports the group's figures.
TEST(Topic, ShmqdHealsATopicOnItsOwn) {
  ScopedTopic t("topic-shmqd", {.slot_count = 16});
  ASSERT_TRUE(t->create_group("g").ok());
  ASSERT_TRUE(t->create_group("l", {.policy = GroupPolicy::lossy}).ok());
  {
    auto pub = t->publisher().value();
    for (std::uint64_t i = 0; i < 3; ++i) ASSERT_EQ(pub.send(seq_bytes(i)), Status::ok);
  }
  const std::string name = t.name();
  ASSERT_TRUE(kill_subscriber_holding(name, "g", 3));
  EXPECT_EQ(group_of(*t, "g").requeued, 0u);
  test::TempDir dir;
  test::Daemon d(dir.path(), name, dir.path() + "/shmqd.log", dir.path() + "/metrics.prom");
  ASSERT_TRUE(d.wait_for("topic '" + name + "': healed"));
  EXPECT_EQ(group_of(*t, "g").requeued, 3u);
  EXPECT_EQ(group_of(*t, "g").in_flight, 0u);
  EXPECT_EQ(t->stats().subscribers, 0u) << "the dead row was freed";
  // The metrics file names the groups.
  bool seen = false;
  for (int i = 0; i < 400 && !seen; ++i) {
    std::ifstream in(dir.path() + "/metrics.prom");
    std::stringstream ss;
    ss << in.rdbuf();
    seen = ss.str().find("shmq_group_lag{topic=\"" + name + "\",group=\"g\",policy=\"reliable\"} 3") !=
           std::string::npos;
    if (!seen) std::this_thread::sleep_for(10ms);  // polling a file shmqd rewrites every second
  }
  EXPECT_TRUE(seen);
  EXPECT_EQ(d.terminate(), 0);
}

// Waits (bounded: 10 s) until the positions file shmqd rewrites in `topic_dir` holds every
// one of `needles`; returns its last contents.
std::string wait_for_positions(const std::string& topic_dir, std::vector<std::string> needles) {
  const auto until = std::chrono::steady_clock::now() + 10s;
  std::string text;
  while (std::chrono::steady_clock::now() < until) {
    std::ifstream in(topic_dir + "/positions");
    std::stringstream ss;
    ss << in.rdbuf();
    text = ss.str();
    bool all = true;
    for (const auto& n : needles) all = all && text.find(n) != std::string::npos;
    if (all) break;
    std::this_thread::sleep_for(5ms);  // polling a file shmqd rewrites
  }
  return text;
}

// A durable topic across a kill -9 of shmqd and a reboot (the segment gone): every group
// resumes where it acked; a group created afterwards replays exactly the retained messages.
TEST(Topic, DurableTopicGroupsResumeAfterAReboot) {
  test::TempDir dir;
  const std::string name = unique_name("topic-durable");
  {
    auto t = Topic::create(name, {.slot_count = 64, .durability = Durability::sync,
                                  .data_dir = dir.path(), .flush_interval = 1ms});
    ASSERT_TRUE(t.ok()) << t.error().message();
    ASSERT_TRUE(t->create_group("r").ok());
    ASSERT_TRUE(t->create_group("l", {.policy = GroupPolicy::lossy}).ok());
    test::Daemon d(dir.path(), name, dir.path() + "/shmqd.log");
    auto pub = t->publisher().value();
    auto r = t->subscriber("r").value();
    for (std::uint64_t i = 0; i < 100; ++i) {
      ASSERT_EQ(pub.send(seq_bytes(i)), Status::ok) << i;  // sync: on disk when it returns
      Delivery m;
      if (i < 40) {
        ASSERT_EQ(r.try_receive(m), Status::ok);
        ASSERT_EQ(r.ack(m), Status::ok);
      }
    }
    EXPECT_EQ(drain_seqs(*t, "l", 70), iota_vec(0, 70));
    // Wait (bounded) until shmqd saved the positions, then kill it without warning.
    const std::string text = wait_for_positions(dir.path() + "/" + name, {"r 40 ", "l 70 "});
    EXPECT_NE(text.find("r 40 "), std::string::npos) << text;
    d.kill9();
  }
  // The reboot: shared memory is gone.
  ASSERT_TRUE(Topic::remove(name).ok());
  ASSERT_FALSE(Topic::is_topic(name));
  test::Daemon d(dir.path(), name, dir.path() + "/shmqd2.log");
  ASSERT_TRUE(d.wait_for("rebuilt")) << d.log_text();
  auto t = Topic::open(name).value();
  EXPECT_EQ(t.stats().head, 100u);
  EXPECT_EQ(drain_seqs(t, "r", 60), iota_vec(40, 100));
  EXPECT_EQ(drain_seqs(t, "l", 30), iota_vec(70, 100));
  // Replay: a new group from a retained position gets exactly the retained messages.
  ASSERT_TRUE(t.create_group("replay", {.start = StartAt::at(10)}).ok());
  EXPECT_EQ(drain_seqs(t, "replay", 90), iota_vec(10, 100));
  ASSERT_TRUE(t.create_group("all", {.start = StartAt::earliest()}).ok());
  EXPECT_EQ(drain_seqs(t, "all", 100), iota_vec(0, 100));
  // Publishing goes on after the rebuilt positions.
  auto pub = t.publisher().value();
  ASSERT_EQ(pub.send(seq_bytes(100)), Status::ok);
  EXPECT_EQ(pub.last_position(), 100u);
  EXPECT_EQ(drain_seqs(t, "r", 1), (std::vector<std::uint64_t>{100}));
  EXPECT_EQ(d.terminate(), 0);
  (void)Topic::remove(name);
}

// A torn log tail (a crash mid-append) is cut at recovery; the rest is kept.
TEST(Topic, TornLogTailIsCutAtRecovery) {
  test::TempDir dir;
  const std::string name = unique_name("topic-torn");
  {
    auto t = Topic::create(name, {.slot_count = 16, .durability = Durability::sync,
                                  .data_dir = dir.path(), .flush_interval = 1ms});
    ASSERT_TRUE(t.ok()) << t.error().message();
    ASSERT_TRUE(t->create_group("g", {.start = StartAt::earliest()}).ok());
    test::Daemon d(dir.path(), name, dir.path() + "/shmqd.log");
    auto pub = t->publisher().value();
    for (std::uint64_t i = 0; i < 10; ++i) ASSERT_EQ(pub.send(seq_bytes(i)), Status::ok);
    EXPECT_EQ(d.terminate(), 0);
  }
  ASSERT_TRUE(Topic::remove(name).ok());
  // Garbage after the last record, as a torn append leaves.
  const std::string file = dir.path() + "/" + name + "/" + detail::topic_log_file_name(0);
  {
    std::ofstream out(file, std::ios::app | std::ios::binary);
    out << "STL1 half a record";
  }
  test::Daemon d(dir.path(), name, dir.path() + "/shmqd2.log");
  ASSERT_TRUE(d.wait_for("rebuilt")) << d.log_text();
  auto t = Topic::open(name).value();
  EXPECT_EQ(drain_seqs(t, "g", 10), iota_vec(0, 10));
  EXPECT_EQ(d.terminate(), 0);
  (void)Topic::remove(name);
}

// Retention by size deletes whole log files from the oldest; what is gone cannot be a start
// position any more, and a group from `earliest` gets exactly what is retained.
TEST(Topic, RetentionDeletesTheOldestLogFiles) {
  test::TempDir dir;
  const std::string name = unique_name("topic-retain");
  auto t = Topic::create(name, {.slot_count = 16, .slot_size = 320, .durability = Durability::sync,
                                .data_dir = dir.path(), .flush_interval = 1ms,
                                .retain_bytes = 8192});
  ASSERT_TRUE(t.ok()) << t.error().message();
  test::Daemon d(dir.path(), name, dir.path() + "/shmqd.log", "", "", {"--segment-bytes", "4096"});
  auto pub = t->publisher().value();
  std::string body(200, 'x');
  for (std::uint64_t i = 0; i < 200; ++i) {
    std::memcpy(body.data(), &i, 8);
    ASSERT_EQ(pub.send(body), Status::ok);
  }
  const TopicStats st = t->stats();
  EXPECT_EQ(st.persisted, 200u);
  EXPECT_GT(st.earliest, 100u) << "old files deleted";
  EXPECT_FALSE(std::filesystem::exists(dir.path() + "/" + name + "/" + detail::topic_log_file_name(0)));
  EXPECT_EQ(t->create_group("gone", {.start = StartAt::at(0)}).error().code(), Errc::invalid_argument);
  ASSERT_TRUE(t->create_group("old", {.start = StartAt::earliest()}).ok());
  EXPECT_EQ(drain_seqs(*t, "old", 200 - st.earliest), iota_vec(st.earliest, 200));
  EXPECT_EQ(d.terminate(), 0);
  (void)Topic::remove(name);
}

// shmqd killed between a log sync and the move of `persisted`, three times in a row: the
// next one starts from the log's end (nothing logged twice, nothing lost), sync publishers
// get their confirmations from whichever shmqd persists them.
TEST(Topic, ShmqdKilledWhilePersistingLosesNothing) {
  test::TempDir dir;
  const std::string name = unique_name("topic-persist-kill");
  auto t = Topic::create(name, {.slot_count = 32, .durability = Durability::sync,
                                .data_dir = dir.path(), .flush_interval = 1ms});
  ASSERT_TRUE(t.ok()) << t.error().message();
  ASSERT_TRUE(t->create_group("g", {.start = StartAt::earliest()}).ok());
  auto pub = t->publisher().value();
  std::uint64_t sent = 0;
  std::vector<std::uint64_t> published;  // by position: what each send put in the ring
  for (int round = 0; round < 3; ++round) {
    test::Daemon d(dir.path(), name, dir.path() + "/shmqd.log", "", "topic.persist.after_sync:3");
    // Sends until this shmqd died at its crash point; a send it never confirmed times out
    // (it was published: the next round sends the same body again, a second message).
    while (sent < 1000) {
      const Status st = pub.send_for(seq_bytes(sent), 2s);
      ASSERT_TRUE(st == Status::ok || st == Status::timeout) << to_string(st);
      ASSERT_EQ(pub.last_position(), published.size());
      published.push_back(sent);
      if (st != Status::ok) break;
      ++sent;
    }
    EXPECT_EQ(d.wait_end(), 128 + SIGKILL);
  }
  test::Daemon d(dir.path(), name, dir.path() + "/shmqd-final.log");
  ASSERT_TRUE(d.wait_for("attached"));
  // Every message published (confirmed or not) reaches the group, once, in order.
  const std::uint64_t head = t->stats().head;
  EXPECT_EQ(head, published.size());
  EXPECT_EQ(drain_seqs(*t, "g", head), published);
  // And the log holds them all: a replay group reads them back from disk after the ring.
  const auto until = std::chrono::steady_clock::now() + 10s;
  while (t->stats().persisted < head && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(5ms);  // polling shmqd's progress
  EXPECT_EQ(t->stats().persisted, head);
  EXPECT_EQ(d.terminate(), 0);
  (void)Topic::remove(name);
}

// After a reboot, what a group had received but not acked comes back marked redelivered;
// its dead-letter queue (gone with the reboot) is made again when a message needs it; and a
// large backlog replays from the log in order.
TEST(Topic, RebootRedeliversInFlightAndReplaysABacklog) {
  test::TempDir dir;
  const std::string name = unique_name("topic-inflight");
  constexpr std::uint64_t kBacklog = 20'000;
  {
    auto t = Topic::create(name, {.slot_count = 64, .max_deliveries = 2,
                                  .durability = Durability::async, .data_dir = dir.path(),
                                  .flush_interval = 1ms});
    ASSERT_TRUE(t.ok()) << t.error().message();
    ASSERT_TRUE(t->create_group("r").ok());
    ASSERT_TRUE(t->create_group("l", {.policy = GroupPolicy::lossy}).ok());
    test::Daemon d(dir.path(), name, dir.path() + "/shmqd.log");
    auto pub = t->publisher().value();
    auto r = t->subscriber("r").value();
    std::vector<Delivery> held(10);
    for (std::uint64_t i = 0; i < 10; ++i) ASSERT_EQ(pub.send(seq_bytes(i)), Status::ok);
    for (auto& h : held) ASSERT_EQ(r.try_receive(h), Status::ok);
    // The lossy group never holds the publisher: a backlog far larger than the ring, all
    // of it in the log. ("r" holds 10 of 64 slots: the publisher is held by it after 64.)
    ASSERT_TRUE(t->delete_group("r").ok());
    for (std::uint64_t i = 10; i < kBacklog; ++i) ASSERT_EQ(pub.send(seq_bytes(i)), Status::ok);
    const auto until = std::chrono::steady_clock::now() + 30s;
    while (t->stats().persisted < kBacklog && std::chrono::steady_clock::now() < until)
      std::this_thread::sleep_for(5ms);  // polling shmqd's progress
    ASSERT_EQ(t->stats().persisted, kBacklog);
    d.kill9();
  }
  ASSERT_TRUE(Topic::remove(name).ok());
  test::Daemon d(dir.path(), name, dir.path() + "/shmqd2.log");
  ASSERT_TRUE(d.wait_for("rebuilt")) << d.log_text();
  auto t = Topic::open(name).value();
  EXPECT_EQ(drain_seqs(t, "l", kBacklog, 10s), iota_vec(0, kBacklog));
  EXPECT_EQ(d.terminate(), 0);
  (void)Topic::remove(name);
}

TEST(Topic, InFlightAtARebootComesBackRedelivered) {
  test::TempDir dir;
  const std::string name = unique_name("topic-inflight2");
  {
    auto t = Topic::create(name, {.slot_count = 64, .max_deliveries = 2,
                                  .durability = Durability::sync, .data_dir = dir.path(),
                                  .flush_interval = 1ms});
    ASSERT_TRUE(t.ok()) << t.error().message();
    ASSERT_TRUE(t->create_group("r").ok());
    test::Daemon d(dir.path(), name, dir.path() + "/shmqd.log");
    auto pub = t->publisher().value();
    auto r = t->subscriber("r").value();
    std::vector<Delivery> held(10);
    for (std::uint64_t i = 0; i < 10; ++i) ASSERT_EQ(pub.send(seq_bytes(i)), Status::ok);
    for (auto& h : held) ASSERT_EQ(r.try_receive(h), Status::ok);
    const std::string text = wait_for_positions(dir.path() + "/" + name, {"r 0 10"});
    ASSERT_NE(text.find("r 0 10"), std::string::npos) << text;
    d.kill9();
  }
  ASSERT_TRUE(Topic::remove(name).ok());  // the group's DLQ goes too
  test::Daemon d(dir.path(), name, dir.path() + "/shmqd2.log");
  ASSERT_TRUE(d.wait_for("rebuilt")) << d.log_text();
  auto t = Topic::open(name).value();
  auto r = t.subscriber("r").value();
  Delivery m;
  for (std::uint64_t i = 0; i < 10; ++i) {
    ASSERT_EQ(r.receive_for(m, 5s), Status::ok);
    EXPECT_EQ(body_seq(m), i);
    EXPECT_TRUE(m.redelivered());
    EXPECT_EQ(m.delivery_count(), 2u);
    // max_deliveries = 2: given back once more, it is dead-lettered, to a DLQ made again.
    ASSERT_EQ(r.nack(m), Status::ok);
  }
  EXPECT_EQ(r.try_receive(m), Status::empty);
  auto dlq = Queue::open(name + ".r.dlq");
  ASSERT_TRUE(dlq.ok()) << dlq.error().message();
  EXPECT_EQ(dlq->stats().ready, 10u);
  EXPECT_EQ(t.groups()[0].dead_lettered, 10u);
  EXPECT_EQ(d.terminate(), 0);
  (void)Topic::remove(name);
}
#endif

TEST(Topic, QueueAndTopicNamesAreOneSpace) {
  ScopedTopic t("topic-kind");
  auto q = Queue::open(t.name());
  ASSERT_FALSE(q.ok());
  EXPECT_EQ(q.error().code(), Errc::mismatch);
  EXPECT_TRUE(Topic::is_topic(t.name()));
  ScopedQueue real("topic-kind-q");
  EXPECT_FALSE(Topic::is_topic(real.name()));
  EXPECT_EQ(Topic::open(real.name()).error().code(), Errc::mismatch);
  EXPECT_EQ(Topic::create(t.name()).error().code(), Errc::already_exists);
}

TEST(Topic, BadOptionsAreRefusedWithAReason) {
  const std::string n = unique_name("topic-bad");
  auto durable = Topic::create(n, {.durability = Durability::async});
  ASSERT_FALSE(durable.ok());
  EXPECT_EQ(durable.error().code(), Errc::invalid_argument);
  EXPECT_NE(durable.error().message().find("data dir"), std::string::npos);
  EXPECT_EQ(Topic::create(n, {.max_groups = 0}).error().code(), Errc::invalid_argument);
  EXPECT_EQ(Topic::create(n, {.max_groups = kMaxGroups + 1}).error().code(), Errc::invalid_argument);
  EXPECT_EQ(Topic::create(n, {.slot_count = 8, .history = 9}).error().code(), Errc::invalid_argument);
  EXPECT_EQ(Topic::create(n, {.slot_count = 3}).error().code(), Errc::invalid_argument);
  EXPECT_FALSE(Topic::is_topic(n));
  ScopedTopic t("topic-big", {.slot_size = 128});
  ASSERT_TRUE(t->create_group("g").ok());
  auto pub = t->publisher().value();
  EXPECT_EQ(pub.send(std::string(65, 'x')), Status::too_large);
  EXPECT_EQ(pub.send(std::string(64, 'x')), Status::ok);
}

// Processes creating the same group at once: exactly one succeeds, every round.
TEST(Topic, ConcurrentCreatesOfOneGroupMakeOne) {
  ScopedTopic t("topic-race", {.slot_count = 8, .max_groups = 8, .dead_letter = false});
  const std::string name = t.name();
  auto* ok = shared_array<std::atomic<std::uint32_t>>(1);
  auto* go = shared_array<std::atomic<std::uint32_t>>(1);
  for (int round = 0; round < 20; ++round) {
    ok[0] = 0;
    go[0] = 0;
    const std::string g = "g" + std::to_string(round % 3);
    std::vector<pid_t> kids;
    for (int i = 0; i < 4; ++i)
      kids.push_back(spawn([&] {
        auto tt = Topic::open(name).value();
        while (go[0].load() == 0) {
        }
        if (tt.create_group(g).ok()) ok[0].fetch_add(1);
        return 0;
      }));
    go[0] = 1;
    for (pid_t k : kids) EXPECT_EQ(wait_bounded(k, 30s), 0);
    EXPECT_EQ(ok[0].load(), 1u) << "round " << round;
    ASSERT_EQ(t->groups().size(), 1u);
    ASSERT_TRUE(t->delete_group(g).ok());
  }
}

TEST(Topic, DeletedGroupClosesItsSubscribers) {
  ScopedTopic t("topic-delete");
  ASSERT_TRUE(t->create_group("g").ok());
  auto s = t->subscriber("g").value();
  ASSERT_TRUE(t->delete_group("g").ok());
  Delivery d;
  EXPECT_EQ(s.try_receive(d), Status::closed);
  EXPECT_EQ(t->delete_group("g").error().code(), Errc::not_found);
  EXPECT_EQ(t->subscriber("g").error().code(), Errc::not_found);
  (void)Queue::remove(t.name() + ".g.dlq");
}

}  // namespace
}  // namespace shmq::test
