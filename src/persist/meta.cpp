#include "persist/meta.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <map>
#include <sstream>

#include "platform/fd.hpp"
#include "platform/safe_dir.hpp"

namespace shmq::detail {

namespace {

Error sys(const std::string& what, int err) {
  const Errc code = err == EACCES || err == EPERM ? Errc::permission_denied
                    : err == ENOSPC             ? Errc::no_space
                    : err == ENOENT             ? Errc::not_found
                                                : Errc::system_error;
  return {code, what + ": " + std::strerror(err)};
}

VoidResult write_all(int fd, const std::string& data, const std::string& path) {
  std::size_t off = 0;
  while (off < data.size()) {
    const ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      return sys("write " + path, errno);
    }
    off += static_cast<std::size_t>(n);
  }
  return {};
}

}  // namespace

Result<std::string> prepare_data_dir(const std::string& dir) {
  if (dir.empty()) return Error(Errc::invalid_argument, "a durable queue needs a data dir");
  // Walked component by component from "/" (or the cwd), never through a symlink, missing
  // components made 0700 with fchmod on their descriptor and their parent fsynced; refused
  // if it or an ancestor is writable by other users or it is not ours (safe_dir.hpp).
  auto d = open_dir_safely(dir, SafeDirOptions{.create = true, .strict = true});
  if (!d.ok()) return d.error();
  const int fd = d.value().fd;
  const int rc = ::faccessat(fd, ".", W_OK | X_OK, AT_EACCESS);
  const int err = errno;
  ::close(fd);
  if (rc != 0) return sys("data dir " + d.value().path + " is not writable", err);
  return d.value().path;
}

