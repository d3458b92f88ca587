// shmq-bench-ipc: cross-process throughput and round-trip latency of shmq, against
// Boost.Interprocess message_queue (what users would pick instead) and a bare lock-free
// SPSC ring in shared memory (no acks, no durability: the practical limit).
//
// Every side is a real process made with fork(). The parent creates the named queues,
// drops its own handles, and forks; each child opens the queues by name, tells the parent
// it is ready, and waits for a common start signal. Children report their timings through
// a pipe; the parent reaps them and fails (exit 1) if any of them failed, hung or died.
//
// Scenarios (1 producer process, 1 consumer process):
//   <transport>-throughput  N messages, each received and (shmq) acked individually.
//                           Timed from the producer's first send to the consumer's last
//                           receive/ack, on CLOCK_MONOTONIC, which both processes share.
//   <transport>-roundtrip   Ping-pong over two queues. A sends on ping, B receives (and
//                           acks) and sends the payload back on pong, A receives (and
//                           acks). A times every round trip with steady_clock
//                           (CLOCK_MONOTONIC) after a warm-up.
//
// shmq uses its blocking send()/receive() (spin briefly, then sleep on a futex), which is
// what applications use. Boost message_queue blocks on a process-shared mutex and
// condition. The bare ring busy-spins.
//
// The table's "sleeps" column counts the voluntary context switches of both processes
// (getrusage) during the run: how often a side went to sleep instead of spinning.
//
// Every consumer copies the payload out of the queue and checks the sequence number the
// producer wrote into its first 8 bytes, so a lost, doubled or reordered message fails
// the run instead of inflating the numbers.

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <boost/interprocess/ipc/message_queue.hpp>
#include <boost/interprocess/mapped_region.hpp>
#include <boost/interprocess/permissions.hpp>
#include <boost/interprocess/shared_memory_object.hpp>

#include "shmq/shmq.hpp"

namespace {

namespace bip = boost::interprocess;
using Clock = std::chrono::steady_clock;

constexpr const char* kProg = "shmq-bench-ipc";
constexpr std::uint32_t kCapacity = 1024;  // messages per queue, for every transport
constexpr std::size_t kMinSize = 8;        // room for the sequence number
constexpr std::size_t kMaxSize = 65536;

// --- Configuration and flags ----------------------------------------------------------

struct Config {
  std::uint64_t messages = 2'000'000;
  std::uint64_t samples = 200'000;
  std::uint64_t warmup = 20'000;
  std::size_t size = 64;
  std::uint64_t timeout_s = 0;  // 0: derived from the message counts
  bool json = false;
  bool run_shmq = true;
  bool run_boost = true;
  bool run_bare = true;
};

void print_help() {
  std::printf(
      "usage: %s [options]\n"
      "\n"
      "Cross-process benchmark: shmq against Boost.Interprocess message_queue and a bare\n"
      "SPSC ring in shared memory. One producer process and one consumer process.\n"
      "\n"
      "options:\n"
      "  --messages N    messages per throughput scenario (default 2000000)\n"
      "  --samples N     timed round trips per round-trip scenario (default 200000)\n"
      "  --warmup N      untimed round trips before the samples (default 20000)\n"
      "  --size N        message size in bytes, %zu..%zu (default 64)\n"
      "  --only LIST     comma-separated transports to run: shmq,boost,bare (default all)\n"
      "  --timeout S     kill the processes of a scenario after S seconds (default: derived\n"
      "                  from the counts; a hang makes the run fail)\n"
      "  --quick         small counts for a smoke test (50000 messages, 5000 samples, 500\n"
      "                  warm-up); explicit --messages/--samples/--warmup still win\n"
      "  --json          one JSON object per line per scenario instead of the table\n"
      "  --help          this text\n"
      "\n"
      "Exit status: 0 on success, 1 if a scenario failed, 2 on a bad command line.\n",
      kProg, kMinSize, kMaxSize);
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
  bool set_messages = false;
  bool set_samples = false;
  bool set_warmup = false;
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
    auto take_value = [&]() {
      if (has_val) return true;
      if (i + 1 >= argc) return false;
      val = argv[++i];
      return true;
    };
    auto number = [&](std::uint64_t lo, std::uint64_t hi, std::uint64_t& out) {
      if (!take_value()) return bad(std::string(key) + " needs a value");
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
      print_help();
      return 0;
    } else if (key == "--messages") {
      rc = number(1, 10'000'000'000ULL, cfg.messages);
      set_messages = true;
    } else if (key == "--samples") {
      rc = number(1, 100'000'000ULL, cfg.samples);
      set_samples = true;
    } else if (key == "--warmup") {
      rc = number(0, 100'000'000ULL, cfg.warmup);
      set_warmup = true;
    } else if (key == "--size") {
      std::uint64_t v = 0;
      rc = number(kMinSize, kMaxSize, v);
      cfg.size = static_cast<std::size_t>(v);
    } else if (key == "--timeout") {
      rc = number(1, 86'400, cfg.timeout_s);
    } else if (key == "--quick") {
      rc = flag(quick);
    } else if (key == "--json") {
      rc = flag(cfg.json);
    } else if (key == "--only") {
      if (!take_value()) return bad("--only needs a value");
      cfg.run_shmq = cfg.run_boost = cfg.run_bare = false;
      std::string_view rest = val;
      while (true) {
        const auto comma = rest.find(',');
        const std::string_view t = rest.substr(0, comma);
        if (t == "shmq") cfg.run_shmq = true;
        else if (t == "boost") cfg.run_boost = true;
        else if (t == "bare") cfg.run_bare = true;
        else return bad("--only: unknown transport '" + std::string(t) + "' (shmq, boost, bare)");
        if (comma == std::string_view::npos) break;
        rest = rest.substr(comma + 1);
      }
    } else {
      return bad("unknown option '" + std::string(arg) + "'");
    }
    if (rc != -1) return rc;
  }
  if (quick) {
    if (!set_messages) cfg.messages = 50'000;
    if (!set_samples) cfg.samples = 5'000;
    if (!set_warmup) cfg.warmup = 500;
  }
  return -1;
}

// --- Small helpers ----------------------------------------------------------------------

std::uint64_t now_ns() {
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
          .count());
}

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

void put_seq(std::byte* buf, std::uint64_t seq) { std::memcpy(buf, &seq, sizeof seq); }
std::uint64_t get_seq(const std::byte* buf) {
  std::uint64_t seq = 0;
  std::memcpy(&seq, buf, sizeof seq);
  return seq;
}

std::size_t round_up(std::size_t v, std::size_t a) { return (v + a - 1) / a * a; }

[[noreturn]] void fail(const std::string& what) { throw std::runtime_error(what); }

template <typename T>
T take(shmq::Result<T> r, const std::string& what) {
  if (!r.ok()) fail(what + ": " + r.error().message());
  return std::move(r).value();
}

// --- Transport: shmq -----------------------------------------------------------------------

struct ShmqTransport {
  static constexpr const char* kName = "shmq";

