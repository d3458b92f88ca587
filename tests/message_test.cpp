// A Message cannot lie (issue 11): its bytes never change under its holder, only the
// consumer that received it can ack it, and it keeps the queue's memory mapped.
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <string>

#include <gtest/gtest.h>

#include "shmq/shmq.hpp"
#include "test_util.hpp"

namespace shmq {
namespace {

using namespace std::chrono_literals;
using test::spawn;
using test::unique_name;
using test::wait_exit;

struct Pipe {
  int fd[2] = {-1, -1};
  Pipe() { EXPECT_EQ(::pipe(fd), 0); }
  ~Pipe() {
    for (int f : fd)
      if (f >= 0) ::close(f);
  }
  bool put(char c) { return ::write(fd[1], &c, 1) == 1; }
  // After the fork, in the reader: a writer that exits without writing gives EOF (0), not a
  // read that blocks for ever.
  void reader_only() {
    ::close(fd[1]);
    fd[1] = -1;
  }
  char get() {
    char c = 0;
    return ::read(fd[0], &c, 1) == 1 ? c : char(0);
  }
};

TEST(Message, AHolderStoppedPastItsLeaseKeepsItsBytesOrIsToldTheyChanged) {
  // A 4-slot ring, 100 ms leases. A child receives "msg-0" (copied, the default) and
  // "msg-1" (zero-copy) and is stopped; meanwhile both are redelivered, acked by another
  // consumer, and their slots reused by new messages. Running again, the child's copy is
  // still "msg-0", and its zero-copy message says it is no longer valid.
  const std::string name = unique_name("holder");
  QueueOptions o;
  o.slot_count = 4;
  o.lease = 100ms;
  ASSERT_TRUE(Queue::create(name, o).ok());
  auto q = Queue::open(name).value();

  // The child is forked before this process starts a thread (the producer's embedded
  // watchdog): under ASan (GCC 12's libasan has no fork handler for its allocator) a fork
  // while that thread allocated left the child waiting for the allocator's lock for ever.
  Pipe sent, ready, go;
  const pid_t holder = spawn([&] {
    if (sent.get() != 's') return 1;
    auto qq = Queue::open(name);
    if (!qq.ok()) return 2;
    auto copying = qq->consumer();
    auto zero_copy = qq->consumer({.zero_copy = true});
    if (!copying.ok() || !zero_copy.ok()) return 3;
    Message a, b;
    if (copying->receive_for(a, 10s) != Status::ok || a.view() != "msg-0") return 4;
    if (zero_copy->receive_for(b, 10s) != Status::ok || b.view() != "msg-1" || !b.valid())
      return 5;
    if (!ready.put('r') || go.get() != 'g') return 6;
    // Running again, long after both leases expired and the slots were reused.
    if (a.view() != "msg-0" || !a.valid()) return 7;  // a copy never changes
    if (a.held()) return 8;                           // and says it was taken back
    if (b.valid() || b.held()) return 9;              // zero-copy: told, never silent
    if (copying->ack(a) != Status::lease_lost) return 10;
    if (zero_copy->ack(b) != Status::lease_lost) return 11;
    return 0;
  });
  auto p = q.producer().value();
  ASSERT_EQ(p.send("msg-0"), Status::ok);
  ASSERT_EQ(p.send("msg-1"), Status::ok);
  ASSERT_TRUE(sent.put('s'));
  ready.reader_only();
  ASSERT_EQ(ready.get(), 'r');
  ASSERT_EQ(::kill(holder, SIGSTOP), 0);

  // Another consumer gets both back once their leases expire (this process's embedded
  // watchdog), acks them, and the slots go round with new messages.
  auto c = q.consumer().value();
  for (int i = 0; i < 2; ++i) {
    Message m;
    ASSERT_EQ(c.receive_for(m, 20s), Status::ok);
    EXPECT_TRUE(m.view() == "msg-0" || m.view() == "msg-1");
    EXPECT_EQ(c.ack(m), Status::ok);
  }
  for (int i = 0; i < 8; ++i) {
    const std::string s = "NEW-" + std::to_string(i);
    ASSERT_EQ(p.send(s), Status::ok);
    Message m;
    ASSERT_EQ(c.receive_for(m, 10s), Status::ok);
    EXPECT_EQ(m.view(), s);
    EXPECT_EQ(c.ack(m), Status::ok);
  }
  ASSERT_EQ(::kill(holder, SIGCONT), 0);
  ASSERT_TRUE(go.put('g'));
  EXPECT_EQ(wait_exit(holder), 0);
  ASSERT_TRUE(Queue::remove(name).ok());
}

TEST(Message, AnotherConsumersAckIsRefused) {
  const std::string name = unique_name("foreign");
  ASSERT_TRUE(Queue::create(name, {.slot_count = 16}).ok());
  auto q = Queue::open(name).value();
  auto p = q.producer().value();
  auto c1 = q.consumer().value();
  auto c2 = q.consumer().value();
  ASSERT_EQ(p.send("mine"), Status::ok);
  Message m;
  ASSERT_EQ(c1.try_receive(m), Status::ok);
  EXPECT_EQ(c2.ack(m), Status::wrong_consumer);
  EXPECT_EQ(c2.nack(m), Status::wrong_consumer);
  EXPECT_EQ(c2.nack_after(m, 1s), Status::wrong_consumer);
  EXPECT_EQ(c2.extend_lease(m, 1s), Status::wrong_consumer);
  EXPECT_TRUE(m.held());  // untouched
  EXPECT_EQ(c1.ack(m), Status::ok);
  EXPECT_FALSE(m.held());
  ASSERT_TRUE(Queue::remove(name).ok());
}

TEST(Message, AMessageOutlivesItsConsumerAndQueue) {
  // Under ASan this also proves that no access touches unmapped memory.
  const std::string name = unique_name("outlive");
  ASSERT_TRUE(Queue::create(name, {.slot_count = 16}).ok());
  Message copied, shared;
  {
    auto q = Queue::open(name).value();
    auto p = q.producer().value();
    ASSERT_EQ(p.send("copied"), Status::ok);
    ASSERT_EQ(p.send("shared"), Status::ok);
    auto c = q.consumer().value();
    auto z = q.consumer({.zero_copy = true}).value();
    ASSERT_EQ(c.try_receive(copied), Status::ok);
    ASSERT_EQ(z.try_receive(shared), Status::ok);
  }  // consumers closed (their messages went back), queue handle gone
  ASSERT_TRUE(Queue::remove(name).ok());  // and the queue unlinked
  EXPECT_EQ(copied.view(), "copied");
  EXPECT_TRUE(copied.valid());
  EXPECT_FALSE(copied.held());
  EXPECT_EQ(shared.view().size(), 6u);  // mapped: readable, though no longer held
  EXPECT_FALSE(shared.held());
  EXPECT_FALSE(shared.valid());
}

}  // namespace
}  // namespace shmq
