// Request/reply on top of message properties (issue 14): RabbitMQ's RPC pattern.
//
//   client                                   server
//   RpcClient c = RpcClient::open("calc", "calc.reply.1").value();
//   c.request(bytes, 1s, reply) ──request──▶ consumer.receive(m)
//     reply_to = "calc.reply.1"              responder.reply(m, answer)  (same correlation id)
//     correlation_id = unique  ◀──reply───── consumer.ack(m)
//
// The client owns its reply queue (created if missing) and is its only consumer. A reply
// whose correlation id is not the one awaited (a late reply to a request that timed out) is
// acked and dropped. A request sent with an id (SendOptions::id semantics, below 2^63)
// gets the correlation id "id:<id>", so a retry of it, from this client or from a new
// process on the same reply queue, matches the reply to the first attempt; on a queue with
// a deduplication window the retry is not enqueued again (the send says
// Status::duplicate, and the client keeps waiting for the reply).
//
// Threading: like a Producer and a Consumer (one thread at a time).
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "shmq/consumer.hpp"
#include "shmq/error.hpp"
#include "shmq/producer.hpp"
#include "shmq/properties.hpp"
#include "shmq/queue.hpp"

namespace shmq {

class RpcClient {
 public:
  // Opens `request_queue` (which must exist) and opens or creates `reply_queue` with
  // `reply_options` (one reply queue per client: replies are matched by this client only).
  static Result<RpcClient> open(std::string_view request_queue, std::string_view reply_queue,
                                const QueueOptions& reply_options = {});

  // Sends `request` (reply-to and a correlation id set, plus properties() as a template),
  // then waits for the reply with that correlation id, at most `timeout` in all (sending
  // included). ok: `reply` holds it (held by this client: ack it with ack(), or it comes back
  // after its lease and is dropped as stale). Otherwise the status of the send (too_large,
  // invalid, closed, ...) or of the wait (timeout, interrupted, closed); after a timeout the
  // request may still be answered later: a retry with the same `id` then gets that answer.
  // `id`: 0 = a new request (generated message id, unique correlation id); else the
  // request's message id (deduplicated by the queue's window when it has one) and
  // correlation id "id:<id>".
  Status request(Bytes request, std::chrono::nanoseconds timeout, Message& reply,
                 std::uint64_t id = 0);
  Status request(std::string_view text, std::chrono::nanoseconds timeout, Message& reply,
                 std::uint64_t id = 0) {
    return request(as_bytes(text), timeout, reply, id);
  }
  Status ack(Message& reply) { return consumer_.ack(reply); }

  // Sent with every request (content type, headers); reply_to and correlation_id are set by
  // request().
  Properties& properties() noexcept { return template_; }
  const std::string& reply_queue() const noexcept { return reply_name_; }
  // How many replies were dropped as stale (not the awaited correlation id).
  std::uint64_t stale_replies() const noexcept { return stale_; }
  // Makes a blocking request() return Status::interrupted (any thread).
  void interrupt() noexcept {
    producer_.interrupt();
    consumer_.interrupt();
  }

 private:
  RpcClient(Queue requests, Producer producer, Queue replies, Consumer consumer,
            std::string reply_name);
  Queue requests_;
  Producer producer_;
  Queue replies_;
  Consumer consumer_;
  std::string reply_name_;
  Properties template_;
  Properties sent_;  // template_ + reply_to + correlation id, reused
  std::uint64_t next_ = 0;  // correlation ids of requests without an id: a random start
  std::uint64_t stale_ = 0;
};

// The server side: answers a request on its reply-to queue with its correlation id. Reply
// queues are opened on first use and kept (at most kMaxOpen; the least recently opened is
// closed first).
class RpcResponder {
 public:
  static constexpr std::size_t kMaxOpen = 64;
  // Sends `response` to request.properties().reply_to() with the request's correlation id
  // (and `content_type`, if not empty), waiting at most `timeout` for room. Status::invalid
  // if the request has no reply-to; Status::closed if that queue does not exist (its client
  // is gone); otherwise the send's status.
  Status reply(const Message& request, Bytes response,
               std::chrono::nanoseconds timeout = std::chrono::seconds(1),
               std::string_view content_type = {});
  Status reply(const Message& request, std::string_view response,
               std::chrono::nanoseconds timeout = std::chrono::seconds(1),
               std::string_view content_type = {}) {
    return reply(request, as_bytes(response), timeout, content_type);
  }

 private:
  struct Open {
    Queue queue;
    Producer producer;
    std::uint64_t opened = 0;
  };
  std::map<std::string, std::unique_ptr<Open>, std::less<>> open_;
  std::uint64_t opens_ = 0;
  Properties props_;  // reused
};

}  // namespace shmq
