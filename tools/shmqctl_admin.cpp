// shmqctl create, delete, list, stat, watch (delete, list, stat and repair also of topics:
// shmqctl_topic.cpp).
#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "persist/meta.hpp"
#include "platform/fd.hpp"
#include "platform/safe_dir.hpp"
#include "segment/segment.hpp"
#include "shmqctl_commands.hpp"
#include "topic/topic_log.hpp"
#include "shmqctl_common.hpp"
#include "shmqctl_stats.hpp"

namespace shmqctl {

namespace {

constexpr const char* kShmDir = "/dev/shm";

std::string shm_path(const std::string& queue) {
  return std::string(kShmDir) + "/" + shmq::detail::Segment::object_name(queue);
}

// One queue dir to purge, <root>/<name>, held open from its checks to its removal: every
// step after the checks works on descriptors, so nothing swapped in by path meanwhile is
// what gets removed. Holds <dir>/LOCK (the lock shmqd takes) so that no shmqd starts on it.
class PurgeTarget {
 public:
  PurgeTarget(int root_fd, int dir_fd, std::string name, std::string path)
      : root_fd_(root_fd), dir_fd_(dir_fd), name_(std::move(name)), path_(std::move(path)) {}
  ~PurgeTarget() {
    for (const int fd : {lock_fd_, dir_fd_, root_fd_})
      if (fd >= 0) ::close(fd);
  }
  PurgeTarget(const PurgeTarget&) = delete;
  PurgeTarget& operator=(const PurgeTarget&) = delete;

  const std::string& path() const { return path_; }

