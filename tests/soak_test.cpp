// Soak: producers and consumers in real processes; every few hundred milliseconds one of them
// is killed with SIGKILL (and restarted) or stopped with SIGSTOP for up to 1.5 s; processes
// also come and go by themselves (member-row churn). No process runs a watchdog on purpose:
// every child runs the library's embedded one, so the elected watchdog itself is killed
// and stopped too. Pid liveness, and heartbeat liveness (where a stopped member is evicted
// and comes back as a new one). An oracle in shared memory knows every message a producer
// was told was sent. At the end:
//   lost        messages confirmed to a producer and never received      (must be 0)
//   unexpected  messages received that no producer ever tried to send     (must be 0)
//   corrupt     messages whose bytes do not match what was sent           (must be 0)
//   duplicates  extra receptions (a consumer killed between receive and ack: allowed)
//
// Duration: SHMQ_SOAK_SECONDS (default 120).
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "test_util.hpp"

namespace shmq {
namespace {

using test::ScopedQueue;
using test::spawn;
using test::wait_exit;
using namespace std::chrono_literals;

constexpr int kProducers = 3;
constexpr int kConsumers = 3;
constexpr std::uint32_t kMaxSeq = 1u << 23;  // per producer slot

struct Oracle {
  std::atomic<std::uint32_t> next_seq[kProducers];
  std::atomic<bool> stop_producing;
  std::atomic<bool> stop_consuming;
  std::atomic<std::uint64_t> corrupt;
  std::atomic<std::uint64_t> evictions;  // handles that found themselves evicted
  // Then, per producer slot and sequence: attempted, confirmed, received (count).
  std::atomic<std::uint8_t>* table() { return reinterpret_cast<std::atomic<std::uint8_t>*>(this + 1); }
  std::atomic<std::uint8_t>& attempted(int p, std::uint32_t s) { return table()[(std::size_t(p) * kMaxSeq + s) * 3]; }
  std::atomic<std::uint8_t>& confirmed(int p, std::uint32_t s) { return table()[(std::size_t(p) * kMaxSeq + s) * 3 + 1]; }
  std::atomic<std::uint8_t>& received(int p, std::uint32_t s) { return table()[(std::size_t(p) * kMaxSeq + s) * 3 + 2]; }
  static std::size_t bytes() { return sizeof(Oracle) + std::size_t(kProducers) * kMaxSeq * 3; }
};

std::uint8_t fill_byte(std::uint32_t p, std::uint32_t seq, std::size_t i) {
  return static_cast<std::uint8_t>(p * 31 + seq * 17 + i * 7);
}

// A child's life: how many loop rounds it makes before it leaves by itself (churn), 0 = until
// told to stop.
std::uint32_t lifetime(std::mt19937& rng, bool churn) { return churn ? 200 + rng() % 3000 : 0; }

int producer_main(const std::string& name, Oracle* o, int p, bool churn) {
  auto q = Queue::open(name);
  if (!q) return 10;
  auto pr = q->producer();
  if (!pr) return 11;
  std::mt19937 rng(static_cast<unsigned>(::getpid()));
  std::vector<std::byte> buf(600);
  std::uint32_t sent = 0;
  const std::uint32_t life = lifetime(rng, churn);
  while (!o->stop_producing.load()) {
    if (life != 0 && sent >= life) return 0;
    // Paced (about 30,000 messages a second each) so that a run of minutes fits the oracle;
    // out of sequence numbers, a producer idles until told to stop.
    if (++sent % 32 == 0) std::this_thread::sleep_for(1ms);
    const std::uint32_t seq = o->next_seq[p].fetch_add(1);
    if (seq >= kMaxSeq) {
      o->next_seq[p].store(kMaxSeq);
      std::this_thread::sleep_for(10ms);
      continue;
    }
    // Sizes from 8 to 600 bytes: some messages span several 128-byte slots.
    const std::size_t len = 8 + rng() % 593;
    std::memcpy(buf.data(), &p, 4);
    std::memcpy(buf.data() + 4, &seq, 4);
    for (std::size_t i = 8; i < len; ++i) buf[i] = std::byte{fill_byte(std::uint32_t(p), seq, i)};
    o->attempted(p, seq).store(1);
    const std::uint64_t id = (std::uint64_t(p + 1) << 32) | seq;
    Status s;
    if (seq % 8 == 0 && len <= 64) {
      // Zero-copy, written slowly: a kill often lands between the claim and the commit,
      // leaving a hole for the watchdog to repair.
      Reservation r;
      s = pr->reserve(len, r, 1s);
      if (s == Status::ok) {
        std::memcpy(r.data().data(), buf.data(), len);
        std::this_thread::sleep_for(200us);
        s = pr->commit(r, id);
      }
    } else {
      s = pr->send_for(Bytes(buf.data(), len), 1s, id);
    }
    if (s == Status::ok) {
      o->confirmed(p, seq).store(1);
    } else if (s == Status::evicted) {
      // Stopped past the heartbeat timeout: the message was not sent; carry on as a new
      // member.
      o->evictions.fetch_add(1);
      pr = q->producer();
      if (!pr) return 13;
    } else if (s != Status::timeout) {
      return 12;
    }
  }
  return 0;
}

int consumer_main(const std::string& name, Oracle* o, bool churn) {
  auto q = Queue::open(name);
  if (!q) return 20;
  auto c = q->consumer();
  if (!c) return 21;
  std::mt19937 rng(static_cast<unsigned>(::getpid()));
  const std::uint32_t life = lifetime(rng, churn);
  std::uint32_t rounds = 0;
  // Takes up to 16 at a time and acks them together, so a kill often lands while the
  // consumer holds several unacked messages.
  std::vector<Message> batch(16);
  while (!o->stop_consuming.load()) {
    if (life != 0 && ++rounds >= life) return 0;  // closes: what it holds goes back
    if (c->evicted()) {
      // Stopped past the heartbeat timeout: what it held was delivered again.
      o->evictions.fetch_add(1);
      c = q->consumer();
      if (!c) return 22;
    }
    const std::size_t n = c->receive_batch(batch, 20ms);
    for (std::size_t i = 0; i < n; ++i) {
      const Message& m = batch[i];
      bool ok = m.size() >= 8;
      std::uint32_t p = 0, seq = 0;
      if (ok) {
        std::memcpy(&p, m.data().data(), 4);
        std::memcpy(&seq, m.data().data() + 4, 4);
        ok = p < kProducers && seq < kMaxSeq && m.id() == ((std::uint64_t(p + 1) << 32) | seq);
        for (std::size_t j = 8; ok && j < m.size(); ++j)
          ok = m.data()[j] == std::byte{fill_byte(p, seq, j)};
      }
      if (!ok) {
        o->corrupt.fetch_add(1);
        continue;
      }
      auto& r = o->received(int(p), seq);
      std::uint8_t v = r.load();
      while (v < 255 && !r.compare_exchange_weak(v, v + 1)) {
      }
    }
    // "Processing" while holding the batch: a kill now must not lose any of it.
    if (n > 0) std::this_thread::sleep_for(300us);
    // lease_lost would mean the watchdog took one back (it is delivered again): fine.
    (void)c->ack(std::span<Message>(batch.data(), n));
  }
  return 0;
}

struct Figures {
  std::uint64_t attempted = 0, confirmed = 0, received = 0, lost = 0, duplicates = 0,
                unexpected = 0;
};

Figures count(Oracle* o) {
  Figures f;
  for (int p = 0; p < kProducers; ++p) {
    const std::uint32_t n = std::min(o->next_seq[p].load(), kMaxSeq);
    for (std::uint32_t s = 0; s < n; ++s) {
      const bool a = o->attempted(p, s).load(), c = o->confirmed(p, s).load();
      const std::uint8_t r = o->received(p, s).load();
      f.attempted += a;
      f.confirmed += c;
      f.received += r > 0;
      f.lost += c && r == 0;
      f.duplicates += r > 1 ? r - 1 : 0;
      f.unexpected += r > 0 && !a;
    }
  }
  return f;
}

struct Chaos {
  bool heartbeat = false;  // heartbeat liveness (stopped members are evicted)
  int seconds = 60;
};

void soak(const Chaos& chaos) {
  QueueOptions qo{.slot_count = 64, .slot_size = 128, .max_message_size = 600, .lease = 30s,
                  .max_deliveries = 0};
  if (chaos.heartbeat) {
    qo.heartbeat_liveness = true;
    qo.heartbeat_timeout = 500ms;
  }
  ScopedQueue q(chaos.heartbeat ? "soakhb" : "soak", qo);
  void* mem = ::mmap(nullptr, Oracle::bytes(), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                     -1, 0);
  ASSERT_NE(mem, MAP_FAILED);
  auto* o = static_cast<Oracle*>(mem);
  ASSERT_TRUE(embedded_watchdog());  // every child heals; this process runs no watchdog

  struct Child {
    pid_t pid = -1;
    bool stopped = false;
    std::chrono::steady_clock::time_point resume_at;
  };
  std::vector<Child> producers(kProducers), consumers(kConsumers);
  const auto start = [&](int victim) {
    if (victim < kProducers)
      return spawn([&, victim] { return producer_main(q.name(), o, victim, true); });
    return spawn([&] { return consumer_main(q.name(), o, true); });
  };
  const auto child = [&](int victim) -> Child& {
    return victim < kProducers ? producers[victim] : consumers[victim - kProducers];
  };
  for (int v = 0; v < kProducers + kConsumers; ++v) child(v).pid = start(v);

  std::mt19937 rng(chaos.heartbeat ? 777 : 12345);
  int kills = 0, producer_kills = 0, stops = 0, left = 0;
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(chaos.seconds);
  while (std::chrono::steady_clock::now() < end) {
    // The chaos schedule: paced in time, not a synchronisation.
    std::this_thread::sleep_for(std::chrono::milliseconds(50 + rng() % 250));
    const auto now = std::chrono::steady_clock::now();
    for (int v = 0; v < kProducers + kConsumers; ++v) {
      Child& c = child(v);
      if (c.stopped && now >= c.resume_at) {
        ::kill(c.pid, SIGCONT);
        c.stopped = false;
      }
      // Left by itself (churn): it must have exited cleanly; start another.
      int status = 0;
      if (!c.stopped && ::waitpid(c.pid, &status, WNOHANG) == c.pid) {
        EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
            << (v < kProducers ? "producer" : "consumer") << " status " << status;
        ++left;
        c.pid = start(v);
      }
    }
    const int victim = static_cast<int>(rng() % (kProducers + kConsumers));
    Child& c = child(victim);
    if (rng() % 2 == 0) {
      ::kill(c.pid, SIGKILL);  // stopped or not
      const int rc = wait_exit(c.pid);
      EXPECT_TRUE(rc == 128 + SIGKILL || rc == 0)
          << "a " << (victim < kProducers ? "producer" : "consumer") << " exited with " << rc;
      ++kills;
      if (victim < kProducers) ++producer_kills;
      c.stopped = false;
      c.pid = start(victim);
    } else if (!c.stopped) {
      // Stopped for up to 1.5 s: past the claim timeout, and in heartbeat mode past the
      // heartbeat timeout (evicted). A producer stopped while writing its payload for longer
      // than two heartbeat timeouts could write into a slot given to another producer
      // meanwhile (README, heartbeat liveness): producers are stopped for at most 1.5 of
      // them there.
      const unsigned max_ms = chaos.heartbeat && victim < kProducers ? 750 : 1500;
      ::kill(c.pid, SIGSTOP);
      c.stopped = true;
      c.resume_at = now + std::chrono::milliseconds(10 + rng() % max_ms);
      ++stops;
    }
  }
  for (auto* group : {&producers, &consumers})
    for (Child& c : *group)
      if (c.stopped) ::kill(c.pid, SIGCONT), c.stopped = false;
  // Not wedged: after the chaos, sends are confirmed again (a slot left owned by nobody
  // would stop every producer one lap later). Polled every 10 ms, for at most 30 s.
  const std::uint64_t confirmed_at_end = count(o).confirmed;
  const auto wedge_limit = std::chrono::steady_clock::now() + 30s;
  while (count(o).confirmed < confirmed_at_end + 1000 &&
         std::chrono::steady_clock::now() < wedge_limit)
    std::this_thread::sleep_for(10ms);
  EXPECT_GE(count(o).confirmed, confirmed_at_end + 1000) << "producers stopped making progress";
  o->stop_producing.store(true);
  for (Child& c : producers) EXPECT_EQ(wait_exit(c.pid), 0);
  // Drain: every confirmed message must arrive. Checked every 100 ms, for at most 60 s.
  Figures f = count(o);
  const auto give_up = std::chrono::steady_clock::now() + 60s;
  while (f.lost != 0 && std::chrono::steady_clock::now() < give_up) {
    std::this_thread::sleep_for(100ms);
    f = count(o);
  }
  o->stop_consuming.store(true);
  for (Child& c : consumers) EXPECT_EQ(wait_exit(c.pid), 0);
  f = count(o);
  const QueueStats st = q->stats();
  std::printf(
      "soak (%s liveness): %d s, %d kills (%d producers, %d consumers), %d stops, %d left by "
      "themselves, %llu evictions; messages attempted %llu, confirmed %llu, received %llu; lost %llu, "
      "duplicates %llu, unexpected %llu, corrupt %llu; watchdog: %llu members reclaimed, %llu "
      "redelivered, %llu holes repaired\n",
      chaos.heartbeat ? "heartbeat" : "pid", chaos.seconds, kills, producer_kills,
      kills - producer_kills, stops, left,
      static_cast<unsigned long long>(o->evictions.load()), static_cast<unsigned long long>(f.attempted),
      static_cast<unsigned long long>(f.confirmed), static_cast<unsigned long long>(f.received),
      static_cast<unsigned long long>(f.lost), static_cast<unsigned long long>(f.duplicates),
      static_cast<unsigned long long>(f.unexpected),
      static_cast<unsigned long long>(o->corrupt.load()),
      static_cast<unsigned long long>(st.members_reclaimed),
      static_cast<unsigned long long>(st.redelivered),
      static_cast<unsigned long long>(st.holes_repaired));
  EXPECT_GT(kills, 0);
  EXPECT_GT(f.confirmed, 0u);
  EXPECT_EQ(f.lost, 0u);
  EXPECT_EQ(f.unexpected, 0u);
  EXPECT_EQ(o->corrupt.load(), 0u);
  ::munmap(mem, Oracle::bytes());
}

int soak_seconds() {
  const char* env = std::getenv("SHMQ_SOAK_SECONDS");
  return env != nullptr ? std::max(2, std::atoi(env)) : 120;
}

// The duration is split between the two.
TEST(Soak, RandomKillsStopsAndChurnLoseNothing) { soak({.heartbeat = false, .seconds = soak_seconds() / 2}); }

TEST(Soak, HeartbeatLivenessEvictionsLoseNothing) { soak({.heartbeat = true, .seconds = soak_seconds() / 2}); }

}  // namespace
}  // namespace shmq