  // slot_size: the 64-byte slot header plus the payload, in whole cache lines, at least
  // 128, so that every message is one slot (received zero-copy).
  static std::uint32_t slot_size(std::size_t size) {
    return static_cast<std::uint32_t>(std::max<std::size_t>(round_up(size + 64, 64), 128));
  }

  static std::string object_name(const std::string& base) { return "bench-ipc-" + base; }

  static void create(const std::string& name, const Config& cfg) {
    shmq::QueueOptions o;
    o.slot_count = kCapacity;
    o.slot_size = slot_size(cfg.size);
    o.mode = 0600;
    // The handle is dropped at once: children open the queue by name.
    (void)take(shmq::Queue::create(name, o), "create shmq queue");
  }

  static void remove(const std::string& name) noexcept { (void)shmq::Queue::remove(name); }

  class Sender {
   public:
    explicit Sender(const std::string& name)
        : p_(take(take(shmq::Queue::open(name), "open " + name).producer(), "producer")) {}
    void send(const std::byte* data, std::size_t n) {
      if (const auto s = p_.send(shmq::Bytes(data, n)); s != shmq::Status::ok)
        fail("shmq send: " + std::string(shmq::to_string(s)));
    }

   private:
    shmq::Producer p_;
  };

  class Receiver {
   public:
    explicit Receiver(const std::string& name)
        : c_(take(take(shmq::Queue::open(name), "open " + name).consumer(), "consumer")) {}
    // Receives one message, copies it to buf and acks it.
    std::size_t receive(std::byte* buf, std::size_t cap) {
      if (const auto s = c_.receive(m_); s != shmq::Status::ok)
        fail("shmq receive: " + std::string(shmq::to_string(s)));
      const std::size_t n = m_.size();
      if (n > cap) fail("shmq receive: message of " + std::to_string(n) + " bytes");
      std::memcpy(buf, m_.data().data(), n);
      if (const auto s = c_.ack(m_); s != shmq::Status::ok)
        fail("shmq ack: " + std::string(shmq::to_string(s)));
      return n;
    }

   private:
    shmq::Consumer c_;
    shmq::Message m_;
  };
};

// --- Transport: Boost.Interprocess message_queue --------------------------------------

struct BoostTransport {
  static constexpr const char* kName = "boost";

  static std::string object_name(const std::string& base) { return "shmq-bench-boost-" + base; }

  static void create(const std::string& name, const Config& cfg) {
    try {
      bip::message_queue mq(bip::create_only, name.c_str(), kCapacity, cfg.size,
                            bip::permissions(0600));
    } catch (const bip::interprocess_exception& e) {
      fail("create boost message_queue " + name + ": " + e.what());
    }
  }

  static void remove(const std::string& name) noexcept {
    bip::message_queue::remove(name.c_str());
  }

  class Sender {
   public:
    explicit Sender(const std::string& name) : mq_(bip::open_only, name.c_str()) {}
    void send(const std::byte* data, std::size_t n) { mq_.send(data, n, 0); }

   private:
    bip::message_queue mq_;
  };

