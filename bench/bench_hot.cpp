// shmq-bench: the hot-path family of issue 16 (kind hot_compare, names hot/...).
//
// Each scenario compares shmq variants with baselines. Every repetition runs all its
// variants back to back, forwards in even repetitions and backwards in odd ones (drift on a
// shared machine falls on both sides of a ratio alike), and every ratio divides two
// figures of the SAME repetition; a ratio's figure is the median of those per-repetition
// ratios, with min..max and the list. This matters on VMs where the bare ring is bimodal
// (its rate depends on where the two vCPUs land): medians of absolute figures taken at
// different times would mislead.
//
//   hot/tp/1x1/64B   vyukov, bare, shmq ack per message, shmq batches of 32 (1x1 throughput)
//   hot/rt/64B       round trip: bare, vyukov, shmq with each wait strategy (both sides)
//   hot/tp/4x4/64B   Boost message_queue 4x4, shmq 4x4 ack per message, shmq 4x16 (16
//                    consumer processes)
//   hot/tp/1x1/64B/async   shmq durability none against async (with its own shmqd)
//   hot/paced/64B    one message every 20 us, one-way latency: bare (spinning receiver),
//                    vyukov, shmq with each wait strategy
//
// Throughput and round-trip variants are the runners of bench_runs.cpp (same processes,
// checks and counts as <transport>/tp and <transport>/rt), each calibrated on its own to
// about --seconds / 2 per run. Paced variants run a fixed number of messages.
// Default: 5 repetitions (--reps overrides; --quick: 1, no calibration).
#include <sys/wait.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "bench_proc.hpp"
#include "bench_runs.hpp"
#include "bench_transports.hpp"

