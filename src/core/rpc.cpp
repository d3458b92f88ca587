// Request/reply on top of message properties (include/shmq/rpc.hpp).
#include "shmq/rpc.hpp"

#include <random>

#include "core/call_util.hpp"
#include "segment/segment.hpp"

namespace shmq {

using Clock = std::chrono::steady_clock;

Result<RpcClient> RpcClient::open(std::string_view request_queue, std::string_view reply_queue,
                                  const QueueOptions& reply_options) {
  if (reply_queue.empty() || reply_queue.size() > kMaxPropertyString)
    return Error(Errc::invalid_argument, "reply queue name must be 1 to 255 bytes (it travels "
                                         "in the reply-to property)");
  auto requests = Queue::open(request_queue);
  if (!requests) return requests.error();
  auto producer = requests->producer();
  if (!producer) return producer.error();
  auto replies = Queue::open_or_create(reply_queue, reply_options);
  if (!replies) return replies.error();
  auto consumer = replies->consumer();
  if (!consumer) return consumer.error();
  return RpcClient(std::move(requests.value()), std::move(producer.value()),
                   std::move(replies.value()), std::move(consumer.value()),
                   std::string(reply_queue));
}

RpcClient::RpcClient(Queue requests, Producer producer, Queue replies, Consumer consumer,
                     std::string reply_name)
    : requests_(std::move(requests)),
      producer_(std::move(producer)),
      replies_(std::move(replies)),
      consumer_(std::move(consumer)),
      reply_name_(std::move(reply_name)) {
  // A random start: a client reopened on the same reply queue (a restarted process) never
  // takes a late reply to its predecessor's request for one of its own.
  std::random_device rd;
  next_ = (std::uint64_t(rd()) << 32) ^ rd();
}

Status RpcClient::request(Bytes request, std::chrono::nanoseconds timeout, Message& reply,
                          std::uint64_t id) {
  const Clock::time_point deadline = detail::deadline_after(timeout);
  const auto left = [&deadline] {
    const auto d = deadline - Clock::now();
    return d.count() > 0 ? std::chrono::duration_cast<std::chrono::nanoseconds>(d)
                         : std::chrono::nanoseconds(0);
  };
  sent_.content_type = template_.content_type;
  sent_.headers = template_.headers;
  sent_.reply_to = reply_name_;
  sent_.correlation_id = id != 0 ? "id:" + std::to_string(id) : std::to_string(next_++);
  const Status s = producer_.send_for(request, left(), SendOptions{.id = id, .properties = &sent_});
  // duplicate: a retry of a request already in the queue's deduplication window (sent by
  // an earlier attempt, perhaps from another process): its reply is what we wait for.
  if (s != Status::ok && s != Status::duplicate) return s;
  for (;;) {
    const Status r = consumer_.receive_for(reply, left());
    if (r != Status::ok) return r;
    if (reply.properties().correlation_id() == sent_.correlation_id) return Status::ok;
    // A late reply to an earlier request that timed out (or not a reply at all): dropped.
    ++stale_;
    (void)consumer_.ack(reply);
  }
}

Status RpcResponder::reply(const Message& request, Bytes response,
                           std::chrono::nanoseconds timeout, std::string_view content_type) {
  const PropertiesView in = request.properties();
  const std::string_view to = in.reply_to();
  if (to.empty()) return Status::invalid;
  auto it = open_.find(to);
  // A cached queue that was removed since (its client went, perhaps came back and made it
  // again): open the current one.
  if (it != open_.end() && it->second->queue.segment()->removed()) {
    open_.erase(it);
    it = open_.end();
  }
  if (it == open_.end()) {
    if (open_.size() >= kMaxOpen) {
      auto oldest = open_.begin();
      for (auto i = open_.begin(); i != open_.end(); ++i)
        if (i->second->opened < oldest->second->opened) oldest = i;
      open_.erase(oldest);
    }
    auto q = Queue::open(to);
    if (!q) return Status::closed;
    auto p = q->producer();
    if (!p) return Status::closed;
    it = open_
             .insert_or_assign(std::string(to),
                               std::make_unique<Open>(Open{std::move(q.value()),
                                                           std::move(p.value()), ++opens_}))
             .first;
  }
  props_.correlation_id = in.correlation_id();
  props_.content_type = content_type;
  Status s = it->second->producer.send_for(response, timeout, SendOptions{.properties = &props_});
  // The client's queue was removed (a client that went away), or our row was taken:
  // forget it, so that a new queue of that name is opened next time.
  if (s == Status::closed || s == Status::evicted) open_.erase(it);
  return s;
}

}  // namespace shmq