  class Receiver {
   public:
    explicit Receiver(const std::string& name) : mq_(bip::open_only, name.c_str()) {}
    std::size_t receive(std::byte* buf, std::size_t cap) {
      bip::message_queue::size_type n = 0;
      unsigned priority = 0;
      mq_.receive(buf, cap, n, priority);
      return static_cast<std::size_t>(n);
    }

   private:
    bip::message_queue mq_;
  };
};

// --- Transport: bare SPSC ring (the practical limit) -----------------------------------
//
// One producer, one consumer, fixed-size messages in a power-of-two array of 64-byte
// (cache-line multiple) slots; no acks, no durability, no wake-ups: both sides busy-spin.

struct BareRingHeader {
  // Next position to read. Written by the consumer only.
  alignas(128) std::atomic<std::uint64_t> head;
  // Next position to write. Written by the producer only.
  alignas(128) std::atomic<std::uint64_t> tail;
  // Geometry: written by the creator before any child exists, read-only afterwards.
  alignas(128) std::uint64_t slot_count;
  std::uint64_t slot_bytes;
  std::uint64_t message_size;
};
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);
static_assert(offsetof(BareRingHeader, tail) == 128);
static_assert(offsetof(BareRingHeader, slot_count) == 256);
static_assert(sizeof(BareRingHeader) == 384);

struct BareTransport {
  static constexpr const char* kName = "bare";

  static std::string object_name(const std::string& base) { return "shmq-bench-bare-" + base; }

  static std::size_t slot_bytes(std::size_t size) { return round_up(size, 64); }

  static void create(const std::string& name, const Config& cfg) {
    try {
      bip::shared_memory_object shm(bip::create_only, name.c_str(), bip::read_write,
                                    bip::permissions(0600));
      shm.truncate(static_cast<bip::offset_t>(sizeof(BareRingHeader) +
                                              kCapacity * slot_bytes(cfg.size)));
      bip::mapped_region region(shm, bip::read_write);
      auto* h = new (region.get_address()) BareRingHeader();
      h->slot_count = kCapacity;
      h->slot_bytes = slot_bytes(cfg.size);
      h->message_size = cfg.size;
    } catch (const bip::interprocess_exception& e) {
      fail("create bare ring " + name + ": " + e.what());
    }
  }

  static void remove(const std::string& name) noexcept {
    bip::shared_memory_object::remove(name.c_str());
  }

  class Mapping {
   protected:
    explicit Mapping(const std::string& name)
        : shm_(bip::open_only, name.c_str(), bip::read_write), region_(shm_, bip::read_write) {
      h_ = static_cast<BareRingHeader*>(region_.get_address());
      slots_ = static_cast<std::byte*>(region_.get_address()) + sizeof(BareRingHeader);
      mask_ = h_->slot_count - 1;
      slot_bytes_ = h_->slot_bytes;
      message_size_ = h_->message_size;
      if (region_.get_size() < sizeof(BareRingHeader) + h_->slot_count * slot_bytes_)
        fail("bare ring " + name + " is smaller than its geometry");
    }
    std::byte* slot(std::uint64_t pos) const { return slots_ + (pos & mask_) * slot_bytes_; }

    bip::shared_memory_object shm_;
    bip::mapped_region region_;
    BareRingHeader* h_ = nullptr;
    std::byte* slots_ = nullptr;
    std::uint64_t mask_ = 0;
    std::uint64_t slot_bytes_ = 0;
    std::uint64_t message_size_ = 0;
  };

  class Sender : Mapping {
   public:
    explicit Sender(const std::string& name) : Mapping(name) {
      // Relaxed: we are the only writer of tail; the creator wrote 0 before fork.
      tail_ = h_->tail.load(std::memory_order_relaxed);
    }
    void send(const std::byte* data, std::size_t n) {
      // Full while the consumer is a whole ring behind. Acquire: pairs with the consumer's
      // release of head, so its reads of the slot happen-before our overwrite.
      while (tail_ - head_cache_ >= h_->slot_count) {
        head_cache_ = h_->head.load(std::memory_order_acquire);
        if (tail_ - head_cache_ >= h_->slot_count) cpu_relax();
      }
      std::memcpy(slot(tail_), data, std::min<std::size_t>(n, slot_bytes_));
      // Release: publishes the payload; pairs with the consumer's acquire of tail.
      h_->tail.store(++tail_, std::memory_order_release);
    }

   private:
    std::uint64_t tail_ = 0;
    std::uint64_t head_cache_ = 0;
  };

  class Receiver : Mapping {
   public:
    explicit Receiver(const std::string& name) : Mapping(name) {
      // Relaxed: we are the only writer of head.
      head_ = h_->head.load(std::memory_order_relaxed);
      tail_cache_ = head_;
    }
    std::size_t receive(std::byte* buf, std::size_t cap) {
      // Empty while we have caught up. Acquire: pairs with the producer's release of
      // tail, so the payload is visible.
      while (head_ == tail_cache_) {
        tail_cache_ = h_->tail.load(std::memory_order_acquire);
        if (head_ == tail_cache_) cpu_relax();
      }
      const std::size_t n = std::min<std::size_t>(message_size_, cap);
      std::memcpy(buf, slot(head_), n);
      // Release: our read of the slot happens-before the producer reuses it.
      h_->head.store(++head_, std::memory_order_release);
      return n;
    }

