// The scribble test (issue 12): producers, consumers and a watchdog run in their own
// processes while a hostile process maps the segment file writable and writes random and
// targeted garbage into it (cursors, slot words, slot headers, payloads, member rows, futex
// words and waiting bitmaps, geometry and policy). Asserted: no process crashes (nor, under
// ASan, reads or writes out of bounds), every process stops within a bound once told to,
// and on a checksummed queue no consumer is handed a scribbled message as valid.
//
// Every payload carries a self-check its producer computed (its id and a hash of the rest
// seeded with id and size). A consumer checks it on every delivery. A copied delivery (the
// default receive; any message that spans slots) was checked inside receive: one that fails
// its self-check on a checksummed queue is a corrupt delivery. The second consumer receives
// zero-copy: for its one-slot messages it reads the slot itself, which the hostile writer
// may change after the checksum was checked (documented: ConsumerOptions::zero_copy,
// QueueOptions::checksum); those failures are counted and reported, not held against the
// checksum.
#include <fcntl.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <functional>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "ring/slot_word.hpp"
#include "segment/layout.hpp"
#include "segment/segment.hpp"
#include "test_util.hpp"

namespace shmq {
namespace {

using namespace std::chrono_literals;
using test::ScopedQueue;

constexpr int kProducers = 2;
constexpr int kConsumers = 2;
constexpr std::uint32_t kSlots = 64;
constexpr std::uint32_t kSlotSize = 128;  // 64 payload bytes
constexpr std::uint32_t kMaxMessage = 4 * 64;
constexpr auto kScribbleFor = 3s;          // the hostile process's run
constexpr auto kExitBound = 10s;           // every process, once told to stop
constexpr std::uint64_t kWarmDeliveries = 200;  // before the hostile process starts

// Counters in a MAP_SHARED page, written by the children.
struct Shared {
  std::atomic<std::uint32_t> stop{0};
  std::atomic<std::uint64_t> sent{0};
  std::atomic<std::uint64_t> delivered{0};
  std::atomic<std::uint64_t> delivered_copied{0};  // copied and checked inside receive
  std::atomic<std::uint64_t> bad_copied{0};        // ... whose self-check failed
  std::atomic<std::uint64_t> bad_zero_copy{0};     // one-slot zero-copy self-check failures
  std::atomic<std::uint64_t> scribbles{0};
  std::atomic<std::uint64_t> delivered_at_start{0};  // when the hostile process began
  std::atomic<std::uint64_t> dead_letters{0};
};

std::uint64_t seal(std::uint64_t id, std::size_t size, const std::byte* rest) {
  return XXH3_64bits_withSeed(rest, size - 16, id ^ size);
}

// The message `id` of `size` bytes (16..kMaxMessage): id, self-check, then bytes from id.
std::vector<std::byte> make_message(std::uint64_t id, std::size_t size) {
  std::vector<std::byte> m(size);
  std::mt19937_64 rng(id);
  for (std::size_t i = 16; i < size; ++i) m[i] = std::byte(rng() & 0xff);
  const std::uint64_t check = seal(id, size, m.data() + 16);
  std::memcpy(m.data(), &id, 8);
  std::memcpy(m.data() + 8, &check, 8);
  return m;
}

bool self_check_ok(const Message& m) {
  const auto d = m.data();
  if (d.size() < 16) return false;
  std::uint64_t id = 0, check = 0;
  std::memcpy(&id, d.data(), 8);
  std::memcpy(&check, d.data() + 8, 8);
  return id == m.id() && check == seal(id, d.size(), d.data() + 16);
}

// A member whose row the hostile process wrote over may be evicted (Status::evicted): it
// registers again, as an application would.
int run_producer(Queue& q, Shared& sh, int index) {
  auto p = q.producer();
  if (!p.ok()) return 2;
  std::mt19937_64 rng(1000 + index);
  for (std::uint64_t seq = 1; sh.stop.load() == 0; ++seq) {
    const std::uint64_t id = (std::uint64_t(index + 1) << 48) | seq;
    // Half fit one slot, half span two to four.
    const std::size_t size = seq % 2 == 0 ? 16 + rng() % 49 : 65 + rng() % (kMaxMessage - 64);
    const auto m = make_message(id, size);
    const Status s = p->send_for(Bytes(m), 50ms, id);
    if (s == Status::ok) sh.sent.fetch_add(1);
    if (s == Status::evicted)
      if (auto again = q.producer(); again.ok()) p = std::move(again);
  }
  return 0;
}

int run_consumer(Queue& q, Shared& sh, bool zero_copy, int warm_fd) {
  auto c = q.consumer({.zero_copy = zero_copy});
  if (!c.ok()) return 2;
  Message m;
  bool warned = warm_fd < 0;
  while (sh.stop.load() == 0) {
    if (const Status s = c->receive_for(m, 50ms); s != Status::ok) {
      if (s == Status::evicted)
        if (auto again = q.consumer({.zero_copy = zero_copy}); again.ok()) c = std::move(again);
      continue;
    }
    const bool copied = !zero_copy || m.size() > q.segment()->payload_size();
    const bool ok = self_check_ok(m);
    (void)c->ack(m);  // lease_lost and the like are fine here
    const std::uint64_t n = sh.delivered.fetch_add(1) + 1;
    if (copied) sh.delivered_copied.fetch_add(1);
    if (!ok) (copied ? sh.bad_copied : sh.bad_zero_copy).fetch_add(1);
    if (!warned && n >= kWarmDeliveries) {
      const char go = 'g';
      if (::write(warm_fd, &go, 1) != 1) return 3;
      warned = true;
    }
  }
  return 0;
}

// Takes the dead letters (a full dead-letter queue would keep corrupt messages in the ring,
// delayed, until it has room).
int run_dlq_drainer(const std::string& name, Shared& sh) {
  auto q = Queue::open(Queue::dead_letter_name(name));
  if (!q.ok()) return 2;
  auto c = q->consumer();
  if (!c.ok()) return 3;
  Message m;
  while (sh.stop.load() == 0) {
    if (c->receive_for(m, 50ms) != Status::ok) continue;
    if (!parse_dead_letter(m.data())) return 4;  // the DLQ is not scribbled: always well-formed
    sh.dead_letters.fetch_add(1);
    (void)c->ack(m);
  }
  return 0;
}

// True if this process has an active watchdog row in `q` (the hostile process may write
// over it: the watchdog then finds its row gone and stops acting).
bool has_watchdog_row(Queue& q) {
  const detail::Segment& seg = *q.segment();
  for (std::uint32_t i = 0; i < seg.max_members(); ++i) {
    const std::uint64_t st = seg.member(i).state.load(std::memory_order_acquire);
    if (detail::member_status(st) == detail::MemberStatus::active &&
        detail::member_role(st) == detail::Role::watchdog &&
        detail::member_pid(st) == static_cast<std::uint32_t>(::getpid()))
      return true;
  }
  return false;
}

// An explicit watchdog (this process's embedded one is off), attached again whenever its row
// was taken, until the stop byte comes.
int run_watchdog(Queue& q, int stop_fd) {
  std::optional<Watchdog> w;
  for (;;) {
    if (!w || !has_watchdog_row(q)) {
      w.reset();
      if (auto a = Watchdog::attach(q, {.interval = 5ms}); a.ok()) {
        w.emplace(std::move(a.value()));
        w->start();
      }
    }
    pollfd p{stop_fd, POLLIN, 0};
    if (::poll(&p, 1, 100) != 0) break;  // the stop byte (or an error): done
  }
  return 0;  // the destructor stops and closes it
}

// Writes garbage into /dev/shm/shmq.<name> for kScribbleFor, once `go_fd` says the queue is
// busy. Opens and maps the file itself, like any process that may write it.
int run_hostile(const std::string& name, int go_fd, Shared& sh) {
  char b;
  if (::read(go_fd, &b, 1) != 1) return 2;
  sh.delivered_at_start.store(sh.delivered.load());
  const std::string path = "/dev/shm/" + detail::Segment::object_name(name);
  const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return 3;
  struct stat st {};
  if (::fstat(fd, &st) != 0) return 4;
  const auto size = static_cast<std::size_t>(st.st_size);
  void* map = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ::close(fd);
  if (map == MAP_FAILED) return 5;
  auto* base = static_cast<std::byte*>(map);
  auto& h = *static_cast<detail::SegmentHeader*>(map);
  const auto g = detail::compute_geometry(kSlots, kSlotSize, QueueOptions{}.max_members);
  auto* members = reinterpret_cast<detail::MemberRow*>(base + g.members_offset);
  auto slot = [&](std::uint64_t i) -> detail::SlotHeader& {
    return *reinterpret_cast<detail::SlotHeader*>(base + g.ring_offset + (i % kSlots) * kSlotSize);
  };
  std::mt19937_64 rng(0x5c21bb1e);
  auto near = [&](std::uint64_t v) { return v + (rng() % 2 ? rng() % 200 : -(rng() % 200)); };
  auto wild = [&](std::uint64_t v) { return rng() % 2 ? rng() : near(v); };
  // Two phases. First, writes the queue heals from by itself (cursors, message headers and
  // payloads, futex words): messages keep flowing, many of them scribbled, which is what the
  // checksum is for. Then anything, anywhere (slot words, member rows, geometry and policy
  // too), which may leave the ring wedged (a slot word laps away from its neighbours, a
  // message delayed for ever): what is asserted then is no crash, no out-of-bounds access,
  // no call outliving its timeout, and still no corrupt delivery.
  const auto start = std::chrono::steady_clock::now();
  const auto anything_from = start + kScribbleFor * 2 / 3;
  const auto until = start + kScribbleFor;
  std::uint64_t n = 0;
  constexpr auto relaxed = std::memory_order_relaxed;
  for (auto now = start; now < until; now = std::chrono::steady_clock::now()) {
    const bool anything = now >= anything_from;
    for (int i = 0; i < 8; ++i, ++n) {
      const std::uint64_t what = rng() % 10;
      if (!anything && (what == 0 || what == 4 || what == 7 || what == 9)) continue;
      switch (what) {
        case 0: {  // anywhere, 8 aligned bytes
          const std::size_t off = (rng() % (size / 8)) * 8;
          const std::uint64_t v = rng();
          std::memcpy(base + off, &v, 8);
          break;
        }
        case 1:
          h.tail.value.store(wild(h.tail.value.load(relaxed)), relaxed);
          break;
        case 2:
          h.dispatch.value.store(wild(h.dispatch.value.load(relaxed)), relaxed);
          break;
        case 3: {  // the other words of the header's cursor lines
          std::atomic<std::uint64_t>* w[] = {&h.requeue_epoch.value, &h.watchdog.value,
                                             &h.persisted.value};
          auto& t = *w[rng() % 3];
          t.store(rng() % 2 ? rng() % 300 : rng(), relaxed);
          break;
        }
        case 4: {  // a slot word: random, or well-formed with a nearby lap and any state
          auto& w = slot(rng()).word;
          const std::uint64_t lap = detail::word_lap(w.load(relaxed)) + rng() % 3 - 1;
          w.store(rng() % 4 == 0
                      ? rng()
                      : detail::make_word(lap, detail::SlotState(rng() % 10),
                                          rng() % 2 ? detail::kNoOwner
                                                    : detail::owner_id(rng() % 70, rng() % 4),
                                          rng() % 3 == 0 ? rng() % 4096 : rng() % 5),
                  relaxed);
          break;
        }
        case 5: {  // a slot header field
          auto& s = slot(rng());
          switch (rng() % 7) {
            case 0: s.length.store(rng() % 3 == 0 ? std::uint32_t(rng()) : rng() % 300, relaxed); break;
            case 1: s.id.fetch_xor(std::uint64_t{1} << (rng() % 64), relaxed); break;
            case 2: s.position.store(wild(s.position.load(relaxed)), relaxed); break;
            case 3:  // a checksummed queue's checksum word (else payload bytes)
              reinterpret_cast<std::atomic<std::uint64_t>*>(reinterpret_cast<std::byte*>(&s) +
                                                            detail::kSlotHeaderSize)
                  ->fetch_xor(rng(), relaxed);
              break;
            case 5: s.map_word.fetch_xor(std::uint64_t{1} << (rng() % 64), relaxed); break;
            case 4: s.origin.store(rng() % 2 ? rng() : 0, relaxed); break;
            default: s.deadline_ns.store(rng() % 2 ? rng() : 0, relaxed); break;
          }
          break;
        }
        case 6: {  // payload bytes (and a checksummed queue's checksum word)
          auto* p = reinterpret_cast<std::byte*>(&slot(rng())) + detail::kSlotHeaderSize;
          p[rng() % (kSlotSize - detail::kSlotHeaderSize)] ^= std::byte(1 + rng() % 255);
          break;
        }
        case 7: {  // a member row
          auto& m = members[rng() % QueueOptions{}.max_members];
          switch (rng() % 3) {
            case 0:
              m.state.store(rng() % 2 ? rng()
                                      : detail::member_state(detail::MemberStatus(rng() % 5),
                                                             detail::Role(rng() % 6),
                                                             std::uint32_t(rng() % 70000),
                                                             std::uint32_t(rng() % 4)),
                            relaxed);
              break;
            case 1: m.heartbeat_ns.store(rng() % 2 ? rng() : 0, relaxed); break;
            default: m.start_time.store(rng() % 2 ? rng() : 0, relaxed); break;
          }
          break;
        }
        case 8: {  // futex words and waiting bitmaps
          detail::WaitLine* lines[] = {&h.consumers_wait, &h.producers_wait, &h.persist_wait};
          auto& l = *lines[rng() % 3];
          if (rng() % 2)
            l.futex.store(std::uint32_t(rng()), relaxed);
          else
            l.waiting[rng() % 4].store(rng(), relaxed);
          break;
        }
        default: {  // geometry and policy (copied by openers; policy re-read where used)
          switch (rng() % 8) {
            case 0: h.slot_count = std::uint32_t(rng()); break;
            case 1: h.slot_size = std::uint32_t(rng()); break;
            case 2: h.max_message_size = std::uint32_t(rng()); break;
            case 3: h.max_fragments = std::uint32_t(rng()); break;
            case 4: h.lease_ms.store(rng() % 2 ? std::uint32_t(rng()) : rng() % 50, relaxed); break;
            case 5: h.max_deliveries.store(std::uint32_t(rng() % 5), relaxed); break;
            case 6: h.ttl_ms.store(rng() % 4 == 0 ? rng() % 50 : 0, relaxed); break;
            default: h.base_position = rng(); break;
          }
          break;
        }
      }
    }
    // Pacing, not synchronisation (nothing waits for it): at full speed the queue would see
    // little but garbage; at a few tens of thousands of writes a second, messages keep
    // flowing between them, through whatever state the writes leave.
    std::this_thread::sleep_for(100us);
  }
  sh.scribbles.store(n);
  ::munmap(map, size);
  return 0;
}

struct Outcome {
  bool all_exited = true;
  std::uint64_t sent = 0, delivered = 0, delivered_copied = 0, bad_copied = 0, bad_zero_copy = 0,
                scribbles = 0, delivered_at_start = 0, dead_letters = 0;
};

Outcome run(bool checksum) {
  QueueOptions o;
  o.slot_count = kSlots;
  o.slot_size = kSlotSize;
  o.max_message_size = kMaxMessage;
  o.lease = 200ms;
  o.claim_timeout = 200ms;
  o.checksum = checksum;
  ScopedQueue q(checksum ? "scribble-ck" : "scribble", o);
  void* page = ::mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                      -1, 0);
  if (page == MAP_FAILED) {
    ADD_FAILURE() << "mmap";
    return {};
  }
  auto* sh = new (page) Shared();
  int go[2], stop[2];
  if (::pipe(go) != 0 || ::pipe(stop) != 0) {
    ADD_FAILURE() << "pipe";
    return {};
  }
  std::vector<std::pair<std::string, pid_t>> children;
  auto child = [&](std::string what, const std::function<int()>& body) {
    children.emplace_back(std::move(what), test::spawn(body));
  };
  // Producers and consumers run the library's embedded watchdogs (elected among all), the
  // watchdog process an explicit one instead.
  child("watchdog", [&] {
    set_embedded_watchdog(false);
    ::close(stop[1]);
    return run_watchdog(*q, stop[0]);
  });
  for (int i = 0; i < kConsumers; ++i)
    child("consumer " + std::to_string(i),
          [&, i] { return run_consumer(*q, *sh, /*zero_copy=*/i == 1, i == 0 ? go[1] : -1); });
  for (int i = 0; i < kProducers; ++i)
    child("producer " + std::to_string(i), [&, i] { return run_producer(*q, *sh, i); });
  child("dead-letter drainer", [&] { return run_dlq_drainer(q.name(), *sh); });
  const pid_t hostile = test::spawn([&] { return run_hostile(q.name(), go[0], *sh); });
  ::close(go[0]);
  ::close(go[1]);
  ::close(stop[0]);

