// shmq-bench: the cross-process transports, each behind the same small interface so that
// one runner measures them all the same way.
//
// A Channel is made by the parent (named objects are created once per scenario; pipes and
// sockets are made again before every run with prepare_run()). Children inherit it through
// fork() and make their end with sender(i) / receiver(j):
//
//   Tx::send(p, n)                  one message (copied in)
//   Tx::send_batch(msgs)            several (shmq: Producer::send_batch; others: a loop)
//   Rx::receive(f, wait) -> k       waits up to `wait` (blocking transports: until a
//                                   message comes) and hands k >= 0 messages to
//                                   f(const std::byte*, std::size_t), each copied into
//                                   the receiver's own buffer first; shmq acks them after f
//   Rx::wake_others(k)              after the last message: unblocks k other receivers
//                                   (Boost: poison messages; shmq: they time out)
//
// Every consumer copies each payload out of the transport (shmq receives zero-copy; the
// copy keeps the comparison with pipes and sockets fair) and checks its tags.
#pragma once

#include <fcntl.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <new>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include <boost/interprocess/ipc/message_queue.hpp>
#include <boost/interprocess/mapped_region.hpp>
#include <boost/interprocess/permissions.hpp>
#include <boost/interprocess/shared_memory_object.hpp>

#include "bench_proc.hpp"
#include "bench_util.hpp"
#include "shmq/shmq.hpp"
#include "vyukov_ring.hpp"


namespace shmq_bench {

namespace bip = boost::interprocess;

inline constexpr std::size_t kBatch = 32;  // batched scenarios: send_batch / receive_batch of 32

// Messages per queue, the same for every transport: 1024, but 256 for 64 KiB messages
// (16 MiB per ring).
inline std::uint32_t capacity_for(std::size_t size) { return size > 4096 ? 256 : 1024; }

// What a channel carries.
struct ChannelSpec {
  std::size_t size = 64;  // every message has exactly this size
  std::uint32_t capacity = 1024;
  bool batch = false;
  shmq::Durability durability = shmq::Durability::none;
  std::string data_dir;  // durable shmq queues
  bool checksum = false;  // shmq: QueueOptions::checksum
  std::uint32_t dedup_window = 0;  // shmq: QueueOptions::dedup_window.count; ids per message
  bool zero_copy = false;  // shmq: ConsumerOptions::zero_copy (default: copied and checked)
  // shmq: QueueOptions::max_priority, and the levels a sender uses round-robin (0: plain
  // send, no SendOptions): the k-th message of a sender goes at priority_of(k, ...), and
  // the receiver checks each message's Message::priority() against its sequence number.
  std::uint32_t max_priority = 0;
  std::uint32_t priority_levels = 0;
  // shmq: properties on every message (bench_properties(kind)); 0: none. slot_extra: bytes
  // added to each slot so that a message and its properties block fit one slot.
  std::uint32_t properties = 0;
  std::uint32_t slot_extra = 0;
  // shmq: how the consumers and producers wait (ConsumerOptions::wait, ProducerOptions::wait).
  Wait consumer_wait = Wait::futex;
  Wait producer_wait = Wait::futex;
};

// The library's options for `w`: its default spin (and, for spin_sleep, sleep).
inline shmq::WaitOptions wait_options(Wait w) {
  shmq::WaitOptions o;
  switch (w) {
    case Wait::futex: o.strategy = shmq::WaitStrategy::futex; break;
    case Wait::busy_spin: o.strategy = shmq::WaitStrategy::busy_spin; break;
    case Wait::spin_yield: o.strategy = shmq::WaitStrategy::spin_yield; break;
    case Wait::spin_sleep: o.strategy = shmq::WaitStrategy::spin_sleep; break;
  }
  return o;
}

// The properties of properties_cost: 1, "a few" (content type, correlation id, two
// headers: a 92-byte block); 2, "many" (those, a reply-to and 16 more headers: 613 bytes).
inline shmq::Properties bench_properties(std::uint32_t kind) {
  shmq::Properties p;
  if (kind == 0) return p;
  p.content_type = "application/octet-stream";
  p.correlation_id = "req-0000000123";
  p.headers = {{"tenant", "acme"}, {"trace", "4bf92f3577b34da6"}};
  if (kind >= 2) {
    p.reply_to = "bench.replies.client-0001";
    for (int i = 0; i < 16; ++i)
      p.headers.emplace_back("x-header-" + std::to_string(10 + i),
                             "value-of-header-" + std::to_string(10 + i));
  }
  return p;
}
inline std::uint32_t bench_properties_size(std::uint32_t kind) {
  return kind == 0 ? 0 : static_cast<std::uint32_t>(*shmq::encoded_properties_size(bench_properties(kind)));
}

// Spin, then yield: the busy-spinning baselines must not starve the process they wait for
// when there are more runnable processes than cores.
class Backoff {
 public:
  void pause() noexcept {
    if (++n_ < 256) {
      cpu_relax();
    } else {
      ::sched_yield();
    }
  }
  void reset() noexcept { n_ = 0; }

