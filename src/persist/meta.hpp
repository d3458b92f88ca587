// The queue's description kept in its data dir (queue.meta), so that shmqd can rebuild the
// segment after a reboot with the same geometry and policy.
//
// Text, one "key=value" per line, written durably (temp file, fdatasync, rename, fsync of
// the directory).
#pragma once

#include <string>
#include <string_view>
#include <utility>

#include "shmq/error.hpp"
#include "shmq/queue.hpp"

namespace shmq::detail {

inline constexpr const char* kMetaFile = "queue.meta";

// The directory of queue `name` under data dir `root`: <root>/<name>.
inline std::string queue_dir(const std::string& root, std::string_view name) {
  std::string d = root;
  if (d.empty() || d.back() != '/') d += '/';
  return d.append(name);
}

// Creates `dir` (0700) if missing; refuses a symlink, a non-directory, or one we cannot
// write. Returns the absolute path.
Result<std::string> prepare_data_dir(const std::string& dir);

VoidResult write_queue_meta(const std::string& dir, const std::string& name,
                            const QueueOptions& options);

// The queue name and options recorded in queue dir `dir` (data_dir is left to the caller).
Result<std::pair<std::string, QueueOptions>> read_queue_meta(const std::string& dir);

}  // namespace shmq::detail
