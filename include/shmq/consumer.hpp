// Consumer: receives messages from a queue and acks them.
//
// Delivery is at-least-once. Competing consumers: each message is held by one consumer
// at a time and stays in its slot until acked. A message is redelivered (delivery_count
// raised, redelivered() true) after nack(requeue), after its consumer closes without
// acking it, and (with the watchdog) after its consumer dies or its lease expires.
//
// Threading: a Consumer is used by one thread at a time; interrupt() may be called from
// any thread or a signal handler.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "shmq/error.hpp"
#include "shmq/properties.hpp"
#include "shmq/wait.hpp"

namespace shmq {

namespace detail {
class Segment;
struct MemberTicket;
class DeadLetterSink;
}

// How a consumer hands messages over.
struct ConsumerOptions {
  // false (the default): every message is copied out of shared memory at receive, and the
  // copy is checked against the slot afterwards, so data() is exactly the message received
  // and never changes, whatever happens to the slot (a lease that expires while this
  // process is stopped, another consumer acking it, a producer reusing the slot).
  // true: a message that fits one slot is not copied: data() points into the slot. It is
  // the message's bytes only while the slot is ours: after reading them, m.valid() says
  // whether they were (a seqlock check); once the lease expired they may change under the
  // reader. Messages spanning several slots are always copied.
  bool zero_copy = false;
  // How receive() and receive_for() wait while there is nothing to take (shmq/wait.hpp):
  // the futex sleep by default; busy_spin for a consumer with a core of its own.
  WaitOptions wait{};
};

// A received message. It knows the consumer that received it (only that consumer can ack,
// nack or extend it) and keeps the queue's memory mapped as long as it lives, so it never
// touches unmapped memory, even after its Consumer and Queue are gone.
class Message {
 public:
  Message() = default;
  // Moving hands the delivery over: the moved-from handle no longer holds it.
  Message(Message&& o) noexcept { *this = std::move(o); }
  Message& operator=(Message&& o) noexcept {
    if (this != &o) {
      position_ = o.position_;
      id_ = o.id_;
      word_ = o.word_;
      delivery_count_ = o.delivery_count_;
      fragments_ = o.fragments_;
      priority_ = o.priority_;
      size_ = o.size_;
      props_size_ = o.props_size_;
      copied_ = o.copied_;
      copy_ = std::move(o.copy_);
      data_ = copied_ ? copy_.data() + props_size_ : o.data_;
      seg_ = o.seg_;
      owner_ = o.owner_;
      held_ = o.held_;
      o.held_ = false;
      o.word_ = 0;  // it handed its delivery over: it never held one (ack says invalid)
      o.data_ = nullptr;
      o.size_ = 0;
      o.props_size_ = 0;
    }
    return *this;
  }
  Message(const Message&) = delete;
  Message& operator=(const Message&) = delete;

  std::uint64_t position() const noexcept { return position_; }
  std::uint64_t id() const noexcept { return id_; }
  // 1 on first delivery, raised on every redelivery.
  std::uint32_t delivery_count() const noexcept { return delivery_count_; }
  bool redelivered() const noexcept { return delivery_count_ > 1; }
  // Its priority (SendOptions::priority); 0 on a queue without priorities.
  std::uint32_t priority() const noexcept { return priority_; }
  // The payload: without the properties block of a message sent with properties.
  std::span<const std::byte> data() const noexcept { return {data_, size_}; }
  std::size_t size() const noexcept { return size_; }
  std::string_view view() const noexcept {
    return {reinterpret_cast<const char*>(data_), size_};
  }
  // Its properties (SendOptions::properties): a view into the message's bytes, empty
  // (present() false) for a message sent without. Valid as long as data() is.
  PropertiesView properties() const noexcept {
    return PropertiesView({data_ - props_size_, props_size_}, priority_);
  }
  // True while this handle holds its delivery: received, not acked or nacked through it,
  // and not taken back (lease expired, consumer evicted). Reads the slot: it never says
  // true for a delivery the queue has taken back.
  bool held() const noexcept;
  // True if data() is the message received: always for a copied message (the default, see
  // ConsumerOptions); for a zero-copy one, only while the delivery is still held: call it
  // after reading data(), and discard what was read if it says false.
  bool valid() const noexcept;