 private:
  unsigned n_ = 0;
};

template <typename T>
T take(shmq::Result<T> r, const std::string& what) {
  if (!r.ok()) fail(what + ": " + r.error().message());
  return std::move(r).value();
}

inline std::string status_text(shmq::Status s) { return std::string(shmq::to_string(s)); }

// --- shmq ----------------------------------------------------------------------------------------

class ShmqChannel {
 public:
  static constexpr const char* kName = "shmq";

  // slot_size: the 64-byte slot header plus the payload, in whole cache lines, at least 128:
  // every message is one slot (received zero-copy).
  // One slot per message: the payload behind the 64-byte header (and, with checksums, the
  // 8-byte checksum word).
  static std::uint32_t slot_size(std::size_t size, bool checksum = false) {
    return static_cast<std::uint32_t>(
        std::max<std::size_t>(round_up(size + 64 + (checksum ? 8 : 0), 64), 128));
  }

  explicit ShmqChannel(const ChannelSpec& spec) : spec_(spec), name_(fresh_name()) {
    shmq::QueueOptions o;
    o.slot_count = spec.capacity;
    o.slot_size = slot_size(spec.size + spec.slot_extra, spec.checksum);
    o.mode = 0600;
    o.durability = spec.durability;
    o.data_dir = spec.data_dir;
    o.checksum = spec.checksum;
    o.max_priority = spec.max_priority;
    o.dedup_window.count = spec.dedup_window;
    // The handle is dropped at once: children open the queue by name.
    created_ = true;  // before create: a half-made queue is removed too
    (void)take(shmq::Queue::create(name_, o), "create shmq queue " + name_);
  }
  ~ShmqChannel() {
    if (created_ && owner_ == ::getpid()) (void)shmq::Queue::remove(name_);
  }
  ShmqChannel(const ShmqChannel&) = delete;
  ShmqChannel& operator=(const ShmqChannel&) = delete;

  const std::string& name() const noexcept { return name_; }
  void prepare_run() {}

