// shmq-bench: a topic (issue 15) behind the harness's channel interface (see
// bench_transports.hpp), so that the round-trip runner and the fan-out runner measure it
// the way they measure queues.
//
// The parent creates the topic and its reliable groups "g0".."g<G-1>" (starting at the
// latest message) once per scenario; children open it by name. sender(i) is a Publisher;
// receiver(j) is a Subscriber of group j, which copies each delivery out (as the queue
// channel does), checks it was neither redelivered nor preceded by missed messages, hands
// it to f and acks it.
#pragma once

#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "bench_transports.hpp"
#include "bench_util.hpp"
#include "shmq/topic.hpp"

namespace shmq_bench {

class TopicChannel {
 public:
  static constexpr const char* kName = "topic";

  static std::string group_name(int j) { return "g" + std::to_string(j); }

  // TopicOptions defaults (max_groups 16, lease, dead letters) but the geometry of the
  // queue channel: spec.capacity slots, one slot per message.
  TopicChannel(const ChannelSpec& spec, int groups) : spec_(spec), name_(fresh_name()) {
    shmq::TopicOptions o;
    o.slot_count = spec.capacity;
    o.slot_size = ShmqChannel::slot_size(spec.size);
    o.mode = 0600;
    created_ = true;  // before create: a half-made topic is removed too
    shmq::Topic t = take(shmq::Topic::create(name_, o), "create topic " + name_);
    for (int j = 0; j < groups; ++j)
      (void)take(t.create_group(group_name(j), {.policy = shmq::GroupPolicy::reliable,
                                                .start = shmq::StartAt::latest()}),
                 "create group " + group_name(j) + " of topic " + name_);
  }
  ~TopicChannel() {
    if (created_ && owner_ == ::getpid()) (void)shmq::Topic::remove(name_);
  }
  TopicChannel(const TopicChannel&) = delete;
  TopicChannel& operator=(const TopicChannel&) = delete;

  const std::string& name() const noexcept { return name_; }
  void prepare_run() {}
  void after_fork() {}

  class Tx {
   public:
    explicit Tx(const std::string& name)
        : p_(take(take(shmq::Topic::open(name), "open topic " + name).publisher(), "publisher")) {}
    void send(const std::byte* p, std::size_t n) {
      if (const shmq::Status s = p_.send(shmq::Bytes(p, n)); s != shmq::Status::ok)
        fail("topic send: " + status_text(s));
    }
    void send_batch(std::span<const shmq::Bytes> msgs) {
      for (const shmq::Bytes& m : msgs) send(m.data(), m.size());
    }

   private:
    shmq::Publisher p_;
  };

  class Rx {
   public:
    Rx(const std::string& name, int group, std::size_t size)
        : s_(take(take(shmq::Topic::open(name), "open topic " + name).subscriber(group_name(group)),
                  "subscriber of group " + group_name(group))),
          buf_(size) {}

    // One delivery (0 on timeout); nanoseconds::max() waits without a deadline.
    template <typename F>
    std::size_t receive(F&& f, std::chrono::nanoseconds wait) {
      const shmq::Status st =
          wait == std::chrono::nanoseconds::max() ? s_.receive(d_) : s_.receive_for(d_, wait);
      if (st == shmq::Status::timeout) return 0;
      if (st != shmq::Status::ok) fail("topic receive: " + status_text(st));
      if (d_.redelivered())
        fail("topic: unexpected redelivery at position " + std::to_string(d_.position()));
      if (d_.missed_before() != 0)
        fail("topic: reliable group " + s_.group() + " missed " +
             std::to_string(d_.missed_before()) + " messages before position " +
             std::to_string(d_.position()));
      const std::size_t n = d_.size();
      if (n > buf_.size()) fail("topic: message of " + std::to_string(n) + " bytes");
      std::memcpy(buf_.data(), d_.data().data(), n);
      f(static_cast<const std::byte*>(buf_.data()), n);
      if (const shmq::Status a = s_.ack(d_); a != shmq::Status::ok) fail("topic ack: " + status_text(a));
      return 1;
    }
    void wake_others(int) {}  // they wait with a timeout

   private:
    shmq::Subscriber s_;
    shmq::Delivery d_;
    std::vector<std::byte> buf_;
  };

  Tx sender(int) const { return Tx(name_); }
  Rx receiver(int group) const { return Rx(name_, group, spec_.size); }

 private:
  ChannelSpec spec_;
  std::string name_;
  bool created_ = false;
  pid_t owner_ = ::getpid();
};

}  // namespace shmq_bench
