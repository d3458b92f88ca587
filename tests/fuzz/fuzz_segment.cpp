// Fuzz target (issue 12, hostile input): a queue segment opened from hostile bytes, then
// used by every role - consumers, a producer, a watchdog, `shmqctl stat`.
//
// Every input starts from one of four snapshots of a real queue's segment, taken once per
// process after a scripted history (messages ready, held, delayed, requeued behind the
// cursor, spanning slots; member rows alive; one ring whose laps wrap past 2^32), and
// overlays writes on it. The writes are structure-aware: a header field, a cursor set
// relative to the tail (ahead, behind, aliasing its lap modulo 2^32), a member row, a slot
// word built from lap / state / owner / fragments, a slot header field, or raw bytes. That is
// the shape of the input that found the dispatch hang: one 8-byte write to a cursor.
//
// Input, little-endian:
//   byte 0    snapshot (mod 4)
//   byte 1    segment file size: below 240 the snapshot's; else one of kSizes
//   then records of 12 bytes {kind, a, b, c, value (u64)}; kind mod 16:
//     0 header field   1 cursor   2 member row   3 slot word (built)   4 slot word (raw)
//     5 slot header    6 raw 8 bytes   7 raw byte
//     8..15 operations (receive, ack/nack, send, watchdog tick, stat, ...)
// Writes before the first operation go into the bytes the segment is opened from (the
// opener's validation sees them); writes after it go into the live mapping, as a hostile
// process would make them while the queue is in use.
//
// Checked (a violation traps, so libFuzzer reports it as a crash):
//   - every call returns within its bound: its own timeout + kSlack (2 s) for receive_for,
//     kSlack for calls that must not block at all - the dispatch bug was a hang;
//   - a received message is within the queue's max message size, its bytes are readable
//     and, when delivered zero-copy, lie inside the ring; while nothing but the dispatch and
//     requeue_epoch cursors was written, it is intact (what an honest process sent);
//   - browse and stats stay within the geometry;
//   - liveness, where the library promises it (tests/cursor_test.cpp): when the only writes
//     were to the dispatch and requeue_epoch cursors, a message sent afterwards is received.
//     Not after a write to the tail: a tail outside the ring's window is not repaired (yet),
//     producers then wait as on a full ring.
//
// The same source is linked into fuzz_segment_regression (regression_main.cpp), which runs
// the committed corpus in the normal test suite.
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "platform/process.hpp"
#include "ring/slot_word.hpp"
#include "segment/layout.hpp"
#include "segment/segment.hpp"
#include "shmq/shmq.hpp"
#include "shmqctl_stats.hpp"

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
namespace d = shmq::detail;
using shmq::Status;

// --- Invariants ---------------------------------------------------------------------------

[[noreturn]] void violated(const char* what) {
  std::fprintf(stderr, "fuzz_segment: invariant violated: %s\n", what);
  std::fflush(stderr);
  __builtin_trap();
}
#define FUZZ_CHECK(cond) ((cond) ? (void)0 : violated(#cond))

// Generous: a loaded 2-core machine under ASan (2 s was once exceeded by a stat while two
// sanitizer builds ran beside it). A hang is unbounded; the walks are bounded
// by a ring of at most 8 slots here.
constexpr std::chrono::nanoseconds kSlack = 5s;

// Traps if the scope it guards took longer than `budget` + kSlack.
class Bounded {
 public:
  Bounded(const char* what, std::chrono::nanoseconds budget = 0ns)
      : what_(what), limit_(budget + kSlack), start_(Clock::now()) {}
  Bounded(const Bounded&) = delete;
  Bounded& operator=(const Bounded&) = delete;
  ~Bounded() {
    if (Clock::now() - start_ > limit_) violated(what_);
  }

 private:
  const char* what_;
  std::chrono::nanoseconds limit_;
  Clock::time_point start_;
};

// --- The snapshots ------------------------------------------------------------------------

struct Geometry {
  std::uint32_t slot_count = 0, slot_shift = 0, slot_size = 0, max_members = 0;
  std::uint32_t max_fragments = 0, max_message_size = 0;
  std::uint64_t members_offset = 0, ring_offset = 0;
};

Geometry geometry_of(const d::Segment& seg) {
  Geometry g;
  g.slot_count = seg.slot_count();
  g.slot_shift = seg.slot_shift();
  g.slot_size = seg.slot_size();
  g.max_members = seg.max_members();
  g.max_fragments = seg.max_fragments();
  g.max_message_size = seg.max_message_size();
  const auto* base = reinterpret_cast<const std::byte*>(&seg.header());
  g.members_offset =
      static_cast<std::uint64_t>(reinterpret_cast<const std::byte*>(&seg.member(0)) - base);
  g.ring_offset =
      static_cast<std::uint64_t>(reinterpret_cast<const std::byte*>(&seg.slot(0)) - base);
  return g;
}

// A queue's segment object and the bytes every input restores it to.
struct Snapshot {
  std::string name;
  int fd = -1;  // the shm object, to restore it without mapping it
  std::vector<std::byte> bytes;
  Geometry geometry;
  // Its dead-letter queue (Q1 only): restored too, so that inputs stay independent.
  int dlq_fd = -1;
  std::vector<std::byte> dlq_bytes;
};

constexpr const char* kPrefix = "fuzz-segment-";

std::vector<std::byte> bytes_of(const d::Segment& seg) {
  const auto* base = reinterpret_cast<const std::byte*>(&seg.header());
  return {base, base + seg.mapped_size()};
}

