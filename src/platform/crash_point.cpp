#include "platform/crash_point.hpp"

#include <signal.h>

#include <cstring>

namespace shmq::detail {

namespace {
const char* armed_name = nullptr;
unsigned armed_countdown = 0;
}  // namespace

void arm_crash_point(const char* name, unsigned countdown) noexcept {
  armed_name = name;
  armed_countdown = countdown;
}

void crash_point(const char* name) noexcept {
  if (armed_name == nullptr || std::strcmp(armed_name, name) != 0) return;
  if (--armed_countdown == 0) ::raise(SIGKILL);
}

}  // namespace shmq::detail
