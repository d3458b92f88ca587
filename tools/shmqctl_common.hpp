// shmqctl: what every command shares: exit codes, one-line errors, signals, progress
// lines, and the rendering of payloads for a terminal.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "shmq/shmq.hpp"
#include "shmq/topic.hpp"

namespace shmqctl {

// Exit codes (also in `shmqctl --help` and docs/shmqctl.md).
inline constexpr int kExitOk = 0;       // success
inline constexpr int kExitRuntime = 1;  // runtime failure: queue not found, permission, I/O
inline constexpr int kExitUsage = 2;    // usage error: bad flag, bad value, bad queue name

// What ends a command early: printed by main() as one line, "shmqctl: error: <message>",
// and turned into the exit code. Commands throw it (through fail()) instead of printing.
struct Failure {
  int code;
  std::string message;
};

[[noreturn]] void fail(int code, std::string message);
// A library error met at run time (the command line itself was already checked): exit 1.
[[noreturn]] void fail(const shmq::Error& error);

// `message` with every line break and control character turned into a space: an error is
// always exactly one line.
std::string one_line(std::string_view message);

// "shmqctl: warning: ..." on stderr (one line).
void warn(std::string_view message);

// Checks a queue name; a bad name is a usage error (exit 2).
void check_name(std::string_view name);
// Opens an existing queue (name checked first); exit 1 if it cannot be opened.
shmq::Queue open_queue(const std::string& name);

// --durability and --mode words; anything else is a usage error (exit 2).
shmq::Durability parse_durability(const std::string& w);
std::uint32_t parse_mode(const std::string& m);

// Topics (issue 15) share the queues' name space: is `name` (checked first) a topic?
bool is_topic(const std::string& name);
// A library error about a topic: as fail(error), naming a topic instead of a queue.
[[noreturn]] void fail_topic(const shmq::Error& error);
// Opens an existing topic (name checked first); exit 1 if it cannot be opened.
shmq::Topic open_topic(const std::string& name);
// Checks a group name; a bad name is a usage error (exit 2).
void check_group_name(std::string_view group);

// --- Signals -------------------------------------------------------------------------------
// SIGINT and SIGTERM set stop_requested() and interrupt the registered producer, consumer,
// publisher and subscriber (their blocking calls return Status::interrupted). A second signal kills the process the
// default way. Blocking system calls are not restarted (read() returns EINTR).
void install_stop_handlers();
bool stop_requested() noexcept;

// Registers a producer/consumer/publisher/subscriber for interruption while it is in scope.
class InterruptScope {
 public:
  explicit InterruptScope(shmq::Producer* p) noexcept;
  explicit InterruptScope(shmq::Consumer* c) noexcept;
  explicit InterruptScope(shmq::Publisher* p) noexcept;
  explicit InterruptScope(shmq::Subscriber* s) noexcept;
  ~InterruptScope();
  InterruptScope(const InterruptScope&) = delete;
  InterruptScope& operator=(const InterruptScope&) = delete;

 private:
  enum class Kind { producer, consumer, publisher, subscriber };
  Kind kind_;
};

// Sleeps up to `d`, returning early (false) once a stop was requested.
bool sleep_unless_stopped(std::chrono::milliseconds d);

// --- Output ---------------------------------------------------------------------------------
bool stderr_is_tty();
bool stdout_is_tty();

// A progress line on stderr, redrawn at most 10 times a second, only when stderr is a
// terminal; finish() erases it. Silent otherwise.
class Progress {
 public:
  // total 0 = unknown.
  Progress(std::string label, std::uint64_t total);
  ~Progress();
  void update(std::uint64_t done);
  void finish();

 private:
  std::string label_;
  std::uint64_t total_;
  bool enabled_;
  bool shown_ = false;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_;
};

// A payload for a terminal: printable ASCII as is, backslash escapes for the rest (\n, \t,
// \\, \xNN), cut after `max_bytes` input bytes with a note of what was left out.
// `total`: the whole message's size when `payload` is only its first bytes.
std::string render_payload(std::span<const std::byte> payload, std::size_t max_bytes,
                           std::size_t total = 0);

// 1536 -> "1.5 KiB".
std::string human_bytes(std::uint64_t bytes);
// 1234 ms -> "1.2s", 90000 -> "1m30s".
std::string human_ms(std::uint64_t ms);

}  // namespace shmqctl
