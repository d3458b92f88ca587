// shmqctl: the commands. Each takes its parsed arguments and returns an exit code, or throws
// Failure (shmqctl_common.hpp) with the one-line error and the exit code.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace shmqctl {

struct CreateArgs {
  std::string queue;
  std::uint32_t slots = 1024;
  std::uint32_t slot_size = 256;
  std::uint32_t max_message_size = 0;
  std::uint32_t max_members = 64;
  std::string durability = "none";
  std::string data_dir;
  std::uint32_t max_deliveries = 20;
  std::uint32_t lease_ms = 30'000;
  std::uint32_t ttl_ms = 0;
  std::string mode = "0600";
  std::uint32_t backoff_initial_ms = 0;
  std::uint32_t backoff_max_ms = 60'000;
  bool no_dead_letter = false;
  bool heartbeat_liveness = false;
  std::uint32_t heartbeat_timeout_ms = 5'000;
  std::uint32_t claim_timeout_ms = 5'000;
  std::uint32_t flush_interval_ms = 5;
  bool checksum = false;
  std::uint32_t max_priority = 0;
  std::string dedup_window;  // N[/SECONDS]
};
int cmd_create(const CreateArgs& a);

// shmqctl set: the run-time policy (Queue::set_policy); -1 = not given, keep.
struct SetArgs {
  std::string queue;
  std::int64_t lease_ms = -1;
  std::int64_t max_deliveries = -1;
  std::int64_t ttl_ms = -1;
  std::int64_t backoff_initial_ms = -1;
  std::int64_t backoff_max_ms = -1;
};
int cmd_set(const SetArgs& a);

// shmqctl repair: reclaim the member rows of dead processes (Queue::repair).
struct RepairArgs {
  std::string queue;
};
int cmd_repair(const RepairArgs& a);

struct DeleteArgs {
  std::string queue;
  bool purge_data = false;
  std::string data_dir;  // where the data is when the segment is already gone
  bool keep_dlq = false;
};
int cmd_delete(const DeleteArgs& a);

struct ListArgs {
  bool json = false;
};
int cmd_list(const ListArgs& a);

struct StatArgs {
  std::string queue;
  bool json = false;
  bool rate = false;
  std::uint32_t rate_ms = 1000;
};
int cmd_stat(const StatArgs& a);

struct WatchArgs {
  std::string queue;
  std::uint32_t interval_ms = 1000;
  std::uint64_t count = 0;  // refreshes; 0 = until interrupted
};
int cmd_watch(const WatchArgs& a);

struct ProduceArgs {
  std::string queue;
  std::optional<std::uint64_t> count;  // generated messages instead of stdin
  std::optional<std::uint32_t> size;
  std::uint32_t priority = 0;
  std::uint64_t delay_ms = 0;  // each message not delivered before this much time from its send
  std::optional<std::uint64_t> id;  // the first message's id; the next ones count up
  bool tab_ids = false;             // each line is ID<TAB>payload
  // Message properties (issue 14): every message gets them. Headers as given, "k=v".
  std::vector<std::string> headers;
  std::string content_type;
  std::string correlation_id;
  std::string reply_to;
  // Issue 16: how a send waits while the ring is full (queues only): futex, busy-spin,
  // spin-yield or spin-sleep; the spin before yielding or sleeping and the sleep, in us.
  std::optional<std::string> wait;
  std::optional<std::uint64_t> spin_us;
  std::optional<std::uint64_t> sleep_us;
};
int cmd_produce(const ProduceArgs& a);

struct ConsumeArgs {
  std::string queue;
  std::optional<std::string> group;  // topics: the subscriber group (required there)
  std::uint64_t count = 0;  // 0 = unlimited
  std::uint32_t timeout_ms = 1000;
  bool follow = false;  // wait forever
  bool reject = false;  // reject (dead-letter) instead of ack
  bool show_properties = false;  // a "#" line of properties before each payload line
  // Issue 16: how a receive waits while there is nothing to take (queues only), as produce.
  std::optional<std::string> wait;
  std::optional<std::uint64_t> spin_us;
  std::optional<std::uint64_t> sleep_us;
};
int cmd_consume(const ConsumeArgs& a);

struct PeekArgs {
  std::string queue;
  std::uint64_t count = 10;  // 0 = all
  std::uint32_t max_bytes = 200;
  bool json = false;
};
int cmd_peek(const PeekArgs& a);

struct DlqArgs {
  std::string queue;
  std::uint64_t count = 0;  // 0 = all
  std::uint32_t max_bytes = 200;
};
int cmd_dlq_list(const DlqArgs& a);
int cmd_dlq_replay(const DlqArgs& a);
int cmd_dlq_purge(const DlqArgs& a);

struct LogArgs {
  std::string dir;
  std::uint32_t max_bytes = 200;
  bool json = false;
};
int cmd_log_verify(const LogArgs& a);
int cmd_log_dump(const LogArgs& a);

// --- topics (issue 15) ----------------------------------------------------------------------
// shmqctl topic create: Topic::create. Defaults are TopicOptions'.
struct TopicCreateArgs {
  std::string topic;
  std::uint32_t slots = 1024;
  std::uint32_t slot_size = 256;
  std::uint32_t max_groups = 16;
  std::uint32_t max_members = 64;
  std::string mode = "0600";
  std::uint32_t history = 0;
  std::uint32_t lease_ms = 30'000;
  std::uint32_t max_deliveries = 20;
  bool no_dead_letter = false;
  std::uint32_t claim_timeout_ms = 5'000;
  std::string durability = "none";
  std::string data_dir;
  std::uint32_t flush_interval_ms = 5;
  std::uint64_t retain_bytes = 0;
  std::uint64_t retain_age_s = 0;
};
int cmd_topic_create(const TopicCreateArgs& a);

// shmqctl topic delete (and shmqctl delete on a topic): Topic::remove, which also removes
// the groups' dead-letter queues.
struct TopicDeleteArgs {
  std::string topic;
  // delete --purge-data: called once the segment is removed; returns what it did, for the
  // output line (else a durable topic's data dir is said to be kept).
  std::function<std::string()> after_remove;
};
int cmd_topic_delete(const TopicDeleteArgs& a);

struct GroupCreateArgs {
  std::string topic;
  std::string group;
  std::string policy = "reliable";
  std::string start = "latest";  // latest | earliest | a position
  std::uint32_t stall_timeout_ms = 0;
  std::string on_stall = "hold";
};
int cmd_group_create(const GroupCreateArgs& a);

struct GroupArgs {
  std::string topic;
  std::string group;  // delete
  bool json = false;  // list
};
int cmd_group_list(const GroupArgs& a);
int cmd_group_delete(const GroupArgs& a);

// The topic side of the commands that take either (their QUEUE is a topic).
int topic_stat(const StatArgs& a);
int topic_repair(const RepairArgs& a);

}  // namespace shmqctl
