#include "core/healer.hpp"

#include <pthread.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include "shmq/queue.hpp"
#include "shmq/watchdog.hpp"
#include "platform/process.hpp"

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
  std::vector<detail::MemberTicket> members;  // this process's producers and consumers
  // Heartbeat mode with the embedded watchdog off: a thread that only beats.
  std::thread* beater = nullptr;  // owned; leaked in a forked child like the watchdog
  std::shared_ptr<std::atomic<bool>> stop_beating;
};

std::mutex& registry_mutex() {
  static std::mutex m;
  // fork() while another thread (a watchdog tick beating) holds it would leave it locked
  // for ever in the child: the forking thread takes it across the fork.
  static const bool at_fork = [] {
    ::pthread_atfork([] { m.lock(); }, [] { m.unlock(); }, [] { m.unlock(); });
    return true;
  }();
  (void)at_fork;
  return m;
}
std::unordered_map<const detail::Segment*, Entry>& registry() {
  static auto* r = new std::unordered_map<const detail::Segment*, Entry>();  // never destroyed:
  return *r;  // handles may close during static destruction
}

void beat_locked(const detail::Segment& seg, const Entry& e) noexcept {
  const std::uint64_t now = detail::monotonic_coarse_ns();
  for (const detail::MemberTicket& m : e.members) {
    // Only while the row is ours: a stale handle must not keep a row alive that a watchdog
    // already took (the store itself is harmless to a new occupant: it lives).
    if (seg.owns(m)) seg.member(m.row).heartbeat_ns.store(now, std::memory_order_relaxed);
  }
}

}  // namespace

void set_embedded_watchdog(bool on) noexcept { enabled().store(on ? 1 : 0); }
bool embedded_watchdog() noexcept { return enabled().load() != 0; }

namespace detail {

void healer_beat(const Segment* segment) noexcept {
  std::lock_guard<std::mutex> lock(registry_mutex());
  auto it = registry().find(segment);
  if (it == registry().end() || it->second.pid != ::getpid()) return;
  beat_locked(*segment, it->second);
}

void healer_acquire(const std::shared_ptr<Segment>& segment, const MemberTicket& m) noexcept {
  if (!segment) return;
  try {
    std::lock_guard<std::mutex> lock(registry_mutex());
    Entry& e = registry()[segment.get()];
    if (e.pid != ::getpid()) {
      // Inherited through fork() (or new): the threads are the parent's. Forget them (never
      // join or destroy a thread this process does not have) and start our own.
      e = Entry{};
      e.pid = ::getpid();
    }
    ++e.users;
    e.members.push_back(m);
    if (e.watchdog != nullptr || e.beater != nullptr) return;
    if (embedded_watchdog()) {
      WatchdogOptions o;
      // A standby wakes at once when the elected watchdog's process dies (a pidfd, see
      // Watchdog's standby sleep); the interval only bounds the takeover from one that is
      // stopped or has resigned, and what an idle process pays for its standby.
      o.standby_interval = std::chrono::milliseconds(250);
      auto w = Watchdog::attach_segment(segment, o);
      if (w.ok()) {
        e.watchdog = new Watchdog(std::move(w.value()));
        e.watchdog->start();
        return;
      }
      // No free row: the queue is still healed by whoever else runs one; we still beat.
    }
    if (!segment->heartbeat_liveness()) return;
    const Segment* key = segment.get();
    const auto period = std::chrono::milliseconds(std::max(1u, segment->heartbeat_timeout_ms() / 4));
    e.stop_beating = std::make_shared<std::atomic<bool>>(false);
    e.beater = new std::thread([key, period, stop = e.stop_beating] {
      while (!stop->load()) {
        healer_beat(key);
        std::this_thread::sleep_for(period);  // a timer, not a synchronisation
      }
    });
  } catch (...) {
    // Out of memory or no thread: the handle works without a healer of its own.
  }
}

void healer_release(const Segment* segment, const MemberTicket& m) noexcept {
  if (segment == nullptr) return;
  Watchdog* stop = nullptr;
  std::thread* beater = nullptr;
  {
    std::lock_guard<std::mutex> lock(registry_mutex());
    auto it = registry().find(segment);
    if (it == registry().end() || it->second.pid != ::getpid()) return;
    auto& ms = it->second.members;
    for (auto i = ms.begin(); i != ms.end(); ++i) {
      if (i->row == m.row && i->word == m.word) {
        ms.erase(i);
        break;
      }
    }
    if (it->second.users > 0) --it->second.users;
    if (it->second.users != 0) return;
    stop = it->second.watchdog;
    beater = it->second.beater;
    if (beater != nullptr) it->second.stop_beating->store(true);
    registry().erase(it);
  }
  delete stop;  // stops the thread, resigns, frees its row (outside the lock: it joins)
  if (beater != nullptr) {
    beater->join();
    delete beater;
  }
}

}  // namespace detail
}  // namespace shmq
