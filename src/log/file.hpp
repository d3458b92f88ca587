// The small file-system layer the write-ahead log stands on.
//
// Everything the log does to disk goes through a Directory handle: files are named relative
// to it (openat/renameat/unlinkat on one directory descriptor), so the data dir is resolved
// once, checked once (a real directory, not a symlink, private to its owner), and cannot be
// swapped underneath. The POSIX implementation follows the file-system rules in DESIGN.md;
// the tests derive a fault-injecting implementation that forgets what was never synced
// (tests/fault_fs.hpp).
//
// Threading: a Directory and the files it opened are used by one thread at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "shmq/error.hpp"

namespace shmq::log {

// An Error for a failed system call. `doing` reads as a gerund phrase ("writing",
// "creating", "syncing (fdatasync)"), `path` is the full path. ENOSPC and EDQUOT give
// Errc::no_space and "no space left on device writing /dir/wal-...log"; anything else gives
// "writing /dir/file failed: <strerror>" with a code mapped from errno.
Error io_error(int err, std::string_view doing, std::string_view path);

// An open file being appended to.
class WritableFile {
 public:
  virtual ~WritableFile() = default;  // closes; an error from close is dropped (call close())
  // Writes all of `data` at the end of the file (loops over short writes and EINTR). On
  // error some prefix of `data` may have been written.
  virtual VoidResult append(std::span<const std::byte> data) = 0;
  // fdatasync. An error is final: the caller must treat everything not yet synced as lost
  // and must never retry and trust a later success (fail-stop).
  virtual VoidResult sync() = 0;
  virtual VoidResult close() = 0;
  virtual const std::string& path() const = 0;
};

// An open file being read.
class ReadableFile {
 public:
  virtual ~ReadableFile() = default;
  virtual Result<std::uint64_t> size() = 0;
  // Reads up to out.size() bytes at `offset`; fewer only at end of file. Returns the count.
  virtual Result<std::size_t> read_at(std::uint64_t offset, std::span<std::byte> out) = 0;
  virtual const std::string& path() const = 0;
};

// An exclusive lock; released on destruction (and by the kernel when the process dies).
class FileLock {
 public:
  virtual ~FileLock() = default;
};

struct DirOptions {
  bool create = false;          // mkdir (mode 0700) if missing, and fsync the parent
  bool require_private = true;  // refuse a dir not owned by us or open to group/other
};

class Directory {
 public:
  virtual ~Directory() = default;
  virtual const std::string& path() const = 0;

  // Names of the entries, without "." and "..", in no particular order.
  virtual Result<std::vector<std::string>> list() = 0;
  // openat(O_CREAT|O_EXCL|O_WRONLY|O_CLOEXEC|O_NOFOLLOW, 0600), mode exact under any umask.
  virtual Result<std::unique_ptr<WritableFile>> create_file(std::string_view name) = 0;
  // Opens an existing regular file for appending (O_WRONLY|O_APPEND|O_NOFOLLOW).
  virtual Result<std::unique_ptr<WritableFile>> open_append(std::string_view name) = 0;
  // Opens an existing regular file for reading (O_NOFOLLOW; a FIFO or device is refused
  // without blocking). Errc::not_found if it does not exist.
  virtual Result<std::unique_ptr<ReadableFile>> open_read(std::string_view name) = 0;
  // ftruncate to `size`. Not synced: sync a handle on the file afterwards.
  virtual VoidResult truncate(std::string_view name, std::uint64_t size) = 0;
  // renameat within this directory. With replace = false an existing `to` is an error
  // (Errc::already_exists) and is left alone.
  virtual VoidResult rename(std::string_view from, std::string_view to, bool replace) = 0;
  virtual VoidResult unlink(std::string_view name) = 0;
  // fsync of the directory itself: makes creates, renames and unlinks durable.
  virtual VoidResult sync() = 0;
  // flock(LOCK_EX) on `name` (created 0600 if missing). With wait = false a lock held by
  // another open file fails at once with Errc::already_exists.
  virtual Result<std::unique_ptr<FileLock>> lock(std::string_view name, bool wait) = 0;

  // --- Sequences built on the operations above -------------------------------------------

  // The whole file, read in chunks through open_read/read_at.
  Result<std::vector<std::byte>> read_all(std::string_view name);

  // Creates `name` holding `contents` the crash-safe way: create `name`.tmp exclusively
  // (removing a stale one first), write, fdatasync, close, rename to `name` (over an
  // existing file only if `replace`), fsync(dir). When it returns ok, `name` is durable
  // with exactly `contents`; on error the caller must assume nothing (fail-stop).
  VoidResult write_new_file(std::string_view name, std::span<const std::byte> contents,
                            bool replace);

  std::string path_of(std::string_view name) const;
};

class FileSystem {
 public:
  virtual ~FileSystem() = default;
  // Opens a directory, refusing a symlink anywhere on its path (walked with openat and
  // O_NOFOLLOW). With options.create, missing directories are created with mode 0700; with
  // options.create or options.require_private, the directory must be ours and no ancestor
  // writable by other users (platform/safe_dir.hpp).
  virtual Result<std::unique_ptr<Directory>> open_dir(const std::string& path,
                                                      const DirOptions& options) = 0;
};

// The real thing: POSIX calls on Linux.
class PosixFileSystem final : public FileSystem {
 public:
  Result<std::unique_ptr<Directory>> open_dir(const std::string& path,
                                              const DirOptions& options) override;
};

// A process-wide PosixFileSystem (it has no state).
FileSystem& posix_file_system();

// A name that may be used in a Directory: non-empty, no '/', not "." or "..", no NUL.
bool valid_file_name(std::string_view name) noexcept;

}  // namespace shmq::log
