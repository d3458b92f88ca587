// Test-only crash points: named places in the ring protocol where a test can make the
// process kill itself with SIGKILL, so that a failure test hits an exact instruction window
// (between a claim and its commit, say) instead of hoping a random kill lands there.
//
// Compiled in only when SHMQ_CRASH_POINTS is defined (the shmq_crashpoints library the
// tests link); in the shipped library SHMQ_CRASH_POINT(name) is nothing at all.
#pragma once

namespace shmq::detail {

// Arms crash point `name`: the process raises SIGKILL the `countdown`-th time it passes
// there (1 = the next time). Arming another name replaces it. Not thread-safe; meant for a
// forked child before it starts work.
void arm_crash_point(const char* name, unsigned countdown) noexcept;
void crash_point(const char* name) noexcept;
// The same, but the process stops itself there (SIGSTOP): a test resumes it with SIGCONT.
void arm_stop_point(const char* name, unsigned countdown) noexcept;
// Stops the process every time it passes `name` (until armed otherwise).
void arm_stop_point_every(const char* name) noexcept;

}  // namespace shmq::detail

#ifdef SHMQ_CRASH_POINTS
#define SHMQ_CRASH_POINT(name) ::shmq::detail::crash_point(name)
#else
#define SHMQ_CRASH_POINT(name) ((void)0)
#endif
