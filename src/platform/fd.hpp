// Descriptors: every one shmq opens stays off fds 0, 1 and 2 and is close-on-exec.
#pragma once

namespace shmq::detail {

// Descriptors 0, 1 and 2 are the process's stdin, stdout and stderr even while they are
// closed: if open() hands one of them out, the next printf or log line writes into our file
// (issue 12: `shmqctl consume Q >&-` printed the payloads over the segment header).
//
// Takes a descriptor just opened with O_CLOEXEC (every caller passes it; glibc's shm_open
// also sets it itself) and returns it unchanged when it is 3 or above: no system call on
// the usual path. A
// descriptor below 3 is duplicated to the lowest free one from 3 up, close-on-exec, and the
// low one closed. On failure (EMFILE) `fd` is closed and -1 returned with errno set. A
// negative `fd` is passed through, errno untouched, so `fd_above_stdio(::open(...))` keeps
// open's error.
int fd_above_stdio(int fd) noexcept;

// For a program's main(), before anything else: puts /dev/null onto each of 0, 1 and 2
// that is closed, so that no later open() of any library can be handed one. It is opened
// for the opposite direction (fd 0 write-only, fds 1 and 2 read-only), so the program still
// sees the stream as unusable: reading fd 0 or writing fd 1 or 2 fails with EBADF, as it
// would have while closed, and `consume >&-` reports an error instead of printing into
// nothing and acking. Returns false if a closed one could not be filled.
bool make_stdio_valid() noexcept;

}  // namespace shmq::detail
