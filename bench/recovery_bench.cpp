// shmq-bench-recovery: how long messages held by a consumer that is killed with SIGKILL
// stay stuck before a live consumer gets them, with default settings.
//
// Setup (once): the parent creates a queue with default QueueOptions, attaches a Watchdog
// with default WatchdogOptions and start()s it (a background thread that ticks every 5 ms,
// the component shmqd runs), and keeps one producer.
//
// One round per kill, with no consumer attached at its start:
//   1. The parent sends M messages whose ids carry the round number. Nobody consumes them
//      yet: the previous round's consumers are gone (one killed and reclaimed, one closed
//      and reaped), so they simply wait in the ring.
//   2. The parent forks the victim. It is the only consumer of the queue, so it takes all
//      M messages (first deliveries), does not ack them, tells the parent it holds them
//      and pauses.
//   3. The parent forks a fresh live consumer. Every message is held by the victim, so it
//      finds nothing and goes to sleep in receive(); the parent waits until
//      /proc/<pid>/stat shows it asleep, so that every kill measures the wake-up path of a
//      sleeping consumer (the common case for an idle service), not a spinning one.
//   4. The parent sleeps a random time, uniform in [0, watchdog interval), then takes
//      t0 = CLOCK_MONOTONIC, sends SIGKILL to the victim and reaps it at once (the watchdog
//      treats a zombie as dead too, so reaping does not help or hurt). Without the random
//      sleep the rounds lock onto the watchdog's tick: a round starts just after the tick
//      that ended the previous one and takes about the same time to set up, so every kill
//      would land at the same phase of the tick and the percentiles would measure that
//      phase, not the spread a kill at an arbitrary moment sees.
//   5. The watchdog sees the victim's process gone, takes its M messages back and wakes
//      the consumers. The live consumer receives each message, reads CLOCK_MONOTONIC,
//      acks it, and after the M-th reports every (time, id, delivery count) to the parent
//      through a pipe, checks that nothing else is queued, closes and exits.
//   latency of the round: last receive time - t0 ("kill -> all redelivered") and first
//   receive time - t0 ("kill -> first redelivered").
//
// Starting a fresh live consumer per round, after the victim holds its messages, is what
// keeps the live consumer from taking the messages first: it exists only while they are
// held. std::chrono::steady_clock is CLOCK_MONOTONIC on Linux, one clock for every process.
//
// Checks (any failure: exit 1): the victim gets exactly the round's M messages on first
// delivery; the live consumer gets exactly those M again, each with delivery_count 2 and
// redelivered(), none before t0, none twice, and nothing else; every child exits 0 within
// its time limit. At the end the queue's counters must show every message acked, every
// victim reclaimed by the watchdog, no lease expiry and nothing dead-lettered.
//
// The children are forked from a process whose watchdog thread runs. They never touch the
// inherited Watchdog, Queue or Producer objects (they open the queue by name) and leave
// with _exit(), so no inherited destructor runs.

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <fstream>
#include <functional>
#include <random>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <type_traits>
#include <thread>
#include <utility>
#include <vector>

#include "bench_proc.hpp"
#include "bench_util.hpp"
#include "shmq/shmq.hpp"

namespace {

// Shared with shmq-bench (bench_util, bench_proc).
using shmq_bench::check_signal;
using shmq_bench::Clock;
using shmq_bench::describe_machine;
using shmq_bench::describe_status;
using shmq_bench::fail;
using shmq_bench::json_string;
using shmq_bench::Machine;
using shmq_bench::now_ns;

constexpr const char* kProg = "shmq-bench-recovery";
constexpr std::uint64_t kDefaultKills = 200;
constexpr std::uint64_t kQuickKills = 20;
constexpr std::uint64_t kDefaultMessages = 8;
constexpr std::uint64_t kMaxMessages = 256;  // well inside the default 1024-slot ring
constexpr std::uint64_t kTargetP99Ns = 50'000'000;  // issue: p99 under 50 ms
// Limits for one step of a round (a child's start, the redelivery, a child's exit). Far
// above anything healthy; hitting one means a hang, and the run fails.
constexpr auto kStepTimeout = std::chrono::seconds(10);
// How long to wait for the live consumer to be seen asleep before killing anyway.
constexpr auto kAsleepTimeout = std::chrono::seconds(1);

// --- Configuration and flags ----------------------------------------------------------

struct Config {
  std::uint64_t kills = kDefaultKills;
  std::uint64_t messages = kDefaultMessages;
  std::uint64_t slots = 0;      // 0: QueueOptions' default
  std::uint64_t slot_size = 0;  // 0: QueueOptions' default
  bool no_daemon = false;       // heal by the embedded watchdogs only
  bool costs = false;           // the per-ring-size costs instead of kill rounds
  std::uint64_t reps = 0;       // --costs repetitions (0: per figure default)
  bool json = false;
};

void print_help() {
  std::printf(
      "usage: %s [options]\n"
      "\n"
      "Recovery latency: the time from SIGKILL of a consumer that holds unacked messages\n"
      "to their redelivery to a live consumer (asleep in receive()), with default\n"
      "QueueOptions and a Watchdog with default WatchdogOptions running in the background.\n"
      "Reports p50/p90/p99/max over many kills; the target is p99 under 50 ms.\n"
      "\n"
      "options:\n"
      "  --kills N       consumers killed, one per round (default %llu)\n"
      "  --messages N    messages the killed consumer holds, 1..%llu (default %llu)\n"
      "  --slots N       ring size (power of two; default QueueOptions' 1024); the ring is\n"
      "                  filled and drained once first, so its window is the whole ring\n"
      "  --slot-size N   bytes per slot (default QueueOptions' 256)\n"
      "  --no-daemon     no Watchdog of the bench's own (what shmqd runs): the queue heals\n"
      "                  by the watchdogs embedded in its processes only\n"
      "  --costs         instead of kill rounds: what idle and single operations cost on\n"
      "                  this ring size (watchdog tick, idle process, idle receive_for,\n"
      "                  receive after a nack, opening and closing handles)\n"
      "  --reps N        repetitions per --costs figure (medians are reported)\n"
      "  --quick         %llu kills, for a smoke test (an explicit --kills wins)\n"
      "  --json          one JSON object on one line instead of the table\n"
      "  --help          this text\n"
      "\n"
      "Exit status: 0 on success (whether or not the target is met: that is reported),\n"
      "1 if a message was lost, duplicated or not redelivered in time, or a child process\n"
      "failed or hung, 2 on a bad command line.\n",
      kProg, static_cast<unsigned long long>(kDefaultKills),
      static_cast<unsigned long long>(kMaxMessages),
      static_cast<unsigned long long>(kDefaultMessages),
      static_cast<unsigned long long>(kQuickKills));
}

bool parse_u64(std::string_view s, std::uint64_t lo, std::uint64_t hi, std::uint64_t& out) {
  std::uint64_t v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size() || v < lo || v > hi)
    return false;
  out = v;
  return true;
}

