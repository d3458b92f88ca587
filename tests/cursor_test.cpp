// Scribbled cursors (issue 12): one 8-byte write of a wild value into the header's dispatch
// cursor hung every consumer at 100% CPU, deaf to its timeout and to interrupt(). A consumer
// must come back within its timeout, answer interrupt(), repair the cursor and deliver what
// is sent afterwards. The same for producers and the tail: a wild tail made every send wait
// for a free slot that never came. Every scenario runs in a forked child that the test waits for with a
// bound and kills if it hangs, so a regression fails instead of stalling the suite.
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "ring/slot_word.hpp"
#include "segment/layout.hpp"
#include "segment/segment.hpp"
#include "test_util.hpp"

namespace shmq {
namespace {

using namespace std::chrono_literals;
using test::ScopedQueue;

constexpr std::uint32_t kSlots = 64;

QueueOptions small_ring() {
  QueueOptions o;
  o.slot_count = kSlots;
  o.slot_size = 128;
  return o;
}

std::atomic<std::uint64_t>& dispatch_of(Queue& q) { return q.segment()->header().dispatch.value; }
std::atomic<std::uint64_t>& tail_of(Queue& q) { return q.segment()->header().tail.value; }

using test::wait_bounded;

// Sends and acks `n` messages so that the positions have gone round the ring a few times.
bool cycle(Producer& p, Consumer& c, int n) {
  Message m;
  for (int i = 0; i < n; ++i) {
    if (p.send("x") != Status::ok || c.try_receive(m) != Status::ok || c.ack(m) != Status::ok)
      return false;
  }
  return true;
}

// Receives (each within `each`) and acks until `got` holds `want` texts; false if a
// receive timed out or an ack failed.
bool receive_and_ack(Consumer& c, std::vector<std::string>& got, std::size_t want,
                     std::chrono::milliseconds each) {
  Message m;
  while (got.size() < want) {
    if (c.receive_for(m, each) != Status::ok) return false;
    got.emplace_back(m.view());
    if (c.ack(m) != Status::ok) return false;
  }
  return true;
}

std::vector<std::string> sorted(std::vector<std::string> v) {
  std::sort(v.begin(), v.end());
  return v;
}

// Wild values for the cursor: far ahead, far behind, the ends of the range, and values
// whose lap aliases a real position's (laps compare modulo 2^40, so a slot-word check alone
// takes them for that position).
std::vector<std::pair<std::string, std::uint64_t>> wild_values(std::uint64_t tail,
                                                               std::uint64_t first_ready,
                                                               std::uint32_t shift) {
  const std::uint64_t alias = std::uint64_t{1} << (detail::kLapBits + shift);
  return {{"UINT64_MAX", UINT64_MAX},
          {"2^62", std::uint64_t{1} << 62},
          {"0xdeadbeefdeadbeef", 0xdeadbeefdeadbeefULL},
          {"tail + 2^20", tail + (std::uint64_t{1} << 20)},
          {"0, more than a ring behind", 0},
          {"aliasing the first ready position", first_ready + alias},
          {"aliasing the tail", tail + alias},
          {"aliasing 0", alias}};
}

TEST(ScribbledDispatch, ReceiveForDeliversTheNextMessageAndTheCursorIsRepaired) {
  // Positions 0..199 sent and acked, "a" at 200 and "b" at 201 ready; tail 202.
  const std::uint64_t first_ready = 200, tail = 202;
  for (const auto& [what, value] : wild_values(tail, first_ready, 6)) {
    ScopedQueue q("scribble", small_ring());
    const pid_t child = test::spawn([&, value = value] {
      auto p = q->producer().value();
      auto c = q->consumer().value();
      if (!cycle(p, c, int(first_ready))) return 10;
      if (p.send("a") != Status::ok || p.send("b") != Status::ok) return 11;
      if (tail_of(*q).load() != tail) return 12;
      dispatch_of(*q).store(value);
      Message m;
      // Not merely "returns": the cursor is clamped back into the ring's window and the
      // walk from there finds "a" under its true position.
      if (c.receive_for(m, 200ms) != Status::ok) return 20;
      if (m.view() != "a" || m.position() != first_ready) return 21;
      if (c.ack(m) != Status::ok) return 22;
      const std::uint64_t d = dispatch_of(*q).load(), t = tail_of(*q).load();
      if (d > t || t - d > kSlots) return 23;
      if (c.receive_for(m, 200ms) != Status::ok || m.view() != "b" || c.ack(m) != Status::ok)
        return 24;
      // Sent after the repair: delivered as usual.
      if (p.send("c") != Status::ok) return 25;
      if (c.receive_for(m, 200ms) != Status::ok || m.view() != "c" || m.position() != tail)
        return 26;
      return c.ack(m) == Status::ok ? 0 : 27;
    });
    EXPECT_EQ(wait_bounded(child, 30s), 0) << "dispatch scribbled to " << what;
  }
}

// A cursor written just ahead of the tail, within the span of one message (so it is within
// an honest cursor's range and not clamped), leaves the next messages sent behind it and
// unmarked in the requeue map. No consumer walks the ring any more: a consumer looks at the
// positions just behind dispatch (and a watchdog would mark them). Here
// with no watchdog at all.
TEST(ScribbledDispatch, ACursorJustAheadOfTheTailDoesNotHideTheNextMessages) {
  QueueOptions o = small_ring();
  o.max_message_size = 3 * (o.slot_size - 64);  // messages of up to 3 slots: F = 3
  ScopedQueue q("scribble-ahead", o);
  const pid_t child = test::spawn([&] {
    set_embedded_watchdog(false);
    auto p = q->producer().value();
    auto c = q->consumer().value();
    if (!cycle(p, c, 2 * int(kSlots) + 3)) return 10;
    const std::uint64_t t = tail_of(*q).load();
    dispatch_of(*q).store(t + 3);
    if (p.send("one") != Status::ok || p.send("two") != Status::ok) return 11;
    std::vector<std::string> got;
    if (!receive_and_ack(c, got, 2, 5s)) return 20;
    return sorted(got) == std::vector<std::string>{"one", "two"} ? 0 : 23;
  });
  EXPECT_EQ(wait_bounded(child, 30s), 0);
}

// A hostile thread rewrites the cursor over and over while the consumer waits: receive_for
// still returns at its deadline, interrupt() still ends a blocking receive(), and once the
// writes stop the next receive repairs the cursor and gets what was sent.
TEST(ScribbledDispatch, DeadlineAndInterruptHoldWhileTheCursorIsScribbledOverAndOver) {
  ScopedQueue q("scribble-loop", small_ring());
  const pid_t child = test::spawn([&] {
    auto p = q->producer().value();
    auto c = q->consumer().value();
    if (!cycle(p, c, 3 * int(kSlots) + 5)) return 10;
    std::atomic<bool> stop{false};
    std::thread scribbler([&] {
      std::mt19937_64 rng(12);
      while (!stop.load(std::memory_order_relaxed))
        dispatch_of(*q).store(rng() | (std::uint64_t{1} << 63), std::memory_order_relaxed);
    });
    Message m;
    const Status timed = c.receive_for(m, 200ms);  // nothing to receive
    Status blocked = Status::ok;
    std::thread receiver([&] { blocked = c.receive(m); });
    c.interrupt();  // before or during the receive: either way it must end it
    receiver.join();
    stop.store(true);
    scribbler.join();
    if (timed != Status::timeout) return 20;
    if (blocked != Status::interrupted) return 21;
    c.clear_interrupt();
    if (p.send("after") != Status::ok) return 22;
    if (c.receive_for(m, 200ms) != Status::ok || m.view() != "after") return 23;
    const std::uint64_t d = dispatch_of(*q).load(), t = tail_of(*q).load();
    if (d > t || t - d > kSlots) return 24;
    return c.ack(m) == Status::ok ? 0 : 25;
  });
  EXPECT_EQ(wait_bounded(child, 30s), 0);
}

// The tail (issue 12, the producers' cursor): a wild value made every producer wait for a
// free slot for ever (send hung, send_for and try_send said full/timeout on an empty ring),
// or, for a value whose lap aliases a real position's, sent at a position 2^46 away.
// Producers put it back where the ring says it is: the next send gets the next position.
TEST(ScribbledTail, SendGetsTheNextPositionAndTheCursorIsRepaired) {
  // Positions 0..199 sent and acked, "a" at 200 and "b" at 201 ready; tail 202.
  const std::uint64_t first_ready = 200, tail = 202;
  for (const auto& [what, value] : wild_values(tail, first_ready, 6)) {
    for (const bool blocking : {false, true}) {
      ScopedQueue q("scribble-tail", small_ring());
      const pid_t child = test::spawn([&, value = value] {
        auto p = q->producer().value();
        auto c = q->consumer().value();
        if (!cycle(p, c, int(first_ready))) return 10;
        if (p.send("a") != Status::ok || p.send("b") != Status::ok) return 11;
        if (tail_of(*q).load() != tail) return 12;
        tail_of(*q).store(value);
        // try_send never waits: it must find the free slot at once, not report "full".
        if ((blocking ? p.send_for(as_bytes("c"), 200ms) : p.try_send("c")) != Status::ok) return 20;
        if (tail_of(*q).load() != tail + 1) return 21;
        Message m;
        for (const auto& [text, pos] : {std::pair<std::string, std::uint64_t>{"a", first_ready},
                                        {"b", first_ready + 1}, {"c", tail}}) {
          if (c.receive_for(m, 200ms) != Status::ok) return 22;
          if (m.view() != text || m.position() != pos) return 23;
          if (c.ack(m) != Status::ok) return 24;
        }
        // And on from there.
        if (p.send("d") != Status::ok) return 25;
        if (c.receive_for(m, 200ms) != Status::ok || m.view() != "d" || m.position() != tail + 1)
          return 26;
        return c.ack(m) == Status::ok ? 0 : 27;
      });
      EXPECT_EQ(wait_bounded(child, 30s), 0)
          << "tail scribbled to " << what << (blocking ? ", send_for" : ", try_send");
    }
  }
}

// A ring that never held a message: the ring names no position, the segment's base does.
TEST(ScribbledTail, AnUnusedRingStartsAgainAtItsBase) {
  ScopedQueue q("scribble-tail-new", small_ring());
  const pid_t child = test::spawn([&] {
    auto p = q->producer().value();
    auto c = q->consumer().value();
    tail_of(*q).store(0xdeadbeefdeadbeefULL);
    if (p.try_send("first") != Status::ok) return 20;
    Message m;
    if (c.receive_for(m, 200ms) != Status::ok || m.view() != "first" || m.position() != 0)
      return 21;
    return c.ack(m) == Status::ok ? 0 : 22;
  });
  EXPECT_EQ(wait_bounded(child, 30s), 0);
}

// A watchdog reclaiming a dead member's messages walks the positions up to the tail: a tail
// scribbled to 2^64 - 1 made that walk endless (found by fuzz_segment). The tick returns,
// and once a producer has repaired the tail the dead member's message is delivered again.
TEST(ScribbledTail, AWatchdogReclaimingADeadMemberReturnsAndRedelivers) {
  ScopedQueue q("scribble-tail-reclaim", small_ring());
  const pid_t child = test::spawn([&] {
    set_embedded_watchdog(false);  // this test's watchdog is the only one
    auto p = q->producer().value();
    if (p.send("held") != Status::ok) return 10;
    const pid_t holder = test::spawn_holder(q.name(), 1);
    if (holder <= 0) return 11;
    ::kill(holder, SIGKILL);
    if (test::wait_exit(holder) != 128 + SIGKILL) return 12;
    auto w = Watchdog::attach(*q);
    if (!w.ok()) return 13;
    tail_of(*q).store(UINT64_MAX);
    (void)w->tick();  // must return (the parent bounds it)
    if (p.send("after") != Status::ok) return 20;  // repairs the tail
    auto c = q->consumer().value();
    std::vector<std::string> got;
    for (int i = 0; i < 200 && got.size() < 2; ++i) {
      (void)w->tick();
      (void)receive_and_ack(c, got, 2, 20ms);
    }
    return sorted(got) == std::vector<std::string>{"after", "held"} ? 0 : 22;
  });
  EXPECT_EQ(wait_bounded(child, 30s), 0);
}

// Queue::browse walks [tail - N, tail) in steps of a message's span: with the tail scribbled
// near 2^64 and a slot word there that spans several slots, "pos += step" wrapped to 0 and
// the walk ("pos < tail") went on for ever (found by review). It returns, bounded by the ring.
TEST(ScribbledTail, BrowseReturnsWhenTheTailIsNearTheEndOfTheRange) {
  ScopedQueue q("scribble-tail-browse", small_ring());
  const pid_t child = test::spawn([&] {
    set_embedded_watchdog(false);
    auto p = q->producer().value();
    if (p.send("a") != Status::ok) return 10;
    detail::Segment& s = *q->segment();
    const std::uint64_t tail = UINT64_MAX - 1;
    const std::uint64_t at = tail - 2;  // a held 8-slot message near the top
    s.slot(at).word.store(detail::make_word(detail::lap_of(at, s.slot_shift()), detail::SlotState::held,
                                            0, 8));
    tail_of(*q).store(tail);
    const auto seen = q->browse(SIZE_MAX);
    return seen.size() <= kSlots ? 0 : 11;
  });
  EXPECT_EQ(wait_bounded(child, 30s), 0);
}

// A hostile thread rewrites the tail over and over while a producer waits on a full ring:
// send_for still returns at its deadline, interrupt() still ends a blocking send(), and once
// the writes stop the next send repairs the tail, and every message comes out in order.
TEST(ScribbledTail, DeadlineAndInterruptHoldWhileTheTailIsScribbledOverAndOver) {
  ScopedQueue q("scribble-tail-loop", small_ring());
  const pid_t child = test::spawn([&] {
    auto p = q->producer().value();
    auto c = q->consumer().value();
    if (!cycle(p, c, 3 * int(kSlots) + 5)) return 10;
    const std::uint64_t first = tail_of(*q).load();
    for (std::uint32_t i = 0; i < kSlots; ++i)
      if (p.try_send(std::to_string(i)) != Status::ok) return 11;  // full now
    std::atomic<bool> stop{false};
    std::thread scribbler([&] {
      std::mt19937_64 rng(21);
      while (!stop.load(std::memory_order_relaxed))
        tail_of(*q).store(rng() | (std::uint64_t{1} << 63), std::memory_order_relaxed);
    });
    const Status timed = p.send_for(as_bytes("no room"), 200ms);
    Status blocked = Status::ok;
    std::thread sender([&] { blocked = p.send("no room either"); });
    p.interrupt();  // before or during the send: either way it must end it
    sender.join();
    stop.store(true);
    scribbler.join();
    if (timed != Status::timeout) return 20;
    if (blocked != Status::interrupted) return 21;
    p.clear_interrupt();
    // Still full, but the attempt puts the tail back (consumers take the window from it).
    if (p.try_send("no room yet") != Status::full) return 22;
    if (tail_of(*q).load() != first + kSlots) return 23;
    Message m;
    if (c.receive_for(m, 200ms) != Status::ok || m.view() != "0" || c.ack(m) != Status::ok)
      return 24;
    if (p.send_for(as_bytes("after"), 200ms) != Status::ok) return 25;
    if (tail_of(*q).load() != first + kSlots + 1) return 26;
    for (std::uint32_t i = 1; i <= kSlots; ++i) {
      const std::string want = i < kSlots ? std::to_string(i) : "after";
      if (c.receive_for(m, 200ms) != Status::ok) return 27;
      if (m.view() != want || m.position() != first + i || c.ack(m) != Status::ok) return 28;
    }
    return 0;
  });
  EXPECT_EQ(wait_bounded(child, 30s), 0);
}

#ifdef SHMQCTL_PATH
// Reads one line from `fd`, waiting at most `limit`; empty on timeout or end of file.
std::string read_line(int fd, std::chrono::milliseconds limit) {
  const auto give_up = std::chrono::steady_clock::now() + limit;
  std::string line;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        give_up - std::chrono::steady_clock::now());
    if (left.count() <= 0) return {};
    pollfd pfd{fd, POLLIN, 0};
    if (::poll(&pfd, 1, static_cast<int>(left.count())) <= 0) continue;
    char ch;
    const ssize_t n = ::read(fd, &ch, 1);
    if (n <= 0) return {};
    if (ch == '\n') return line;
    line.push_back(ch);
  }
}

