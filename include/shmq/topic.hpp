// Topics: publish/subscribe with subscriber groups (issue 15).
//
// A topic is one ring in one shared-memory segment (/dev/shm/shmq.<name>, the same name
// space as queues). A publisher writes each message once, whatever the number of groups.
// Every *group* sees every message; inside a group, subscribers compete for messages
// exactly as consumers of a queue do (ack, nack, leases, redelivery, dead letters), each
// group on its own. A group is created once (by name, with its policy and where it starts)
// and outlives its subscribers: a group with no subscriber keeps its position.
//
//   auto t = shmq::Topic::create("ticks", {.slot_count = 4096}).value();
//   t.create_group("strategy", {.policy = shmq::GroupPolicy::reliable}).value();
//   t.create_group("dashboard", {.policy = shmq::GroupPolicy::lossy}).value();
//   auto pub = t.publisher().value();
//   auto sub = t.subscriber("strategy").value();
//   pub.send("tick 1");
//   shmq::Delivery d;
//   if (sub.receive(d) == shmq::Status::ok) { use(d.view()); sub.ack(d); }
//
// Overflow: a *reliable* group holds publishers back (the slowest reliable group bounds the
// ring, as consumers bound a queue); a *lossy* group never does: when it falls a whole ring
// behind, it skips ahead and every delivery says how many messages were skipped before it
// (Delivery::missed_before; GroupStats::missed counts them all).
//
// The design and its crash analysis: docs/design_notes.md, "Topics".
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "shmq/dead_letter.hpp"
#include "shmq/error.hpp"
#include "shmq/producer.hpp"  // Bytes, as_bytes
#include "shmq/queue.hpp"     // Durability
#include "shmq/wait.hpp"

