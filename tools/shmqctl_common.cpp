#include "shmqctl_common.hpp"

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <algorithm>
#include <cstdio>
#include <ctime>

namespace shmqctl {

namespace {

std::atomic<bool> g_stop{false};
std::atomic<shmq::Producer*> g_producer{nullptr};
std::atomic<shmq::Consumer*> g_consumer{nullptr};
std::atomic<shmq::Publisher*> g_publisher{nullptr};
std::atomic<shmq::Subscriber*> g_subscriber{nullptr};

static_assert(std::atomic<shmq::Producer*>::is_always_lock_free);
static_assert(std::atomic<bool>::is_always_lock_free);

// Async-signal-safe: atomic loads and stores; interrupt() is an atomic store and a futex
// wake.
extern "C" void on_stop_signal(int) {
  g_stop.store(true);
  if (shmq::Producer* p = g_producer.load()) p->interrupt();
  if (shmq::Consumer* c = g_consumer.load()) c->interrupt();
  if (shmq::Publisher* p = g_publisher.load()) p->interrupt();
  if (shmq::Subscriber* s = g_subscriber.load()) s->interrupt();
}

}  // namespace

void fail(int code, std::string message) { throw Failure{code, std::move(message)}; }

void fail(const shmq::Error& error) {
  std::string m = error.message();
  // The library says "'q' not found (no /dev/shm/shmq.q)": name the thing.
  if (error.code() == shmq::Errc::not_found && !m.empty() && m.front() == '\'')
    m.insert(0, "queue ");
  fail(kExitRuntime, std::move(m));
}

std::string one_line(std::string_view message) {
  std::string out;
  out.reserve(message.size());
  for (const char c : message) {
    const auto u = static_cast<unsigned char>(c);
    out.push_back(u < 0x20 || u == 0x7f ? ' ' : c);
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

void warn(std::string_view message) {
  std::fprintf(stderr, "shmqctl: warning: %s\n", one_line(message).c_str());
  std::fflush(stderr);
}

void check_name(std::string_view name) {
  if (auto e = shmq::Queue::validate_name(name); !e.empty()) fail(kExitUsage, e);
}

shmq::Queue open_queue(const std::string& name) {
  check_name(name);
  auto q = shmq::Queue::open(name);
  if (!q.ok()) fail(q.error());
  return std::move(q.value());
}

shmq::Durability parse_durability(const std::string& w) {
  if (w == "none") return shmq::Durability::none;
  if (w == "async") return shmq::Durability::async;
  if (w == "sync") return shmq::Durability::sync;
  fail(kExitUsage, "--durability must be none, async or sync, not '" + w + "'");
}

std::uint32_t parse_mode(const std::string& m) {
  if (m == "0600" || m == "600") return 0600;
  if (m == "0660" || m == "660") return 0660;
  fail(kExitUsage, "--mode must be 0600 or 0660, not '" + m + "'");
}

bool is_topic(const std::string& name) {
  check_name(name);
  return shmq::Topic::is_topic(name);
}

void fail_topic(const shmq::Error& error) {
  std::string m = error.message();
  // "'t' not found (no /dev/shm/shmq.t)": name the thing.
  if (error.code() == shmq::Errc::not_found && !m.empty() && m.front() == '\'')
    m.insert(0, "topic ");
  fail(kExitRuntime, std::move(m));
}

shmq::Topic open_topic(const std::string& name) {
  check_name(name);
  auto t = shmq::Topic::open(name);
  if (!t.ok()) fail_topic(t.error());
  return std::move(t.value());
}

void check_group_name(std::string_view group) {
  if (auto e = shmq::Topic::validate_group_name(group); !e.empty()) fail(kExitUsage, e);
}

void install_stop_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  // No SA_RESTART: a read() on a terminal returns EINTR. SA_RESETHAND: a second Ctrl-C
  // kills the process the default way, whatever it is stuck in.
  sa.sa_flags = SA_RESETHAND;
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
}

bool stop_requested() noexcept { return g_stop.load(); }

InterruptScope::InterruptScope(shmq::Producer* p) noexcept : kind_(Kind::producer) {
  g_producer.store(p);
  if (g_stop.load()) p->interrupt();
}
InterruptScope::InterruptScope(shmq::Consumer* c) noexcept : kind_(Kind::consumer) {
  g_consumer.store(c);
  if (g_stop.load()) c->interrupt();
}
InterruptScope::InterruptScope(shmq::Publisher* p) noexcept : kind_(Kind::publisher) {
  g_publisher.store(p);
  if (g_stop.load()) p->interrupt();
}
InterruptScope::InterruptScope(shmq::Subscriber* s) noexcept : kind_(Kind::subscriber) {
  g_subscriber.store(s);
  if (g_stop.load()) s->interrupt();
}
InterruptScope::~InterruptScope() {
  switch (kind_) {
    case Kind::producer: g_producer.store(nullptr); break;
    case Kind::consumer: g_consumer.store(nullptr); break;
    case Kind::publisher: g_publisher.store(nullptr); break;
    case Kind::subscriber: g_subscriber.store(nullptr); break;
  }
}

bool sleep_unless_stopped(std::chrono::milliseconds d) {
  const auto deadline = std::chrono::steady_clock::now() + d;
  while (!g_stop.load()) {
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) return true;
    const auto step = std::min<std::chrono::nanoseconds>(deadline - now, std::chrono::milliseconds(50));
    timespec ts{};
    ts.tv_sec = static_cast<time_t>(step.count() / 1'000'000'000);
    ts.tv_nsec = static_cast<long>(step.count() % 1'000'000'000);
    ::nanosleep(&ts, nullptr);  // EINTR: the loop checks the flag
  }
  return false;
}

bool stderr_is_tty() { return ::isatty(STDERR_FILENO) == 1; }
bool stdout_is_tty() { return ::isatty(STDOUT_FILENO) == 1; }

Progress::Progress(std::string label, std::uint64_t total)
    : label_(std::move(label)),
      total_(total),
      enabled_(stderr_is_tty()),
      start_(std::chrono::steady_clock::now()),
      last_(start_) {}

Progress::~Progress() { finish(); }

void Progress::update(std::uint64_t done) {
  if (!enabled_) return;
  const auto now = std::chrono::steady_clock::now();
  if (shown_ && now - last_ < std::chrono::milliseconds(100)) return;
  last_ = now;
  const double secs = std::chrono::duration<double>(now - start_).count();
  const double rate = secs > 0 ? static_cast<double>(done) / secs : 0.0;
  if (total_ > 0)
    std::fprintf(stderr, "\r\033[K%s %llu/%llu (%.0f%%, %.0f/s)", label_.c_str(),
                 static_cast<unsigned long long>(done), static_cast<unsigned long long>(total_),
                 100.0 * static_cast<double>(done) / static_cast<double>(total_), rate);
  else
    std::fprintf(stderr, "\r\033[K%s %llu (%.0f/s)", label_.c_str(),
                 static_cast<unsigned long long>(done), rate);
  std::fflush(stderr);
  shown_ = true;
}

void Progress::finish() {
  if (enabled_ && shown_) {
    std::fputs("\r\033[K", stderr);
    std::fflush(stderr);
  }
  shown_ = false;
  enabled_ = false;
}

std::string render_payload(std::span<const std::byte> payload, std::size_t max_bytes,
                           std::size_t total) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  const std::size_t n = std::min(payload.size(), max_bytes);
  out.reserve(n + 16);
  for (std::size_t i = 0; i < n; ++i) {
    const auto c = std::to_integer<unsigned char>(payload[i]);
    switch (c) {
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\\': out += "\\\\"; break;
      default:
        if (c >= 0x20 && c < 0x7f) {
          out.push_back(static_cast<char>(c));
        } else {
          out += "\\x";
          out.push_back(kHex[c >> 4]);
          out.push_back(kHex[c & 0xf]);
        }
    }
  }
  total = std::max(total, payload.size());
  if (total > n) out += "... (+" + std::to_string(total - n) + " bytes)";
  return out;
}

std::string human_bytes(std::uint64_t bytes) {
  static constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024.0 && u < 4) {
    v /= 1024.0;
    ++u;
  }
  char buf[32];
  if (u == 0)
    std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(bytes));
  else
    std::snprintf(buf, sizeof buf, "%.1f %s", v, kUnits[u]);
  return buf;
}

std::string human_ms(std::uint64_t ms) {
  char buf[48];
  if (ms < 1000)
    std::snprintf(buf, sizeof buf, "%llums", static_cast<unsigned long long>(ms));
  else if (ms < 60'000)
    std::snprintf(buf, sizeof buf, "%.1fs", static_cast<double>(ms) / 1000.0);
  else if (ms < 3'600'000)
    std::snprintf(buf, sizeof buf, "%llum%02llus", static_cast<unsigned long long>(ms / 60'000),
                  static_cast<unsigned long long>(ms / 1000 % 60));
  else
    std::snprintf(buf, sizeof buf, "%lluh%02llum", static_cast<unsigned long long>(ms / 3'600'000),
                  static_cast<unsigned long long>(ms / 60'000 % 60));
  return buf;
}

}  // namespace shmqctl
