// Futex wait/wake on a 32-bit word in shared memory (not FUTEX_PRIVATE: the waiters are
// in other processes). Timeouts are measured on CLOCK_MONOTONIC.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

namespace shmq::detail {

// Sleeps while *word == expected, at most until `deadline` (steady_clock is
// CLOCK_MONOTONIC on Linux). Returns on wake, value change, signal or deadline; the
// caller re-checks its condition in every case.
void futex_wait(std::atomic<std::uint32_t>& word, std::uint32_t expected,
                std::chrono::steady_clock::time_point deadline) noexcept;

// Wakes every process sleeping on `word`.
void futex_wake_all(std::atomic<std::uint32_t>& word) noexcept;

}  // namespace shmq::detail