int open_object(const std::string& queue) {
  const int fd = ::shm_open(("/" + d::Segment::object_name(queue)).c_str(), O_RDWR | O_CLOEXEC, 0);
  if (fd < 0) {
    std::fprintf(stderr, "fuzz_segment: cannot open the segment of %s: %s\n", queue.c_str(),
                 std::strerror(errno));
    std::abort();
  }
  return fd;
}

// Puts `bytes` back into the object behind `fd`, `size` bytes long (zeros past `bytes`).
void restore(int fd, const std::vector<std::byte>& bytes, std::size_t size) {
  bool ok = ::ftruncate(fd, static_cast<off_t>(bytes.size())) == 0 &&
            ::pwrite(fd, bytes.data(), bytes.size(), 0) == static_cast<ssize_t>(bytes.size());
  if (ok && size != bytes.size()) {
    // Shrink first: a longer file is zero-filled past the snapshot, whatever the last input
    // wrote there.
    ok = ::ftruncate(fd, static_cast<off_t>(std::min(size, bytes.size()))) == 0 &&
         ::ftruncate(fd, static_cast<off_t>(size)) == 0;
  }
  if (!ok) {
    std::fprintf(stderr, "fuzz_segment: cannot restore a segment: %s\n", std::strerror(errno));
    std::abort();
  }
}

template <typename T>
T must(shmq::Result<T> r, const char* what) {
  if (!r.ok()) {
    std::fprintf(stderr, "fuzz_segment: setup: %s: %s\n", what, r.error().message().c_str());
    std::abort();
  }
  return std::move(r.value());
}

void must_ok(Status s, const char* what) {
  if (s != Status::ok) {
    std::fprintf(stderr, "fuzz_segment: setup: %s failed\n", what);
    std::abort();
  }
}

std::string queue_name(int i) {
  return std::string(kPrefix) + std::to_string(::getpid()) + "-" + std::to_string(i);
}

// Segments of fuzz runs that died (a crash, a timeout) are left behind: remove ours whose
// process is gone.
void remove_stale_segments() {
  DIR* dir = ::opendir("/dev/shm");
  if (dir == nullptr) return;
  const std::string prefix = "shmq." + std::string(kPrefix);
  while (const dirent* e = ::readdir(dir)) {
    const std::string n = e->d_name;
    if (n.rfind(prefix, 0) != 0) continue;
    const long pid = std::strtol(n.c_str() + prefix.size(), nullptr, 10);
    struct stat st {};
    if (pid <= 0 || (::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH)) continue;
    if (::lstat(("/dev/shm/" + n).c_str(), &st) != 0 || st.st_uid != ::geteuid()) continue;
    ::shm_unlink(("/" + n).c_str());
  }
  ::closedir(dir);
}

std::vector<std::string>& created_queues() {
  static auto* names = new std::vector<std::string>();
  return *names;
}

void remove_queues() {
  for (const auto& n : created_queues()) (void)shmq::Queue::remove(n);
}

// Sends and acks `n` messages: positions go round the ring.
void cycle(shmq::Producer& p, shmq::Consumer& c, int n) {
  shmq::Message m;
  for (int i = 0; i < n; ++i) {
    must_ok(p.send("m"), "send");
    must_ok(c.try_receive(m), "receive");
    must_ok(c.ack(m), "ack");
  }
}

struct Fixture {
  std::array<Snapshot, 4> snapshots;
};