  // Durable queues: waits until everything sent is on disk or acked (the synced cursor
  // reached the tail: on an async queue `persisted` means written, not on disk); returns
  // that moment.
  static std::uint64_t wait_persisted(const shmq::Queue& q, std::chrono::seconds limit) {
    const auto deadline = Clock::now() + limit;
    for (;;) {
      const shmq::QueueStats s = q.stats();
      if (s.synced >= s.tail) return now_ns();
      if (Clock::now() >= deadline)
        fail("synced cursor stuck at " + std::to_string(s.synced) + " below tail " +
             std::to_string(s.tail));
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
  }
  void after_fork() {}

  class Tx {
   public:
    Tx(const std::string& name, const ChannelSpec& spec)
        : p_(make_producer(name, spec)),
          levels_(spec.priority_levels),
          max_priority_(spec.max_priority),
          // Ids of this sender: a random 30-bit prefix (fresh per process and repetition)
          // and a count, never a duplicate of another sender's within the window.
          id_base_(spec.dedup_window == 0
                       ? 0
                       : ((((now_ns() ^ (std::uint64_t(::getpid()) << 20)) * 0x9e3779b97f4a7c15ull >> 34) | 1)
                          << 32)),
          props_(bench_properties(spec.properties)),
          with_props_(spec.properties != 0) {}
    void send(const std::byte* p, std::size_t n) {
      const shmq::Status s =
          id_base_ != 0 ? p_.send(shmq::Bytes(p, n), ++id_base_)
          : with_props_ ? p_.send(shmq::Bytes(p, n), shmq::SendOptions{.properties = &props_})
          : levels_ == 0 ? p_.send(shmq::Bytes(p, n))
                       : p_.send(shmq::Bytes(p, n),
                                 shmq::SendOptions{.priority = priority_of(k_++, levels_, max_priority_)});
      if (s != shmq::Status::ok) fail("shmq send: " + status_text(s));
    }
    // One message at each level this sender uses (tags kWarmSender/0..L-1), at the level
    // the k-th message goes to: each level's producer is opened on its first send (a
    // segment to open and map, ~0.3-3 ms), which a short timed run should not include.
    // Does not count as messages sent.
    static constexpr std::uint32_t kWarmSender = 0xffff;
    std::uint32_t warm_up(std::size_t size) {
      std::vector<std::byte> buf(size, std::byte{0x5a});
      const std::uint32_t n = std::max<std::uint32_t>(1, levels_);
      for (std::uint32_t j = 0; j < n; ++j) {
        put_tag(buf.data(), size, make_tag(kWarmSender, j));
        const shmq::Status s =
            id_base_ != 0 ? p_.send(shmq::Bytes(buf.data(), size), ++id_base_)
            : levels_ == 0 ? p_.send(shmq::Bytes(buf.data(), size))
                         : p_.send(shmq::Bytes(buf.data(), size),
                                   shmq::SendOptions{.priority = priority_of(j, levels_, max_priority_)});
        if (s != shmq::Status::ok) fail("shmq send (warm-up): " + status_text(s));
      }
      return n;
    }
    // With priorities: the whole batch at the priority of its first message.
    void send_batch(std::span<const shmq::Bytes> msgs) {
      shmq::Status s = shmq::Status::ok;
      shmq::SendOptions so;
      if (levels_ != 0) {
        so.priority = priority_of(k_, levels_, max_priority_);
        k_ += msgs.size();
      }
      const std::size_t sent = p_.send_batch(msgs, std::chrono::nanoseconds::max(), &s, so);
      if (sent != msgs.size() || s != shmq::Status::ok)
        fail("shmq send_batch: " + std::to_string(sent) + " of " + std::to_string(msgs.size()) +
             " sent: " + status_text(s));
    }

   private:
    static shmq::Producer make_producer(const std::string& name, const ChannelSpec& spec) {
      shmq::Queue q = take(shmq::Queue::open(name), "open " + name);
      return take(q.producer({.wait = wait_options(spec.producer_wait)}), "producer");
    }

    shmq::Producer p_;
    std::uint32_t levels_;
    std::uint32_t max_priority_;
    std::uint64_t id_base_;  // dedup_window: the last id sent (0: sends without ids)
    shmq::Properties props_;
    bool with_props_;
    std::uint64_t k_ = 0;  // messages sent
  };

  class Rx {
   public:
    Rx(const std::string& name, const ChannelSpec& spec)
        : q_(take(shmq::Queue::open(name), "open " + name)),
          c_(make_consumer(q_, spec)),
          batch_(spec.batch),
          levels_(spec.batch ? 0 : spec.priority_levels),  // batches: not checked
          max_priority_(spec.max_priority),
          with_props_(spec.properties != 0),
          buf_(spec.size),
          msgs_(spec.batch ? kBatch : 1) {}

    template <typename F>
    std::size_t receive(F&& f, std::chrono::nanoseconds wait) {
      if (!batch_) {
        shmq::Message& m = msgs_[0];
        const shmq::Status s = c_.receive_for(m, wait);
        if (s == shmq::Status::timeout) return 0;
        if (s != shmq::Status::ok) fail("shmq receive: " + status_text(s));
        deliver(m, f);
        if (const auto a = c_.ack(m); a != shmq::Status::ok) fail("shmq ack: " + status_text(a));
        return 1;
      }
      const std::size_t n = c_.receive_batch(std::span<shmq::Message>(msgs_), wait);
      for (std::size_t i = 0; i < n; ++i) deliver(msgs_[i], f);
      if (n > 0) {
        if (const auto a = c_.ack(std::span<shmq::Message>(msgs_.data(), n)); a != shmq::Status::ok)
          fail("shmq ack of a batch: " + status_text(a));
      }
      return n;
    }
    void wake_others(int) {}  // they wait with a timeout and see the done flag

    std::uint64_t wait_persisted(std::chrono::seconds limit) {
      return ShmqChannel::wait_persisted(q_, limit);
    }

   private:
    static shmq::Consumer make_consumer(shmq::Queue& q, const ChannelSpec& spec) {
      return take(q.consumer({.zero_copy = spec.zero_copy, .wait = wait_options(spec.consumer_wait)}),
                  "consumer");
    }

    template <typename F>
    void deliver(const shmq::Message& m, F& f) {
      const std::size_t n = m.size();
      if (n > buf_.size()) fail("shmq: message of " + std::to_string(n) + " bytes");
      if (m.redelivered()) fail("shmq: unexpected redelivery at position " + std::to_string(m.position()));
      // properties_cost: the consumer reads them (and checks they came).
      if (with_props_ && (m.properties().correlation_id().size() != 14 ||
                          !m.properties().header("trace").has_value()))
        fail("shmq: message without its properties at position " + std::to_string(m.position()));
      std::memcpy(buf_.data(), m.data().data(), n);
      if (levels_ != 0 && n >= sizeof(std::uint64_t)) {
        const std::uint64_t seq = get_tag(buf_.data()) & ((std::uint64_t{1} << 48) - 1);
        if (m.priority() != priority_of(seq, levels_, max_priority_))
          fail("shmq: message " + std::to_string(seq) + " received at priority " +
               std::to_string(m.priority()) + ", sent at " +
               std::to_string(priority_of(seq, levels_, max_priority_)));
      }
      f(static_cast<const std::byte*>(buf_.data()), n);
    }

    shmq::Queue q_;
    shmq::Consumer c_;
    bool batch_;
    std::uint32_t levels_;
    std::uint32_t max_priority_;
    bool with_props_;
    std::vector<std::byte> buf_;
    std::vector<shmq::Message> msgs_;
  };

  Tx sender(int) const { return Tx(name_, spec_); }
  Rx receiver(int) const { return Rx(name_, spec_); }

 private:
  ChannelSpec spec_;
  std::string name_;
  bool created_ = false;
  pid_t owner_ = ::getpid();
};

// --- Boost.Interprocess message_queue ----------------------------------------------------------

class BoostChannel {
 public:
  static constexpr const char* kName = "boost";