   private:
    std::uint64_t head_ = 0;
    std::uint64_t tail_cache_ = 0;
  };
};

// --- Child processes -------------------------------------------------------------------

// What a child reports to the parent: fixed-size, written in one piece through a pipe.
struct Report {
  std::uint64_t start_ns = 0;  // producer: before its first send
  std::uint64_t end_ns = 0;    // consumer: after its last receive (and ack)
  std::uint64_t count = 0;     // messages moved, or round trips timed
  std::uint64_t p50_ns = 0;
  std::uint64_t p99_ns = 0;
  std::uint64_t p999_ns = 0;
  std::uint64_t max_ns = 0;
  // Voluntary context switches of this process between the start signal and its report:
  // how often it went to sleep (a futex wait, for shmq and Boost).
  std::uint64_t sleeps = 0;
};
static_assert(std::is_trivially_copyable_v<Report>);

volatile sig_atomic_t g_signal = 0;

extern "C" void on_signal(int sig) { g_signal = sig; }

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

// The child's end of the start protocol: ready() once the queues are open, then
// wait_go() until the parent starts every child of the scenario at once.
class ChildIo {
 public:
  ChildIo(int report_fd, int go_fd) : report_fd_(report_fd), go_fd_(go_fd) {}
  void ready() { write_all(report_fd_, "R", 1); }
  void wait_go() {
    char c = 0;
    for (;;) {
      const ssize_t r = ::read(go_fd_, &c, 1);
      if (r < 0 && errno == EINTR) continue;
      if (r == 1 && c == 'G') break;
      fail("parent went away before the start signal");
    }
    sleeps_at_go_ = voluntary_switches();
  }
  void report(Report r) {
    r.sleeps = voluntary_switches() - sleeps_at_go_;
    write_all(report_fd_, &r, sizeof r);
  }

 private:
  int report_fd_;
  int go_fd_;
  std::uint64_t sleeps_at_go_ = 0;

  static std::uint64_t voluntary_switches() {
    rusage u{};
    ::getrusage(RUSAGE_SELF, &u);
    return static_cast<std::uint64_t>(u.ru_nvcsw);
  }
};

std::string describe_status(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status))
    return std::string("killed by signal ") + std::to_string(WTERMSIG(status)) + " (" +
           strsignal(WTERMSIG(status)) + ")";
  return "ended with wait status " + std::to_string(status);
}

// The processes of one scenario. Spawns children, starts them together, collects their
// reports and reaps them. Any child that fails, dies or overruns the deadline makes run()
// throw; the destructor kills (SIGKILL, by pid) and reaps whatever still runs.
class ProcessGroup {
 public:
  explicit ProcessGroup(std::string scenario) : scenario_(std::move(scenario)) {
    if (::pipe(go_) != 0) fail(std::string("pipe: ") + std::strerror(errno));
  }

  ~ProcessGroup() {
    for (Child& c : children_) {
      if (!c.reaped && c.pid > 0) {
        ::kill(c.pid, SIGKILL);
        int st = 0;
        while (::waitpid(c.pid, &st, 0) < 0 && errno == EINTR) {
        }
      }
      if (c.fd >= 0) ::close(c.fd);
    }
    close_fd(go_[0]);
    close_fd(go_[1]);
  }

  ProcessGroup(const ProcessGroup&) = delete;
  ProcessGroup& operator=(const ProcessGroup&) = delete;

