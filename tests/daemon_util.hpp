// A real shmqd for end-to-end tests (shmqd_test, delay_test): a temporary data dir, and the
// daemon binary started with its stderr in a file, killed with SIGKILL or stopped with
// SIGTERM. Needs SHMQD_PATH (and SHMQD_CRASHPOINTS_PATH for crash points) defined by CMake.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "test_util.hpp"

#ifndef SHMQD_PATH
#error "SHMQD_PATH must name the shmqd binary"
#endif

namespace shmq::test {

using namespace std::chrono_literals;

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/shmqd-test-XXXXXX";
    path_ = ::mkdtemp(tmpl);
  }
  ~TempDir() {
    std::error_code ec;  // a destructor must not throw (a file a daemon just removed)
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A running shmqd whose stderr goes to a file.
class Daemon {
 public:
  // `crash_at` ("point:count"): run the crash-point build, which kills itself there.
  // `extra`: more shmqd options.
  Daemon(const std::string& data_dir, const std::string& queue, const std::string& log,
         const std::string& metrics = "", const std::string& crash_at = "",
         const std::vector<std::string>& extra = {})
      : log_(log) {
    std::vector<std::string> args = {"shmqd", "--data-dir", data_dir};
    if (!metrics.empty()) args.insert(args.end(), {"--metrics-file", metrics});
    args.insert(args.end(), extra.begin(), extra.end());
    args.push_back(queue);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    std::fflush(nullptr);
    pid_ = ::fork();
    if (pid_ == 0) {
      const int fd = ::open(log.c_str(), O_CREAT | O_WRONLY | O_APPEND, 0600);
      ::dup2(fd, 2);
      if (!crash_at.empty()) {
        ::setenv("SHMQ_CRASH_AT", crash_at.c_str(), 1);
#ifdef SHMQD_CRASHPOINTS_PATH
        ::execv(SHMQD_CRASHPOINTS_PATH, argv.data());
#endif
      } else {
        ::execv(SHMQD_PATH, argv.data());
      }
      std::_Exit(127);
    }
  }
  pid_t pid() const { return pid_; }
  ~Daemon() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      wait_exit(pid_);
    }
  }
  // Waits (bounded) until the log has `count` lines containing `text`.
  bool wait_for(const std::string& text, int count = 1) const {
    const auto give_up = std::chrono::steady_clock::now() + 20s;
    while (std::chrono::steady_clock::now() < give_up) {
      if (occurrences(text) >= count) return true;
      std::this_thread::sleep_for(5ms);  // polling a file for a condition
    }
    return false;
  }
  int occurrences(const std::string& text) const {
    std::ifstream in(log_);
    std::string line;
    int n = 0;
    while (std::getline(in, line)) n += line.find(text) != std::string::npos;
    return n;
  }
  void kill9() {
    ::kill(pid_, SIGKILL);
    EXPECT_EQ(wait_exit(pid_), 128 + SIGKILL);
    pid_ = -1;
  }
  // Waits for the daemon to end by itself (a crash point); SIGKILL after 30 s.
  int wait_end() {
    const auto give_up = std::chrono::steady_clock::now() + 30s;
    int status = 0;
    while (::waitpid(pid_, &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > give_up) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &status, 0);
        pid_ = -1;
        return -1;
      }
      std::this_thread::sleep_for(5ms);  // polling a child's exit
    }
    pid_ = -1;
    return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
  }
  int terminate() {
    ::kill(pid_, SIGTERM);
    const int rc = wait_exit(pid_);
    pid_ = -1;
    return rc;
  }
  std::string log_text() const {
    std::ifstream in(log_);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

 private:
  std::string log_;
  pid_t pid_ = -1;
};

}  // namespace shmq::test
