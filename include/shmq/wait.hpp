// How a producer or consumer waits when it cannot go on: a consumer with nothing to take,
// a producer with a full ring (issue 16). Chosen per handle, after Aeron's idle strategies:
//
//   futex       (the default) spin for `spin`, then sleep in the kernel until a peer wakes
//               it. Costs no CPU while idle; a wake-up costs a futex wake on the other side
//               and a few microseconds of scheduler latency on this side.
//   busy_spin   never yields the CPU: the lowest latency, for a thread on a core of its own.
//               A busy-spinning waiter never sleeps, so its peers never pay a wake-up for it.
//   spin_yield  spin for `spin`, then sched_yield() between looks: low latency when the
//               machine has idle cores, polite when it has not.
//   spin_sleep  spin for `spin`, then sleep `sleep` between looks (nanosleep): bounded CPU,
//               latency up to `sleep` plus the timer slack.
//
// Every strategy still honours deadlines, interrupt(), eviction, a removed queue, delayed
// messages falling due and heartbeats: only how the time between two looks is spent differs.
//
//   auto consumer = queue.consumer({.wait = {.strategy = shmq::WaitStrategy::busy_spin}});
#pragma once

#include <chrono>
#include <cstdint>
#include <string_view>

namespace shmq {

enum class WaitStrategy : std::uint8_t { futex = 0, busy_spin = 1, spin_yield = 2, spin_sleep = 3 };

std::string_view to_string(WaitStrategy s) noexcept;

struct WaitOptions {
  static constexpr std::chrono::nanoseconds kDefaultSpin{-1};

  WaitStrategy strategy = WaitStrategy::futex;
  // How long to keep looking before yielding or sleeping (futex, spin_yield, spin_sleep;
  // busy_spin spins for ever). kDefaultSpin: the library's default (see design note 24).
  std::chrono::nanoseconds spin{kDefaultSpin};
  // spin_sleep: the sleep between two looks once the spin is over.
  std::chrono::nanoseconds sleep{std::chrono::microseconds(50)};
};

}  // namespace shmq
