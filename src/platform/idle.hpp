// The time between two looks of a waiting producer or consumer (shmq/wait.hpp).
//
// A waiting loop asks next() after every look that found nothing:
//
//   Idle idle(options);
//   for (;;) {
//     if (look()) return ok;
//     if (idle.next() == Idle::Step::again) continue;  // spun: look again at once
//     ...deadline, eviction, removal, heartbeat...     // Step::slow: at least every ~1 ms
//     idle.rest(deadline, sleep_on_futex);            // yield, sleep or futex wait
//   }
//
// One Idle per blocking call: the spin starts again at each call, and once it is over
// every look that finds nothing rests (yields, sleeps or blocks) until the call returns.
//
// The spin phase counts pauses and reads the clock once every kClockEvery of them, so a
// spin costs no clock read per look. busy_spin stays in the spin phase for ever but still
// returns Step::slow once a millisecond, so deadlines, interrupts and heartbeats are kept.
#pragma once

#include <sched.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdint>

#include "ring/ring.hpp"
#include "shmq/wait.hpp"

namespace shmq::detail {

class Idle {
 public:
  using Clock = std::chrono::steady_clock;
  enum class Step { again, slow };

  explicit Idle(const WaitOptions& o) noexcept : o_(o) {
    if (o_.spin == WaitOptions::kDefaultSpin) {
      // futex: the pre-issue-16 behaviour, kSpinBeforeSleep pauses (a few microseconds).
      // The others spin longer by default: they were chosen for latency.
      spin_pauses_ = o_.strategy == WaitStrategy::futex ? kSpinBeforeSleep : 0;
      spin_ = o_.strategy == WaitStrategy::futex ? std::chrono::nanoseconds(0)
                                                  : std::chrono::microseconds(20);
    } else {
      spin_pauses_ = 0;
      spin_ = std::max(o_.spin, std::chrono::nanoseconds(0));
    }
    if (o_.sleep < std::chrono::microseconds(1)) o_.sleep = std::chrono::microseconds(1);
  }

  WaitStrategy strategy() const noexcept { return o_.strategy; }

  // After a look that found nothing: pause and say `again`, or say `slow` when the spin is
  // over (from then on at every look of this call), and, spinning for ever, once every
  // kCheckEvery.
  Step next() noexcept {
    if (resting_) return Step::slow;
    ++pauses_;
    if (spin_pauses_ != 0) {  // counted spin (the futex default)
      if (pauses_ < static_cast<std::uint32_t>(spin_pauses_)) {
        cpu_relax();
        return Step::again;
      }
      resting_ = true;
      return Step::slow;
    }
    const bool forever = o_.strategy == WaitStrategy::busy_spin;
    if (!forever && spin_.count() == 0) {
      resting_ = true;
      return Step::slow;
    }
    if (pauses_ % kClockEvery != 0) {
      cpu_relax();
      return Step::again;
    }
    const Clock::time_point now = Clock::now();
    if (pauses_ == kClockEvery) {
      spin_end_ = now + spin_;
      last_check_ = now;
    }
    if (!forever && now >= spin_end_) {
      resting_ = true;
      return Step::slow;
    }
    if (now - last_check_ < kCheckEvery) {
      cpu_relax();
      return Step::again;
    }
    last_check_ = now;
    return Step::slow;
  }

  // After the slow-path checks: spend the time until the next look, once the spin is over.
  // block() is the futex strategy's sleep (wait_on with the caller's condition).
  template <typename Block>
  void rest(Clock::time_point deadline, Block&& block) {
    if (!resting_) return;  // still spinning (busy_spin always is)
    switch (o_.strategy) {
      case WaitStrategy::busy_spin: return;
      case WaitStrategy::spin_yield: ::sched_yield(); return;
      case WaitStrategy::spin_sleep: {
        std::chrono::nanoseconds d = o_.sleep;
        if (deadline != Clock::time_point::max()) {
          const auto left = deadline - Clock::now();
          if (left <= Clock::duration::zero()) return;
          d = std::min<std::chrono::nanoseconds>(d, left);
        }
        timespec ts{static_cast<time_t>(d.count() / 1'000'000'000),
                    static_cast<long>(d.count() % 1'000'000'000)};
        ::nanosleep(&ts, nullptr);
        return;
      }
      case WaitStrategy::futex: block(); return;
    }
    block();  // an unknown strategy value: the default
  }

 private:
  static constexpr std::uint32_t kClockEvery = 32;
  static constexpr std::chrono::milliseconds kCheckEvery{1};

  WaitOptions o_;
  int spin_pauses_ = 0;
  std::chrono::nanoseconds spin_{0};
  std::uint32_t pauses_ = 0;
  bool resting_ = false;
  Clock::time_point spin_end_{};
  Clock::time_point last_check_{};
};

}  // namespace shmq::detail