  Outcome out;
  // The hostile process waits for the warm-up, then scribbles for kScribbleFor.
  const int h = test::wait_bounded(hostile, kScribbleFor + 30s);
  EXPECT_EQ(h, 0) << "the hostile process (warm-up not reached?)";
  sh->stop.store(1);
  const char stop_byte = 's';
  EXPECT_EQ(::write(stop[1], &stop_byte, 1), 1);  // the watchdog process's read returns
  ::close(stop[1]);
  for (const auto& [what, pid] : children) {
    const int rc = test::wait_bounded(pid, kExitBound);
    if (rc != 0) out.all_exited = false;
    EXPECT_EQ(rc, 0) << what << (rc == -1 ? ": still running " : ": exited with ")
                     << "(-1: killed after the bound; 128+n: signal n)";
  }
  out.sent = sh->sent.load();
  out.delivered = sh->delivered.load();
  out.delivered_copied = sh->delivered_copied.load();
  out.bad_copied = sh->bad_copied.load();
  out.bad_zero_copy = sh->bad_zero_copy.load();
  out.scribbles = sh->scribbles.load();
  out.delivered_at_start = sh->delivered_at_start.load();
  out.dead_letters = sh->dead_letters.load();
  // (The segment's own counters are not shown: the hostile process writes over them too.)
  std::printf("[ scribble ] checksum %s: %llu scribbles; %llu sent, %llu delivered (%llu while "
              "scribbled; %llu copied), %llu dead letters; self-check failures: %llu copied, "
              "%llu zero-copy\n",
              checksum ? "on" : "off", static_cast<unsigned long long>(out.scribbles),
              static_cast<unsigned long long>(out.sent),
              static_cast<unsigned long long>(out.delivered),
              static_cast<unsigned long long>(out.delivered - out.delivered_at_start),
              static_cast<unsigned long long>(out.delivered_copied),
              static_cast<unsigned long long>(out.dead_letters),
              static_cast<unsigned long long>(out.bad_copied),
              static_cast<unsigned long long>(out.bad_zero_copy));
  sh->~Shared();
  ::munmap(page, sizeof(Shared));
  return out;
}

TEST(Scribble, ChecksummedQueueSurvivesAHostileWriterAndDeliversNothingCorrupt) {
  const Outcome o = run(/*checksum=*/true);
  EXPECT_TRUE(o.all_exited);
  EXPECT_GE(o.delivered, kWarmDeliveries);
  EXPECT_GT(o.scribbles, 0u);
  EXPECT_GT(o.delivered_copied, 0u);
  EXPECT_EQ(o.bad_copied, 0u) << "a scribbled message was delivered as valid";
}

TEST(Scribble, UnchecksummedQueueSurvivesAHostileWriter) {
  const Outcome o = run(/*checksum=*/false);
  EXPECT_TRUE(o.all_exited);
  EXPECT_GE(o.delivered, kWarmDeliveries);
  EXPECT_GT(o.scribbles, 0u);
}

}  // namespace
}  // namespace shmq