Fixture* build_fixture() {
  shmq::set_embedded_watchdog(false);  // the watchdog runs only when an input ticks it
  remove_stale_segments();
  std::atexit(remove_queues);
  auto* f = new Fixture();

  // Q1: 8 slots of 64 payload bytes, messages up to 3 slots, a dead-letter queue.
  // Snapshot 0 is taken with a producer and a consumer attached (their rows alive: this
  // process), snapshot 1 after they closed.
  {
    shmq::QueueOptions o;
    o.slot_count = 8;
    o.slot_size = 128;
    o.max_message_size = 192;
    o.max_members = 6;
    o.max_deliveries = 3;
    const std::string name = queue_name(1);
    auto q = must(shmq::Queue::create(name, o), "create Q1");
    created_queues().push_back(name);
    {
      auto p = must(q.producer(), "producer");
      auto c = must(q.consumer(), "consumer");
      cycle(p, c, 21);
      must_ok(p.send("a"), "send");
      must_ok(p.send(std::string(150, 'b')), "send");
      must_ok(p.send("c"), "send");
      must_ok(p.send("d"), "send");
      shmq::Message held, delayed, requeued;
      must_ok(c.try_receive(held), "receive");
      must_ok(c.try_receive(delayed), "receive");
      must_ok(c.nack_after(delayed, 10s), "nack_after");
      must_ok(c.try_receive(requeued), "receive");
      must_ok(c.nack(requeued), "nack");
      // "a" held, the 3-slot message delayed, "c" requeued behind dispatch, "d" ready.
      for (Snapshot* s : {&f->snapshots[0], &f->snapshots[1]}) {
        s->name = name;
        s->geometry = geometry_of(*q.segment());
      }
      f->snapshots[0].bytes = bytes_of(*q.segment());
    }
    f->snapshots[1].bytes = bytes_of(*q.segment());
    auto dlq = must(shmq::Queue::open(shmq::Queue::dead_letter_name(name)), "open the DLQ");
    for (Snapshot* s : {&f->snapshots[0], &f->snapshots[1]}) {
      s->fd = open_object(name);
      s->dlq_fd = open_object(dlq.name());
      s->dlq_bytes = bytes_of(*dlq.segment());
    }
  }

  // Q2: the smallest ring (2 slots), liveness by heartbeat, short lease, TTL and claim
  // timeout, backoff, no dead letters. A producer is attached (its heartbeat ages).
  {
    shmq::QueueOptions o;
    o.slot_count = 2;
    o.slot_size = 256;
    o.max_message_size = 384;
    o.max_members = 3;
    o.lease = 20ms;
    o.max_deliveries = 0;
    o.ttl = 200ms;
    o.backoff_initial = 1ms;
    o.backoff_max = 4ms;
    o.dead_letter = false;
    o.heartbeat_liveness = true;
    o.heartbeat_timeout = 50ms;
    o.claim_timeout = 20ms;
    const std::string name = queue_name(2);
    auto q = must(shmq::Queue::create(name, o), "create Q2");
    created_queues().push_back(name);
    auto p = must(q.producer(), "producer");
    {
      auto c = must(q.consumer(), "consumer");
      cycle(p, c, 5);
    }
    must_ok(p.send("x"), "send");
    Snapshot& s = f->snapshots[2];
    s.name = name;
    s.geometry = geometry_of(*q.segment());
    s.bytes = bytes_of(*q.segment());
    s.fd = open_object(name);
  }

  // Q3: a durable (async) ring rebuilt at a base position whose laps wrap past 2^32 a few
  // positions in; messages up to 2 slots. Its persisted cursor is moved by hand (no
  // persister runs).
  {
    shmq::QueueOptions o;
    o.slot_count = 8;
    o.slot_size = 128;
    o.max_message_size = 128;
    o.max_members = 4;
    o.dead_letter = false;
    o.durability = shmq::Durability::async;
    o.data_dir = "/nonexistent/shmq-fuzz";  // never touched: no persister runs
    const std::string name = queue_name(3);
    const std::uint64_t base = (d::kLapMask << 3) + 5;  // lap 2^32 - 1, slot 5
    auto q = must(shmq::Queue::recreate(name, o, base), "recreate Q3");
    created_queues().push_back(name);
    {
      auto p = must(q.producer(), "producer");
      auto c = must(q.consumer(), "consumer");
      must_ok(p.send("p0"), "send");
      must_ok(p.send(std::string(100, 'q')), "send");
      must_ok(p.send("p3"), "send");
      q.segment()->header().persisted.value.store(q.segment()->header().tail.value.load());
      shmq::Message m;
      for (int i = 0; i < 3; ++i) {
        must_ok(c.try_receive(m), "receive");
        must_ok(c.ack(m), "ack");
      }
      must_ok(p.send("p4"), "send");
      must_ok(p.send(std::string(70, 'r')), "send");
      // "p4" is not persisted yet.
      q.segment()->header().persisted.value.store(q.segment()->header().tail.value.load() - 3);
    }
    Snapshot& s = f->snapshots[3];
    s.name = name;
    s.geometry = geometry_of(*q.segment());
    s.bytes = bytes_of(*q.segment());
    s.fd = open_object(name);
  }
  return f;
}

// --- Writes -------------------------------------------------------------------------------

// The bytes being written to, with the geometry that places fields in them: the snapshot's
// before the segment is opened, the opened segment's after (both checked against the size).
struct Target {
  std::byte* base = nullptr;
  std::size_t size = 0;
  Geometry g;

  bool fits(std::uint64_t off, std::size_t width) const {
    return off <= size && size - off >= width;
  }
  std::uint64_t load(std::uint64_t off, std::size_t width) const {
    std::uint64_t v = 0;
    if (fits(off, width)) std::memcpy(&v, base + off, width);
    return v;
  }
  void store(std::uint64_t off, std::size_t width, std::uint64_t v) const {
    if (fits(off, width)) std::memcpy(base + off, &v, width);
  }
  std::uint64_t slot_offset(std::uint32_t i) const {
    return g.ring_offset + std::uint64_t(i) * g.slot_size;
  }
  std::uint64_t row_offset(std::uint32_t i) const {
    return g.members_offset + std::uint64_t(i) * sizeof(d::MemberRow);
  }
  std::uint64_t tail() const { return load(offsetof(d::SegmentHeader, tail), 8); }
};

struct Field {
  std::uint32_t offset;
  std::uint8_t width;
};

#define SHMQ_FUZZ_FIELD(member, width) \
  Field { static_cast<std::uint32_t>(offsetof(d::SegmentHeader, member)), width }
