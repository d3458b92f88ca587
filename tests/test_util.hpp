// Helpers shared by the tests: unique queue names, a queue that removes itself, and forked
// child processes whose exit status is checked.
#pragma once

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "shmq/shmq.hpp"

namespace shmq::test {

// A received message's bytes as a string (for comparisons in tests).
inline std::string text(const Message& m) { return std::string(m.view()); }

inline std::string unique_name(const std::string& stem) {
  static std::atomic<int> counter{0};
  // append(), not operator+: GCC 12 warns falsely on "literal" + string (bug 105329).
  std::string name("test-");
  name.append(stem).append("-").append(std::to_string(::getpid()));
  return name.append("-").append(std::to_string(counter++));
}

// Creates a queue with a unique name and removes its segment when the test ends.
class ScopedQueue {
 public:
  explicit ScopedQueue(const std::string& stem, QueueOptions options = {})
      : name_(unique_name(stem)) {
    auto q = Queue::create(name_, options);
    if (!q.ok()) {
      ADD_FAILURE() << "create " << name_ << ": " << q.error().message();
      std::abort();
    }
    queue_ = std::make_unique<Queue>(std::move(q.value()));
  }
  ~ScopedQueue() {
    (void)Queue::remove(name_);
    (void)Queue::remove(Queue::dead_letter_name(name_));  // if a test made one
  }
  Queue& operator*() { return *queue_; }
  Queue* operator->() { return queue_.get(); }
  const std::string& name() const { return name_; }

 private:
  std::string name_;
  std::unique_ptr<Queue> queue_;
};

// Runs `body` in a forked child; the child exits with body's return value (0 = success).
// gtest assertions do not cross the fork: children report through their exit code.
inline pid_t spawn(const std::function<int()>& body) {
  // A child must not inherit (and print again) output still buffered in the parent.
  std::fflush(stdout);
  std::fflush(stderr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    int rc = 1;
    try {
      rc = body();
    } catch (...) {
      rc = 99;
    }
    std::_Exit(rc);
  }
  return pid;
}

// Waits for `pid`; returns its exit code, or 128 + signal.
inline int wait_exit(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return -1;
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

// Waits for `pid` for at most `limit`, polling (the sleep only spaces the polls). Returns its
// exit code, 128 + the signal that ended it, or -1 if it was still running: then it is
// killed with SIGKILL and reaped.
inline int wait_bounded(pid_t pid, std::chrono::nanoseconds limit) {
  const auto give_up = std::chrono::steady_clock::now() + limit;
  int status = 0;
  for (;;) {
    const pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) break;
    if (r < 0 && errno != EINTR) return -2;
    if (std::chrono::steady_clock::now() >= give_up) {
      ::kill(pid, SIGKILL);
      (void)wait_exit(pid);
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -3;
}

// Forks a consumer process that receives `count` messages of queue `name` and holds them,
// unacked, until it is killed. Returns its pid once it holds them all, or -1 (the child
// could not: it has exited, and is reaped).
inline pid_t spawn_holder(const std::string& name, int count) {
  int fds[2];
  if (::pipe(fds) != 0) return -1;
  const pid_t pid = spawn([&] {
    ::close(fds[0]);
    auto q = Queue::open(name);
    if (!q.ok()) return 2;
    auto c = q->consumer();
    if (!c.ok()) return 3;
    std::vector<Message> held(static_cast<std::size_t>(count));
    for (auto& m : held)
      if (c->receive_for(m, std::chrono::seconds(10)) != Status::ok) return 4;
    const char ready = 'r';
    if (::write(fds[1], &ready, 1) != 1) return 5;
    for (;;) ::pause();
  });
  ::close(fds[1]);
  char ready = 0;
  const bool holds = pid > 0 && ::read(fds[0], &ready, 1) == 1;
  ::close(fds[0]);
  if (!holds && pid > 0) {
    ::kill(pid, SIGKILL);
    (void)wait_exit(pid);
    return -1;
  }
  return pid;
}

inline Bytes bytes_of(const std::string& s) { return as_bytes(s); }

}  // namespace shmq::test