VoidResult write_queue_meta(const std::string& dir, const std::string& name,
                            const QueueOptions& o) {
  std::ostringstream out;
  out << "name=" << name << "\n"
      << "slot_count=" << o.slot_count << "\n"
      << "slot_size=" << o.slot_size << "\n"
      << "max_message_size=" << o.max_message_size << "\n"
      << "max_members=" << o.max_members << "\n"
      << "mode=" << o.mode << "\n"
      << "lease_ms=" << o.lease.count() << "\n"
      << "max_deliveries=" << o.max_deliveries << "\n"
      << "ttl_ms=" << o.ttl.count() << "\n"
      << "backoff_initial_ms=" << o.backoff_initial.count() << "\n"
      << "backoff_max_ms=" << o.backoff_max.count() << "\n"
      << "dead_letter=" << (o.dead_letter ? 1 : 0) << "\n"
      << "heartbeat_liveness=" << (o.heartbeat_liveness ? 1 : 0) << "\n"
      << "heartbeat_timeout_ms=" << o.heartbeat_timeout.count() << "\n"
      << "claim_timeout_ms=" << o.claim_timeout.count() << "\n"
      << "checksum=" << (o.checksum ? 1 : 0) << "\n"
      << "max_priority=" << o.max_priority << "\n"
      << "dedup_count=" << o.dedup_window.count << "\n"
      << "dedup_seconds=" << o.dedup_window.time.count() << "\n"
      << "durability=" << to_string(o.durability) << "\n"
      << "flush_interval_ms=" << o.flush_interval.count() << "\n";
  const std::string tmp = dir + "/" + kMetaFile + ".tmp";
  const std::string path = dir + "/" + kMetaFile;
  ::unlink(tmp.c_str());
  const int fd =
      fd_above_stdio(::open(tmp.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (fd < 0) return sys("create " + tmp, errno);
  auto w = write_all(fd, out.str(), tmp);
  if (w.ok() && ::fdatasync(fd) != 0) w = sys("fdatasync " + tmp, errno);
  ::close(fd);
  if (!w.ok()) return w;
  if (::rename(tmp.c_str(), path.c_str()) != 0) return sys("rename " + tmp, errno);
  const int dfd = fd_above_stdio(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dfd < 0) return sys("open " + dir, errno);
  const int rc = ::fsync(dfd);
  const int err = errno;
  ::close(dfd);
  if (rc != 0) return sys("fsync " + dir, err);
  return {};
}

Result<std::pair<std::string, QueueOptions>> read_queue_meta(const std::string& dir) {
  const std::string path = dir + "/" + kMetaFile;
  const int fd = fd_above_stdio(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (fd < 0) return sys("read " + path, errno);
  std::string text;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    text.append(buf, static_cast<std::size_t>(n));
    if (text.size() > 65536) break;
  }
  ::close(fd);
  std::map<std::string, std::string> kv;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    const auto eq = line.find('=');
    if (eq != std::string::npos) kv[line.substr(0, eq)] = line.substr(eq + 1);
  }
  auto num = [&](const char* key, std::uint64_t& out) {
    auto it = kv.find(key);
    if (it == kv.end() || it->second.empty()) return false;
    char* end = nullptr;
    const unsigned long long v = std::strtoull(it->second.c_str(), &end, 10);
    if (*end != '\0') return false;
    out = v;
    return true;
  };
  QueueOptions o;
  std::uint64_t v[15] = {};
  const char* keys[] = {"slot_count",      "slot_size",         "max_message_size",
                        "max_members",     "mode",              "lease_ms",
                        "max_deliveries",  "ttl_ms",            "backoff_initial_ms",
                        "backoff_max_ms",  "dead_letter",       "heartbeat_liveness",
                        "heartbeat_timeout_ms", "claim_timeout_ms", "flush_interval_ms"};
  for (int i = 0; i < 15; ++i)
    if (!num(keys[i], v[i]))
      return Error(Errc::corrupt, path + ": missing or bad '" + keys[i] + "'");
  o.slot_count = std::uint32_t(v[0]);
  o.slot_size = std::uint32_t(v[1]);
  o.max_message_size = std::uint32_t(v[2]);
  o.max_members = std::uint32_t(v[3]);
  o.mode = std::uint32_t(v[4]);
  o.lease = std::chrono::milliseconds(v[5]);
  o.max_deliveries = std::uint32_t(v[6]);
  o.ttl = std::chrono::milliseconds(v[7]);
  o.backoff_initial = std::chrono::milliseconds(v[8]);
  o.backoff_max = std::chrono::milliseconds(v[9]);
  o.dead_letter = v[10] != 0;
  o.heartbeat_liveness = v[11] != 0;
  o.heartbeat_timeout = std::chrono::milliseconds(v[12]);
  o.claim_timeout = std::chrono::milliseconds(v[13]);
  o.flush_interval = std::chrono::milliseconds(v[14]);
  // Optional: queue.meta files written before the option existed have no checksum line.
  if (std::uint64_t c = 0; kv.contains("checksum")) {
    if (!num("checksum", c)) return Error(Errc::corrupt, path + ": bad 'checksum'");
    o.checksum = c != 0;
  }
  // Optional too (issue 13): none means a queue without priorities.
  if (std::uint64_t mp = 0; kv.contains("max_priority")) {
    if (!num("max_priority", mp) || mp > kMaxPriority)
      return Error(Errc::corrupt, path + ": bad 'max_priority'");
    o.max_priority = static_cast<std::uint32_t>(mp);
  }
  // Optional too (issue 14): none means no dedup window.
  if (std::uint64_t dc = 0; kv.contains("dedup_count")) {
    if (!num("dedup_count", dc) || dc > kMaxDedupWindow)
      return Error(Errc::corrupt, path + ": bad 'dedup_count'");
    o.dedup_window.count = static_cast<std::uint32_t>(dc);
  }
  if (std::uint64_t ds = 0; kv.contains("dedup_seconds")) {
    if (!num("dedup_seconds", ds) || ds > UINT32_MAX)
      return Error(Errc::corrupt, path + ": bad 'dedup_seconds'");
    o.dedup_window.time = std::chrono::seconds(ds);
  }
  const std::string d = kv["durability"];
  o.durability = d == "sync" ? Durability::sync : d == "async" ? Durability::async : Durability::none;
  if (d != "sync" && d != "async" && d != "none")
    return Error(Errc::corrupt, path + ": bad durability '" + d + "'");
  const std::string name = kv["name"];
  if (name.empty()) return Error(Errc::corrupt, path + ": missing name");
  return std::make_pair(name, o);
}

}  // namespace shmq::detail
