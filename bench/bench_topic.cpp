// shmq-bench: the topic family (issue 15).
//
// shmq/topic/fanout/1xG/64B: one publisher process, G reliable groups of one subscriber
// process each (receive + ack per message). Each repetition runs, the order rotating:
//   topic      the topic with G groups (the scenario's figures);
//   1 group    the same with one group (G > 1): the target is the publisher's rate with G
//              groups over this one, of the same repetition;
//   queues     one shmq queue per subscriber: the publisher sends every message to each of
//              the G queues (G copies, G ack cycles), one consumer process per queue;
//   bare       one bare SPSC ring per subscriber (bench_transports.hpp), the publisher
//              copying every message into each: the practical limit of copying per
//              subscriber (at G = 1, the bare/tp/1x1/64B baseline).
// Each variant is calibrated on its own to about --seconds / 2 per run (the publisher of
// one queue per subscriber at G = 8 is several times slower than the topic's). Every
// subscriber checks every message (size, tags, strictly in publishing order: one publisher,
// each message exactly once).
//
// shmq/topic/rt/64B: ping-pong through two topics of one group each against two queues (the
// runner of <transport>/rt), both in every repetition, the order alternating.
#include <time.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "bench_proc.hpp"
#include "bench_runs.hpp"
#include "bench_topic.hpp"
#include "bench_transports.hpp"

namespace shmq_bench {

namespace {

// CPU time (user + system) of the calling process so far.
std::uint64_t process_cpu_ns() {
  timespec ts{};
  if (::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts) != 0) fail("clock_gettime(CLOCK_PROCESS_CPUTIME_ID) failed");
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<std::uint64_t>(ts.tv_nsec);
}

// Results of one fan-out run, in a MAP_SHARED mapping written by the children.
struct FanShared {
  alignas(64) std::atomic<std::uint64_t> start_ns{0};    // publisher, after the start signal
  alignas(64) std::atomic<std::uint64_t> pub_end_ns{0};  // publisher, its last send returned
  std::atomic<std::uint64_t> pub_cpu_ns{0};  // publisher: CPU time (user + system) meanwhile
  alignas(64) std::atomic<std::uint64_t> end_ns[kMaxFanout] = {};  // subscriber j: last ack
  std::atomic<std::uint64_t> received[kMaxFanout] = {};
  std::atomic<std::uint64_t> cpu_ns[kMaxFanout] = {};  // subscriber j: CPU time from go to end
};

struct FanRun {
  double elapsed_s = 0;       // publisher's start to the last subscriber's last receive
  double pub_msgs_per_s = 0;  // messages published per second (start to last send's return)
  std::vector<double> sub_msgs_per_s;  // per subscriber: start to its last receive
  double pub_cpu_ns_per_msg = 0;       // the publisher's CPU time per message published
  double subs_cpu_ns_per_msg = 0;      // all subscribers' CPU time per message published
  std::uint64_t switches = 0;
};

// One run: `fan.sender()` publishes `count` messages of `size` bytes (tag: sender 0, seq);
// subscriber j (`fan.receiver(j)`) takes them, checking each is the next in order.
template <typename Fan>
FanRun fan_run(const std::string& what, const Fan& fan, int subs, std::size_t size,
               std::uint64_t count, bool calibrated, const Options& o) {
  if (subs < 1 || subs > kMaxFanout) fail("fan-out to " + std::to_string(subs) + " subscribers");
  SharedMap map(sizeof(FanShared));
  auto* sh = new (map.get()) FanShared();
  ProcessGroup g(what);
  for (int j = 0; j < subs; ++j) {
    g.spawn("subscriber " + std::to_string(j), [&, j](ChildIo& io) {
      auto rx = fan.receiver(j);
      std::uint64_t next = 0;
      const auto check = [&](const std::byte* p, std::size_t n) {
        if (n != size) fail("message of " + std::to_string(n) + " bytes, sent " + std::to_string(size));
        const std::uint64_t tag = get_tag(p);
        if (tag != make_tag(0, next))
          fail("subscriber " + std::to_string(j) + ": got tag " + std::to_string(tag) +
               ", expected message " + std::to_string(next) + " (lost, doubled or reordered)");
        if (!trailer_ok(p, n, tag)) fail("message " + std::to_string(next) + " with a torn payload");
        ++next;
      };
      io.ready();
      io.wait_go();
      const std::uint64_t cpu0 = process_cpu_ns();
      while (next < count) rx.receive(check, std::chrono::milliseconds(20));
      sh->end_ns[j].store(now_ns());
      sh->cpu_ns[j].store(process_cpu_ns() - cpu0);
      sh->received[j].store(next);
    });
  }
  g.spawn("publisher", [&](ChildIo& io) {
    auto tx = fan.sender();
    std::vector<std::byte> buf(size, std::byte{0x5a});
    io.ready();
    io.wait_go();
    const std::uint64_t cpu0 = process_cpu_ns();
    sh->start_ns.store(now_ns());
    for (std::uint64_t seq = 0; seq < count; ++seq) {
      put_tag(buf.data(), size, make_tag(0, seq));
      tx.send(buf.data(), size);
    }
    sh->pub_end_ns.store(now_ns());
    sh->pub_cpu_ns.store(process_cpu_ns() - cpu0);
  });
  FanRun r;
  r.switches = g.run(kSetupTimeout, run_timeout(o, calibrated));
  const std::uint64_t start = sh->start_ns.load();
  const std::uint64_t pub_end = sh->pub_end_ns.load();
  if (start == 0 || pub_end <= start) fail(what + ": no valid publisher start/end time");
  r.pub_msgs_per_s = static_cast<double>(count) / (static_cast<double>(pub_end - start) / 1e9);
  r.pub_cpu_ns_per_msg = static_cast<double>(sh->pub_cpu_ns.load()) / static_cast<double>(count);
  std::uint64_t last = pub_end;
  for (int j = 0; j < subs; ++j) {
    if (sh->received[j].load() != count)
      fail(what + ": subscriber " + std::to_string(j) + " received " +
           std::to_string(sh->received[j].load()) + " of " + std::to_string(count));
    const std::uint64_t end = sh->end_ns[j].load();
    if (end <= start) fail(what + ": no valid end time for subscriber " + std::to_string(j));
    r.subs_cpu_ns_per_msg += static_cast<double>(sh->cpu_ns[j].load()) / static_cast<double>(count);
    r.sub_msgs_per_s.push_back(static_cast<double>(count) / (static_cast<double>(end - start) / 1e9));
    last = std::max(last, end);
  }
  r.elapsed_s = static_cast<double>(last - start) / 1e9;
  return r;
}

// The topic: one publisher, subscriber j in group j.
struct TopicFan {
  const TopicChannel& ch;
  TopicChannel::Tx sender() const { return ch.sender(0); }
  TopicChannel::Rx receiver(int j) const { return ch.receiver(j); }
};

// One channel per subscriber: the publisher sends every message to each, in turn.
template <typename Ch>
class PerSubscriber {
 public:
  PerSubscriber(const ChannelSpec& spec, int subs) {
    for (int j = 0; j < subs; ++j) chans_.push_back(std::make_unique<Ch>(spec));
  }