constexpr std::uint32_t kWaitFutex = offsetof(d::WaitLine, futex);
constexpr std::uint32_t kWaitBits = offsetof(d::WaitLine, waiting);
const Field kHeaderFields[] = {
    SHMQ_FUZZ_FIELD(magic, 8),
    SHMQ_FUZZ_FIELD(version, 4),
    SHMQ_FUZZ_FIELD(header_size, 4),
    SHMQ_FUZZ_FIELD(segment_size, 8),
    SHMQ_FUZZ_FIELD(slot_count, 4),
    SHMQ_FUZZ_FIELD(slot_shift, 4),
    SHMQ_FUZZ_FIELD(slot_size, 4),
    SHMQ_FUZZ_FIELD(max_message_size, 4),
    SHMQ_FUZZ_FIELD(max_members, 4),
    SHMQ_FUZZ_FIELD(max_fragments, 4),
    SHMQ_FUZZ_FIELD(members_offset, 8),
    SHMQ_FUZZ_FIELD(ring_offset, 8),
    SHMQ_FUZZ_FIELD(mode, 4),
    SHMQ_FUZZ_FIELD(state, 4),
    SHMQ_FUZZ_FIELD(name, 8),
    SHMQ_FUZZ_FIELD(retired_sent, 8),
    SHMQ_FUZZ_FIELD(retired_acked, 8),
    SHMQ_FUZZ_FIELD(lease_ms, 4),
    SHMQ_FUZZ_FIELD(max_deliveries, 4),
    SHMQ_FUZZ_FIELD(ttl_ms, 4),
    SHMQ_FUZZ_FIELD(backoff_initial_ms, 4),
    SHMQ_FUZZ_FIELD(backoff_max_ms, 4),
    SHMQ_FUZZ_FIELD(heartbeat_timeout_ms, 4),
    SHMQ_FUZZ_FIELD(claim_timeout_ms, 4),
    SHMQ_FUZZ_FIELD(flags, 4),
    {static_cast<std::uint32_t>(offsetof(d::SegmentHeader, consumers_wait)) + kWaitFutex, 4},
    {static_cast<std::uint32_t>(offsetof(d::SegmentHeader, consumers_wait)) + kWaitBits, 8},
    {static_cast<std::uint32_t>(offsetof(d::SegmentHeader, producers_wait)) + kWaitFutex, 4},
    {static_cast<std::uint32_t>(offsetof(d::SegmentHeader, producers_wait)) + kWaitBits, 8},
    {static_cast<std::uint32_t>(offsetof(d::SegmentHeader, persist_wait)) + kWaitBits, 8},
    SHMQ_FUZZ_FIELD(watchdog_counters, 8),
    SHMQ_FUZZ_FIELD(durability, 4),
    SHMQ_FUZZ_FIELD(flush_interval_ms, 4),
    SHMQ_FUZZ_FIELD(base_position, 8),
    SHMQ_FUZZ_FIELD(data_dir, 8),
};
#undef SHMQ_FUZZ_FIELD

constexpr std::uint32_t kCursorOffsets[] = {
    offsetof(d::SegmentHeader, tail), offsetof(d::SegmentHeader, dispatch),
    offsetof(d::SegmentHeader, requeue_epoch), offsetof(d::SegmentHeader, watchdog),
    offsetof(d::SegmentHeader, persisted)};
constexpr std::uint32_t kDispatch = offsetof(d::SegmentHeader, dispatch);
constexpr std::uint32_t kRequeueEpoch = offsetof(d::SegmentHeader, requeue_epoch);

struct Record {
  std::uint8_t kind, a, b, c;
  std::uint64_t v;
};

std::uint64_t width_mask(std::size_t width) {
  return width >= 8 ? UINT64_MAX : (std::uint64_t{1} << (8 * width)) - 1;
}

// A pid for a member row: ours (alive), 1 (alive, another start time), one above any
// pid_max (dead), or any.
std::uint32_t pick_pid(std::uint64_t v) {
  switch (v % 4) {
    case 0: return static_cast<std::uint32_t>(::getpid());
    case 1: return 1;
    case 2: return 0x3ffffff0u;
    default: return static_cast<std::uint32_t>(v >> 2);
  }
}

