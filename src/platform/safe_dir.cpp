#include "platform/safe_dir.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <vector>

#include "platform/fd.hpp"

namespace shmq::detail {

namespace {

constexpr int kDirFlags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;

std::string octal(unsigned mode) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%04o", mode & 07777);
  return buf;
}

Error sys_error(int err, const std::string& what) {
  const Errc code = err == EACCES || err == EPERM ? Errc::permission_denied
                    : err == ENOSPC || err == EDQUOT ? Errc::no_space
                    : err == ENOENT                 ? Errc::not_found
                                                    : Errc::system_error;
  return {code, what + ": " + std::strerror(err)};
}

int openat_retry(int dirfd, const char* name) {
  int fd;
  do {
    fd = ::openat(dirfd, name, kDirFlags);
  } while (fd < 0 && errno == EINTR);
  return fd_above_stdio(fd);
}

// Closes its descriptor unless released.
class Fd {
 public:
  explicit Fd(int fd = -1) noexcept : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { reset(-1); }
  void reset(int fd) noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }
  int get() const noexcept { return fd_; }
  int release() noexcept {
    const int fd = fd_;
    fd_ = -1;
    return fd;
  }

 private:
  int fd_;
};

std::string join(const std::string& dir, const std::string& name) {
  if (dir.empty() || dir.back() == '/') return dir + name;
  return dir + "/" + name;
}

std::string parent_path(const std::string& p) {
  const auto slash = p.rfind('/');
  if (slash == std::string::npos || slash == 0) return "/";
  return p.substr(0, slash);
}

}  // namespace

std::string unsafe_dir_reason(int fd, const std::string& path, bool last) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return "cannot examine " + path + ": " + std::strerror(errno);
  const uid_t me = ::geteuid();
  const std::string mode = octal(st.st_mode);
  if (last) {
    if (st.st_uid != me)
      return "data dir " + path + " is owned by uid " + std::to_string(st.st_uid) +
             " (mode " + mode + "), not by you (uid " + std::to_string(me) + "); refusing it";
    if ((st.st_mode & 022) != 0)
      return "data dir " + path + " is writable by " +
             ((st.st_mode & 002) != 0 ? "any user" : "its group") + " (mode " + mode +
             "); refusing it (chmod go-w " + path + ")";
    return {};
  }
  if (st.st_uid != 0 && st.st_uid != me)
    return "data dir path component " + path + " is owned by uid " + std::to_string(st.st_uid) +
           ", neither root nor you (uid " + std::to_string(me) + "); refusing to go through it";
  // Sticky (/tmp): others may add entries but not replace ours; anything they plant on
  // our way is then theirs (refused above) or a symlink (refused by O_NOFOLLOW).
  if ((st.st_mode & 022) != 0 && (st.st_mode & S_ISVTX) == 0)
    return "data dir path component " + path + " is writable by " +
           ((st.st_mode & 002) != 0 ? "any user" : "its group") + " (mode " + mode +
           ", not sticky); refusing to go through it";
  return {};
}

Result<SafeDir> open_dir_safely(const std::string& path, const SafeDirOptions& options) {
  if (path.empty()) return Error(Errc::invalid_argument, "data dir path is empty");
  if (path.find('\0') != std::string::npos)
    return Error(Errc::invalid_argument, "data dir path contains a NUL byte");
  // The trusted start: "/" or the working directory.
  std::string at;
  const bool absolute = path.front() == '/';
  if (absolute) {
    at = "/";
  } else {
    char cwd[PATH_MAX];
    at = ::getcwd(cwd, sizeof cwd) != nullptr ? std::string(cwd) : std::string(".");
  }
  Fd cur(fd_above_stdio(::open(absolute ? "/" : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)));
  if (cur.get() < 0) return sys_error(errno, "cannot open " + at);

  std::vector<std::string> parts;
  for (std::size_t i = 0; i < path.size();) {
    const std::size_t j = std::min(path.find('/', i), path.size());
    if (j > i) {
      std::string part = path.substr(i, j - i);
      if (part != ".") parts.push_back(std::move(part));
    }
    i = j + 1;
  }
  SafeDir out;
  // The start itself: an ancestor, unless it is the directory asked for.
  if (options.strict)
    if (auto why = unsafe_dir_reason(cur.get(), at, parts.empty()); !why.empty())
      return Error(Errc::permission_denied, why);
  for (std::size_t i = 0; i < parts.size(); ++i) {
    const std::string& part = parts[i];
    const std::string next = part == ".." ? parent_path(at) : join(at, part);
    bool made = false;
    int fd = openat_retry(cur.get(), part.c_str());
    if (fd < 0 && errno == ENOENT && options.create) {
      if (::mkdirat(cur.get(), part.c_str(), 0700) == 0) {
        made = true;
      } else if (errno != EEXIST) {
        return sys_error(errno, "cannot create data dir " + next);
      }
      fd = openat_retry(cur.get(), part.c_str());
    }
    if (fd < 0) {
      const int err = errno;
      struct stat lst {};
      if (::fstatat(cur.get(), part.c_str(), &lst, AT_SYMLINK_NOFOLLOW) == 0) {
        if (S_ISLNK(lst.st_mode))
          return Error(Errc::permission_denied,
                       i + 1 == parts.size()
                           ? "data dir " + next + " is a symbolic link; refusing it (give the "
                                                  "real path)"
                           : "data dir " + path + ": " + next +
                                 " is a symbolic link; refusing to follow it (give the real "
                                 "path)");
        if (!S_ISDIR(lst.st_mode))
          return Error(Errc::invalid_argument, "data dir " + path + ": " + next +
                                                   " is not a directory");
      }
      return sys_error(err, "cannot open data dir " + next);
    }
    Fd child(fd);
    if (made) {
      // Exact whatever the umask; on the descriptor, never by path.
      if (::fchmod(child.get(), 0700) != 0)
        return sys_error(errno, "cannot set the mode of data dir " + next);
      // A new directory entry is durable only once its parent is synced: without this, a
      // power cut could lose the queue's directory with the log files written into it.
      if (::fsync(cur.get()) != 0) return sys_error(errno, "cannot fsync " + at);
    }
    const bool last = i + 1 == parts.size();
    if (options.strict)
      if (auto why = unsafe_dir_reason(child.get(), next, last); !why.empty())
        return Error(Errc::permission_denied, why);
    cur.reset(child.release());
    at = next;
    out.created = made;
  }
  out.path = at;
  out.fd = cur.release();
  return out;
}

}  // namespace shmq::detail
