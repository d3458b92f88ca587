#include "platform/process.hpp"

#include "platform/fd.hpp"
#include <fcntl.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>

namespace shmq::detail {

namespace {

// Reads the state letter (field 3) and start time (field 22) of /proc/<pid>/stat.
bool read_stat(pid_t pid, char& state, std::uint64_t& start_time) noexcept {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
  const int fd = fd_above_stdio(::open(path, O_RDONLY | O_CLOEXEC));
  if (fd < 0) return false;
  char buf[1024];
  ssize_t n;
  do {
    n = ::read(fd, buf, sizeof buf - 1);
  } while (n < 0 && errno == EINTR);
  ::close(fd);
  if (n <= 0) return false;
  buf[n] = '\0';
  // Field 2 (comm) is in parentheses and may contain spaces or ')': skip to the last ')'.
  const char* p = std::strrchr(buf, ')');
  if (p == nullptr || p[1] != ' ' || p[2] == '\0') return false;
  state = p[2];
  ++p;
  // After ')' come fields 3, 4, ...: `field` is the number of the field that starts after
  // the space just passed. starttime is field 22.
  int field = 2;
  while (*p != '\0' && field < 22) {
    if (*p == ' ') ++field;
    ++p;
  }
  if (field != 22) return false;
  std::uint64_t v = 0;
  while (*p >= '0' && *p <= '9') v = v * 10 + std::uint64_t(*p++ - '0');
  start_time = v;
  return true;
}

}  // namespace

std::uint64_t process_start_time(pid_t pid) noexcept {
  char state = 0;
  std::uint64_t start = 0;
  return read_stat(pid, state, start) ? start : 0;
}

bool process_alive(pid_t pid, std::uint64_t start_time) noexcept {
  if (pid <= 0) return false;
  if (::kill(pid, 0) != 0 && errno == ESRCH) return false;
  char state = 0;
  std::uint64_t now = 0;
  if (!read_stat(pid, state, now)) {
    // /proc/<pid> vanished between kill() and here (dead), or /proc is hidden from us
    // (then kill() is all we can know).
    return ::kill(pid, 0) == 0 || errno != ESRCH;
  }
  // A zombie has finished running: whatever it held, it will never release.
  if (state == 'Z' || state == 'X') return false;
  return start_time == 0 || now == start_time;
}

int open_pidfd(pid_t pid) noexcept {
#ifdef SYS_pidfd_open
  if (pid <= 0) return -1;
  // pidfds are close-on-exec by construction.
  return fd_above_stdio(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
#else
  (void)pid;
  return -1;
#endif
}

std::uint64_t monotonic_ns() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return std::uint64_t(ts.tv_sec) * 1'000'000'000ull + std::uint64_t(ts.tv_nsec);
}

std::uint64_t realtime_ns() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return std::uint64_t(ts.tv_sec) * 1'000'000'000ull + std::uint64_t(ts.tv_nsec);
}

namespace {
std::uint64_t saturating_add(std::uint64_t a, std::uint64_t b) noexcept {
  return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}
}  // namespace

std::uint64_t monotonic_to_unix_ns(std::uint64_t monotonic) noexcept {
  const std::uint64_t now = monotonic_ns();
  if (monotonic <= now) return 0;
  return saturating_add(realtime_ns(), monotonic - now);
}

std::uint64_t unix_to_monotonic_ns(std::uint64_t unix_ns) noexcept {
  const std::uint64_t now = realtime_ns();
  if (unix_ns <= now) return 0;
  return saturating_add(monotonic_ns(), unix_ns - now);
}

}  // namespace shmq::detail

namespace shmq::detail {

std::uint64_t monotonic_coarse_ns() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return std::uint64_t(ts.tv_sec) * 1'000'000'000ull + std::uint64_t(ts.tv_nsec);
}

}  // namespace shmq::detail

namespace shmq::detail {

std::uint64_t coarse_resolution_ns() noexcept {
  static const std::uint64_t res = []() -> std::uint64_t {
    timespec ts{};
    if (::clock_getres(CLOCK_MONOTONIC_COARSE, &ts) != 0) return 10'000'000;
    return std::uint64_t(ts.tv_sec) * 1'000'000'000ull + std::uint64_t(ts.tv_nsec);
  }();
  return res;
}

}  // namespace shmq::detail