// Applies one write record. Returns false if it wrote anything but the dispatch or
// requeue_epoch cursors (the writes the library promises to survive with full liveness).
bool apply_write(const Target& t, const Record& r) {
  const Geometry& g = t.g;
  const std::uint64_t v = r.v;
  const std::uint64_t n = g.slot_count;
  const std::uint64_t alias = std::uint64_t{1} << (d::kLapBits + g.slot_shift);
  const std::uint64_t now = d::monotonic_coarse_ns();
  switch (r.kind % 8) {
    case 0: {  // a header field: raw, small, nudged, or a boundary value
      const Field f = kHeaderFields[r.a % std::size(kHeaderFields)];
      const std::uint64_t cur = t.load(f.offset, f.width);
      std::uint64_t x = v;
      switch (r.c % 4) {
        case 1: x = v % 16; break;
        case 2: x = cur + static_cast<std::uint64_t>(static_cast<std::int8_t>(v)); break;
        case 3: {
          const std::uint64_t edges[] = {0, 1, UINT64_MAX, std::uint64_t{1} << (v % 64)};
          x = edges[(v >> 8) % 4];
          break;
        }
        default: break;
      }
      t.store(f.offset, f.width, x & width_mask(f.width));
      return false;
    }
    case 1: {  // a cursor, placed relative to the tail
      const std::uint32_t off = kCursorOffsets[r.a % std::size(kCursorOffsets)];
      const std::uint64_t tail = t.tail();
      const auto small = static_cast<std::uint64_t>(static_cast<std::int16_t>(v));
      std::uint64_t x = v;
      switch (r.b % 8) {
        case 1: x = tail + small; break;
        case 2: x = t.load(kDispatch, 8) + small; break;
        case 3: x = tail + alias * (1 + v % 4); break;
        case 4: x = tail - n - v % 16; break;
        case 5: x = UINT64_MAX - v % 16; break;
        case 6: x = (std::uint64_t{1} << 62) | (v & 0xff); break;
        case 7: x = tail - alias * (1 + v % 2) + (small & 0xff); break;
        default: break;
      }
      t.store(off, 8, x);
      return off == kDispatch || off == kRequeueEpoch;
    }
    case 2: {  // a member row field
      if (g.max_members == 0) return false;
      const std::uint64_t row = t.row_offset(r.a % g.max_members);
      const std::uint32_t field = r.b % 8;  // state, start_time, heartbeat, counters...
      const std::uint64_t off = row + 8 * field;
      std::uint64_t x = v;
      if (field == 0 && r.c % 4 != 0) {
        const std::uint64_t cur = t.load(off, 8);
        const auto role = static_cast<d::Role>((v >> 8) % 6);
        switch (r.c % 4) {
          case 1:
            x = d::member_state(static_cast<d::MemberStatus>(v % 5), role, pick_pid(v >> 16),
                                static_cast<std::uint32_t>(v >> 48));
            break;
          case 2:
            x = d::member_state(d::MemberStatus::leaving, d::member_role(cur), d::member_pid(cur),
                                d::member_generation(cur));
            break;
          default: x = 0; break;  // free
        }
      } else if (field == 1 && r.c % 2 == 1) {
        x = v % 2 == 0 ? 0 : d::process_start_time(::getpid()) + (v >> 1) % 3;
      } else if (field == 2 && r.c % 2 == 1) {
        x = now - std::min(now, (v % 4096) * 1'000'000);  // a heartbeat up to 4 s old
      }
      t.store(off, 8, x);
      return false;
    }
    case 3: {  // a slot word built from lap (near the slot's own), state, owner, fragments
      const std::uint32_t i = r.a % g.slot_count;
      const std::uint64_t cur = t.load(t.slot_offset(i), 8);
      const std::uint64_t lap = d::word_lap(cur) + static_cast<std::uint64_t>((r.b % 7) - 3);
      const auto state = static_cast<d::SlotState>(r.c % 16);  // 11..15: no such state
      const std::uint32_t owner = (v & 0x100) != 0
                                      ? d::kNoOwner
                                      : static_cast<std::uint32_t>(v & 0xff) % (g.max_members + 1);
      std::uint32_t aux;
      switch ((v >> 9) % 4) {
        case 0: aux = static_cast<std::uint32_t>(v >> 16) & 0xfff; break;
        case 1: aux = g.max_fragments + ((v >> 16) & 1); break;
        default: aux = static_cast<std::uint32_t>((v >> 16) % 5); break;
      }
      t.store(t.slot_offset(i), 8, d::make_word(lap, state, owner, aux));
      return false;
    }
    case 4: {  // a slot word, raw
      t.store(t.slot_offset(r.a % g.slot_count), 8, v);
      return false;
    }
    case 5: {  // a slot header field: position, id, length, delivery count, times
      const std::uint32_t i = r.a % g.slot_count;
      const std::uint64_t slot = t.slot_offset(i);
      const std::uint64_t pos = (d::word_lap(t.load(slot, 8)) << g.slot_shift) | i;
      const auto small = static_cast<std::uint64_t>(static_cast<std::int8_t>(v));
      const bool rel = r.c % 2 == 1;
      switch (r.b % 8) {
        case 0: t.store(slot + offsetof(d::SlotHeader, position), 8, rel ? pos + small : v); break;
        case 1: t.store(slot + offsetof(d::SlotHeader, id), 8, v); break;
        case 2:
          t.store(slot + offsetof(d::SlotHeader, length), 4,
                  rel ? v % (2 * std::uint64_t(g.max_message_size) + 2) : v & 0xffffffff);
          break;
        case 3:
          t.store(slot + offsetof(d::SlotHeader, delivery_count), 4,
                  rel ? (v % 2 == 0 ? v % 8 : 0xffffffff) : v & 0xffffffff);
          break;
        case 4:
          t.store(slot + offsetof(d::SlotHeader, enqueued_ns), 8,
                  rel ? now + (v % 8192 - 4096) * 1'000'000 : v);
          break;
        case 5: t.store(slot + offsetof(d::SlotHeader, origin), 8, v); break;
        case 6:
          t.store(slot + offsetof(d::SlotHeader, deadline_ns), 8,
                  rel ? now + (v % 8192 - 4096) * 1'000'000 : v);
          break;
        default: t.store(slot + offsetof(d::SlotHeader, map_word), 8, v); break;
      }
      return false;
    }
    case 6: {  // 8 raw bytes anywhere
      if (t.size == 0) return false;
      const std::uint64_t off = (r.a | (r.b << 8) | (std::uint64_t(r.c) << 16)) % t.size;
      const std::size_t w = std::min<std::size_t>(8, t.size - off);
      std::memcpy(t.base + off, &v, w);
      return false;
    }
    default: {  // one raw byte anywhere (payloads, single bytes of fields)
      if (t.size == 0) return false;
      const std::uint64_t off = (r.a | (r.b << 8) | (std::uint64_t(r.c) << 16)) % t.size;
      t.base[off] = static_cast<std::byte>(v);
      return false;
    }
  }
}

// --- Operations ---------------------------------------------------------------------------

constexpr std::size_t kConsumers = 2, kHandles = 4;

// The processes' view of the queue while one input runs. Declared in destruction order
// reversed: reservations go first (they release claims), the queue last.
struct Session {
  std::optional<shmq::Queue> queue;
  std::shared_ptr<d::Segment> seg;
  std::optional<shmq::Watchdog> watchdog;
  std::optional<shmq::Producer> producer;
  std::array<std::optional<shmq::Consumer>, kConsumers> consumers;
  std::array<std::array<shmq::Message, kHandles>, kConsumers> held;
  shmq::Reservation reservation;
  std::vector<std::byte> payload;
  std::uint64_t sends = 0;
  // No write so far but to the dispatch and requeue_epoch cursors: the ring's contents are
  // what honest processes wrote.
  bool honest = true;

  const std::byte* base() const { return reinterpret_cast<const std::byte*>(&seg->header()); }

  Target target() const {
    return Target{const_cast<std::byte*>(base()), seg->mapped_size(), geometry_of(*seg)};
  }

  // A message of `size` bytes: consecutive byte values from a per-send start (see intact()).
  void fill(std::span<std::byte> out) {
    for (std::size_t i = 0; i < out.size(); ++i) out[i] = static_cast<std::byte>(sends + i);
    ++sends;
  }
  shmq::Bytes make_payload(std::size_t size) {
    payload.resize(size);
    fill(payload);
    return payload;
  }

  std::size_t size_from(std::uint64_t v) const { return v % (seg->max_message_size() + 2); }
};

