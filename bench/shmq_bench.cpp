// shmq-bench: the full benchmark harness (issue 6).
//
// Cross-process throughput and round-trip latency of shmq against baselines measured by the
// same code in the same run: a bare lock-free SPSC ring in shared memory (no acks, no
// durability: the practical limit), Boost.Interprocess message_queue, a pipe, a Unix domain
// socket, and moodycamel::ConcurrentQueue between two threads of one process (the
// in-process ceiling). Durable scenarios run shmqd and are compared with the disk's limits
// (dd with conv=fdatasync, and one fdatasync per message).
//
// Every side of a scenario is a real process (fork). A scenario is calibrated by short pilot
// runs to last about --seconds per repetition, then repeated --reps times; each figure is
// the median of the repetitions, shown with their min..max. Output: a table, --json lines,
// and a gnuplot script + data (+ PNGs if gnuplot is installed) in --out.
//
// Exit status: 0 if every selected scenario ran or was skipped (durability without shmqd),
// 1 if any failed (a child failed, died or hung) or the run was interrupted, 2 on a bad
// command line.

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <regex>
#include <string>
#include <string_view>
#include <vector>

#include "bench_proc.hpp"
#include "bench_report.hpp"
#include "bench_runs.hpp"
#include "bench_transports.hpp"

namespace {

using namespace shmq_bench;
namespace fs = std::filesystem;

void print_help() {
  std::printf(
      "usage: %s [options]\n"
      "\n"
      "Full benchmark of shmq: cross-process throughput (1x1, 2x2, 4x4 processes; 64 B, 1 KiB,\n"
      "4 KiB, 64 KiB; ack per message or batches of 32; durability none, async, sync) and\n"
      "round-trip latency, beside a bare SPSC ring, Boost.Interprocess message_queue, a pipe,\n"
      "a Unix socket and moodycamel::ConcurrentQueue (two threads), plus the disk's limits.\n"
      "\n"
      "options:\n"
      "  --quick            one short repetition per scenario, no calibration (CI smoke;\n"
      "                     the whole run takes well under 30 s)\n"
      "  --reps N           repetitions per scenario, 1..50 (default 3; the hot/ family 5);\n"
      "                     figures are the median, spread shown as [min..max]\n"
      "  --seconds S        target length of one repetition, 0.05..60 (default 0.8)\n"
      "  --scenario PAT     run the scenarios whose name matches PAT (an ECMAScript regex,\n"
      "                     or a plain substring); may be given several times\n"
      "  --list             print the (matching) scenario names and exit\n"
      "  --json             JSON lines on stdout, one object per scenario (table to stderr)\n"
      "  --out DIR          where results.jsonl, plot.gp, its data and the PNGs go\n"
      "                     (default ./bench-out)\n"
      "  --shmqd PATH       shmqd binary for the durable scenarios (default: ../tools/shmqd\n"
      "                     next to this binary); without it they are skipped\n"
      "  --data-root DIR    where durable queues' data dirs and the disk tests' files go\n"
      "                     (default /var/tmp; must be a real disk for the figures to mean\n"
      "                     anything)\n"
      "  --no-plot          do not write or run the gnuplot script\n"
      "  --help             this text\n"
      "\n"
      "Scenario names: <transport>/tp/<P>x<C>/<size>[/ack|batch/<durability>] (throughput),\n"
      "<transport>/rt/<size>[/<durability>] (round trip), shmq/persist/4KiB/send|batch/<durability>\n"
      "(one producer, no consumer while timed: shmqd's write bandwidth), shmq/sync/<P>x0/64B\n"
      "(P single-message sync senders, no consumer: group commit), shmq/checksum/1x1/<size>/ack\n"
      "(QueueOptions::checksum on vs off, ratio per repetition), shmq/priority/1x1/64B/ack/levels-L\n"
      "(a 16-level queue, L levels used round-robin, vs no priorities, ratio per repetition),\n"
      "shmq/priority/latency/64B (a top-priority probe behind 100,000 priority-0 messages, vs no\n"
      "backlog), shmq/topic/fanout/1x<G>/64B (one publisher, G = 1, 2, 4, 8 reliable groups of one\n"
      "subscriber each, vs 1 group, one queue per subscriber and a bare ring per subscriber),\n"
      "shmq/topic/rt/64B (round trip through topics vs queues), disk/dd, disk/fsync-per-msg.\n"
      "Exit status: 0 ok (skipped durable scenarios included), 1 a scenario failed or the run\n"
      "was interrupted, 2 bad command line.\n",
      kProg);
}

bool parse_double(std::string_view s, double lo, double hi, double& out) {
  std::string tmp(s);
  char* end = nullptr;
  const double v = std::strtod(tmp.c_str(), &end);
  if (tmp.empty() || end != tmp.c_str() + tmp.size() || !(v >= lo && v <= hi)) return false;
  out = v;
  return true;
}

bool parse_int(std::string_view s, int lo, int hi, int& out) {
  int v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size() || v < lo || v > hi) return false;
  out = v;
  return true;
}