  // Forks a child running body(ChildIo&) -> exit status. Exceptions in the child are
  // printed and turn into exit status 1. The child never returns into the caller.
  template <typename Body>
  void spawn(std::string role, Body&& body) {
    int rep[2];
    if (::pipe(rep) != 0) fail(std::string("pipe: ") + std::strerror(errno));
    const pid_t parent = ::getpid();
    std::fflush(nullptr);
    const pid_t pid = ::fork();
    if (pid < 0) {
      const int err = errno;
      ::close(rep[0]);
      ::close(rep[1]);
      fail(std::string("fork: ") + std::strerror(err));
    }
    if (pid == 0) {
      ::signal(SIGINT, SIG_DFL);
      ::signal(SIGTERM, SIG_DFL);
      // Die with the parent rather than spin or block forever without it.
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(1);
      ::close(rep[0]);
      ::close(go_[1]);
      for (const Child& c : children_) ::close(c.fd);
      int rc = 1;
      try {
        ChildIo io(rep[1], go_[0]);
        rc = body(io);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "%s: %s %s (pid %d): %s\n", kProg, scenario_.c_str(), role.c_str(),
                     static_cast<int>(::getpid()), e.what());
      } catch (...) {
        std::fprintf(stderr, "%s: %s %s: unknown exception\n", kProg, scenario_.c_str(),
                     role.c_str());
      }
      std::fflush(nullptr);
      ::_exit(rc);
    }
    ::close(rep[1]);
    Child& c = children_.emplace_back();
    c.role = std::move(role);
    c.pid = pid;
    c.fd = rep[0];
  }

  // Waits until every child is ready, starts them all, and returns their reports (in
  // spawn order) once every child has exited with status 0.
  std::vector<Report> run(std::chrono::seconds setup_timeout, std::chrono::seconds run_timeout) {
    pump(1, false, Clock::now() + setup_timeout, "start");
    for (const Child& c : children_)
      if (c.buf[0] != 'R') fail(c.role + " process sent garbage instead of ready");
    const std::string go(children_.size(), 'G');
    write_all(go_[1], go.data(), go.size());
    close_fd(go_[1]);
    pump(1 + sizeof(Report), true, Clock::now() + run_timeout, "finish");
    std::vector<Report> reports;
    for (Child& c : children_) {
      reap(c);
      if (!WIFEXITED(c.status) || WEXITSTATUS(c.status) != 0)
        fail(c.role + " process (pid " + std::to_string(c.pid) + ") " + describe_status(c.status));
      if (c.buf.size() != 1 + sizeof(Report))
        fail(c.role + " process sent " + std::to_string(c.buf.size()) + " bytes instead of " +
             std::to_string(1 + sizeof(Report)));
      Report r;
      std::memcpy(&r, c.buf.data() + 1, sizeof r);
      reports.push_back(r);
    }
    return reports;
  }

 private:
  struct Child {
    std::string role;
    pid_t pid = -1;
    int fd = -1;
    bool eof = false;
    bool reaped = false;
    int status = 0;
    std::string buf;
  };

  static void close_fd(int& fd) {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }

  void reap(Child& c) {
    if (c.reaped) return;
    while (::waitpid(c.pid, &c.status, 0) < 0) {
      if (errno != EINTR) fail(std::string("waitpid: ") + std::strerror(errno));
    }
    c.reaped = true;
  }

  // Reads from every child until each has sent `want` bytes (and, with until_eof, closed
  // its pipe by exiting). A pipe closed early means the child failed: it is reaped and
  // its exit status reported.
  void pump(std::size_t want, bool until_eof, Clock::time_point deadline, const char* phase) {
    for (;;) {
      std::vector<pollfd> fds;
      std::vector<Child*> who;
      for (Child& c : children_) {
        if (c.eof || (!until_eof && c.buf.size() >= want)) continue;
        fds.push_back(pollfd{c.fd, POLLIN, 0});
        who.push_back(&c);
      }
      if (fds.empty()) return;
      if (g_signal != 0) fail(std::string("interrupted by ") + strsignal(g_signal));
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) {
        std::string names;
        for (const Child* c : who) names += (names.empty() ? "" : ", ") + c->role;
        fail("timed out waiting for the " + names + " process(es) to " + phase +
             " (a hang?); killing them");
      }
      const int n = ::poll(fds.data(), fds.size(), static_cast<int>(std::min<long long>(left.count(), 1000)));
      if (n < 0) {
        if (errno == EINTR) continue;
        fail(std::string("poll: ") + std::strerror(errno));
      }
      for (std::size_t i = 0; i < fds.size(); ++i) {
        if (fds[i].revents == 0) continue;
        Child& c = *who[i];
        char tmp[512];
        const ssize_t r = ::read(c.fd, tmp, sizeof tmp);
        if (r < 0) {
          if (errno == EINTR) continue;
          fail(std::string("read from ") + c.role + ": " + std::strerror(errno));
        }
        if (r == 0) {
          c.eof = true;
          if (c.buf.size() < want) {
            reap(c);
            fail(c.role + " process (pid " + std::to_string(c.pid) + ") " +
                 describe_status(c.status) + " before it could " + phase);
          }
          continue;
        }
        c.buf.append(tmp, static_cast<std::size_t>(r));
      }
    }
  }

  std::string scenario_;
  int go_[2] = {-1, -1};
  std::vector<Child> children_;
};

// Removes a scenario's named objects when it ends, however it ends.
template <typename Transport>
class NameGuard {
 public:
  explicit NameGuard(std::vector<std::string> names) : names_(std::move(names)) {}
  ~NameGuard() {
    for (const std::string& n : names_) Transport::remove(n);
  }
  NameGuard(const NameGuard&) = delete;
  NameGuard& operator=(const NameGuard&) = delete;

 private:
  std::vector<std::string> names_;
};

// --- Scenarios ---------------------------------------------------------------------------

struct Result {
  std::string scenario;
  bool roundtrip = false;
  bool ok = false;
  double msgs_per_s = 0;
  double mb_per_s = 0;
  Report latency;
  std::uint64_t sleeps = 0;  // voluntary context switches, both processes
  std::uint64_t samples = 0;
};

std::chrono::seconds run_timeout(const Config& cfg, std::uint64_t count, double us_each) {
  if (cfg.timeout_s != 0) return std::chrono::seconds(cfg.timeout_s);
  return std::chrono::seconds(120 + static_cast<std::int64_t>(static_cast<double>(count) * us_each / 1e6));
}