  class Tx {
   public:
    void send(const std::byte* p, std::size_t n) {
      for (typename Ch::Tx& t : txs_) t.send(p, n);
    }

   private:
    friend class PerSubscriber;
    std::vector<typename Ch::Tx> txs_;
  };

  Tx sender() const {
    Tx t;
    t.txs_.reserve(chans_.size());
    for (const auto& c : chans_) t.txs_.push_back(c->sender(0));
    return t;
  }
  typename Ch::Rx receiver(int j) const { return chans_[static_cast<std::size_t>(j)]->receiver(0); }

 private:
  std::vector<std::unique_ptr<Ch>> chans_;
};

double slowest(const std::vector<double>& v) {
  return v.empty() ? 0 : *std::min_element(v.begin(), v.end());
}

std::string count_text_of(std::uint64_t n) {
  return n < 10000 ? std::to_string(n) : si(static_cast<double>(n));
}

std::string ratios_text(const std::vector<double>& v) {
  std::string s;
  for (const double x : v) s += " " + fixed(x, 2) + "x";
  return s;
}

}  // namespace

Outcome topic_fanout_scenario(const Scenario& sc, const Options& o) {
  const int G = sc.groups;
  if (G < 1 || G > kMaxFanout) fail("topic fan-out to " + std::to_string(G) + " groups");
  ChannelSpec spec;
  spec.size = sc.size;
  spec.capacity = capacity_for(sc.size);
  TopicChannel topic(spec, G);
  std::unique_ptr<TopicChannel> one;  // G > 1: the 1-group reference
  if (G > 1) one = std::make_unique<TopicChannel>(spec, 1);
  const PerSubscriber<ShmqChannel> queues(spec, G);
  const PerSubscriber<BareChannel> bare(spec, G);

  enum Variant { kTopic, kOneGroup, kQueues, kBare };
  std::vector<Variant> variants = {kTopic};
  if (G > 1) variants.push_back(kOneGroup);
  variants.push_back(kQueues);
  variants.push_back(kBare);
  const auto run = [&](Variant v, std::uint64_t n, bool calibrated) -> FanRun {
    switch (v) {
      case kTopic: return fan_run(sc.name, TopicFan{topic}, G, sc.size, n, calibrated, o);
      case kOneGroup: return fan_run(sc.name + " (1 group)", TopicFan{*one}, 1, sc.size, n, calibrated, o);
      case kQueues:
        return fan_run(sc.name + " (queue per subscriber)", queues, G, sc.size, n, calibrated, o);
      case kBare: return fan_run(sc.name + " (bare ring per subscriber)", bare, G, sc.size, n, calibrated, o);
    }
    fail("bad variant");
  };

  // Each variant's count: its own pilots (--quick: the initial count for all).
  std::vector<std::uint64_t> counts(4, initial_count(sc));
  if (!o.quick) {
    for (const Variant v : variants)
      counts[v] = calibrate(sc, o.seconds / 2, [&](std::uint64_t n, bool) {
        RepResult r;
        r.elapsed_s = run(v, n, false).elapsed_s;
        return r;
      });
  }

  std::vector<RepResult> rs;
  const int reps = o.quick ? 1 : o.reps;
  for (int rep = 0; rep < reps; ++rep) {
    check_signal();
    FanRun res[4];
    // Rotate the order, so that drift on a shared machine falls on every variant alike.
    for (std::size_t k = 0; k < variants.size(); ++k) {
      const Variant v = variants[(k + static_cast<std::size_t>(rep)) % variants.size()];
      res[v] = run(v, counts[v], !o.quick);
    }
    RepResult r;
    r.elapsed_s = res[kTopic].elapsed_s;
    r.msgs_per_s = res[kTopic].pub_msgs_per_s;
    r.mb_per_s = r.msgs_per_s * static_cast<double>(sc.size) / 1e6;
    r.switches_per_msg =
        static_cast<double>(res[kTopic].switches) / static_cast<double>(counts[kTopic]);
    r.group_msgs_per_s = res[kTopic].sub_msgs_per_s;
    r.pub_cpu_ns_per_msg = res[kTopic].pub_cpu_ns_per_msg;
    r.subs_cpu_ns_per_msg = res[kTopic].subs_cpu_ns_per_msg;
    if (G > 1) {
      r.one_group_msgs_per_s = res[kOneGroup].pub_msgs_per_s;
      r.one_group_pub_cpu_ns_per_msg = res[kOneGroup].pub_cpu_ns_per_msg;
    }
    r.queues_pub_cpu_ns_per_msg = res[kQueues].pub_cpu_ns_per_msg;
    r.queues_subs_cpu_ns_per_msg = res[kQueues].subs_cpu_ns_per_msg;
    r.bare_pub_cpu_ns_per_msg = res[kBare].pub_cpu_ns_per_msg;
    r.queues_msgs_per_s = res[kQueues].pub_msgs_per_s;
    r.queues_slowest_msgs_per_s = slowest(res[kQueues].sub_msgs_per_s);
    r.bare_msgs_per_s = res[kBare].pub_msgs_per_s;
    r.bare_slowest_msgs_per_s = slowest(res[kBare].sub_msgs_per_s);
    rs.push_back(std::move(r));
  }
  Outcome out = aggregate(sc, rs, counts[kTopic]);
  out.baseline_count = counts[kQueues];
  out.bare_count = counts[kBare];
  std::vector<double> one_group, q, qs, b, bs, cpu, subs_cpu, cpu1, cpuq, subs_cpuq, cpub;
  std::vector<std::vector<double>> per_group(static_cast<std::size_t>(G));
  for (const RepResult& r : rs) {
    if (r.one_group_msgs_per_s > 0) {
      one_group.push_back(r.one_group_msgs_per_s);
      out.rep_vs_one_group.push_back(r.msgs_per_s / r.one_group_msgs_per_s);
    }
    cpu.push_back(r.pub_cpu_ns_per_msg);
    subs_cpu.push_back(r.subs_cpu_ns_per_msg);
    if (r.one_group_pub_cpu_ns_per_msg >= 0) cpu1.push_back(r.one_group_pub_cpu_ns_per_msg);
    cpuq.push_back(r.queues_pub_cpu_ns_per_msg);
    subs_cpuq.push_back(r.queues_subs_cpu_ns_per_msg);
    cpub.push_back(r.bare_pub_cpu_ns_per_msg);
    q.push_back(r.queues_msgs_per_s);
    qs.push_back(r.queues_slowest_msgs_per_s);
    b.push_back(r.bare_msgs_per_s);
    bs.push_back(r.bare_slowest_msgs_per_s);
    out.rep_vs_queues.push_back(r.msgs_per_s / r.queues_msgs_per_s);
    out.rep_vs_bare.push_back(r.msgs_per_s / r.bare_msgs_per_s);
    out.rep_slowest_group.push_back(slowest(r.group_msgs_per_s));
    out.rep_fastest_group.push_back(*std::max_element(r.group_msgs_per_s.begin(), r.group_msgs_per_s.end()));
    for (std::size_t j = 0; j < r.group_msgs_per_s.size() && j < per_group.size(); ++j)
      per_group[j].push_back(r.group_msgs_per_s[j]);
  }
  out.vs_one_group = spread_of(out.rep_vs_one_group);
  out.vs_queues = spread_of(out.rep_vs_queues);
  out.vs_bare = spread_of(out.rep_vs_bare);
  out.one_group_msgs_per_s = spread_of(one_group);
  out.queues_msgs_per_s = spread_of(q);
  out.queues_slowest_msgs_per_s = spread_of(qs);
  out.bare_msgs_per_s = spread_of(b);
  out.bare_slowest_msgs_per_s = spread_of(bs);
  out.slowest_group = spread_of(out.rep_slowest_group);
  out.pub_cpu_ns = spread_of(cpu);
  out.subs_cpu_ns = spread_of(subs_cpu);
  out.one_group_pub_cpu_ns = spread_of(cpu1);
  out.queues_pub_cpu_ns = spread_of(cpuq);
  out.queues_subs_cpu_ns = spread_of(subs_cpuq);
  out.bare_pub_cpu_ns = spread_of(cpub);
  for (const auto& v : per_group) out.group_msgs_per_s.push_back(spread_of(v).median);

  std::string d = "per group msgs/s (median):";
  for (std::size_t j = 0; j < out.group_msgs_per_s.size(); ++j)
    d += " g" + std::to_string(j) + " " + si(out.group_msgs_per_s[j]);
  d += "; same repetition, publisher msgs/s:";
  if (G > 1) d += " 1 group " + si(out.one_group_msgs_per_s.median) + ",";
  d += " queue per subscriber " + si(out.queues_msgs_per_s.median) + " (" +
       count_text_of(out.baseline_count) + " msgs/rep), bare ring per subscriber " +
       si(out.bare_msgs_per_s.median) + " (" + count_text_of(out.bare_count) + " msgs/rep)";
  d += "; per repetition, publisher msgs/s:";
  if (G > 1) d += " / 1 group" + ratios_text(out.rep_vs_one_group) + ",";
  d += " / queue per subscriber" + ratios_text(out.rep_vs_queues) + ", / bare ring per subscriber" +
       ratios_text(out.rep_vs_bare);
  d += "; CPU per message (median): subscribers together " + fixed(out.subs_cpu_ns.median, 0) +
       " ns, publisher " + fixed(out.pub_cpu_ns.median, 0) + " ns";
  if (G > 1) d += ", 1 group " + fixed(out.one_group_pub_cpu_ns.median, 0) + " ns";
  d += ", queue per subscriber " + fixed(out.queues_pub_cpu_ns.median, 0) + " ns (its consumers together " +
       fixed(out.queues_subs_cpu_ns.median, 0) + " ns), bare ring per subscriber " +
       fixed(out.bare_pub_cpu_ns.median, 0) + " ns";
  out.detail = d;
  return out;
}