  explicit BoostChannel(const ChannelSpec& spec) : spec_(spec), name_(fresh_name() + "-boost") {
    try {
      created_ = true;
      bip::message_queue mq(bip::create_only, name_.c_str(), spec.capacity, spec.size,
                            bip::permissions(0600));
    } catch (const bip::interprocess_exception& e) {
      fail("create boost message_queue " + name_ + ": " + e.what());
    }
  }
  ~BoostChannel() {
    if (created_ && owner_ == ::getpid()) bip::message_queue::remove(name_.c_str());
  }
  BoostChannel(const BoostChannel&) = delete;
  BoostChannel& operator=(const BoostChannel&) = delete;

  void prepare_run() {}
  void after_fork() {}

  class Tx {
   public:
    explicit Tx(const std::string& name) : mq_(bip::open_only, name.c_str()) {}
    void send(const std::byte* p, std::size_t n) { mq_.send(p, n, 0); }
    void send_batch(std::span<const shmq::Bytes> msgs) {
      for (const shmq::Bytes& m : msgs) mq_.send(m.data(), m.size(), 0);
    }

   private:
    bip::message_queue mq_;
  };

  class Rx {
   public:
    Rx(const std::string& name, std::size_t size) : mq_(bip::open_only, name.c_str()), buf_(size) {}
    template <typename F>
    std::size_t receive(F&& f, std::chrono::nanoseconds) {
      bip::message_queue::size_type n = 0;
      unsigned priority = 0;
      mq_.receive(buf_.data(), buf_.size(), n, priority);
      f(static_cast<const std::byte*>(buf_.data()), static_cast<std::size_t>(n));
      return 1;
    }
    // Blocked receivers only wake for a message: send each one a poison message.
    void wake_others(int k) {
      std::vector<std::byte> poison(buf_.size());
      put_tag(poison.data(), poison.size(), kPoison);
      for (int i = 0; i < k; ++i) mq_.send(poison.data(), poison.size(), 0);
    }

   private:
    bip::message_queue mq_;
    std::vector<std::byte> buf_;
  };

  Tx sender(int) const { return Tx(name_); }
  Rx receiver(int) const { return Rx(name_, spec_.size); }