// A message an honest process wrote: one of the snapshots' histories, or one this process
// sent (consecutive byte values). A message torn, mixed with another, or read from the wrong
// slots is none of these.
bool intact(std::span<const std::byte> m) {
  const std::string_view text(reinterpret_cast<const char*>(m.data()), m.size());
  for (const std::string_view known : {"p0", "p3", "p4", "marker"})
    if (text == known) return true;
  if (!text.empty() && std::string_view("mabcdxqr").find(text[0]) != std::string_view::npos &&
      text.find_first_not_of(text[0]) == std::string_view::npos)
    return true;  // "m", "a", 150 x "b", ...
  for (std::size_t i = 1; i < m.size(); ++i)
    if (m[i] != static_cast<std::byte>(std::to_integer<unsigned>(m[0]) + i)) return false;
  return true;
}

void check_received(const Session& s, const shmq::Message& m) {
  FUZZ_CHECK(m.held());
  FUZZ_CHECK(m.size() <= s.seg->max_message_size());
  FUZZ_CHECK(m.delivery_count() >= 1);
  const std::byte* p = m.data().data();
  const std::byte* ring = reinterpret_cast<const std::byte*>(&s.seg->slot(0));
  const std::byte* end = s.base() + s.seg->mapped_size();
  if (m.size() != 0 && p >= s.base() && p < end) {
    // Zero-copy: the payload of one slot, inside the ring.
    FUZZ_CHECK(p >= ring + d::kSlotHeaderSize);
    FUZZ_CHECK(m.size() <= s.seg->payload_size());
    FUZZ_CHECK(static_cast<std::size_t>(end - p) >= m.size());
  }
  if (s.honest) FUZZ_CHECK(intact(m.data()));
  // Every byte is readable (ASan checks a copy's bounds, the mapping's end faults).
  std::uint8_t sum = 0;
  for (std::byte b : m.data()) sum ^= std::to_integer<std::uint8_t>(b);
  volatile std::uint8_t sink = sum;
  (void)sink;
}

void after_receive(const Session& s, Status st, const shmq::Message& m) {
  if (st == Status::ok) check_received(s, m);
}

// Queue::stats(), and with `render` what `shmqctl stat` and `stat --json` print from it.
void check_stats(const Session& s, bool render) {
  shmq::QueueStats st;
  {
    Bounded b("Queue::stats");
    st = s.queue->stats();
  }
  FUZZ_CHECK(st.slot_count == s.seg->slot_count());
  FUZZ_CHECK(st.ready + st.in_flight + st.claimed + st.delayed <= st.slot_count);
  FUZZ_CHECK(st.free_slots <= st.slot_count);
  FUZZ_CHECK(st.members.size() <= st.max_members);
  for (const auto& m : st.members) FUZZ_CHECK(m.index < st.max_members);
  if (!render) return;
  Bounded b("shmqctl stat text and JSON");
  const std::string text = shmqctl::stat_text(*s.queue, st, std::nullopt);
  const std::string json = shmqctl::dump_json(shmqctl::stat_json(*s.queue, st, std::nullopt));
  FUZZ_CHECK(!text.empty() && !json.empty());
}

void check_browse(const Session& s, std::size_t max_count, bool in_flight, std::size_t max_bytes) {
  std::vector<shmq::BrowsedMessage> got;
  {
    Bounded b("Queue::browse");
    got = s.queue->browse(max_count, in_flight, max_bytes);
  }
  FUZZ_CHECK(got.size() <= max_count);
  FUZZ_CHECK(got.size() <= s.seg->slot_count());
  for (const auto& m : got) {
    FUZZ_CHECK(m.size <= s.seg->max_message_size());
    FUZZ_CHECK(m.data.size() <= std::min(m.size, max_bytes));
  }
}

// Short: long enough to get past the spin into the futex sleep and its re-check, short enough
// for hundreds of inputs a second.
constexpr std::chrono::nanoseconds kTimeouts[] = {0ns, 20us, 100us, 500us};

void consumer_op(Session& s, const Record& r) {
  auto& c = s.consumers[r.a % kConsumers];
  if (!c) return;
  auto& handles = s.held[r.a % kConsumers];
  shmq::Message& m = handles[r.b % kHandles];
  switch (r.kind % 16) {
    case 8: {
      Status st;
      {
        Bounded b("try_receive");
        st = c->try_receive(m);
      }
      after_receive(s, st, m);
      break;
    }
    case 9: {
      const auto timeout = kTimeouts[r.c % std::size(kTimeouts)];
      Status st;
      {
        Bounded b("receive_for", timeout);
        st = c->receive_for(m, timeout);
      }
      // evicted: a member row scribbled to another generation (or freed) fences the handle.
      FUZZ_CHECK(st == Status::ok || st == Status::timeout || st == Status::interrupted ||
                 st == Status::closed || st == Status::invalid || st == Status::evicted);
      after_receive(s, st, m);
      break;
    }
    case 10: {
      Bounded b("ack / nack / extend_lease");
      switch (r.c % 6) {
        case 0: (void)c->ack(m); break;
        case 1: (void)c->nack(m); break;
        case 2: (void)c->nack_after(m, std::chrono::milliseconds(r.v % 5)); break;
        case 3: (void)c->nack(m, false); break;
        case 4: (void)c->extend_lease(m, std::chrono::milliseconds(r.v % 100)); break;
        default: (void)c->ack(std::span<shmq::Message>(handles)); break;
      }
      break;
    }
    default: {  // 14
      switch (r.c % 4) {
        case 0: {
          Bounded b("release_all");
          (void)c->release_all();
          break;
        }
        case 1: {
          // Into the handles that hold nothing.
          std::vector<shmq::Message> batch(1 + r.v % 3);
          const auto timeout = kTimeouts[(r.v >> 8) % std::size(kTimeouts)];
          std::size_t got;
          {
            Bounded b("receive_batch", timeout);
            got = c->receive_batch(batch, timeout);
          }
          FUZZ_CHECK(got <= batch.size());
          for (std::size_t i = 0; i < got; ++i) {
            check_received(s, batch[i]);
            for (auto& h : handles)
              if (!h.held()) {
                h = std::move(batch[i]);
                break;
              }
          }
          // Handles with no room left are acked (honest) rather than dropped.
          for (std::size_t i = 0; i < got; ++i)
            if (batch[i].held()) (void)c->ack(batch[i]);
          break;
        }
        case 2: {
          // An unbounded receive() must answer interrupt().
          c->interrupt();
          Status st;
          {
            Bounded b("receive after interrupt");
            st = c->receive(m);
          }
          c->clear_interrupt();
          FUZZ_CHECK(st == Status::ok || st == Status::interrupted || st == Status::invalid ||
                     st == Status::closed || st == Status::evicted);
          after_receive(s, st, m);
          break;
        }
        default: {
          // The consumer closes (returning what it holds) and a new one registers.
          Bounded b("consumer close and reopen");
          for (auto& h : handles) h = shmq::Message();
          c.reset();
          if (auto nc = s.queue->consumer(); nc.ok()) c.emplace(std::move(nc.value()));
          break;
        }
      }
      break;
    }
  }
}