 private:
  friend class Consumer;
  std::shared_ptr<detail::Segment> seg_;  // keeps the mapping alive
  std::uint32_t owner_ = 0;               // the receiving consumer's owner id
  std::uint64_t position_ = 0;
  std::uint64_t id_ = 0;
  std::uint64_t word_ = 0;  // the slot word that marks this delivery as held by us
  std::uint32_t delivery_count_ = 0;
  std::uint32_t fragments_ = 0;
  std::uint32_t priority_ = 0;
  const std::byte* data_ = nullptr;
  std::size_t size_ = 0;
  std::size_t props_size_ = 0;   // the properties block in front of data_ (0: none)
  std::vector<std::byte> copy_;  // backing store of a copied message
  bool copied_ = false;
  bool held_ = false;
};

class Consumer {
 public:
  Consumer(Consumer&&) noexcept;
  Consumer& operator=(Consumer&&) noexcept;
  Consumer(const Consumer&) = delete;
  Consumer& operator=(const Consumer&) = delete;
  // Returns every message still held (requeued for other consumers) and unregisters.
  ~Consumer();

  // receive() blocks until a message comes; try_receive() returns Status::empty at once;
  // receive_for() waits at most `timeout`. On Status::ok, `out` holds the message.
  Status receive(Message& out);
  Status try_receive(Message& out);
  Status receive_for(Message& out, std::chrono::nanoseconds timeout);

  // Waits up to `timeout` for a first message, then takes what is ready without waiting,
  // up to out.size(). Returns how many messages were received.
  std::size_t receive_batch(std::span<Message> out, std::chrono::nanoseconds timeout);

  // Releases the message's slot. Status::lease_lost if this consumer no longer holds it
  // (lease expired, reclaimed, or already acked or nacked through this handle);
  // Status::invalid for a handle that never held a message (default-constructed, or moved
  // from: its delivery went with the move). The same
  // rule holds for nack, nack_after and extend_lease.
  Status ack(Message& m);
  // Acks every held message in `ms`; returns the first failure, or ok.
  Status ack(std::span<Message> ms);
  // Gives the message back. requeue=true: delivered again (to any consumer) with its
  // delivery count raised, after the queue's backoff delay if it has one. requeue=false:
  // rejected: dead-lettered with reason "rejected" (or dropped if the queue does not
  // dead-letter). It never blocks: if the dead-letter queue cannot take the message now
  // (full, or missing), nack returns Status::full and the message stays in this queue,
  // still held by this consumer (retry, nack(m) it back, or ack it). On a durable queue the
  // dead letter survives a crash and a reboot: shmqd journals the release of the original
  // only once the dead letter is on disk. A message over the queue's max_deliveries is
  // dead-lettered when it would be delivered again.
  Status nack(Message& m, bool requeue = true);
  // Gives the message back to be delivered again not before `delay` from now (0: at once).
  Status nack_after(Message& m, std::chrono::milliseconds delay);
  // Pushes the lease (visibility timeout) of a held message to `extension` from now.
  // Status::lease_lost if the message was already taken back.
  Status extend_lease(Message& m, std::chrono::milliseconds extension);

  // Marks this consumer alive now (blocking calls and receives do it themselves); for
  // heartbeat liveness, call it during long processing.
  void heartbeat() noexcept;

  // Returns every held message to the queue (as close does) and keeps the consumer open.
  std::size_t release_all();

  void interrupt() noexcept;
  void clear_interrupt() noexcept;

  std::uint32_t member_index() const noexcept { return member_; }
  // True once this consumer's member row was taken from it (see Status::evicted).
  bool evicted() const noexcept;

 private:
  friend class Queue;
  Consumer(std::shared_ptr<detail::Segment> segment, const detail::MemberTicket& member,
           const ConsumerOptions& options);
  // Status::wrong_consumer unless `m` was received by this consumer.
  bool foreign(const Message& m) const noexcept;

