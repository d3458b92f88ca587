// Helpers shared by the tests: unique queue names, a queue that removes itself, and forked
// child processes whose exit status is checked.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>

#include <gtest/gtest.h>

#include "shmq/shmq.hpp"

namespace shmq::test {

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

inline Bytes bytes_of(const std::string& s) { return as_bytes(s); }

}  // namespace shmq::test
