#include "log/file.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "platform/fd.hpp"
#include "platform/safe_dir.hpp"

namespace shmq::log {

namespace {

constexpr std::size_t kReadChunk = std::size_t{1} << 20;

std::string octal(unsigned mode) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%04o", mode & 07777);
  return buf;
}

Error bad_name(std::string_view name) {
  std::string msg("invalid file name '");
  msg.append(name).append("' (empty, '.', '..', or contains '/')");
  return {Errc::invalid_argument, std::move(msg)};
}

// Closes fd on scope exit unless released.
class FdGuard {
 public:
  explicit FdGuard(int fd) : fd_(fd) {}
  ~FdGuard() {
    if (fd_ >= 0) ::close(fd_);
  }
  FdGuard(const FdGuard&) = delete;
  FdGuard& operator=(const FdGuard&) = delete;
  int get() const { return fd_; }
  int release() {
    const int fd = fd_;
    fd_ = -1;
    return fd;
  }

 private:
  int fd_;
};

// Every flag set passed here includes O_CLOEXEC; the result is never fd 0, 1 or 2.
int open_at_retry(int dirfd, const char* name, int flags, mode_t mode = 0) {
  int fd;
  do {
    fd = ::openat(dirfd, name, flags, mode);
  } while (fd < 0 && errno == EINTR);
  return detail::fd_above_stdio(fd);
}

// Refuses anything but a regular file (a FIFO, device or directory in the data dir).
VoidResult require_regular(int fd, const std::string& path) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return io_error(errno, "checking", path);
  if (!S_ISREG(st.st_mode))
    return Error(Errc::invalid_argument, path + " is not a regular file; refusing it");
  return {};
}

class PosixWritableFile final : public WritableFile {
 public:
  PosixWritableFile(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  ~PosixWritableFile() override {
    if (fd_ >= 0) ::close(fd_);
  }

  VoidResult append(std::span<const std::byte> data) override {
    if (fd_ < 0) return Error(Errc::invalid_argument, "writing closed file " + path_);
    while (!data.empty()) {
      const ssize_t n = ::write(fd_, data.data(), data.size());
      if (n < 0) {
        if (errno == EINTR) continue;
        return io_error(errno, "writing", path_);
      }
      if (n == 0) return io_error(EIO, "writing", path_);  // never for a regular file
      data = data.subspan(static_cast<std::size_t>(n));
    }
    return {};
  }

  VoidResult sync() override {
    if (fd_ < 0) return Error(Errc::invalid_argument, "syncing closed file " + path_);
    // Not retried on any error, EINTR included: after a failed fdatasync the kernel may
    // have dropped the dirty pages, and a second call would report success over the loss.
    if (::fdatasync(fd_) != 0) return io_error(errno, "syncing (fdatasync)", path_);
    return {};
  }

  VoidResult close() override {
    if (fd_ < 0) return {};
    const int fd = fd_;
    fd_ = -1;
    // close is never retried: the descriptor is gone whatever it returns.
    if (::close(fd) != 0 && errno != EINTR) return io_error(errno, "closing", path_);
    return {};
  }

  const std::string& path() const override { return path_; }

 private:
  int fd_;
  std::string path_;
};

class PosixReadableFile final : public ReadableFile {
 public:
  PosixReadableFile(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  ~PosixReadableFile() override { ::close(fd_); }
  PosixReadableFile(const PosixReadableFile&) = delete;
  PosixReadableFile& operator=(const PosixReadableFile&) = delete;

  Result<std::uint64_t> size() override {
    struct stat st {};
    if (::fstat(fd_, &st) != 0) return io_error(errno, "checking", path_);
    return static_cast<std::uint64_t>(st.st_size);
  }

  Result<std::size_t> read_at(std::uint64_t offset, std::span<std::byte> out) override {
    std::size_t done = 0;
    while (done < out.size()) {
      const ssize_t n =
          ::pread(fd_, out.data() + done, out.size() - done, static_cast<off_t>(offset + done));
      if (n < 0) {
        if (errno == EINTR) continue;
        return io_error(errno, "reading", path_);
      }
      if (n == 0) break;  // end of file
      done += static_cast<std::size_t>(n);
    }
    return done;
  }

  const std::string& path() const override { return path_; }

 private:
  int fd_;
  std::string path_;
};

class PosixFileLock final : public FileLock {
 public:
  explicit PosixFileLock(int fd) : fd_(fd) {}
  ~PosixFileLock() override { ::close(fd_); }  // closing the last descriptor unlocks
  PosixFileLock(const PosixFileLock&) = delete;
  PosixFileLock& operator=(const PosixFileLock&) = delete;

