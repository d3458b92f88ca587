// shmq-demo: shmqd, a producer process and consumer processes on one durable queue.
//
//   1. creates a queue with durability sync in a fresh data dir and starts shmqd on it;
//   2. a producer process sends N messages, each confirmed on disk;
//   3. consumer A takes five, acks two, and is killed with SIGKILL holding three;
//   4. shmqd's watchdog sees it die and redelivers them: consumer B receives every message
//      that was not acked, the three marked "redelivered";
//   5. prints the queue's counters, stops shmqd (SIGTERM) and removes everything.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "shmq/shmq.hpp"

namespace {

void usage(std::FILE* out) {
  std::fprintf(out,
               "usage: shmq-demo [--messages N] [--shmqd PATH]\n"
               "       shmq-demo --version\n"
               "\n"
               "Starts shmqd on a fresh data dir and a durable queue, sends N messages\n"
               "(default 12) from a producer process, kills a consumer process with SIGKILL\n"
               "while it holds three unacked messages, and shows another consumer receiving\n"
               "them again. Everything is removed at the end.\n"
               "  --shmqd PATH  the shmqd binary (default: next to shmq-demo)\n");
}

int wait_child(pid_t pid) {
  int status = 0;
  if (::waitpid(pid, &status, 0) < 0) return -1;
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void show(const char* who, const shmq::Message& m, const char* action) {
  std::printf("  %s (pid %d): position %-3llu delivery %u%s  %-12.*s -> %s\n", who, ::getpid(),
              static_cast<unsigned long long>(m.position()), m.delivery_count(),
              m.redelivered() ? " (redelivered)" : "              ", static_cast<int>(m.size()),
              m.view().data(), action);
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  int count = 12;
  std::string shmqd = (std::filesystem::path(argv[0]).parent_path() / "shmqd").string();
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      usage(stdout);
      return 0;
    }
    if (arg == "--version") {
      std::printf("shmq-demo %s\n", SHMQ_VERSION);
      return 0;
    }
    if (arg == "--shmqd" && i + 1 < argc) {
      shmqd = argv[++i];
      continue;
    }
    if (arg == "--messages" && i + 1 < argc) {
      char* end = nullptr;
      const long n = std::strtol(argv[++i], &end, 10);
      if (*end != '\0' || n < 6 || n > 100'000) {
        std::fprintf(stderr, "shmq-demo: --messages takes a number from 6 to 100000\n");
        return 2;
      }
      count = static_cast<int>(n);
      continue;
    }
    std::fprintf(stderr, "shmq-demo: unknown or incomplete option '%s' (try --help)\n",
                 arg.c_str());
    return 2;
  }
  if (::access(shmqd.c_str(), X_OK) != 0) {
    std::fprintf(stderr, "shmq-demo: no shmqd at %s (use --shmqd PATH)\n", shmqd.c_str());
    return 1;
  }

  char tmpl[] = "/tmp/shmq-demo-XXXXXX";
  const std::string dir = ::mkdtemp(tmpl);
  const std::string name = "demo-" + std::to_string(::getpid());
  shmq::QueueOptions options;
  options.slot_count = 64;
  options.slot_size = 128;
  options.durability = shmq::Durability::sync;
  options.data_dir = dir + "/data";
  auto q = shmq::Queue::create(name, options);
  if (!q) {
    std::fprintf(stderr, "shmq-demo: %s\n", q.error().message().c_str());
    return 1;
  }
  std::printf("1. created queue '%s' (sync durability, data dir %s/data)\n", name.c_str(),
              dir.c_str());