// Returns -1 to go on, or the exit status (0 after --help, 2 on a bad command line).
int parse_args(int argc, char** argv, Config& cfg) {
  auto bad = [](const std::string& msg) {
    std::fprintf(stderr, "%s: %s (try --help)\n", kProg, msg.c_str());
    return 2;
  };
  bool quick = false;
  bool set_kills = false;
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
    auto number = [&](std::uint64_t lo, std::uint64_t hi, std::uint64_t& out) {
      if (!has_val) {
        if (i + 1 >= argc) return bad(std::string(key) + " needs a value");
        val = argv[++i];
      }
      if (!parse_u64(val, lo, hi, out))
        return bad(std::string(key) + " must be a number from " + std::to_string(lo) + " to " +
                   std::to_string(hi) + ", got '" + std::string(val) + "'");
      return -1;
    };
    auto flag = [&](bool& out) {
      if (has_val) return bad(std::string(key) + " takes no value");
      out = true;
      return -1;
    };
    int rc = -1;
    if (key == "--help" || key == "-h") {
      if (has_val) return bad(std::string(key) + " takes no value");
      print_help();
      return 0;
    } else if (key == "--kills") {
      rc = number(1, 1'000'000, cfg.kills);
      set_kills = true;
    } else if (key == "--messages") {
      rc = number(1, kMaxMessages, cfg.messages);
    } else if (key == "--slots") {
      rc = number(2, 1u << 24, cfg.slots);
      if (rc == -1 && (cfg.slots & (cfg.slots - 1)) != 0)
        return bad("--slots must be a power of two");
    } else if (key == "--slot-size") {
      rc = number(128, 1u << 20, cfg.slot_size);
    } else if (key == "--no-daemon") {
      rc = flag(cfg.no_daemon);
    } else if (key == "--costs") {
      rc = flag(cfg.costs);
    } else if (key == "--reps") {
      rc = number(1, 1'000'000, cfg.reps);
    } else if (key == "--quick") {
      rc = flag(quick);
    } else if (key == "--json") {
      rc = flag(cfg.json);
    } else {
      return bad("unknown option '" + std::string(arg) + "'");
    }
    if (rc != -1) return rc;
  }
  if (quick && !set_kills) cfg.kills = kQuickKills;
  return -1;
}

// --- Small helpers ----------------------------------------------------------------------

template <typename T>
T take(shmq::Result<T> r, const std::string& what) {
  if (!r.ok()) fail(what + ": " + r.error().message());
  return std::move(r).value();
}

void check(shmq::Status s, const std::string& what) {
  if (s != shmq::Status::ok) fail(what + ": " + std::string(shmq::to_string(s)));
}

// Message ids carry the round (high 32 bits, from 1) and the index in the round (low bits).
std::uint64_t message_id(std::uint64_t round, std::uint64_t index) {
  return ((round + 1) << 32) | index;
}
std::string payload_for(std::uint64_t id) {
  return "recovery round " + std::to_string((id >> 32) - 1) + " message " +
         std::to_string(id & 0xffffffffu);
}

void write_all(int fd, const void* data, std::size_t n) {
  const auto* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) fail(std::string("write to parent: ") + std::strerror(errno));
    p += w;
    n -= static_cast<std::size_t>(w);
  }
}

// Reads exactly n bytes before `deadline`. Fails on a timeout, on EOF (the child exited
// or died) and on a signal to the parent.
void read_exact(int fd, void* data, std::size_t n, Clock::time_point deadline,
                const std::string& what) {
  auto* p = static_cast<char*>(data);
  while (n > 0) {
    check_signal();
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) fail("timed out waiting for " + what);
    pollfd pfd{fd, POLLIN, 0};
    const int pr = ::poll(&pfd, 1, static_cast<int>(left.count()));
    if (pr < 0 && errno == EINTR) continue;
    if (pr < 0) fail(std::string("poll: ") + std::strerror(errno));
    if (pr == 0) continue;  // re-check the deadline
    const ssize_t r = ::read(fd, p, n);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) fail(std::string("read: ") + std::strerror(errno));
    if (r == 0) fail("child exited before " + what);
    p += r;
    n -= static_cast<std::size_t>(r);
  }
}

// State letter of /proc/<pid>/stat (field 3), or 0 if it cannot be read.
char process_state(pid_t pid) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
  std::ifstream in(path);
  std::string line;
  if (!std::getline(in, line)) return 0;
  // Field 2 (comm) is in parentheses and may itself contain ") ": use the last ')'.
  const auto close = line.rfind(')');
  if (close == std::string::npos || close + 2 >= line.size()) return 0;
  return line[close + 2];
}

