// The embedded watchdog ("healer"): healing without a daemon, by default.
//
// While a process has any producer or consumer on a queue, it also runs one watchdog thread
// for that queue (one per process and segment, shared by all its handles, stopped with the
// last of them). Watchdogs are elected through the segment, so of all the attached
// processes (and shmqd) exactly one does the work; the others stand by, ticking ten times
// less often, and one of them takes over within a standby tick when the elected one's
// process dies. An application opts out with shmq::set_embedded_watchdog(false) (or the
// environment variable SHMQ_EMBEDDED_WATCHDOG=0) before it opens queues, for instance when
// it runs a Watchdog itself or relies on shmqd.
#pragma once

#include <memory>

#include "segment/segment.hpp"

namespace shmq::detail {

// A producer or consumer of this process now uses `segment`: start its healer if it has
// none. Never fails the caller: a healer that cannot start (no free member row) is skipped.
void healer_acquire(const std::shared_ptr<Segment>& segment) noexcept;
// That producer or consumer closed: the last one stops the healer.
void healer_release(const Segment* segment) noexcept;

}  // namespace shmq::detail