namespace shmq {

namespace detail {
class Segment;
struct TopicState;
}  // namespace detail

inline constexpr std::uint32_t kMaxGroups = 64;
inline constexpr std::size_t kMaxGroupNameLength = 64;

enum class GroupPolicy : std::uint8_t {
  reliable = 0,  // publishers wait for the group: it never misses a message
  lossy = 1,     // publishers never wait for it: it skips ahead when a ring behind
};
std::string_view to_string(GroupPolicy p) noexcept;

// What a reliable group whose members are all gone does once it has held publishers back
// for its stall timeout.
enum class StallAction : std::uint8_t {
  hold = 0,    // keep holding publishers back (they wait, try_send says full); marked stalled
  detach = 1,  // stop holding them: the group is detached (GroupStats::state "detached"),
               // receives fail with Status::closed; delete and create it again to resume
};
std::string_view to_string(StallAction a) noexcept;

// Where a new group starts.
struct StartAt {
  enum class Kind : std::uint8_t { latest = 0, earliest = 1, position = 2 };
  Kind kind = Kind::latest;
  std::uint64_t position = 0;
  // The next message published after the group is created.
  static StartAt latest() noexcept { return {Kind::latest, 0}; }
  // The oldest message the topic still keeps: its history (TopicOptions::history) or, on a
  // durable topic, its retained log.
  static StartAt earliest() noexcept { return {Kind::earliest, 0}; }
  // Exactly position `p`, which must be retained (or be the next one): else invalid_argument.
  static StartAt at(std::uint64_t p) noexcept { return {Kind::position, p}; }
};

struct TopicOptions {
  // Ring geometry: a power of two 2 .. 2^24 slots of slot_size bytes (a multiple of 64,
  // 128 .. 1 MiB) including a 64-byte header. A message takes one slot: at most
  // slot_size - 64 bytes.
  std::uint32_t slot_count = 1024;
  std::uint32_t slot_size = 256;
  // Publisher and subscriber rows in the member table; 1 .. 255.
  std::uint32_t max_members = 64;
  // Group rows; 1 .. kMaxGroups. Each costs 16 bytes of shared memory per slot.
  std::uint32_t max_groups = 16;
  // File mode of the segment: 0600 or 0660.
  std::uint32_t mode = 0600;
  // How many of the latest messages a group that starts at `earliest` gets first (from
  // memory); 0 .. slot_count, 0 = slot_count (the whole ring). Durable topics: the
  // retained log instead, see below.
  std::uint32_t history = 0;
  // Per group, as for queues: a delivery not acked within `lease` is redelivered to the
  // group (0 = no lease); a message delivered max_deliveries times and given back again goes
  // to the group's dead-letter queue "<topic>.<group>.dlq" (0 = unlimited; dropped if
  // dead_letter is false).
  std::chrono::milliseconds lease{30'000};
  std::uint32_t max_deliveries = 20;
  bool dead_letter = true;
  // A publisher that holds a claimed slot longer than this (stopped) has it turned into a
  // hole that every group passes; its late commit fails and it publishes again.
  std::chrono::milliseconds claim_timeout{5'000};
  // Durable topics (needs shmqd on data_dir): every message is appended to a retained log
  // in <data_dir>/<name>/ (async: within flush_interval; sync: send returns once it is on
  // disk), groups' acked positions are saved, and after a reboot shmqd rebuilds the topic:
  // every group resumes where it acked, and replays from the log what the ring no longer
  // holds. Retention: the oldest log files are deleted once the log exceeds retain_bytes
  // (0 = no size limit) or their newest message is older than retain_age (0 = no limit).
  Durability durability = Durability::none;
  std::string data_dir{};
  std::chrono::milliseconds flush_interval{5};
  std::uint64_t retain_bytes = 0;
  std::chrono::seconds retain_age{0};
};

struct GroupOptions {
  GroupPolicy policy = GroupPolicy::reliable;
  StartAt start = StartAt::latest();
  // Reliable groups: once the group has held a publisher back this long with no live
  // subscriber, it is stalled, and `on_stall` applies. 0 = never stalled (hold forever).
  std::chrono::milliseconds stall_timeout{0};
  StallAction on_stall = StallAction::hold;
};

struct GroupStats {
  std::string name;
  GroupPolicy policy = GroupPolicy::reliable;
  StallAction on_stall = StallAction::hold;
  std::uint64_t stall_timeout_ms = 0;
  std::string state;             // "active", "stalled", "detached"
  std::uint64_t position = 0;    // next position the group will deliver (its dispatch)
  std::uint64_t acked = 0;       // every position below is acked (or missed) by the group
  std::uint64_t lag = 0;         // head - acked
  std::uint64_t in_flight = 0;   // delivered, not acked
  std::uint64_t requeued = 0;    // given back, waiting for redelivery
  std::uint32_t members = 0;     // live subscribers
  std::uint64_t delivered = 0;   // deliveries (redeliveries included)
  std::uint64_t acks = 0;
  std::uint64_t redelivered = 0; // given back by nack, lease expiry or a dead subscriber
  std::uint64_t missed = 0;      // lossy: skipped because the group fell a ring behind
  std::uint64_t dead_lettered = 0;
  std::uint64_t dropped = 0;     // past max_deliveries, but no dead-letter queue could be had
};

struct TopicStats {
  std::uint32_t slot_count = 0;
  std::uint32_t slot_size = 0;
  std::uint32_t max_message_size = 0;
  std::uint32_t max_groups = 0;
  std::uint32_t history = 0;
  Durability durability = Durability::none;
  std::uint64_t head = 0;       // next position publishers will claim
  std::uint64_t earliest = 0;   // oldest position a group could start at
  std::uint64_t persisted = 0;  // durable: positions below are on disk
  std::uint64_t published = 0;  // counters summed over publishers, live and gone
  std::uint64_t holes = 0;      // claims of dead or stalled publishers turned into holes
  std::uint32_t publishers = 0;
  std::uint32_t subscribers = 0;
  std::vector<GroupStats> groups;
};

// A message received through a Subscriber. Valid (its bytes unchanged) while held: on a
// reliable group the bytes are the slot's (zero copy: the slot is not reused before every
// reliable group has acked it); on a lossy group they are a copy, validated after it was
// made (a lossy group never holds publishers back).
class Delivery {
 public:
  Delivery() = default;
  Delivery(Delivery&&) noexcept;
  Delivery& operator=(Delivery&&) noexcept;
  Delivery(const Delivery&) = delete;
  Delivery& operator=(const Delivery&) = delete;

  std::uint64_t position() const noexcept { return position_; }
  std::uint64_t id() const noexcept { return id_; }
  std::uint32_t delivery_count() const noexcept { return delivery_count_; }
  bool redelivered() const noexcept { return delivery_count_ > 1; }
  // Lossy groups: messages this subscriber's group skipped just before this one (and that
  // this subscriber was the one to skip). Always 0 on a reliable group.
  std::uint64_t missed_before() const noexcept { return missed_before_; }
  std::span<const std::byte> data() const noexcept { return {data_, size_}; }
  std::size_t size() const noexcept { return size_; }
  std::string_view view() const noexcept {
    return {reinterpret_cast<const char*>(data_), size_};
  }
  bool held() const noexcept { return held_; }

 private:
  friend class Subscriber;
  std::shared_ptr<detail::Segment> seg_;
  std::uint64_t position_ = 0;
  std::uint64_t id_ = 0;
  std::uint64_t word_ = 0;  // the group word that marks this delivery as ours
  std::uint32_t group_ = 0;
  std::uint64_t group_gen_ = 0;
  std::uint32_t delivery_count_ = 0;
  std::uint64_t missed_before_ = 0;
  const std::byte* data_ = nullptr;
  std::size_t size_ = 0;
  std::vector<std::byte> copy_;
  bool held_ = false;
};

class Publisher {
 public:
  Publisher(Publisher&&) noexcept;
  Publisher& operator=(Publisher&&) noexcept;
  Publisher(const Publisher&) = delete;
  Publisher& operator=(const Publisher&) = delete;
  ~Publisher();

  // Publishes one message (one copy for every group). Blocks while a reliable group holds
  // the ring (or, durable topics, while the persister has not logged the slot's previous
  // message); sync topics: returns once the message is on disk. `id` 0 = generated.
  Status send(Bytes message, std::uint64_t id = 0);
  Status try_send(Bytes message, std::uint64_t id = 0);
  Status send_for(Bytes message, std::chrono::nanoseconds timeout, std::uint64_t id = 0);
  Status send(std::string_view s, std::uint64_t id = 0) { return send(as_bytes(s), id); }
  Status try_send(std::string_view s, std::uint64_t id = 0) { return try_send(as_bytes(s), id); }
  // Position of the last message this publisher published.
  std::uint64_t last_position() const noexcept { return last_position_; }
  void interrupt() noexcept;

 private:
  friend class Topic;
  Publisher(std::shared_ptr<detail::Segment> seg, std::uint32_t row, std::uint32_t owner,
            std::uint64_t row_word);
  Status publish(Bytes message, std::uint64_t id, std::chrono::steady_clock::time_point deadline,
                 bool wait);
  std::shared_ptr<detail::Segment> seg_;
  std::uint32_t row_ = 0;
  std::uint32_t owner_ = 0;
  std::uint64_t row_word_ = 0;
  std::uint64_t limit_ = 0;  // positions below are free to claim (cached from the groups)
  std::uint64_t limit_epoch_ = UINT64_MAX;  // the groups' epoch limit_ was computed at
  std::uint64_t next_id_ = 0;
  std::uint64_t last_position_ = 0;
  std::shared_ptr<std::atomic<bool>> interrupted_;
  WaitOptions wait_{};
};

class Subscriber {
 public:
  Subscriber(Subscriber&&) noexcept;
  Subscriber& operator=(Subscriber&&) noexcept;
  Subscriber(const Subscriber&) = delete;
  Subscriber& operator=(const Subscriber&) = delete;
  // Gives back (for redelivery to the group) nothing: what it still holds is redelivered
  // to the group when its lease expires, or at once by release_all().
  ~Subscriber();

  Status receive(Delivery& out);
  Status try_receive(Delivery& out);
  Status receive_for(Delivery& out, std::chrono::nanoseconds timeout);
  Status ack(Delivery& d);
  // Gives the message back to the group: redelivered (to any of its subscribers) at once,
  // or after `delay`. A message given back max_deliveries times is dead-lettered.
  Status nack(Delivery& d, std::chrono::milliseconds delay = std::chrono::milliseconds(0));
  Status extend_lease(Delivery& d, std::chrono::milliseconds extension);
  // Rejects the message: to the group's dead-letter queue at once, with reason `rejected`
  // (dropped, counted as dead-lettered, on a topic without dead-lettering). Never blocks:
  // Status::full if the DLQ cannot take it now (the message then stays held by you).
  Status reject(Delivery& d);
  // Gives back every message this subscriber holds; returns how many.
  std::size_t release_all();
  void interrupt() noexcept;
  const std::string& group() const noexcept { return group_name_; }
  // Messages skipped by this subscriber because its (lossy) group fell a ring behind.
  std::uint64_t missed() const noexcept { return missed_; }

 private:
  friend class Topic;
  Subscriber(std::shared_ptr<detail::Segment> seg, std::uint32_t row, std::uint32_t owner,
             std::uint64_t row_word, std::uint32_t group, std::uint64_t group_gen,
             std::string group_name);
  Status take(Delivery& out, std::chrono::steady_clock::time_point deadline, bool wait);
  Status take_requeued(Delivery& out, bool lossy, bool& pending);
  bool dead_letter(std::uint64_t pos, std::uint64_t held, bool lossy, DeadLetterReason reason);
  bool fill(bool lossy, std::uint64_t pos, std::uint64_t held, Delivery& out,
            std::uint64_t missed_before);
  int from_log(std::uint64_t pos, Delivery& out);
  void deliver_copied(std::uint64_t pos, std::uint64_t held, Delivery& out,
                      std::uint64_t missed_before);
  std::shared_ptr<detail::Segment> seg_;
  std::uint32_t row_ = 0;
  std::uint32_t owner_ = 0;
  std::uint64_t row_word_ = 0;
  std::uint32_t group_ = 0;
  std::uint64_t group_gen_ = 0;
  std::string group_name_;
  std::uint64_t missed_ = 0;
  std::uint64_t seen_requeue_ = 0;
  std::shared_ptr<std::atomic<bool>> interrupted_;
  std::shared_ptr<detail::TopicState> state_;  // dead-letter producer, heal pacing
  WaitOptions wait_{};
  Status last_dlq_status_ = Status::ok;
};

class Topic {
 public:
  static Result<Topic> create(std::string_view name, const TopicOptions& options = {});
  static Result<Topic> open(std::string_view name);
  // Removes the topic's segment (and its groups); every attached process's blocking calls
  // return Status::closed. Data dirs are kept.
  static VoidResult remove(std::string_view name);
  // True if /dev/shm/shmq.<name> is a topic (false: a queue, or nothing).
  static bool is_topic(std::string_view name);
  // Checks a group name: 1 .. kMaxGroupNameLength characters of [A-Za-z0-9_-].
  static std::string validate_group_name(std::string_view name);

  Result<GroupStats> create_group(std::string_view group, const GroupOptions& options = {});
  // Deletes a group: its subscribers' calls return Status::closed; what it held is dropped.
  VoidResult delete_group(std::string_view group);
  std::vector<GroupStats> groups() const;

  Result<Publisher> publisher();
  Result<Subscriber> subscriber(std::string_view group);
  // The same with a wait strategy (shmq/wait.hpp): how a blocking send waits for room, and a
  // blocking receive for a message. Default: the futex sleep after a short spin.
  Result<Publisher> publisher(const WaitOptions& wait);
  Result<Subscriber> subscriber(std::string_view group, const WaitOptions& wait);

  // Redelivers what dead subscribers held, turns dead publishers' claims into holes and
  // applies stall policies. Publishers and subscribers do this themselves when they wait;
  // shmqd does it every tick; shmqctl repair on demand. Returns what it changed.
  std::uint64_t heal();

  const std::string& name() const noexcept;
  TopicOptions options() const;
  TopicStats stats() const;
  const std::shared_ptr<detail::Segment>& segment() const noexcept { return segment_; }

 private:
  explicit Topic(std::shared_ptr<detail::Segment> s) : segment_(std::move(s)) {}
  std::shared_ptr<detail::Segment> segment_;
};

}  // namespace shmq