// --- Child processes -------------------------------------------------------------------

// A forked child with the read end of a pipe it writes to. Killed (SIGKILL) and reaped on
// destruction if still there, so every failure path leaves no process behind.
class Child {
 public:
  Child() = default;
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  ~Child() { kill_and_reap(); }

  // Forks; the child runs body(write_fd) and leaves with _exit(its result), or _exit(1)
  // after printing an exception. `role` names the child in messages.
  void spawn(std::string role, const std::function<int(int)>& body) {
    role_ = std::move(role);
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) fail(std::string("pipe: ") + std::strerror(errno));
    std::fflush(stdout);
    std::fflush(stderr);
    const pid_t parent = ::getpid();
    const pid_t pid = ::fork();
    if (pid < 0) {
      const int e = errno;
      ::close(fds[0]);
      ::close(fds[1]);
      fail(std::string("fork: ") + std::strerror(e));
    }
    if (pid == 0) {
      ::close(fds[0]);
      ::signal(SIGINT, SIG_DFL);
      ::signal(SIGTERM, SIG_DFL);
      // Die with the parent: a paused victim must not outlive a parent that crashed.
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(1);
      int rc = 1;
      try {
        rc = body(fds[1]);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "%s: %s (pid %d): %s\n", kProg, role_.c_str(),
                     static_cast<int>(::getpid()), e.what());
      } catch (...) {
        std::fprintf(stderr, "%s: %s: unknown exception\n", kProg, role_.c_str());
      }
      std::fflush(stderr);
      ::_exit(rc);
    }
    ::close(fds[1]);
    pid_ = pid;
    fd_ = fds[0];
  }

  pid_t pid() const { return pid_; }
  int fd() const { return fd_; }
  const std::string& role() const { return role_; }

  // Waits for the child to exit by itself before `deadline`; fails unless it exits 0.
  void wait_exit(Clock::time_point deadline) {
    int status = 0;
    for (;;) {
      const pid_t r = ::waitpid(pid_, &status, WNOHANG);
      if (r == pid_) break;
      if (r < 0 && errno != EINTR) fail("waitpid " + role_ + ": " + std::strerror(errno));
      check_signal();
      if (Clock::now() >= deadline) fail(role_ + " did not exit in time");
      ::usleep(200);
    }
    pid_ = -1;
    close_fd();
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
      fail(role_ + " " + describe_status(status));
  }

  // SIGKILL and reap at once; returns the wait status.
  int kill_now() {
    ::kill(pid_, SIGKILL);
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    pid_ = -1;
    close_fd();
    return status;
  }

  void kill_and_reap() noexcept {
    if (pid_ > 0) (void)kill_now();
    close_fd();
  }

 private:
  void close_fd() noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  pid_t pid_ = -1;
  int fd_ = -1;
  std::string role_;
};

// The victim: takes the round's M messages (first deliveries), reports 'H' and holds them
// unacked until it is killed.
int victim_main(const std::string& name, std::uint64_t round, std::uint64_t m, int out) {
  auto queue = take(shmq::Queue::open(name), "open " + name);
  auto consumer = take(queue.consumer(), "consumer");
  std::vector<shmq::Message> held(m);
  std::set<std::uint64_t> want;
  for (std::uint64_t i = 0; i < m; ++i) want.insert(message_id(round, i));
  for (auto& msg : held) {
    check(consumer.receive_for(msg, kStepTimeout), "victim receive");
    if (want.erase(msg.id()) != 1)
      fail("victim got unexpected message id " + std::to_string(msg.id()));
    if (msg.delivery_count() != 1)
      fail("victim got message " + std::to_string(msg.id()) + " with delivery count " +
           std::to_string(msg.delivery_count()));
  }
  write_all(out, "H", 1);
  for (;;) ::pause();  // holds the messages until SIGKILL
}

// What the live consumer reports per message.
struct Record {
  std::uint64_t recv_ns = 0;  // CLOCK_MONOTONIC right after receive returned
  std::uint64_t id = 0;
  std::uint32_t delivery_count = 0;
  std::uint32_t redelivered = 0;
  std::uint32_t payload_ok = 0;
  std::uint32_t pad = 0;
};
static_assert(std::is_trivially_copyable_v<Record>);

// The live consumer: reports 'R', sleeps in receive() until the redelivered messages come,
// acks each, then reports the M records and checks that nothing else is queued.
int live_main(const std::string& name, std::uint64_t m, int out) {
  auto queue = take(shmq::Queue::open(name), "open " + name);
  std::vector<Record> records(m);
  {
    auto consumer = take(queue.consumer(), "consumer");
    write_all(out, "R", 1);
    for (auto& rec : records) {
      shmq::Message msg;
      check(consumer.receive_for(msg, kStepTimeout), "live consumer receive");
      rec.recv_ns = now_ns();
      rec.id = msg.id();
      rec.delivery_count = msg.delivery_count();
      rec.redelivered = msg.redelivered() ? 1 : 0;
      rec.payload_ok = msg.view() == payload_for(msg.id()) ? 1 : 0;
      check(consumer.ack(msg), "live consumer ack");
    }
    // Records go out after the last receive, so the pipe writes do not delay it.
    write_all(out, records.data(), records.size() * sizeof(Record));
    shmq::Message extra;
    if (const auto s = consumer.try_receive(extra); s != shmq::Status::empty)
      fail(s == shmq::Status::ok
               ? "unexpected extra message id " + std::to_string(extra.id()) +
                     " (delivery count " + std::to_string(extra.delivery_count()) + ")"
               : "try_receive: " + std::string(shmq::to_string(s)));
  }  // the consumer closes (unregisters) before the process exits
  return 0;
}

