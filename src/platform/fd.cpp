#include "platform/fd.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

namespace shmq::detail {

int fd_above_stdio(int fd) noexcept {
  if (fd < 0 || fd > 2) return fd;
  // F_DUPFD_CLOEXEC: the copy is close-on-exec whatever the original was, in one call
  // (no window in which a fork + exec in another thread inherits it).
  const int moved = ::fcntl(fd, F_DUPFD_CLOEXEC, 3);
  const int err = errno;
  ::close(fd);
  if (moved < 0) {
    errno = err;
    return -1;
  }
  return moved;
}

bool make_stdio_valid() noexcept {
  bool ok = true;
  for (int want = 0; want <= 2; ++want) {
    if (::fcntl(want, F_GETFD) != -1 || errno != EBADF) continue;  // open
    // Not O_CLOEXEC: these stand in for stdin/stdout/stderr, children inherit them closed
    // in effect (the wrong direction), as they would have inherited nothing.
    const int fd = ::open("/dev/null", (want == 0 ? O_WRONLY : O_RDONLY) | O_NOCTTY);
    if (fd < 0) {
      ok = false;
      continue;
    }
    // The lowest free descriptor is `want` (the ones below it are open by now), unless
    // another thread took it meanwhile: then it is in use anyway, and ours is not needed.
    if (fd != want) ::close(fd);
  }
  return ok;
}

}  // namespace shmq::detail
