#include "shmq/wait.hpp"

namespace shmq {

std::string_view to_string(WaitStrategy s) noexcept {
  switch (s) {
    case WaitStrategy::futex: return "futex";
    case WaitStrategy::busy_spin: return "busy-spin";
    case WaitStrategy::spin_yield: return "spin-yield";
    case WaitStrategy::spin_sleep: return "spin-sleep";
  }
  return "unknown";
}

}  // namespace shmq