// --- The parent ----------------------------------------------------------------------------

// Removes the queue and its dead-letter queue on every way out of main().
class QueueCleanup {
 public:
  explicit QueueCleanup(std::string name) : name_(std::move(name)) {}
  QueueCleanup(const QueueCleanup&) = delete;
  QueueCleanup& operator=(const QueueCleanup&) = delete;
  ~QueueCleanup() {
    (void)shmq::Queue::remove(name_);
    (void)shmq::Queue::remove(shmq::Queue::dead_letter_name(name_));
  }

 private:
  std::string name_;
};

struct RoundResult {
  std::uint64_t first_ns = 0;  // kill -> first redelivered message received
  std::uint64_t all_ns = 0;    // kill -> last of the M received
  bool asleep = false;         // the live consumer was seen asleep before the kill
};

RoundResult run_round(const std::string& name, shmq::Producer& producer, std::uint64_t round,
                      std::uint64_t m, std::chrono::nanoseconds pre_kill_delay) {
  // 1. The round's messages, sent while no consumer is attached.
  for (std::uint64_t i = 0; i < m; ++i) {
    const std::uint64_t id = message_id(round, i);
    check(producer.send_for(shmq::as_bytes(payload_for(id)), kStepTimeout, id), "send");
  }

  // 2. The victim takes them and holds them.
  Child victim;
  victim.spawn("victim consumer (round " + std::to_string(round) + ")",
               [&](int fd) { return victim_main(name, round, m, fd); });
  char c = 0;
  read_exact(victim.fd(), &c, 1, Clock::now() + kStepTimeout, "the victim to hold its messages");
  if (c != 'H') fail("victim sent an unexpected byte");

  // 3. A fresh live consumer, which finds nothing and goes to sleep in receive().
  Child live;
  live.spawn("live consumer (round " + std::to_string(round) + ")",
             [&](int fd) { return live_main(name, m, fd); });
  read_exact(live.fd(), &c, 1, Clock::now() + kStepTimeout, "the live consumer to start");
  if (c != 'R') fail("live consumer sent an unexpected byte");
  RoundResult res;
  const auto asleep_deadline = Clock::now() + kAsleepTimeout;
  while (Clock::now() < asleep_deadline) {
    check_signal();
    const char st = process_state(live.pid());
    if (st == 'S') {
      res.asleep = true;
      break;
    }
    if (st == 0 || st == 'Z') fail(live.role() + " exited before the kill");
    ::usleep(100);
  }

  // 4. A random phase against the watchdog's tick, then kill the victim and reap it.
  std::this_thread::sleep_for(pre_kill_delay);
  check_signal();
  const std::uint64_t t0 = now_ns();
  const int status = victim.kill_now();
  if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL)
    fail("victim ended before it was killed: it " + describe_status(status));

  // 5. The live consumer's report of the redelivery.
  std::vector<Record> records(m);
  read_exact(live.fd(), records.data(), records.size() * sizeof(Record),
             Clock::now() + kStepTimeout, "the redelivered messages");
  live.wait_exit(Clock::now() + kStepTimeout);

  std::set<std::uint64_t> want;
  for (std::uint64_t i = 0; i < m; ++i) want.insert(message_id(round, i));
  std::uint64_t first = UINT64_MAX;
  std::uint64_t last = 0;
  for (const Record& r : records) {
    const std::string what = "round " + std::to_string(round) + ": message id " +
                             std::to_string(r.id);
    if (want.erase(r.id) != 1) fail(what + " was not expected (duplicate or foreign)");
    if (r.delivery_count != 2 || r.redelivered != 1)
      fail(what + " came with delivery count " + std::to_string(r.delivery_count) +
           (r.redelivered ? ", redelivered" : ", not redelivered") + " (want 2, redelivered)");
    if (r.payload_ok != 1) fail(what + " came with a wrong payload");
    if (r.recv_ns < t0) fail(what + " reached the live consumer before the kill");
    first = std::min(first, r.recv_ns);
    last = std::max(last, r.recv_ns);
  }
  if (!want.empty()) fail("round " + std::to_string(round) + ": messages lost");
  res.first_ns = first - t0;
  res.all_ns = last - t0;
  return res;
}

// Final accounting from the queue's counters (nothing else runs by then but the watchdog).
// `base`: the counters before the first round (the ring was filled and drained once).
void check_totals(const shmq::Queue& queue, const shmq::QueueStats& base, std::uint64_t kills,
                  std::uint64_t m) {
  shmq::QueueStats s = queue.stats();
  s.sent -= base.sent;
  s.acked -= base.acked;
  const std::uint64_t total = kills * m;
  std::string bad;
  auto expect = [&](const char* what, std::uint64_t got, std::uint64_t want) {
    if (got != want)
      bad += std::string(bad.empty() ? "" : ", ") + what + " " + std::to_string(got) +
             " (want " + std::to_string(want) + ")";
  };
  expect("sent", s.sent, total);
  expect("acked", s.acked, total);
  expect("ready", s.ready, 0);
  expect("in_flight", s.in_flight, 0);
  expect("consumers", s.consumers, 0);
  expect("redelivered", s.redelivered, total);
  // Each victim had its consumer's row and, unless disabled, its embedded watchdog's.
  expect("members_reclaimed", s.members_reclaimed, kills * (shmq::embedded_watchdog() ? 2 : 1));
  expect("leases_expired", s.leases_expired, 0);
  expect("dead_lettered", s.dead_lettered, 0);
  if (!bad.empty()) fail("queue counters after the run: " + bad);
  // The dead-letter queue exists only if something was dead-lettered.
  if (auto dlq = shmq::Queue::open(shmq::Queue::dead_letter_name(queue.name())); dlq.ok()) {
    const shmq::QueueStats d = dlq->stats();
    if (d.ready + d.in_flight != 0)
      fail("the dead-letter queue holds " + std::to_string(d.ready + d.in_flight) + " messages");
  }
}

