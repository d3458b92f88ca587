#include "bench_report.hpp"

#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "bench_proc.hpp"
#include "bench_transports.hpp"

namespace shmq_bench {

namespace {

std::string range(const Spread& s, std::string (*f)(double)) {
  if (!s.valid) return "";
  return "[" + f(s.min) + ".." + f(s.max) + "]";
}
std::string mb(double v) { return fixed(v, v < 100 ? 2 : 1); }
std::string ns(double v) { return human_ns(v); }
std::string count_text(std::uint64_t n) {
  return n < 10000 ? std::to_string(n) : si(static_cast<double>(n));
}

// hot_compare: a figure in its unit.
std::string hot_value(const HotSeries& s, double v) {
  if (s.unit == "x") return fixed(v, 3) + "x";
  if (s.unit == "ns") return human_ns(v);
  return si(v);
}
std::string hot_goal(const HotSeries& s) {
  if (s.cmp == 0) return "";
  return std::string(s.cmp > 0 ? ">= " : "<= ") + fixed(s.goal, 2) + "x";
}
bool hot_met(const HotSeries& s) {
  return s.cmp > 0 ? s.spread.median >= s.goal : s.spread.median <= s.goal;
}

int section_of(const Scenario& sc) {
  switch (sc.kind) {
    case Kind::throughput:
    case Kind::checksum_cost:
    case Kind::dedup_cost:
    case Kind::priority_cost:
    case Kind::properties_cost:
    case Kind::topic_fanout: return 0;
    case Kind::roundtrip:
    case Kind::topic_roundtrip: return 1;
    case Kind::priority_latency: return 4;
    case Kind::persist:
    case Kind::sync_senders: return 3;
    case Kind::hot_compare: return 5;
    default: return 2;
  }
}

const Outcome* find(const std::vector<Outcome>& all, const std::string& name) {
  for (const Outcome& o : all)
    if (o.sc != nullptr && o.sc->name == name && o.state == Outcome::State::ok) return &o;
  return nullptr;
}

}  // namespace

// --- the table -------------------------------------------------------------------------------------

void TablePrinter::row(const Outcome& o) {
  const Scenario& sc = *o.sc;
  const int sec = section_of(sc);
  if (sec != section_) {
    section_ = sec;
    std::fprintf(out_, "\n");
    if (sec == 0 || sec == 3)
      std::fprintf(out_, "%-30s %9s %-21s %9s %10s %10s %9s\n",
                   sec == 0 ? "THROUGHPUT" : "PERSIST (no consumer)", "msgs/s", "[min..max]",
                   "MB/s", "log MB/s", "msgs/rep", "vcsw/msg");
    else if (sec == 1)
      std::fprintf(out_, "%-30s %9s %-21s %9s %9s %9s %10s %9s\n", "ROUND TRIP", "p50",
                   "[min..max]", "p99", "p99.9", "max", "samples", "vcsw/rt");
    else if (sec == 4)
      std::fprintf(out_, "%-30s %9s %-21s %9s %9s %9s %10s %9s\n", "PRIORITY PROBE (one way)",
                   "p50", "[min..max]", "p99", "p99.9", "max", "probes", "vcsw/prb");
    else if (sec == 5)
      std::fprintf(out_, "%-30s %s\n", "HOT PATH (issue 16)",
                   "median [min..max] over repetitions; ratios: each repetition against itself");
    else
      std::fprintf(out_, "%-30s %9s %-21s %s\n", "DISK", "rate", "[min..max]", "what");
  }
  if (o.state != Outcome::State::ok) {
    std::fprintf(out_, "%-30s %s: %s\n", sc.name.c_str(),
                 o.state == Outcome::State::skipped ? "SKIPPED" : "FAILED", o.note.c_str());
    std::fflush(out_);
    return;
  }
  if (sec == 5) {
    std::fprintf(out_, "%s\n", sc.name.c_str());
    for (const HotSeries& h : o.series) {
      std::string reps;
      for (const double v : h.reps) reps += " " + hot_value(h, v);
      std::string goal = hot_goal(h);
      if (!goal.empty()) goal = "  target " + goal + ": " + (hot_met(h) ? "met" : "MISSED");
      std::fprintf(out_, "  %-44s %9s %-21s reps:%s%s\n", h.name.c_str(),
                   hot_value(h, h.spread.median).c_str(),
                   ("[" + hot_value(h, h.spread.min) + ".." + hot_value(h, h.spread.max) + "]").c_str(),
                   reps.c_str(), goal.c_str());
    }
  } else if (sec == 0 || sec == 3) {
    const std::string persisted = o.log_mb_per_s.valid ? mb(o.log_mb_per_s.median) : "-";
    std::fprintf(out_, "%-30s %9s %-21s %9s %10s %10s %9s\n", sc.name.c_str(),
                 si(o.msgs_per_s.median).c_str(), range(o.msgs_per_s, si).c_str(),
                 mb(o.mb_per_s.median).c_str(), persisted.c_str(), count_text(o.count).c_str(),
                 fixed(o.switches_per_msg.median, 3).c_str());
  } else if (sec == 1 || sec == 4) {
    std::fprintf(out_, "%-30s %9s %-21s %9s %9s %9s %10s %9s\n", sc.name.c_str(),
                 ns(o.p50.median).c_str(), range(o.p50, ns).c_str(), ns(o.p99.median).c_str(),
                 ns(o.p999.median).c_str(), ns(o.max.median).c_str(), count_text(o.count).c_str(),
                 fixed(o.switches_per_msg.median, 3).c_str());
  } else if (sc.kind == Kind::disk_dd) {
    std::fprintf(out_, "%-30s %9s %-21s dd bs=1M count=%llu conv=fdatasync (MB/s)\n",
                 sc.name.c_str(), mb(o.mb_per_s.median).c_str(), range(o.mb_per_s, mb).c_str(),
                 static_cast<unsigned long long>(o.count));
  } else {
    std::fprintf(out_, "%-30s %9s %-21s write(%zu B) + fdatasync per message, one process (msgs/s)\n",
                 sc.name.c_str(), si(o.msgs_per_s.median).c_str(),
                 range(o.msgs_per_s, si).c_str(), sc.size);
  }
  if (!o.detail.empty()) std::fprintf(out_, "    %s\n", o.detail.c_str());
  std::fflush(out_);
}

// --- JSON --------------------------------------------------------------------------------------------

std::string json_line(const Outcome& o, const Machine& m) {
  const Scenario& sc = *o.sc;
  const bool ok = o.state == Outcome::State::ok;
  std::string s = "{\"scenario\":" + json_string(sc.name);
  auto num = [&](const char* key, bool present, double v, int decimals) {
    s += ",\"";
    s += key;
    s += "\":";
    s += present && std::isfinite(v) ? fixed(v, decimals) : "null";
  };
  auto str = [&](const char* key, const std::string& v) {
    s += ",\"";
    s += key;
    s += "\":" + json_string(v);
  };
  const bool disk = sc.kind == Kind::disk_dd || sc.kind == Kind::disk_fsync;
  str("kind", sc.kind == Kind::disk_dd ? "disk_dd" : sc.kind == Kind::disk_fsync ? "disk_fsync" : to_string(sc.kind));
  str("transport", to_string(sc.transport));
  s += ",\"producers\":" + std::to_string(sc.producers);
  s += ",\"consumers\":" + std::to_string(sc.consumers);
  s += ",\"size\":" + std::to_string(sc.size);
  if (sc.transport == Transport::shmq && (sc.kind == Kind::throughput ||
                                          sc.kind == Kind::checksum_cost ||
                                          sc.kind == Kind::dedup_cost ||
                                          sc.kind == Kind::priority_cost ||
                                          sc.kind == Kind::properties_cost ||
                                          sc.kind == Kind::topic_fanout))
    str("mode", sc.batch ? "batch" : "ack");
  else if (sc.kind == Kind::persist) str("mode", sc.batch ? "batch" : "send");
  else if (sc.kind == Kind::sync_senders) str("mode", "send");
  else s += ",\"mode\":null";
  str("durability", disk ? std::string("n/a") : std::string(shmq::to_string(sc.durability)));
  const bool lat_kind = sc.kind == Kind::roundtrip || sc.kind == Kind::priority_latency ||
                        sc.kind == Kind::topic_roundtrip;
  const bool tp = ok && !lat_kind;
  const bool rt = ok && lat_kind;
  num("msgs_per_s", tp && sc.kind != Kind::disk_dd, o.msgs_per_s.median, 0);
  num("mb_per_s", tp, o.mb_per_s.median, 2);
  num("p50_ns", rt, o.p50.median, 0);
  num("p99_ns", rt, o.p99.median, 0);
  num("p999_ns", rt, o.p999.median, 0);
  num("max_ns", rt, o.max.median, 0);
  s += ",\"samples\":" + (ok ? std::to_string(o.count) : std::string("null"));
  s += ",\"reps\":" + std::to_string(o.reps);
  str("spread", "min..max over reps");
  num("msgs_per_s_min", tp && sc.kind != Kind::disk_dd, o.msgs_per_s.min, 0);
  num("msgs_per_s_max", tp && sc.kind != Kind::disk_dd, o.msgs_per_s.max, 0);
  num("mb_per_s_min", tp, o.mb_per_s.min, 2);
  num("mb_per_s_max", tp, o.mb_per_s.max, 2);
  num("p50_ns_min", rt, o.p50.min, 0);
  num("p50_ns_max", rt, o.p50.max, 0);
  num("p99_ns_min", rt, o.p99.min, 0);
  num("p99_ns_max", rt, o.p99.max, 0);
  num("p999_ns_min", rt, o.p999.min, 0);
  num("p999_ns_max", rt, o.p999.max, 0);
  num("persisted_mb_per_s", ok && o.persisted_mb_per_s.valid, o.persisted_mb_per_s.median, 2);
  num("log_mb_per_s", ok && o.log_mb_per_s.valid, o.log_mb_per_s.median, 2);
  num("vcsw_per_msg", ok && !disk, o.switches_per_msg.median, 4);
  if (sc.kind == Kind::sync_senders) {
    auto list = [&](const char* key, const std::vector<double>& v, int decimals) {
      s += ",\"";
      s += key;
      s += "\":[";
      for (std::size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + fixed(v[i], decimals);
      s += "]";
    };
    num("vs_fsync_per_msg", ok && o.vs_fsync.valid, o.vs_fsync.median, 2);
    num("msgs_per_fdatasync", ok && o.msgs_per_sync.valid, o.msgs_per_sync.median, 2);
    list("vs_fsync_per_msg_reps", o.rep_vs_fsync, 2);
    list("msgs_per_fdatasync_reps", o.rep_msgs_per_sync, 2);
  }
  str("status", o.state == Outcome::State::ok ? "ok" : o.state == Outcome::State::failed ? "failed" : "skipped");
  if (!o.note.empty()) str("note", o.note);
  auto list = [&](const char* key, const auto& v, int decimals) {
    s += ",\"";
    s += key;
    s += "\":[";
    for (std::size_t i = 0; i < v.size(); ++i)
      s += (i ? "," : "") + fixed(static_cast<double>(v[i]), decimals);
    s += "]";
  };
  if (sc.kind == Kind::checksum_cost || sc.kind == Kind::priority_cost ||
      sc.kind == Kind::dedup_cost || sc.kind == Kind::properties_cost) {
    if (sc.kind == Kind::checksum_cost) {
      s += ",\"checksum\":true";
    } else if (sc.kind == Kind::dedup_cost) {
      s += ",\"dedup_window\":" + std::to_string(sc.dedup_window);
    } else if (sc.kind == Kind::properties_cost) {
      s += ",\"properties_block_bytes\":" + std::to_string(bench_properties_size(sc.properties));
    } else {
      s += ",\"max_priority\":" + std::to_string(sc.max_priority);
      s += ",\"priority_levels\":" + std::to_string(sc.priority_levels);
    }
    num("vs_baseline", ok && o.vs_baseline.valid, o.vs_baseline.median, 3);
    num("baseline_msgs_per_s", ok && o.baseline_msgs_per_s.valid, o.baseline_msgs_per_s.median, 0);
    list("vs_baseline_reps", o.rep_vs_baseline, 3);
    if (!o.detail.empty()) str("detail", o.detail);
  } else if (sc.kind == Kind::priority_latency) {
    s += ",\"max_priority\":" + std::to_string(sc.max_priority);
    num("baseline_p50_ns", ok && o.base_p50.valid, o.base_p50.median, 0);
    num("baseline_p99_ns", ok && o.base_p99.valid, o.base_p99.median, 0);
    num("baseline_p999_ns", ok && o.base_p999.valid, o.base_p999.median, 0);
    num("baseline_max_ns", ok && o.base_max.valid, o.base_max.median, 0);
    list("p50_vs_baseline_reps", o.rep_p50_vs_baseline, 3);
    list("p99_vs_baseline_reps", o.rep_p99_vs_baseline, 3);
    list("overtaken_max_reps", o.rep_overtaken_max, 0);
    list("queued_min_reps", o.rep_queued_min, 0);
    list("queued_p1_reps", o.rep_queued_p1, 0);
    list("queued_p50_reps", o.rep_queued_p50, 0);
    if (!o.detail.empty()) str("detail", o.detail);
  } else if (sc.kind == Kind::topic_fanout) {
    // Publisher rates (messages published per second); ratios per repetition against the
    // same repetition's baselines.
    s += ",\"groups\":" + std::to_string(sc.groups);
    num("slowest_group_msgs_per_s", ok && o.slowest_group.valid, o.slowest_group.median, 0);
    list("group_msgs_per_s", o.group_msgs_per_s, 0);
    num("one_group_msgs_per_s", ok && o.one_group_msgs_per_s.valid, o.one_group_msgs_per_s.median, 0);
    num("queue_per_subscriber_msgs_per_s", ok && o.queues_msgs_per_s.valid, o.queues_msgs_per_s.median, 0);
    num("queue_per_subscriber_slowest_msgs_per_s", ok && o.queues_slowest_msgs_per_s.valid,
        o.queues_slowest_msgs_per_s.median, 0);
    num("bare_per_subscriber_msgs_per_s", ok && o.bare_msgs_per_s.valid, o.bare_msgs_per_s.median, 0);
    num("vs_one_group", ok && o.vs_one_group.valid, o.vs_one_group.median, 3);
    num("vs_queue_per_subscriber", ok && o.vs_queues.valid, o.vs_queues.median, 3);
    num("vs_bare_per_subscriber", ok && o.vs_bare.valid, o.vs_bare.median, 3);
    list("vs_one_group_reps", o.rep_vs_one_group, 3);
    list("vs_queue_per_subscriber_reps", o.rep_vs_queues, 3);
    list("vs_bare_per_subscriber_reps", o.rep_vs_bare, 3);
    num("publisher_cpu_ns_per_msg", ok && o.pub_cpu_ns.valid, o.pub_cpu_ns.median, 1);
    num("subscribers_cpu_ns_per_msg", ok && o.subs_cpu_ns.valid, o.subs_cpu_ns.median, 1);
    num("one_group_publisher_cpu_ns_per_msg", ok && o.one_group_pub_cpu_ns.valid, o.one_group_pub_cpu_ns.median, 1);
    num("queue_per_subscriber_publisher_cpu_ns_per_msg", ok && o.queues_pub_cpu_ns.valid,
        o.queues_pub_cpu_ns.median, 1);
    num("queue_per_subscriber_consumers_cpu_ns_per_msg", ok && o.queues_subs_cpu_ns.valid,
        o.queues_subs_cpu_ns.median, 1);
    num("bare_per_subscriber_publisher_cpu_ns_per_msg", ok && o.bare_pub_cpu_ns.valid, o.bare_pub_cpu_ns.median, 1);
    if (!o.detail.empty()) str("detail", o.detail);
  } else if (sc.kind == Kind::hot_compare) {
    s += ",\"series\":[";
    for (std::size_t i = 0; i < o.series.size(); ++i) {
      const HotSeries& h = o.series[i];
      const int dec = h.unit == "x" ? 4 : 0;
      s += std::string(i ? "," : "") + "{\"name\":" + json_string(h.name) + ",\"unit\":" + json_string(h.unit);
      s += ",\"median\":" + fixed(h.spread.median, dec) + ",\"min\":" + fixed(h.spread.min, dec) +
           ",\"max\":" + fixed(h.spread.max, dec) + ",\"reps\":[";
      for (std::size_t r = 0; r < h.reps.size(); ++r) s += (r ? "," : "") + fixed(h.reps[r], dec);
      s += "]";
      if (h.cmp != 0)
        s += ",\"target\":" + json_string(hot_goal(h)) + ",\"met\":" + (hot_met(h) ? "true" : "false");
      s += "}";
    }
    s += "]";
    if (!o.detail.empty()) str("detail", o.detail);
  } else if (sc.kind == Kind::topic_roundtrip) {
    num("queue_p50_ns", ok && o.base_p50.valid, o.base_p50.median, 0);
    num("queue_p99_ns", ok && o.base_p99.valid, o.base_p99.median, 0);
    num("queue_p999_ns", ok && o.base_p999.valid, o.base_p999.median, 0);
    num("queue_max_ns", ok && o.base_max.valid, o.base_max.median, 0);
    list("p50_vs_queue_reps", o.rep_p50_vs_baseline, 3);
    list("p99_vs_queue_reps", o.rep_p99_vs_baseline, 3);
    if (!o.detail.empty()) str("detail", o.detail);
  } else if (!o.detail.empty()) {
    str("shmqd", o.detail);
  }
  str("cpu", m.cpu);
  s += ",\"cores\":" + std::to_string(m.cores);
  str("kernel", m.kernel);
  return s + "}";
}

// --- targets -------------------------------------------------------------------------------------------

namespace {

void print_ratios(std::FILE* out, const std::vector<Outcome>& all);
void print_priorities(std::FILE* out, const std::vector<Outcome>& all);
void print_topics(std::FILE* out, const std::vector<Outcome>& all);
void print_hot(std::FILE* out, const std::vector<Outcome>& all);
void print_durability(std::FILE* out, const std::vector<Outcome>& all, const std::string& data_fs);

// value vs goal: cmp > 0 means "at least", cmp < 0 "at most".
std::string verdict(double v, int cmp, double goal) {
  if (cmp > 0) {
    if (v >= goal) return "met";
    return "NOT met: " + fixed((1 - v / goal) * 100, 0) + "% short (" + fixed(v, 2) + "x of " +
           fixed(goal, 1) + "x)";
  }
  if (v <= goal) return "met";
  return "NOT met: " + fixed((v / goal - 1) * 100, 0) + "% over (" + fixed(v, 2) + "x vs " +
         fixed(goal, 1) + "x)";
}

double tp_of(const Outcome* o) { return o != nullptr ? o->msgs_per_s.median : 0; }
double p50_of(const Outcome* o) { return o != nullptr ? o->p50.median : 0; }
double p999_of(const Outcome* o) { return o != nullptr ? o->p999.median : 0; }

// "x.xx" or "n/a"; the ratio a/b of two outcomes' figures.
std::string ratio_text(const Outcome* a, const Outcome* b, double (*f)(const Outcome*)) {
  if (a == nullptr || b == nullptr || f(b) <= 0) return "n/a";
  return fixed(f(a) / f(b), 2) + "x";
}

}  // namespace

void print_targets(std::FILE* out, const std::vector<Outcome>& all, const std::string& data_fs) {
  // Printed only when the run has any of the scenarios they compare.
  bool any_none = false;
  for (const Outcome& o : all)
    if (o.sc->transport == Transport::shmq && o.sc->durability == shmq::Durability::none &&
        o.sc->kind != Kind::checksum_cost && o.sc->kind != Kind::priority_cost &&
        o.sc->kind != Kind::dedup_cost && o.sc->kind != Kind::properties_cost &&
        o.sc->kind != Kind::priority_latency && o.sc->kind != Kind::topic_fanout &&
        o.sc->kind != Kind::topic_roundtrip && o.sc->kind != Kind::hot_compare)
      any_none = true;
  if (any_none) print_ratios(out, all);
  print_durability(out, all, data_fs);
  // What an option costs (checksum, dedup window, properties): each repetition against its
  // own run without, one table per kind.
  const std::pair<Kind, const char*> cost_tables[] = {
      {Kind::properties_cost,
       "PROPERTIES (every message with properties; 1x1, 64 B, ack per message, durability none)"},
      {Kind::checksum_cost, "CHECKSUM (QueueOptions::checksum; 1x1, ack per message, durability none)"},
      {Kind::dedup_cost, "DEDUP (QueueOptions::dedup_window 100,000 ids, an id per message; 1x1, "
                         "ack per message, durability none)"},
  };
  for (const auto& [kind, title] : cost_tables) {
    bool header = false;
    for (const Outcome& o : all) {
      if (o.sc->kind != kind) continue;
      if (!header) std::fprintf(out, "\n%s\n", title);
      header = true;
      const std::string what = o.sc->name + ": with / without";
      if (o.state != Outcome::State::ok) {
        std::fprintf(out, "  %-48s %s\n", what.c_str(),
                     o.state == Outcome::State::skipped ? "skipped" : "FAILED");
        continue;
      }
      std::string reps;
      for (const double v : o.rep_vs_baseline) reps += " " + fixed(v, 3) + "x";
      std::fprintf(out, "  %-48s %7.3fx (median; per repetition:%s); %s vs %s msgs/s\n",
                   what.c_str(), o.vs_baseline.median, reps.c_str(),
                   si(o.msgs_per_s.median).c_str(), si(o.baseline_msgs_per_s.median).c_str());
    }
  }
  print_priorities(out, all);
  print_topics(out, all);
  print_hot(out, all);
}

namespace {

void print_ratios(std::FILE* out, const std::vector<Outcome>& all) {
  std::fprintf(out, "\nTARGETS (64-byte messages, durability none; ratios of this run's medians)\n");
  struct Target {
    const char* what;
    const char* a;
    const char* b;
    double (*f)(const Outcome*);
    int cmp;
    double goal;
  };
  const Target targets[] = {
      {"1x1 ack per message: shmq / bare ring msgs/s", "shmq/tp/1x1/64B/ack/none", "bare/tp/1x1/64B", tp_of, 1, 0.5},
      {"1x1 ack per message: shmq / Boost msgs/s", "shmq/tp/1x1/64B/ack/none", "boost/tp/1x1/64B", tp_of, 1, 1.5},
      {"1x1 batched (32): shmq / bare ring msgs/s", "shmq/tp/1x1/64B/batch/none", "bare/tp/1x1/64B", tp_of, 1, 0.8},
      {"round trip p50: shmq / bare ring", "shmq/rt/64B/none", "bare/rt/64B", p50_of, -1, 2.0},
      {"4x4 on this machine: shmq / Boost msgs/s", "shmq/tp/4x4/64B/ack/none", "boost/tp/4x4/64B", tp_of, 1, 2.0},
  };
  for (const Target& t : targets) {
    const Outcome* a = find(all, t.a);
    const Outcome* b = find(all, t.b);
    if (a == nullptr || b == nullptr || t.f(b) <= 0) {
      std::fprintf(out, "  %-48s %8s   (needs %s and %s)\n", t.what, "n/a", t.a, t.b);
      continue;
    }
    const double v = t.f(a) / t.f(b);
    std::fprintf(out, "  %-48s %7.2fx   target %s %.1fx: %s\n", t.what, v, t.cmp > 0 ? ">=" : "<=",
                 t.goal, verdict(v, t.cmp, t.goal).c_str());
  }
  {
    const Outcome* s = find(all, "shmq/rt/64B/none");
    const Outcome* b = find(all, "bare/rt/64B");
    if (s != nullptr && b != nullptr)
      std::fprintf(out, "  %-48s shmq %s (%llu samples), bare ring %s (%llu samples)\n",
                   "round trip p99.9 (reported, no target)", human_ns(s->p999.median).c_str(),
                   static_cast<unsigned long long>(s->count), human_ns(b->p999.median).c_str(),
                   static_cast<unsigned long long>(b->count));
  }

  // The same ratios at every size, for reference.
  const char* sizes[] = {"64B", "1KiB", "4KiB", "64KiB"};
  std::fprintf(out, "\nRATIOS BY SIZE (durability none)           %9s %9s %9s %9s\n", sizes[0],
               sizes[1], sizes[2], sizes[3]);
  struct Row {
    const char* what;
    const char* a;  // printf patterns with %s for the size
    const char* b;
    double (*f)(const Outcome*);
  };
  const Row rows[] = {
      {"1x1 shmq ack / bare ring (msgs/s)", "shmq/tp/1x1/%s/ack/none", "bare/tp/1x1/%s", tp_of},
      {"1x1 shmq batch / bare ring (msgs/s)", "shmq/tp/1x1/%s/batch/none", "bare/tp/1x1/%s", tp_of},
      {"1x1 shmq ack / Boost (msgs/s)", "shmq/tp/1x1/%s/ack/none", "boost/tp/1x1/%s", tp_of},
      {"1x1 shmq ack / pipe (msgs/s)", "shmq/tp/1x1/%s/ack/none", "pipe/tp/1x1/%s", tp_of},
      {"1x1 shmq ack / unix socket (msgs/s)", "shmq/tp/1x1/%s/ack/none", "unix/tp/1x1/%s", tp_of},
      {"1x1 shmq ack / moodycamel threads", "shmq/tp/1x1/%s/ack/none", "moodycamel/tp/1x1/%s", tp_of},
      {"2x2 shmq ack / Boost (msgs/s)", "shmq/tp/2x2/%s/ack/none", "boost/tp/2x2/%s", tp_of},
      {"4x4 shmq ack / Boost (msgs/s)", "shmq/tp/4x4/%s/ack/none", "boost/tp/4x4/%s", tp_of},
      {"4x4 shmq batch / Boost (msgs/s)", "shmq/tp/4x4/%s/batch/none", "boost/tp/4x4/%s", tp_of},
      {"round trip p50 shmq / bare ring", "shmq/rt/%s/none", "bare/rt/%s", p50_of},
      {"round trip p50 shmq / Boost", "shmq/rt/%s/none", "boost/rt/%s", p50_of},
      {"round trip p99.9 shmq / bare ring", "shmq/rt/%s/none", "bare/rt/%s", p999_of},
  };
  for (const Row& r : rows) {
    std::fprintf(out, "  %-40s", r.what);
    for (const char* size : sizes) {
      char a[128], b[128];
      std::snprintf(a, sizeof a, r.a, size);
      std::snprintf(b, sizeof b, r.b, size);
      std::fprintf(out, " %9s", ratio_text(find(all, a), find(all, b), r.f).c_str());
    }
    std::fprintf(out, "\n");
  }

}

// Priorities (issue 13): each repetition's msgs/s against the queue without priorities of
// the same repetition (targets: 4 levels >= 0.9x, 16 levels >= 0.8x, on the median), and
// the probe behind a backlog against the same probes without one.
void print_priorities(std::FILE* out, const std::vector<Outcome>& all) {
  bool header = false;
  auto head = [&] {
    if (!header)
      std::fprintf(out, "\nPRIORITIES (max_priority 15; 1x1, 64 B, ack per message, durability none)\n");
    header = true;
  };
  for (const Outcome& o : all) {
    if (o.sc->kind != Kind::priority_cost) continue;
    head();
    const std::uint32_t levels = o.sc->priority_levels;
    const std::string what = std::to_string(levels) + (levels == 1 ? " level" : " levels") +
                             " used / no priorities";
    if (o.state != Outcome::State::ok) {
      std::fprintf(out, "  %-40s %s\n", what.c_str(),
                   o.state == Outcome::State::skipped ? "skipped" : "FAILED");
      continue;
    }
    const double goal = levels == 4 ? 0.9 : levels == 16 ? 0.8 : 0;
    std::string reps;
    int met = 0;
    for (const double v : o.rep_vs_baseline) {
      reps += " " + fixed(v, 3) + "x";
      if (v >= goal) ++met;
    }
    std::string target = "no target";
    if (goal > 0)
      target = "target >= " + fixed(goal, 1) + "x: " + verdict(o.vs_baseline.median, 1, goal) + " (" +
               std::to_string(met) + " of " + std::to_string(o.rep_vs_baseline.size()) +
               " repetitions at or above)";
    std::fprintf(out, "  %-40s %7.3fx median; per repetition:%s; %s vs %s msgs/s; %s\n",
                 what.c_str(), o.vs_baseline.median, reps.c_str(), si(o.msgs_per_s.median).c_str(),
                 si(o.baseline_msgs_per_s.median).c_str(), target.c_str());
  }
  for (const Outcome& o : all) {
    if (o.sc->kind != Kind::priority_latency) continue;
    head();
    const char* what = "top-priority probe behind 100,000";
    if (o.state != Outcome::State::ok) {
      std::fprintf(out, "  %-40s %s\n", what,
                   o.state == Outcome::State::skipped ? "skipped" : "FAILED");
      continue;
    }
    std::string r50, r99, over, queued;
    for (const double v : o.rep_p50_vs_baseline) r50 += " " + fixed(v, 2) + "x";
    for (const double v : o.rep_p99_vs_baseline) r99 += " " + fixed(v, 2) + "x";
    for (const std::uint64_t v : o.rep_overtaken_max) over += " " + std::to_string(v);
    for (std::size_t i = 0; i < o.rep_queued_min.size(); ++i)
      queued += " " + std::to_string(o.rep_queued_min[i]) + "/" + std::to_string(o.rep_queued_p1[i]) +
                "/" + std::to_string(o.rep_queued_p50[i]);
    std::fprintf(out,
                 "  %-40s p50 %s p99 %s p99.9 %s max %s (one way, send to receive; medians of "
                 "repetitions)\n"
                 "  %-40s p50 %s p99 %s p99.9 %s max %s\n"
                 "  %-40s p50%s; p99%s (no target)\n"
                 "  %-40s max per repetition:%s (a probe stuck behind the backlog: ~100,000)\n"
                 "  %-40s min/p1/p50 per repetition:%s\n",
                 what, human_ns(o.p50.median).c_str(), human_ns(o.p99.median).c_str(),
                 human_ns(o.p999.median).c_str(), human_ns(o.max.median).c_str(),
                 "the same probes, no backlog", human_ns(o.base_p50.median).c_str(),
                 human_ns(o.base_p99.median).c_str(), human_ns(o.base_p999.median).c_str(),
                 human_ns(o.base_max.median).c_str(), "with / without backlog, per repetition",
                 r50.c_str(), r99.c_str(), "priority-0 taken after a probe was sent",
                 over.c_str(), "priority-0 still queued at a probe's receipt", queued.c_str());
  }
}

// Topics (issue 15): per fan-out scenario the publisher's rate and its slowest group's, the
// same repetitions' baselines, the ratios per repetition, and the two targets at 4 groups
// (publisher with 4 groups >= 0.8x with 1 group; >= 3x one queue per subscriber); then the
// round trip through topics against queues.
void print_topics(std::FILE* out, const std::vector<Outcome>& all) {
  bool header = false;
  auto head = [&] {
    if (!header)
      std::fprintf(out,
                   "\nTOPICS (1 publisher -> G reliable groups of one subscriber process each, 64 B,\n"
                   "        receive + ack per message; publisher = messages published per second;\n"
                   "        baselines and ratios from the same repetition)\n"
                   "  %-28s %9s %-21s %9s %9s %9s %9s\n",
                   "scenario", "publisher", "[min..max]", "slowest g", "1 group", "queue/sub",
                   "bare/sub");
    header = true;
  };
  auto med = [](const Spread& v) { return v.valid ? si(v.median) : std::string("-"); };
  std::vector<const Outcome*> fanouts;
  for (const Outcome& o : all) {
    if (o.sc->kind != Kind::topic_fanout) continue;
    head();
    if (o.state != Outcome::State::ok) {
      std::fprintf(out, "  %-28s %s\n", o.sc->name.c_str(),
                   o.state == Outcome::State::skipped ? "skipped" : "FAILED");
      continue;
    }
    fanouts.push_back(&o);
    std::fprintf(out, "  %-28s %9s %-21s %9s %9s %9s %9s\n", o.sc->name.c_str(),
                 si(o.msgs_per_s.median).c_str(), range(o.msgs_per_s, si).c_str(),
                 med(o.slowest_group).c_str(), med(o.one_group_msgs_per_s).c_str(),
                 med(o.queues_msgs_per_s).c_str(), med(o.bare_msgs_per_s).c_str());
  }
  auto reps_text = [](const std::vector<double>& v) {
    std::string r;
    for (const double x : v) r += " " + fixed(x, 2) + "x";
    return r;
  };
  if (!fanouts.empty()) {
    std::fprintf(out, "  publisher msgs/s ratios: median (per repetition)\n");
    std::fprintf(out, "  %-28s %-26s %-26s %s\n", "scenario", "/ 1 group", "/ queue per subscriber",
                 "/ bare ring per subscriber");
    for (const Outcome* o : fanouts) {
      const std::string one = o->vs_one_group.valid
                                  ? fixed(o->vs_one_group.median, 2) + "x (" +
                                        reps_text(o->rep_vs_one_group).substr(1) + ")"
                                  : std::string("-");
      const std::string q = fixed(o->vs_queues.median, 2) + "x (" + reps_text(o->rep_vs_queues).substr(1) + ")";
      const std::string b = fixed(o->vs_bare.median, 2) + "x (" + reps_text(o->rep_vs_bare).substr(1) + ")";
      std::fprintf(out, "  %-28s %-26s %-26s %s\n", o->sc->name.c_str(), one.c_str(), q.c_str(), b.c_str());
    }
    // What publishing costs the publisher itself, whoever it waits for.
    // And the topic's subscribers together: with more processes than cores, publisher +
    // subscribers' CPU per message bounds the rate (cores / CPU per message).
    std::fprintf(out,
                 "  CPU time per message published (user + system, spinning waits included; medians):\n"
                 "  the publisher's, in each variant; the topic's subscribers together and the queues'\n"
                 "  consumers together; and the bound that %ld cores put on the topic's rate:\n"
                 "  cores / (publisher + subscribers)\n",
                 ::sysconf(_SC_NPROCESSORS_ONLN));
    std::fprintf(out, "  %-28s %9s %9s %9s %9s %10s %10s %10s\n", "scenario", "topic", "1 group",
                 "queue/sub", "bare/sub", "topic subs", "queue cons", "CPU bound");
    auto ns_or_dash = [](const Spread& v) { return v.valid ? human_ns(v.median) : std::string("-"); };
    const double cores = static_cast<double>(::sysconf(_SC_NPROCESSORS_ONLN));
    for (const Outcome* o : fanouts) {
      const double per_msg = o->pub_cpu_ns.median + o->subs_cpu_ns.median;
      const std::string bound = per_msg > 0 ? si(cores * 1e9 / per_msg) + "/s" : std::string("-");
      std::fprintf(out, "  %-28s %9s %9s %9s %9s %10s %10s %10s\n", o->sc->name.c_str(),
                   ns_or_dash(o->pub_cpu_ns).c_str(), ns_or_dash(o->one_group_pub_cpu_ns).c_str(),
                   ns_or_dash(o->queues_pub_cpu_ns).c_str(), ns_or_dash(o->bare_pub_cpu_ns).c_str(),
                   ns_or_dash(o->subs_cpu_ns).c_str(), ns_or_dash(o->queues_subs_cpu_ns).c_str(),
                   bound.c_str());
    }
  }
  for (const Outcome* o : fanouts) {
    if (o->sc->groups != 4) continue;
    auto target = [&](const char* what, const Spread& v, const std::vector<double>& reps, double goal) {
      int met = 0;
      for (const double x : reps)
        if (x >= goal) ++met;
      std::fprintf(out, "  %-48s %7.2fx   target >= %.1fx: %s (%d of %zu repetitions at or above)\n",
                   what, v.median, goal, verdict(v.median, 1, goal).c_str(), met, reps.size());
    };
    target("4 groups: publisher / its 1-group rate", o->vs_one_group, o->rep_vs_one_group, 0.8);
    target("4 groups: topic / one queue per subscriber", o->vs_queues, o->rep_vs_queues, 3.0);
  }
  for (const Outcome& o : all) {
    if (o.sc->kind != Kind::topic_roundtrip) continue;
    head();
    const std::string what = "round trip " + o.sc->name;
    if (o.state != Outcome::State::ok) {
      std::fprintf(out, "  %-48s %s\n", what.c_str(),
                   o.state == Outcome::State::skipped ? "skipped" : "FAILED");
      continue;
    }
    std::fprintf(out,
                 "  %-48s p50 %s p99 %s p99.9 %s (medians of repetitions)\n"
                 "  %-48s p50 %s p99 %s p99.9 %s\n"
                 "  %-48s p50%s; p99%s (no target)\n",
                 ("round trip through topics (" + o.sc->name + ")").c_str(),
                 human_ns(o.p50.median).c_str(), human_ns(o.p99.median).c_str(),
                 human_ns(o.p999.median).c_str(), "round trip through queues, same run",
                 human_ns(o.base_p50.median).c_str(), human_ns(o.base_p99.median).c_str(),
                 human_ns(o.base_p999.median).c_str(), "topic / queue, per repetition",
                 reps_text(o.rep_p50_vs_baseline).c_str(), reps_text(o.rep_p99_vs_baseline).c_str());
  }
}

// Issue 16's targets from the hot_compare family: each the median of per-repetition ratios.
void print_hot(std::FILE* out, const std::vector<Outcome>& all) {
  bool header = false;
  for (const Outcome& o : all) {
    if (o.sc->kind != Kind::hot_compare) continue;
    if (!header)
      std::fprintf(out, "\nISSUE 16 TARGETS (median over repetitions of ratios within one repetition)\n");
    header = true;
    if (o.state != Outcome::State::ok) {
      std::fprintf(out, "  %-30s %s\n", o.sc->name.c_str(),
                   o.state == Outcome::State::skipped ? "skipped" : "FAILED");
      continue;
    }
    for (const HotSeries& h : o.series) {
      if (h.cmp == 0) continue;
      std::string reps;
      for (const double v : h.reps) reps += " " + fixed(v, 2);
      std::fprintf(out, "  %-22s %-40s %7.3fx [%.2f..%.2f] (reps:%s) target %s: %s\n",
                   o.sc->name.c_str(), h.name.c_str(), h.spread.median, h.spread.min, h.spread.max,
                   reps.c_str(), hot_goal(h).c_str(), verdict(h.spread.median, h.cmp, h.goal).c_str());
    }
  }
}

void print_durability(std::FILE* out, const std::vector<Outcome>& all, const std::string& data_fs) {
  const Outcome* dd = find(all, "disk/dd");
  const Outcome* fsync1 = find(all, "disk/fsync-per-msg");
  bool any_durable = false;
  for (const Outcome& o : all)
    if (o.sc->durability != shmq::Durability::none && o.state == Outcome::State::ok) any_durable = true;
  if (dd == nullptr && fsync1 == nullptr && !any_durable) return;
  std::fprintf(out, "\nDURABILITY (data dir on %s)\n", data_fs.c_str());
  if (dd != nullptr)
    std::fprintf(out, "  %-48s %9s MB/s %s\n", "disk limit: dd bs=1M conv=fdatasync",
                 mb(dd->mb_per_s.median).c_str(), range(dd->mb_per_s, mb).c_str());
  for (const Outcome& o : all) {
    if (o.sc->kind != Kind::persist) continue;
    if (o.state != Outcome::State::ok) {
      std::fprintf(out, "  %-48s %s\n", o.sc->name.c_str(),
                   o.state == Outcome::State::skipped ? "skipped" : "FAILED");
      continue;
    }
    std::fprintf(out, "  %-48s %9s MB/s %s%s\n", o.sc->name.c_str(), mb(o.mb_per_s.median).c_str(),
                 range(o.mb_per_s, mb).c_str(),
                 dd != nullptr && dd->mb_per_s.median > 0
                     ? ("  = " + fixed(o.mb_per_s.median / dd->mb_per_s.median, 2) + "x dd").c_str()
                     : "");
  }
  bool header = false;
  for (const Outcome& o : all) {
    const Scenario& sc = *o.sc;
    if (sc.kind != Kind::throughput || sc.size != 4096 || sc.durability == shmq::Durability::none)
      continue;
    if (!header)
      std::fprintf(out,
                   "  4 KiB messages with consumers: payload MB/s until all was on disk or acked, and\n"
                   "  shmqd's log writes (MB/s of its write() calls: a message acked before shmqd\n"
                   "  reaches it is never written, async or sync), vs dd:\n");
    header = true;
    if (o.state != Outcome::State::ok) {
      std::fprintf(out, "    %-46s %s\n", sc.name.c_str(),
                   o.state == Outcome::State::skipped ? "skipped" : "FAILED");
      continue;
    }
    auto of_dd = [&](const Spread& v) {
      return dd != nullptr && dd->mb_per_s.median > 0 && v.valid
                 ? fixed(v.median / dd->mb_per_s.median, 2) + "x"
                 : std::string("n/a");
    };
    std::fprintf(out, "    %-32s persisted %9s MB/s %6s of dd; log writes %9s MB/s %6s of dd\n",
                 sc.name.c_str(), mb(o.persisted_mb_per_s.median).c_str(),
                 of_dd(o.persisted_mb_per_s).c_str(),
                 o.log_mb_per_s.valid ? mb(o.log_mb_per_s.median).c_str() : "n/a",
                 of_dd(o.log_mb_per_s).c_str());
  }
  const Outcome* s8 = find(all, "shmq/tp/8x1/64B/ack/sync");
  if (fsync1 != nullptr)
    std::fprintf(out, "  %-48s %9s msgs/s %s\n", "1 fdatasync per message (write+fdatasync loop)",
                 si(fsync1->msgs_per_s.median).c_str(), range(fsync1->msgs_per_s, si).c_str());
  // Group commit, no consumer: each repetition against its own baseline (target: 8 senders
  // >= 6x one fdatasync per message).
  for (const Outcome& o : all) {
    if (o.sc->kind != Kind::sync_senders) continue;
    const std::string what = "group commit: " + o.sc->name + " / 1 fsync per msg";
    if (o.state != Outcome::State::ok) {
      std::fprintf(out, "  %-48s %s\n", what.c_str(),
                   o.state == Outcome::State::skipped ? "skipped" : "FAILED");
      continue;
    }
    std::fprintf(out, "  %-48s %8.2fx %s, %s msgs/s, %.1f messages per fdatasync%s\n",
                 what.c_str(), o.vs_fsync.median,
                 range(o.vs_fsync, [](double v) { return fixed(v, 2) + "x"; }).c_str(),
                 si(o.msgs_per_s.median).c_str(), o.msgs_per_sync.median,
                 o.sc->producers == 8 ? (o.vs_fsync.median >= 6 ? " (target >= 6x: met)"
                                                                : " (target >= 6x: MISSED)")
                                      : "");
  }
  if (s8 != nullptr)
    std::fprintf(out, "  %-48s %9s msgs/s %s\n", "shmq sync, 8 sender processes, 64 B",
                 si(s8->msgs_per_s.median).c_str(), range(s8->msgs_per_s, si).c_str());
  if (s8 != nullptr && fsync1 != nullptr && fsync1->msgs_per_s.median > 0)
    std::fprintf(out, "  %-48s %8.2fx\n", "group commit: shmq sync x8 / 1 fsync per message",
                 s8->msgs_per_s.median / fsync1->msgs_per_s.median);
}

}  // namespace

// --- plots -------------------------------------------------------------------------------------------

namespace {

std::string find_on_path(const std::string& exe) {
  const char* path = std::getenv("PATH");
  if (path == nullptr) return {};
  std::stringstream ss(path);
  for (std::string dir; std::getline(ss, dir, ':');) {
    if (dir.empty()) continue;
    const std::string p = dir + "/" + exe;
    if (::access(p.c_str(), X_OK) == 0) return p;
  }
  return {};
}

std::string clean(std::string s) {
  for (char& c : s)
    if (c == '"' || c == '\'' || c == '\\') c = ' ';
  return s;
}

struct Series {
  std::string title;
  std::string pattern;  // scenario name with %s for the size
  std::string file;     // data file name
};

}  // namespace

std::string write_plots(const std::string& dir_in, const std::vector<Outcome>& all, const Machine& m) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(dir_in, ec);
  const std::string dir = fs::absolute(dir_in, ec).string();
  const char* sizes[] = {"64B", "1KiB", "4KiB", "64KiB"};
  const std::size_t bytes[] = {64, 1024, 4096, 65536};

  // Throughput data: size, msgs/s median min max, MB/s median min max.
  auto write_tp = [&](const std::vector<Series>& series) {
    std::vector<Series> written;
    for (const Series& s : series) {
      std::string rows;
      for (std::size_t i = 0; i < 4; ++i) {
        char name[128];
        std::snprintf(name, sizeof name, s.pattern.c_str(), sizes[i]);
        const Outcome* o = find(all, name);
        if (o == nullptr) continue;
        rows += std::to_string(bytes[i]) + " " + fixed(o->msgs_per_s.median, 1) + " " +
                fixed(o->msgs_per_s.min, 1) + " " + fixed(o->msgs_per_s.max, 1) + " " +
                fixed(o->mb_per_s.median, 3) + " " + fixed(o->mb_per_s.min, 3) + " " +
                fixed(o->mb_per_s.max, 3) + "\n";
      }
      if (rows.empty()) continue;
      std::ofstream f(dir + "/" + s.file);
      f << "# " << s.title << ": size msgs_per_s(median min max) mb_per_s(median min max)\n" << rows;
      written.push_back(s);
    }
    return written;
  };
  const auto tp11 = write_tp({
      {"bare SPSC ring", "bare/tp/1x1/%s", "tp_bare.dat"},
      {"moodycamel (2 threads)", "moodycamel/tp/1x1/%s", "tp_moodycamel.dat"},
      {"pipe", "pipe/tp/1x1/%s", "tp_pipe.dat"},
      {"unix socket", "unix/tp/1x1/%s", "tp_unix.dat"},
      {"Boost message_queue", "boost/tp/1x1/%s", "tp_boost.dat"},
      {"shmq ack/msg", "shmq/tp/1x1/%s/ack/none", "tp_shmq_ack.dat"},
      {"shmq batch 32", "shmq/tp/1x1/%s/batch/none", "tp_shmq_batch.dat"},
      {"shmq async, batch 32", "shmq/tp/1x1/%s/batch/async", "tp_shmq_batch_async.dat"},
      {"shmq sync, batch 32", "shmq/tp/1x1/%s/batch/sync", "tp_shmq_batch_sync.dat"},
  });
  const auto tp44 = write_tp({
      {"Boost message_queue 4x4", "boost/tp/4x4/%s", "tp44_boost.dat"},
      {"shmq ack/msg 4x4", "shmq/tp/4x4/%s/ack/none", "tp44_shmq_ack.dat"},
      {"shmq batch 32 4x4", "shmq/tp/4x4/%s/batch/none", "tp44_shmq_batch.dat"},
      {"Boost message_queue 2x2", "boost/tp/2x2/%s", "tp22_boost.dat"},
      {"shmq ack/msg 2x2", "shmq/tp/2x2/%s/ack/none", "tp22_shmq_ack.dat"},
  });

  // Latency distributions at 64 B: percentile, 1/(1-percentile), round trip ns.
  const std::vector<Series> lat_series = {
      {"bare SPSC ring", "bare/rt/64B", "lat_bare.dat"},
      {"moodycamel (2 threads)", "moodycamel/rt/64B", "lat_moodycamel.dat"},
      {"pipe", "pipe/rt/64B", "lat_pipe.dat"},
      {"unix socket", "unix/rt/64B", "lat_unix.dat"},
      {"Boost message_queue", "boost/rt/64B", "lat_boost.dat"},
      {"shmq", "shmq/rt/64B/none", "lat_shmq.dat"},
      {"shmq async", "shmq/rt/64B/async", "lat_shmq_async.dat"},
      {"shmq sync", "shmq/rt/64B/sync", "lat_shmq_sync.dat"},
  };
  std::vector<Series> lat_written;
  for (const Series& s : lat_series) {
    const Outcome* o = find(all, s.pattern);
    if (o == nullptr || o->distribution.empty()) continue;
    const auto& d = o->distribution;
    const double n = static_cast<double>(d.size());
    std::ofstream f(dir + "/" + s.file);
    f << "# " << s.title << " (" << d.size() << " samples): percentile 1/(1-percentile) round_trip_ns\n";
    const int points = 400;
    for (int i = 0; i < points; ++i) {
      const double q = 1 - std::pow(10.0, -std::log10(n) * i / points);
      f << fixed(q * 100, 5) << " " << fixed(1 / (1 - q), 3) << " " << percentile(d, q) << "\n";
    }
    f << fixed((1 - 1 / n) * 100, 5) << " " << fixed(n, 3) << " " << d.back() << "\n";
    lat_written.push_back(s);
  }

  const std::string machine = clean(m.cpu) + ", " + std::to_string(m.cores) + " cores, " + clean(m.kernel);
  std::ofstream gp(dir + "/plot.gp");
  gp << "# Generated by shmq-bench: gnuplot " << dir << "/plot.gp\n"
     << "if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) {\n"
     << "  set terminal pngcairo size 1800,620 noenhanced font ',10'\n"
     << "} else {\n"
     << "  set terminal png size 1800,620 noenhanced\n"
     << "}\n"
     << "set output '" << dir << "/throughput_by_size.png'\n"
     << "set multiplot layout 1,3 title \"shmq-bench: throughput by message size (" << machine
     << "; median of repetitions, bars min..max)\"\n"
     << "set logscale x 2\nset logscale y 10\nset grid\nset key top right font ',9'\n"
     << "set xrange [45:95000]\n"
     << "set xtics ('64 B' 64, '1 KiB' 1024, '4 KiB' 4096, '64 KiB' 65536)\n"
     << "set xlabel 'message size'\n";
  auto plot_tp = [&](const std::vector<Series>& ss, const char* title, const char* ylabel, int col) {
    gp << "set title '" << title << "'\nset ylabel '" << ylabel << "'\n";
    if (ss.empty()) {
      gp << "set label 1 'no data' at graph 0.5,0.5 center\nplot '-' using 1:2 with dots notitle\n64 1\ne\nunset label 1\n";
      return;
    }
    gp << "plot ";
    for (std::size_t i = 0; i < ss.size(); ++i) {
      gp << (i == 0 ? "" : ", \\\n     ") << "'" << dir << "/" << ss[i].file << "' using 1:" << col
         << ":" << col + 1 << ":" << col + 2 << " with yerrorlines lw 2 title '" << ss[i].title << "'";
    }
    gp << "\n";
  };
  plot_tp(tp11, "1 producer x 1 consumer process: messages/s", "messages/s", 2);
  plot_tp(tp11, "1 x 1: payload MB/s", "MB/s (10^6 bytes)", 5);
  plot_tp(tp44, "N producers x N consumers processes: messages/s", "messages/s", 2);
  gp << "unset multiplot\n";

  gp << "if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) {\n"
     << "  set terminal pngcairo size 1200,720 noenhanced font ',10'\n"
     << "} else {\n"
     << "  set terminal png size 1200,720 noenhanced\n"
     << "}\n"
     << "set output '" << dir << "/latency.png'\n"
     << "set title \"round trip (ping-pong between two processes), 64-byte messages: distribution of the median repetition\\n"
     << machine << "\"\n"
     << "set autoscale x\nset logscale x 10\nset logscale y 10\nset grid\nset key top left font ',9'\n"
     << "set xtics ('0%%' 1, '50%%' 2, '90%%' 10, '99%%' 100, '99.9%%' 1000, '99.99%%' 10000, '99.999%%' 100000, '99.9999%%' 1000000)\n"
     << "set xlabel 'percentile'\nset ylabel 'round trip (ns)'\n";
  if (lat_written.empty()) {
    gp << "set label 1 'no data' at graph 0.5,0.5 center\nplot '-' using 1:2 with dots notitle\n2 1\ne\n";
  } else {
    gp << "plot ";
    for (std::size_t i = 0; i < lat_written.size(); ++i)
      gp << (i == 0 ? "" : ", \\\n     ") << "'" << dir << "/" << lat_written[i].file
         << "' using 2:3 with lines lw 2 title '" << lat_written[i].title << "'";
    gp << "\n";
  }
  gp.close();

  const std::string gnuplot = find_on_path("gnuplot");
  if (gnuplot.empty())
    return "plots: gnuplot not found; wrote " + dir + "/plot.gp and its data files (install the "
           "Debian package gnuplot-nox, then run: gnuplot " + dir + "/plot.gp)";
  const auto [st, text] = run_capture({gnuplot, dir + "/plot.gp"}, std::chrono::milliseconds(60'000));
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
    return "plots: gnuplot " + describe_status(st) + ": " + text.substr(0, 400);
  return "plots: " + dir + "/throughput_by_size.png, " + dir + "/latency.png (script " + dir + "/plot.gp)";
}

}  // namespace shmq_bench
