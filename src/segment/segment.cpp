#include "segment/segment.hpp"
#include "topic/topic_layout.hpp"

#include <fcntl.h>
#include <grp.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <chrono>
#include <thread>
#include <cstring>
#include <vector>

#include "platform/fd.hpp"
#include "platform/futex.hpp"
#include "platform/process.hpp"
#include "ring/ring.hpp"
#include "ring/slot_word.hpp"

namespace shmq::detail {

namespace {

constexpr std::uint64_t kMaxSegmentBytes = std::uint64_t{64} << 30;  // 64 GiB
constexpr auto kInitWait = std::chrono::seconds(2);

std::string quoted(std::string_view name) { return "queue '" + std::string(name) + "'"; }

std::string octal(std::uint32_t mode) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%04o", mode & 07777);
  return buf;
}

std::uint64_t align_up(std::uint64_t v, std::uint64_t a) { return (v + a - 1) / a * a; }

bool in_group(gid_t gid) {
  if (gid == ::getegid()) return true;
  const int n = ::getgroups(0, nullptr);
  if (n <= 0) return false;
  std::vector<gid_t> groups(static_cast<std::size_t>(n));
  const int m = ::getgroups(n, groups.data());
  return m > 0 && std::find(groups.begin(), groups.begin() + m, gid) != groups.begin() + m;
}

Error from_errno(int err, std::string_view name, const std::string& what) {
  std::string msg = what + " " + quoted(name) + " (/dev/shm/" + Segment::object_name(name) +
                    "): " + std::strerror(err);
  switch (err) {
    case ENOENT: return {Errc::not_found, quoted(name) + " not found (no /dev/shm/" +
                                              Segment::object_name(name) + ")"};
    case EEXIST: return {Errc::already_exists, quoted(name) + " already exists"};
    case EACCES:
    case EPERM: return {Errc::permission_denied, msg};
    case ENOSPC:
    case ENOMEM: return {Errc::no_space, msg};
    case EINVAL:
    case ENAMETOOLONG: return {Errc::invalid_argument, msg};
    default: return {Errc::system_error, msg};
  }
}

// What a non-regular file is, for an error message.
std::string file_kind(mode_t m) {
  if (S_ISDIR(m)) return "a directory";
  if (S_ISFIFO(m)) return "a FIFO";
  if (S_ISSOCK(m)) return "a socket";
  if (S_ISCHR(m) || S_ISBLK(m)) return "a device node";
  if (S_ISLNK(m)) return "a symbolic link";
  return "not a regular file";
}

// Owns one descriptor for the length of a function.
class UniqueFd {
 public:
  explicit UniqueFd(int fd) noexcept : fd_(fd) {}
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const noexcept { return fd_; }

 private:
  int fd_;
};

}  // namespace

std::string Segment::object_name(std::string_view name) { return "shmq." + std::string(name); }

SegmentGeometry compute_geometry(std::uint32_t slot_count, std::uint32_t slot_size,
                                 std::uint32_t max_members, std::uint32_t dedup_count,
                                 std::uint32_t topic_groups) noexcept {
  SegmentGeometry g{};
  g.members_offset = sizeof(SegmentHeader);
  g.ring_offset = align_up(g.members_offset + std::uint64_t(max_members) * sizeof(MemberRow),
                           4096);
  g.total_size = g.ring_offset + std::uint64_t(slot_count) * slot_size;
  g.dedup_offset = 0;
  if (dedup_count != 0) {
    g.dedup_offset = align_up(g.total_size, 4096);
    g.total_size = g.dedup_offset + dedup_table_bytes(dedup_count);
  }
  g.topic_offset = 0;
  if (topic_groups != 0) {
    g.topic_offset = align_up(g.total_size, 4096);
    g.total_size = g.topic_offset + topic_region_bytes(slot_count, topic_groups);
  }
  return g;
}