constexpr auto kSetupTimeout = std::chrono::seconds(30);

std::string run_base() { return std::to_string(::getpid()); }

template <typename T>
Result throughput(const Config& cfg) {
  Result res;
  res.scenario = std::string(T::kName) + "-throughput";
  const std::string name = T::object_name(run_base() + "-tp");
  NameGuard<T> guard({name});  // before create: a half-made object is removed too
  T::create(name, cfg);
  ProcessGroup group(res.scenario);
  const std::uint64_t n = cfg.messages;
  const std::size_t size = cfg.size;

  group.spawn("consumer", [&](ChildIo& io) {
    typename T::Receiver rx(name);
    std::vector<std::byte> buf(size);
    io.ready();
    io.wait_go();
    for (std::uint64_t i = 0; i < n; ++i) {
      const std::size_t got = rx.receive(buf.data(), buf.size());
      if (got != size)
        fail("message " + std::to_string(i) + " has " + std::to_string(got) + " bytes, sent " +
             std::to_string(size));
      if (const std::uint64_t seq = get_seq(buf.data()); seq != i)
        fail("message " + std::to_string(i) + " carries sequence number " + std::to_string(seq));
    }
    Report r;
    r.end_ns = now_ns();
    r.count = n;
    io.report(r);
    return 0;
  });
  group.spawn("producer", [&](ChildIo& io) {
    typename T::Sender tx(name);
    std::vector<std::byte> buf(size, std::byte{0x5a});
    io.ready();
    io.wait_go();
    Report r;
    r.start_ns = now_ns();
    for (std::uint64_t i = 0; i < n; ++i) {
      put_seq(buf.data(), i);
      tx.send(buf.data(), size);
    }
    r.count = n;
    io.report(r);
    return 0;
  });

  const auto reports = group.run(kSetupTimeout, run_timeout(cfg, n, 50.0));
  const std::uint64_t start = reports[1].start_ns;
  const std::uint64_t end = reports[0].end_ns;
  if (end <= start) fail("consumer finished before the producer started (clock?)");
  const double secs = static_cast<double>(end - start) / 1e9;
  res.msgs_per_s = static_cast<double>(n) / secs;
  res.mb_per_s = res.msgs_per_s * static_cast<double>(size) / 1e6;
  res.samples = n;
  res.sleeps = reports[0].sleeps + reports[1].sleeps;
  res.ok = true;
  return res;
}

template <typename T>
Result roundtrip(const Config& cfg) {
  Result res;
  res.scenario = std::string(T::kName) + "-roundtrip";
  res.roundtrip = true;
  const std::string ping = T::object_name(run_base() + "-ping");
  const std::string pong = T::object_name(run_base() + "-pong");
  NameGuard<T> guard({ping, pong});  // before create: a half-made object is removed too
  T::create(ping, cfg);
  T::create(pong, cfg);
  ProcessGroup group(res.scenario);
  const std::uint64_t warmup = cfg.warmup;
  const std::uint64_t samples = cfg.samples;
  const std::size_t size = cfg.size;

  group.spawn("pinger", [&](ChildIo& io) {
    typename T::Sender tx(ping);
    typename T::Receiver rx(pong);
    std::vector<std::byte> out(size, std::byte{0x5a});
    std::vector<std::byte> in(size);
    std::vector<std::uint64_t> lat(samples);
    io.ready();
    io.wait_go();
    for (std::uint64_t i = 0; i < warmup + samples; ++i) {
      put_seq(out.data(), i);
      const std::uint64_t t0 = now_ns();
      tx.send(out.data(), size);
      const std::size_t got = rx.receive(in.data(), in.size());
      const std::uint64_t t1 = now_ns();
      if (got != size || get_seq(in.data()) != i)
        fail("round trip " + std::to_string(i) + ": pong of " + std::to_string(got) +
             " bytes with sequence number " + std::to_string(get_seq(in.data())));
      if (i >= warmup) lat[i - warmup] = t1 - t0;
    }
    std::sort(lat.begin(), lat.end());
    // Nearest-rank percentile: the smallest sample with at least p of them at or below it.
    auto pct = [&](double p) {
      const auto rank = static_cast<std::size_t>(std::ceil(p * static_cast<double>(lat.size())));
      return lat[std::clamp<std::size_t>(rank, 1, lat.size()) - 1];
    };
    Report r;
    r.count = samples;
    r.p50_ns = pct(0.50);
    r.p99_ns = pct(0.99);
    r.p999_ns = pct(0.999);
    r.max_ns = lat.back();
    io.report(r);
    return 0;
  });
  group.spawn("echo", [&](ChildIo& io) {
    typename T::Receiver rx(ping);
    typename T::Sender tx(pong);
    std::vector<std::byte> buf(size);
    io.ready();
    io.wait_go();
    for (std::uint64_t i = 0; i < warmup + samples; ++i) {
      const std::size_t got = rx.receive(buf.data(), buf.size());
      tx.send(buf.data(), got);
    }
    io.report(Report{});
    return 0;
  });

  const auto reports = group.run(kSetupTimeout, run_timeout(cfg, warmup + samples, 200.0));
  res.latency = reports[0];
  res.samples = samples;
  res.sleeps = reports[0].sleeps + reports[1].sleeps;
  res.ok = true;
  return res;
}

