// The embedded watchdog ("healer"): healing without a daemon, by default.
//
// While a process has any producer or consumer on a queue, it also runs one watchdog thread
// for that queue (one per process and segment, shared by all its handles, stopped with the
// last of them). Watchdogs are elected through the segment, so of all the attached
// processes (and shmqd) exactly one does the work; the others stand by, asleep on the
// elected one's process (a pidfd) for up to 250 ms at a time, and one of them takes over as
// soon as that process dies. An application opts out with shmq::set_embedded_watchdog(false) (or the
// environment variable SHMQ_EMBEDDED_WATCHDOG=0) before it opens queues, for instance when
// it runs a Watchdog itself or relies on shmqd.
#pragma once

#include <memory>

#include "segment/segment.hpp"
#include "shmq/watchdog.hpp"

namespace shmq::detail {

// A producer or consumer of this process (member `m`) now uses `segment`: start its healer
// if it has none. Never fails the caller: a healer that cannot start (no free member row)
// is skipped. In heartbeat mode the healer's thread also keeps `m`'s heartbeat fresh (and
// if the embedded watchdog is off, a thread that only does that runs instead), so a live
// but idle handle is never taken for dead.
void healer_acquire(const std::shared_ptr<Segment>& segment, const MemberTicket& m) noexcept;
// That producer or consumer closed: the last one stops the healer.
void healer_release(const Segment* segment, const MemberTicket& m) noexcept;
// Beats the heartbeat of every member of this process on `segment` whose row is still its
// own (called by watchdog ticks of this process).
void healer_beat(const Segment* segment) noexcept;

// Reclaims the rows of dead members without a row of its own (a table full of them); does
// nothing if a live watchdog is elected (it will). See Watchdog::Impl::repair.
WatchdogReport repair_members(const std::shared_ptr<Segment>& segment);
// register_member, and if every row is taken, repair_members and once more.
Result<MemberTicket> register_member_repairing(const std::shared_ptr<Segment>& segment,
                                               Role role);

}  // namespace shmq::detail