std::string Segment::validate_options(const QueueOptions& o) {
  if (o.slot_count < kMinSlots || o.slot_count > kMaxSlots || !std::has_single_bit(o.slot_count))
    return "slot count must be a power of two from " + std::to_string(kMinSlots) + " to " +
           std::to_string(kMaxSlots) + ", got " + std::to_string(o.slot_count);
  if (o.slot_size < kMinSlotSize || o.slot_size > kMaxSlotSize || o.slot_size % kCacheLine != 0)
    return "slot size must be a multiple of 64 from " + std::to_string(kMinSlotSize) + " to " +
           std::to_string(kMaxSlotSize) + " bytes, got " + std::to_string(o.slot_size);
  if (o.max_members < 1 || o.max_members > kMaxMembers)
    return "max members must be from 1 to " + std::to_string(kMaxMembers) + ", got " +
           std::to_string(o.max_members);
  if (o.mode != 0600 && o.mode != 0660)
    return "mode must be 0600 or 0660, got " + octal(o.mode);
  const std::uint64_t payload = o.slot_size - payload_offset(o.checksum);
  const std::uint64_t limit = std::min<std::uint64_t>(o.slot_count, kMaxFragments) * payload;
  if (o.max_message_size > limit)
    return "max message size " + std::to_string(o.max_message_size) +
           " bytes does not fit the ring: at most " + std::to_string(limit) + " bytes (" +
           std::to_string(std::min<std::uint64_t>(o.slot_count, kMaxFragments)) + " slots of " +
           std::to_string(payload) + " payload bytes); raise slot count or slot size";
  // The length field's top bit marks a properties block (kLengthHasProperties).
  if (o.max_message_size > kLengthMask)
    return "max message size " + std::to_string(o.max_message_size) + " bytes is over " +
           std::to_string(kLengthMask) + " (2^31 - 1)";
  constexpr auto kMaxMs = std::chrono::milliseconds(UINT32_MAX);
  for (const auto& [what, v] :
       {std::pair<const char*, std::chrono::milliseconds>{"lease", o.lease}, {"ttl", o.ttl},
        {"backoff initial", o.backoff_initial}, {"backoff max", o.backoff_max},
        {"heartbeat timeout", o.heartbeat_timeout}, {"claim timeout", o.claim_timeout}}) {
    if (v.count() < 0 || v > kMaxMs)
      return std::string(what) + " must be from 0 to " + std::to_string(UINT32_MAX) +
             " ms, got " + std::to_string(v.count());
  }
  if (o.heartbeat_liveness && o.heartbeat_timeout.count() == 0)
    return "heartbeat liveness needs a heartbeat timeout above 0";
  if (o.claim_timeout.count() == 0) return "claim timeout must be above 0";
  if (o.durability != Durability::none && o.data_dir.empty())
    return std::string("durability ") + std::string(to_string(o.durability)) + " needs a data dir";
  if (o.data_dir.size() > kMaxDataDirLength)
    return "data dir path longer than " + std::to_string(kMaxDataDirLength) + " characters";
  if (o.flush_interval.count() < 0 || o.flush_interval > kMaxMs)
    return "flush interval out of range";
  if (o.max_priority > kMaxPriority)
    return "max priority must be from 0 to " + std::to_string(kMaxPriority) + ", got " +
           std::to_string(o.max_priority);
  if (o.dedup_window.count > kMaxDedupWindow)
    return "dedup window must be from 0 to " + std::to_string(kMaxDedupWindow) + " ids, got " +
           std::to_string(o.dedup_window.count);
  if (o.dedup_window.time.count() < 0 || o.dedup_window.time.count() > UINT32_MAX)
    return "dedup window time must be from 0 to " + std::to_string(UINT32_MAX) + " s";
  if (o.dedup_window.count == 0 && o.dedup_window.time.count() != 0)
    return "a dedup window time needs a dedup window count (the table's size)";
  const auto g = compute_geometry(o.slot_count, o.slot_size, o.max_members, o.dedup_window.count);
  if (g.total_size > kMaxSegmentBytes)
    return "segment of " + std::to_string(g.total_size) + " bytes exceeds the 64 GiB limit";
  return {};
}

