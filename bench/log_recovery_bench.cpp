// shmq-bench-log-recovery: how long recovering a queue's log takes, and how much memory it
// needs, for logs shaped like the ones issue 9 names:
//   unacked   N messages logged and never acked (recovery returns all of them);
//   acked     N messages logged and acked behind a few long-unacked ones, written with
//             compaction working as shmqd runs it (checkpoint + compaction every 10,000),
//             so recovery reads what compaction left, not the whole history.
// Each log is written with the real Wal (the persister's log layer) into a fresh directory;
// then a child process (exec of this binary, so its memory is its own) opens it with
// Wal::open and reports the time; the parent reads the child's peak RSS from wait4.
//
//   shmq-bench-log-recovery [--unacked N] [--acked N --held K] [--dir DIR] [--quick]
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "log/file.hpp"
#include "log/wal.hpp"

namespace {

using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;

constexpr std::size_t kPayload = 64;

shmq::log::WalOptions options(const std::string& dir) {
  shmq::log::WalOptions o;
  o.dir = dir;
  o.segment_bytes = 64 << 20;  // shmqd's default
  return o;
}

bool build_log(const std::string& dir, std::uint64_t unacked, std::uint64_t acked,
               std::uint64_t held) {
  shmq::log::RecoveryReport r;
  auto w = shmq::log::Wal::open(options(dir), shmq::log::posix_file_system(), r);
  if (!w.ok()) {
    std::fprintf(stderr, "open %s: %s\n", dir.c_str(), w.error().message().c_str());
    return false;
  }
  shmq::log::Wal& wal = *w.value();
  const std::vector<std::byte> payload(kPayload, std::byte{'x'});
  std::uint64_t pos = 0;
  auto ok = [](const shmq::VoidResult& v) {
    if (!v.ok()) std::fprintf(stderr, "log: %s\n", v.error().message().c_str());
    return v.ok();
  };
  for (std::uint64_t i = 0; i < held; ++i, ++pos)
    if (!ok(wal.append_message(pos, pos + 1, payload))) return false;
  for (std::uint64_t i = 0; i < unacked; ++i, ++pos) {
    if (!ok(wal.append_message(pos, pos + 1, payload))) return false;
    if (i % 10'000 == 9'999 && !ok(wal.sync())) return false;
  }
  for (std::uint64_t i = 0; i < acked; ++i, ++pos) {
    if (!ok(wal.append_message(pos, pos + 1, payload)) || !ok(wal.append_ack(pos))) return false;
    if (i % 10'000 == 9'999 && (!ok(wal.sync()) || !ok(wal.checkpoint(0, pos + 1)))) return false;
  }
  return ok(wal.sync()) && ok(wal.checkpoint(0, pos));
}

std::uint64_t dir_bytes(const std::string& dir) {
  std::uint64_t total = 0;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_regular_file()) total += e.file_size();
  return total;
}

// The child: recover, print "<ms> <unacked>".
int open_child(const std::string& dir) {
  shmq::log::RecoveryReport r;
  const auto t0 = Clock::now();
  auto w = shmq::log::Wal::open(options(dir), shmq::log::posix_file_system(), r);
  const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  if (!w.ok()) {
    std::fprintf(stderr, "recover %s: %s\n", dir.c_str(), w.error().message().c_str());
    return 1;
  }
  std::printf("%.1f %zu\n", ms, r.unacked.size());
  return 0;
}

struct Measured {
  double ms = 0;
  std::uint64_t unacked = 0;
  long peak_rss_kib = 0;
};

bool measure(const char* self, const std::string& dir, Measured& out) {
  int fds[2];
  if (::pipe(fds) != 0) return false;
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(fds[1], 1);
    ::close(fds[0]);
    ::execl(self, self, "--open", dir.c_str(), static_cast<char*>(nullptr));
    std::_Exit(127);
  }
  ::close(fds[1]);
  char buf[128] = {};
  std::size_t got = 0;
  for (ssize_t n; got + 1 < sizeof buf && (n = ::read(fds[0], buf + got, sizeof buf - 1 - got)) > 0;)
    got += static_cast<std::size_t>(n);
  ::close(fds[0]);
  int status = 0;
  struct rusage ru {};
  if (::wait4(pid, &status, 0, &ru) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
    return false;
  unsigned long long unacked = 0;
  if (std::sscanf(buf, "%lf %llu", &out.ms, &unacked) != 2) return false;
  out.unacked = unacked;
  out.peak_rss_kib = ru.ru_maxrss;
  return true;
}