  const std::string log = dir + "/shmqd.log";
  std::fflush(stdout);  // children must not inherit unflushed output
  const pid_t daemon = ::fork();
  if (daemon == 0) {
    const int fd = ::open(log.c_str(), O_CREAT | O_WRONLY | O_APPEND | O_CLOEXEC, 0600);
    ::dup2(fd, 2);
    ::execl(shmqd.c_str(), "shmqd", "--data-dir", options.data_dir.c_str(), name.c_str(),
            static_cast<char*>(nullptr));
    std::_Exit(127);
  }
  int rc = 0;
  // Wait (bounded) for shmqd to say it serves the queue.
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (read_file(log).find("persisting") == std::string::npos &&
         std::chrono::steady_clock::now() < give_up)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  std::printf("   started shmqd (pid %d): it persists the queue and runs its watchdog\n", daemon);
  std::fflush(stdout);

  // 2. The producer.
  std::fflush(stdout);
  const pid_t producer = ::fork();
  if (producer == 0) {
    auto p = shmq::Queue::open(name).value().producer().value();
    for (int i = 1; i <= count; ++i)
      if (p.send("order #" + std::to_string(i)) != shmq::Status::ok) std::_Exit(1);
    std::printf("2. producer (pid %d) sent %d messages, each confirmed on disk by shmqd\n",
                ::getpid(), count);
    std::fflush(stdout);
    std::_Exit(0);
  }
  rc |= wait_child(producer);

  // 3. Consumer A takes five, acks two, holds three and is killed.
  int pipefd[2];
  if (::pipe(pipefd) != 0) return 1;
  std::printf("3. consumer A takes five messages, acks two, and is killed holding three:\n");
  std::fflush(stdout);
  std::fflush(stdout);
  const pid_t a = ::fork();
  if (a == 0) {
    auto c = shmq::Queue::open(name).value().consumer().value();
    std::vector<shmq::Message> ms(5);
    for (int i = 0; i < 5; ++i) {
      if (c.receive_for(ms[i], std::chrono::seconds(5)) != shmq::Status::ok) std::_Exit(1);
      show("consumer A", ms[i], i < 2 ? "ack" : "held, not acked");
      if (i < 2 && c.ack(ms[i]) != shmq::Status::ok) std::_Exit(1);
    }
    (void)!::write(pipefd[1], "x", 1);
    ::pause();
    std::_Exit(0);
  }
  char b;
  if (::read(pipefd[0], &b, 1) != 1) rc = 1;
  ::kill(a, SIGKILL);
  std::printf("   kill -9 %d\n", a);
  std::fflush(stdout);
  wait_child(a);

  // 4. Consumer B receives everything not acked, the three again.
  std::printf("4. consumer B receives what is left; the watchdog gave back A's three:\n");
  std::fflush(stdout);
  std::fflush(stdout);
  const pid_t bpid = ::fork();
  if (bpid == 0) {
    auto c = shmq::Queue::open(name).value().consumer().value();
    shmq::Message m;
    for (int got = 0; got < count - 2; ++got) {
      if (c.receive_for(m, std::chrono::seconds(5)) != shmq::Status::ok) std::_Exit(1);
      show("consumer B", m, "ack");
      if (c.ack(m) != shmq::Status::ok) std::_Exit(1);
    }
    std::_Exit(0);
  }
  rc |= wait_child(bpid);

  const shmq::QueueStats s = q->stats();
  std::printf(
      "5. queue counters: sent %llu, delivered %llu, acked %llu, redelivered by the watchdog "
      "%llu, left %llu; persisted up to position %llu\n",
      static_cast<unsigned long long>(s.sent), static_cast<unsigned long long>(s.received),
      static_cast<unsigned long long>(s.acked), static_cast<unsigned long long>(s.redelivered),
      static_cast<unsigned long long>(s.ready + s.in_flight),
      static_cast<unsigned long long>(s.persisted));
  ::kill(daemon, SIGTERM);
  const int drc = wait_child(daemon);
  std::printf("   shmqd stopped (exit %d); its log:\n", drc);
  std::istringstream lines(read_file(log));
  for (std::string line; std::getline(lines, line);) std::printf("     %s\n", line.c_str());
  (void)shmq::Queue::remove(name);
  std::filesystem::remove_all(dir);
  return rc == 0 && drc == 0 ? 0 : 1;
}