namespace shmq_bench {

namespace {

constexpr int kHotReps = 5;
constexpr std::uint64_t kPacedPeriodNs = 20'000;     // one message every 20 us
constexpr std::uint64_t kPacedSamples = 20'000;      // per variant and repetition
constexpr std::uint64_t kPacedQuickSamples = 2'000;  // --quick
constexpr Wait kWaits[] = {Wait::futex, Wait::busy_spin, Wait::spin_yield, Wait::spin_sleep};

Scenario shape(Kind kind, Transport t, int p, int c, std::size_t size, const std::string& name) {
  Scenario s;
  s.kind = kind;
  s.transport = t;
  s.producers = p;
  s.consumers = c;
  s.size = size;
  s.name = name;
  return s;
}

// What a variant's repetition yields: a rate, or sorted latencies.
enum class Metric { msgs_per_s, p50, p99, p999 };

double figure(const RepResult& r, Metric m) {
  switch (m) {
    case Metric::msgs_per_s: return r.msgs_per_s;
    case Metric::p50: return static_cast<double>(percentile(r.lat, 0.50));
    case Metric::p99: return static_cast<double>(percentile(r.lat, 0.99));
    case Metric::p999: return static_cast<double>(percentile(r.lat, 0.999));
  }
  return 0;
}
const char* metric_name(Metric m) {
  switch (m) {
    case Metric::msgs_per_s: return "msgs/s";
    case Metric::p50: return "p50";
    case Metric::p99: return "p99";
    case Metric::p999: return "p99.9";
  }
  return "?";
}

struct Variant {
  std::string name;
  Scenario sc;  // the runner's shape (calibration uses its kind and size)
  std::function<RepResult(std::uint64_t, bool)> run;
  bool latency = false;  // round trip or paced: p50/p99/p99.9; else msgs/s
  bool fixed_count = false;  // paced: no calibration
  std::uint64_t count = 0;
};

// a / b of the same repetition; the target, if any.
struct RatioDef {
  std::string a, b;
  Metric metric;
  int cmp = 0;
  double goal = 0;
};

// Runs `vs` for `reps` repetitions (order alternating) and turns their figures and the
// ratios `defs` into the outcome's series.
Outcome compare(const Scenario& sc, const Options& o, std::vector<Variant>& vs,
                const std::vector<RatioDef>& defs) {
  const int reps = o.quick ? 1 : o.reps_set ? o.reps : kHotReps;
  for (Variant& v : vs) {
    if (v.fixed_count) continue;  // set by its maker
    v.count = o.quick ? initial_count(v.sc) : calibrate(v.sc, o.seconds / 2, v.run);
  }
  std::vector<std::vector<RepResult>> rs(vs.size());  // [variant][rep]
  for (int rep = 0; rep < reps; ++rep) {
    for (std::size_t k = 0; k < vs.size(); ++k) {
      check_signal();
      const std::size_t i = rep % 2 == 0 ? k : vs.size() - 1 - k;
      rs[i].push_back(vs[i].run(vs[i].count, true));
    }
  }
  Outcome out;
  out.sc = &sc;
  out.reps = reps;
  out.count = vs.empty() ? 0 : vs.front().count;
  auto index = [&](const std::string& name) {
    for (std::size_t i = 0; i < vs.size(); ++i)
      if (vs[i].name == name) return i;
    return vs.size();  // a variant this build cannot run (see hot_scenario)
  };
  // Every variant's own figures.
  for (std::size_t i = 0; i < vs.size(); ++i) {
    const std::vector<Metric> ms = vs[i].latency
                                       ? std::vector<Metric>{Metric::p50, Metric::p99, Metric::p999}
                                       : std::vector<Metric>{Metric::msgs_per_s};
    for (const Metric m : ms) {
      HotSeries s;
      s.name = vs[i].name + (vs[i].latency ? std::string(" ") + metric_name(m) : std::string());
      s.unit = m == Metric::msgs_per_s ? "msgs/s" : "ns";
      for (const RepResult& r : rs[i]) s.reps.push_back(figure(r, m));
      s.spread = spread_of(s.reps);
      out.series.push_back(std::move(s));
    }
  }
  // The ratios, each repetition against itself.
  for (const RatioDef& d : defs) {
    const std::size_t a = index(d.a);
    const std::size_t b = index(d.b);
    if (a == vs.size() || b == vs.size()) continue;
    HotSeries s;
    s.name = d.a + " / " + d.b + (d.metric == Metric::msgs_per_s ? std::string(" (msgs/s)")
                                                                 : std::string(" (") + metric_name(d.metric) + ")");
    s.unit = "x";
    s.cmp = d.cmp;
    s.goal = d.goal;
    for (int r = 0; r < reps; ++r) {
      const double fb = figure(rs[b][static_cast<std::size_t>(r)], d.metric);
      s.reps.push_back(figure(rs[a][static_cast<std::size_t>(r)], d.metric) / std::max(fb, 1e-9));
    }
    s.spread = spread_of(s.reps);
    out.series.push_back(std::move(s));
  }
  // The table's row: the first variant's rate, or its latencies.
  if (vs.empty()) fail("hot_compare scenario without variants");
  std::vector<RepResult> first = rs.front();
  Outcome agg = aggregate(vs.front().sc, first, out.count);
  out.msgs_per_s = agg.msgs_per_s;
  out.p50 = agg.p50;
  out.p99 = agg.p99;
  out.p999 = agg.p999;
  out.max = agg.max;
  std::string order;
  for (const Variant& v : vs) order += (order.empty() ? "" : ", ") + v.name;
  out.detail = std::to_string(reps) + " repetitions; order " + order +
               " (reversed in odd repetitions)";
  return out;
}

// --- throughput and round-trip variants --------------------------------------------------------

// The variants own their channels: they live across the scenario's repetitions.
struct Channels {
  std::vector<std::unique_ptr<ShmqChannel>> shmq;
  std::vector<std::unique_ptr<BareChannel>> bare;
  std::vector<std::unique_ptr<VyukovChannel>> vyukov;
  std::vector<std::unique_ptr<BoostChannel>> boost;
  template <typename Ch>
  static Ch& add(std::vector<std::unique_ptr<Ch>>& v, const ChannelSpec& spec) {
    v.push_back(std::make_unique<Ch>(spec));
    return *v.back();
  }
};

template <typename Ch>
Variant tp_variant(std::vector<std::unique_ptr<Ch>>& pool, const std::string& name,
                   const Scenario& vsc, const Options& o) {
  Ch& ch = Channels::add(pool, plain_spec_for(vsc, capacity_for(vsc.size)));
  Variant v{name, vsc, {}, false, false, 0};
  v.run = [&ch, sc = vsc, &o](std::uint64_t n, bool calibrated) {
    if constexpr (std::is_same_v<Ch, ShmqChannel>)
      return throughput_over(sc, ch, n, calibrated, o, {}, {});
    else
      return throughput_over(sc, ch, n, calibrated, o);
  };
  return v;
}

template <typename Ch>
Variant rt_variant(std::vector<std::unique_ptr<Ch>>& pool, const std::string& name,
                   const Scenario& vsc, const Options& o) {
  const ChannelSpec spec = plain_spec_for(vsc, capacity_for(vsc.size));
  Ch& ping = Channels::add(pool, spec);
  Ch& pong = Channels::add(pool, spec);
  Variant v{name, vsc, {}, true, false, 0};
  v.run = [&ping, &pong, sc = vsc, &o](std::uint64_t n, bool calibrated) {
    return roundtrip_over(sc, ping, pong, n, calibrated, o);
  };
  return v;
}

Scenario shmq_tp(int p, int c, bool batch, const std::string& name) {
  Scenario s = shape(Kind::throughput, Transport::shmq, p, c, 64, name);
  s.batch = batch;
  return s;
}

// --- paced traffic ----------------------------------------------------------------------------------

// One run: the sender spins to each 20 us tick on CLOCK_MONOTONIC, stamps its send time into
// the message (bytes 8..15, between the tags) and sends; the receiver takes now - stamp
// when the message is in its hands (copied out; shmq: before the ack). A sender that fell
// behind (descheduled) does not send a burst: the next tick is then one period from now.
// The first warmup_for(samples) messages are not kept. Every message is checked (tags, in
// order, untorn).
template <typename Ch>
RepResult paced_rep(const Scenario& sc, Ch& ch, std::uint64_t samples, bool calibrated,
                    const Options& o) {
  const std::size_t size = sc.size;
  const std::uint64_t warmup = warmup_for(samples);
  const std::uint64_t total = warmup + samples;
  SharedMap map(sizeof(std::uint64_t) * total);
  auto* lat = static_cast<std::uint64_t*>(map.get());
  ch.prepare_run();
  ProcessGroup g(sc.name);
  g.spawn("receiver", [&](ChildIo& io) {
    auto rx = ch.receiver(0);
    io.ready();
    io.wait_go();
    for (std::uint64_t i = 0; i < total;) {
      i += rx.receive(
          [&](const std::byte* p, std::size_t n) {
            const std::uint64_t t = now_ns();
            const std::uint64_t tag = get_tag(p);
            if (n != size || tag != make_tag(0, i) || !trailer_ok(p, n, tag))
              fail("paced message " + std::to_string(i) + " missing, out of order or torn");
            std::uint64_t t0 = 0;
            std::memcpy(&t0, p + 8, sizeof t0);
            lat[i] = t - t0;
          },
          std::chrono::nanoseconds::max());
    }
  });
  g.spawn("sender", [&](ChildIo& io) {
    auto tx = ch.sender(0);
    std::vector<std::byte> buf(size, std::byte{0x5a});
    io.ready();
    io.wait_go();
    std::uint64_t tick = now_ns() + kPacedPeriodNs;
    for (std::uint64_t i = 0; i < total; ++i) {
      put_tag(buf.data(), size, make_tag(0, i));
      std::uint64_t t = now_ns();
      while (t < tick) {
        cpu_relax();
        t = now_ns();
      }
      std::memcpy(buf.data() + 8, &t, sizeof t);
      tx.send(buf.data(), size);
      tick += kPacedPeriodNs;
      if (const std::uint64_t after = now_ns(); tick < after) tick = after + kPacedPeriodNs;
    }
  });
  ch.after_fork();
  const std::uint64_t switches = g.run(kSetupTimeout, run_timeout(o, calibrated));
  RepResult r;
  r.lat.assign(lat + warmup, lat + total);
  std::sort(r.lat.begin(), r.lat.end());
  r.elapsed_s = static_cast<double>(total * kPacedPeriodNs) / 1e9;
  r.switches_per_msg = static_cast<double>(switches) / static_cast<double>(total);
  r.sent = total;
  return r;
}

template <typename Ch>
Variant paced_variant(std::vector<std::unique_ptr<Ch>>& pool, const std::string& name,
                      const Scenario& vsc, const Options& o) {
  Ch& ch = Channels::add(pool, plain_spec_for(vsc, capacity_for(vsc.size)));
  Variant v{name, vsc, {}, true, true, o.quick ? kPacedQuickSamples : kPacedSamples};
  v.run = [&ch, sc = vsc, &o](std::uint64_t n, bool calibrated) {
    return paced_rep(sc, ch, n, calibrated, o);
  };
  return v;
}

// --- async against none: the shmqd of the durable side ------------------------------------------

struct HotDurable {
  std::optional<TempDir> dir;
  std::optional<Daemon> daemon;
};

}  // namespace

Outcome hot_scenario(const Scenario& sc, const Options& o, DurableEnv& env) {
  using T = Transport;
  Channels chs;
  std::vector<Variant> vs;
  std::vector<RatioDef> defs;
  HotDurable dur;
  switch (sc.hot) {
    case Hot::tp_1x1: {
      vs.push_back(tp_variant(chs.vyukov, "vyukov",
                              shape(Kind::throughput, T::vyukov, 1, 1, 64, sc.name + " vyukov"), o));
      vs.push_back(tp_variant(chs.bare, "bare",
                              shape(Kind::throughput, T::bare, 1, 1, 64, sc.name + " bare"), o));
      vs.push_back(tp_variant(chs.shmq, "shmq ack", shmq_tp(1, 1, false, sc.name + " shmq ack"), o));
      vs.push_back(tp_variant(chs.shmq, "shmq batch32", shmq_tp(1, 1, true, sc.name + " shmq batch"), o));
      defs = {{"shmq ack", "vyukov", Metric::msgs_per_s, 1, 0.5},
              {"shmq batch32", "vyukov", Metric::msgs_per_s, 1, 1.0},
              {"shmq ack", "bare", Metric::msgs_per_s, 0, 0},
              {"shmq batch32", "bare", Metric::msgs_per_s, 0, 0},
              {"vyukov", "bare", Metric::msgs_per_s, 0, 0}};
      break;
    }
    case Hot::roundtrip: {
      vs.push_back(rt_variant(chs.bare, "bare", shape(Kind::roundtrip, T::bare, 1, 1, 64, sc.name + " bare"), o));
      vs.push_back(rt_variant(chs.vyukov, "vyukov",
                              shape(Kind::roundtrip, T::vyukov, 1, 1, 64, sc.name + " vyukov"), o));
      for (const Wait w : kWaits) {
        Scenario s = shape(Kind::roundtrip, T::shmq, 1, 1, 64, sc.name + " shmq " + to_string(w));
        s.consumer_wait = s.producer_wait = w;
        vs.push_back(rt_variant(chs.shmq, std::string("shmq ") + to_string(w), s, o));
      }
      defs = {{"shmq futex", "bare", Metric::p50, -1, 1.25},
              {"shmq busy_spin", "bare", Metric::p99, -1, 2.0},
              {"shmq busy_spin", "bare", Metric::p50, 0, 0},
              {"shmq futex", "bare", Metric::p99, 0, 0},
              {"shmq spin_yield", "bare", Metric::p50, 0, 0},
              {"shmq spin_yield", "bare", Metric::p99, 0, 0},
              {"shmq spin_sleep", "bare", Metric::p50, 0, 0},
              {"shmq spin_sleep", "bare", Metric::p99, 0, 0},
              {"vyukov", "bare", Metric::p50, 0, 0}};
      break;
    }
    case Hot::tp_4x4: {
      vs.push_back(tp_variant(chs.boost, "boost 4x4",
                              shape(Kind::throughput, T::boost, 4, 4, 64, sc.name + " boost"), o));
      vs.push_back(tp_variant(chs.shmq, "shmq 4x4", shmq_tp(4, 4, false, sc.name + " shmq 4x4"), o));
      vs.push_back(tp_variant(chs.shmq, "shmq 4x16", shmq_tp(4, 16, false, sc.name + " shmq 4x16"), o));
      // "No collapse with 16 consumers": the issue sets no number; reported.
      defs = {{"shmq 4x4", "boost 4x4", Metric::msgs_per_s, 1, 2.0},
              {"shmq 4x16", "shmq 4x4", Metric::msgs_per_s, 0, 0},
              {"shmq 4x16", "boost 4x4", Metric::msgs_per_s, 0, 0}};
      break;
    }
    case Hot::durable: {
      if (!env.usable) throw Skip(env.why_not);
      vs.push_back(tp_variant(chs.shmq, "none", shmq_tp(1, 1, false, sc.name + " none"), o));
      Scenario a = shmq_tp(1, 1, false, sc.name + " async");
      a.durability = shmq::Durability::async;
      dur.dir.emplace(env.data_root);
      ChannelSpec spec = plain_spec_for(a, capacity_for(a.size));
      spec.data_dir = dur.dir->path() + "/data";
      ShmqChannel& ch = Channels::add(chs.shmq, spec);
      try {
        dur.daemon.emplace(env.shmqd, spec.data_dir, std::vector<std::string>{ch.name()},
                           dur.dir->path() + "/shmqd.log", std::chrono::milliseconds(10'000));
      } catch (const Skip& e) {
        env.usable = false;
        env.why_not = std::string("shmqd failed to start, durability scenarios skipped: ") + e.what();
        throw Skip(env.why_not);
      }
      Daemon* d = &*dur.daemon;
      Variant v{"async", a, {}, false, false, 0};
      v.run = [&ch, a, &o, d](std::uint64_t n, bool calibrated) {
        return throughput_over(a, ch, n, calibrated, o, [d] { d->check_alive(); },
                               [d] { return d->written_bytes(); });
      };
      vs.push_back(std::move(v));
      defs = {{"async", "none", Metric::msgs_per_s, 1, 0.7}};
      break;
    }
    case Hot::paced: {
      vs.push_back(paced_variant(chs.bare, "bare", shape(Kind::roundtrip, T::bare, 1, 1, 64, sc.name + " bare"), o));
      vs.push_back(paced_variant(chs.vyukov, "vyukov",
                                 shape(Kind::roundtrip, T::vyukov, 1, 1, 64, sc.name + " vyukov"), o));
      for (const Wait w : kWaits) {
        Scenario s = shape(Kind::roundtrip, T::shmq, 1, 1, 64, sc.name + " shmq " + to_string(w));
        s.consumer_wait = s.producer_wait = w;
        vs.push_back(paced_variant(chs.shmq, std::string("shmq ") + to_string(w), s, o));
      }
      defs = {{"shmq busy_spin", "bare", Metric::p50, -1, 2.0},
              {"shmq busy_spin", "bare", Metric::p99, -1, 2.0}};
      for (const Wait w : {Wait::futex, Wait::spin_yield, Wait::spin_sleep}) {
        defs.push_back({std::string("shmq ") + to_string(w), "bare", Metric::p50, 0, 0});
        defs.push_back({std::string("shmq ") + to_string(w), "bare", Metric::p99, 0, 0});
      }
      defs.push_back({"vyukov", "bare", Metric::p50, 0, 0});
      defs.push_back({"vyukov", "bare", Metric::p99, 0, 0});
      break;
    }
    case Hot::none: fail("hot_compare scenario without a comparison");
  }
  Outcome out = compare(sc, o, vs, defs);
  if (dur.daemon) {
    const int st = dur.daemon->stop();
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
      fail("shmqd " + describe_status(st) + " when stopped: " + dur.daemon->log_tail(3));
  }
  if (sc.hot == Hot::paced)
    out.detail += "; one message every " + std::to_string(kPacedPeriodNs / 1000) +
                  " us, one-way latency (receive - send stamp), " + std::to_string(vs.front().count) +
                  " messages per variant and repetition";
  return out;
}

void add_hot_scenarios(std::vector<Scenario>& v) {
  const std::pair<Hot, const char*> family[] = {
      {Hot::tp_1x1, "hot/tp/1x1/64B"}, {Hot::roundtrip, "hot/rt/64B"},
      {Hot::tp_4x4, "hot/tp/4x4/64B"}, {Hot::durable, "hot/tp/1x1/64B/async"},
      {Hot::paced, "hot/paced/64B"}};
  for (const auto& [hot, name] : family) {
    Scenario s = shape(Kind::hot_compare, Transport::shmq, 1, 1, 64, name);
    s.hot = hot;
    if (hot == Hot::tp_4x4) {
      s.producers = 4;
      s.consumers = 4;
    }
    if (hot == Hot::durable) s.durability = shmq::Durability::async;
    v.push_back(s);
  }
}

}  // namespace shmq_bench
