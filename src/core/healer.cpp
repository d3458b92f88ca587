#include "core/healer.hpp"

#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <unordered_map>

#include "shmq/queue.hpp"
#include "shmq/watchdog.hpp"

namespace shmq {

namespace {

int initial_setting() {
  const char* v = std::getenv("SHMQ_EMBEDDED_WATCHDOG");
  return v != nullptr && (std::strcmp(v, "0") == 0 || std::strcmp(v, "off") == 0) ? 0 : 1;
}

std::atomic<int>& enabled() {
  static std::atomic<int> on{initial_setting()};
  return on;
}

struct Entry {
  pid_t pid = 0;        // the process that started it (a forked child has no such thread)
  std::size_t users = 0;
  Watchdog* watchdog = nullptr;  // owned; leaked on purpose in a forked child
};

std::mutex& registry_mutex() {
  static std::mutex m;
  return m;
}
std::unordered_map<const detail::Segment*, Entry>& registry() {
  static auto* r = new std::unordered_map<const detail::Segment*, Entry>();  // never destroyed:
  return *r;  // handles may close during static destruction
}

}  // namespace

void set_embedded_watchdog(bool on) noexcept { enabled().store(on ? 1 : 0); }
bool embedded_watchdog() noexcept { return enabled().load() != 0; }

namespace detail {

void healer_acquire(const std::shared_ptr<Segment>& segment) noexcept {
  if (!embedded_watchdog() || !segment) return;
  try {
    std::lock_guard<std::mutex> lock(registry_mutex());
    Entry& e = registry()[segment.get()];
    if (e.watchdog != nullptr && e.pid != ::getpid()) {
      // Inherited through fork(): the thread is the parent's. Forget it (never join or
      // destroy a thread this process does not have) and start our own.
      e = Entry{};
    }
    ++e.users;
    if (e.watchdog != nullptr) return;
    e.pid = ::getpid();
    WatchdogOptions o;
    o.standby_interval = std::chrono::milliseconds(50);
    auto w = Watchdog::attach_segment(segment, o);
    if (!w.ok()) return;  // no free row: the queue is still healed by whoever else runs one
    e.watchdog = new Watchdog(std::move(w.value()));
    e.watchdog->start();
  } catch (...) {
    // Out of memory or no thread: the handle works without a healer of its own.
  }
}

void healer_release(const Segment* segment) noexcept {
  if (segment == nullptr) return;
  Watchdog* stop = nullptr;
  {
    std::lock_guard<std::mutex> lock(registry_mutex());
    auto it = registry().find(segment);
    if (it == registry().end() || it->second.pid != ::getpid()) return;
    if (it->second.users > 0) --it->second.users;
    if (it->second.users != 0) return;
    stop = it->second.watchdog;
    registry().erase(it);
  }
  delete stop;  // stops the thread, resigns, frees its row (outside the lock: it joins)
}

}  // namespace detail
}  // namespace shmq
