// shmq-bench: small helpers shared by every part of the harness (time, errors, formatting,
// statistics, the description of the machine).
#pragma once

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace shmq_bench {

using Clock = std::chrono::steady_clock;  // CLOCK_MONOTONIC: shared by every process

inline constexpr const char* kProg = "shmq-bench";

// Nanoseconds on CLOCK_MONOTONIC (comparable across processes on one host).
inline std::uint64_t now_ns() noexcept {
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

// A failure of the harness or of a scenario: caught per scenario (the run goes on and
// exits 1 at the end), printed by children before they exit 1.
struct Failure : std::runtime_error {
  using std::runtime_error::runtime_error;
};
[[noreturn]] inline void fail(const std::string& what) { throw Failure(what); }

// A scenario that cannot run here (no shmqd, ...): reported as skipped, not as a failure.
struct Skip : std::runtime_error {
  using std::runtime_error::runtime_error;
};

inline std::size_t round_up(std::size_t v, std::size_t a) { return (v + a - 1) / a * a; }

// Every message carries a tag in its first and last 8 bytes: (sender index << 48) | seq,
// the trailer xor-ed with a constant so that a message cut short is caught too.
inline constexpr std::uint64_t kTrailerXor = 0xa5a5'5a5a'0f0f'f0f0ULL;
inline constexpr std::uint64_t kPoison = ~std::uint64_t{0};  // "stop" for blocking receivers
inline std::uint64_t make_tag(std::uint32_t sender, std::uint64_t seq) {
  return (std::uint64_t{sender} << 48) | seq;
}
inline void put_tag(std::byte* buf, std::size_t size, std::uint64_t tag) noexcept {
  std::memcpy(buf, &tag, sizeof tag);
  const std::uint64_t t = tag ^ kTrailerXor;
  std::memcpy(buf + size - sizeof t, &t, sizeof t);
}
inline std::uint64_t get_tag(const std::byte* buf) noexcept {
  std::uint64_t t = 0;
  std::memcpy(&t, buf, sizeof t);
  return t;
}
inline bool trailer_ok(const std::byte* buf, std::size_t size, std::uint64_t tag) noexcept {
  std::uint64_t t = 0;
  std::memcpy(&t, buf + size - sizeof t, sizeof t);
  return t == (tag ^ kTrailerXor);
}

// The priority of the k-th message a producer sends when it uses `levels` of the
// max_priority + 1 levels of a queue: round-robin over levels spread evenly from the top
// (max_priority 15: 1 level -> 15; 4 -> 15, 11, 7, 3; 16 -> 15, 14, ..., 0).
inline std::uint32_t priority_of(std::uint64_t k, std::uint32_t levels, std::uint32_t max_priority) {
  if (levels == 0) return 0;
  const std::uint32_t step = (max_priority + 1) / levels;
  return max_priority - static_cast<std::uint32_t>(k % levels) * step;
}

// How a shmq producer or consumer waits when it cannot go on (shmq::WaitStrategy of
// include/shmq/wait.hpp, issue 16), in scenario names: "futex", "busy_spin", ...
enum class Wait : std::uint8_t { futex, busy_spin, spin_yield, spin_sleep };
inline const char* to_string(Wait w) {
  switch (w) {
    case Wait::futex: return "futex";
    case Wait::busy_spin: return "busy_spin";
    case Wait::spin_yield: return "spin_yield";
    case Wait::spin_sleep: return "spin_sleep";
  }
  return "?";
}

// --- statistics ----------------------------------------------------------------------------

// Median, min and max of the repetitions of one figure.
struct Spread {
  double median = 0;
  double min = 0;
  double max = 0;
  bool valid = false;
};
Spread spread_of(std::vector<double> v);

// Nearest-rank percentile of sorted samples: the smallest sample with at least p of them at
// or below it.
std::uint64_t percentile(const std::vector<std::uint64_t>& sorted, double p);

// --- formatting ----------------------------------------------------------------------------

// 12345678 -> "12.3M"; 950 -> "950".
std::string si(double v);
// Nanoseconds, human: 850 -> "850ns", 12345 -> "12.3us", 4.2e6 -> "4.20ms".
std::string human_ns(double ns);
std::string human_bytes(std::size_t n);  // 64 -> "64B", 1024 -> "1KiB", 65536 -> "64KiB"
std::string json_string(std::string_view s);
std::string fixed(double v, int decimals);

// --- the machine ---------------------------------------------------------------------------

struct Machine {
  std::string cpu = "unknown";
  long cores = 0;
  std::string kernel = "unknown";
  std::string load;  // /proc/loadavg's first three fields
};
Machine describe_machine();
std::string loadavg();

// Filesystem type of `path` ("ext4", "tmpfs", ...; the magic in hex if unknown).
std::string fs_type(const std::string& path);

}  // namespace shmq_bench