struct Cli {
  Options o;
  bool list = false;
  bool plot = true;
  std::optional<std::string> shmqd;
  bool data_root_set = false;
};

// Returns -1 to go on, or the exit status (0 after --help, 2 on a bad command line).
int parse_args(int argc, char** argv, Cli& cli) {
  auto bad = [](const std::string& msg) {
    std::fprintf(stderr, "%s: %s (try --help)\n", kProg, msg.c_str());
    return 2;
  };
  bool reps_set = false;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    std::string_view key = arg;
    std::string_view val;
    bool has_val = false;
    if (const auto eq = arg.find('='); arg.starts_with("--") && eq != std::string_view::npos) {
      key = arg.substr(0, eq);
      val = arg.substr(eq + 1);
      has_val = true;
    }
    auto value = [&]() -> bool {
      if (has_val) return true;
      if (i + 1 >= argc) return false;
      val = argv[++i];
      return true;
    };
    auto no_value = [&]() { return !has_val; };
    const std::string k(key);
    if (k == "--help" || k == "-h") {
      print_help();
      return 0;
    } else if (k == "--quick") {
      if (!no_value()) return bad(k + " takes no value");
      cli.o.quick = true;
    } else if (k == "--list") {
      if (!no_value()) return bad(k + " takes no value");
      cli.list = true;
    } else if (k == "--json") {
      if (!no_value()) return bad(k + " takes no value");
      cli.o.json = true;
    } else if (k == "--no-plot") {
      if (!no_value()) return bad(k + " takes no value");
      cli.plot = false;
    } else if (k == "--reps") {
      if (!value()) return bad(k + " needs a value");
      if (!parse_int(val, 1, 50, cli.o.reps))
        return bad("--reps must be a whole number from 1 to 50, got '" + std::string(val) + "'");
      reps_set = true;
      cli.o.reps_set = true;
    } else if (k == "--seconds") {
      if (!value()) return bad(k + " needs a value");
      if (!parse_double(val, 0.05, 60, cli.o.seconds))
        return bad("--seconds must be a number from 0.05 to 60, got '" + std::string(val) + "'");
    } else if (k == "--scenario") {
      if (!value()) return bad(k + " needs a value");
      if (val.empty()) return bad("--scenario needs a non-empty pattern");
      cli.o.filters.emplace_back(val);
    } else if (k == "--out") {
      if (!value() || val.empty()) return bad(k + " needs a directory");
      cli.o.out_dir = std::string(val);
    } else if (k == "--shmqd") {
      if (!value() || val.empty()) return bad(k + " needs a path");
      cli.shmqd = std::string(val);
    } else if (k == "--data-root") {
      if (!value() || val.empty()) return bad(k + " needs a directory");
      cli.o.data_root = std::string(val);
      cli.data_root_set = true;
    } else {
      return bad("unknown option '" + std::string(arg) + "'");
    }
  }
  if (cli.o.quick && reps_set && cli.o.reps != 1)
    return bad("--quick runs one repetition; drop --reps or --quick");
  if (cli.o.quick) cli.o.reps = 1;
  return -1;
}

bool matches(const Scenario& sc, const std::vector<std::string>& filters) {
  if (filters.empty()) return true;
  for (const std::string& f : filters) {
    if (sc.name.find(f) != std::string::npos) return true;
    try {
      if (std::regex_search(sc.name, std::regex(f, std::regex::ECMAScript))) return true;
    } catch (const std::regex_error&) {
      // Not a valid regex: the substring test above was the whole test.
    }
  }
  return false;
}