Result<std::shared_ptr<Segment>> Segment::create(std::string_view name,
                                                 const QueueOptions& options,
                                                 std::uint64_t base_position,
                                                 std::span<const std::pair<std::uint64_t, std::uint64_t>> recovered_ids,
                                                 std::uint32_t topic_groups,
                                                 const std::function<void(Segment&)>& before_publish) {
  if (auto e = Queue::validate_name(name); !e.empty()) return Error(Errc::invalid_argument, e);
  if (auto e = validate_options(options); !e.empty())
    return Error(Errc::invalid_argument, "cannot create " + quoted(name) + ": " + e);
  if (options.dead_letter && !name.ends_with(".dlq") && name.size() > kMaxNameLength - 4)
    return Error(Errc::invalid_argument,
                 "invalid queue name: longer than " + std::to_string(kMaxNameLength - 4) +
                     " characters (room is kept for its dead-letter queue '<name>.dlq')");
  if (topic_groups > kMaxTopicGroups ||
      (topic_groups != 0 && (options.dedup_window.count != 0 || options.max_priority != 0)))
    return Error(Errc::invalid_argument, "cannot create " + quoted(name) +
                                             ": a topic has 1 to " + std::to_string(kMaxTopicGroups) +
                                             " groups, no priorities and no dedup window");
  const auto g = compute_geometry(options.slot_count, options.slot_size, options.max_members,
                                  options.dedup_window.count, topic_groups);
  const std::string obj = object_name(name);

  // O_CREAT | O_EXCL: never adopt a segment somebody else prepared. glibc's shm_open adds
  // O_NOFOLLOW and O_CLOEXEC itself; O_CLOEXEC is passed too, for fd_above_stdio's contract.
  const std::string path = "/" + obj;
  const UniqueFd fd(fd_above_stdio(
      ::shm_open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, options.mode)));
  if (fd.get() < 0) return from_errno(errno, name, "cannot create");
  // The mode is exact whatever the umask.
  if (::fchmod(fd.get(), options.mode) != 0) {
    const int err = errno;
    ::shm_unlink(path.c_str());
    return from_errno(err, name, "cannot set the mode of");
  }
  // Reserve the memory now: a full /dev/shm is an error here, not a SIGBUS later.
  if (const int rc = ::posix_fallocate(fd.get(), 0, static_cast<off_t>(g.total_size)); rc != 0) {
    ::shm_unlink(path.c_str());
    if (rc == ENOSPC)
      return Error(Errc::no_space, "cannot create " + quoted(name) + ": /dev/shm has no room for " +
                                       std::to_string(g.total_size) + " bytes");
    return from_errno(rc, name, "cannot reserve memory for");
  }
  auto seg = attach(name, fd.get(), g.total_size, /*created=*/true);
  if (!seg.ok()) {
    ::shm_unlink(path.c_str());
    return seg;
  }
  seg.value()->owner_uid_ = ::geteuid();
  // Initialise. The memory is zero-filled, which is already a valid empty ring (every slot
  // word is free at lap 0) and a free member table; only the header needs writing.
  SegmentHeader& h = seg.value()->header();
  h.header_size = sizeof(SegmentHeader);
  h.segment_size = g.total_size;
  h.slot_count = options.slot_count;
  h.slot_shift = static_cast<std::uint32_t>(std::countr_zero(options.slot_count));
  h.slot_size = options.slot_size;
  h.max_fragments = std::min(options.slot_count, kMaxFragments);
  h.max_message_size =
      options.max_message_size != 0
          ? options.max_message_size
          : options.slot_size - static_cast<std::uint32_t>(payload_offset(options.checksum));
  h.max_members = options.max_members;
  h.members_offset = g.members_offset;
  h.ring_offset = g.ring_offset;
  h.creator_uid = ::geteuid();
  h.mode = options.mode;
  h.created_unix_ns = static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(
          std::chrono::system_clock::now().time_since_epoch())
          .count());
  h.state.store(static_cast<std::uint32_t>(SegmentState::active), std::memory_order_relaxed);
  h.lease_ms.store(static_cast<std::uint32_t>(options.lease.count()), std::memory_order_relaxed);
  h.max_deliveries.store(options.max_deliveries, std::memory_order_relaxed);
  h.ttl_ms.store(static_cast<std::uint32_t>(options.ttl.count()), std::memory_order_relaxed);
  h.backoff_initial_ms.store(static_cast<std::uint32_t>(options.backoff_initial.count()), std::memory_order_relaxed);
  h.backoff_max_ms.store(static_cast<std::uint32_t>(options.backoff_max.count()), std::memory_order_relaxed);
  h.heartbeat_timeout_ms = static_cast<std::uint32_t>(options.heartbeat_timeout.count());
  h.claim_timeout_ms = static_cast<std::uint32_t>(options.claim_timeout.count());
  h.flags = (options.heartbeat_liveness ? kFlagHeartbeatLiveness : 0) |
            (options.dead_letter ? kFlagDeadLetter : 0) |
            (options.checksum ? kFlagChecksum : 0);
  h.max_priority = options.max_priority;
  h.priority_level = level_of(name, options.max_priority);
  h.dedup_count = options.dedup_window.count;
  h.dedup_seconds = static_cast<std::uint32_t>(options.dedup_window.time.count());
  h.kind = static_cast<std::uint32_t>(topic_groups != 0 ? SegmentKind::topic : SegmentKind::queue);
  h.max_groups = topic_groups;
  h.durability = static_cast<std::uint32_t>(options.durability);
  h.flush_interval_ms = static_cast<std::uint32_t>(options.flush_interval.count());
  std::memcpy(h.data_dir, options.data_dir.data(), options.data_dir.size());
  h.base_position = base_position;
  if (base_position != 0) {
    // Positions continue from base: every cursor starts there, and slot i is free for the
    // lap of the first position >= base that maps to it.
    h.tail.value.store(base_position, std::memory_order_relaxed);
    h.dispatch.value.store(base_position, std::memory_order_relaxed);
    h.persisted.value.store(base_position, std::memory_order_relaxed);
    h.persisted.synced.store(base_position, std::memory_order_relaxed);
    auto* ring = static_cast<std::byte*>(seg.value()->map_) + g.ring_offset;
    const std::uint64_t n = options.slot_count;
    const auto shift = static_cast<std::uint32_t>(std::countr_zero(options.slot_count));
    for (std::uint64_t i = 0; i < n; ++i) {
      const std::uint64_t pos = base_position + ((i - base_position) & (n - 1));
      reinterpret_cast<SlotHeader*>(ring + i * options.slot_size)
          ->word.store(make_word(lap_of(pos, shift), SlotState::free, 0, 0),
                       std::memory_order_relaxed);
    }
  }
  std::memcpy(h.name, name.data(), name.size());
  QueueOptions adopted = options;
  adopted.max_message_size = h.max_message_size;
  seg.value()->adopt(adopted, h.flags, topic_groups);
  if (before_publish) before_publish(*seg.value());
  // Ids recovered from the log (a rebuild after a reboot) enter the window before anybody
  // can open the segment: a crash before the publish below leaves a half-created segment,
  // which is removed and rebuilt.
  if (seg.value()->dedup_)
    for (const auto& [pos, id] : recovered_ids) seg.value()->dedup_.restore(id, pos);
  h.magic.store(kMagic, std::memory_order_relaxed);
  // Publishes every field above; pairs with the acquire load of `version` in attach().
  h.version.store(kLayoutVersion, std::memory_order_release);
  futex_wake_all(h.version);
  seg.value()->priority_level_ = h.priority_level;
  seg.value()->link_base();
  return seg;
}

