// Process identity and clocks.
#pragma once

#include <sys/types.h>

#include <cstdint>

namespace shmq::detail {

// Start time of `pid` in clock ticks since boot (/proc/<pid>/stat field 22), or 0 if the
// process does not exist (or /proc is not readable). A pid reused by a new process has a
// different start time, so (pid, start time) names one process for the life of the host.
std::uint64_t process_start_time(pid_t pid) noexcept;

// True if the process (pid, start_time) still runs. start_time 0 means unknown: then only
// the pid is checked.
bool process_alive(pid_t pid, std::uint64_t start_time) noexcept;

// A pidfd for `pid` (pidfd_open, close-on-exec): it becomes readable (poll) once the
// process has exited, zombies included, and keeps naming that process even if the pid is
// reused afterwards. -1 if the process is gone or pidfds are not available (then callers
// fall back to process_alive). The caller checks, after opening it, that the process is
// the one it means (process_alive with its start time), and closes it.
int open_pidfd(pid_t pid) noexcept;

// CLOCK_MONOTONIC in nanoseconds.
std::uint64_t monotonic_ns() noexcept;

// CLOCK_REALTIME in nanoseconds (unix time).
std::uint64_t realtime_ns() noexcept;

// A CLOCK_MONOTONIC due time (delayed messages) as unix time and back, through the two
// clocks read now: what survives a reboot is the wall-clock time. monotonic_to_unix_ns
// gives 0 for a time not in the future (due); unix_to_monotonic_ns gives 0 for one not in
// the future (deliver at once), else monotonic now + (unix - realtime now). Saturating: a
// scribbled value never wraps.
std::uint64_t monotonic_to_unix_ns(std::uint64_t monotonic) noexcept;
std::uint64_t unix_to_monotonic_ns(std::uint64_t unix_ns) noexcept;

// CLOCK_MONOTONIC_COARSE in nanoseconds: the same clock at tick resolution (1-4 ms), read
// without a system call for a few nanoseconds. Used on the hot path for leases, TTLs and
// heartbeats, whose timeouts are in milliseconds or more.
std::uint64_t monotonic_coarse_ns() noexcept;

// The resolution of CLOCK_MONOTONIC_COARSE (one tick, often 1-4 ms): a coarse reading is at
// most this much behind CLOCK_MONOTONIC. Deadlines set from a coarse reading add it, so
// they never fire early.
std::uint64_t coarse_resolution_ns() noexcept;

}  // namespace shmq::detail