  // Fails (exit 1) if a shmqd holds the lock.
  void lock() {
    const std::string lock_path = path_ + "/LOCK";
    lock_fd_ = shmq::detail::fd_above_stdio(
        ::openat(dir_fd_, "LOCK", O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    if (lock_fd_ < 0) {
      if (errno == ENOENT) return;  // shmqd never ran on it
      fail(kExitRuntime, "cannot open " + lock_path + ": " + std::strerror(errno));
    }
    if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
      const int err = errno;
      if (err == EWOULDBLOCK)
        fail(kExitRuntime, "shmqd is running on " + path_ + " (it holds " + lock_path +
                               "); stop it before purging the data");
      fail(kExitRuntime, "cannot lock " + lock_path + ": " + std::strerror(err));
    }
  }

  // Removes everything below the checked directory, then its entry in the root.
  void remove() {
    if (auto e = remove_contents(dir_fd_, path_, 0); !e.empty())
      fail(kExitRuntime, "cannot remove data dir " + path_ + ": " + e);
    if (::unlinkat(root_fd_, name_.c_str(), AT_REMOVEDIR) != 0)
      fail(kExitRuntime, "cannot remove data dir " + path_ + ": " + std::strerror(errno));
  }

 private:
  // Empty on success, else what failed. Never follows a symbolic link (one is unlinked
  // like a file); depth-bounded.
  static std::string remove_contents(int fd, const std::string& path, int depth) {
    if (depth > 16) return path + " is nested more than 16 levels deep";
    const int dup = ::fcntl(fd, F_DUPFD_CLOEXEC, 3);
    if (dup < 0) return path + ": " + std::strerror(errno);
    DIR* d = ::fdopendir(dup);
    if (d == nullptr) {
      const int err = errno;
      ::close(dup);
      return path + ": " + std::strerror(err);
    }
    std::vector<std::pair<std::string, bool>> entries;  // name, is a directory
    errno = 0;
    while (const dirent* e = ::readdir(d)) {
      const std::string n = e->d_name;
      if (n == "." || n == "..") continue;
      bool is_dir = e->d_type == DT_DIR;
      if (e->d_type == DT_UNKNOWN) {
        struct stat st {};
        is_dir = ::fstatat(fd, n.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode);
      }
      entries.emplace_back(n, is_dir);
    }
    ::closedir(d);
    for (const auto& [n, is_dir] : entries) {
      const std::string child_path = path + "/" + n;
      if (is_dir) {
        const int child = shmq::detail::fd_above_stdio(
            ::openat(fd, n.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (child < 0) return child_path + ": " + std::strerror(errno);
        auto e = remove_contents(child, child_path, depth + 1);
        ::close(child);
        if (!e.empty()) return e;
      }
      if (::unlinkat(fd, n.c_str(), is_dir ? AT_REMOVEDIR : 0) != 0)
        return child_path + ": " + std::strerror(errno);
    }
    return {};
  }

  int root_fd_;
  int dir_fd_;
  int lock_fd_ = -1;
  std::string name_;
  std::string path_;
};

// Does queue dir `fd` hold a queue.meta (a regular file, not a symlink) naming `queue`?
// A topic's dir (`topic`): a topic.meta naming it ("name TOPIC").
bool meta_names(int fd, const std::string& queue, bool topic) {
  const int m = shmq::detail::fd_above_stdio(
      ::openat(fd, topic ? shmq::detail::kTopicMetaFile : shmq::detail::kMetaFile,
               O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (m < 0) return false;
  struct stat st {};
  std::string text;
  if (::fstat(m, &st) == 0 && S_ISREG(st.st_mode)) {
    char buf[4096];
    for (;;) {
      const ssize_t n = ::read(m, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      text.append(buf, static_cast<std::size_t>(n));
      if (text.size() > 65536) break;
    }
  }
  ::close(m);
  const std::string key = topic ? "name " : "name=";
  return text.starts_with(key + queue + "\n") ||
         text.find("\n" + key + queue + "\n") != std::string::npos;
}

// The queue dir <root>/<name>, checked for purging; null if it does not exist. Refused
// (exit 1): a symbolic link anywhere on the path, not a directory, not owned by `owner`
// (the queue's owner) or by us. When the root was read from the segment header (which any
// group member of a 0660 queue can rewrite), the dir must also hold a queue.meta naming
// `name`: shmqctl never removes a directory because shared memory pointed at it.
std::unique_ptr<PurgeTarget> check_purge_target(const std::string& root, const std::string& name,
                                                uid_t owner, bool root_from_header,
                                                bool topic = false) {
  const std::string path = shmq::detail::queue_dir(root, name);
  auto r = shmq::detail::open_dir_safely(root, shmq::detail::SafeDirOptions{.strict = false});
  if (!r.ok()) {
    if (r.error().code() == shmq::Errc::not_found) return nullptr;
    fail(kExitRuntime, "refusing to purge " + path + ": " + r.error().message());
  }
  const int root_fd = r.value().fd;
  const int fd = shmq::detail::fd_above_stdio(
      ::openat(root_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (fd < 0) {
    const int err = errno;
    struct stat st {};
    const bool seen = ::fstatat(root_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0;
    ::close(root_fd);
    if (!seen && err == ENOENT) return nullptr;
    if (seen && S_ISLNK(st.st_mode))
      fail(kExitRuntime, path + " is a symbolic link; refusing to purge through it");
    if (seen && !S_ISDIR(st.st_mode))
      fail(kExitRuntime, path + " is not a directory; refusing to purge it");
    fail(kExitRuntime, "cannot examine data dir " + path + ": " + std::strerror(err));
  }
  auto target = std::make_unique<PurgeTarget>(root_fd, fd, name, path);
  struct stat st {};
  if (::fstat(fd, &st) != 0)
    fail(kExitRuntime, "cannot examine data dir " + path + ": " + std::strerror(errno));
  const uid_t me = ::geteuid();
  if (st.st_uid != owner && st.st_uid != me)
    fail(kExitRuntime, "refusing to purge " + path + ": owned by uid " +
                           std::to_string(st.st_uid) + ", not by the queue's owner (uid " +
                           std::to_string(owner) + ") or you (uid " + std::to_string(me) + ")");
  if (root_from_header && !meta_names(fd, name, topic))
    fail(kExitRuntime, "refusing to purge " + path + ": it has no " +
                           (topic ? shmq::detail::kTopicMetaFile : shmq::detail::kMetaFile) +
                           " naming " + (topic ? "topic" : "queue") + " '" + name +
                           "' (the segment's data dir is not trusted alone; name the dir with "
                           "--data-dir DIR)");
  return target;
}

// Same directory? Compared after resolving both (either may be missing).
bool same_dir(const std::string& a, const std::string& b) {
  std::error_code e1, e2;
  const auto ca = std::filesystem::weakly_canonical(a, e1);
  const auto cb = std::filesystem::weakly_canonical(b, e2);
  if (e1 || e2) return a == b;
  return ca == cb;
}

}  // namespace

// --- create -------------------------------------------------------------------------------

int cmd_create(const CreateArgs& a) {
  check_name(a.queue);
  shmq::QueueOptions o;
  o.slot_count = a.slots;
  o.slot_size = a.slot_size;
  o.max_message_size = a.max_message_size;
  o.max_members = a.max_members;
  o.mode = parse_mode(a.mode);
  o.durability = parse_durability(a.durability);
  o.data_dir = a.data_dir;
  o.max_deliveries = a.max_deliveries;
  o.lease = std::chrono::milliseconds(a.lease_ms);
  o.ttl = std::chrono::milliseconds(a.ttl_ms);
  o.backoff_initial = std::chrono::milliseconds(a.backoff_initial_ms);
  o.backoff_max = std::chrono::milliseconds(a.backoff_max_ms);
  o.dead_letter = !a.no_dead_letter;
  o.heartbeat_liveness = a.heartbeat_liveness;
  o.heartbeat_timeout = std::chrono::milliseconds(a.heartbeat_timeout_ms);
  o.claim_timeout = std::chrono::milliseconds(a.claim_timeout_ms);
  o.flush_interval = std::chrono::milliseconds(a.flush_interval_ms);
  o.checksum = a.checksum;
  o.max_priority = a.max_priority;
  if (!a.dedup_window.empty()) {
    // N[/SECONDS]
    const std::string& w = a.dedup_window;
    const std::size_t slash = w.find('/');
    auto number = [&](std::string_view text, std::uint64_t max, std::uint64_t& out) {
      const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
      return !text.empty() && ec == std::errc() && end == text.data() + text.size() && out <= max;
    };
    std::uint64_t n = 0, secs = 0;
    if (!number(std::string_view(w).substr(0, slash), shmq::kMaxDedupWindow, n) || n == 0 ||
        (slash != std::string::npos &&
         (!number(std::string_view(w).substr(slash + 1), UINT32_MAX, secs) || secs == 0)))
      fail(kExitUsage, "--dedup-window '" + w + "': expected N or N/SECONDS, N from 1 to " +
                           std::to_string(shmq::kMaxDedupWindow) + " ids, SECONDS above 0");
    o.dedup_window.count = static_cast<std::uint32_t>(n);
    o.dedup_window.time = std::chrono::seconds(secs);
  }
  if (o.dead_letter && a.queue.size() + 4 > shmq::detail::kMaxNameLength)
    fail(kExitUsage, "queue name '" + a.queue.substr(0, 64) + "...' is " +
                         std::to_string(a.queue.size()) + " characters: a queue with dead " +
                         "letters takes at most " +
                         std::to_string(shmq::detail::kMaxNameLength - 4) +
                         " (QUEUE.dlq must fit " +
                         std::to_string(shmq::detail::kMaxNameLength) +
                         "); or add --no-dead-letter");
  if (o.durability != shmq::Durability::none && o.data_dir.empty())
    fail(kExitUsage, "--durability " + a.durability +
                         " needs --data-dir DIR (the directory shmqd persists the queue to)");
  if (o.durability == shmq::Durability::none && !o.data_dir.empty())
    fail(kExitUsage, "--data-dir is for durable queues: add --durability async or sync");
  if (auto e = shmq::detail::Segment::validate_options(o); !e.empty())
    fail(kExitUsage, "cannot create queue '" + a.queue + "': " + e);
  auto q = shmq::Queue::create(a.queue, o);
  if (!q.ok()) fail(q.error());
  const shmq::QueueOptions c = q->options();
  std::printf("created queue '%s': %u slots x %u B, max message %u B, durability %s%s",
              a.queue.c_str(), c.slot_count, c.slot_size, c.max_message_size,
              std::string(shmq::to_string(c.durability)).c_str(),
              c.checksum ? ", checksummed" : "");
  if (c.max_priority != 0)
    std::printf(", priorities 0..%u (levels %s.p1 .. %s.p%u)", c.max_priority, a.queue.c_str(),
                a.queue.c_str(), c.max_priority);
  if (c.dedup_window.count != 0) {
    std::printf(", dedup window %u ids", c.dedup_window.count);
    if (c.dedup_window.time.count() != 0)
      std::printf(" / %lld s", static_cast<long long>(c.dedup_window.time.count()));
  }
  if (c.durability != shmq::Durability::none)
    std::printf(", data in %s (persist with: shmqd --data-dir %s %s)",
                shmq::detail::queue_dir(c.data_dir, a.queue).c_str(), c.data_dir.c_str(),
                a.queue.c_str());
  std::printf("\n");
  return kExitOk;
}

// --- set ----------------------------------------------------------------------------------

int cmd_set(const SetArgs& a) {
  check_name(a.queue);
  shmq::PolicyUpdate u;
  if (a.lease_ms >= 0) u.lease = std::chrono::milliseconds(a.lease_ms);
  if (a.max_deliveries >= 0) u.max_deliveries = static_cast<std::uint32_t>(a.max_deliveries);
  if (a.ttl_ms >= 0) u.ttl = std::chrono::milliseconds(a.ttl_ms);
  if (a.backoff_initial_ms >= 0) u.backoff_initial = std::chrono::milliseconds(a.backoff_initial_ms);
  if (a.backoff_max_ms >= 0) u.backoff_max = std::chrono::milliseconds(a.backoff_max_ms);
  if (!u.lease && !u.max_deliveries && !u.ttl && !u.backoff_initial && !u.backoff_max)
    fail(kExitUsage, "nothing to set: give at least one of --lease-ms, --max-deliveries, "
                     "--ttl-ms, --backoff-initial-ms, --backoff-max-ms");
  auto q = open_queue(a.queue);
  if (auto r = q.set_policy(u); !r.ok()) {
    if (r.error().code() == shmq::Errc::invalid_argument) fail(kExitUsage, r.error().message());
    fail(r.error());
  }
  const shmq::QueueOptions o = q.options();
  std::printf("queue '%s': lease %lld ms, max deliveries %u, ttl %lld ms, backoff %lld..%lld ms\n",
              a.queue.c_str(), static_cast<long long>(o.lease.count()), o.max_deliveries,
              static_cast<long long>(o.ttl.count()),
              static_cast<long long>(o.backoff_initial.count()),
              static_cast<long long>(o.backoff_max.count()));
  return kExitOk;
}

// --- repair -------------------------------------------------------------------------------

int cmd_repair(const RepairArgs& a) {
  if (is_topic(a.queue)) return topic_repair(a);
  auto q = open_queue(a.queue);
  const shmq::RepairReport r = q.repair();
  if (r.watchdog_running) {
    std::printf("queue '%s': a live watchdog is elected; it reclaims dead members itself\n",
                a.queue.c_str());
    return kExitOk;
  }
  std::printf("queue '%s': %u dead member(s) reclaimed, %llu message(s) redelivered, %llu "
              "claim(s) given back\n",
              a.queue.c_str(), r.members_reclaimed,
              static_cast<unsigned long long>(r.redelivered),
              static_cast<unsigned long long>(r.holes_repaired));
  return kExitOk;
}

// --- delete -------------------------------------------------------------------------------

int cmd_delete(const DeleteArgs& a) {
  check_name(a.queue);
  if (!a.data_dir.empty() && !a.purge_data)
    fail(kExitUsage, "--data-dir says where to purge from: use it with --purge-data");
  if (is_topic(a.queue)) {
    if (a.keep_dlq)
      fail(kExitUsage, "--keep-dlq is for queues; '" + a.queue +
                           "' is a topic: its groups' dead-letter queues go with it");
    TopicDeleteArgs ta;
    ta.topic = a.queue;
    if (!a.purge_data) return cmd_topic_delete(ta);
    // --purge-data: DIR/TOPIC/ checked as a queue's is (its topic.meta must name it when
    // DIR comes from the segment) and locked against a starting shmqd, before anything is
    // removed. The groups' dead-letter queues are in memory only.
    std::unique_ptr<PurgeTarget> dir;
    std::string root;
    {
      const shmq::Topic t = open_topic(a.queue);
      const shmq::TopicOptions o = t.options();
      if (o.durability != shmq::Durability::none) root = o.data_dir;
      if (!a.data_dir.empty()) {
        if (!root.empty() && !same_dir(root, a.data_dir))
          fail(kExitUsage, "topic '" + a.queue + "' was created with data dir " + root +
                               ", not " + a.data_dir);
        root = a.data_dir;
      }
      if (root.empty())
        fail(kExitUsage, "topic '" + a.queue +
                             "' is not durable: it has no data dir to purge (drop --purge-data)");
      dir = check_purge_target(root, a.queue, t.segment()->owner_uid(),
                               /*root_from_header=*/a.data_dir.empty(), /*topic=*/true);
      if (dir) dir->lock();
    }
    ta.after_remove = [&]() -> std::string {
      if (!dir) return "; purged no data (none found in " +
                       shmq::detail::queue_dir(root, a.queue) + ")";
      dir->remove();
      return "; purged " + dir->path();
    };
    return cmd_topic_delete(ta);
  }

  auto q = shmq::Queue::open(a.queue);
  bool have_segment = q.ok();
  if (!q.ok()) {
    switch (q.error().code()) {
      case shmq::Errc::not_found:
        if (!a.purge_data) fail(q.error());
        break;
      case shmq::Errc::corrupt:
      case shmq::Errc::bad_magic:
      case shmq::Errc::not_initialized:
      case shmq::Errc::incompatible_version:
        // Unreadable, but removable: that is what an operator deletes it for.
        warn("removing an unreadable segment: " + q.error().message());
        have_segment = true;
        break;
      default: fail(q.error());
    }
  }

  std::string root;  // the data dir root the queue's files are under
  std::vector<std::uint32_t> daemons, clients;  // pids of live shmqd / other processes
  if (q.ok()) {
    const shmq::QueueOptions o = q->options();
    if (o.durability != shmq::Durability::none) root = o.data_dir;
    const shmq::QueueStats st = q->stats();
    for (const auto& m : st.members)
      if (m.alive && m.role == "persister") daemons.push_back(m.pid);
    for (const auto& m : st.members)
      if (m.alive && std::find(daemons.begin(), daemons.end(), m.pid) == daemons.end() &&
          std::find(clients.begin(), clients.end(), m.pid) == clients.end())
        clients.push_back(m.pid);
  }
  if (a.purge_data && !a.data_dir.empty()) {
    if (!root.empty() && !same_dir(root, a.data_dir))
      fail(kExitUsage, "queue '" + a.queue + "' was created with data dir " + root + ", not " +
                           a.data_dir);
    root = a.data_dir;
  }
  if (a.purge_data && root.empty()) {
    if (!have_segment)
      fail(kExitRuntime, "queue '" + a.queue + "' not found (no " + shm_path(a.queue) +
                             "); name its data dir with --data-dir DIR to purge it");
    fail(kExitUsage, "queue '" + a.queue +
                         "' is not durable: it has no data dir to purge (drop --purge-data)");
  }

  // Whose queue this is: the segment's owner (fstat at open), else the owner of whatever
  // sits at its name, else (segment gone) ours.
  uid_t owner = ::geteuid();
  if (q.ok()) {
    owner = q->segment()->owner_uid();
  } else if (auto f = shmq::detail::Segment::owner_of(a.queue); f.ok()) {
    owner = f.value().uid;
  }

  // Everything to remove: the queue and, unless kept, its dead-letter queue, if that has
  // the queue's owner: another user's "<queue>.dlq" is not this queue's, and is left alone.
  std::vector<std::string> names{a.queue};
  const std::string dlq = shmq::Queue::dead_letter_name(a.queue);
  if (!a.keep_dlq && shmq::Queue::validate_name(dlq).empty()) {
    auto f = shmq::detail::Segment::owner_of(dlq);
    if (f.ok() && f.value().uid != owner)
      warn("not removing " + shm_path(dlq) + ": it is owned by uid " +
           std::to_string(f.value().uid) + ", not by the queue's owner (uid " +
           std::to_string(owner) + "), so it is not this queue's dead-letter queue");
    else
      names.push_back(dlq);
  }

  // A queue with priorities: its levels "<queue>.p1" .. (the same owner's only). How many:
  // the segment says, or (segment gone, purging) the queue.meta in its data dir.
  std::uint32_t levels = 0;
  if (q.ok() && q->segment()->priority_level() == 0) {
    levels = q->segment()->max_priority();
  } else if (!q.ok() && !root.empty()) {
    if (auto m = shmq::detail::read_queue_meta(shmq::detail::queue_dir(root, a.queue)); m.ok())
      levels = m.value().second.max_priority;
  }
  for (std::uint32_t p = 1; p <= levels; ++p) {
    const std::string level = shmq::detail::Segment::level_name(a.queue, p);
    auto f = shmq::detail::Segment::owner_of(level);
    if (f.ok() && f.value().uid != owner)
      warn("not removing " + shm_path(level) + ": it is owned by uid " +
           std::to_string(f.value().uid) + ", not by the queue's owner (uid " +
           std::to_string(owner) + ")");
    else
      names.push_back(level);
  }

  // Check the data dirs (and lock them against a starting shmqd) before removing anything.
  std::vector<std::unique_ptr<PurgeTarget>> dirs;
  if (a.purge_data) {
    for (const auto& n : names) {
      auto t = check_purge_target(root, n, owner, /*root_from_header=*/a.data_dir.empty());
      if (!t) continue;
      t->lock();
      dirs.push_back(std::move(t));
    }
    if (!have_segment && dirs.empty())
      fail(kExitRuntime, "nothing to delete: no segment " + shm_path(a.queue) +
                             " and no data in " + shmq::detail::queue_dir(root, a.queue));
  }

  auto pid_list = [](const std::vector<std::uint32_t>& pids) {
    std::string out;
    for (const auto p : pids) out += (out.empty() ? "" : " ") + std::to_string(p);
    return out;
  };
  if (!clients.empty())
    warn(std::to_string(clients.size()) + " process(es) still attached (pid " +
         pid_list(clients) + ") keep using the removed segment until they close it");
  if (!daemons.empty() && !a.purge_data)
    warn("shmqd (pid " + pid_list(daemons) +
         ") keeps serving the removed segment: restart it to rebuild the queue from " +
         shmq::detail::queue_dir(root, a.queue));

  std::vector<std::string> removed;
  for (const auto& n : names) {
    if (n == a.queue && !have_segment) continue;
    auto r = shmq::detail::Segment::remove(n);  // one at a time: --keep-dlq
    if (!r.ok()) {
      if (r.error().code() == shmq::Errc::not_found && n != a.queue) continue;  // no DLQ
      fail(r.error());
    }
    removed.push_back(n);
  }
  // The segment gone, a topic's data dir says it was one (a topic.meta; purged below).
  struct stat tmeta {};
  const bool was_topic = !have_segment && !root.empty() &&
                         ::lstat((shmq::detail::queue_dir(root, a.queue) + "/" +
                                  shmq::detail::kTopicMetaFile).c_str(), &tmeta) == 0;
  for (const auto& d : dirs) d->remove();

  std::string what;
  for (const auto& n : removed) what += (what.empty() ? "" : ", ") + shm_path(n);
  if (!removed.empty()) std::printf("deleted queue '%s' (%s)", a.queue.c_str(), what.c_str());
  else std::printf("%s '%s' had no segment", was_topic ? "topic" : "queue", a.queue.c_str());
  if (a.purge_data) {
    std::string gone;
    for (const auto& d : dirs) gone += (gone.empty() ? "" : ", ") + d->path();
    std::printf("; purged %s", dirs.empty() ? "no data (none found)" : gone.c_str());
  } else if (!root.empty()) {
    std::printf("; data kept in %s (shmqd --data-dir %s %s rebuilds it)",
                shmq::detail::queue_dir(root, a.queue).c_str(), root.c_str(), a.queue.c_str());
  }
  std::printf("\n");
  return kExitOk;
}

// --- list ---------------------------------------------------------------------------------

int cmd_list(const ListArgs& a) {
  std::vector<std::string> names;
  DIR* d = ::opendir(kShmDir);
  if (d == nullptr) fail(kExitRuntime, std::string("cannot list ") + kShmDir + ": " + std::strerror(errno));
  const std::string prefix = shmq::detail::Segment::object_name("");
  while (const dirent* e = ::readdir(d)) {
    const std::string f = e->d_name;
    if (f.size() <= prefix.size() || f.compare(0, prefix.size(), prefix) != 0) continue;
    const std::string name = f.substr(prefix.size());
    if (!shmq::Queue::validate_name(name).empty()) continue;
    names.push_back(name);
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());

  nlohmann::ordered_json rows = nlohmann::ordered_json::array();
  if (!a.json)
    std::printf("%-32s %9s %9s %9s %-10s %7s %-5s  %s\n", "NAME", "SLOTS", "DEPTH", "IN-FLIGHT",
                "DURABILITY", "MEMBERS", "KIND", "STATE");
  for (const auto& name : names) {
    if (shmq::Topic::is_topic(name)) {
      // A topic: depth is its slowest group's lag, in flight summed over its groups,
      // members its publishers and subscribers.
      auto t = shmq::Topic::open(name);
      if (t.ok()) {
        const shmq::TopicStats s = t->stats();
        std::uint64_t in_flight = 0;
        for (const auto& g : s.groups) in_flight += g.in_flight;
        const std::string state = topic_state(s);
        const std::string dur(shmq::to_string(s.durability));
        if (a.json)
          rows.push_back({{"queue", name},
                          {"kind", "topic"},
                          {"slot_count", s.slot_count},
                          {"depth", topic_depth(s)},
                          {"in_flight", in_flight},
                          {"durability", dur},
                          {"members", s.publishers + s.subscribers},
                          {"groups", s.groups.size()},
                          {"state", state}});
        else
          std::printf("%-32s %9u %9llu %9llu %-10s %7u %-5s  %s\n", name.c_str(), s.slot_count,
                      static_cast<unsigned long long>(topic_depth(s)),
                      static_cast<unsigned long long>(in_flight), dur.c_str(),
                      s.publishers + s.subscribers, "topic", state.c_str());
        continue;
      }
      // Unreadable: reported below like any segment that cannot be opened.
    }
    auto q = shmq::Queue::open(name);
    if (!q.ok()) {
      const std::string err = one_line(q.error().message());
      if (a.json)
        rows.push_back({{"queue", name}, {"error", err}});
      else
        std::printf("%-32s %9s %9s %9s %-10s %7s %-5s  error: %s\n", name.c_str(), "-", "-", "-",
                    "-", "-", "-", err.c_str());
      continue;
    }
    const shmq::QueueStats s = q->stats();
    const shmq::QueueOptions o = q->options();
    const std::string state = queue_state(o, s);
    if (a.json) {
      rows.push_back({{"queue", name},
                      {"kind", "queue"},
                      {"slot_count", s.slot_count},
                      {"depth", depth(s)},
                      {"in_flight", s.in_flight},
                      {"durability", std::string(shmq::to_string(o.durability))},
                      {"members", s.members.size()},
                      {"state", state}});
    } else {
      std::printf("%-32s %9u %9llu %9llu %-10s %7zu %-5s  %s\n", name.c_str(), s.slot_count,
                  static_cast<unsigned long long>(depth(s)),
                  static_cast<unsigned long long>(s.in_flight),
                  std::string(shmq::to_string(o.durability)).c_str(), s.members.size(), "queue",
                  state.c_str());
    }
  }
  if (a.json) {
    nlohmann::ordered_json j;
    j["schema"] = 1;
    j["queues"] = std::move(rows);
    std::printf("%s\n", dump_json(j).c_str());
  }
  return kExitOk;
}

// --- stat, watch --------------------------------------------------------------------------

int cmd_stat(const StatArgs& a) {
  if (is_topic(a.queue)) return topic_stat(a);
  shmq::Queue q = open_queue(a.queue);
  std::optional<Rates> rates;
  shmq::QueueStats s = q.stats();
  if (a.rate) {
    install_stop_handlers();
    const auto t0 = std::chrono::steady_clock::now();
    if (!sleep_unless_stopped(std::chrono::milliseconds(a.rate_ms)))
      fail(kExitRuntime, "interrupted");
    shmq::QueueStats s2 = q.stats();
    const auto el = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - t0);
    rates = compute_rates(s, s2, static_cast<std::uint64_t>(el.count()));
    s = std::move(s2);
  }
  if (a.json)
    std::printf("%s\n", dump_json(stat_json(q, s, rates)).c_str());
  else
    std::fputs(stat_text(q, s, rates).c_str(), stdout);
  return kExitOk;
}

int cmd_watch(const WatchArgs& a) {
  shmq::Queue q = open_queue(a.queue);
  install_stop_handlers();
  struct stat st0 {};
  ::stat(shm_path(a.queue).c_str(), &st0);
  const bool tty = stdout_is_tty();
  shmq::QueueStats prev = q.stats();
  auto prev_t = std::chrono::steady_clock::now();
  std::optional<Rates> rates;
  for (std::uint64_t n = 0;;) {
    std::string screen;
    if (tty) screen += "\033[H\033[2J";
    char head[160];
    std::snprintf(head, sizeof head, "shmqctl watch %s: every %s%s\n\n", a.queue.c_str(),
                  human_ms(a.interval_ms).c_str(), tty ? ", Ctrl-C to quit" : "");
    screen += head;
    screen += stat_text(q, prev, rates);
    if (!tty) screen += "\n";
    errno = 0;
    if (std::fputs(screen.c_str(), stdout) == EOF || std::fflush(stdout) != 0)
      fail(kExitRuntime, std::string("writing to standard output: ") +
                             std::strerror(errno != 0 ? errno : EIO));
    if (a.count != 0 && ++n >= a.count) break;
    if (!sleep_unless_stopped(std::chrono::milliseconds(a.interval_ms))) break;
    // The queue may have been deleted (or deleted and created again) meanwhile.
    struct stat st {};
    if (::stat(shm_path(a.queue).c_str(), &st) != 0)
      fail(kExitRuntime, "queue '" + a.queue + "' was deleted");
    if (st.st_ino != st0.st_ino) {
      q = open_queue(a.queue);
      st0 = st;
      prev = q.stats();
      prev_t = std::chrono::steady_clock::now();
      rates.reset();
      continue;
    }
    shmq::QueueStats cur = q.stats();
    const auto now = std::chrono::steady_clock::now();
    rates = compute_rates(prev, cur,
                          static_cast<std::uint64_t>(
                              std::chrono::duration_cast<std::chrono::milliseconds>(now - prev_t)
                                  .count()));
    prev = std::move(cur);
    prev_t = now;
  }
  return kExitOk;
}

}  // namespace shmqctl
