// Watchdog: heals a queue after its producers and consumers die or stall.
//
// Every tick it
//   - decides which members died: from the process itself (pid and process start time, so a
//     reused pid is not mistaken for the old process), or, on queues created with
//     heartbeat_liveness, from a heartbeat older than the queue's heartbeat timeout;
//   - takes back every message a dead consumer held (delivered again, delivery count raised,
//     redelivered() true) and frees its member row;
//   - turns the slots a dead producer claimed but never published into holes the consumers
//     pass (race-free against a producer that was only slow: its publish then fails and it
//     sends again), and does the same for claims older than the queue's claim timeout;
//   - redelivers messages whose lease (visibility timeout) expired;
//   - moves expired messages (TTL) to the dead-letter queue.
//
// Any number of watchdogs may run on one queue (shmqd, and any attached process that opts
// in): one is elected through a word in the segment and does the work; the others stand by
// and take over when its process dies. Every repair is one CAS, so even two that both
// believed they were elected could not double a repair.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>

#include "shmq/error.hpp"
#include "shmq/queue.hpp"

namespace shmq {

namespace detail {
class Segment;
}

struct WatchdogOptions {
  // Time between ticks of the background thread (start()) while this watchdog is elected.
  // At most half the takeover time (1 s by pid; the heartbeat timeout in heartbeat mode):
  // attach refuses a longer one, and shortens the default to fit a heartbeat timeout below
  // 10 ms.
  std::chrono::milliseconds interval{5};
  // Time between ticks while another watchdog is elected (0: the same as interval). A
  // standby only checks that the elected one's process lives.
  std::chrono::milliseconds standby_interval{0};
};

// Healing by default: while a process has a producer or consumer on a queue, the library
// runs a watchdog for it in that process (elected among all attached processes and shmqd,
// so one does the work). Call set_embedded_watchdog(false) before opening queues to opt out
// (e.g. when the process runs its own Watchdog); the environment variable
// SHMQ_EMBEDDED_WATCHDOG=0 sets the initial value.
void set_embedded_watchdog(bool on) noexcept;
bool embedded_watchdog() noexcept;

// What one tick did.
struct WatchdogReport {
  bool active = false;                 // this watchdog is the elected one
  std::uint32_t members_reclaimed = 0; // dead members whose rows were freed
  std::uint64_t redelivered = 0;       // messages taken back from dead consumers
  std::uint64_t leases_expired = 0;    // messages taken back from live ones
  std::uint64_t holes_repaired = 0;    // claims of dead or stalled producers
  std::uint64_t expired = 0;           // TTL expiries moved to the dead-letter queue
};

class Watchdog {
 public:
  // Registers a watchdog member row in `queue`.
  static Result<Watchdog> attach(const Queue& queue, const WatchdogOptions& options = {});
  // The same on a segment (the library's own embedded watchdog).
  static Result<Watchdog> attach_segment(std::shared_ptr<detail::Segment> segment,
                                         const WatchdogOptions& options);

  Watchdog(Watchdog&&) noexcept;
  Watchdog& operator=(Watchdog&&) noexcept;
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;
  // Stops the thread, resigns if elected, unregisters.
  ~Watchdog();

  // One pass. Not to be called while the background thread runs.
  WatchdogReport tick();

  // Runs tick() every interval on a background thread until stop().
  void start();
  void stop();
  bool running() const noexcept;

  // Totals over every tick of this watchdog.
  WatchdogReport totals() const;

  struct Impl;  // opaque

 private:
  explicit Watchdog(std::unique_ptr<Impl> impl);
  void close() noexcept;
  std::unique_ptr<Impl> impl_;
};

}  // namespace shmq