void producer_op(Session& s, const Record& r) {
  if (!s.producer) return;
  shmq::Producer& p = *s.producer;
  const bool sync = s.seg->durability() == shmq::Durability::sync;
  if (r.kind % 16 == 15) {
    switch (r.c % 3) {
      case 0: {
        // An unbounded send() must answer interrupt() (a full ring, or a sync queue
        // without a persister, would block it for ever).
        p.interrupt();
        {
          Bounded b("send after interrupt");
          (void)p.send(s.make_payload(s.size_from(r.v)));
        }
        p.clear_interrupt();
        break;
      }
      case 1: {
        Bounded b("producer close and reopen");
        s.reservation = shmq::Reservation();
        s.producer.reset();
        if (auto np = s.queue->producer(); np.ok()) s.producer.emplace(std::move(np.value()));
        break;
      }
      default: p.heartbeat(); break;
    }
    return;
  }
  switch (r.c % 6) {
    case 0: {
      // try_send waits for a sync confirmation at most kTrySendConfirmWait.
      Bounded b("try_send", shmq::Producer::kTrySendConfirmWait);
      (void)p.try_send(s.make_payload(s.size_from(r.v)));
      break;
    }
    case 1: {
      const auto timeout = kTimeouts[(r.v >> 32) % std::size(kTimeouts)];
      Bounded b("send_for", timeout);
      (void)p.send_for(s.make_payload(s.size_from(r.v)), timeout);
      break;
    }
    case 2:
    case 3: {
      // Reserve a slot; commit it now, or keep it open (until the next reservation, the
      // producer's close or the end of the input).
      Bounded b("reserve / commit");
      s.reservation = shmq::Reservation();
      const std::size_t size = r.v % (s.seg->payload_size() + 2);
      if (p.try_reserve(size, s.reservation) != Status::ok) break;
      s.fill(s.reservation.data());
      if (r.c % 6 == 2) {
        if (sync) p.interrupt();  // commit waits for the confirmation
        (void)p.commit(s.reservation);
        p.clear_interrupt();
      }
      break;
    }
    case 4: {
      const auto timeout = kTimeouts[(r.v >> 32) % std::size(kTimeouts)];
      std::vector<std::vector<std::byte>> copies;
      std::vector<shmq::Bytes> batch;
      for (std::uint64_t i = 0; i < 1 + r.v % 3; ++i) {
        const shmq::Bytes b = s.make_payload(s.size_from(r.v >> (8 * i)));
        copies.emplace_back(b.begin(), b.end());
      }
      for (const auto& c : copies) batch.emplace_back(c);
      Status st = Status::ok;
      std::size_t sent;
      {
        Bounded b("send_batch", timeout);
        sent = p.send_batch(batch, timeout, &st);
      }
      FUZZ_CHECK(sent <= batch.size());
      break;
    }
    default: {
      Bounded b("abandon reservation");
      s.reservation = shmq::Reservation();
      break;
    }
  }
}

void other_op(Session& s, const Record& r) {
  switch (r.kind % 16) {
    case 12: {  // a watchdog tick (attached on first use)
      if (!s.watchdog) {
        Bounded b("Watchdog::attach");
        if (auto w = shmq::Watchdog::attach(*s.queue); w.ok())
          s.watchdog.emplace(std::move(w.value()));
      }
      if (!s.watchdog) return;
      Bounded b("Watchdog::tick");
      (void)s.watchdog->tick();
      break;
    }
    default: {  // 13: what readers see
      switch (r.c % 3) {
        case 0: check_stats(s, true); break;
        case 1:
          check_browse(s, r.v % 10, (r.v >> 8) % 2 == 1,
                       (r.v >> 16) % 2 == 0 ? SIZE_MAX : (r.v >> 16) % 200);
          break;
        default: {
          // Another process opens the queue now: the header is validated again.
          const d::SegmentHeader& h = s.seg->header();
          if (h.version.load() == 0) break;  // an opener waits for a creator (by design)
          Bounded b("Queue::open of a live segment");
          if (auto q = shmq::Queue::open(s.queue->name()); q.ok()) {
            FUZZ_CHECK(q->segment()->mapped_size() == s.seg->mapped_size());
            (void)q->stats();
          }
          break;
        }
      }
      break;
    }
  }
}