 private:
  ChannelSpec spec_;
  std::string name_;
  bool created_ = false;
  pid_t owner_ = ::getpid();
};

// --- bare SPSC ring (the practical limit) --------------------------------------------------------
//
// One producer, one consumer, fixed-size messages in a power-of-two array of cache-line
// multiple slots; no acks, no durability, no futex: both sides spin (yielding after a while).

struct BareRingHeader {
  alignas(128) std::atomic<std::uint64_t> head;  // next position to read; consumer only
  alignas(128) std::atomic<std::uint64_t> tail;  // next position to write; producer only
  alignas(128) std::uint64_t slot_count;         // geometry, read-only once children exist
  std::uint64_t slot_bytes;
  std::uint64_t message_size;
};
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);

class BareChannel {
 public:
  static constexpr const char* kName = "bare";

  explicit BareChannel(const ChannelSpec& spec) : spec_(spec), name_(fresh_name() + "-bare") {
    try {
      created_ = true;
      bip::shared_memory_object shm(bip::create_only, name_.c_str(), bip::read_write,
                                    bip::permissions(0600));
      const std::size_t slot_bytes = round_up(spec.size, 64);
      shm.truncate(static_cast<bip::offset_t>(sizeof(BareRingHeader) + spec.capacity * slot_bytes));
      bip::mapped_region region(shm, bip::read_write);
      auto* h = new (region.get_address()) BareRingHeader();
      h->slot_count = spec.capacity;
      h->slot_bytes = slot_bytes;
      h->message_size = spec.size;
    } catch (const bip::interprocess_exception& e) {
      fail("create bare ring " + name_ + ": " + e.what());
    }
  }
  ~BareChannel() {
    if (created_ && owner_ == ::getpid()) bip::shared_memory_object::remove(name_.c_str());
  }
  BareChannel(const BareChannel&) = delete;
  BareChannel& operator=(const BareChannel&) = delete;

  void prepare_run() {}
  void after_fork() {}

  class Mapping {
   protected:
    explicit Mapping(const std::string& name)
        : shm_(bip::open_only, name.c_str(), bip::read_write), region_(shm_, bip::read_write) {
      h_ = static_cast<BareRingHeader*>(region_.get_address());
      slots_ = static_cast<std::byte*>(region_.get_address()) + sizeof(BareRingHeader);
      mask_ = h_->slot_count - 1;
      slot_bytes_ = h_->slot_bytes;
      message_size_ = h_->message_size;
      if (region_.get_size() < sizeof(BareRingHeader) + h_->slot_count * slot_bytes_)
        fail("bare ring " + name + " is smaller than its geometry");
    }
    std::byte* slot(std::uint64_t pos) const { return slots_ + (pos & mask_) * slot_bytes_; }

    bip::shared_memory_object shm_;
    bip::mapped_region region_;
    BareRingHeader* h_ = nullptr;
    std::byte* slots_ = nullptr;
    std::uint64_t mask_ = 0;
    std::uint64_t slot_bytes_ = 0;
    std::uint64_t message_size_ = 0;
  };

  class Tx : Mapping {
   public:
    explicit Tx(const std::string& name) : Mapping(name) {
      tail_ = h_->tail.load(std::memory_order_relaxed);  // we are the only writer of tail
      head_cache_ = h_->head.load(std::memory_order_acquire);
    }
    void send(const std::byte* p, std::size_t n) {
      // Full while the consumer is a whole ring behind. Acquire pairs with the consumer's
      // release of head: its reads of the slot happen-before our overwrite.
      Backoff b;
      while (tail_ - head_cache_ >= h_->slot_count) {
        head_cache_ = h_->head.load(std::memory_order_acquire);
        if (tail_ - head_cache_ >= h_->slot_count) b.pause();
      }
      std::memcpy(slot(tail_), p, std::min<std::size_t>(n, slot_bytes_));
      h_->tail.store(++tail_, std::memory_order_release);  // publishes the payload
    }
    void send_batch(std::span<const shmq::Bytes> msgs) {
      for (const shmq::Bytes& m : msgs) send(m.data(), m.size());
    }

   private:
    std::uint64_t tail_ = 0;
    std::uint64_t head_cache_ = 0;
  };