  enum class Claim { taken, lost, diverted };
  Claim claim_at(std::uint64_t pos, std::uint64_t word, Message& out);
  // got: `out` holds a message; empty: none ready; busy: the bounded walk over the ring
  // ended without finding one, call again (after checking the deadline and interrupt).
  enum class Poll { got, empty, busy };
  Poll poll(Message& out);
  // After poll() took the ready message that ends before `pos`: takes the ready messages
  // that follow it into run_ (as many as fit), and returns the position after the last one
  // it took or passed; poll() then moves dispatch once, past all of them.
  std::uint64_t take_run(std::uint64_t pos);
  // got: `out` holds a message; none: nothing requeued is due; busy: it dead-lettered as
  // many messages as one call may (kMaxDivertedPerPoll), there may be more.
  enum class Scan { got, none, busy };
  Scan scan_requeued(Message& out, int& diverted);
  // taken: `out` holds the delivery; lost: the slot changed while it was copied; corrupt:
  // it fails its checksum (checksummed queue), not delivered.
  enum class Fill { taken, lost, corrupt };
  Fill fill(std::uint64_t pos, std::uint64_t held_word, std::uint32_t delivery_count,
            Message& out);
  void wake_producers() noexcept;
  void release_member() noexcept;
  // Queues with priorities (levels_ set): one non-blocking attempt over every level, the
  // highest whose bit is set in the base's level bitmap first, then level 0 (this
  // consumer's own ring). `sweep`: look at every level whatever the bitmap says, with their
  // requeue epochs unseen (the re-check before sleeping, and once a millisecond).
  Poll poll_levels(Message& out, bool sweep);
  Poll poll_any(Message& out) { return levels_ ? poll_levels(out, false) : poll(out); }
  // The consumer of the level `m` was received from (this one for level 0).
  Consumer& route(const Message& m) noexcept;
  std::size_t release_all_own();
  // The earliest due time of a delayed message any level's scans noted.
  std::uint64_t earliest_due() const noexcept;
  struct Levels;
  // heartbeat() without its eviction check, for callers that have just made it.
  void beat() noexcept;
  void make_dead_letter_sink();
  // Adds the consumer of level p (levels are added in order 1, 2, ...).
  void add_level(std::uint32_t p, Consumer&& level);
  // The handle no longer holds its delivery (acked, nacked, taken back).
  void drop(Message& m) noexcept;

  std::shared_ptr<detail::Segment> seg_;
  std::uint32_t member_ = 0;      // our member row
  std::uint32_t owner_ = 0;       // our owner id in slot words (row + generation)
  std::uint64_t row_word_ = 0;    // our row's state word while it is ours
  bool zero_copy_ = false;
  WaitOptions wait_{};
  std::uint64_t seen_requeue_epoch_ = 0;
  std::uint64_t next_due_ns_ = UINT64_MAX;  // earliest delayed message seen by a scan
  std::uint64_t now_ns_ = 0;                // CLOCK_MONOTONIC_COARSE read once per call
  // Set by receive_batch only (no priorities) for the duration of one look: the rest of
  // its span, which poll() fills with the run of ready messages after the one it takes.
  std::span<Message> run_{};
  std::size_t run_taken_ = 0;
  // Where release_all looks: positions delivered to us since it last ran, and how many of
  // those deliveries are still held (not acked, nacked or found lost).
  std::uint64_t held_lo_ = UINT64_MAX;
  std::uint64_t held_hi_ = 0;
  std::uint64_t held_count_ = 0;
  std::unique_ptr<std::atomic<bool>> interrupted_;
  std::unique_ptr<detail::DeadLetterSink> dead_letters_;
  std::unique_ptr<Levels> levels_;
  // A level's consumer: its priority consumer's DLQ sink, which its dead letters go through.
  detail::DeadLetterSink* shared_dead_letters_ = nullptr;
};

}  // namespace shmq
