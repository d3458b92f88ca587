// Request/reply across processes (issue 14): RpcClient in this process, servers in forked
// children answering with RpcResponder. Every child is forked before this process starts a
// thread (its first producer or consumer starts the embedded watchdog): GCC 12's ASan hangs
// a child forked from a threaded parent. Children wait on pipes, never on sleeps.
#include <signal.h>
#include <unistd.h>

#include <string>

#include <gtest/gtest.h>

#include "test_util.hpp"

namespace shmq {
namespace {

using namespace std::chrono_literals;
using test::ScopedQueue;
using test::spawn;
using test::text;
using test::wait_bounded;

// A server: answers "echo:<request>" to every request, until a request "quit". With
// `die_on_first`: on its first request it tells `signal_fd` and kills itself with SIGKILL,
// holding the request unanswered. With `go_fd` >= 0: it starts only once a byte arrives.
int serve(const std::string& queue, bool die_on_first, int signal_fd, int go_fd) {
  if (go_fd >= 0) {
    char go = 0;
    if (::read(go_fd, &go, 1) != 1) return 20;
  }
  auto q = Queue::open(queue);
  if (!q) return 21;
  auto c = q->consumer();
  if (!c) return 22;
  RpcResponder responder;
  for (;;) {
    Message m;
    const Status s = c->receive_for(m, 20s);
    if (s != Status::ok) return 23;
    if (die_on_first) {
      const char got = 'g';
      if (::write(signal_fd, &got, 1) != 1) return 24;
      ::raise(SIGKILL);  // mid-request: received, never answered nor acked
    }
    if (m.view() == "quit") {
      (void)c->ack(m);
      return 0;
    }
    const std::string answer = "echo:" + std::string(m.view()) +
                               (m.redelivered() ? ":redelivered" : "");
    if (responder.reply(m, answer, 5s, "text/plain") != Status::ok) return 25;
    if (c->ack(m) != Status::ok) return 26;
  }
}

TEST(Rpc, RequestsAreAnsweredAcrossProcesses) {
  ScopedQueue requests("rpc-req");
  const std::string reply_queue = test::unique_name("rpc-reply");
  const pid_t server = spawn([&] { return serve(requests.name(), false, -1, -1); });
  ASSERT_GT(server, 0);
  {
    auto client = RpcClient::open(requests.name(), reply_queue).value();
    client.properties().headers.emplace_back("caller", "test");
    for (int i = 0; i < 20; ++i) {
      Message reply;
      const std::string req = "r" + std::to_string(i);
      ASSERT_EQ(client.request(req, 10s, reply), Status::ok) << i;
      EXPECT_EQ(text(reply), "echo:" + req);
      EXPECT_EQ(reply.properties().content_type(), "text/plain");
      EXPECT_FALSE(reply.properties().correlation_id().empty());
      ASSERT_EQ(client.ack(reply), Status::ok);
    }
    // With an id: the correlation id says so (a retry from anywhere matches it).
    Message reply;
    ASSERT_EQ(client.request("with id", 10s, reply, 1234), Status::ok);
    EXPECT_EQ(reply.properties().correlation_id(), "id:1234");
    EXPECT_EQ(text(reply), "echo:with id");
    ASSERT_EQ(client.ack(reply), Status::ok);
    EXPECT_EQ(client.stale_replies(), 0u);
    auto p = requests->producer().value();
    ASSERT_EQ(p.send("quit"), Status::ok);
  }
  EXPECT_EQ(wait_bounded(server, 20s), 0);
  (void)Queue::remove(reply_queue);
}

// The server dies (SIGKILL) holding the request: the client's request times out cleanly;
// a retry with the same id is answered by a second server (which also gets the first
// attempt back, redelivered, once the watchdog sees the first server dead: without a
// deduplication window the queue then holds both, and the client takes the first reply
// with its correlation id and drops the other as stale on its next request).
TEST(Rpc, ServerKilledMidRequestTimesOutAndARetryIsAnswered) {
  ScopedQueue requests("rpc-kill");
  const std::string reply_queue = test::unique_name("rpc-kill-reply");
  int got[2], go[2];
  ASSERT_EQ(::pipe(got), 0);
  ASSERT_EQ(::pipe(go), 0);
  const pid_t doomed = spawn([&] { return serve(requests.name(), true, got[1], -1); });
  const pid_t second = spawn([&] { return serve(requests.name(), false, -1, go[0]); });
  ASSERT_GT(doomed, 0);
  ASSERT_GT(second, 0);
  {
    auto client = RpcClient::open(requests.name(), reply_queue).value();
    Message reply;
    const auto t0 = std::chrono::steady_clock::now();
    EXPECT_EQ(client.request("important", 300ms, reply, 77), Status::timeout);
    EXPECT_GE(std::chrono::steady_clock::now() - t0, 300ms);
    char g = 0;
    ASSERT_EQ(::read(got[0], &g, 1), 1);  // the first server did receive it
    EXPECT_EQ(wait_bounded(doomed, 10s), 128 + SIGKILL);
    // Now the second server runs; the retry (same id) is answered.
    ASSERT_EQ(::write(go[1], "g", 1), 1);
    ASSERT_EQ(client.request("important", 20s, reply, 77), Status::ok);
    EXPECT_EQ(reply.properties().correlation_id(), "id:77");
    EXPECT_TRUE(text(reply) == "echo:important" || text(reply) == "echo:important:redelivered")
        << text(reply);
    ASSERT_EQ(client.ack(reply), Status::ok);
    // A new request is answered with its own reply, whatever stale reply is still queued.
    ASSERT_EQ(client.request("next", 20s, reply), Status::ok);
    EXPECT_EQ(text(reply), "echo:next");
    ASSERT_EQ(client.ack(reply), Status::ok);
    auto p = requests->producer().value();
    ASSERT_EQ(p.send("quit"), Status::ok);
  }
  EXPECT_EQ(wait_bounded(second, 20s), 0);
  for (int fd : {got[0], got[1], go[0], go[1]}) ::close(fd);
  (void)Queue::remove(reply_queue);
}

// The same with a dedup window on the request queue (issue 14): the retry is a duplicate
// (the first attempt is still in the queue, redelivered once the watchdog sees the first
// server dead), so the request is answered exactly once: no second reply is ever queued.
TEST(Rpc, WithADedupWindowARetryAfterAKilledServerIsAnsweredOnce) {
  QueueOptions o;
  o.dedup_window.count = 1000;
  ScopedQueue requests("rpc-once", o);
  const std::string reply_queue = test::unique_name("rpc-once-reply");
  int got[2], go[2];
  ASSERT_EQ(::pipe(got), 0);
  ASSERT_EQ(::pipe(go), 0);
  const pid_t doomed = spawn([&] { return serve(requests.name(), true, got[1], -1); });
  const pid_t second = spawn([&] { return serve(requests.name(), false, -1, go[0]); });
  ASSERT_GT(doomed, 0);
  ASSERT_GT(second, 0);
  {
    auto client = RpcClient::open(requests.name(), reply_queue).value();
    Message reply;
    EXPECT_EQ(client.request("important", 300ms, reply, 77), Status::timeout);
    char g = 0;
    ASSERT_EQ(::read(got[0], &g, 1), 1);
    EXPECT_EQ(wait_bounded(doomed, 10s), 128 + SIGKILL);
    ASSERT_EQ(::write(go[1], "g", 1), 1);
    // The retry is not enqueued again (Status::duplicate inside): its answer is the
    // redelivered first attempt's.
    ASSERT_EQ(client.request("important", 20s, reply, 77), Status::ok);
    EXPECT_EQ(text(reply), "echo:important:redelivered");
    ASSERT_EQ(client.ack(reply), Status::ok);
    EXPECT_EQ(requests->stats().dedup_duplicates, 1u);
    auto p = requests->producer().value();
    ASSERT_EQ(p.send("quit"), Status::ok);
    EXPECT_EQ(wait_bounded(second, 20s), 0);
    // The server has answered everything before "quit": one reply in all, taken above.
    const QueueStats rs = Queue::open(reply_queue).value().stats();
    EXPECT_EQ(rs.ready + rs.in_flight, 0u);
    EXPECT_EQ(rs.sent, 1u);
  }
  for (int fd : {got[0], got[1], go[0], go[1]}) ::close(fd);
  (void)Queue::remove(reply_queue);
}

TEST(Rpc, ReplyWithoutReplyToIsInvalidAndToAMissingQueueClosed) {
  ScopedQueue q("rpc-bad");
  auto p = q->producer().value();
  auto c = q->consumer().value();
  RpcResponder responder;
  ASSERT_EQ(p.send("no props"), Status::ok);
  Message m;
  ASSERT_EQ(c.try_receive(m), Status::ok);
  EXPECT_EQ(responder.reply(m, "x"), Status::invalid);
  ASSERT_EQ(c.ack(m), Status::ok);
  Properties props;
  props.reply_to = test::unique_name("rpc-nobody");
  props.correlation_id = "1";
  ASSERT_EQ(p.send("to nobody", SendOptions{.properties = &props}), Status::ok);
  ASSERT_EQ(c.try_receive(m), Status::ok);
  EXPECT_EQ(responder.reply(m, "x"), Status::closed);
  ASSERT_EQ(c.ack(m), Status::ok);
}

}  // namespace
}  // namespace shmq
