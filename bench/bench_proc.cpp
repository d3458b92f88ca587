#include "bench_proc.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

namespace shmq_bench {

namespace fs = std::filesystem;

// --- signals and cleanup ---------------------------------------------------------------------

volatile sig_atomic_t g_signal = 0;

namespace {

extern "C" void on_signal(int sig) { g_signal = sig; }

std::vector<std::string>& temp_dirs() {
  static std::vector<std::string> dirs;
  return dirs;
}

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

std::uint64_t voluntary_switches() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return static_cast<std::uint64_t>(u.ru_nvcsw);
}

void close_fd(int& fd) {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

}  // namespace

void install_signal_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: poll() returns EINTR and the harness cleans up
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
  // A child that died before the start signal must not kill us through the go pipe.
  ::signal(SIGPIPE, SIG_IGN);
}

void check_signal() {
  if (g_signal != 0) fail(std::string("interrupted by ") + strsignal(g_signal));
}

const std::string& run_tag() {
  static const std::string tag = "sb" + std::to_string(::getpid()) + "-";
  return tag;
}

std::string fresh_name() {
  static unsigned n = 0;
  return run_tag() + std::to_string(++n);
}

void sweep_run_objects() {
  if (DIR* d = ::opendir("/dev/shm")) {
    std::vector<std::string> doomed;
    while (const dirent* e = ::readdir(d)) {
      const std::string_view name = e->d_name;
      const std::string& tag = run_tag();
      if (name.starts_with(tag) || name.starts_with("shmq." + tag))
        doomed.emplace_back(name);
    }
    ::closedir(d);
    for (const std::string& n : doomed) ::unlink(("/dev/shm/" + n).c_str());
  }
  for (const std::string& dir : temp_dirs()) {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  temp_dirs().clear();
}

TempDir::TempDir(const std::string& root) {
  std::string templ = root + "/shmq-bench-" + run_tag() + "XXXXXX";
  std::vector<char> buf(templ.begin(), templ.end());
  buf.push_back('\0');
  if (::mkdtemp(buf.data()) == nullptr)
    fail("cannot create a temporary directory under " + root + ": " + std::strerror(errno));
  path_ = buf.data();
  temp_dirs().push_back(path_);
}

TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
  auto& v = temp_dirs();
  v.erase(std::remove(v.begin(), v.end(), path_), v.end());
}

// --- shared results --------------------------------------------------------------------------

SharedMap::SharedMap(std::size_t bytes) : n_(round_up(std::max<std::size_t>(bytes, 1), 4096)) {
  p_ = ::mmap(nullptr, n_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p_ == MAP_FAILED) {
    p_ = nullptr;
    fail("mmap of " + std::to_string(n_) + " shared bytes: " + std::strerror(errno));
  }
}

SharedMap::~SharedMap() {
  if (p_ != nullptr) ::munmap(p_, n_);
}

// --- children --------------------------------------------------------------------------------

void ChildIo::ready() { write_all(report_fd_, "R", 1); }

void ChildIo::wait_go() {
  char c = 0;
  for (;;) {
    const ssize_t r = ::read(go_fd_, &c, 1);
    if (r < 0 && errno == EINTR) continue;
    if (r == 1 && c == 'G') break;
    fail("parent went away before the start signal");
  }
  switches_at_go_ = voluntary_switches();
}

void ChildIo::finish() {
  char rec[1 + sizeof(std::uint64_t)];
  rec[0] = 'D';
  const std::uint64_t s = voluntary_switches() - switches_at_go_;
  std::memcpy(rec + 1, &s, sizeof s);
  write_all(report_fd_, rec, sizeof rec);
}

std::string describe_status(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status))
    return std::string("was killed by signal ") + std::to_string(WTERMSIG(status)) + " (" +
           strsignal(WTERMSIG(status)) + ")";
  return "ended with wait status " + std::to_string(status);
}

ProcessGroup::ProcessGroup(std::string scenario) : scenario_(std::move(scenario)) {
  if (::pipe2(go_, O_CLOEXEC) != 0) fail(std::string("pipe: ") + std::strerror(errno));
}