std::string default_shmqd() {
  std::error_code ec;
  const fs::path self = fs::read_symlink("/proc/self/exe", ec);
  if (ec) return {};
  return (self.parent_path() / ".." / "tools" / "shmqd").lexically_normal().string();
}

bool is_dir_writable(const std::string& d) {
  struct stat st {};
  return ::stat(d.c_str(), &st) == 0 && S_ISDIR(st.st_mode) && ::access(d.c_str(), W_OK | X_OK) == 0;
}

int run(int argc, char** argv) {
  Cli cli;
  if (const int rc = parse_args(argc, argv, cli); rc >= 0) return rc;
  Options& o = cli.o;

  const std::vector<Scenario> scenarios = all_scenarios();
  std::vector<const Scenario*> selected;
  for (const Scenario& sc : scenarios)
    if (matches(sc, o.filters)) selected.push_back(&sc);
  if (cli.list) {
    for (const Scenario* sc : selected) std::printf("%s\n", sc->name.c_str());
    return 0;
  }
  if (selected.empty()) {
    std::fprintf(stderr, "%s: no scenario matches the --scenario filter(s) (see --list)\n", kProg);
    return 2;
  }

  bool need_disk = false;
  bool need_durable = false;
  bool need_topic = false;
  for (const Scenario* sc : selected) {
    if (sc->kind == Kind::topic_fanout || sc->kind == Kind::topic_roundtrip) need_topic = true;
    if (sc->transport == Transport::disk) need_disk = true;
    if (sc->durability != shmq::Durability::none) need_durable = true;
  }
  if (need_disk || need_durable) {
    if (!is_dir_writable(o.data_root)) {
      if (cli.data_root_set) {
        std::fprintf(stderr, "%s: --data-root %s is not a writable directory\n", kProg, o.data_root.c_str());
        return 2;
      }
      o.data_root = "/tmp";
    }
  }

  install_signal_handlers();
  std::FILE* out = o.json ? stderr : stdout;
  const Machine m = describe_machine();
  const auto t_start = Clock::now();

  DurableEnv env;
  env.data_root = o.data_root;
  env.shmqd = cli.shmqd ? *cli.shmqd : default_shmqd();
  if (env.shmqd.empty() || ::access(env.shmqd.c_str(), X_OK) != 0) {
    env.usable = false;
    env.why_not = "no shmqd at " + (env.shmqd.empty() ? std::string("(unknown path)") : env.shmqd) +
                  " (build the shmqd target or pass --shmqd PATH): durability scenarios skipped";
  } else {
    env.usable = true;
  }
  const std::string data_fs = need_disk || need_durable ? fs_type(o.data_root) : "n/a";

  std::fprintf(out, "%s: %zu of %zu scenarios%s\n", kProg, selected.size(), scenarios.size(),
               o.quick ? " (--quick: one short run each, no calibration; figures are a smoke test)" : "");
  std::fprintf(out, "machine:    %s, %ld online cores, %s; load average %s\n", m.cpu.c_str(), m.cores,
               m.kernel.c_str(), m.load.c_str());
  if (!o.quick)
    std::fprintf(out,
                 "method:     each scenario: pilot runs calibrate the count to ~%.2f s per repetition,\n"
                 "            then %d repetitions; figures are the median, [min..max] is the spread over\n"
                 "            the repetitions\n",
                 o.seconds, o.reps);
  std::fprintf(out,
               "processes:  every side is a real process (fork); producers and consumers start together\n"
               "queues:     1024 messages per queue (256 for 64 KiB) for every transport. shmq: blocking\n"
               "            send/receive (spin, then futex), one slot per message (payload + 64-byte\n"
               "            header), ack per message or send_batch/receive_batch/ack of %zu. Boost\n"
               "            message_queue: process-shared mutex + condition. bare: SPSC ring in shared\n"
               "            memory, no acks, spins then yields; 1x1 only. pipe (F_SETPIPE_SZ 1 MiB) and\n"
               "            unix (socketpair SOCK_STREAM): 1x1 only. moodycamel: ConcurrentQueue between\n"
               "            two threads of one process, bounded to the same 1024 in flight; 1x1 only\n"
               "throughput: P producers send count/P messages each; consumers receive until all arrived\n"
               "            (shared counter); timed from the first producer's start to the last\n"
               "            receive+ack (CLOCK_MONOTONIC). Every payload is copied out and checked (tags,\n"
               "            order with one consumer, per-producer count and checksum). MB/s = 10^6\n"
               "            payload bytes/s; vcsw/msg = voluntary context switches of all processes per\n"
               "            message; log MB/s (durable) = bytes shmqd passed to write() per second\n"
               "round trip: ping-pong between two processes, each round trip timed by the sender after\n"
               "            a warm-up; nearest-rank percentiles; samples per repetition\n",
               kBatch);
  if (need_topic)
    std::fprintf(out,
                 "topics:     1024 slots (one per message), TopicOptions defaults otherwise (16 group\n"
                 "            rows); reliable groups g0..g<G-1>, one subscriber process each, receive +\n"
                 "            ack per message, each message copied out and checked (in order, exactly\n"
                 "            once). Fan-out: every repetition runs the topic with G groups, with 1\n"
                 "            group, one shmq queue per subscriber (the publisher sends each message to\n"
                 "            every queue) and one bare ring per subscriber, the order rotating, each\n"
                 "            calibrated to ~%.2f s; publisher = messages published per second (start\n"
                 "            to its last send's return), group = start to its last receive+ack.\n"
                 "            Round trip: two topics of one group vs two queues, every repetition\n",
                 o.seconds / 2);
  if (need_durable || need_disk)
    std::fprintf(out,
                 "persist:    one producer fills a 64 Ki-slot ring while no consumer runs, timed until\n"
                 "            all is on disk (synced cursor = tail), then drained untimed; log MB/s =\n"
                 "            bytes shmqd passed to write() per second (/proc/PID/io wchar)\n"
                 "sync:       P processes send single 64 B messages to a sync queue (64 Ki slots, no\n"
                 "            consumer), each send returning once on disk; every repetition has its\n"
                 "            own queue and shmqd and first runs the write+fdatasync loop for its\n"
                 "            baseline; messages per fdatasync from shmqd's totals at its clean stop\n"
                 "durability: shmqd %s; data dirs under %s (%s)%s\n",
                 env.usable ? env.shmqd.c_str() : "NOT AVAILABLE", o.data_root.c_str(),
                 data_fs.c_str(),
                 data_fs == "tmpfs" ? " WARNING: tmpfs, fdatasync does not reach a disk" : "");
  if (need_durable && !env.usable) std::fprintf(out, "            note: %s\n", env.why_not.c_str());
  std::fflush(out);

  std::error_code ec;
  fs::create_directories(o.out_dir, ec);
  if (ec) {
    std::fprintf(stderr, "%s: cannot create --out %s: %s\n", kProg, o.out_dir.c_str(), ec.message().c_str());
    return 2;
  }
  std::ofstream jsonl(o.out_dir + "/results.jsonl");

  TablePrinter table(out);
  std::vector<Outcome> results;
  int failed = 0;
  int skipped = 0;
  for (const Scenario* sc : selected) {
    if (g_signal != 0) break;
    Outcome r = run_scenario(*sc, o, env);
    if (r.state == Outcome::State::failed) ++failed;
    if (r.state == Outcome::State::skipped) ++skipped;
    table.row(r);
    const std::string line = json_line(r, m);
    if (o.json) {
      std::printf("%s\n", line.c_str());
      std::fflush(stdout);
    }
    jsonl << line << "\n";
    jsonl.flush();
    results.push_back(std::move(r));
    sweep_run_objects();  // nothing should be left; make sure of it
  }

  print_targets(out, results, data_fs);
  if (cli.plot) std::fprintf(out, "\n%s\n", write_plots(o.out_dir, results, m).c_str());
  std::fprintf(out, "results:    %s/results.jsonl\n", o.out_dir.c_str());
  const double secs = std::chrono::duration<double>(Clock::now() - t_start).count();
  std::fprintf(out, "done:       %zu scenarios in %.0f s: %zu ok, %d skipped, %d FAILED; load average now %s\n",
               results.size(), secs, results.size() - static_cast<std::size_t>(failed + skipped),
               skipped, failed, loadavg().c_str());
  if (g_signal != 0) {
    std::fprintf(stderr, "%s: interrupted by %s\n", kProg, strsignal(g_signal));
    return 1;
  }
  return failed > 0 ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  int rc = 1;
  try {
    rc = run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", kProg, e.what());
    rc = 1;
  }
  shmq_bench::sweep_run_objects();
  return rc;
}