Result<std::shared_ptr<Segment>> Segment::open(std::string_view name) {
  if (auto e = Queue::validate_name(name); !e.empty()) return Error(Errc::invalid_argument, e);
  const std::string obj = object_name(name);
  // Anybody who may write /dev/shm can leave a directory, FIFO or socket under our name;
  // say what it is (shm_open reports a directory as EINVAL) rather than "Invalid argument"
  // or a size error later.
  auto not_a_segment = [&](const struct stat& st) {
    return Error(Errc::bad_magic, quoted(name) + ": /dev/shm/" + obj + " is " +
                                      file_kind(st.st_mode) + ", not an shmq segment (owner uid " +
                                      std::to_string(st.st_uid) + "); remove it");
  };
  struct stat st {};
  const UniqueFd fd(
      fd_above_stdio(::shm_open(("/" + obj).c_str(), O_RDWR | O_CLOEXEC, 0)));
  if (fd.get() < 0) {
    const int err = errno;
    if ((err == EINVAL || err == EISDIR) && ::lstat(("/dev/shm/" + obj).c_str(), &st) == 0 &&
        !S_ISREG(st.st_mode))
      return not_a_segment(st);
    return from_errno(err, name, "cannot open");
  }
  if (::fstat(fd.get(), &st) != 0) return from_errno(errno, name, "cannot stat");
  if (!S_ISREG(st.st_mode)) return not_a_segment(st);
  const std::uint32_t mode = st.st_mode & 07777;
  const uid_t me = ::geteuid();
  // A segment somebody else made, or one anybody may write, can be full of lies: refuse it
  // unless it is ours, or shared with a group we are in by an explicit 0660.
  if ((mode & 0007) != 0)
    return Error(Errc::permission_denied,
                 "refusing " + quoted(name) + ": mode " + octal(mode) + " lets any user " +
                     ((mode & 0002) != 0 ? "write" : "read") + " it (owner uid " +
                     std::to_string(st.st_uid) + ")");
  if (st.st_uid != me && !((mode & 0060) == 0060 && in_group(st.st_gid)))
    return Error(Errc::permission_denied,
                 "permission denied: " + quoted(name) + " is owned by uid " +
                     std::to_string(st.st_uid) + " with mode " + octal(mode) + " (you are uid " +
                     std::to_string(me) + ")");
  // A creator sizes the segment (in one step) right after it made it (O_EXCL): an empty
  // segment is one being created (wait, as for its header below), or one whose creator died
  // there (then it was never initialised). Any other size short of the header is corrupt.
  const auto sized_by = std::chrono::steady_clock::now() + kInitWait;
  while (st.st_size == 0) {
    if (std::chrono::steady_clock::now() >= sized_by)
      return Error(Errc::not_initialized,
                   quoted(name) + " was never initialised (its creator died while creating "
                                  "it?): it is " + std::to_string(st.st_size) +
                       " bytes; remove it and create it again");
    std::this_thread::sleep_for(std::chrono::milliseconds(1));  // polling another's create
    if (::fstat(fd.get(), &st) != 0)
      return from_errno(errno, name, "cannot stat");
  }
  auto seg = attach(name, fd.get(), static_cast<std::size_t>(st.st_size), false);
  if (!seg.ok()) return seg;
  seg.value()->owner_uid_ = st.st_uid;
  if (auto e = seg.value()->load_geometry(); !e.empty())
    return Error(Errc::corrupt, "corrupt " + quoted(name) + ": " + e);
  seg.value()->link_base();
  return seg;
}