ProcessGroup::~ProcessGroup() {
  for (Child& c : children_) {
    if (!c.reaped && c.pid > 0) {
      ::kill(c.pid, SIGKILL);
      int st = 0;
      while (::waitpid(c.pid, &st, 0) < 0 && errno == EINTR) {
      }
    }
    close_fd(c.fd);
  }
  close_fd(go_[0]);
  close_fd(go_[1]);
}

void ProcessGroup::spawn(const std::string& role, const std::function<void(ChildIo&)>& body) {
  int rep[2];
  if (::pipe2(rep, O_CLOEXEC) != 0) fail(std::string("pipe: ") + std::strerror(errno));
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
      body(io);
      io.finish();
      rc = 0;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "%s: %s: %s (pid %d): %s\n", kProg, scenario_.c_str(), role.c_str(),
                   static_cast<int>(::getpid()), e.what());
    } catch (...) {
      std::fprintf(stderr, "%s: %s: %s: unknown exception\n", kProg, scenario_.c_str(),
                   role.c_str());
    }
    std::fflush(nullptr);
    ::_exit(rc);
  }
  ::close(rep[1]);
  Child& c = children_.emplace_back();
  c.role = role;
  c.pid = pid;
  c.fd = rep[0];
}

void ProcessGroup::reap(Child& c) {
  if (c.reaped) return;
  while (::waitpid(c.pid, &c.status, 0) < 0) {
    if (errno != EINTR) fail(std::string("waitpid: ") + std::strerror(errno));
  }
  c.reaped = true;
}

std::uint64_t ProcessGroup::run(std::chrono::milliseconds setup_timeout,
                                std::chrono::milliseconds run_timeout,
                                const std::function<void()>& check) {
  pump(1, Clock::now() + setup_timeout, "get ready", check);
  for (const Child& c : children_)
    if (c.buf.empty() || c.buf[0] != 'R') fail(c.role + " sent garbage instead of ready");
  const std::string go(children_.size(), 'G');
  write_all(go_[1], go.data(), go.size());
  close_fd(go_[1]);
  pump(0, Clock::now() + run_timeout, "finish", check);
  std::uint64_t switches = 0;
  for (Child& c : children_) {
    reap(c);
    if (!WIFEXITED(c.status) || WEXITSTATUS(c.status) != 0)
      fail(c.role + " (pid " + std::to_string(c.pid) + ") " + describe_status(c.status));
    if (c.buf.size() != 2 + sizeof(std::uint64_t) || c.buf[1] != 'D')
      fail(c.role + " exited 0 without its done record");
    std::uint64_t s = 0;
    std::memcpy(&s, c.buf.data() + 2, sizeof s);
    switches += s;
  }
  return switches;
}

// want > 0: read until every child sent `want` bytes (a child that exits first failed).
// want == 0: read until every child closed its pipe (exited); each is reaped at once, and a
// non-zero exit fails the run right away (the others would wait for it forever).
void ProcessGroup::pump(std::size_t want, Clock::time_point deadline, const char* phase,
                        const std::function<void()>& check) {
  for (;;) {
    std::vector<pollfd> fds;
    std::vector<Child*> who;
    for (Child& c : children_) {
      if (c.eof || (want > 0 && c.buf.size() >= want)) continue;
      fds.push_back(pollfd{c.fd, POLLIN, 0});
      who.push_back(&c);
    }
    if (fds.empty()) return;
    check_signal();
    if (check) check();
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) {
      std::string names;
      for (const Child* c : who) names += (names.empty() ? "" : ", ") + c->role;
      fail("timed out waiting for " + names + " to " + phase + " (a hang?); killed");
    }
    const int n = ::poll(fds.data(), fds.size(),
                         static_cast<int>(std::min<long long>(left.count(), 20)));
    if (n < 0) {
      if (errno == EINTR) continue;
      fail(std::string("poll: ") + std::strerror(errno));
    }
    for (std::size_t i = 0; i < fds.size(); ++i) {
      if (fds[i].revents == 0) continue;
      Child& c = *who[i];
      char tmp[256];
      const ssize_t r = ::read(c.fd, tmp, sizeof tmp);
      if (r < 0) {
        if (errno == EINTR) continue;
        fail(std::string("read from ") + c.role + ": " + std::strerror(errno));
      }
      if (r == 0) {
        c.eof = true;
        reap(c);
        if (want > 0 || !WIFEXITED(c.status) || WEXITSTATUS(c.status) != 0)
          fail(c.role + " (pid " + std::to_string(c.pid) + ") " + describe_status(c.status) +
               (want > 0 ? std::string(" before it could ") + phase : std::string()));
        continue;
      }
      c.buf.append(tmp, static_cast<std::size_t>(r));
    }
  }
}

