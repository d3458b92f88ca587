// Producer: sends messages into a queue.
//
// Threading: a Producer is used by one thread at a time (it is movable, not copyable);
// interrupt() is the exception and may be called from any thread or a signal handler.
// Any number of producers in any number of processes may send to one queue.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
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
struct ProducerAccess;
}

using Bytes = std::span<const std::byte>;

inline Bytes as_bytes(std::string_view s) noexcept {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

// A slot reserved for zero-copy writing: fill data(), then Producer::commit(). A
// reservation dropped without commit is released as a skipped position (never delivered).
// It must not outlive its producer: a producer that closes releases its open reservations,
// and writing into one afterwards writes into a slot that is no longer reserved.
class Reservation {
 public:
  Reservation() = default;
  Reservation(Reservation&& other) noexcept;
  Reservation& operator=(Reservation&& other) noexcept;
  Reservation(const Reservation&) = delete;
  Reservation& operator=(const Reservation&) = delete;
  ~Reservation();

  // The writable payload: exactly the length that was reserved.
  std::span<std::byte> data() const noexcept { return {data_, size_}; }
  // Shrinks the message before commit (never grows it).
  void resize(std::size_t n) noexcept { if (n < size_) size_ = n; }
  std::uint64_t position() const noexcept { return position_; }
  bool valid() const noexcept { return seg_ != nullptr; }

 private:
  friend class Producer;
  void abandon() noexcept;
  std::shared_ptr<detail::Segment> seg_;
  std::uint32_t owner_ = 0;  // the reserving producer's owner id
  std::byte* data_ = nullptr;
  std::size_t size_ = 0;
  std::uint64_t position_ = 0;
};

// The id a message sent with id 0 gets: the top bit set, then the position of its first
// send. Unique within a queue by construction (see Producer::send). On a queue with
// priorities each level has its own positions: bits 58..62 then hold the level (positions
// stay below 2^58: 91 years at 100 M messages a second).
inline constexpr std::uint64_t kGeneratedIdBit = std::uint64_t{1} << 63;
inline constexpr int kGeneratedIdLevelShift = 58;
constexpr std::uint64_t generated_id(std::uint64_t position, std::uint32_t level = 0) noexcept {
  return kGeneratedIdBit | (std::uint64_t(level & 31) << kGeneratedIdLevelShift) | position;
}

// Ids of an idempotent producer session (Queue::idempotent_producer): bit 62 set, then
// the session's producer id (30 bits) and the message's sequence number (32 bits).
// Application ids sent to a queue with sessions should stay below 2^62.
inline constexpr std::uint64_t kSessionIdBit = std::uint64_t{1} << 62;
constexpr std::uint64_t session_message_id(std::uint32_t producer_id,
                                           std::uint32_t sequence) noexcept {
  return kSessionIdBit | (std::uint64_t(producer_id & 0x3fffffff) << 32) | sequence;
}

// An idempotent producer's identity (Kafka's producer id + sequence number): save it with
// what you have sent, and resume it after a crash to resend the unconfirmed messages in the
// same order under the same ids (see Queue::idempotent_producer).
struct ProducerSession {
  std::uint32_t producer_id = 0;    // 0 = a new session (Queue::idempotent_producer)
  std::uint32_t next_sequence = 0;  // the sequence number of the next send
  bool operator==(const ProducerSession&) const = default;
};

// Options of a producer handle (Queue::producer).
struct ProducerOptions {
  // How send() and send_for() wait while the ring is full (shmq/wait.hpp): the futex sleep
  // by default. Waiting for a durable send's confirmation always sleeps on the futex.
  WaitOptions wait{};
};

// Per-message options of a send (issue 13). A designated initializer reads best:
//   producer.send(bytes, {.priority = 7});
//   producer.send(bytes, {.delay = std::chrono::milliseconds(250)});
struct SendOptions {
  // Kept with the message for deduplication; 0 = generated (see Producer::send).
  std::uint64_t id = 0;
  // 0 .. the queue's max_priority (QueueOptions::max_priority); higher is delivered first.
  // Status::invalid above it.
  std::uint32_t priority = 0;
  // Not delivered before this much time from the send (0: at once). Measured on
  // CLOCK_MONOTONIC in the ring; a durable queue logs the due time as wall-clock time
  // (CLOCK_REALTIME), so a delayed message recovered after a reboot is due at the same
  // wall-clock time.
  std::chrono::milliseconds delay{0};
  // Not delivered before this wall-clock time (if later than now + delay).
  std::chrono::system_clock::time_point not_before{};
  // Message properties (properties.hpp), or none. Only read during the call. The library
  // sets their send time. Status::invalid if they break a limit (kMaxPropertyString,
  // kMaxPropertiesSize); the encoded block counts against max_message_size (too_large).
  // Honoured by send, try_send, send_for and send_batch (every message of the batch gets
  // them); commit of a reservation returns Status::invalid with properties (a reserved slot
  // holds the payload only).
  const Properties* properties = nullptr;
};

class Producer {
 public:
  Producer(Producer&&) noexcept;
  Producer& operator=(Producer&&) noexcept;
  Producer(const Producer&) = delete;
  Producer& operator=(const Producer&) = delete;
  // Unregisters from the member table.
  ~Producer();

  // Sends a copy of `message`. `id` is kept with the message for deduplication; 0 asks
  // for a generated one: generated_id(position of its first send), unique within the queue
  // for its whole life (positions are never reused, also across restarts and rebuilds from
  // the log), whichever producer or process sends. Ids you choose yourself should stay
  // below 2^63 so that they never meet a generated one.
  // send() blocks while the ring is full; try_send() returns Status::full at once;
  // send_for() waits at most `timeout`.
  // On a queue with Durability::sync, ok means the message is on disk (publisher confirm):
  // the call then also waits for shmqd's persister to write it. Every status below but ok
  // means "sent, not confirmed": the message is in the ring, will be delivered, and may
  // still be persisted (do not send it again unless duplicates are fine):
  //   send:     waits until confirmed, also while no shmqd serves the queue (it may be
  //             starting, restarting, or a standby taking over): bound it with send_for.
  //   try_send: never waits for room, and for the confirmation at most
  //             kTrySendConfirmWait: then Status::unconfirmed, or Status::no_persister at
  //             once when no live persister member row is in the segment (no shmqd).
  //   send_for: waits up to `timeout` in all, whether or not a persister is attached (one
  //             may attach meanwhile): Status::timeout.
  // Any of them returns Status::closed instead of waiting if the queue was removed.
  static constexpr std::chrono::milliseconds kTrySendConfirmWait{20};
  Status send(Bytes message, std::uint64_t id = 0);
  Status try_send(Bytes message, std::uint64_t id = 0);
  Status send_for(Bytes message, std::chrono::nanoseconds timeout, std::uint64_t id = 0);
  Status send(std::string_view s, std::uint64_t id = 0) { return send(as_bytes(s), id); }
  Status try_send(std::string_view s, std::uint64_t id = 0) { return try_send(as_bytes(s), id); }
  // The same with per-message options (priority, delay, id): see SendOptions.
  // Status::invalid for a priority above the queue's max_priority.
  Status send(Bytes message, const SendOptions& options);
  Status try_send(Bytes message, const SendOptions& options);
  Status send_for(Bytes message, std::chrono::nanoseconds timeout, const SendOptions& options);
  Status send(std::string_view s, const SendOptions& options) { return send(as_bytes(s), options); }
  Status try_send(std::string_view s, const SendOptions& options) {
    return try_send(as_bytes(s), options);
  }

  // Sends messages in order, waking consumers once for the batch. Blocks while full, up
  // to `timeout` in all. Returns how many were sent; `*status` says why it stopped early.
  // On a sync queue the batch is confirmed as a batch (one wait for the last message);
  // 0 with *status = timeout means sent but not confirmed.
  // `options` applies to every message of the batch (its id must be 0: each message gets
  // its own generated id).
  std::size_t send_batch(std::span<const Bytes> messages,
                         std::chrono::nanoseconds timeout = std::chrono::nanoseconds::max(),
                         Status* status = nullptr, const SendOptions& options = {});

  // Zero-copy: reserves one slot for a message of `size` bytes (at most one slot's
  // payload, slot_size - 64), to be written in place and committed.
  Status reserve(std::size_t size, Reservation& out,
                 std::chrono::nanoseconds timeout = std::chrono::nanoseconds::max());
  Status try_reserve(std::size_t size, Reservation& out);
  // The same at a priority level (0 .. max_priority): the slot is reserved in that level.
  Status reserve(std::size_t size, Reservation& out, std::chrono::nanoseconds timeout,
                 std::uint32_t priority);
  // Publishes a filled reservation.
  Status commit(Reservation& r, std::uint64_t id = 0);
  // The same with options: id and delay apply; a priority must be the reservation's
  // (Status::invalid otherwise).
  Status commit(Reservation& r, const SendOptions& options);

  // Marks this producer alive now (sends do it themselves); matters on queues with
  // heartbeat liveness.
  void heartbeat() noexcept;

  // Makes blocking calls return Status::interrupted, now and until clear_interrupt().
  void interrupt() noexcept;
  void clear_interrupt() noexcept;

  // The position of the last message sent (or, after Status::duplicate, of the original
  // it duplicates; kNoPosition when that is not known: an id recovered from the log after
  // a reboot).
  static constexpr std::uint64_t kNoPosition = UINT64_MAX;
  std::uint64_t last_position() const noexcept { return last_position_; }
  // An idempotent producer's session (Queue::idempotent_producer): next_sequence is the
  // sequence number its next send with id 0 gets. Moves on after a send that returned ok
  // or duplicate; after any other status the next send is the retry of the same message
  // (same id). std::nullopt for a plain producer.
  std::optional<ProducerSession> session() const noexcept {
    if (!session_) return std::nullopt;
    return ProducerSession{session_producer_, session_next_};
  }

  std::uint32_t member_index() const noexcept { return member_; }
  std::size_t max_message_size() const noexcept;
  // True once this producer's member row was taken from it (see Status::evicted).
  bool evicted() const noexcept;

 private:
  friend class Queue;
  friend class Reservation;
  friend struct detail::ProducerAccess;
  // How a sync send waits for its confirmation: untimed (send: until confirmed, or
  // no_persister), bounded (try_send: at most kTrySendConfirmWait, then unconfirmed), timed
  // (send_for, send_batch with a timeout: until the deadline, then timeout).
  enum class Confirm : std::uint8_t { untimed, bounded, timed };
  Status wait_persisted(std::uint64_t upto, std::chrono::steady_clock::time_point deadline,
                        Confirm confirm);
  Status send_entry(Bytes message, const SendOptions& options,
                    std::chrono::steady_clock::time_point space_deadline,
                    std::chrono::steady_clock::time_point confirm_deadline, Confirm confirm);
  Status wait_in_flight(std::uint64_t id, std::chrono::steady_clock::time_point deadline);
  Status duplicate(std::uint64_t original) noexcept;
  Status send_confirmed(Bytes message, std::uint64_t id,
                        std::chrono::steady_clock::time_point space_deadline,
                        std::chrono::steady_clock::time_point confirm_deadline, Confirm confirm,
                        std::uint64_t due_ns = 0);
  // The producer of priority level `priority` (this one for 0), opened on first use;
  // invalid_argument above the queue's max_priority.
  Status level(std::uint32_t priority, Producer*& out);
  Producer(std::shared_ptr<detail::Segment> segment, const detail::MemberTicket& member);

  // `origin` != 0: a message recovered from the log (at position origin - 1), republished
  // into a rebuilt ring as already delivered once; the persister logs it as a copy of it.
  // `due_ns` != 0: a delayed message, not delivered before CLOCK_MONOTONIC `due_ns`.
  Status send_impl(Bytes message, std::uint64_t id,
                   std::chrono::steady_clock::time_point deadline, bool wake,
                   std::uint64_t origin = 0, std::uint64_t* position = nullptr,
                   std::uint64_t due_ns = 0);
  Status claim(std::uint32_t k, std::uint64_t& pos,
               std::chrono::steady_clock::time_point deadline);
  void write_and_publish_prepare(std::uint64_t pos, Bytes message, std::uint64_t id);
  bool publish(std::uint64_t pos, std::uint32_t k, std::uint64_t due_ns = 0);
  Status commit_impl(Reservation& r, std::uint64_t id, std::uint64_t due_ns);
  // The properties layer (issue 14): builds [block][message] in a reused buffer and sends it
  // through send_confirmed with length_flags_ set, so send_impl stores the flag with the
  // length (and seals it). Messages without properties never come here.
  Status send_with_properties(Bytes message, const SendOptions& options,
                              std::chrono::steady_clock::time_point space_deadline,
                              std::chrono::steady_clock::time_point confirm_deadline,
                              Confirm confirm);
  // Builds the properties block of `options` + `message` into the thread's reused buffer.
  Status build_with_properties(Bytes message, const SendOptions& options, Bytes& out);
  void remember_reservation(std::uint64_t pos);
  void wake_consumers() noexcept;
  void release_member() noexcept;

  std::shared_ptr<detail::Segment> seg_;
  std::uint32_t member_ = 0;      // our member row
  std::uint32_t owner_ = 0;       // our owner id in slot words (row + generation)
  std::uint64_t row_word_ = 0;    // our row's state word while it is ours
  std::uint64_t now_ns_ = 0;  // CLOCK_MONOTONIC_COARSE read once per send
  // Or'd into the slot header's length by the send in progress: kLengthHasProperties while
  // send_with_properties (or a recovered / replayed message with properties) sends, else 0.
  std::uint32_t length_flags_ = 0;
  // != 0: the send time to put in the properties block instead of now (dlq replay keeps the
  // original's; set through ProducerAccess).
  std::uint64_t properties_timestamp_ns_ = 0;
  std::unique_ptr<std::atomic<bool>> interrupted_;
  // Positions of reservations handed out and not committed through us: the only claims a
  // producer can still hold between calls, given back as holes when it closes. Entries of
  // reservations abandoned since are stale, and harmless (release_claim is a CAS from our
  // exact claim); they are pruned as new ones come.
  std::vector<std::uint64_t> reserved_;
  // Queues with priorities: the producers of levels 1 .. max_priority (index level - 1),
  // opened on first use; atomic because interrupt() may read them from any thread.
  std::unique_ptr<std::atomic<Producer*>[]> levels_;
  std::uint64_t last_position_ = 0;
  WaitOptions wait_{};
  bool in_batch_ = false;  // send_batch: the per-send eviction check and clock read are done
  // Sends are not looked up in the dedup window (dlq replay: a dead letter goes back under
  // its original id, which is in the window). Set by detail::ProducerAccess.
  bool bypass_dedup_ = false;
  // An idempotent session (Queue::idempotent_producer).
  bool session_ = false;
  std::uint32_t session_producer_ = 0;
  std::uint32_t session_next_ = 0;
};

namespace detail {
// CLOCK_MONOTONIC ns at which a message sent now with `options` is due; 0 = at once.
std::uint64_t due_time_ns(const SendOptions& options) noexcept;
}  // namespace detail

}  // namespace shmq
