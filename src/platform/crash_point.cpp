#include "platform/crash_point.hpp"

#include <signal.h>

#include <cstring>

namespace shmq::detail {

namespace {
const char* armed_name = nullptr;
unsigned armed_countdown = 0;
int armed_signal = SIGKILL;
bool armed_every = false;
}  // namespace

void arm_crash_point(const char* name, unsigned countdown) noexcept {
  armed_name = name;
  armed_countdown = countdown;
  armed_signal = SIGKILL;
  armed_every = false;
}

void arm_stop_point(const char* name, unsigned countdown) noexcept {
  armed_name = name;
  armed_countdown = countdown;
  armed_signal = SIGSTOP;
  armed_every = false;
}

void arm_stop_point_every(const char* name) noexcept {
  armed_name = name;
  armed_countdown = 1;
  armed_signal = SIGSTOP;
  armed_every = true;
}

void crash_point(const char* name) noexcept {
  if (armed_name == nullptr || std::strcmp(armed_name, name) != 0) return;
  if (--armed_countdown == 0) {
    if (armed_every) armed_countdown = 1;
    ::raise(armed_signal);
  }
}

}  // namespace shmq::detail