// --- Output ----------------------------------------------------------------------------

struct Percentiles {
  std::uint64_t p50 = 0, p90 = 0, p99 = 0, max = 0;
};

// Nearest rank (shmq_bench::percentile) over every round.
Percentiles percentiles(std::vector<std::uint64_t> v) {
  std::sort(v.begin(), v.end());
  auto at = [&](double p) { return shmq_bench::percentile(v, p); };
  return {at(0.50), at(0.90), at(0.99), v.back()};
}

double ms(std::uint64_t ns) { return static_cast<double>(ns) / 1e6; }


// --- Costs by ring size (issue 10: work proportional to what changed) ----------------------
//
// Each figure is the median of --reps repetitions on a ring that was filled and drained once
// (so [tail - N, tail), the window of positions a message can be at, is the whole ring),
// with CPU time read from the kernel (getrusage, CLOCK_THREAD_CPUTIME_ID) beside wall time.

std::uint64_t thread_cpu_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return std::uint64_t(ts.tv_sec) * 1'000'000'000ull + std::uint64_t(ts.tv_nsec);
}

std::uint64_t process_cpu_ns() {
  rusage ru{};
  ::getrusage(RUSAGE_SELF, &ru);
  auto ns = [](const timeval& tv) {
    return std::uint64_t(tv.tv_sec) * 1'000'000'000ull + std::uint64_t(tv.tv_usec) * 1000ull;
  };
  return ns(ru.ru_utime) + ns(ru.ru_stime);
}

// Sends and acks `count` messages through `producer` and `consumer`, in batches, so that
// the tail moves on by `count` and nothing is left in the ring.
void run_through(shmq::Producer& producer, shmq::Consumer& consumer, std::uint64_t count) {
  constexpr std::size_t kBatch = 256;
  const std::string body = "wrap";
  std::vector<shmq::Bytes> out(kBatch, shmq::as_bytes(body));
  std::vector<shmq::Message> in(kBatch);
  std::uint64_t done = 0;
  while (done < count) {
    const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(kBatch, count - done));
    shmq::Status st = shmq::Status::ok;
    const std::size_t sent = producer.send_batch({out.data(), n}, kStepTimeout, &st);
    if (sent != n) fail("wrap: send_batch: " + std::string(shmq::to_string(st)));
    std::size_t got = 0;
    while (got < n) {
      const std::size_t r = consumer.receive_batch({in.data() + got, n - got}, kStepTimeout);
      if (r == 0) fail("wrap: receive_batch timed out");
      got += r;
    }
    check(consumer.ack(std::span<shmq::Message>(in.data(), n)), "wrap: ack");
    done += n;
  }
}

struct CostRow {
  std::string name;
  std::string unit;   // "ms", "us", "%"
  double value = 0;   // median
  double min = 0;
  double max = 0;
  std::string note;
};

CostRow row_of(std::string name, std::string unit, std::vector<double> v, std::string note = "") {
  const shmq_bench::Spread sp = shmq_bench::spread_of(std::move(v));
  return {std::move(name), std::move(unit), sp.median, sp.min, sp.max, std::move(note)};
}

// Runs `body` in a forked child that reports two doubles through a pipe; returns them.
std::pair<double, double> in_child(const std::string& role,
                                   const std::function<std::pair<double, double>()>& body) {
  Child child;
  child.spawn(role, [&](int fd) {
    const std::pair<double, double> v = body();
    const double both[2] = {v.first, v.second};
    write_all(fd, both, sizeof both);
    return 0;
  });
  double both[2] = {0, 0};
  read_exact(child.fd(), both, sizeof both, Clock::now() + std::chrono::seconds(120), role);
  child.wait_exit(Clock::now() + std::chrono::seconds(60));
  return {both[0], both[1]};
}