  class Rx : Mapping {
   public:
    explicit Rx(const std::string& name) : Mapping(name), buf_(message_size_) {
      head_ = h_->head.load(std::memory_order_relaxed);  // we are the only writer of head
      tail_cache_ = head_;
    }
    template <typename F>
    std::size_t receive(F&& f, std::chrono::nanoseconds) {
      Backoff b;
      while (head_ == tail_cache_) {  // acquire pairs with the producer's release of tail
        tail_cache_ = h_->tail.load(std::memory_order_acquire);
        if (head_ == tail_cache_) b.pause();
      }
      std::memcpy(buf_.data(), slot(head_), message_size_);
      // Release: our read of the slot happens-before the producer reuses it.
      h_->head.store(++head_, std::memory_order_release);
      f(static_cast<const std::byte*>(buf_.data()), message_size_);
      return 1;
    }
    void wake_others(int) {}

   private:
    std::uint64_t head_ = 0;
    std::uint64_t tail_cache_ = 0;
    std::vector<std::byte> buf_;
  };

  Tx sender(int) const { return Tx(name_); }
  Rx receiver(int) const { return Rx(name_); }

 private:
  ChannelSpec spec_;
  std::string name_;
  bool created_ = false;
  pid_t owner_ = ::getpid();
};

// --- Vyukov MPMC ring (issue 16's baseline) ------------------------------------------------------
//
// The per-slot-sequence MPMC ring of vyukov_ring.hpp in a shared-memory object: any number
// of producers and consumers, fixed-size messages, no acks, no durability, no futex. Both
// sides wait with the bare ring's Backoff (spin, then yield). Receivers honour `wait` (the
// throughput runner's consumers time out to see that the run is over).

class VyukovChannel {
 public:
  static constexpr const char* kName = "vyukov";

  explicit VyukovChannel(const ChannelSpec& spec) : spec_(spec), name_(fresh_name() + "-vyukov") {
    try {
      created_ = true;
      bip::shared_memory_object shm(bip::create_only, name_.c_str(), bip::read_write,
                                    bip::permissions(0600));
      shm.truncate(static_cast<bip::offset_t>(VyukovRing::bytes_for(spec.capacity, spec.size)));
      bip::mapped_region region(shm, bip::read_write);
      (void)VyukovRing::init(region.get_address(), spec.capacity, spec.size);
    } catch (const bip::interprocess_exception& e) {
      fail("create vyukov ring " + name_ + ": " + e.what());
    }
  }
  ~VyukovChannel() {
    if (created_ && owner_ == ::getpid()) bip::shared_memory_object::remove(name_.c_str());
  }
  VyukovChannel(const VyukovChannel&) = delete;
  VyukovChannel& operator=(const VyukovChannel&) = delete;

  void prepare_run() {}
  void after_fork() {}

  class Mapping {
   protected:
    explicit Mapping(const std::string& name)
        : shm_(bip::open_only, name.c_str(), bip::read_write),
          region_(shm_, bip::read_write),
          ring_(region_.get_address()) {
      if (region_.get_size() < VyukovRing::bytes_for(ring_.cell_count(), ring_.message_size()))
        fail("vyukov ring " + name + " is smaller than its geometry");
    }
    bip::shared_memory_object shm_;
    bip::mapped_region region_;
    VyukovRing ring_;
  };

  class Tx : Mapping {
   public:
    explicit Tx(const std::string& name) : Mapping(name), buf_(ring_.message_size()) {}
    void send(const std::byte* p, std::size_t n) {
      const std::byte* src = p;
      if (n != ring_.message_size()) {  // the ring carries fixed-size messages
        std::memset(buf_.data(), 0, buf_.size());
        std::memcpy(buf_.data(), p, std::min(n, buf_.size()));
        src = buf_.data();
      }
      Backoff b;
      while (!ring_.try_enqueue(src)) b.pause();
    }
    void send_batch(std::span<const shmq::Bytes> msgs) {
      for (const shmq::Bytes& m : msgs) send(m.data(), m.size());
    }

   private:
    std::vector<std::byte> buf_;
  };