Result<std::shared_ptr<Segment>> Segment::attach(std::string_view name, int fd,
                                                 std::size_t size, bool created) {
  if (size < sizeof(SegmentHeader))
    return Error(Errc::corrupt, "corrupt " + quoted(name) + ": segment is " +
                                    std::to_string(size) + " bytes, smaller than its " +
                                    std::to_string(sizeof(SegmentHeader)) + "-byte header");
  std::shared_ptr<Segment> seg(new Segment());
  seg->name_ = std::string(name);
  // The mapping keeps the object alive; the caller closes the descriptor after this.
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return from_errno(errno, name, "cannot map");
  seg->map_ = p;
  seg->size_ = size;
  seg->header_ = static_cast<SegmentHeader*>(p);
  if (created) return seg;

  SegmentHeader& h = *seg->header_;
  const auto deadline = std::chrono::steady_clock::now() + kInitWait;
  for (;;) {
    const std::uint64_t magic = h.magic.load(std::memory_order_acquire);
    if (magic != 0 && magic != kMagic)
      return Error(Errc::bad_magic, quoted(name) + ": /dev/shm/" + object_name(name) +
                                        " is not an shmq segment (bad magic)");
    // Pairs with the release store of `version` in create(): once non-zero, every
    // header field is initialised.
    const std::uint32_t v = h.version.load(std::memory_order_acquire);
    if (v != 0) {
      if (h.magic.load(std::memory_order_relaxed) != kMagic)
        return Error(Errc::bad_magic, quoted(name) + ": /dev/shm/" + object_name(name) +
                                          " is not an shmq segment (bad magic)");
      if (v != kLayoutVersion)
        return Error(Errc::incompatible_version,
                     quoted(name) + " has layout version " + std::to_string(v) +
                         "; this library reads version " + std::to_string(kLayoutVersion));
      break;
    }
    if (std::chrono::steady_clock::now() >= deadline)
      return Error(Errc::not_initialized,
                   quoted(name) + " was never initialised (its creator died while creating "
                                  "it?); remove it and create it again");
    // The creator wakes this futex when it publishes the version.
    futex_wait(h.version, 0, std::min(deadline, std::chrono::steady_clock::now() +
                                                    std::chrono::milliseconds(50)));
  }
  return seg;
}

std::string Segment::load_geometry() {
  const SegmentHeader& h = *header_;
  // Read every field exactly once into a private copy, validate the copy, then use only the
  // copy: a process that rewrites the header meanwhile cannot slip unchecked values in.
  const std::uint32_t header_size = h.header_size;
  QueueOptions o;
  o.slot_count = h.slot_count;
  const std::uint32_t slot_shift = h.slot_shift;
  o.slot_size = h.slot_size;
  o.max_members = h.max_members;
  o.max_message_size = h.max_message_size;
  const std::uint32_t max_fragments = h.max_fragments;
  const std::uint64_t members_offset = h.members_offset;
  const std::uint64_t ring_offset = h.ring_offset;
  o.lease = std::chrono::milliseconds(h.lease_ms.load(std::memory_order_relaxed));
  o.max_deliveries = h.max_deliveries.load(std::memory_order_relaxed);
  o.ttl = std::chrono::milliseconds(h.ttl_ms.load(std::memory_order_relaxed));
  o.backoff_initial = std::chrono::milliseconds(h.backoff_initial_ms.load(std::memory_order_relaxed));
  o.backoff_max = std::chrono::milliseconds(h.backoff_max_ms.load(std::memory_order_relaxed));
  o.heartbeat_timeout = std::chrono::milliseconds(h.heartbeat_timeout_ms);
  o.claim_timeout = std::chrono::milliseconds(h.claim_timeout_ms);
  const std::uint32_t flags = h.flags;
  o.heartbeat_liveness = flags & kFlagHeartbeatLiveness;
  o.checksum = flags & kFlagChecksum;
  o.mode = 0600;
  const std::uint32_t durability = h.durability;
  if (durability > static_cast<std::uint32_t>(Durability::sync))
    return "unknown durability " + std::to_string(durability);
  o.durability = static_cast<Durability>(durability);
  o.flush_interval = std::chrono::milliseconds(h.flush_interval_ms);
  o.max_priority = h.max_priority;
  o.dedup_window.count = h.dedup_count;
  o.dedup_window.time = std::chrono::seconds(h.dedup_seconds);
  const std::uint32_t level = h.priority_level;
  const std::uint32_t kind = h.kind;
  const std::uint32_t max_groups = h.max_groups;
  char dir[kMaxDataDirLength + 8];
  std::memcpy(dir, h.data_dir, sizeof dir);
  dir[kMaxDataDirLength] = '\0';
  o.data_dir = dir;

  if (header_size != sizeof(SegmentHeader))
    return "header size " + std::to_string(header_size) + ", expected " +
           std::to_string(sizeof(SegmentHeader));
  if (auto e = validate_options(o); !e.empty()) return e;
  if (o.max_message_size == 0) return "max message size is 0";
  if (slot_shift != static_cast<std::uint32_t>(std::countr_zero(o.slot_count)))
    return "slot shift " + std::to_string(slot_shift) + " does not match slot count " +
           std::to_string(o.slot_count);
  if (max_fragments != std::min(o.slot_count, kMaxFragments))
    return "max fragments " + std::to_string(max_fragments) + " does not match slot count";
  if (kind == static_cast<std::uint32_t>(SegmentKind::queue)) {
    if (max_groups != 0) return "a queue with " + std::to_string(max_groups) + " groups";
  } else if (kind == static_cast<std::uint32_t>(SegmentKind::topic)) {
    if (max_groups < 1 || max_groups > kMaxTopicGroups)
      return "a topic with " + std::to_string(max_groups) + " groups";
    if (o.dedup_window.count != 0 || o.max_priority != 0)
      return "a topic with a dedup window or priorities";
  } else {
    return "unknown segment kind " + std::to_string(kind);
  }
  const auto g = compute_geometry(o.slot_count, o.slot_size, o.max_members, o.dedup_window.count,
                                  max_groups);
  if (members_offset != g.members_offset || ring_offset != g.ring_offset)
    return "member table or ring offset does not match the geometry";
  if (g.total_size > size_)
    return "segment is " + std::to_string(size_) + " bytes but its geometry needs " +
           std::to_string(g.total_size);
  // The level is a name's (level_of), so a scribbled field cannot make a queue another's
  // level, nor index the bitmap past its 32 bits.
  if (level != level_of(name_, o.max_priority))
    return "priority level " + std::to_string(level) + " does not match the name and max priority " +
           std::to_string(o.max_priority);
  adopt(o, flags, max_groups);
  priority_level_ = level;
  return {};
}