// --- shmqd -------------------------------------------------------------------------------------

namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::size_t count_of(const std::string& hay, std::string_view needle) {
  std::size_t n = 0;
  for (std::size_t at = hay.find(needle); at != std::string::npos;
       at = hay.find(needle, at + needle.size()))
    ++n;
  return n;
}

}  // namespace

Daemon::Daemon(const std::string& exe, const std::string& data_dir,
               const std::vector<std::string>& queues, const std::string& log_path,
               std::chrono::milliseconds start_timeout)
    : log_path_(log_path) {
  const int log_fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (log_fd < 0) fail("cannot create " + log_path + ": " + std::strerror(errno));
  std::vector<std::string> args = {exe, "--data-dir", data_dir};
  args.insert(args.end(), queues.begin(), queues.end());
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t parent = ::getpid();
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(log_fd);
    fail(std::string("fork: ") + std::strerror(errno));
  }
  if (pid == 0) {
    ::signal(SIGINT, SIG_DFL);
    ::signal(SIGTERM, SIG_DFL);
    ::signal(SIGPIPE, SIG_DFL);
    // shmqd stops cleanly (flush, checkpoint) if the harness dies.
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != parent) ::_exit(127);
    const int devnull = ::open("/dev/null", O_RDWR);
    if (devnull >= 0) {
      ::dup2(devnull, STDIN_FILENO);
      ::dup2(devnull, STDOUT_FILENO);
    }
    ::dup2(log_fd, STDERR_FILENO);
    ::execv(exe.c_str(), argv.data());
    const std::string msg = "exec " + exe + ": " + std::strerror(errno) + "\n";
    (void)!::write(STDERR_FILENO, msg.data(), msg.size());
    ::_exit(127);
  }
  ::close(log_fd);
  pid_ = pid;
  const auto deadline = Clock::now() + start_timeout;
  for (;;) {
    int st = 0;
    const pid_t r = ::waitpid(pid_, &st, WNOHANG);
    if (r == pid_) {
      reaped_ = true;
      status_ = st;
      throw Skip("shmqd " + describe_status(st) + " while starting: " + log_tail(3));
    }
    if (count_of(read_file(log_path_), "persisting") >= queues.size()) return;
    if (g_signal != 0) {
      stop(std::chrono::milliseconds(2000));
      check_signal();
    }
    if (Clock::now() >= deadline) {
      stop(std::chrono::milliseconds(2000));
      throw Skip("shmqd did not say \"persisting\" within " +
                 std::to_string(start_timeout.count()) + " ms: " + log_tail(3));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

Daemon::~Daemon() {
  if (!reaped_) stop(std::chrono::milliseconds(5000));
}

void Daemon::check_alive() {
  if (reaped_) fail("shmqd " + describe_status(status_) + ": " + log_tail(3));
  int st = 0;
  if (::waitpid(pid_, &st, WNOHANG) == pid_) {
    reaped_ = true;
    status_ = st;
    fail("shmqd " + describe_status(st) + " during the run: " + log_tail(3));
  }
}

int Daemon::stop(std::chrono::milliseconds grace) {
  if (reaped_) return status_;
  ::kill(pid_, SIGTERM);
  const auto deadline = Clock::now() + grace;
  for (;;) {
    int st = 0;
    const pid_t r = ::waitpid(pid_, &st, WNOHANG);
    if (r == pid_ || (r < 0 && errno != EINTR)) {
      reaped_ = true;
      status_ = st;
      return st;
    }
    if (Clock::now() >= deadline) {
      ::kill(pid_, SIGKILL);
      while (::waitpid(pid_, &st, 0) < 0 && errno == EINTR) {
      }
      reaped_ = true;
      status_ = st;
      return st;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

std::string Daemon::log_tail(std::size_t max_lines) const {
  const std::string text = read_file(log_path_);
  std::vector<std::string> lines;
  std::size_t start = 0;
  while (start < text.size()) {
    std::size_t nl = text.find('\n', start);
    if (nl == std::string::npos) nl = text.size();
    if (nl > start) lines.push_back(text.substr(start, nl - start));
    start = nl + 1;
  }
  if (lines.empty()) return "(shmqd wrote nothing)";
  std::string out;
  for (std::size_t i = lines.size() > max_lines ? lines.size() - max_lines : 0; i < lines.size(); ++i)
    out += (out.empty() ? "" : " | ") + lines[i];
  return out;
}

std::uint64_t Daemon::written_bytes() const {
  if (reaped_) return 0;
  std::ifstream in("/proc/" + std::to_string(pid_) + "/io");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("wchar:", 0) == 0) return std::strtoull(line.c_str() + 6, nullptr, 10);
  return 0;
}

Daemon::Totals Daemon::totals() const {
  Totals t;
  const std::string text = read_file(log_path_);
  const std::string_view key = "stopped cleanly (";
  for (std::size_t at = text.find(key); at != std::string::npos; at = text.find(key, at + 1)) {
    unsigned long long r = 0, a = 0, s = 0, w = 0, wt = 0;
    double us = 0;
    const int n = std::sscanf(text.c_str() + at + key.size(),
                              "%llu records, %llu acks, %llu syncs; %*f messages per fdatasync, "
                              "%llu group waits, %llu ended at their bound, %lf us",
                              &r, &a, &s, &w, &wt, &us);
    if (n >= 3) {
      t.found = true;
      t.records += r;
      t.acks += a;
      t.syncs += s;
    }
    if (n == 6) {
      t.sync_s += us * 1e-6 * static_cast<double>(s);
      t.group_waits += w;
      t.group_wait_timeouts += wt;
    }
  }
  return t;
}

std::pair<int, std::string> run_capture(const std::vector<std::string>& args,
                                        std::chrono::milliseconds timeout) {
  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0) fail(std::string("pipe: ") + std::strerror(errno));
  std::vector<std::string> a = args;
  std::vector<char*> argv;
  for (std::string& s : a) argv.push_back(s.data());
  argv.push_back(nullptr);
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(out[0]);
    ::close(out[1]);
    fail(std::string("fork: ") + std::strerror(errno));
  }
  if (pid == 0) {
    ::signal(SIGINT, SIG_DFL);
    ::signal(SIGTERM, SIG_DFL);
    ::signal(SIGPIPE, SIG_DFL);
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    ::dup2(out[1], STDOUT_FILENO);
    ::dup2(out[1], STDERR_FILENO);
    ::setenv("LC_ALL", "C", 1);
    ::execvp(argv[0], argv.data());
    const std::string msg = std::string("exec ") + argv[0] + ": " + std::strerror(errno) + "\n";
    (void)!::write(STDERR_FILENO, msg.data(), msg.size());
    ::_exit(127);
  }
  ::close(out[1]);
  std::string text;
  const auto deadline = Clock::now() + timeout;
  bool killed = false;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if ((left.count() <= 0 || g_signal != 0) && !killed) {
      ::kill(pid, SIGKILL);
      killed = true;
    }
    pollfd p{out[0], POLLIN, 0};
    const int n = ::poll(&p, 1, 50);
    if (n < 0 && errno != EINTR) break;
    if (n <= 0) continue;
    char buf[512];
    const ssize_t r = ::read(out[0], buf, sizeof buf);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    text.append(buf, static_cast<std::size_t>(r));
  }
  ::close(out[0]);
  int st = 0;
  while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  check_signal();
  if (killed) fail(args[0] + " did not finish within " + std::to_string(timeout.count()) + " ms");
  return {st, text};
}

}  // namespace shmq_bench
