// shmq-bench: scenarios, how each is measured, and what a measurement yields.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "bench_util.hpp"
#include "shmq/queue.hpp"

namespace shmq_bench {

struct Options {
  int reps = 3;                 // repetitions per scenario; figures are their median
  double seconds = 0.8;         // target length of one repetition
  bool quick = false;           // one short repetition per scenario, no calibration
  std::string shmqd;            // shmqd binary ("" if none was found)
  std::string data_root = "/var/tmp";  // where durable queues' data dirs and dd's file go
  std::string out_dir = "bench-out";
  bool json = false;
  bool reps_set = false;        // --reps given (hot_compare defaults to 5 otherwise)
  std::vector<std::string> filters;  // --scenario: regex or substring, any may match
};

// persist: one producer fills a ring big enough for the whole run while no consumer runs,
// timed until everything is on disk (then drained, untimed): shmqd's write bandwidth.
// sync_senders: P processes send single messages to a sync queue (each send waits for its
// confirmation) while no consumer runs; each repetition has its own queue and shmqd, and
// measures the 1-fdatasync-per-message loop on the same disk just before (group commit).
// checksum_cost: 1x1 throughput, ack per message, on a queue without and one with
// QueueOptions::checksum, both in every repetition (alternating which runs first): the
// figures are the checksummed queue's, and the ratio with/without is kept per repetition.
// dedup_cost: the same shape for a dedup window (issue 14): every message sent with an id
// of its own to a queue with a window of 100,000 ids, against plain sends to a queue without.
// priority_cost: the same shape for priorities (issue 13): 1x1 throughput, ack per message,
// on a queue with max_priority 15 whose producer sends round-robin over `priority_levels`
// levels, against a queue without priorities (plain send), both in every repetition.
// properties_cost: the same shape for message properties (issue 14): 1x1 throughput, ack
// per message, every message sent with `properties` (1: a few, 2: many; see
// bench_properties()) and read by the consumer (its correlation id and a header looked up),
// against the same queue geometry without properties, both in every repetition.
// priority_latency: one-way latency of a top-priority probe sent behind a backlog of
// 100,000 priority-0 messages that the producer keeps topped up while a consumer drains
// it; each repetition also measures the same probes on the queue with no backlog.
// topic_fanout (issue 15): one publisher process, `groups` reliable subscriber groups of one
// subscriber process each (receive + ack per message); each repetition also runs, the order
// rotating, the same topic shape with 1 group, one shmq queue per subscriber (the publisher
// sends every message to each), and one bare SPSC ring per subscriber (bench_topic.cpp).
// topic_roundtrip: ping-pong through two topics of one group each, against the same through
// two queues, both in every repetition.
// hot_compare (issue 16, bench_hot.cpp): each repetition runs, back to back and in an order
// that alternates between repetitions, the baselines and the shmq variants of one target
// (`hot` says which), and keeps each ratio against the same repetition's baseline.
enum class Kind {
  throughput,
  roundtrip,
  disk_dd,
  disk_fsync,
  persist,
  sync_senders,
  checksum_cost,
  dedup_cost,
  priority_cost,
  priority_latency,
  properties_cost,
  topic_fanout,
  topic_roundtrip,
  hot_compare
};
enum class Transport { shmq, bare, boost, pipe, unix_socket, moodycamel, disk, vyukov };

// hot_compare: which comparison (see bench_hot.cpp).
enum class Hot { none, tp_1x1, roundtrip, tp_4x4, durable, paced };



const char* to_string(Kind k);
const char* to_string(Transport t);

struct Scenario {
  std::string name;
  Kind kind = Kind::throughput;
  Transport transport = Transport::shmq;
  int producers = 1;
  int consumers = 1;
  std::size_t size = 64;
  bool batch = false;  // shmq: send_batch(32) + receive_batch(32) + ack(span)
  shmq::Durability durability = shmq::Durability::none;
  bool threads = false;  // moodycamel: two threads of one process
  bool checksum = false;  // shmq: QueueOptions::checksum
  // shmq: QueueOptions::dedup_window.count; senders then give every message an id of its
  // own (never a duplicate): dedup_cost.
  std::uint32_t dedup_window = 0;
  bool zero_copy = false;  // shmq: consumers receive zero-copy (ConsumerOptions::zero_copy)
  // shmq: QueueOptions::max_priority (0: no priorities), and how many levels the producers
  // use, round-robin (0: plain sends). See priority_of().
  std::uint32_t max_priority = 0;
  std::uint32_t priority_levels = 0;
  // shmq: message properties on every message: 0 none, 1 a few, 2 many (properties_cost).
  std::uint32_t properties = 0;
  // topic_fanout: subscriber groups (one subscriber process each), 1..kMaxFanout.
  int groups = 0;
  // shmq: how consumers and producers wait (ConsumerOptions::wait, ProducerOptions::wait).
  Wait consumer_wait = Wait::futex;
  Wait producer_wait = Wait::futex;
  Hot hot = Hot::none;  // hot_compare
};


// Builds the full list of scenarios, in the order they run and print.
std::vector<Scenario> all_scenarios();

// One repetition.
struct RepResult {
  double elapsed_s = 0;
  double msgs_per_s = 0;
  double mb_per_s = 0;
  double persisted_mb_per_s = -1;  // durable throughput: payload MB/s until all was on disk
  double log_mb_per_s = -1;        // durable throughput: bytes shmqd wrote to its log per second
  std::uint64_t sent = 0;          // messages sent (all queues), for shmqd's totals
  double switches_per_msg = 0;     // voluntary context switches, all processes, per message
  std::vector<std::uint64_t> lat;  // round trips, sorted
  double fsync_per_s = -1;         // sync_senders: the 1-fdatasync-per-message loop, same rep
  double msgs_per_sync = -1;       // sync_senders: shmqd's message records per fdatasync
  std::uint64_t group_waits = 0;   // sync_senders: shmqd's waits for more senders
  std::uint64_t group_wait_timeouts = 0;  // ... that ended at their bound
  double sync_busy = -1;           // sync_senders: share of the time shmqd was in fdatasync
  double baseline_msgs_per_s = -1; // checksum_cost, priority_cost: the queue without, same rep
  // priority_latency: the probes of the same repetition on the queue without a backlog
  // (sorted), and per probe behind the backlog: priority-0 messages the consumer took
  // after the probe's send had returned (before it took the probe), and priority-0
  // messages still queued when it took the probe.
  std::vector<std::uint64_t> baseline_lat;
  std::vector<std::uint64_t> overtaken;   // sorted
  std::vector<std::uint64_t> queued;      // sorted
  // topic_fanout: msgs_per_s is the topic publisher's rate (messages published per second,
  // start to its last send's return). Per group (in group order): messages per second from
  // the publisher's start to the group's last receive+ack. The same repetition's baselines,
  // each a publisher rate: the topic with 1 group (-1 when groups == 1: msgs_per_s is it),
  // one shmq queue per subscriber, one bare ring per subscriber; and their slowest
  // subscriber's rate.
  std::vector<double> group_msgs_per_s;
  double one_group_msgs_per_s = -1;
  double queues_msgs_per_s = -1;
  double queues_slowest_msgs_per_s = -1;
  double bare_msgs_per_s = -1;
  double bare_slowest_msgs_per_s = -1;
  // The publisher process's CPU time (user + system, waits that spin included) per message
  // published: the topic's, and each baseline's (-1: not run).
  double pub_cpu_ns_per_msg = -1;
  double subs_cpu_ns_per_msg = -1;  // the topic's subscribers together, per message
  double one_group_pub_cpu_ns_per_msg = -1;
  double queues_pub_cpu_ns_per_msg = -1;
  double queues_subs_cpu_ns_per_msg = -1;  // one queue per subscriber: its consumers together
  double bare_pub_cpu_ns_per_msg = -1;
};

// hot_compare: one figure or ratio over the repetitions. A ratio compares two variants of
// the same repetition; `goal`/`cmp` give the target (cmp > 0: at least, < 0: at
// most, 0: none, reported only).
struct HotSeries {
  std::string name;
  std::string unit;  // "msgs/s", "ns", "x" (a ratio)
  std::vector<double> reps;
  Spread spread;
  int cmp = 0;
  double goal = 0;
};

// A scenario's figures: the median of its repetitions, with min..max.
struct Outcome {
  const Scenario* sc = nullptr;
  enum class State { ok, failed, skipped } state = State::ok;
  std::string note;
  int reps = 0;
  std::uint64_t count = 0;  // messages (throughput) or timed round trips, per repetition
  Spread msgs_per_s, mb_per_s, persisted_mb_per_s, log_mb_per_s, switches_per_msg;
  std::string detail;  // durable: what shmqd did over the whole scenario
  // sync_senders: msgs/s over the same repetition's 1-fsync-per-message rate, and shmqd's
  // messages per fdatasync; the medians, and each repetition's value in order.
  Spread vs_fsync, msgs_per_sync;
  std::vector<double> rep_vs_fsync, rep_msgs_per_sync;
  std::vector<std::uint64_t> rep_group_waits, rep_group_wait_timeouts;
  std::vector<double> rep_sync_busy;
  // checksum_cost: msgs/s with checksums over msgs/s without, each repetition against its
  // own; the median and each repetition's value in order; and the baseline's msgs/s.
  Spread vs_baseline, baseline_msgs_per_s;
  std::vector<double> rep_vs_baseline;
  // priority_latency: the baseline's percentiles (no backlog), medians over repetitions,
  // and per repetition p50 and p99 behind the backlog over p50 and p99 without.
  Spread base_p50, base_p99, base_p999, base_max;
  std::vector<double> rep_p50_vs_baseline, rep_p99_vs_baseline;
  std::vector<std::uint64_t> rep_overtaken_max, rep_queued_min, rep_queued_p1, rep_queued_p50;
  Spread p50, p99, p999, max;
  std::vector<std::uint64_t> distribution;  // sorted round trips of the median repetition
  // topic_fanout, per repetition in order: the publisher's rate over the 1-group topic's, over
  // one-queue-per-subscriber's and over the bare rings' (each of the same repetition); the
  // slowest and fastest group's rate. Medians over repetitions: the baselines' publisher
  // rates, the slowest group's rate, and each group's rate.
  std::vector<double> rep_vs_one_group, rep_vs_queues, rep_vs_bare, rep_slowest_group,
      rep_fastest_group;
  Spread vs_one_group, vs_queues, vs_bare, one_group_msgs_per_s, queues_msgs_per_s,
      queues_slowest_msgs_per_s, bare_msgs_per_s, bare_slowest_msgs_per_s, slowest_group;
  // topic_fanout: the publisher's CPU time per message, topic and baselines (medians).
  Spread pub_cpu_ns, subs_cpu_ns, one_group_pub_cpu_ns, queues_pub_cpu_ns, queues_subs_cpu_ns,
      bare_pub_cpu_ns;
  std::vector<double> group_msgs_per_s;  // median per group
  std::uint64_t baseline_count = 0;      // topic_fanout: messages per baseline run (queues)
  std::uint64_t bare_count = 0;          // ... and per bare-ring run
  std::vector<HotSeries> series;         // hot_compare
};

// What the durable scenarios need, and why they are skipped if they are.
struct DurableEnv {
  std::string shmqd;
  bool usable = false;
  std::string why_not;
  std::string data_root;
};

Outcome run_scenario(const Scenario& sc, const Options& o, DurableEnv& env);

// --- calibration, shared by the runners (bench_runs.cpp, bench_topic.cpp) --------------------

inline constexpr auto kSetupTimeout = std::chrono::milliseconds(30'000);
// How long the children of one run may take (pilots get longer: their count is a guess).
std::chrono::milliseconds run_timeout(const Options& o, bool calibrated);
// Where calibration starts, and the whole count in --quick.
std::uint64_t initial_count(const Scenario& sc);
// Pilot runs of `rep` from initial_count(sc), growing until one lasts target / 8; returns
// the count that takes about `target` seconds at the last pilot's rate (clamped).
std::uint64_t calibrate(const Scenario& sc, double target,
                        const std::function<RepResult(std::uint64_t, bool)>& rep);
// The medians and spreads of a scenario's repetitions.
Outcome aggregate(const Scenario& sc, std::vector<RepResult>& rs, std::uint64_t count);
// calibrate() to o.seconds, then o.reps repetitions, aggregated (--quick: one run).
Outcome measure(const Scenario& sc, const Options& o,
                const std::function<RepResult(std::uint64_t, bool)>& rep);
// Round trips not timed at the start of a round-trip run.
std::uint64_t warmup_for(std::uint64_t samples);

// Ping-pong between two processes over `ping` and `pong`, `samples` timed round trips after
// warmup_for(samples) untimed ones (the runner of the <transport>/rt scenarios).
class ShmqChannel;
class TopicChannel;
RepResult roundtrip_over(const Scenario& sc, ShmqChannel& ping, ShmqChannel& pong,
                         std::uint64_t samples, bool calibrated, const Options& o);
RepResult roundtrip_over(const Scenario& sc, TopicChannel& ping, TopicChannel& pong,
                         std::uint64_t samples, bool calibrated, const Options& o);

// The runners of bench_runs.cpp for the transports the hot_compare family compares (`check`
// and `log_bytes` may be empty).
class BareChannel;
class VyukovChannel;
class BoostChannel;
RepResult throughput_over(const Scenario& sc, ShmqChannel& ch, std::uint64_t count,
                          bool calibrated, const Options& o, const std::function<void()>& check,
                          const std::function<std::uint64_t()>& log_bytes);
RepResult throughput_over(const Scenario& sc, BareChannel& ch, std::uint64_t count,
                          bool calibrated, const Options& o);
RepResult throughput_over(const Scenario& sc, VyukovChannel& ch, std::uint64_t count,
                          bool calibrated, const Options& o);
RepResult throughput_over(const Scenario& sc, BoostChannel& ch, std::uint64_t count,
                          bool calibrated, const Options& o);
RepResult roundtrip_over(const Scenario& sc, BareChannel& ping, BareChannel& pong,
                         std::uint64_t samples, bool calibrated, const Options& o);
RepResult roundtrip_over(const Scenario& sc, VyukovChannel& ping, VyukovChannel& pong,
                         std::uint64_t samples, bool calibrated, const Options& o);
// The channel of a scenario without durability (hot_compare's shmqd side is its own).
struct ChannelSpec;
ChannelSpec plain_spec_for(const Scenario& sc, std::size_t capacity);

// The issue-16 family (bench_hot.cpp).
Outcome hot_scenario(const Scenario& sc, const Options& o, DurableEnv& env);
// Adds the hot_compare family and the wait-strategy scenarios to `v`.
void add_hot_scenarios(std::vector<Scenario>& v);

// The topic family (bench_topic.cpp).
inline constexpr int kMaxFanout = 8;  // topic_fanout: groups at most
Outcome topic_fanout_scenario(const Scenario& sc, const Options& o);
Outcome topic_roundtrip_scenario(const Scenario& sc, const Options& o);

// --- shared between the runners and the in-process (moodycamel) baseline --------------------

inline constexpr int kMaxSide = 8;  // producers per scenario (consumers: up to 16)

// Results of a throughput run, in a MAP_SHARED mapping written by the children.
struct TpShared {
  alignas(64) std::atomic<std::uint64_t> received{0};  // all consumers (when more than one)
  alignas(64) std::atomic<std::uint32_t> done{0};
  alignas(64) std::atomic<std::uint64_t> end_ns{0};     // last receive+ack of the run
  std::atomic<std::uint64_t> persisted_ns{0};           // durable: everything on disk
  std::atomic<std::uint64_t> start_ns[kMaxSide] = {};   // each producer after the start signal
  std::atomic<std::uint64_t> count[kMaxSide] = {};      // per producer: messages received
  std::atomic<std::uint64_t> sum[kMaxSide] = {};        // per producer: sum of their seqs
};

// In-process ceiling: one child process with a producer thread and a consumer thread.
RepResult moody_throughput(const Scenario& sc, std::uint64_t count);
RepResult moody_roundtrip(const Scenario& sc, std::uint64_t samples, std::uint64_t warmup);

// Shared by the runners: turns per-producer counts and sums into a verdict and the
// throughput figures.
RepResult finish_throughput(const Scenario& sc, const TpShared& sh, std::uint64_t count,
                            std::uint64_t switches);
std::vector<std::uint64_t> shares_of(std::uint64_t count, int producers);

}  // namespace shmq_bench