void Segment::adopt(const QueueOptions& o, std::uint32_t flags, std::uint32_t max_groups) noexcept {
  max_groups_ = max_groups;
  slot_count_ = o.slot_count;
  slot_shift_ = static_cast<std::uint32_t>(std::countr_zero(o.slot_count));
  mask_ = slot_count_ - 1;
  slot_size_ = o.slot_size;
  max_message_size_ = o.max_message_size;
  max_members_ = o.max_members;
  max_fragments_ = std::min(o.slot_count, kMaxFragments);
  heartbeat_timeout_ms_ = static_cast<std::uint32_t>(o.heartbeat_timeout.count());
  claim_timeout_ms_ = static_cast<std::uint32_t>(o.claim_timeout.count());
  flags_ = flags;
  payload_offset_ = static_cast<std::uint32_t>(payload_offset(checksummed()));
  durability_ = o.durability;
  flush_interval_ms_ = static_cast<std::uint32_t>(o.flush_interval.count());
  max_priority_ = o.max_priority;
  data_dir_ = o.data_dir;
  auto* base = static_cast<std::byte*>(map_);
  const auto g = compute_geometry(slot_count_, slot_size_, max_members_, o.dedup_window.count,
                                  max_groups_);
  members_ = reinterpret_cast<MemberRow*>(base + g.members_offset);
  topic_ = max_groups_ != 0 ? base + g.topic_offset : nullptr;
  ring_ = base + g.ring_offset;
  dedup_ = o.dedup_window.count == 0
               ? DedupTable()
               : DedupTable(*this, base + g.dedup_offset, o.dedup_window.count,
                            static_cast<std::uint32_t>(o.dedup_window.time.count()));
}

void Segment::prefault_dedup() noexcept {
  if (!dedup_) return;
  const auto g = compute_geometry(slot_count_, slot_size_, max_members_, dedup_.count());
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23  // Linux 5.14
#endif
  // Best effort: an older kernel says EINVAL, and the pages fault in as they are touched.
  (void)::madvise(static_cast<std::byte*>(map_) + g.dedup_offset, g.total_size - g.dedup_offset,
                  MADV_POPULATE_WRITE);
}

void Segment::mark_removed() noexcept {
  SegmentHeader& h = *header_;
  // seq_cst (a release at least, for removed()): a sleeper sets its waiting bit and then
  // re-checks removed() (seq_cst loads in its wait_on predicate); the futex bump below comes
  // after this store, so either the sleeper sees `removed` or its futex_wait sees the bump.
  h.state.store(static_cast<std::uint32_t>(SegmentState::removed), std::memory_order_seq_cst);
  for (WaitLine* line : {&h.consumers_wait, &h.producers_wait, &h.persist_wait}) {
    line->futex.fetch_add(1, std::memory_order_seq_cst);
    futex_wake_all(line->futex);
  }
}

bool Segment::persister_alive() const noexcept {
  const std::uint64_t now = monotonic_ns();
  for (std::uint32_t i = 0; i < max_members_; ++i) {
    const MemberRow& row = members_[i];
    const std::uint64_t w = row.state.load(std::memory_order_acquire);
    if (member_status(w) != MemberStatus::active || member_role(w) != Role::persister) continue;
    if (heartbeat_liveness()) {
      const std::uint64_t beat = row.heartbeat_ns.load(std::memory_order_relaxed);
      if (now <= beat || now - beat <= std::uint64_t(heartbeat_timeout_ms_) * 1'000'000)
        return true;
      continue;
    }
    if (process_alive(static_cast<pid_t>(member_pid(w)),
                      row.start_time.load(std::memory_order_relaxed)))
      return true;
  }
  return false;
}

VoidResult Segment::remove(std::string_view name) {
  if (auto e = Queue::validate_name(name); !e.empty()) return Error(Errc::invalid_argument, e);
  // Tell the processes still attached before the name goes: once unlinked, nobody can reach
  // this segment to say so. A segment we cannot open (corrupt, not ours) is just unlinked.
  if (auto seg = open(name); seg.ok()) seg.value()->mark_removed();
  if (::shm_unlink(("/" + object_name(name)).c_str()) != 0)
    return from_errno(errno, name, "cannot remove");
  return {};
}