  class Rx : Mapping {
   public:
    explicit Rx(const std::string& name) : Mapping(name), buf_(ring_.message_size()) {}
    template <typename F>
    std::size_t receive(F&& f, std::chrono::nanoseconds wait) {
      Backoff b;
      std::uint64_t deadline = 0;  // read the clock only once spinning has gone on a while
      for (std::uint32_t spins = 1;; ++spins) {
        if (ring_.try_dequeue(buf_.data())) {
          f(static_cast<const std::byte*>(buf_.data()), buf_.size());
          return 1;
        }
        if ((spins & 255) == 0) {
          const std::uint64_t now = now_ns();
          if (deadline == 0) {
            const auto w = static_cast<std::uint64_t>(std::max<std::int64_t>(0, wait.count()));
            deadline = w > UINT64_MAX - now ? UINT64_MAX : now + w;
          } else if (now >= deadline) {
            return 0;
          }
        }
        b.pause();
      }
    }
    void wake_others(int) {}  // they time out and see the done flag

   private:
    std::vector<std::byte> buf_;
  };

  Tx sender(int) const { return Tx(name_); }
  Rx receiver(int) const { return Rx(name_); }

 private:
  ChannelSpec spec_;
  std::string name_;
  bool created_ = false;
  pid_t owner_ = ::getpid();
};

// --- pipe and Unix domain socket (1 x 1) -----------------------------------------------------------

inline void write_exact(int fd, const std::byte* p, std::size_t n) {
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) fail(std::string("write: ") + std::strerror(errno));
    p += w;
    n -= static_cast<std::size_t>(w);
  }
}

inline void read_exact(int fd, std::byte* p, std::size_t n) {
  while (n > 0) {
    const ssize_t r = ::read(fd, p, n);
    if (r < 0 && errno == EINTR) continue;
    if (r == 0) fail("read: the sender closed its end");
    if (r < 0) fail(std::string("read: ") + std::strerror(errno));
    p += r;
    n -= static_cast<std::size_t>(r);
  }
}

// A byte stream made fresh for every run: the parent makes it before fork (prepare_run)
// and closes its copies after (after_fork). Messages are fixed-size, so framing is a
// read of exactly `size` bytes.
template <bool Socket>
class StreamChannel {
 public:
  static constexpr const char* kName = Socket ? "unix" : "pipe";

  explicit StreamChannel(const ChannelSpec& spec) : spec_(spec) {}
  ~StreamChannel() { after_fork(); }
  StreamChannel(const StreamChannel&) = delete;
  StreamChannel& operator=(const StreamChannel&) = delete;

  void prepare_run() {
    after_fork();
    if constexpr (Socket) {
      if (::socketpair(AF_UNIX, SOCK_STREAM, 0, fds_) != 0)
        fail(std::string("socketpair: ") + std::strerror(errno));
    } else {
      if (::pipe(fds_) != 0) fail(std::string("pipe: ") + std::strerror(errno));
      // As much buffer as an unprivileged process may ask for (default limit 1 MiB), the
      // ring-sized buffer of the other transports being out of reach.
      (void)::fcntl(fds_[1], F_SETPIPE_SZ, 1 << 20);
    }
  }
  void after_fork() {
    for (int& fd : fds_) {
      if (fd >= 0) ::close(fd);
      fd = -1;
    }
  }

  class Tx {
   public:
    explicit Tx(int fd) : fd_(fd) {}
    void send(const std::byte* p, std::size_t n) { write_exact(fd_, p, n); }
    void send_batch(std::span<const shmq::Bytes> msgs) {
      for (const shmq::Bytes& m : msgs) send(m.data(), m.size());
    }

   private:
    int fd_;
  };

  class Rx {
   public:
    Rx(int fd, std::size_t size) : fd_(fd), buf_(size) {}
    template <typename F>
    std::size_t receive(F&& f, std::chrono::nanoseconds) {
      read_exact(fd_, buf_.data(), buf_.size());
      f(static_cast<const std::byte*>(buf_.data()), buf_.size());
      return 1;
    }
    void wake_others(int) {}

   private:
    int fd_;
    std::vector<std::byte> buf_;
  };

  // Each child closes the end it does not use, so that a dead peer shows as EOF/EPIPE.
  Tx sender(int) const {
    ::close(fds_[0]);
    return Tx(fds_[1]);
  }
  Rx receiver(int) const {
    ::close(fds_[1]);
    return Rx(fds_[0], spec_.size);
  }

 private:
  ChannelSpec spec_;
  int fds_[2] = {-1, -1};
};

using PipeChannel = StreamChannel<false>;
using UnixChannel = StreamChannel<true>;

}  // namespace shmq_bench