// --- Output ----------------------------------------------------------------------------

struct Machine {
  std::string cpu = "unknown";
  long cores = 0;
  std::string kernel = "unknown";
};

Machine describe_machine() {
  Machine m;
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("model name", 0) == 0) {
      if (const auto colon = line.find(':'); colon != std::string::npos) {
        m.cpu = line.substr(colon + 1);
        m.cpu.erase(0, m.cpu.find_first_not_of(" \t"));
      }
      break;
    }
  }
  m.cores = ::sysconf(_SC_NPROCESSORS_ONLN);
  utsname u{};
  if (::uname(&u) == 0) m.kernel = std::string(u.sysname) + " " + u.release + " " + u.machine;
  return m;
}

std::string json_string(std::string_view s) {
  std::string out = "\"";
  for (const char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char esc[8];
      std::snprintf(esc, sizeof esc, "\\u%04x", static_cast<unsigned>(c));
      out += esc;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

void print_json(const Result& r, const Config& cfg, const Machine& m) {
  std::string line = "{\"scenario\":" + json_string(r.scenario) +
                     ",\"producers\":1,\"consumers\":1,\"size\":" + std::to_string(cfg.size);
  char num[64];
  auto field = [&](const char* key, bool present, double v, const char* fmt) {
    line += ",\"";
    line += key;
    line += "\":";
    if (present) {
      std::snprintf(num, sizeof num, fmt, v);
      line += num;
    } else {
      line += "null";
    }
  };
  const bool tp = r.ok && !r.roundtrip;
  const bool rt = r.ok && r.roundtrip;
  field("msgs_per_s", tp, r.msgs_per_s, "%.0f");
  field("mb_per_s", tp, r.mb_per_s, "%.1f");
  field("p50_ns", rt, static_cast<double>(r.latency.p50_ns), "%.0f");
  field("p99_ns", rt, static_cast<double>(r.latency.p99_ns), "%.0f");
  field("p999_ns", rt, static_cast<double>(r.latency.p999_ns), "%.0f");
  field("max_ns", rt, static_cast<double>(r.latency.max_ns), "%.0f");
  line += ",\"samples\":" + std::to_string(r.samples);
  line += ",\"sleeps\":" + (r.ok ? std::to_string(r.sleeps) : std::string("null"));
  line += std::string(",\"ok\":") + (r.ok ? "true" : "false");
  line += ",\"cpu\":" + json_string(m.cpu) + ",\"cores\":" + std::to_string(m.cores) +
          ",\"kernel\":" + json_string(m.kernel) + "}";
  std::printf("%s\n", line.c_str());
  std::fflush(stdout);
}

void print_row(const Result& r) {
  if (!r.ok) {
    std::printf("%-18s %12s\n", r.scenario.c_str(), "FAILED");
  } else if (r.roundtrip) {
    std::printf("%-18s %12s %10s %10llu %10llu %10llu %10llu %10llu %10llu\n",
                r.scenario.c_str(), "-", "-", static_cast<unsigned long long>(r.latency.p50_ns),
                static_cast<unsigned long long>(r.latency.p99_ns),
                static_cast<unsigned long long>(r.latency.p999_ns),
                static_cast<unsigned long long>(r.latency.max_ns),
                static_cast<unsigned long long>(r.samples),
                static_cast<unsigned long long>(r.sleeps));
  } else {
    std::printf("%-18s %12.0f %10.1f %10s %10s %10s %10s %10llu %10llu\n", r.scenario.c_str(),
                r.msgs_per_s, r.mb_per_s, "-", "-", "-", "-",
                static_cast<unsigned long long>(r.samples),
                static_cast<unsigned long long>(r.sleeps));
  }
  std::fflush(stdout);
}

const Result* find(const std::vector<Result>& rs, const std::string& scenario) {
  for (const Result& r : rs)
    if (r.scenario == scenario && r.ok) return &r;
  return nullptr;
}

void print_ratios(const std::vector<Result>& rs) {
  const Result* s_tp = find(rs, "shmq-throughput");
  const Result* s_rt = find(rs, "shmq-roundtrip");
  const Result* b_tp = find(rs, "boost-throughput");
  const Result* b_rt = find(rs, "boost-roundtrip");
  const Result* r_tp = find(rs, "bare-throughput");
  const Result* r_rt = find(rs, "bare-roundtrip");
  std::printf("\nratios (DESIGN.md targets, stated for 64-byte messages)\n");
  auto line = [](const char* what, const Result* a, const Result* b, double va, double vb,
                 const char* target, int cmp, double goal) {
    if (a == nullptr || b == nullptr || vb <= 0) {
      std::printf("  %-28s %8s\n", what, "n/a");
      return;
    }
    const double v = va / vb;
    std::string verdict;
    if (cmp > 0) verdict = v >= goal ? "met" : "NOT met";
    if (cmp < 0) verdict = v <= goal ? "met" : "NOT met";
    std::printf("  %-28s %8.2f   %-10s %s\n", what, v, target, verdict.c_str());
  };
  auto tp = [](const Result* r) { return r != nullptr ? r->msgs_per_s : 0.0; };
  auto p50 = [](const Result* r) {
    return r != nullptr ? static_cast<double>(r->latency.p50_ns) : 0.0;
  };
  line("shmq/boost throughput", s_tp, b_tp, tp(s_tp), tp(b_tp), ">= 3", 1, 3.0);
  line("boost_p50/shmq_p50", b_rt, s_rt, p50(b_rt), p50(s_rt), "", 0, 0);
  line("shmq/bare throughput", s_tp, r_tp, tp(s_tp), tp(r_tp), ">= 0.5", 1, 0.5);
  line("shmq_p50/bare_p50", s_rt, r_rt, p50(s_rt), p50(r_rt), "<= 2", -1, 2.0);
}

template <typename T>
void run_transport(const Config& cfg, const Machine& m, std::vector<Result>& results) {
  for (const bool rt : {false, true}) {
    if (g_signal != 0) return;
    Result r;
    try {
      r = rt ? roundtrip<T>(cfg) : throughput<T>(cfg);
    } catch (const std::exception& e) {
      r.scenario = std::string(T::kName) + (rt ? "-roundtrip" : "-throughput");
      r.roundtrip = rt;
      r.ok = false;
      std::fprintf(stderr, "%s: %s failed: %s\n", kProg, r.scenario.c_str(), e.what());
    }
    if (cfg.json) print_json(r, cfg, m);
    else print_row(r);
    results.push_back(std::move(r));
  }
}

}  // namespace

int main(int argc, char** argv) {
  Config cfg;
  if (const int rc = parse_args(argc, argv, cfg); rc >= 0) return rc;

  // SIGINT/SIGTERM: stop waiting, kill this run's children, remove its queues, exit 1.
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: poll() returns EINTR and the harness cleans up
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
  // A child that died before the start signal must not kill us through the go pipe: the
  // write fails with EPIPE instead, and children see EPIPE if we are gone.
  ::signal(SIGPIPE, SIG_IGN);

  const Machine m = describe_machine();
  if (!cfg.json) {
    std::printf("%s: 1 producer process, 1 consumer process, %zu-byte messages\n", kProg,
                cfg.size);
    std::printf("machine:    %s, %ld online cores, %s\n", m.cpu.c_str(), m.cores,
                m.kernel.c_str());
    const char* lead = "queues:    ";
    if (cfg.run_shmq) {
      std::printf("%s shmq slot_count %u slot_size %u, blocking send/receive (spin, then futex),"
                  " ack per message\n", lead, kCapacity, ShmqTransport::slot_size(cfg.size));
      lead = "           ";
    }
    if (cfg.run_boost) {
      std::printf("%s boost message_queue of %u x %zu bytes (process-shared mutex + condition)\n",
                  lead, kCapacity, cfg.size);
      lead = "           ";
    }
    if (cfg.run_bare)
      std::printf("%s bare SPSC ring of %u x %zu-byte slots, busy-spin, no acks\n", lead,
                  kCapacity, BareTransport::slot_bytes(cfg.size));
    std::printf("throughput: %llu messages, from the producer's first send to the consumer's"
                " last receive+ack\n"
                "            (CLOCK_MONOTONIC, shared by both processes); MB/s = 10^6 bytes"
                " of payload per second\n",
                static_cast<unsigned long long>(cfg.messages));
    std::printf("round trip: %llu samples after %llu warm-up round trips, each timed by the"
                " sender (steady_clock)\n",
                static_cast<unsigned long long>(cfg.samples),
                static_cast<unsigned long long>(cfg.warmup));
    std::printf("sleeps:     voluntary context switches of both processes from the start signal"
                " to the end\n            (futex or condition waits; a busy-spinning side has"
                " none)\n\n");
    std::printf("%-18s %12s %10s %10s %10s %10s %10s %10s %10s\n", "scenario", "msgs/s", "MB/s",
                "p50_ns", "p99_ns", "p999_ns", "max_ns", "samples", "sleeps");
    std::fflush(stdout);
  }

  std::vector<Result> results;
  if (cfg.run_shmq) run_transport<ShmqTransport>(cfg, m, results);
  if (cfg.run_boost) run_transport<BoostTransport>(cfg, m, results);
  if (cfg.run_bare) run_transport<BareTransport>(cfg, m, results);

  if (!cfg.json) print_ratios(results);
  if (g_signal != 0) {
    std::fprintf(stderr, "%s: interrupted by %s\n", kProg, strsignal(g_signal));
    return 1;
  }
  const bool all_ok =
      std::all_of(results.begin(), results.end(), [](const Result& r) { return r.ok; });
  return all_ok ? 0 : 1;
}