Result<Segment::FileOwner> Segment::owner_of(std::string_view name) {
  if (auto e = Queue::validate_name(name); !e.empty()) return Error(Errc::invalid_argument, e);
  struct stat st {};
  if (::lstat(("/dev/shm/" + object_name(name)).c_str(), &st) != 0)
    return from_errno(errno, name, "cannot examine");
  return FileOwner{st.st_uid, st.st_gid, static_cast<std::uint32_t>(st.st_mode & 07777),
                   S_ISREG(st.st_mode)};
}

Segment::~Segment() {
  if (map_ != nullptr) ::munmap(map_, size_);
}

QueueOptions Segment::options() const {
  QueueOptions o;
  o.slot_count = slot_count_;
  o.slot_size = slot_size_;
  o.max_message_size = max_message_size_;
  o.max_members = max_members_;
  o.mode = header_->mode;
  o.lease = std::chrono::milliseconds(lease_ms());
  o.max_deliveries = max_deliveries();
  o.ttl = std::chrono::milliseconds(ttl_ms());
  o.backoff_initial = std::chrono::milliseconds(backoff_initial_ms());
  o.backoff_max = std::chrono::milliseconds(backoff_max_ms());
  o.dead_letter = dead_letter();
  o.heartbeat_liveness = heartbeat_liveness();
  o.heartbeat_timeout = std::chrono::milliseconds(heartbeat_timeout_ms_);
  o.claim_timeout = std::chrono::milliseconds(claim_timeout_ms_);
  o.checksum = checksummed();
  o.durability = durability_;
  o.data_dir = data_dir_;
  o.flush_interval = std::chrono::milliseconds(flush_interval_ms_);
  o.max_priority = max_priority_;
  o.dedup_window.count = dedup_.count();
  o.dedup_window.time = std::chrono::seconds(dedup_.seconds());
  return o;
}

std::string Segment::level_name(std::string_view base, std::uint32_t level) {
  std::string n(base);
  if (level != 0) n.append(".p").append(std::to_string(level));
  return n;
}

std::uint32_t Segment::level_of(std::string_view name, std::uint32_t max_priority,
                                std::string* base) {
  if (base != nullptr) base->assign(name);
  if (max_priority == 0) return 0;
  const std::size_t dot = name.rfind(".p");
  if (dot == std::string_view::npos || dot == 0) return 0;
  const std::string_view digits = name.substr(dot + 2);
  if (digits.empty() || digits.size() > 2 || digits[0] == '0') return 0;
  std::uint32_t p = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return 0;
    p = p * 10 + std::uint32_t(c - '0');
  }
  if (p < 1 || p > max_priority) return 0;
  if (base != nullptr) base->assign(name.substr(0, dot));
  return p;
}

std::string Segment::base_name() const {
  std::string b;
  (void)level_of(name_, max_priority_, &b);
  return b;
}

void Segment::link_base() noexcept {
  if (priority_level_ == 0) return;
  try {
    std::lock_guard<std::mutex> lock(base_mutex_);
    if (base_) return;
    auto b = open(base_name());
    // Only the queue's own base: the same owner, and a base of this queue's shape.
    if (b.ok() && b.value()->owner_uid() == owner_uid_ &&
        b.value()->max_priority() == max_priority_ && b.value()->priority_level() == 0) {
      base_ = std::move(b.value());
      base_ptr_.store(base_.get(), std::memory_order_release);
      // Messages may have been made deliverable here while no process had linked this level
      // to its base (a level rebuilt by shmqd before the base existed signals nobody): set
      // the level's bit now. A consumer that finds the level empty clears it again.
      WaitLine& line = base_->header().consumers_wait;
      const std::uint32_t bit = std::uint32_t{1} << (priority_level_ & 31);
      if ((line.levels.load(std::memory_order_seq_cst) & bit) == 0)
        line.levels.fetch_or(bit, std::memory_order_seq_cst);
    }
  } catch (...) {
    // Out of memory: not linked now; a later call tries again.
  }
}

Segment* Segment::base_or_link() noexcept {
  if (Segment* b = base()) return b;
  if (priority_level_ == 0) return nullptr;
  const std::uint64_t now = monotonic_coarse_ns();
  std::uint64_t next = next_link_ns_.load(std::memory_order_relaxed);
  if (now < next ||
      !next_link_ns_.compare_exchange_strong(next, now + 100'000'000, std::memory_order_relaxed))
    return nullptr;
  link_base();
  return base();
}

void signal_level(Segment& seg) noexcept {
  Segment* base = seg.base_or_link();
  if (base == nullptr) return;
  WaitLine& line = base->header().consumers_wait;
  const std::uint32_t bit = std::uint32_t{1} << (seg.priority_level() & 31);
  if ((line.levels.load(std::memory_order_seq_cst) & bit) == 0)
    line.levels.fetch_or(bit, std::memory_order_seq_cst);
  wake_waiters(line, base->max_members());
}

