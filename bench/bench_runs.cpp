// shmq-bench: the runners. Each repetition forks fresh processes; a scenario's named queues
// (and its shmqd) live across its repetitions.
#include "bench_runs.hpp"

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <type_traits>

#include "bench_proc.hpp"
#include "bench_topic.hpp"
#include "bench_transports.hpp"

namespace shmq_bench {

const char* to_string(Kind k) {
  switch (k) {
    case Kind::throughput: return "throughput";
    case Kind::roundtrip: return "roundtrip";
    case Kind::disk_dd: return "disk";
    case Kind::disk_fsync: return "disk";
    case Kind::persist: return "persist";
    case Kind::sync_senders: return "sync_senders";
    case Kind::checksum_cost: return "checksum_cost";
    case Kind::dedup_cost: return "dedup_cost";
    case Kind::priority_cost: return "priority_cost";
    case Kind::priority_latency: return "priority_latency";
    case Kind::properties_cost: return "properties_cost";
    case Kind::topic_fanout: return "topic_fanout";
    case Kind::topic_roundtrip: return "topic_roundtrip";
    case Kind::hot_compare: return "hot_compare";
  }
  return "?";
}

const char* to_string(Transport t) {
  switch (t) {
    case Transport::shmq: return "shmq";
    case Transport::bare: return "bare";
    case Transport::boost: return "boost";
    case Transport::pipe: return "pipe";
    case Transport::unix_socket: return "unix";
    case Transport::moodycamel: return "moodycamel";
    case Transport::disk: return "disk";
    case Transport::vyukov: return "vyukov";
  }
  return "?";
}

// --- the scenario list ------------------------------------------------------------------------

namespace {

constexpr std::size_t kSizes[] = {64, 1024, 4096, 65536};
constexpr std::uint32_t kPriorityMax = 15;
constexpr std::uint32_t kDedupWindow = 100'000;  // dedup_cost  // priority scenarios: 16 levels

std::string durability_name(shmq::Durability d) { return std::string(shmq::to_string(d)); }

Scenario tp(Transport t, int p, int c, std::size_t size, bool batch = false,
            shmq::Durability d = shmq::Durability::none) {
  Scenario s;
  s.kind = Kind::throughput;
  s.transport = t;
  s.producers = p;
  s.consumers = c;
  s.size = size;
  s.batch = batch;
  s.durability = d;
  s.threads = t == Transport::moodycamel;
  s.name = std::string(to_string(t)) + "/tp/" + std::to_string(p) + "x" + std::to_string(c) + "/" +
           human_bytes(size);
  if (t == Transport::shmq) s.name += std::string(batch ? "/batch/" : "/ack/") + durability_name(d);
  return s;
}

Scenario rt(Transport t, std::size_t size, shmq::Durability d = shmq::Durability::none) {
  Scenario s;
  s.kind = Kind::roundtrip;
  s.transport = t;
  s.size = size;
  s.durability = d;
  s.threads = t == Transport::moodycamel;
  s.name = std::string(to_string(t)) + "/rt/" + human_bytes(size);
  if (t == Transport::shmq) s.name += "/" + durability_name(d);
  return s;
}

}  // namespace

std::vector<Scenario> all_scenarios() {
  using D = shmq::Durability;
  using T = Transport;
  std::vector<Scenario> v;
  // 1 x 1 throughput: shmq beside every baseline.
  for (const std::size_t size : kSizes) {
    for (const T t : {T::bare, T::moodycamel, T::pipe, T::unix_socket, T::boost})
      v.push_back(tp(t, 1, 1, size));
    v.push_back(tp(T::shmq, 1, 1, size, false));
    v.push_back(tp(T::shmq, 1, 1, size, true));
    // What the copied, checked receive (the default) costs: the same with zero-copy.
    Scenario z = tp(T::shmq, 1, 1, size, false);
    z.zero_copy = true;
    z.name += "/zero-copy";
    v.push_back(z);
  }
  // More processes than cores (on 2 cores): Boost is the only baseline that is MPMC.
  for (const int n : {2, 4})
    for (const std::size_t size : kSizes) {
      v.push_back(tp(T::boost, n, n, size));
      v.push_back(tp(T::shmq, n, n, size, false));
      v.push_back(tp(T::shmq, n, n, size, true));
    }
  // The Vyukov MPMC ring (issue 16's baseline): 1x1 at 64 B and 1 KiB, 4x4, round trip.
  v.push_back(tp(T::vyukov, 1, 1, 64));
  v.push_back(tp(T::vyukov, 1, 1, 1024));
  v.push_back(tp(T::vyukov, 4, 4, 64));
  // Round trips.
  for (const std::size_t size : kSizes) {
    for (const T t : {T::bare, T::moodycamel, T::pipe, T::unix_socket, T::boost})
      v.push_back(rt(t, size));
    v.push_back(rt(T::shmq, size));
    Scenario z = rt(T::shmq, size);
    z.zero_copy = true;
    z.name += "/zero-copy";
    v.push_back(z);
  }
  v.push_back(rt(T::vyukov, 64));
  // Round trip with each wait strategy on both sides (issue 16): shmq/rt/64B/<strategy>.
  for (const Wait w : {Wait::futex, Wait::busy_spin, Wait::spin_yield, Wait::spin_sleep}) {
    Scenario r = rt(T::shmq, 64);
    r.consumer_wait = r.producer_wait = w;
    r.name = "shmq/rt/64B/" + std::string(to_string(w));
    v.push_back(r);
  }
  // Durability: the disk's limits, then shmq with shmqd.
  Scenario dd;
  dd.name = "disk/dd";
  dd.kind = Kind::disk_dd;
  dd.transport = T::disk;
  dd.size = 1 << 20;
  v.push_back(dd);
  Scenario fs;
  fs.name = "disk/fsync-per-msg";
  fs.kind = Kind::disk_fsync;
  fs.transport = T::disk;
  fs.size = 64;
  v.push_back(fs);
  for (const auto& [batch, d] : {std::pair{false, D::async}, std::pair{true, D::async},
                                  std::pair{true, D::sync}}) {
    Scenario p;
    p.kind = Kind::persist;
    p.transport = T::shmq;
    p.size = 4096;
    p.consumers = 0;
    p.batch = batch;
    p.durability = d;
    p.name = std::string("shmq/persist/4KiB/") + (batch ? "batch/" : "send/") + durability_name(d);
    v.push_back(p);
  }
  // Group commit: single sync sends from 1, 4, 8 processes, no consumer.
  for (const int n : {1, 4, 8}) {
    Scenario g;
    g.kind = Kind::sync_senders;
    g.transport = T::shmq;
    g.producers = n;
    g.consumers = 0;
    g.size = 64;
    g.durability = D::sync;
    g.name = "shmq/sync/" + std::to_string(n) + "x0/64B";
    v.push_back(g);
  }
  v.push_back(tp(T::shmq, 8, 1, 64, false, D::sync));
  for (const D d : {D::async, D::sync})
    for (const int n : {1, 2, 4})
      for (const std::size_t size : kSizes)
        for (const bool batch : {false, true}) v.push_back(tp(T::shmq, n, n, size, batch, d));
  for (const D d : {D::async, D::sync})
    for (const std::size_t size : kSizes) v.push_back(rt(T::shmq, size, d));
  // What QueueOptions::checksum costs (issue 12): 1x1, ack per message, with and without.
  for (const std::size_t size : {std::size_t{64}, std::size_t{4096}}) {
    Scenario c = tp(T::shmq, 1, 1, size);
    c.kind = Kind::checksum_cost;
    c.checksum = true;
    c.name = "shmq/checksum/1x1/" + human_bytes(size) + "/ack";
    v.push_back(c);
  }
  // What a dedup window of 100,000 ids costs (issue 14): 1x1 64 B, ack per message, each
  // message with an id of its own, against plain sends to a queue without.
  {
    Scenario c = tp(T::shmq, 1, 1, 64);
    c.kind = Kind::dedup_cost;
    c.dedup_window = kDedupWindow;
    c.name = "shmq/dedup/1x1/64B/ack/window-100k";
    v.push_back(c);
  }
  // What priorities cost (issue 13): 1x1 64 B, ack per message, a queue with 16 levels
  // (max_priority 15) whose producer uses 1, 4 or 16 of them, against a queue without.
  for (const std::uint32_t levels : {1u, 4u, 16u}) {
    Scenario c = tp(T::shmq, 1, 1, 64);
    c.kind = Kind::priority_cost;
    c.max_priority = kPriorityMax;
    c.priority_levels = levels;
    c.name = "shmq/priority/1x1/64B/ack/levels-" + std::to_string(levels);
    v.push_back(c);
  }
  // What message properties cost (issue 14): 1x1 64 B, ack per message, a few and many.
  for (const std::uint32_t kind : {1u, 2u}) {
    Scenario c = tp(T::shmq, 1, 1, 64);
    c.kind = Kind::properties_cost;
    c.properties = kind;
    c.name = std::string("shmq/properties/1x1/64B/ack/") + (kind == 1 ? "few" : "many");
    v.push_back(c);
  }
  // A top-priority probe behind a backlog of 100,000 priority-0 messages.
  {
    Scenario l;
    l.kind = Kind::priority_latency;
    l.transport = T::shmq;
    l.size = 64;
    l.max_priority = kPriorityMax;
    l.name = "shmq/priority/latency/64B";
    v.push_back(l);
  }
  // Topics (issue 15): 1 publisher -> 1, 2, 4, 8 reliable groups of one subscriber each,
  // against one queue per subscriber and a bare ring per subscriber; round trip through
  // topics against queues.
  for (const int g : {1, 2, 4, 8}) {
    Scenario f;
    f.kind = Kind::topic_fanout;
    f.transport = T::shmq;
    f.producers = 1;
    f.consumers = g;
    f.groups = g;
    f.size = 64;
    f.name = "shmq/topic/fanout/1x" + std::to_string(g) + "/64B";
    v.push_back(f);
  }
  {
    Scenario r;
    r.kind = Kind::topic_roundtrip;
    r.transport = T::shmq;
    r.size = 64;
    r.name = "shmq/topic/rt/64B";
    v.push_back(r);
  }
  add_hot_scenarios(v);
  return v;
}

// --- calibration and repetitions ------------------------------------------------------------------

namespace {

// persist scenarios: a ring that holds a whole run (256 MiB of 4 KiB messages, like dd's file).
constexpr std::uint32_t kPersistSlots = 65536;

bool durable(const Scenario& sc) { return sc.durability != shmq::Durability::none; }

}  // namespace

// Where calibration starts, and the whole count in --quick.
std::uint64_t initial_count(const Scenario& sc) {
  const std::uint64_t p = static_cast<std::uint64_t>(sc.producers);
  if (sc.kind == Kind::persist) return 4096;  // 16 MiB of 4 KiB messages
  if (sc.kind == Kind::sync_senders) return 32 * p;
  if (sc.kind == Kind::priority_latency) return 200;  // probes
  if (sc.kind == Kind::roundtrip || sc.kind == Kind::topic_roundtrip) {
    if (sc.durability == shmq::Durability::sync) return 20;
    return sc.size > 4096 ? 500 : 2000;
  }
  if (sc.durability == shmq::Durability::sync) return sc.batch ? kBatch * 4 * p : 16 * p;
  std::uint64_t n = sc.size <= 64 ? 20000 : sc.size <= 1024 ? 10000 : sc.size <= 4096 ? 5000 : 1000;
  if (sc.durability == shmq::Durability::async) n /= 2;
  return n;
}

namespace {

std::uint64_t min_count(const Scenario& sc) {
  if (sc.kind == Kind::persist) return 8192;
  if (sc.kind == Kind::sync_senders) return 64 * static_cast<std::uint64_t>(sc.producers);
  if (sc.kind == Kind::priority_latency) return 2000;
  if (sc.kind == Kind::roundtrip || sc.kind == Kind::topic_roundtrip)
    return sc.durability == shmq::Durability::sync ? 50 : 200;
  return static_cast<std::uint64_t>(std::max(64, static_cast<int>(kBatch)) * sc.producers);
}

std::uint64_t max_count(const Scenario& sc) {
  if (sc.kind == Kind::persist) return kPersistSlots;  // the ring holds the whole run
  if (sc.kind == Kind::sync_senders) return kPersistSlots - 1024;  // never fills the ring
  if (sc.kind == Kind::roundtrip || sc.kind == Kind::topic_roundtrip)
    return 2'000'000;  // 16 MB of samples
  // The baseline (no backlog) runs the same count, 3-10x slower (its consumer sleeps).
  if (sc.kind == Kind::priority_latency) return 100'000;
  return 400'000'000;
}

}  // namespace

std::chrono::milliseconds run_timeout(const Options& o, bool calibrated) {
  if (!calibrated) return std::chrono::milliseconds(120'000);
  return std::chrono::milliseconds(60'000 + static_cast<std::int64_t>(o.seconds * 20'000));
}

Outcome aggregate(const Scenario& sc, std::vector<RepResult>& rs, std::uint64_t count) {
  Outcome out;
  out.sc = &sc;
  out.reps = static_cast<int>(rs.size());
  out.count = count;
  std::vector<double> msgs, mb, pmb, lmb, sw, p50, p99, p999, mx, base;
  for (const RepResult& r : rs) {
    msgs.push_back(r.msgs_per_s);
    mb.push_back(r.mb_per_s);
    if (r.persisted_mb_per_s >= 0) pmb.push_back(r.persisted_mb_per_s);
    if (r.log_mb_per_s >= 0) lmb.push_back(r.log_mb_per_s);
    sw.push_back(r.switches_per_msg);
    if (r.fsync_per_s > 0) out.rep_vs_fsync.push_back(r.msgs_per_s / r.fsync_per_s);
    if (r.baseline_msgs_per_s > 0) {
      out.rep_vs_baseline.push_back(r.msgs_per_s / r.baseline_msgs_per_s);
      base.push_back(r.baseline_msgs_per_s);
    }
    if (r.msgs_per_sync >= 0) {
      out.rep_msgs_per_sync.push_back(r.msgs_per_sync);
      out.rep_group_waits.push_back(r.group_waits);
      out.rep_group_wait_timeouts.push_back(r.group_wait_timeouts);
      out.rep_sync_busy.push_back(r.sync_busy);
    }
    if (!r.lat.empty()) {
      p50.push_back(static_cast<double>(percentile(r.lat, 0.50)));
      p99.push_back(static_cast<double>(percentile(r.lat, 0.99)));
      p999.push_back(static_cast<double>(percentile(r.lat, 0.999)));
      mx.push_back(static_cast<double>(r.lat.back()));
    }
  }
  const bool latency_kind = sc.kind == Kind::roundtrip || sc.kind == Kind::priority_latency ||
                            sc.kind == Kind::topic_roundtrip;
  if (!latency_kind) {
    out.msgs_per_s = spread_of(msgs);
    out.mb_per_s = spread_of(mb);
    out.switches_per_msg = spread_of(sw);
    out.persisted_mb_per_s = spread_of(pmb);
    out.log_mb_per_s = spread_of(lmb);
    out.vs_fsync = spread_of(out.rep_vs_fsync);
    out.msgs_per_sync = spread_of(out.rep_msgs_per_sync);
    out.vs_baseline = spread_of(out.rep_vs_baseline);
    out.baseline_msgs_per_s = spread_of(base);
  } else {
    out.p50 = spread_of(p50);
    out.p99 = spread_of(p99);
    out.p999 = spread_of(p999);
    out.max = spread_of(mx);
    out.switches_per_msg = spread_of(sw);
    if (sc.kind == Kind::priority_latency || sc.kind == Kind::topic_roundtrip) {
      std::vector<double> b50, b99, b999, bmx;
      for (const RepResult& r : rs) {
        if (r.baseline_lat.empty() || r.lat.empty()) continue;
        const auto a50 = static_cast<double>(percentile(r.lat, 0.50));
        const auto a99 = static_cast<double>(percentile(r.lat, 0.99));
        b50.push_back(static_cast<double>(percentile(r.baseline_lat, 0.50)));
        b99.push_back(static_cast<double>(percentile(r.baseline_lat, 0.99)));
        b999.push_back(static_cast<double>(percentile(r.baseline_lat, 0.999)));
        bmx.push_back(static_cast<double>(r.baseline_lat.back()));
        out.rep_p50_vs_baseline.push_back(a50 / std::max(1.0, b50.back()));
        out.rep_p99_vs_baseline.push_back(a99 / std::max(1.0, b99.back()));
      }
      for (const RepResult& r : rs) {
        if (!r.overtaken.empty()) out.rep_overtaken_max.push_back(r.overtaken.back());
        if (!r.queued.empty()) {
          out.rep_queued_min.push_back(r.queued.front());
          out.rep_queued_p1.push_back(percentile(r.queued, 0.01));
          out.rep_queued_p50.push_back(percentile(r.queued, 0.50));
        }
      }
      out.base_p50 = spread_of(b50);
      out.base_p99 = spread_of(b99);
      out.base_p999 = spread_of(b999);
      out.base_max = spread_of(bmx);
    }
    // The distribution of the repetition with the median p50.
    std::vector<std::size_t> idx(rs.size());
    for (std::size_t i = 0; i < idx.size(); ++i) idx[i] = i;
    std::sort(idx.begin(), idx.end(), [&](std::size_t a, std::size_t b) {
      return percentile(rs[a].lat, 0.5) < percentile(rs[b].lat, 0.5);
    });
    if (!idx.empty()) out.distribution = std::move(rs[idx[idx.size() / 2]].lat);
  }
  return out;
}

std::uint64_t calibrate(const Scenario& sc, double target,
                        const std::function<RepResult(std::uint64_t, bool)>& rep) {
  std::uint64_t n = initial_count(sc);
  const double pilot_min = std::max(0.05, target / 8);
  RepResult r = rep(n, false);
  for (int tries = 0; r.elapsed_s < pilot_min && tries < 6; ++tries) {
    const double f = std::clamp(pilot_min * 2 / std::max(r.elapsed_s, 1e-6), 2.0, 20.0);
    n = static_cast<std::uint64_t>(static_cast<double>(n) * f);
    r = rep(n, false);
  }
  const double rate = static_cast<double>(n) / std::max(r.elapsed_s, 1e-9);
  return std::clamp(static_cast<std::uint64_t>(rate * target), min_count(sc), max_count(sc));
}

// Calibrates the count so that one repetition takes about o.seconds (a few pilot runs, which
// also warm up), then runs o.reps repetitions. --quick: one run of the initial count.
Outcome measure(const Scenario& sc, const Options& o,
                const std::function<RepResult(std::uint64_t, bool)>& rep) {
  std::vector<RepResult> rs;
  if (o.quick) {
    const std::uint64_t n = initial_count(sc);
    rs.push_back(rep(n, false));
    return aggregate(sc, rs, n);
  }
  // The disk bandwidth figure gets twice the time: it is compared with dd's 256 MiB.
  const double target = sc.kind == Kind::persist ? 2 * o.seconds : o.seconds;
  const std::uint64_t n = calibrate(sc, target, rep);
  for (int i = 0; i < o.reps; ++i) rs.push_back(rep(n, true));
  return aggregate(sc, rs, n);
}

std::uint64_t warmup_for(std::uint64_t samples) {
  return std::clamp<std::uint64_t>(samples / 10, 5, 20'000);
}

std::vector<std::uint64_t> shares_of(std::uint64_t count, int producers) {
  std::vector<std::uint64_t> s(static_cast<std::size_t>(producers));
  for (int i = 0; i < producers; ++i)
    s[static_cast<std::size_t>(i)] =
        count / static_cast<std::uint64_t>(producers) +
        (static_cast<std::uint64_t>(i) < count % static_cast<std::uint64_t>(producers) ? 1 : 0);
  return s;
}

RepResult finish_throughput(const Scenario& sc, const TpShared& sh, std::uint64_t count,
                            std::uint64_t switches) {
  const auto shares = shares_of(count, sc.producers);
  std::uint64_t start = UINT64_MAX;
  for (int p = 0; p < sc.producers; ++p) {
    const std::uint64_t want = shares[static_cast<std::size_t>(p)];
    const std::uint64_t got = sh.count[p].load();
    if (got != want)
      fail("producer " + std::to_string(p) + ": " + std::to_string(got) + " of its " +
           std::to_string(want) + " messages received");
    // Sum of seqs 0..want-1: a lost message plus a duplicate would have to cancel out.
    const std::uint64_t expect = want == 0 ? 0 : want * (want - 1) / 2;
    if (sh.sum[p].load() != expect)
      fail("producer " + std::to_string(p) + ": checksum of sequence numbers is " +
           std::to_string(sh.sum[p].load()) + ", expected " + std::to_string(expect) +
           " (lost or duplicated messages)");
    if (want > 0) start = std::min(start, sh.start_ns[p].load());
  }
  const std::uint64_t end = sh.end_ns.load();
  if (start == 0 || start == UINT64_MAX || end <= start)
    fail("no valid start/end time (start " + std::to_string(start) + ", end " +
         std::to_string(end) + ")");
  RepResult r;
  r.elapsed_s = static_cast<double>(end - start) / 1e9;
  r.msgs_per_s = static_cast<double>(count) / r.elapsed_s;
  r.mb_per_s = r.msgs_per_s * static_cast<double>(sc.size) / 1e6;
  r.switches_per_msg = static_cast<double>(switches) / static_cast<double>(count);
  r.sent = count;
  if (durable(sc)) {
    const std::uint64_t pn = sh.persisted_ns.load();
    if (pn < start) fail("no persisted time recorded");
    r.persisted_mb_per_s = static_cast<double>(count) * static_cast<double>(sc.size) / 1e6 /
                           (static_cast<double>(pn - start) / 1e9);
  }
  return r;
}

namespace {

// --- throughput ----------------------------------------------------------------------------------

// Checks each message a consumer receives: its size, its tags, its sender and sequence number
// (in order per sender when there is one consumer), and tallies count and sum per sender.
struct Tally {
  // Sends spread round-robin over L > 1 priority levels are received out of send order (a
  // higher level first): then the order is checked per sender within each level (message k
  // went at level k % L).
  Tally(const Scenario& sc, const std::vector<std::uint64_t>& per_sender)
      : size(sc.size), single(sc.consumers == 1), levels(std::max<std::uint32_t>(1, sc.priority_levels)),
        shares(per_sender), next(per_sender.size() * levels, 0), count(per_sender.size(), 0),
        sum(per_sender.size(), 0) {
    for (std::size_t i = 0; i < next.size(); ++i) next[i] = i % levels;
  }

  void operator()(const std::byte* p, std::size_t n) {
    if (n != size) fail("message of " + std::to_string(n) + " bytes, sent " + std::to_string(size));
    const std::uint64_t tag = get_tag(p);
    if (tag == kPoison) {
      poisoned = true;
      return;
    }
    if (!trailer_ok(p, n, tag)) fail("message with a torn payload (tag " + std::to_string(tag) + ")");
    const std::uint64_t sender = tag >> 48;
    const std::uint64_t seq = tag & ((std::uint64_t{1} << 48) - 1);
    if (sender >= shares.size() || seq >= shares[sender])
      fail("message from unknown sender/seq " + std::to_string(sender) + "/" + std::to_string(seq));
    std::uint64_t& want = next[sender * levels + seq % levels];
    if (single && seq != want)
      fail("sender " + std::to_string(sender) + ": got seq " + std::to_string(seq) + ", expected " +
           std::to_string(want) +
           (levels > 1 ? " (level " + std::to_string(seq % levels) + " of " + std::to_string(levels) + ")"
                       : std::string()));
    want = seq + levels;
    ++count[sender];
    sum[sender] += seq;
    ++fresh;
  }

  std::size_t size;
  bool single;
  std::uint32_t levels;  // priority levels the senders use round-robin (1: none)
  const std::vector<std::uint64_t>& shares;
  std::vector<std::uint64_t> next, count, sum;
  std::uint64_t fresh = 0;  // messages since the caller last looked
  bool poisoned = false;
};

// `log_bytes`: what shmqd has written so far (durable scenarios), for its log MB/s.
template <typename Ch>
RepResult throughput_rep(const Scenario& sc, Ch& ch, std::uint64_t count, bool calibrated,
                         const Options& o, const std::function<void()>& check,
                         const std::function<std::uint64_t()>& log_bytes) {
  constexpr bool kPoisonWakes = std::is_same_v<Ch, BoostChannel>;
  const int P = sc.producers;
  const int M = sc.consumers;
  const std::size_t size = sc.size;
  const bool batch = sc.batch;
  const bool is_durable = durable(sc);
  const auto shares = shares_of(count, P);
  SharedMap map(sizeof(TpShared));
  auto* sh = new (map.get()) TpShared();
  // priority_cost (1x1): before the start, the producer sends one message at each level it
  // uses (the queue without priorities: one) and the consumer takes them, so that opening
  // the levels on first use is not timed.
  constexpr bool kShmq = std::is_same_v<Ch, ShmqChannel>;
  const bool warm = kShmq && sc.kind == Kind::priority_cost;
  if (warm && (P != 1 || M != 1)) fail("priority_cost scenarios are 1x1");
  ch.prepare_run();
  ProcessGroup g(sc.name);
  for (int j = 0; j < M; ++j) {
    g.spawn("consumer " + std::to_string(j), [&, j](ChildIo& io) {
      auto rx = ch.receiver(j);
      Tally tally(sc, shares);
      if (warm) {
        const std::uint32_t n = std::max<std::uint32_t>(1, sc.priority_levels);
        for (std::uint32_t w = 0; w < n;) {
          w += static_cast<std::uint32_t>(rx.receive(
              [&](const std::byte* p, std::size_t len) {
                if (len != size || get_tag(p) != make_tag(ShmqChannel::Tx::kWarmSender, w))
                  fail("warm-up message " + std::to_string(w) + " missing or out of order");
              },
              std::chrono::seconds(10)));
        }
      }
      io.ready();
      io.wait_go();
      std::uint64_t mine = 0;
      bool finisher = false;
      for (;;) {
        tally.fresh = 0;
        rx.receive(tally, std::chrono::milliseconds(20));
        if (tally.fresh > 0) {
          if (M == 1) {
            mine += tally.fresh;
            if (mine >= count) {
              sh->end_ns.store(now_ns());
              finisher = true;
              break;
            }
          } else {
            const std::uint64_t total = sh->received.fetch_add(tally.fresh) + tally.fresh;
            if (total > count) fail("more messages received than sent");
            if (total == count) {
              sh->end_ns.store(now_ns());
              sh->done.store(1);
              rx.wake_others(M - 1);
              finisher = true;
              break;
            }
          }
        }
        if (tally.poisoned) break;
        if constexpr (!kPoisonWakes) {
          if (M > 1 && sh->done.load() != 0) break;
        }
      }
      if constexpr (std::is_same_v<Ch, ShmqChannel>) {
        if (finisher && is_durable) sh->persisted_ns.store(rx.wait_persisted(std::chrono::seconds(60)));
      }
      for (int p = 0; p < P; ++p) {
        sh->count[p].fetch_add(tally.count[static_cast<std::size_t>(p)]);
        sh->sum[p].fetch_add(tally.sum[static_cast<std::size_t>(p)]);
      }
    });
  }
  for (int i = 0; i < P; ++i) {
    g.spawn("producer " + std::to_string(i), [&, i](ChildIo& io) {
      auto tx = ch.sender(i);
      const std::uint64_t share = shares[static_cast<std::size_t>(i)];
      const std::size_t k = batch ? kBatch : 1;
      std::vector<std::byte> bufs(k * size, std::byte{0x5a});
      std::vector<shmq::Bytes> spans(k);
      for (std::size_t t = 0; t < k; ++t) spans[t] = shmq::Bytes(bufs.data() + t * size, size);
      if constexpr (kShmq) {
        if (warm) (void)tx.warm_up(size);
      }
      io.ready();
      io.wait_go();
      sh->start_ns[i].store(now_ns());
      const auto me = static_cast<std::uint32_t>(i);
      if (!batch) {
        for (std::uint64_t seq = 0; seq < share; ++seq) {
          put_tag(bufs.data(), size, make_tag(me, seq));
          tx.send(bufs.data(), size);
        }
      } else {
        for (std::uint64_t seq = 0; seq < share;) {
          const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(kBatch, share - seq));
          for (std::size_t t = 0; t < n; ++t) put_tag(bufs.data() + t * size, size, make_tag(me, seq + t));
          tx.send_batch(std::span<const shmq::Bytes>(spans.data(), n));
          seq += n;
        }
      }
    });
  }
  ch.after_fork();
  const std::uint64_t written0 = log_bytes();
  const std::uint64_t switches = g.run(kSetupTimeout, run_timeout(o, calibrated), check);
  const std::uint64_t written1 = log_bytes();
  RepResult r = finish_throughput(sc, *sh, count, switches);
  if (is_durable) {
    std::uint64_t start = UINT64_MAX;
    for (int p = 0; p < P; ++p)
      if (shares[static_cast<std::size_t>(p)] > 0) start = std::min(start, sh->start_ns[p].load());
    const double window = static_cast<double>(sh->persisted_ns.load() - start) / 1e9;
    if (window > 0) r.log_mb_per_s = static_cast<double>(written1 - written0) / 1e6 / window;
  }
  return r;
}

// --- round trip ----------------------------------------------------------------------------------

RepResult finish_roundtrip(std::vector<std::uint64_t> lat, std::uint64_t switches) {
  RepResult r;
  std::uint64_t total = 0;
  for (const std::uint64_t v : lat) total += v;
  r.elapsed_s = static_cast<double>(total) / 1e9;
  std::sort(lat.begin(), lat.end());
  r.switches_per_msg = lat.empty() ? 0 : static_cast<double>(switches) / static_cast<double>(lat.size());
  r.lat = std::move(lat);
  return r;
}

// A sends on `ping`; B receives (and acks) and sends the payload back on `pong`; A receives
// (and acks). A times each round trip after a warm-up.
template <typename Ch>
RepResult roundtrip_rep(const Scenario& sc, Ch& ping, Ch& pong, std::uint64_t samples,
                        bool calibrated, const Options& o, const std::function<void()>& check) {
  const std::size_t size = sc.size;
  const std::uint64_t warmup = warmup_for(samples);
  SharedMap map(sizeof(std::uint64_t) * samples);
  auto* lat = static_cast<std::uint64_t*>(map.get());
  ping.prepare_run();
  pong.prepare_run();
  ProcessGroup g(sc.name);
  g.spawn("pinger", [&](ChildIo& io) {
    auto tx = ping.sender(0);
    auto rx = pong.receiver(0);
    std::vector<std::byte> out(size, std::byte{0x5a});
    io.ready();
    io.wait_go();
    for (std::uint64_t i = 0; i < warmup + samples; ++i) {
      const std::uint64_t tag = make_tag(0, i);
      put_tag(out.data(), size, tag);
      bool ok = false;
      const std::uint64_t t0 = now_ns();
      tx.send(out.data(), size);
      while (rx.receive([&](const std::byte* p, std::size_t n) {
               ok = n == size && get_tag(p) == tag && trailer_ok(p, n, tag);
             }, std::chrono::nanoseconds::max()) == 0) {
      }
      const std::uint64_t t1 = now_ns();
      if (!ok) fail("round trip " + std::to_string(i) + ": wrong pong");
      if (i >= warmup) lat[i - warmup] = t1 - t0;
    }
  });
  g.spawn("echo", [&](ChildIo& io) {
    auto rx = ping.receiver(0);
    auto tx = pong.sender(0);
    io.ready();
    io.wait_go();
    for (std::uint64_t i = 0; i < warmup + samples;) {
      i += rx.receive([&](const std::byte* p, std::size_t n) { tx.send(p, n); },
                      std::chrono::nanoseconds::max());
    }
  });
  ping.after_fork();
  pong.after_fork();
  const std::uint64_t switches = g.run(kSetupTimeout, run_timeout(o, calibrated), check);
  RepResult r = finish_roundtrip(std::vector<std::uint64_t>(lat, lat + samples), switches);
  r.sent = 2 * (warmup + samples);
  return r;
}

// --- scenario fixtures ----------------------------------------------------------------------------

// A durable scenario's surroundings: a temporary dir (data dir + shmqd's log) and shmqd.
struct DurableSide {
  std::optional<TempDir> dir;
  std::optional<Daemon> daemon;
  std::string data_dir;

  void prepare(const Scenario& sc, DurableEnv& env) {
    if (!durable(sc)) return;
    if (!env.usable) throw Skip(env.why_not);
    dir.emplace(env.data_root);
    data_dir = dir->path() + "/data";
  }
  void start(const Scenario& sc, DurableEnv& env, const std::vector<std::string>& queues) {
    if (!durable(sc)) return;
    try {
      daemon.emplace(env.shmqd, data_dir, queues, dir->path() + "/shmqd.log",
                     std::chrono::milliseconds(10'000));
    } catch (const Skip& e) {
      env.usable = false;
      env.why_not = std::string("shmqd failed to start, durability scenarios skipped: ") + e.what();
      throw Skip(env.why_not);
    }
  }
  std::uint64_t sent = 0;  // messages sent through shmqd's queues, pilots included

  std::function<void()> checker() {
    return [this] {
      if (daemon) daemon->check_alive();
    };
  }
  std::function<std::uint64_t()> log_bytes() {
    return [this]() -> std::uint64_t { return daemon ? daemon->written_bytes() : 0; };
  }
  // Stops shmqd; its exit status must be 0 (it flushes and checkpoints on SIGTERM). Returns
  // what it did over the scenario, from its log.
  std::string stop() {
    if (!daemon) return {};
    const int st = daemon->stop();
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
      fail("shmqd " + describe_status(st) + " when stopped: " + daemon->log_tail(3));
    const Daemon::Totals t = daemon->totals();
    if (!t.found) return "shmqd printed no totals";
    std::string d = "shmqd over the scenario (pilots included): " + std::to_string(sent) +
                    " messages sent, " + std::to_string(t.records) + " logged, " +
                    std::to_string(t.acks) + " ack records, " + std::to_string(t.syncs) +
                    " fdatasyncs";
    if (t.syncs > 0)
      d += ": " + fixed(static_cast<double>(t.records) / static_cast<double>(t.syncs), 1) +
           " messages per fdatasync";
    return d;
  }
};

// The channel a scenario runs on: its message size, batching and durability, in the data
// dir of its shmqd when durable.
ChannelSpec spec_for(const Scenario& sc, const DurableSide& side, std::size_t capacity) {
  ChannelSpec spec;
  spec.size = sc.size;
  spec.capacity = capacity;
  spec.batch = sc.batch;
  spec.durability = sc.durability;
  spec.data_dir = side.data_dir;
  spec.checksum = sc.checksum;
  spec.dedup_window = sc.dedup_window;
  spec.zero_copy = sc.zero_copy;
  spec.max_priority = sc.max_priority;
  spec.priority_levels = sc.priority_levels;
  spec.properties = sc.properties;
  spec.consumer_wait = sc.consumer_wait;
  spec.producer_wait = sc.producer_wait;
  return spec;
}

template <typename Ch>
Outcome throughput_scenario(const Scenario& sc, const Options& o, DurableEnv& env) {
  DurableSide side;
  side.prepare(sc, env);
  Ch ch(spec_for(sc, side, capacity_for(sc.size)));
  if constexpr (std::is_same_v<Ch, ShmqChannel>) side.start(sc, env, {ch.name()});
  const auto check = side.checker();
  const auto log_bytes = side.log_bytes();
  Outcome out = measure(sc, o, [&](std::uint64_t n, bool calibrated) {
    RepResult r = throughput_rep(sc, ch, n, calibrated, o, check, log_bytes);
    side.sent += r.sent;
    return r;
  });
  out.detail = side.stop();
  return out;
}

RepResult persist_rep(const Scenario& sc, ShmqChannel& ch, std::uint64_t count, const Options& o,
                      const std::function<void()>& check,
                      const std::function<std::uint64_t()>& log_bytes);

Outcome persist_scenario(const Scenario& sc, const Options& o, DurableEnv& env) {
  DurableSide side;
  side.prepare(sc, env);
  ShmqChannel ch(spec_for(sc, side, kPersistSlots));
  side.start(sc, env, {ch.name()});
  const auto check = side.checker();
  const auto log_bytes = side.log_bytes();
  Outcome out = measure(sc, o, [&](std::uint64_t n, bool) {
    RepResult r = persist_rep(sc, ch, n, o, check, log_bytes);
    side.sent += r.sent;
    return r;
  });
  out.detail = side.stop();
  return out;
}

template <typename Ch>
Outcome roundtrip_scenario(const Scenario& sc, const Options& o, DurableEnv& env) {
  DurableSide side;
  side.prepare(sc, env);
  const ChannelSpec spec = spec_for(sc, side, capacity_for(sc.size));
  Ch ping(spec);
  Ch pong(spec);
  if constexpr (std::is_same_v<Ch, ShmqChannel>) side.start(sc, env, {ping.name(), pong.name()});
  const auto check = side.checker();
  Outcome out = measure(sc, o, [&](std::uint64_t n, bool calibrated) {
    RepResult r = roundtrip_rep(sc, ping, pong, n, calibrated, o, check);
    side.sent += r.sent;
    return r;
  });
  out.detail = side.stop();
  return out;
}

// --- persist bandwidth -------------------------------------------------------------------------------

RepResult persist_rep(const Scenario& sc, ShmqChannel& ch, std::uint64_t count, const Options& o,
                      const std::function<void()>& check,
                      const std::function<std::uint64_t()>& log_bytes) {
  const std::size_t size = sc.size;
  const bool batch = sc.batch;
  SharedMap map(sizeof(TpShared));
  auto* sh = new (map.get()) TpShared();
  const std::uint64_t written0 = log_bytes();
  std::uint64_t switches = 0;
  {
    ProcessGroup g(sc.name);
    g.spawn("producer", [&](ChildIo& io) {
      const shmq::Queue q = take(shmq::Queue::open(ch.name()), "open " + ch.name());
      auto tx = ch.sender(0);
      const std::size_t k = batch ? kBatch : 1;
      std::vector<std::byte> bufs(k * size, std::byte{0x5a});
      std::vector<shmq::Bytes> spans(k);
      for (std::size_t t = 0; t < k; ++t) spans[t] = shmq::Bytes(bufs.data() + t * size, size);
      io.ready();
      io.wait_go();
      sh->start_ns[0].store(now_ns());
      for (std::uint64_t seq = 0; seq < count;) {
        const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(k, count - seq));
        for (std::size_t t = 0; t < n; ++t) put_tag(bufs.data() + t * size, size, make_tag(0, seq + t));
        if (batch) tx.send_batch(std::span<const shmq::Bytes>(spans.data(), n));
        else tx.send(bufs.data(), size);
        seq += n;
      }
      sh->end_ns.store(now_ns());
      sh->persisted_ns.store(ShmqChannel::wait_persisted(q, std::chrono::seconds(120)));
    });
    switches = g.run(kSetupTimeout, run_timeout(o, false), check);
  }
  const std::uint64_t written1 = log_bytes();
  // Drain, untimed: the next repetition starts with an empty ring.
  {
    ProcessGroup g(sc.name + " drain");
    g.spawn("consumer", [&](ChildIo& io) {
      auto rx = ch.receiver(0);
      const std::vector<std::uint64_t> shares = {count};
      Scenario one = sc;
      one.consumers = 1;
      Tally tally(one, shares);
      io.ready();
      io.wait_go();
      while (tally.count[0] < count) {
        if (rx.receive(tally, std::chrono::seconds(10)) == 0)
          fail("drain: nothing received for 10 s after " + std::to_string(tally.count[0]));
      }
      sh->count[0].store(tally.count[0]);
      sh->sum[0].store(tally.sum[0]);
    });
    g.run(kSetupTimeout, run_timeout(o, false), check);
  }
  if (sh->count[0].load() != count || sh->sum[0].load() != count * (count - 1) / 2)
    fail("drain: " + std::to_string(sh->count[0].load()) + " of " + std::to_string(count) +
         " messages, or a wrong checksum");
  const std::uint64_t start = sh->start_ns[0].load();
  const std::uint64_t done = sh->persisted_ns.load();
  if (done <= start) fail("no persisted time recorded");
  RepResult r;
  r.elapsed_s = static_cast<double>(done - start) / 1e9;
  r.msgs_per_s = static_cast<double>(count) / r.elapsed_s;
  r.mb_per_s = r.msgs_per_s * static_cast<double>(size) / 1e6;
  r.persisted_mb_per_s = r.mb_per_s;
  r.log_mb_per_s = static_cast<double>(written1 - written0) / 1e6 / r.elapsed_s;
  r.switches_per_msg = static_cast<double>(switches) / static_cast<double>(count);
  r.sent = count;
  return r;
}

// --- the disk's limits ------------------------------------------------------------------------------

// dd if=/dev/zero of=<file in the data root> bs=1M count=256 conv=fdatasync; the rate is
// computed from the byte count and seconds dd reports.
RepResult dd_rep(const Options& o) {
  TempDir dir(o.data_root);
  const std::string file = dir.path() + "/dd.tmp";
  const int count = o.quick ? 32 : 256;
  const auto [st, text] = run_capture({"dd", "if=/dev/zero", "of=" + file, "bs=1M",
                                       "count=" + std::to_string(count), "conv=fdatasync"},
                                      std::chrono::milliseconds(300'000));
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
    fail("dd " + describe_status(st) + ": " + text.substr(0, 300));
  const auto at = text.find(" copied, ");
  if (at == std::string::npos) fail("cannot parse dd's output: " + text.substr(0, 300));
  const std::size_t line = text.rfind('\n', at);
  const std::string head = text.substr(line == std::string::npos ? 0 : line + 1);
  const double bytes = std::strtod(head.c_str(), nullptr);
  const double secs = std::strtod(text.c_str() + at + 9, nullptr);
  if (bytes <= 0 || secs <= 0) fail("cannot parse dd's output: " + text.substr(0, 300));
  RepResult r;
  r.elapsed_s = secs;
  r.mb_per_s = bytes / 1e6 / secs;
  r.msgs_per_s = static_cast<double>(count) / secs;
  return r;
}

// One process: write(`size` bytes) + fdatasync per message, appending to a new file in
// `dir`, for about `secs`. The 1-fsync-per-message baseline for sync durability. Returns
// messages per second and the seconds it ran.
std::pair<double, double> fsync_loop(const std::string& dir, std::size_t size, double secs,
                                     const std::string& name) {
  const std::string file = dir + "/fsync.tmp";
  struct Out {
    std::uint64_t n;
    std::uint64_t ns;
  };
  SharedMap map(sizeof(Out));
  auto* out = new (map.get()) Out{0, 0};
  ProcessGroup g(name);
  g.spawn("writer", [&](ChildIo& io) {
    const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0) fail("open " + file + ": " + std::strerror(errno));
    std::vector<std::byte> rec(size, std::byte{0x5a});
    io.ready();
    io.wait_go();
    const std::uint64_t t0 = now_ns();
    const auto limit = static_cast<std::uint64_t>(secs * 1e9);
    std::uint64_t n = 0;
    std::uint64_t t = t0;
    while (t - t0 < limit) {
      put_tag(rec.data(), rec.size(), make_tag(0, n));
      write_exact(fd, rec.data(), rec.size());
      if (::fdatasync(fd) != 0) fail(std::string("fdatasync: ") + std::strerror(errno));
      ++n;
      t = now_ns();
    }
    ::close(fd);
    out->n = n;
    out->ns = t - t0;
  });
  g.run(kSetupTimeout, std::chrono::milliseconds(60'000 + static_cast<std::int64_t>(secs * 2000)));
  ::unlink(file.c_str());
  if (out->n == 0 || out->ns == 0) fail("the writer recorded nothing");
  const double elapsed = static_cast<double>(out->ns) / 1e9;
  return {static_cast<double>(out->n) / elapsed, elapsed};
}

RepResult fsync_rep(const Scenario& sc, const Options& o) {
  TempDir dir(o.data_root);
  const auto [rate, elapsed] = fsync_loop(dir.path(), sc.size, o.quick ? 0.1 : o.seconds, sc.name);
  RepResult r;
  r.elapsed_s = elapsed;
  r.msgs_per_s = rate;
  r.mb_per_s = r.msgs_per_s * static_cast<double>(sc.size) / 1e6;
  return r;
}

// --- group commit: sync senders, no consumer ----------------------------------------------------

// One repetition on its own data dir, queue (64 Ki slots: `count` never fills it) and shmqd,
// so that shmqd's totals at its clean stop are this repetition's alone. P processes each
// send count/P single messages; a sync send returns once its message is on disk, so the last
// return is the end. Nothing consumes: every message is logged. The baseline of this
// repetition, the 1-fdatasync-per-message loop on the same disk, runs half before and half
// after (the disk is shared: this brackets the senders).
RepResult sync_senders_rep(const Scenario& sc, const Options& o, DurableEnv& env,
                           std::uint64_t count, bool calibrated) {
  const int P = sc.producers;
  const std::size_t size = sc.size;
  DurableSide side;
  side.prepare(sc, env);
  RepResult r;
  // Pilots only calibrate the count: they skip the baseline.
  const bool baseline = calibrated || o.quick;
  const double half = o.quick ? 0.05 : o.seconds / 4;
  double fsyncs = 0, fsync_s = 0;
  auto run_baseline = [&] {
    const auto [rate, secs] = fsync_loop(side.dir->path(), size, half, sc.name + " baseline");
    fsyncs += rate * secs;
    fsync_s += secs;
  };
  if (baseline) run_baseline();
  ShmqChannel ch(spec_for(sc, side, kPersistSlots));
  side.start(sc, env, {ch.name()});
  const auto shares = shares_of(count, P);
  SharedMap map(sizeof(TpShared));
  auto* sh = new (map.get()) TpShared();
  const std::uint64_t written0 = side.daemon->written_bytes();
  std::uint64_t switches = 0;
  {
    ProcessGroup g(sc.name);
    for (int i = 0; i < P; ++i) {
      g.spawn("sender " + std::to_string(i), [&, i](ChildIo& io) {
        auto tx = ch.sender(i);
        std::vector<std::byte> buf(size, std::byte{0x5a});
        const std::uint64_t share = shares[static_cast<std::size_t>(i)];
        io.ready();
        io.wait_go();
        sh->start_ns[i].store(now_ns());
        for (std::uint64_t seq = 0; seq < share; ++seq) {
          put_tag(buf.data(), size, make_tag(static_cast<std::uint32_t>(i), seq));
          tx.send(buf.data(), size);  // returns once confirmed on disk
        }
        const std::uint64_t t = now_ns();
        std::uint64_t end = sh->end_ns.load();
        while (end < t && !sh->end_ns.compare_exchange_weak(end, t)) {
        }
        sh->count[i].store(share);
      });
    }
    switches = g.run(kSetupTimeout, run_timeout(o, calibrated), side.checker());
  }
  const std::uint64_t written1 = side.daemon->written_bytes();
  const int st = side.daemon->stop();
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
    fail("shmqd " + describe_status(st) + " when stopped: " + side.daemon->log_tail(3));
  const Daemon::Totals t = side.daemon->totals();
  if (!t.found) fail("shmqd printed no totals");
  if (t.records != count || t.syncs == 0)
    fail("shmqd logged " + std::to_string(t.records) + " of " + std::to_string(count) +
         " messages with " + std::to_string(t.syncs) + " fdatasyncs");
  std::uint64_t start = UINT64_MAX;
  for (int p = 0; p < P; ++p) {
    if (sh->count[p].load() != shares[static_cast<std::size_t>(p)])
      fail("sender " + std::to_string(p) + " did not finish");
    if (shares[static_cast<std::size_t>(p)] > 0) start = std::min(start, sh->start_ns[p].load());
  }
  const std::uint64_t end = sh->end_ns.load();
  if (start == UINT64_MAX || end <= start) fail("no valid start/end time");
  if (baseline) {
    run_baseline();
    r.fsync_per_s = fsyncs / fsync_s;
  }
  r.group_waits = t.group_waits;
  r.group_wait_timeouts = t.group_wait_timeouts;
  r.sync_busy = t.sync_s / (static_cast<double>(end - start) / 1e9);
  r.elapsed_s = static_cast<double>(end - start) / 1e9;
  r.msgs_per_s = static_cast<double>(count) / r.elapsed_s;
  r.mb_per_s = r.msgs_per_s * static_cast<double>(size) / 1e6;
  r.persisted_mb_per_s = r.mb_per_s;
  r.log_mb_per_s = static_cast<double>(written1 - written0) / 1e6 / r.elapsed_s;
  r.switches_per_msg = static_cast<double>(switches) / static_cast<double>(count);
  r.msgs_per_sync = static_cast<double>(t.records) / static_cast<double>(t.syncs);
  r.sent = count;
  return r;
}

Outcome sync_senders_scenario(const Scenario& sc, const Options& o, DurableEnv& env) {
  Outcome out = measure(sc, o, [&](std::uint64_t n, bool calibrated) {
    return sync_senders_rep(sc, o, env, n, calibrated);
  });
  std::string d = "per repetition: msgs/s / 1-fsync-per-msg loop of the same repetition =";
  for (const double v : out.rep_vs_fsync) d += " " + fixed(v, 2) + "x";
  d += "; messages per fdatasync =";
  for (const double v : out.rep_msgs_per_sync) d += " " + fixed(v, 2);
  d += "; shmqd's waits for more senders (ended at the bound) =";
  for (std::size_t i = 0; i < out.rep_group_waits.size(); ++i)
    d += " " + std::to_string(out.rep_group_waits[i]) + " (" +
         std::to_string(out.rep_group_wait_timeouts[i]) + ")";
  d += "; share of the time shmqd spent in fdatasync =";
  for (const double v : out.rep_sync_busy) d += " " + fixed(100 * v, 0) + "%";
  out.detail = d;
  return out;
}

// What a queue option costs: `sc` on its queue against `plain_sc` (the same without the
// option) on another. Both queues live across the scenario; each repetition (pilots: `sc`
// only) runs the same count through each, the order alternating, so that drift on a shared
// machine falls on both sides alike. checksum_cost, dedup_cost, priority_cost and
// properties_cost. `slot_extra`: bytes added to both queues' slots (the same geometry on
// both sides).
Outcome cost_scenario(const Scenario& sc, const Scenario& plain_sc, const Options& o,
                      std::size_t slot_extra = 0) {
  DurableSide side;
  ChannelSpec with_spec = spec_for(sc, side, capacity_for(sc.size));
  ChannelSpec plain_spec = spec_for(plain_sc, side, capacity_for(sc.size));
  with_spec.slot_extra = plain_spec.slot_extra = slot_extra;
  ShmqChannel with(with_spec);
  ShmqChannel without(plain_spec);
  const auto check = side.checker();
  const auto log_bytes = side.log_bytes();
  int rep = 0;
  Outcome out = measure(sc, o, [&](std::uint64_t n, bool calibrated) {
    if (!calibrated && !o.quick) return throughput_rep(sc, with, n, false, o, check, log_bytes);
    const bool plain_first = rep++ % 2 == 0;
    RepResult plain, r;
    if (plain_first) plain = throughput_rep(plain_sc, without, n, calibrated, o, check, log_bytes);
    r = throughput_rep(sc, with, n, calibrated, o, check, log_bytes);
    if (!plain_first) plain = throughput_rep(plain_sc, without, n, calibrated, o, check, log_bytes);
    r.baseline_msgs_per_s = plain.msgs_per_s;
    return r;
  });
  return out;
}

std::string cost_detail(const Outcome& out, const std::string& with, const std::string& without) {
  std::string d = "per repetition: msgs/s " + with + " / " + without +
                  " (same repetition) =";
  for (const double v : out.rep_vs_baseline) d += " " + fixed(v, 3) + "x";
  if (out.baseline_msgs_per_s.valid)
    d += "; " + without + ": " + si(out.baseline_msgs_per_s.median) + " msgs/s [" +
         si(out.baseline_msgs_per_s.min) + ".." + si(out.baseline_msgs_per_s.max) + "]";
  return d;
}

Outcome checksum_cost_scenario(const Scenario& sc, const Options& o) {
  Scenario plain_sc = sc;
  plain_sc.checksum = false;
  Outcome out = cost_scenario(sc, plain_sc, o);
  out.detail = cost_detail(out, "with checksum", "without");
  return out;
}

Outcome dedup_cost_scenario(const Scenario& sc, const Options& o) {
  Scenario plain_sc = sc;
  plain_sc.dedup_window = 0;
  Outcome out = cost_scenario(sc, plain_sc, o);
  out.detail = cost_detail(out, "with a 100k-id window, an id per message", "without");
  return out;
}

// Every message with properties against none, on queues of the same geometry (slots big
// enough for a message and its block, on both sides: the figure is the properties' own cost,
// not a bigger slot's).
Outcome properties_cost_scenario(const Scenario& sc, const Options& o) {
  Scenario plain_sc = sc;
  plain_sc.properties = 0;
  plain_sc.name = sc.name + " (no properties)";
  Outcome out = cost_scenario(sc, plain_sc, o, bench_properties_size(sc.properties));
  out.detail = cost_detail(out,
                           std::string("with ") + (sc.properties == 1 ? "a few" : "many") +
                               " properties (" + std::to_string(bench_properties_size(sc.properties)) +
                               "-byte block)",
                           "without");
  return out;
}

// The queue with 16 levels, the producer sending round-robin over `priority_levels` of them,
// against a queue without priorities (plain send) of the same geometry.
Outcome priority_cost_scenario(const Scenario& sc, const Options& o) {
  Scenario plain_sc = sc;
  plain_sc.max_priority = 0;
  plain_sc.priority_levels = 0;
  plain_sc.name = sc.name + " (no priorities)";
  Outcome out = cost_scenario(sc, plain_sc, o);
  out.detail = cost_detail(out,
                           "with " + std::to_string(sc.priority_levels) + " of " +
                               std::to_string(sc.max_priority + 1) + " levels",
                           "without priorities");
  return out;
}

// --- a top-priority probe behind a backlog -------------------------------------------------------

// The queue of priority_latency: 16 levels of 131,072 slots of 128 bytes; behind the probes,
// 100,000 priority-0 messages, kept topped up by the producer while the consumer drains them.
constexpr std::uint64_t kBacklog = 100'000;
constexpr std::uint32_t kBacklogSlots = 131072;
constexpr std::uint32_t kBacklogSlotSize = 128;
constexpr std::uint64_t kProbeWaitNs = 10'000'000'000;  // a probe not received by then fails
constexpr std::uint64_t kTopUp = 32 * kBatch;  // priority-0 messages sent before a probe, at most

struct ProbeShared {
  alignas(64) std::atomic<std::uint64_t> bulk_sent{0};        // producer: priority-0 sent
  alignas(64) std::atomic<std::uint64_t> bulk_received{0};    // consumer: priority-0 taken+acked
  alignas(64) std::atomic<std::uint64_t> probes_received{0};  // consumer: probes taken+acked
  alignas(64) std::atomic<std::uint32_t> stop{0};  // producer: every probe was received
  std::atomic<std::uint64_t> start_ns{0};
  std::atomic<std::uint64_t> end_ns{0};
};

struct ProbePhase {
  std::vector<std::uint64_t> lat;        // sorted, warm-up excluded
  std::vector<std::uint64_t> overtaken;  // sorted (backlog only)
  std::vector<std::uint64_t> queued;     // sorted (backlog only)
  double elapsed_s = 0;
  std::uint64_t switches = 0;
};

// One phase: `total` probes (the first `warmup` not kept), each sent at the top priority
// once the previous one was received, carrying its CLOCK_MONOTONIC send time; the consumer
// takes every message in order of priority (and acks it) and times each probe at its
// receive's return. With `backlog`, the producer first sends kBacklog priority-0 messages
// (before the start), then tops the backlog up towards kBacklog (batches of 32, at most
// kTopUp) before every probe, and sends more batches while it waits for the probe's receipt; the consumer drains the rest at the end, so the queue is empty
// again afterwards. Every message is checked: size, tags, FIFO per level, priority.
ProbePhase probe_phase(const Scenario& sc, const std::string& queue, bool backlog,
                       std::uint64_t probes, std::uint64_t warmup, bool calibrated,
                       const Options& o) {
  const std::size_t size = sc.size;
  const std::uint64_t total = warmup + probes;
  const std::uint32_t top = sc.max_priority;
  const std::size_t head = round_up(sizeof(ProbeShared), 64);
  SharedMap map(head + 4 * total * sizeof(std::uint64_t));
  auto* sh = new (map.get()) ProbeShared();
  auto* arr = reinterpret_cast<std::uint64_t*>(static_cast<std::byte*>(map.get()) + head);
  std::uint64_t* lat = arr;                     // consumer: receipt - send time
  std::uint64_t* at_receipt = arr + total;      // consumer: its priority-0 count at the probe
  std::uint64_t* queued = arr + 2 * total;      // consumer: priority-0 sent - taken, then
  std::uint64_t* after_send = arr + 3 * total;  // producer: consumer's count once sent
  ProcessGroup g(sc.name + (backlog ? " (backlog)" : " (no backlog)"));
  g.spawn("consumer", [&](ChildIo& io) {
    shmq::Queue q = take(shmq::Queue::open(queue), "open " + queue);
    shmq::Consumer c = take(q.consumer(), "consumer");
    shmq::Message m;
    std::uint64_t bulk = 0;
    std::uint64_t next = 0;
    io.ready();
    io.wait_go();
    for (;;) {
      const shmq::Status st = c.receive_for(m, std::chrono::milliseconds(5));
      if (st == shmq::Status::timeout) {
        if (next == total && sh->stop.load() != 0 && bulk == sh->bulk_sent.load()) break;
        continue;
      }
      if (st != shmq::Status::ok) fail("shmq receive: " + status_text(st));
      const std::uint64_t t = now_ns();
      const shmq::Bytes d = m.data();
      if (d.size() != size) fail("message of " + std::to_string(d.size()) + " bytes");
      const std::uint64_t tag = get_tag(d.data());
      if (!trailer_ok(d.data(), size, tag)) fail("torn message (tag " + std::to_string(tag) + ")");
      if (m.priority() == top) {
        if (tag != make_tag(1, next))
          fail("probe " + std::to_string(tag & 0xffff'ffff'ffff) + " received, expected " +
               std::to_string(next));
        std::uint64_t t0 = 0;
        std::memcpy(&t0, d.data() + 8, sizeof t0);
        lat[next] = t - t0;
        at_receipt[next] = bulk;
        queued[next] = sh->bulk_sent.load() - bulk;
        if (const auto a = c.ack(m); a != shmq::Status::ok) fail("shmq ack: " + status_text(a));
        sh->probes_received.store(++next, std::memory_order_release);
      } else if (m.priority() == 0) {
        if (tag != make_tag(0, bulk))
          fail("priority-0 message " + std::to_string(tag & 0xffff'ffff'ffff) +
               " received, expected " + std::to_string(bulk));
        if (const auto a = c.ack(m); a != shmq::Status::ok) fail("shmq ack: " + status_text(a));
        sh->bulk_received.store(++bulk, std::memory_order_release);
        if (next == total && sh->stop.load() != 0 && bulk == sh->bulk_sent.load()) break;
      } else {
        fail("message at priority " + std::to_string(m.priority()) + ": none was sent there");
      }
    }
  });
  g.spawn("producer", [&](ChildIo& io) {
    shmq::Queue q = take(shmq::Queue::open(queue), "open " + queue);
    shmq::Producer p = take(q.producer(), "producer");
    std::vector<std::byte> bufs(kBatch * size, std::byte{0x5a});
    std::vector<shmq::Bytes> spans(kBatch);
    for (std::size_t t = 0; t < kBatch; ++t) spans[t] = shmq::Bytes(bufs.data() + t * size, size);
    std::uint64_t seq = 0;  // priority-0 messages sent
    auto send_bulk = [&](std::uint64_t n) {
      while (n > 0) {
        const std::size_t k = static_cast<std::size_t>(std::min<std::uint64_t>(kBatch, n));
        for (std::size_t t = 0; t < k; ++t) put_tag(bufs.data() + t * size, size, make_tag(0, seq + t));
        shmq::Status st = shmq::Status::ok;
        const std::size_t sent =
            p.send_batch(std::span<const shmq::Bytes>(spans.data(), k), std::chrono::nanoseconds::max(), &st);
        if (sent != k || st != shmq::Status::ok)
          fail("shmq send_batch: " + std::to_string(sent) + " of " + std::to_string(k) + ": " +
               status_text(st));
        seq += k;
        n -= k;
        sh->bulk_sent.store(seq, std::memory_order_release);
      }
    };
    // What the consumer took since the backlog was last full.
    auto deficit = [&] {
      const std::uint64_t have = seq - sh->bulk_received.load(std::memory_order_acquire);
      return have >= kBacklog ? 0 : kBacklog - have;
    };
    std::vector<std::byte> probe(size, std::byte{0x5a});
    const shmq::SendOptions top_options{.priority = top};
    if (backlog) send_bulk(kBacklog);
    io.ready();
    io.wait_go();
    sh->start_ns.store(now_ns());
    for (std::uint64_t i = 0; i < total; ++i) {
      // Back towards kBacklog queued: what the consumer took since, at most kTopUp (after
      // the producer was descheduled a while, the backlog recovers over a few probes rather
      // than in one long gap that the consumer would keep widening).
      if (backlog) send_bulk(std::min(deficit(), kTopUp));
      put_tag(probe.data(), size, make_tag(1, i));
      const std::uint64_t t0 = now_ns();
      std::memcpy(probe.data() + 8, &t0, sizeof t0);
      if (const auto st = p.send(shmq::Bytes(probe.data(), size), top_options); st != shmq::Status::ok)
        fail("shmq send of probe " + std::to_string(i) + ": " + status_text(st));
      after_send[i] = sh->bulk_received.load();
      // Wait for its receipt (sending whole batches of priority-0 meanwhile): probes never
      // queue up behind each other.
      Backoff b;
      std::uint32_t spins = 0;
      while (sh->probes_received.load(std::memory_order_acquire) <= i) {
        if (backlog && deficit() >= kBatch) {
          send_bulk(kBatch);
          continue;
        }
        b.pause();
        if ((++spins & 1023) == 0 && now_ns() - t0 > kProbeWaitNs)
          fail("probe " + std::to_string(i) + " not received within 10 s");
      }
    }
    sh->end_ns.store(now_ns());
    sh->stop.store(1);
  });
  ProbePhase ph;
  ph.switches = g.run(kSetupTimeout, run_timeout(o, calibrated));
  if (sh->probes_received.load() != total)
    fail(std::to_string(sh->probes_received.load()) + " of " + std::to_string(total) + " probes received");
  if (sh->bulk_received.load() != sh->bulk_sent.load())
    fail(std::to_string(sh->bulk_received.load()) + " of " + std::to_string(sh->bulk_sent.load()) +
         " priority-0 messages received");
  const std::uint64_t start = sh->start_ns.load();
  const std::uint64_t end = sh->end_ns.load();
  if (start == 0 || end <= start) fail("no valid start/end time");
  ph.elapsed_s = static_cast<double>(end - start) / 1e9;
  for (std::uint64_t i = warmup; i < total; ++i) {
    ph.lat.push_back(lat[i]);
    if (backlog) {
      ph.overtaken.push_back(at_receipt[i] > after_send[i] ? at_receipt[i] - after_send[i] : 0);
      ph.queued.push_back(queued[i]);
    }
  }
  std::sort(ph.lat.begin(), ph.lat.end());
  std::sort(ph.overtaken.begin(), ph.overtaken.end());
  std::sort(ph.queued.begin(), ph.queued.end());
  // A probe that waited behind the backlog would have seen ~kBacklog priority-0 messages
  // taken before it; one that overtook it, at most the one being received as it was sent.
  if (!ph.overtaken.empty() && ph.overtaken.back() > kBacklog / 10)
    fail("a probe waited behind " + std::to_string(ph.overtaken.back()) +
         " priority-0 messages taken after its send returned: it did not overtake the backlog");
  return ph;
}

// One queue (max_priority 15, 131,072 slots of 128 bytes) for the whole scenario. Each
// repetition runs the probes behind the backlog and, the order alternating, the same number
// of probes with no backlog (the baseline); pilots run the backlog phase only.
Outcome priority_latency_scenario(const Scenario& sc, const Options& o) {
  shmq::QueueOptions qo;
  qo.slot_count = kBacklogSlots;
  qo.slot_size = kBacklogSlotSize;
  qo.mode = 0600;
  qo.max_priority = sc.max_priority;
  const std::string name = fresh_name();
  struct Remove {
    std::string n;
    pid_t owner = ::getpid();
    ~Remove() {
      if (owner == ::getpid()) (void)shmq::Queue::remove(n);
    }
  } remove{name};
  (void)take(shmq::Queue::create(name, qo), "create shmq queue " + name);
  int rep = 0;
  Outcome out = measure(sc, o, [&](std::uint64_t n, bool calibrated) {
    const std::uint64_t warmup = warmup_for(n);
    RepResult r;
    ProbePhase with, without;
    const bool run_baseline = calibrated || o.quick;
    const bool baseline_first = run_baseline && rep++ % 2 == 0;
    if (baseline_first) without = probe_phase(sc, name, false, n, warmup, calibrated, o);
    with = probe_phase(sc, name, true, n, warmup, calibrated, o);
    if (run_baseline && !baseline_first) without = probe_phase(sc, name, false, n, warmup, calibrated, o);
    r.elapsed_s = with.elapsed_s;
    r.switches_per_msg = static_cast<double>(with.switches) / static_cast<double>(n);
    r.lat = std::move(with.lat);
    r.overtaken = std::move(with.overtaken);
    r.queued = std::move(with.queued);
    r.baseline_lat = std::move(without.lat);
    return r;
  });
  std::string d = "backlog " + std::to_string(kBacklog) + " priority-0 messages (ring " +
                  std::to_string(kBacklogSlots) + " x " + std::to_string(kBacklogSlotSize) +
                  " B per level, max_priority " + std::to_string(sc.max_priority) +
                  "); no backlog, same run: p50 " + human_ns(out.base_p50.median) + " p99 " +
                  human_ns(out.base_p99.median) + " p99.9 " + human_ns(out.base_p999.median) +
                  " max " + human_ns(out.base_max.median) +
                  "; per repetition, with / without backlog: p50";
  for (const double v : out.rep_p50_vs_baseline) d += " " + fixed(v, 2) + "x";
  d += ", p99";
  for (const double v : out.rep_p99_vs_baseline) d += " " + fixed(v, 2) + "x";
  d += "; priority-0 messages taken after a probe's send returned, before the probe (max per "
       "repetition):";
  for (const std::uint64_t v : out.rep_overtaken_max) d += " " + std::to_string(v);
  d += "; priority-0 messages still queued when a probe was taken, per repetition (min/p1/p50):";
  for (std::size_t i = 0; i < out.rep_queued_min.size(); ++i)
    d += " " + std::to_string(out.rep_queued_min[i]) + "/" + std::to_string(out.rep_queued_p1[i]) +
         "/" + std::to_string(out.rep_queued_p50[i]);
  out.detail = d;
  return out;
}

Outcome disk_scenario(const Scenario& sc, const Options& o) {
  std::vector<RepResult> rs;
  const int reps = o.quick ? 1 : o.reps;
  for (int i = 0; i < reps; ++i) rs.push_back(sc.kind == Kind::disk_dd ? dd_rep(o) : fsync_rep(sc, o));
  Outcome out = aggregate(sc, rs, sc.kind == Kind::disk_dd ? (o.quick ? 32 : 256) : 0);
  if (sc.kind == Kind::disk_fsync) {
    std::vector<double> n;
    for (const RepResult& r : rs) n.push_back(r.msgs_per_s * r.elapsed_s);
    out.count = static_cast<std::uint64_t>(spread_of(n).median);
  }
  return out;
}

}  // namespace

RepResult roundtrip_over(const Scenario& sc, ShmqChannel& ping, ShmqChannel& pong,
                         std::uint64_t samples, bool calibrated, const Options& o) {
  return roundtrip_rep(sc, ping, pong, samples, calibrated, o, {});
}

RepResult roundtrip_over(const Scenario& sc, TopicChannel& ping, TopicChannel& pong,
                         std::uint64_t samples, bool calibrated, const Options& o) {
  return roundtrip_rep(sc, ping, pong, samples, calibrated, o, {});
}

RepResult throughput_over(const Scenario& sc, ShmqChannel& ch, std::uint64_t count,
                          bool calibrated, const Options& o, const std::function<void()>& check,
                          const std::function<std::uint64_t()>& log_bytes) {
  const std::function<std::uint64_t()> none = [] { return std::uint64_t{0}; };
  return throughput_rep(sc, ch, count, calibrated, o, check, log_bytes ? log_bytes : none);
}
RepResult throughput_over(const Scenario& sc, BareChannel& ch, std::uint64_t count,
                          bool calibrated, const Options& o) {
  return throughput_rep(sc, ch, count, calibrated, o, {}, [] { return std::uint64_t{0}; });
}
RepResult throughput_over(const Scenario& sc, VyukovChannel& ch, std::uint64_t count,
                          bool calibrated, const Options& o) {
  return throughput_rep(sc, ch, count, calibrated, o, {}, [] { return std::uint64_t{0}; });
}
RepResult throughput_over(const Scenario& sc, BoostChannel& ch, std::uint64_t count,
                          bool calibrated, const Options& o) {
  return throughput_rep(sc, ch, count, calibrated, o, {}, [] { return std::uint64_t{0}; });
}
RepResult roundtrip_over(const Scenario& sc, BareChannel& ping, BareChannel& pong,
                         std::uint64_t samples, bool calibrated, const Options& o) {
  return roundtrip_rep(sc, ping, pong, samples, calibrated, o, {});
}
RepResult roundtrip_over(const Scenario& sc, VyukovChannel& ping, VyukovChannel& pong,
                         std::uint64_t samples, bool calibrated, const Options& o) {
  return roundtrip_rep(sc, ping, pong, samples, calibrated, o, {});
}
ChannelSpec plain_spec_for(const Scenario& sc, std::size_t capacity) {
  return spec_for(sc, DurableSide{}, capacity);
}

Outcome run_scenario(const Scenario& sc, const Options& o, DurableEnv& env) {
  Outcome out;
  try {
    check_signal();
    if (sc.kind == Kind::throughput) {
      switch (sc.transport) {
        case Transport::shmq: out = throughput_scenario<ShmqChannel>(sc, o, env); break;
        case Transport::boost: out = throughput_scenario<BoostChannel>(sc, o, env); break;
        case Transport::bare: out = throughput_scenario<BareChannel>(sc, o, env); break;
        case Transport::vyukov: out = throughput_scenario<VyukovChannel>(sc, o, env); break;
        case Transport::pipe: out = throughput_scenario<PipeChannel>(sc, o, env); break;
        case Transport::unix_socket: out = throughput_scenario<UnixChannel>(sc, o, env); break;
        case Transport::moodycamel:
          out = measure(sc, o, [&](std::uint64_t n, bool) { return moody_throughput(sc, n); });
          break;
        case Transport::disk: fail("bad scenario");
      }
    } else if (sc.kind == Kind::roundtrip) {
      switch (sc.transport) {
        case Transport::shmq: out = roundtrip_scenario<ShmqChannel>(sc, o, env); break;
        case Transport::boost: out = roundtrip_scenario<BoostChannel>(sc, o, env); break;
        case Transport::bare: out = roundtrip_scenario<BareChannel>(sc, o, env); break;
        case Transport::vyukov: out = roundtrip_scenario<VyukovChannel>(sc, o, env); break;
        case Transport::pipe: out = roundtrip_scenario<PipeChannel>(sc, o, env); break;
        case Transport::unix_socket: out = roundtrip_scenario<UnixChannel>(sc, o, env); break;
        case Transport::moodycamel:
          out = measure(sc, o, [&](std::uint64_t n, bool) {
            return moody_roundtrip(sc, n, warmup_for(n));
          });
          break;
        case Transport::disk: fail("bad scenario");
      }
    } else if (sc.kind == Kind::persist) {
      out = persist_scenario(sc, o, env);
    } else if (sc.kind == Kind::sync_senders) {
      out = sync_senders_scenario(sc, o, env);
    } else if (sc.kind == Kind::checksum_cost) {
      out = checksum_cost_scenario(sc, o);
    } else if (sc.kind == Kind::dedup_cost) {
      out = dedup_cost_scenario(sc, o);
    } else if (sc.kind == Kind::priority_cost) {
      out = priority_cost_scenario(sc, o);
    } else if (sc.kind == Kind::priority_latency) {
      out = priority_latency_scenario(sc, o);
    } else if (sc.kind == Kind::properties_cost) {
      out = properties_cost_scenario(sc, o);
    } else if (sc.kind == Kind::topic_fanout) {
      out = topic_fanout_scenario(sc, o);
    } else if (sc.kind == Kind::topic_roundtrip) {
      out = topic_roundtrip_scenario(sc, o);
    } else if (sc.kind == Kind::hot_compare) {
      out = hot_scenario(sc, o, env);
    } else {
      out = disk_scenario(sc, o);
    }
  } catch (const Skip& e) {
    out = Outcome{};
    out.state = Outcome::State::skipped;
    out.note = e.what();
  } catch (const std::exception& e) {
    out = Outcome{};
    out.state = Outcome::State::failed;
    out.note = e.what();
  }
  out.sc = &sc;
  return out;
}

}  // namespace shmq_bench
