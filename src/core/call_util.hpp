// Small helpers shared by the producer and consumer call paths.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

namespace shmq::detail {

// Member-local counter bump: only the member's own process writes its row's counters, so a
// plain load + store (no locked RMW) is enough; readers (stats) may see a slightly old value.
inline void bump(std::atomic<std::uint64_t>& c, std::uint64_t n = 1) noexcept {
  c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}

// The steady_clock deadline `timeout` from now; max() (without reading the clock) for an
// unbounded wait, saturating instead of overflowing.
inline std::chrono::steady_clock::time_point deadline_after(std::chrono::nanoseconds timeout) {
  using Clock = std::chrono::steady_clock;
  if (timeout == std::chrono::nanoseconds::max()) return Clock::time_point::max();
  const auto now = Clock::now();
  if (timeout >= Clock::time_point::max() - now) return Clock::time_point::max();
  return now + timeout;
}

}  // namespace shmq::detail