void Segment::set_policy(const QueueOptions& o) noexcept {
  // Relaxed: see layout.hpp; each field stands alone.
  SegmentHeader& h = *header_;
  h.lease_ms.store(static_cast<std::uint32_t>(o.lease.count()), std::memory_order_relaxed);
  h.max_deliveries.store(o.max_deliveries, std::memory_order_relaxed);
  h.ttl_ms.store(static_cast<std::uint32_t>(o.ttl.count()), std::memory_order_relaxed);
  h.backoff_initial_ms.store(static_cast<std::uint32_t>(o.backoff_initial.count()),
                             std::memory_order_relaxed);
  h.backoff_max_ms.store(static_cast<std::uint32_t>(o.backoff_max.count()),
                         std::memory_order_relaxed);
}

Result<MemberTicket> Segment::register_member(Role role) {
  const auto pid = static_cast<std::uint32_t>(::getpid());
  const std::uint64_t start = process_start_time(static_cast<pid_t>(pid));
  for (std::uint32_t i = 0; i < max_members_; ++i) {
    MemberRow& row = members_[i];
    std::uint64_t w = row.state.load(std::memory_order_acquire);
    if (member_status(w) != MemberStatus::free) continue;
    // A new generation for this incarnation of the row (16 bits in the row, 8 in slot
    // words): nothing its previous occupants left or do later can be taken for ours.
    const std::uint32_t gen = (member_generation(w) + 1) & 0xffff;
    const std::uint64_t joining = member_state(MemberStatus::joining, role, pid, gen);
    const std::uint64_t active = member_state(MemberStatus::active, role, pid, gen);
    // Claims the row in one CAS as joining: a crash after it leaves a joining row with our
    // pid, which the watchdog frees once that pid is gone.
    if (!row.state.compare_exchange_strong(w, joining, std::memory_order_acq_rel)) continue;
    row.sent.store(0, std::memory_order_relaxed);
    row.received.store(0, std::memory_order_relaxed);
    row.acked.store(0, std::memory_order_relaxed);
    row.requeued.store(0, std::memory_order_relaxed);
    const std::uint64_t now = monotonic_ns();
    row.registered_ns.store(now, std::memory_order_relaxed);
    row.heartbeat_ns.store(monotonic_coarse_ns(), std::memory_order_relaxed);
    row.start_time.store(start, std::memory_order_release);
    // A previous holder of this row may have died asleep with its waiting bits set.
    const std::uint64_t bit = std::uint64_t{1} << (i % 64);
    header_->consumers_wait.waiting[i / 64].fetch_and(~bit, std::memory_order_relaxed);
    header_->producers_wait.waiting[i / 64].fetch_and(~bit, std::memory_order_relaxed);
    // Publishes the fields above (pairs with the watchdog's acquire load of the state): from
    // now on the row is judged by our start time and our heartbeat. A CAS, not a store: a
    // watchdog may have judged us dead while we were joining (stopped for a heartbeat
    // timeout in heartbeat mode); then the row is not ours any more.
    if (!row.state.compare_exchange_strong(w = joining, active, std::memory_order_acq_rel))
      continue;
    return MemberTicket{i, owner_id(i, gen), active};
  }
  return Error(Errc::no_space, "no free member row in " + quoted(name_) + " (all " +
                                   std::to_string(max_members_) +
                                   " in use; create the queue with more members)");
}

void Segment::unregister_member(const MemberTicket& m) noexcept {
  if (m.row >= max_members_) return;
  std::uint64_t w = m.word;
  const std::uint64_t leaving = with_status(m.word, MemberStatus::leaving);
  if (!members_[m.row].state.compare_exchange_strong(w, leaving, std::memory_order_acq_rel))
    return;
  free_member(m.row, leaving);
}

bool Segment::free_member(std::uint32_t i, std::uint64_t leaving) noexcept {
  if (i >= max_members_ || member_status(leaving) != MemberStatus::leaving) return false;
  MemberRow& row = members_[i];
  // Read the counters, then free the row in one CAS from exactly `leaving`, and retire the
  // counters only if that CAS was ours: two callers racing (the member closing and a
  // watchdog evicting it, a watchdog and a repair pass) retire them once, and the loser
  // never writes into a row that may already be its next occupant's. Nothing else is
  // written here: the next occupant resets the counters, heartbeat, start time and waiting
  // bits while it is joining.
  const std::uint64_t sent = row.sent.load(std::memory_order_relaxed);
  const std::uint64_t received = row.received.load(std::memory_order_relaxed);
  const std::uint64_t acked = row.acked.load(std::memory_order_relaxed);
  const std::uint64_t requeued = row.requeued.load(std::memory_order_relaxed);
  std::uint64_t w = leaving;
  if (!row.state.compare_exchange_strong(
          w, member_state(MemberStatus::free, Role::none, 0, member_generation(leaving)),
          std::memory_order_acq_rel))
    return false;
  SegmentHeader& h = *header_;
  h.retired_sent.fetch_add(sent, std::memory_order_relaxed);
  h.retired_received.fetch_add(received, std::memory_order_relaxed);
  h.retired_acked.fetch_add(acked, std::memory_order_relaxed);
  h.retired_requeued.fetch_add(requeued, std::memory_order_relaxed);
  return true;
}

}  // namespace shmq::detail