Outcome topic_roundtrip_scenario(const Scenario& sc, const Options& o) {
  ChannelSpec spec;
  spec.size = sc.size;
  spec.capacity = capacity_for(sc.size);
  TopicChannel tping(spec, 1);
  TopicChannel tpong(spec, 1);
  ShmqChannel qping(spec);
  ShmqChannel qpong(spec);
  int rep = 0;
  // Pilots calibrate on the topic alone; every repetition (and --quick) runs both.
  Outcome out = measure(sc, o, [&](std::uint64_t n, bool calibrated) {
    if (!calibrated && !o.quick) return roundtrip_over(sc, tping, tpong, n, false, o);
    const bool queue_first = rep++ % 2 == 0;
    RepResult q;
    if (queue_first) q = roundtrip_over(sc, qping, qpong, n, calibrated, o);
    RepResult r = roundtrip_over(sc, tping, tpong, n, calibrated, o);
    if (!queue_first) q = roundtrip_over(sc, qping, qpong, n, calibrated, o);
    r.baseline_lat = std::move(q.lat);
    return r;
  });
  out.detail = "through two queues, same run: p50 " + human_ns(out.base_p50.median) + " p99 " +
               human_ns(out.base_p99.median) + " p99.9 " + human_ns(out.base_p999.median) +
               " max " + human_ns(out.base_max.median) + "; per repetition, topic / queue: p50" +
               ratios_text(out.rep_p50_vs_baseline) + ", p99" + ratios_text(out.rep_p99_vs_baseline);
  return out;
}

}  // namespace shmq_bench