std::vector<CostRow> measure_costs(const Config& cfg) {
  shmq::QueueOptions qopts;
  if (cfg.slots != 0) qopts.slot_count = static_cast<std::uint32_t>(cfg.slots);
  if (cfg.slot_size != 0) qopts.slot_size = static_cast<std::uint32_t>(cfg.slot_size);
  const std::string name = "bench-costs-" + std::to_string(::getpid());
  QueueCleanup cleanup(name);
  const std::uint64_t reps_fast = cfg.reps != 0 ? cfg.reps : 21;  // sub-second figures
  const std::uint64_t reps_slow = cfg.reps != 0 ? cfg.reps : 3;   // 2-second figures
  const shmq::WatchdogOptions wopts;
  const double interval_ns = static_cast<double>(
      std::chrono::nanoseconds(wopts.interval).count());
  std::vector<CostRow> rows;

  // Nothing in this process heals except the objects made below on purpose.
  shmq::set_embedded_watchdog(false);
  auto queue = take(shmq::Queue::create(name, qopts), "create queue " + name);
  auto producer = take(queue.producer(), "producer");
  auto consumer = take(queue.consumer(), "consumer");
  run_through(producer, consumer, queue.slot_count());

  // 1. Watchdog ticks on the idle queue (elected; called directly, in this thread): the
  // first ones after its election, then once it has settled (a watchdog may catch up on
  // the ring over its first ticks: N / 32 Ki of them are allowed for).
  {
    auto wd = take(shmq::Watchdog::attach(queue, wopts), "attach watchdog");
    if (!wd.tick().active) fail("the bench's watchdog was not elected");
    std::vector<double> cpu, share;
    auto ticks = [&](const std::string& what) {
      cpu.clear();
      share.clear();
      for (std::uint64_t i = 0; i < reps_fast; ++i) {
        const std::uint64_t c0 = thread_cpu_ns();
        (void)wd.tick();
        const double c = static_cast<double>(thread_cpu_ns() - c0);
        cpu.push_back(c / 1e6);
        share.push_back(100.0 * c / interval_ns);
      }
      rows.push_back(row_of("watchdog tick, " + what + " (CPU)", "ms", cpu));
      rows.push_back(row_of("  = share of a core at 5 ms ticks, " + what, "%", share));
    };
    ticks("just elected");
    for (std::uint64_t i = 0; i < queue.slot_count() / 32768 + 4; ++i) (void)wd.tick();
    ticks("idle queue");

    // The same with one message held (lease 30 s) about N positions behind the tail.
    shmq::Message old;
    check(producer.send(shmq::as_bytes(std::string("old"))), "send");
    check(consumer.receive_for(old, kStepTimeout), "receive");
    {
      auto other = take(queue.consumer(), "consumer");
      run_through(producer, other, queue.slot_count() - 2);
    }
    // The positions just produced are classified first (32 Ki a tick, what a burst of N
    // messages costs the watchdog once): measured apart, then the settled ticks.
    ticks("catching up on N-2 new positions");
    for (std::uint64_t i = 0; i < queue.slot_count() / 32768 + 4; ++i) (void)wd.tick();
    ticks("1 held N-1 behind tail");
    check(consumer.ack(old), "ack");
    run_through(producer, consumer, 1);
  }

  // 2. An idle process with a consumer and its embedded watchdog, elected (nothing else
  // runs a watchdog) or standing by (the bench's own Watchdog thread is elected): its CPU
  // over 2 s, after 6 s to settle (a watchdog just elected on a ring that has gone round
  // may first catch up on it: the CPU of those 6 s is reported too). "Ring mapped": the
  // process first sent and acked one lap of messages itself, so its page tables map the
  // whole ring, as a long-running service's do (on some VMs every wake-up of such a process
  // costs more).
  auto idle_process = [&](const char* role, bool went_round) {
    return in_child(role, [&] {
      shmq::set_embedded_watchdog(true);
      auto q = take(shmq::Queue::open(name), "open " + name);
      std::optional<shmq::Producer> pr;
      if (went_round) pr.emplace(take(q.producer(), "producer"));
      auto c = take(q.consumer(), "consumer");
      if (went_round) run_through(*pr, c, q.slot_count());
      const std::uint64_t s0 = process_cpu_ns();
      std::this_thread::sleep_for(std::chrono::seconds(6));
      const std::uint64_t c0 = process_cpu_ns();
      const std::uint64_t t0 = now_ns();
      std::this_thread::sleep_for(std::chrono::seconds(2));
      return std::pair<double, double>(
          static_cast<double>(c0 - s0) / 1e6,
          100.0 * static_cast<double>(process_cpu_ns() - c0) / static_cast<double>(now_ns() - t0));
    });
  };
  {
    auto idle_rows = [&](const char* who, const char* note) {
      for (const bool went_round : {false, true}) {
        std::vector<double> settle, share;
        for (std::uint64_t i = 0; i < reps_slow; ++i) {
          const auto [settle_ms, pct] = idle_process(who, went_round);
          settle.push_back(settle_ms);
          share.push_back(pct);
        }
        const std::string what =
            std::string("idle process, watchdog ") + who + (went_round ? ", ring mapped" : "");
        rows.push_back(row_of(what, "%", share, note));
        rows.push_back(row_of("  its first 6 s, " + what.substr(14), "ms", settle,
                              "CPU while settling (a new watchdog catching up)"));
      }
    };
    idle_rows("elected", "CPU of the whole process over 2 s / 2 s");
    auto wd = take(shmq::Watchdog::attach(queue, wopts), "attach watchdog");
    wd.start();
    idle_rows("standing by", "another process's watchdog is elected");
  }

  // 3. receive_for(2 s) on the empty queue: CPU of the receiving thread.
  {
    std::vector<double> cpu;
    for (std::uint64_t i = 0; i < reps_slow; ++i) {
      shmq::Message m;
      const std::uint64_t c0 = thread_cpu_ns();
      const shmq::Status s = consumer.receive_for(m, std::chrono::seconds(2));
      cpu.push_back(static_cast<double>(thread_cpu_ns() - c0) / 1e6);
      if (s != shmq::Status::timeout) fail("idle receive_for: " + std::string(shmq::to_string(s)));
    }
    rows.push_back(row_of("idle receive_for(2 s) (CPU)", "ms", cpu));
    // The same thread sleeping as often with no queue involved: what waking up costs in
    // this process on this machine.
    cpu.clear();
    for (std::uint64_t i = 0; i < reps_slow; ++i) {
      const std::uint64_t c0 = thread_cpu_ns();
      for (int k = 0; k < 8; ++k) std::this_thread::sleep_for(std::chrono::milliseconds(250));
      cpu.push_back(static_cast<double>(thread_cpu_ns() - c0) / 1e6);
    }
    rows.push_back(row_of("  for comparison: 8 sleeps of 250 ms (CPU)", "ms", cpu,
                          "no queue: the machine's cost of waking this process"));
  }

  // 4. An ordinary receive, the receive after a nack (the nacked message, now behind the
  // dispatch cursor), and the receive after that (a fresh message).
  {
    std::vector<double> ordinary, after_nack, next;
    for (std::uint64_t i = 0; i < reps_fast; ++i) {
      check(producer.send(shmq::as_bytes(std::string("a"))), "send");
      check(producer.send(shmq::as_bytes(std::string("b"))), "send");
      shmq::Message a, again, b;
      auto t0 = now_ns();
      check(consumer.receive_for(a, kStepTimeout), "receive");
      ordinary.push_back(static_cast<double>(now_ns() - t0) / 1e3);
      check(consumer.nack(a), "nack");
      t0 = now_ns();
      check(consumer.receive_for(again, kStepTimeout), "receive after nack");
      after_nack.push_back(static_cast<double>(now_ns() - t0) / 1e3);
      if (again.view() != "a" || !again.redelivered())
        fail("the nacked message did not come back first");
      t0 = now_ns();
      check(consumer.receive_for(b, kStepTimeout), "receive");
      next.push_back(static_cast<double>(now_ns() - t0) / 1e3);
      if (b.view() != "b") fail("expected message b");
      check(consumer.ack(again), "ack");
      check(consumer.ack(b), "ack");
    }
    rows.push_back(row_of("receive, ordinary (wall)", "us", ordinary));
    rows.push_back(row_of("receive after a nack (wall)", "us", after_nack));
    rows.push_back(row_of("the receive after that (wall)", "us", next));
  }

  // 5. Opening and closing handles: with a consumer of this process already open (its
  // embedded watchdog running: the handle's own cost), and as the process's only handle
  // (starting and stopping the embedded watchdog too).
  {
    shmq::set_embedded_watchdog(true);
    auto time_open_close = [&](auto open) {
      std::vector<double> wall;
      for (std::uint64_t i = 0; i < reps_fast; ++i) {
        const auto t0 = now_ns();
        { auto h = open(); }
        wall.push_back(static_cast<double>(now_ns() - t0) / 1e6);
      }
      return wall;
    };
    auto open_producer = [&] { return take(queue.producer(), "producer"); };
    auto open_consumer = [&] { return take(queue.consumer(), "consumer"); };
    rows.push_back(row_of("open + close a producer, only handle (wall)", "ms",
                          time_open_close(open_producer),
                          "starts and stops the embedded watchdog"));
    rows.push_back(row_of("open + close a consumer, only handle (wall)", "ms",
                          time_open_close(open_consumer)));
    auto keep = take(queue.consumer(), "consumer");  // starts this process's watchdog
    rows.push_back(row_of("open + close a producer, watchdog running (wall)", "ms",
                          time_open_close(open_producer)));
    rows.push_back(row_of("open + close a consumer, watchdog running (wall)", "ms",
                          time_open_close(open_consumer)));
    shmq::set_embedded_watchdog(false);
  }
  return rows;
}