void usage(std::FILE* f) {
  std::fprintf(f,
               "usage: shmq-bench-log-recovery [--unacked N] [--acked N] [--held K] [--dir DIR]"
               " [--quick]\n"
               "Writes two logs with the real Wal and times their recovery in a child process:\n"
               "  1) N unacked messages (default 1,000,000)\n"
               "  2) N acked messages (default 10,000,000) behind K unacked ones (default 1,000),\n"
               "     with checkpoints and compaction as shmqd runs them\n"
               "  --dir DIR  where to write (default: a new directory under /tmp, removed after)\n"
               "  --quick    100,000 / 1,000,000 / 100 (CI smoke run)\n");
}

}  // namespace

int main(int argc, char** argv) {
  std::uint64_t unacked = 1'000'000, acked = 10'000'000, held = 1'000;
  std::string root;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::uint64_t {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(2);
      }
      char* end = nullptr;
      const unsigned long long v = std::strtoull(argv[++i], &end, 10);
      if (*end != '\0') {
        std::fprintf(stderr, "%s takes a number, not '%s'\n", a.c_str(), argv[i]);
        std::exit(2);
      }
      return v;
    };
    if (a == "--open" && i + 1 < argc) return open_child(argv[++i]);
    if (a == "-h" || a == "--help") {
      usage(stdout);
      return 0;
    }
    if (a == "--unacked") {
      unacked = value();
    } else if (a == "--acked") {
      acked = value();
    } else if (a == "--held") {
      held = value();
    } else if (a == "--dir" && i + 1 < argc) {
      root = argv[++i];
    } else if (a == "--quick") {
      unacked = 100'000;
      acked = 1'000'000;
      held = 100;
    } else {
      std::fprintf(stderr, "unknown option '%s' (try --help)\n", a.c_str());
      return 2;
    }
  }
  bool remove_root = false;
  if (root.empty()) {
    char tmpl[] = "/tmp/shmq-log-recovery-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) {
      std::perror("mkdtemp");
      return 1;
    }
    root = tmpl;
    remove_root = true;
  }
  struct Scenario {
    std::string name;
    std::uint64_t unacked, acked, held;
  };
  const Scenario scenarios[] = {
      {"unacked", unacked, 0, 0},
      {"acked-behind-held", 0, acked, held},
  };
  std::printf("%-20s %12s %12s %12s %12s %12s %14s\n", "log", "messages", "unacked", "disk MiB",
              "write s", "recover ms", "peak RSS MiB");
  int rc = 0;
  for (const Scenario& s : scenarios) {
    const std::string dir = root + "/" + s.name;
    const auto t0 = Clock::now();
    if (!build_log(dir, s.unacked, s.acked, s.held)) return 1;
    const double write_s = std::chrono::duration<double>(Clock::now() - t0).count();
    Measured m;
    if (!measure(argv[0], dir, m)) {
      std::fprintf(stderr, "recovery of %s failed\n", dir.c_str());
      rc = 1;
      continue;
    }
    const std::uint64_t want = s.unacked + s.held;
    std::printf("%-20s %12llu %12llu %12.1f %12.1f %12.1f %14.1f\n", s.name.c_str(),
                static_cast<unsigned long long>(s.unacked + s.acked + s.held),
                static_cast<unsigned long long>(m.unacked),
                static_cast<double>(dir_bytes(dir)) / (1 << 20), write_s, m.ms,
                static_cast<double>(m.peak_rss_kib) / 1024.0);
    if (m.unacked != want) {
      std::fprintf(stderr, "%s: recovered %llu unacked, expected %llu\n", s.name.c_str(),
                   static_cast<unsigned long long>(m.unacked),
                   static_cast<unsigned long long>(want));
      rc = 1;
    }
  }
  if (remove_root) fs::remove_all(root);
  return rc;
}