// The tool's own SIGTERM handler calls interrupt(); a consumer stuck walking a scribbled
// cursor never looked at it, and `shmqctl consume` ignored SIGTERM at 100% CPU.
TEST(ScribbledDispatch, ShmqctlConsumeGetsPastItAndExitsOnSigterm) {
  ScopedQueue q("scribble-ctl", small_ring());
  auto p = q->producer().value();
  ASSERT_EQ(p.send("first"), Status::ok);
  int out[2];
  ASSERT_EQ(::pipe(out), 0);
  std::fflush(stdout);
  const pid_t ctl = ::fork();
  if (ctl == 0) {
    ::dup2(out[1], 1);
    ::close(out[0]);
    ::close(out[1]);
    ::execl(SHMQCTL_PATH, "shmqctl", "consume", q.name().c_str(), "--follow",
            static_cast<char*>(nullptr));
    std::_Exit(127);
  }
  ::close(out[1]);
  // Once "first" is out, the consumer is in its receive loop with its handler installed.
  EXPECT_EQ(read_line(out[0], 20s), "first");
  dispatch_of(*q).store(0xdeadbeefdeadbeefULL);
  ASSERT_EQ(p.send("second"), Status::ok);
  EXPECT_EQ(read_line(out[0], 20s), "second");  // it got past the scribble
  ::kill(ctl, SIGTERM);
  // 0: it stopped by itself and cleanly; -1 would mean it had to be killed.
  EXPECT_EQ(wait_bounded(ctl, 20s), 0);
  ::close(out[0]);
}
#endif

}  // namespace
}  // namespace shmq