void run_op(Session& s, const Record& r) {
  switch (r.kind % 16) {
    case 8:
    case 9:
    case 10:
    case 14: consumer_op(s, r); break;
    case 11:
    case 15: producer_op(s, r); break;
    default: other_op(s, r); break;
  }
}

// Liveness once the writes stopped, where the library promises it: everything this process
// holds is acked, then a message is sent and must be received (after whatever else is ready).
void check_delivery_after_writes(Session& s) {
  if (!s.producer || !s.consumers[0]) return;
  s.reservation = shmq::Reservation();  // an open claim would hold every later position back
  for (std::size_t i = 0; i < kConsumers; ++i) {
    if (!s.consumers[i]) continue;
    s.consumers[i]->clear_interrupt();
    for (auto& m : s.held[i])
      if (m.held()) (void)s.consumers[i]->ack(m);
  }
  s.producer->clear_interrupt();
  const std::uint64_t marker = 0x6d61726b6572ull;  // "marker"
  // Not waiting for room: a ring full of held messages is no failure.
  if (s.producer->try_send(shmq::as_bytes("marker"), marker) != Status::ok) return;
  shmq::Consumer& c = *s.consumers[0];
  // Every other message ahead of it is received and acked first: at most the ring's worth.
  for (std::uint32_t i = 0; i < s.seg->slot_count() + 2; ++i) {
    shmq::Message m;
    Status st;
    {
      Bounded b("receive_for (liveness)", 100ms);
      st = c.receive_for(m, 100ms);
    }
    if (st != Status::ok) break;
    check_received(s, m);
    const bool found = m.id() == marker;
    (void)c.ack(m);
    if (found) return;
  }
  violated("a message sent after writes to the dispatch / requeue_epoch cursors only was "
           "never received");
}

constexpr std::size_t kRecordSize = 12;

Record record_at(const std::uint8_t* p) {
  Record r{p[0], p[1], p[2], p[3], 0};
  for (int i = 7; i >= 0; --i) r.v = (r.v << 8) | p[4 + i];
  return r;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static Fixture* fixture = build_fixture();
  if (size < 2) return 0;
  const Snapshot& snap = fixture->snapshots[data[0] % fixture->snapshots.size()];

  // The file size: the snapshot's, or shorter (down to a bare header and less), or longer.
  std::size_t file_size = snap.bytes.size();
  if (data[1] >= 240) {
    const std::size_t sizes[] = {1,    2047, 2048, 4095, 4096, file_size - 1,
                                 file_size - 64, file_size + 1, file_size + 4096};
    file_size = sizes[(data[1] - 240) % std::size(sizes)];
  }

  // Writes up to the first operation go into the bytes the segment is opened from.
  std::vector<std::byte> bytes = snap.bytes;
  bytes.resize(file_size);
  bool cursors_only = file_size == snap.bytes.size();
  std::size_t at = 2;
  for (; at + kRecordSize <= size; at += kRecordSize) {
    const Record r = record_at(data + at);
    if (r.kind % 16 >= 8) break;
    cursors_only &= apply_write(Target{bytes.data(), bytes.size(), snap.geometry}, r);
  }
  // An opener waits up to 2 s for a creator to publish the version (or to size a 0-byte
  // segment): by design, and not what this target looks for.
  std::uint32_t version = 0;
  if (file_size >= offsetof(d::SegmentHeader, version) + sizeof version)
    std::memcpy(&version, bytes.data() + offsetof(d::SegmentHeader, version), sizeof version);
  if (version == 0) return 0;
  if (snap.dlq_fd >= 0) restore(snap.dlq_fd, snap.dlq_bytes, snap.dlq_bytes.size());
  restore(snap.fd, bytes, file_size);

  Session s;
  {
    Bounded b("Queue::open");
    auto q = shmq::Queue::open(snap.name);
    if (!q.ok()) return 0;  // refused: the opener's validation did its job
    s.queue.emplace(std::move(q.value()));
  }
  s.seg = s.queue->segment();
  s.honest = cursors_only;
  FUZZ_CHECK(s.seg->mapped_size() == file_size);
  {
    Bounded b("register members");
    if (auto p = s.queue->producer(); p.ok()) s.producer.emplace(std::move(p.value()));
    for (auto& c : s.consumers)
      if (auto nc = s.queue->consumer(); nc.ok()) c.emplace(std::move(nc.value()));
  }

  // Operations, and writes into the live mapping between them.
  for (; at + kRecordSize <= size; at += kRecordSize) {
    const Record r = record_at(data + at);
    if (r.kind % 16 < 8)
      s.honest &= apply_write(s.target(), r);
    else
      run_op(s, r);
  }

  // Whatever happened, readers and a last receive, send and tick still return in time.
  check_stats(s, false);
  check_browse(s, 16, true, SIZE_MAX);
  if (s.consumers[1]) {
    shmq::Message m;
    Status st;
    {
      // Long enough to get past the spin into the sleep and its full re-check.
      Bounded b("final receive_for", 100us);
      st = s.consumers[1]->receive_for(m, 100us);
    }
    after_receive(s, st, m);
  }
  if (s.honest) check_delivery_after_writes(s);
  {
    Bounded b("watchdog tick, then every handle closes");
    other_op(s, Record{12, 0, 0, 0, 0});
    s.reservation = shmq::Reservation();
    s.held = {};
    for (auto& c : s.consumers) c.reset();
    s.producer.reset();
    s.watchdog.reset();
  }
  return 0;
}
