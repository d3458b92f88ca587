// Opening data dirs without following anybody's symbolic links (issue 12, item 6).
#pragma once

#include <sys/types.h>

#include <string>

#include "shmq/error.hpp"

namespace shmq::detail {

struct SafeDirOptions {
  // Create missing components (mode 0700, exact: fchmod on the new descriptor), fsyncing
  // each new directory's parent so the entry survives a power cut.
  bool create = false;
  // sshd's StrictModes: every directory walked through (from "/", or from the cwd for a
  // relative path) must be owned by root or by us and not writable by group or others
  // unless sticky (/tmp is fine); the directory itself must be owned by us and not
  // writable by group or others. Off for read-only inspection (shmqctl log verify).
  bool strict = true;
};

// A directory opened by walking `path` one component at a time with
// openat(O_NOFOLLOW | O_DIRECTORY | O_CLOEXEC): a symbolic link anywhere on the way is
// refused, never followed, and what was checked is what is opened (no path is looked up
// twice). `fd` is 3 or above and close-on-exec; the caller owns it.
struct SafeDir {
  int fd = -1;
  bool created = false;  // the last component was created by this call
  std::string path;      // absolute, as walked ("/" for the root)
};

// Errors are one line naming the path and the reason: permission_denied for a symlink,
// a directory owned by another user or writable by others; not_found for a missing
// component without `create`; invalid_argument for a non-directory.
Result<SafeDir> open_dir_safely(const std::string& path, const SafeDirOptions& options);

// The StrictModes check of one opened directory (see SafeDirOptions::strict): empty if
// acceptable, else why not. `last`: the directory itself (must be ours) rather than an
// ancestor (root's or ours).
std::string unsafe_dir_reason(int fd, const std::string& path, bool last);

}  // namespace shmq::detail
