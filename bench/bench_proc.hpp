// shmq-bench: processes. Every side of a scenario is a real process made with fork(); the
// parent starts them together, watches them, and fails the scenario if any of them fails,
// dies or hangs. Also: shared anonymous mappings for results, the shmqd daemon, temporary
// directories, and the cleanup of everything a run creates.
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "bench_util.hpp"

namespace shmq_bench {

// --- signals and cleanup ---------------------------------------------------------------------

// Set by SIGINT/SIGTERM: waits stop, the scenario fails, everything is cleaned up, exit 1.
extern volatile sig_atomic_t g_signal;
void install_signal_handlers();
void check_signal();  // throws Failure if a signal arrived

// The prefix of every shared-memory object and temporary directory of this run
// ("sb<pid>-"), so that a final sweep finds whatever a failure left behind.
const std::string& run_tag();
// A fresh object name for this run: "sb<pid>-<n>".
std::string fresh_name();
// Unlinks every /dev/shm entry of this run (shmq.sb<pid>-*, sb<pid>-*) and removes every
// registered temporary directory. Safe to call more than once.
void sweep_run_objects();

// A temporary directory (mkdtemp under `root`), removed with its contents when dropped.
class TempDir {
 public:
  explicit TempDir(const std::string& root);
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const noexcept { return path_; }

 private:
  std::string path_;
};

// --- shared results --------------------------------------------------------------------------

// A MAP_SHARED anonymous mapping made by the parent before fork: children write results
// into it, the parent reads them after the children exited.
class SharedMap {
 public:
  explicit SharedMap(std::size_t bytes);
  ~SharedMap();
  SharedMap(const SharedMap&) = delete;
  SharedMap& operator=(const SharedMap&) = delete;
  void* get() const noexcept { return p_; }
  std::size_t size() const noexcept { return n_; }

 private:
  void* p_ = nullptr;
  std::size_t n_ = 0;
};

// --- children --------------------------------------------------------------------------------

// The child's end of the start protocol: ready() once its queues are open, then wait_go()
// until the parent starts every child of the run at once.
class ChildIo {
 public:
  ChildIo(int report_fd, int go_fd) : report_fd_(report_fd), go_fd_(go_fd) {}
  void ready();
  void wait_go();
  // Sends the "done" record (voluntary context switches since go). Called for the body.
  void finish();

 private:
  int report_fd_;
  int go_fd_;
  std::uint64_t switches_at_go_ = 0;
};

std::string describe_status(int wait_status);

// The processes of one run. spawn() forks; run() waits until all are ready, starts them,
// and waits until all exited 0. Any child that fails, dies or overruns makes run() throw;
// the destructor kills (SIGKILL, by pid) and reaps whatever still runs.
class ProcessGroup {
 public:
  explicit ProcessGroup(std::string scenario);
  ~ProcessGroup();
  ProcessGroup(const ProcessGroup&) = delete;
  ProcessGroup& operator=(const ProcessGroup&) = delete;

  // Forks a child running body(ChildIo&) (ready + wait_go are the body's job). A Failure
  // or other exception in the child is printed and becomes exit status 1.
  void spawn(const std::string& role, const std::function<void(ChildIo&)>& body);

  // Returns the sum of the children's voluntary context switches from go to their end.
  // `check` runs every few milliseconds while waiting (e.g. "is shmqd still alive?") and
  // may throw to fail the run.
  std::uint64_t run(std::chrono::milliseconds setup_timeout,
                    std::chrono::milliseconds run_timeout,
                    const std::function<void()>& check = {});

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
  void pump(std::size_t want, Clock::time_point deadline, const char* phase,
            const std::function<void()>& check);
  void reap(Child& c);

  std::string scenario_;
  int go_[2] = {-1, -1};
  std::vector<Child> children_;
};

// --- shmqd -------------------------------------------------------------------------------------

// One shmqd process serving `queues` in `data_dir`, its stderr in `log_path`. The
// constructor waits (bounded) until the log says "persisting" once per queue and throws
// Skip if shmqd exits or does not get there. The destructor stops it (SIGTERM, then
// SIGKILL after a grace period).
class Daemon {
 public:
  Daemon(const std::string& exe, const std::string& data_dir,
         const std::vector<std::string>& queues, const std::string& log_path,
         std::chrono::milliseconds start_timeout);
  ~Daemon();
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  pid_t pid() const noexcept { return pid_; }
  // Throws Failure if shmqd has exited (used while a run is in progress).
  void check_alive();
  // SIGTERM, wait up to `grace`, then SIGKILL. Returns the wait status (and remembers it).
  int stop(std::chrono::milliseconds grace = std::chrono::milliseconds(10'000));
  std::string log_tail(std::size_t max_lines = 5) const;
  // Bytes shmqd has handed to write() so far (/proc/PID/io wchar): its log writes.
  std::uint64_t written_bytes() const;
  // From the log after a clean stop: the sums of its per-queue "stopped cleanly (R records,
  // A acks, S syncs)" lines; found = false if it printed none.
  struct Totals {
    bool found = false;
    std::uint64_t records = 0;
    std::uint64_t acks = 0;
    std::uint64_t syncs = 0;
    std::uint64_t group_waits = 0;          // rounds that waited for more sync senders
    std::uint64_t group_wait_timeouts = 0;  // ... and ended at the wait's bound
    double sync_s = 0;                      // time shmqd spent in those fdatasyncs
  };
  Totals totals() const;

 private:
  pid_t pid_ = -1;
  bool reaped_ = false;
  int status_ = 0;
  std::string log_path_;
};

// Runs `argv` as a child with stdout+stderr captured; returns (wait status, output).
// Killed after `timeout`.
std::pair<int, std::string> run_capture(const std::vector<std::string>& argv,
                                        std::chrono::milliseconds timeout);

}  // namespace shmq_bench