 private:
  int fd_;
};

class PosixDirectory final : public Directory {
 public:
  PosixDirectory(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  ~PosixDirectory() override { ::close(fd_); }
  PosixDirectory(const PosixDirectory&) = delete;
  PosixDirectory& operator=(const PosixDirectory&) = delete;

  const std::string& path() const override { return path_; }

  Result<std::vector<std::string>> list() override {
    // A fresh open file description each time: fdopendir on a dup() would share the
    // directory offset with fd_ and see nothing the second time.
    const int fd = open_at_retry(fd_, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return io_error(errno, "listing", path_);
    DIR* d = ::fdopendir(fd);
    if (d == nullptr) {
      const int err = errno;
      ::close(fd);
      return io_error(err, "listing", path_);
    }
    std::vector<std::string> names;
    for (;;) {
      errno = 0;
      const dirent* e = ::readdir(d);
      if (e == nullptr) break;
      const std::string_view n(e->d_name);
      if (n != "." && n != "..") names.emplace_back(n);
    }
    const int err = errno;
    ::closedir(d);
    if (err != 0) return io_error(err, "listing", path_);
    return names;
  }

  Result<std::unique_ptr<WritableFile>> create_file(std::string_view name) override {
    if (!valid_file_name(name)) return bad_name(name);
    const std::string n(name);
    const int fd =
        open_at_retry(fd_, n.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) return io_error(errno, "creating", path_of(name));
    FdGuard guard(fd);
    // Exactly 0600 whatever the umask.
    if (::fchmod(fd, 0600) != 0) return io_error(errno, "setting the mode of", path_of(name));
    return std::unique_ptr<WritableFile>(new PosixWritableFile(guard.release(), path_of(name)));
  }

  Result<std::unique_ptr<WritableFile>> open_append(std::string_view name) override {
    if (!valid_file_name(name)) return bad_name(name);
    const std::string n(name);
    // O_NONBLOCK so that a FIFO planted under the name cannot block the open; it is then
    // refused as not a regular file (the flag means nothing for regular files).
    const int fd =
        open_at_retry(fd_, n.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0) return io_error(errno, "opening", path_of(name));
    FdGuard guard(fd);
    if (auto r = require_regular(fd, path_of(name)); !r) return r.error();
    return std::unique_ptr<WritableFile>(new PosixWritableFile(guard.release(), path_of(name)));
  }

  Result<std::unique_ptr<ReadableFile>> open_read(std::string_view name) override {
    if (!valid_file_name(name)) return bad_name(name);
    const std::string n(name);
    const int fd = open_at_retry(fd_, n.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0) return io_error(errno, "opening", path_of(name));
    FdGuard guard(fd);
    if (auto r = require_regular(fd, path_of(name)); !r) return r.error();
    return std::unique_ptr<ReadableFile>(new PosixReadableFile(guard.release(), path_of(name)));
  }

  VoidResult truncate(std::string_view name, std::uint64_t size) override {
    if (!valid_file_name(name)) return bad_name(name);
    const std::string n(name);
    const int fd = open_at_retry(fd_, n.c_str(), O_WRONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0) return io_error(errno, "opening", path_of(name));
    FdGuard guard(fd);
    if (auto r = require_regular(fd, path_of(name)); !r) return r;
    int rc;
    do {
      rc = ::ftruncate(fd, static_cast<off_t>(size));
    } while (rc != 0 && errno == EINTR);
    if (rc != 0) return io_error(errno, "truncating", path_of(name));
    return {};
  }

  VoidResult rename(std::string_view from, std::string_view to, bool replace) override {
    if (!valid_file_name(from)) return bad_name(from);
    if (!valid_file_name(to)) return bad_name(to);
    const std::string f(from), t(to);
    const std::string what = "renaming " + path_of(from) + " to";
    if (replace) {
      if (::renameat(fd_, f.c_str(), fd_, t.c_str()) != 0)
        return io_error(errno, what, path_of(to));
      return {};
    }
    if (::renameat2(fd_, f.c_str(), fd_, t.c_str(), RENAME_NOREPLACE) == 0) return {};
    if (errno != EINVAL && errno != ENOSYS) return io_error(errno, what, path_of(to));
    // A file system without RENAME_NOREPLACE: check, then rename. Racy only against another
    // writer in the data dir, which the daemon's dir lock excludes.
    struct stat st {};
    if (::fstatat(fd_, t.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0)
      return io_error(EEXIST, what, path_of(to));
    if (::renameat(fd_, f.c_str(), fd_, t.c_str()) != 0) return io_error(errno, what, path_of(to));
    return {};
  }

  VoidResult unlink(std::string_view name) override {
    if (!valid_file_name(name)) return bad_name(name);
    const std::string n(name);
    if (::unlinkat(fd_, n.c_str(), 0) != 0) return io_error(errno, "removing", path_of(name));
    return {};
  }

  VoidResult sync() override {
    if (::fsync(fd_) != 0) return io_error(errno, "syncing directory", path_);
    return {};
  }

  Result<std::unique_ptr<FileLock>> lock(std::string_view name, bool wait) override {
    if (!valid_file_name(name)) return bad_name(name);
    const std::string n(name);
    const int fd =
        open_at_retry(fd_, n.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0600);
    if (fd < 0) return io_error(errno, "opening lock file", path_of(name));
    FdGuard guard(fd);
    if (auto r = require_regular(fd, path_of(name)); !r) return r.error();
    int rc;
    do {
      rc = ::flock(fd, LOCK_EX | (wait ? 0 : LOCK_NB));
    } while (rc != 0 && errno == EINTR);
    if (rc != 0) {
      if (errno == EWOULDBLOCK)
        return Error(Errc::already_exists, path_of(name) + " is locked by another process");
      return io_error(errno, "locking", path_of(name));
    }
    return std::unique_ptr<FileLock>(new PosixFileLock(guard.release()));
  }

 private:
  int fd_;
  std::string path_;
};

}  // namespace

Error io_error(int err, std::string_view doing, std::string_view path) {
  std::string msg;
  if (err == ENOSPC || err == EDQUOT) {
    msg.append("no space left on device ").append(doing).append(" ").append(path);
    if (err == EDQUOT) msg.append(" (disk quota exceeded)");
    return {Errc::no_space, std::move(msg)};
  }
  msg.append(doing).append(" ").append(path).append(" failed: ").append(std::strerror(err));
  switch (err) {
    case ENOENT: return {Errc::not_found, std::move(msg)};
    case EEXIST: return {Errc::already_exists, std::move(msg)};
    case EACCES:
    case EPERM:
    case ELOOP: return {Errc::permission_denied, std::move(msg)};
    case EINVAL:
    case ENAMETOOLONG:
    case ENOTDIR:
    case EISDIR: return {Errc::invalid_argument, std::move(msg)};
    default: return {Errc::system_error, std::move(msg)};
  }
}

bool valid_file_name(std::string_view name) noexcept {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string_view::npos &&
         name.find('\0') == std::string_view::npos;
}

std::string Directory::path_of(std::string_view name) const {
  std::string p = path();
  if (p.empty() || p.back() != '/') p.push_back('/');
  return p.append(name);
}

Result<std::vector<std::byte>> Directory::read_all(std::string_view name) {
  auto file = open_read(name);
  if (!file) return file.error();
  auto size = file.value()->size();
  if (!size) return size.error();
  std::vector<std::byte> data;
  // Read until a short read: the size is a hint, the end of file is the truth. Asking for
  // one byte more than the hint makes the first read the last one when the hint was right.
  std::size_t want = static_cast<std::size_t>(size.value()) + 1;
  for (;;) {
    const std::size_t at = data.size();
    data.resize(at + want);
    auto n = file.value()->read_at(at, std::span(data).subspan(at));
    if (!n) return n.error();
    data.resize(at + n.value());
    if (n.value() < want) break;
    want = kReadChunk;
  }
  return data;
}

VoidResult Directory::write_new_file(std::string_view name, std::span<const std::byte> contents,
                                     bool replace) {
  std::string tmp(name);
  tmp.append(".tmp");
  auto file = create_file(tmp);
  if (!file && file.error().code() == Errc::already_exists) {
    // Left by a crash or an earlier failed attempt; it was never referred to.
    if (auto r = unlink(tmp); !r) return r;
    file = create_file(tmp);
  }
  if (!file) return file.error();
  if (auto r = file.value()->append(contents); !r) return r;
  if (auto r = file.value()->sync(); !r) return r;
  if (auto r = file.value()->close(); !r) return r;
  if (auto r = rename(tmp, name, replace); !r) return r;
  return sync();
}

Result<std::unique_ptr<Directory>> PosixFileSystem::open_dir(const std::string& path,
                                                             const DirOptions& options) {
  if (path.empty()) return Error(Errc::invalid_argument, "data dir path is empty");
  // Walked from "/" (or the cwd) with openat(O_NOFOLLOW | O_DIRECTORY): a symlink anywhere
  // on the path is refused, not followed; a created directory is made 0700 with fchmod on
  // its descriptor and its parent fsynced. A directory the log writes into must not sit
  // under one that other users can write (StrictModes; safe_dir.hpp).
  auto d = detail::open_dir_safely(
      path, detail::SafeDirOptions{.create = options.create,
                                   .strict = options.create || options.require_private});
  if (!d.ok()) return d.error();
  const int fd = d.value().fd;
  struct stat st {};
  FdGuard guard(fd);
  if (::fstat(fd, &st) != 0) return io_error(errno, "checking", path);
  if (options.require_private) {
    if (st.st_uid != ::geteuid())
      return Error(Errc::permission_denied,
                   "data dir " + path + " is owned by uid " + std::to_string(st.st_uid) +
                       ", not by this process (uid " + std::to_string(::geteuid()) + ")");
    if ((st.st_mode & 077) != 0)
      return Error(Errc::permission_denied, "data dir " + path + " has mode " + octal(st.st_mode) +
                                                "; it must be private to its owner (chmod 700 " +
                                                path + ")");
  }
  return std::unique_ptr<Directory>(new PosixDirectory(guard.release(), path));
}

FileSystem& posix_file_system() {
  static PosixFileSystem fs;
  return fs;
}

}  // namespace shmq::log