int run_costs(const Config& cfg) {
  const Machine machine = describe_machine();
  std::vector<CostRow> rows;
  shmq::QueueOptions defaults;
  const std::uint64_t slots = cfg.slots != 0 ? cfg.slots : defaults.slot_count;
  const std::uint64_t slot_size = cfg.slot_size != 0 ? cfg.slot_size : defaults.slot_size;
  try {
    rows = measure_costs(cfg);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s --costs: %s\n", kProg, e.what());
    return 1;
  }
  if (cfg.json) {
    for (const CostRow& r : rows) {
      std::printf("{\"scenario\":\"costs\",\"slots\":%llu,\"slot_size\":%llu,\"figure\":%s,"
                  "\"unit\":%s,\"median\":%.6g,\"min\":%.6g,\"max\":%.6g,\"load\":%s}\n",
                  static_cast<unsigned long long>(slots),
                  static_cast<unsigned long long>(slot_size), json_string(r.name).c_str(),
                  json_string(r.unit).c_str(), r.value, r.min, r.max,
                  json_string(shmq_bench::loadavg()).c_str());
    }
    return 0;
  }
  std::printf("%s --costs: %llu slots of %llu bytes; machine: %s, %ld online cores, %s, load %s\n",
              kProg, static_cast<unsigned long long>(slots),
              static_cast<unsigned long long>(slot_size), machine.cpu.c_str(), machine.cores,
              machine.kernel.c_str(), machine.load.c_str());
  std::printf("%-52s %12s %12s %12s  %s\n", "figure (median of reps)", "median", "min", "max",
              "");
  for (const CostRow& r : rows)
    std::printf("%-52s %9.3f %-2s %9.3f %-2s %9.3f %-2s %s\n", r.name.c_str(), r.value,
                r.unit.c_str(), r.min, r.unit.c_str(), r.max, r.unit.c_str(), r.note.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Config cfg;
  if (const int rc = parse_args(argc, argv, cfg); rc != -1) return rc;

  // SIGINT/SIGTERM without SA_RESTART (poll() returns EINTR and the run cleans up),
  // SIGPIPE ignored.
  shmq_bench::install_signal_handlers();

  if (cfg.costs) return run_costs(cfg);

  shmq::QueueOptions qopts;           // the defaults are what is measured
  if (cfg.slots != 0) qopts.slot_count = static_cast<std::uint32_t>(cfg.slots);
  if (cfg.slot_size != 0) qopts.slot_size = static_cast<std::uint32_t>(cfg.slot_size);
  const shmq::WatchdogOptions wopts;  // likewise
  const std::string name = "bench-recovery-" + std::to_string(::getpid());
  const Machine machine = describe_machine();

  if (!cfg.json) {
    std::printf("%s: time from SIGKILL of a consumer holding unacked messages to their\n"
                "redelivery to a live consumer asleep in receive()\n",
                kProg);
    std::printf("machine:   %s, %ld online cores, %s\n", machine.cpu.c_str(), machine.cores,
                machine.kernel.c_str());
    std::printf("settings:  default QueueOptions (lease %lld ms, max_deliveries %u, liveness by"
                " pid and start time),\n"
                "           %u slots of %u bytes (ring filled and drained once first),\n"
                "           %s,\n"
                "           %llu messages held by each killed consumer, %llu kills\n",
                static_cast<long long>(qopts.lease.count()), qopts.max_deliveries,
                qopts.slot_count, qopts.slot_size,
                cfg.no_daemon
                    ? "no daemon: healed by the watchdogs embedded in the processes (the"
                      " elected one ticks every 5 ms)"
                    : "default WatchdogOptions (background thread, tick every 5 ms, as shmqd)",
                static_cast<unsigned long long>(cfg.messages),
                static_cast<unsigned long long>(cfg.kills));
    std::printf("timing:    t0 = CLOCK_MONOTONIC just before kill(SIGKILL), after a random"
                " delay (uniform\n"
                "           within one watchdog interval) so kills fall at every phase of the"
                " tick; the live\n"
                "           consumer reads CLOCK_MONOTONIC after each receive() returns (it acks"
                " each)\n\n");
    std::fflush(stdout);
  }

  std::vector<std::uint64_t> all_ns;
  std::vector<std::uint64_t> first_ns;
  std::uint64_t asleep = 0;
  try {
    QueueCleanup cleanup(name);
    auto queue = take(shmq::Queue::create(name, qopts), "create queue " + name);
    // --no-daemon: the producer's embedded watchdog (started with it) is elected instead.
    std::optional<shmq::Watchdog> watchdog;
    if (!cfg.no_daemon) {
      watchdog.emplace(take(shmq::Watchdog::attach(queue, wopts), "attach watchdog"));
      watchdog->start();
    }
    auto producer = take(queue.producer(), "producer");
    {
      // One lap of the ring first: the window [tail - N, tail) is then the whole ring.
      auto consumer = take(queue.consumer(), "consumer");
      run_through(producer, consumer, queue.slot_count());
    }
    const shmq::QueueStats base = queue.stats();
    // Fixed seed: the same sequence of phases on every run.
    std::mt19937_64 rng(0x5eed);
    std::uniform_int_distribution<std::int64_t> phase(
        0, std::chrono::nanoseconds(wopts.interval).count() - 1);
    for (std::uint64_t round = 0; round < cfg.kills; ++round) {
      check_signal();
      const RoundResult r =
          run_round(name, producer, round, cfg.messages, std::chrono::nanoseconds(phase(rng)));
      all_ns.push_back(r.all_ns);
      first_ns.push_back(r.first_ns);
      if (r.asleep) ++asleep;
    }
    check_totals(queue, base, cfg.kills, cfg.messages);
    if (watchdog) watchdog->stop();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: failed after %zu of %llu kills: %s\n", kProg, all_ns.size(),
                 static_cast<unsigned long long>(cfg.kills), e.what());
    return 1;
  }

  const Percentiles all = percentiles(all_ns);
  const Percentiles first = percentiles(first_ns);
  const bool met = all.p99 < kTargetP99Ns;

  if (cfg.json) {
    auto u = [](std::uint64_t v) { return std::to_string(v); };
    std::string line = "{\"scenario\":\"recovery\"";
    line += ",\"kills\":" + u(cfg.kills);
    line += ",\"messages_per_kill\":" + u(cfg.messages);
    line += ",\"slots\":" + u(qopts.slot_count) + ",\"slot_size\":" + u(qopts.slot_size);
    line += ",\"no_daemon\":" + std::string(cfg.no_daemon ? "true" : "false");
    line += ",\"p50_ns\":" + u(all.p50) + ",\"p90_ns\":" + u(all.p90) +
            ",\"p99_ns\":" + u(all.p99) + ",\"max_ns\":" + u(all.max);
    line += ",\"first_p50_ns\":" + u(first.p50) + ",\"first_p90_ns\":" + u(first.p90) +
            ",\"first_p99_ns\":" + u(first.p99) + ",\"first_max_ns\":" + u(first.max);
    line += ",\"target_p99_ns\":" + u(kTargetP99Ns) +
            ",\"target_met\":" + std::string(met ? "true" : "false");
    line += ",\"consumer_asleep_at_kill\":" + u(asleep);
    line += ",\"watchdog_interval_ms\":" +
            std::to_string(static_cast<long long>(wopts.interval.count()));
    line += ",\"lease_ms\":" + std::to_string(static_cast<long long>(qopts.lease.count()));
    line += ",\"cpu\":" + json_string(machine.cpu) + ",\"cores\":" +
            std::to_string(machine.cores) + ",\"kernel\":" + json_string(machine.kernel) + "}";
    std::printf("%s\n", line.c_str());
  } else {
    std::printf("%-28s %10s %10s %10s %10s\n", "", "p50 ms", "p90 ms", "p99 ms", "max ms");
    std::printf("%-28s %10.3f %10.3f %10.3f %10.3f\n", "kill -> first redelivered",
                ms(first.p50), ms(first.p90), ms(first.p99), ms(first.max));
    std::printf("%-28s %10.3f %10.3f %10.3f %10.3f\n", "kill -> all redelivered", ms(all.p50),
                ms(all.p90), ms(all.p99), ms(all.max));
    std::printf("\nkills: %llu, messages redelivered: %llu (each once, delivery count 2), lost: 0\n",
                static_cast<unsigned long long>(cfg.kills),
                static_cast<unsigned long long>(cfg.kills * cfg.messages));
    std::printf("live consumer seen asleep in receive() at the kill: %llu of %llu\n",
                static_cast<unsigned long long>(asleep),
                static_cast<unsigned long long>(cfg.kills));
    std::printf("target: p99 of kill -> all redelivered under %.0f ms: %s (%.3f ms)\n",
                ms(kTargetP99Ns), met ? "met" : "NOT MET", ms(all.p99));
  }
  return 0;
}
