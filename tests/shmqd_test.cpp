// shmqd end to end: the real daemon binary, killed with SIGKILL mid-run, restarted, a
// "reboot" (every process killed and the segment removed), and a hot standby.
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "daemon_util.hpp"
#include "test_util.hpp"
#include "shmq/dead_letter.hpp"

#ifndef SHMQD_PATH
#error "SHMQD_PATH must name the shmqd binary"
#endif

namespace shmq {
namespace {

using test::unique_name;
using test::wait_exit;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

using test::Daemon;
using test::TempDir;

QueueOptions durable(const std::string& dir, Durability d, std::uint32_t slots = 2048) {
  QueueOptions o;
  o.slot_count = slots;
  o.slot_size = 128;
  o.durability = d;
  o.data_dir = dir;
  return o;
}

struct Received {
  std::set<std::uint64_t> ids;
  int redelivered = 0;
  std::uint64_t max_position = 0;
};

Received drain(Queue& q, bool ack = true) {
  Received r;
  auto c = q.consumer().value();
  Message m;
  while (c.receive_for(m, 300ms) == Status::ok) {
    r.ids.insert(m.id());
    r.redelivered += m.redelivered();
    r.max_position = std::max(r.max_position, m.position());
    if (ack) {
      EXPECT_EQ(c.ack(m), Status::ok);
    }
  }
  return r;
}

TEST(Shmqd, HelpAndBadUsage) {
  const std::string cmd = std::string(SHMQD_PATH);
  EXPECT_EQ(WEXITSTATUS(std::system((cmd + " --help > /dev/null").c_str())), 0);
  EXPECT_EQ(WEXITSTATUS(std::system((cmd + " --bogus 2> /dev/null").c_str())), 2);
  EXPECT_EQ(WEXITSTATUS(std::system((cmd + " --data-dir /tmp 2> /dev/null").c_str())), 2);
  EXPECT_EQ(WEXITSTATUS(std::system((cmd + " --data-dir /tmp a/b 2> /dev/null").c_str())), 2);
  EXPECT_EQ(WEXITSTATUS(std::system((cmd + " --mark-down 2> /dev/null").c_str())), 2);
  TempDir dir;
  // A queue never created (no queue.meta, no segment): a configuration error, exit 2, which
  // the systemd unit does not restart (RestartPreventExitStatus=2).
  EXPECT_EQ(WEXITSTATUS(std::system(
                (cmd + " --data-dir " + dir.path() + " nosuchqueue 2> /dev/null").c_str())),
            2);
  // A data dir other users may write: a configuration error too.
  const std::string open_dir = dir.path() + "/everyone";
  ASSERT_EQ(::mkdir(open_dir.c_str(), 0777), 0);
  ASSERT_EQ(::chmod(open_dir.c_str(), 0777), 0);  // past the umask
  EXPECT_EQ(WEXITSTATUS(std::system(
                (cmd + " --data-dir " + open_dir + " nosuchqueue 2> /dev/null").c_str())),
            2);
}

TEST(Shmqd, VersionPrintsNameAndProjectVersion) {
  std::FILE* p = ::popen((std::string(SHMQD_PATH) + " --version").c_str(), "r");
  ASSERT_NE(p, nullptr);
  char line[128] = {};
  const bool got = std::fgets(line, sizeof line, p) != nullptr;
  EXPECT_EQ(WEXITSTATUS(::pclose(p)), 0);
  ASSERT_TRUE(got);
  EXPECT_EQ(std::string(line), std::string("shmqd ") + SHMQ_VERSION + "\n");
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Issue 17: a stopped shmqd is not reported as up. SIGTERM rewrites the metrics file with
// shmq_up 0; after a SIGKILL, `shmqd --mark-down` (the unit's ExecStopPost) does it.
TEST(Shmqd, MetricsFileIsMarkedDownWhenShmqdStops) {
  TempDir dir;
  const std::string name = unique_name("down");
  auto q = Queue::create(name, durable(dir.path(), Durability::async)).value();
  const std::string prom = dir.path() + "/shmq.prom";
  const std::string up = "shmq_up{queue=\"" + name + "\"} 1";
  const std::string down = "shmq_up{queue=\"" + name + "\"} 0";
  {
    Daemon d(dir.path(), name, dir.path() + "/d.log", prom);
    ASSERT_TRUE(d.wait_for("persisting")) << d.log_text();
    ASSERT_EQ(q.producer().value().send("m"), Status::ok);
    std::string text;
    for (const auto give_up = std::chrono::steady_clock::now() + 10s;
         text.find(up) == std::string::npos && std::chrono::steady_clock::now() < give_up;) {
      std::this_thread::sleep_for(20ms);  // polling a file the daemon rewrites every second
      text = read_text(prom);
    }
    ASSERT_NE(text.find(up), std::string::npos) << text;
    EXPECT_EQ(d.terminate(), 0);
    text = read_text(prom);
    EXPECT_NE(text.find(down), std::string::npos) << text;
    EXPECT_EQ(text.find(up), std::string::npos) << text;
    // The figures are kept, as last seen.
    EXPECT_NE(text.find("shmq_sent_total{queue=\"" + name + "\"} 1"), std::string::npos) << text;
  }
  {
    Daemon d(dir.path(), name, dir.path() + "/d2.log", prom);
    ASSERT_TRUE(d.wait_for("persisting")) << d.log_text();
    std::string text;
    for (const auto give_up = std::chrono::steady_clock::now() + 10s;
         text.find(up) == std::string::npos && std::chrono::steady_clock::now() < give_up;) {
      std::this_thread::sleep_for(20ms);  // polling a file the daemon rewrites every second
      text = read_text(prom);
    }
    ASSERT_NE(text.find(up), std::string::npos) << text;
    d.kill9();  // leaves "up" behind: nobody marked it down
    ASSERT_NE(read_text(prom).find(up), std::string::npos);
  }
  const std::string cmd = std::string(SHMQD_PATH) + " --mark-down --metrics-file " + prom;
  ASSERT_EQ(WEXITSTATUS(std::system(cmd.c_str())), 0);
  const std::string text = read_text(prom);
  EXPECT_NE(text.find(down), std::string::npos) << text;
  EXPECT_EQ(text.find(up), std::string::npos) << text;
  EXPECT_NE(text.find("# TYPE shmq_up gauge"), std::string::npos) << text;
  EXPECT_NE(text.find("shmq_sent_total{queue=\"" + name + "\"} 1"), std::string::npos) << text;
  // No metrics file (shmqd never ran): nothing to mark, not an error.
  const std::string none = std::string(SHMQD_PATH) + " --mark-down --metrics-file " + dir.path() + "/none.prom";
  EXPECT_EQ(WEXITSTATUS(std::system(none.c_str())), 0);
  (void)Queue::remove(name);
}

TEST(Shmqd, RebootRedeliversEveryConfirmedUnackedMessageAndNoAckedOne) {
  TempDir dir;
  const std::string name = unique_name("reboot");
  std::set<std::uint64_t> sent;
  {
    auto q = Queue::create(name, durable(dir.path(), Durability::sync)).value();
    Daemon d(dir.path(), name, dir.path() + "/shmqd.log");
    ASSERT_TRUE(d.wait_for("persisting", 2));
    auto p = q.producer().value();
    for (std::uint64_t i = 1; i <= 100; ++i) {
      ASSERT_EQ(p.send_for(as_bytes("m" + std::to_string(i)), 10s, i), Status::ok);  // confirmed
      sent.insert(i);
    }
    auto c = q.consumer().value();
    Message m;
    for (int i = 0; i < 40; ++i) {  // the first 40 are acked
      ASSERT_EQ(c.receive_for(m, 5s), Status::ok);
      ASSERT_EQ(c.ack(m), Status::ok);
      sent.erase(m.id());
    }
    // A clean stop flushes the ack journal and checkpoints.
    EXPECT_EQ(d.terminate(), 0);
    EXPECT_TRUE(d.log_text().find("stopped cleanly") != std::string::npos) << d.log_text();
  }
  // The reboot: the segment is gone, the data dir stays.
  ASSERT_TRUE(Queue::remove(name).ok());
  Daemon d(dir.path(), name, dir.path() + "/shmqd2.log");
  ASSERT_TRUE(d.wait_for("recovered messages republished")) << d.log_text();
  auto q = Queue::open(name).value();
  const Received r = drain(q);
  EXPECT_EQ(r.ids, sent);  // exactly the 60 unacked: none lost, no acked one back
  EXPECT_EQ(r.redelivered, 60);
  EXPECT_GE(r.max_position, 100u);  // positions keep increasing across the rebuild
  (void)Queue::remove(name);
}

// Issue 11 end to end: a delayed message of a durable queue does not make the producers
// that lap it wait (they relocate it, once it is on disk), and after a kill -9 of shmqd and
// a reboot it comes back: the log never has it acked at every position it moved through.
TEST(Shmqd, DelayedMessageOfADurableQueueIsRelocatedAndSurvivesAReboot) {
  TempDir dir;
  const std::string name = unique_name("reloc");
  constexpr std::uint32_t kSlots = 8;
  {
    auto q = Queue::create(name, durable(dir.path(), Durability::async, kSlots)).value();
    Daemon d(dir.path(), name, dir.path() + "/shmqd.log");
    ASSERT_TRUE(d.wait_for("persisting", 2));
    auto p = q.producer().value();
    auto c = q.consumer().value();
    ASSERT_EQ(p.send_for(as_bytes("parked"), 10s, 7777), Status::ok);
    Message m;
    ASSERT_EQ(c.receive_for(m, 5s), Status::ok);
    ASSERT_EQ(c.nack_after(m, 1h), Status::ok);
    for (std::uint64_t i = 1; i <= 10 * kSlots; ++i) {
      ASSERT_EQ(p.send_for(as_bytes("m" + std::to_string(i)), 10s, i), Status::ok) << i;
      ASSERT_EQ(c.receive_for(m, 5s), Status::ok);
      ASSERT_EQ(m.id(), i);
      ASSERT_EQ(c.ack(m), Status::ok);
    }
    d.kill9();
  }
  ASSERT_TRUE(Queue::remove(name).ok());
  Daemon d(dir.path(), name, dir.path() + "/shmqd2.log");
  // More than a ring's worth may come back (acks not yet journalled at the kill): the
  // republisher then waits for room, so we drain while it sends, and once more after it
  // says it is done.
  ASSERT_TRUE(d.wait_for("to republish")) << d.log_text();
  auto q = Queue::open(name).value();
  Received r = drain(q);
  ASSERT_TRUE(d.wait_for("recovered messages republished")) << d.log_text();
  const Received rest = drain(q);
  r.ids.insert(rest.ids.begin(), rest.ids.end());
  EXPECT_TRUE(r.ids.contains(7777)) << d.log_text();
  // Acks not yet journalled at the kill may come back (async): a ring or two of them.
  EXPECT_LE(r.ids.size(), 1 + 2 * kSlots);
  (void)Queue::remove(name);
}

// Issue 13: a durable queue with priorities is persisted level by level (a log each) and
// after a kill -9 of shmqd and a reboot every unacked message comes back at its priority,
// highest first; acked ones do not; a delayed one comes at (not before) its due time.
// Issue 14: the dedup window survives shmqd's restart and a reboot. Ids of the last `count` positions are
// rebuilt from the log (kept there for it, though acked and checkpointed away otherwise):
// resent, they are duplicates; older ones are accepted again.
TEST(Shmqd, DedupWindowSurvivesAReboot) {
  TempDir dir;
  const std::string name = unique_name("dedup");
  constexpr std::uint64_t kSent = 80, kWindow = 50;
  {
    QueueOptions o = durable(dir.path(), Durability::sync, 64);
    o.dedup_window.count = kWindow;
    auto q = Queue::create(name, o).value();
    // Small log segments: the checkpoint at shutdown would delete the acked ones.
    Daemon d(dir.path(), name, dir.path() + "/shmqd.log", "", "", {"--segment-bytes", "4096"});
    ASSERT_TRUE(d.wait_for("persisting")) << d.log_text();
    auto p = q.producer().value();
    auto c = q.consumer().value();
    Message m;
    for (std::uint64_t id = 1; id <= kSent; ++id) {
      ASSERT_EQ(p.send_for(as_bytes(std::string(60, char(0x40 + id % 26))), 10s, id), Status::ok);
      ASSERT_EQ(c.receive_for(m, 5s), Status::ok);
      ASSERT_EQ(c.ack(m), Status::ok);
    }
    ASSERT_EQ(p.send_for(as_bytes("again"), 10s, 80), Status::duplicate);  // confirmed dup
    // shmqd killed and restarted (no reboot): the window is in the segment, untouched.
    d.kill9();
    Daemon d2(dir.path(), name, dir.path() + "/shmqd-restart.log", "", "",
              {"--segment-bytes", "4096"});
    ASSERT_TRUE(d2.wait_for("persisting")) << d2.log_text();
    ASSERT_EQ(p.send_for(as_bytes("again"), 10s, 80), Status::duplicate);
    // One more message after the acks, so that they reach the log; then a clean stop (its
    // final checkpoint deletes every segment that holds nothing needed).
    ASSERT_EQ(p.send_for(as_bytes("last"), 10s, kSent + 1), Status::ok);
    ASSERT_EQ(c.receive_for(m, 5s), Status::ok);
    ASSERT_EQ(c.ack(m), Status::ok);
    ASSERT_EQ(p.send_for(as_bytes("flush"), 10s), Status::ok);
    EXPECT_EQ(d2.terminate(), 0);
  }
  ASSERT_TRUE(Queue::remove(name).ok());  // the reboot
  Daemon d(dir.path(), name, dir.path() + "/shmqd2.log");
  ASSERT_TRUE(d.wait_for("persisting")) << d.log_text();
  EXPECT_TRUE(d.wait_for("dedup window rebuilt from the log")) << d.log_text();
  auto q = Queue::open(name).value();
  EXPECT_EQ(q.options().dedup_window.count, kWindow);
  auto p = q.producer().value();
  // Positions 0 .. 82 were used (80 + "last" + "flush"): the window holds the ids of
  // positions 33 .. 82, i.e. ids 34 .. 81 (and the generated one).
  for (std::uint64_t id = 34; id <= kSent + 1; ++id)
    EXPECT_EQ(p.send_for(as_bytes("resend"), 10s, id), Status::duplicate) << id;
  for (std::uint64_t id = 1; id <= 33; ++id)
    EXPECT_EQ(p.send_for(as_bytes("resend"), 10s, id), Status::ok) << id;
}

TEST(Shmqd, PrioritiesSurviveAReboot) {
  TempDir dir;
  const std::string name = unique_name("prio");
  constexpr std::uint32_t kMax = 3;
  std::map<std::uint64_t, std::uint32_t> unacked;  // id -> priority
  const auto due = std::chrono::system_clock::now() + 3s;
  {
    QueueOptions o = durable(dir.path(), Durability::sync, 64);
    o.max_priority = kMax;
    auto q = Queue::create(name, o).value();
    Daemon d(dir.path(), name, dir.path() + "/shmqd.log");
    ASSERT_TRUE(d.wait_for("persisting", 2 + int(kMax))) << d.log_text();
    auto p = q.producer().value();
    for (std::uint32_t level = 0; level <= kMax; ++level)
      for (std::uint64_t i = 1; i <= 10; ++i) {
        const std::uint64_t id = level * 100 + i;
        ASSERT_EQ(p.send_for(as_bytes("m" + std::to_string(id)), 10s,
                             SendOptions{.id = id, .priority = level}),
                  Status::ok);  // confirmed
        unacked[id] = level;
      }
    auto c = q.consumer().value();
    Message m;
    for (int i = 0; i < 12; ++i) {  // the ten of level 3, then two of level 2
      ASSERT_EQ(c.receive_for(m, 5s), Status::ok);
      ASSERT_EQ(m.priority(), i < 10 ? 3u : 2u);
      ASSERT_EQ(c.ack(m), Status::ok);
      unacked.erase(m.id());
    }
    // One in flight when shmqd dies: it comes back too.
    ASSERT_EQ(c.receive_for(m, 5s), Status::ok);
    ASSERT_EQ(m.priority(), 2u);
    // Its acks reach the logs (sync queue: journalled with the next group commit), then
    // shmqd is killed.
    ASSERT_EQ(p.send_for(as_bytes("last"), 10s, SendOptions{.id = 999, .priority = 1}),
              Status::ok);
    unacked[999] = 1;
    // A delayed message at priority 2: after the reboot it is due at the same wall-clock
    // time, not before.
    ASSERT_EQ(p.send_for(as_bytes("later"), 10s,
                         SendOptions{.id = 998, .priority = 2, .not_before = due}),
              Status::ok);
    unacked[998] = 2;
    d.kill9();
  }
  ASSERT_TRUE(Queue::remove(name).ok());  // the reboot: every level's segment goes too
  for (std::uint32_t level = 1; level <= kMax; ++level)
    ASSERT_FALSE(Queue::open(name + ".p" + std::to_string(level)).ok());
  Daemon d(dir.path(), name, dir.path() + "/shmqd2.log");
  ASSERT_TRUE(d.wait_for("persisting", 2 + int(kMax))) << d.log_text();
  auto q = Queue::open(name).value();
  EXPECT_EQ(q.options().max_priority, kMax);
  // Each level is rebuilt by its own thread: consume once every level's republishing is
  // over (all of them in the rings), else a level still being republished shows up late.
  const auto give_up = std::chrono::steady_clock::now() + 20s;
  for (;;) {
    const QueueStats st = q.stats();
    if (st.ready + st.delayed >= unacked.size()) break;
    ASSERT_LT(std::chrono::steady_clock::now(), give_up) << d.log_text();
    std::this_thread::sleep_for(5ms);  // polling a condition, as wait_for does
  }
  auto c = q.consumer().value();
  Message m;
  std::uint32_t last = kMax;
  std::map<std::uint64_t, std::uint32_t> got;
  while (c.receive_for(m, got.contains(998) ? 500ms : 10s) == Status::ok) {
    if (m.id() == 998) {
      // The delayed one comes when due (after the rest: it is due later than they are sent).
      EXPECT_GE(std::chrono::system_clock::now(), due) << "delivered before its due time";
    } else {
      EXPECT_LE(m.priority(), last) << "a higher priority after a lower one";
      last = m.priority();
    }
    got[m.id()] = m.priority();
    ASSERT_EQ(c.ack(m), Status::ok);
  }
  // Acks of level 3 may not all be journalled at the kill: a sync queue confirms sends, not
  // acks. Every unacked message is back with its priority; any extra is an acked one.
  for (const auto& [id, level] : unacked) {
    ASSERT_TRUE(got.contains(id)) << "lost " << id;
    EXPECT_EQ(got[id], level) << id;
  }
  for (const auto& [id, level] : got)
    if (!unacked.contains(id)) {
      EXPECT_EQ(level, id / 100) << id;
    }
  (void)Queue::remove(name);
}

// Issue 9.1: a crash of shmqd at any step of rebuild -> republish -> sync -> checkpoint,
// then a restart that reattaches, then it is killed again, then a second reboot: every
// confirmed unacked message comes back, and no acked one.
TEST(Shmqd, CrashAtEveryStepOfRecoveryThenReattachThenRebootLosesNothing) {
  const std::vector<std::string> points = {
      "shmqd.after_rebuild:1",    "shmqd.before_republish:1", "shmqd.mid_republish:1",
      "shmqd.mid_republish:40",   "shmqd.mid_republish:120",  "persister.before_sync:1",
      "persister.after_sync:1",   "persister.before_checkpoint:1",
      "wal.checkpoint.after_rename:1"};
  for (const std::string& point : points) {
    SCOPED_TRACE(point);
    TempDir dir;
    const std::string name = unique_name("rcrash");
    std::set<std::uint64_t> unacked;
    {
      auto q = Queue::create(name, durable(dir.path(), Durability::sync, 256)).value();
      Daemon d(dir.path(), name, dir.path() + "/d0.log");
      ASSERT_TRUE(d.wait_for("queue '" + name + "': persisting"));
      auto p = q.producer().value();
      auto c = q.consumer().value();
      Message m;
      for (std::uint64_t i = 1; i <= 240; ++i) {
        ASSERT_EQ(p.send_for(as_bytes("m" + std::to_string(i)), 10s, i), Status::ok);
        unacked.insert(i);
        if (i % 6 == 0) {  // one in six is acked
          ASSERT_EQ(c.receive_for(m, 5s), Status::ok);
          ASSERT_EQ(c.ack(m), Status::ok);
          unacked.erase(m.id());
        }
      }
      d.kill9();  // not even a clean stop
    }
    ASSERT_TRUE(Queue::remove(name).ok());  // reboot 1
    {
      Daemon crash(dir.path(), name, dir.path() + "/d1.log", "", point);
      ASSERT_EQ(crash.wait_end(), 128 + SIGKILL) << "crash point not reached\n"
                                                  << crash.log_text();
    }
    {
      // Restart: reattaches to the rebuilt segment (or rebuilds it if the crash came
      // before), resumes the republish, and is killed once it says it persists.
      Daemon d(dir.path(), name, dir.path() + "/d2.log");
      ASSERT_TRUE(d.wait_for("queue '" + name + "': persisting")) << d.log_text();
      d.kill9();
    }
    ASSERT_TRUE(Queue::remove(name).ok());  // reboot 2
    Daemon d(dir.path(), name, dir.path() + "/d3.log");
    ASSERT_TRUE(d.wait_for("queue '" + name + "': persisting")) << d.log_text();
    auto q = Queue::open(name).value();
    const Received r = drain(q);
    std::size_t lost = 0;
    for (const std::uint64_t id : unacked) lost += !r.ids.contains(id);
    EXPECT_EQ(lost, 0u) << d.log_text();
    // At-least-once: an ack made just before the first kill may not have been journalled
    // (it is durable at the next group commit); nothing else that was acked comes back.
    EXPECT_LE(r.ids.size(), unacked.size() + 2) << d.log_text();
    (void)Queue::remove(name);
  }
}

// Issue 9.2: ids generated for short-lived producers never collide, and recovery returns
// every message (it never drops one because of its id).
TEST(Shmqd, AThousandShortLivedSyncProducersAllComeBackAfterAReboot) {
  TempDir dir;
  const std::string name = unique_name("shortlived");
  constexpr int kProducers = 1000;
  {
    auto q = Queue::create(name, durable(dir.path(), Durability::sync, 2048)).value();
    Daemon d(dir.path(), name, dir.path() + "/d0.log");
    ASSERT_TRUE(d.wait_for("queue '" + name + "': persisting"));
    for (int i = 0; i < kProducers; ++i) {
      std::fflush(nullptr);
      const pid_t pid = ::fork();
      if (pid == 0) {
        auto qq = Queue::open(name);
        if (!qq.ok()) std::_Exit(2);
        auto p = qq->producer();
        if (!p.ok()) std::_Exit(3);
        std::_Exit(p->send_for(as_bytes("order-" + std::to_string(i)), 10s) == Status::ok ? 0 : 4);
      }
      ASSERT_EQ(wait_exit(pid), 0) << "producer " << i;
    }
    d.kill9();
  }
  ASSERT_TRUE(Queue::remove(name).ok());
  Daemon d(dir.path(), name, dir.path() + "/d1.log");
  ASSERT_TRUE(d.wait_for("queue '" + name + "': persisting")) << d.log_text();
  auto q = Queue::open(name).value();
  auto c = q.consumer().value();
  std::set<std::string> payloads;
  std::set<std::uint64_t> ids;
  Message m;
  while (c.receive_for(m, 500ms) == Status::ok) {
    payloads.insert(std::string(m.view()));
    ids.insert(m.id());
    ASSERT_EQ(c.ack(m), Status::ok);
  }
  EXPECT_EQ(payloads.size(), static_cast<std::size_t>(kProducers));
  EXPECT_EQ(ids.size(), static_cast<std::size_t>(kProducers));
  EXPECT_EQ(d.log_text().find("superseded"), std::string::npos) << d.log_text();
  (void)Queue::remove(name);
}

// Issue 9.3: rejecting on a durable queue returns at once (sync and async), and the dead
// letters survive a reboot (shmqd persists QUEUE.dlq with QUEUE).
TEST(Shmqd, DeadLettersOfADurableQueueAreDurableAndRejectingNeverBlocks) {
  for (const Durability durability : {Durability::sync, Durability::async}) {
    SCOPED_TRACE(std::string(to_string(durability)));
    TempDir dir;
    const std::string name = unique_name("dlqdur");
    const std::string dlq_name = Queue::dead_letter_name(name);
    {
      auto q = Queue::create(name, durable(dir.path(), durability, 256)).value();
      Daemon d(dir.path(), name, dir.path() + "/d0.log");
      ASSERT_TRUE(d.wait_for("persisting", 2)) << d.log_text();  // the queue and its DLQ
      auto p = q.producer().value();
      for (std::uint64_t i = 1; i <= 5; ++i)
        ASSERT_EQ(p.send_for(as_bytes("poison" + std::to_string(i)), 10s, i), Status::ok);
      auto c = q.consumer().value();
      Message m;
      for (int i = 0; i < 5; ++i) {
        ASSERT_EQ(c.receive_for(m, 5s), Status::ok);
        ASSERT_EQ(c.nack(m, /*requeue=*/false), Status::ok);  // returns: no confirmation wait
      }
      // Wait (bounded) until shmqd has journalled the 5 releases in the queue's own log:
      // from then on only the dead letters hold these messages.
      auto dlq = Queue::open(dlq_name).value();
      const auto give_up = std::chrono::steady_clock::now() + 20s;
      while (dlq.stats().persisted < dlq.stats().tail &&
             std::chrono::steady_clock::now() < give_up)
        std::this_thread::sleep_for(5ms);  // polling shmqd's progress
      ASSERT_GE(dlq.stats().persisted, dlq.stats().tail);
      d.kill9();
    }
    ASSERT_TRUE(Queue::remove(name).ok());  // reboot: both segments gone
    Daemon d(dir.path(), name, dir.path() + "/d1.log");
    ASSERT_TRUE(d.wait_for("persisting", 2)) << d.log_text();
    auto dlq = Queue::open(dlq_name).value();
    auto dc = dlq.consumer().value();
    std::set<std::uint64_t> dead;
    Message m;
    while (dc.receive_for(m, 500ms) == Status::ok) {
      const auto dl = parse_dead_letter(m.data());
      ASSERT_TRUE(dl.has_value());
      EXPECT_EQ(dl->reason, DeadLetterReason::rejected);
      dead.insert(dl->original_id);
      ASSERT_EQ(dc.ack(m), Status::ok);
    }
    EXPECT_EQ(dead, (std::set<std::uint64_t>{1, 2, 3, 4, 5})) << d.log_text();
    (void)Queue::remove(name);
  }
}

// Issue 9.5: the active shmqd is SIGSTOPped (hung, not dead: it keeps its lock). The standby
// sees it make no progress, fences it with SIGKILL and takes over: confirmations resume.
// SIGCONT finds the old primary dead: it can write and confirm nothing more.
TEST(Shmqd, HungPrimaryIsFencedAndTheStandbyTakesOver) {
  TempDir dir;
  const std::string name = unique_name("hung");
  auto q = Queue::create(name, durable(dir.path(), Durability::sync, 1024)).value();
  const std::vector<std::string> opts = {"--takeover-ms", "300", "--standby-poll-ms", "20"};
  Daemon primary(dir.path(), name, dir.path() + "/primary.log", "", "", opts);
  ASSERT_TRUE(primary.wait_for("persisting", 2)) << primary.log_text();
  Daemon standby(dir.path(), name, dir.path() + "/standby.log", "", "", opts);
  ASSERT_TRUE(standby.wait_for("waiting as hot standby", 2)) << standby.log_text();
  auto p = q.producer().value();
  for (std::uint64_t i = 1; i <= 20; ++i) ASSERT_EQ(p.send_for(as_bytes("a"), 10s, i), Status::ok);
  ASSERT_EQ(::kill(primary.pid(), SIGSTOP), 0);
  // A confirmed send needs a live persister: the standby's, after the fence.
  for (std::uint64_t i = 21; i <= 40; ++i)
    ASSERT_EQ(p.send_for(as_bytes("b"), 20s, i), Status::ok) << standby.log_text();
  EXPECT_TRUE(standby.wait_for("fencing it with SIGKILL")) << standby.log_text();
  (void)::kill(primary.pid(), SIGCONT);
  EXPECT_EQ(primary.wait_end(), 128 + SIGKILL);  // dead: it never wrote again
  standby.kill9();
  // Every confirmed message is in the log.
  ASSERT_TRUE(Queue::remove(name).ok());
  Daemon d(dir.path(), name, dir.path() + "/after.log");
  ASSERT_TRUE(d.wait_for("persisting", 2)) << d.log_text();
  auto q2 = Queue::open(name).value();
  const Received r = drain(q2);
  for (std::uint64_t i = 1; i <= 40; ++i) EXPECT_TRUE(r.ids.contains(i)) << "lost " << i;
  (void)Queue::remove(name);
}

// Issue 9.4 through the daemon: one message held unacked while 200,000 more are sent in
// confirmed batches and acked; with 64 KiB segments the data dir stays small (compaction),
// and after a reboot the held message is back. (The ring is larger than the traffic: a
// held message still stops producers one lap later, issue 11.)
TEST(Shmqd, OneHeldMessageDoesNotPinTheLog) {
  TempDir dir;
  const std::string name = unique_name("pin");
  auto q = Queue::create(name, durable(dir.path(), Durability::sync, 1u << 18)).value();
  Daemon d(dir.path(), name, dir.path() + "/d.log", "", "", {"--segment-bytes", "65536"});
  ASSERT_TRUE(d.wait_for("persisting", 2)) << d.log_text();
  auto p = q.producer().value();
  auto holder = q.consumer().value();
  auto c = q.consumer().value();
  ASSERT_EQ(p.send_for(as_bytes("held"), 10s, 1), Status::ok);
  Message held;
  ASSERT_EQ(holder.receive_for(held, 5s), Status::ok);
  const std::string payload(64, 'x');
  std::vector<Bytes> batch(256, as_bytes(payload));
  const std::string qdir = dir.path() + "/" + name;
  auto dir_bytes = [&] {
    std::uint64_t total = 0;
    for (const auto& e : fs::directory_iterator(qdir))
      if (e.is_regular_file()) total += e.file_size();
    return total;
  };
  std::uint64_t peak = 0;
  Message m;
  for (int round = 0; round < 200'000 / 256; ++round) {
    Status st = Status::ok;
    ASSERT_EQ(p.send_batch(batch, 10s, &st), batch.size()) << to_string(st);  // confirmed
    for (std::size_t i = 0; i < batch.size(); ++i) {
      ASSERT_EQ(c.receive_for(m, 5s), Status::ok);
      ASSERT_EQ(c.ack(m), Status::ok);
    }
    peak = std::max(peak, dir_bytes());
  }
  // 64 KiB segments: 2 x 64 KiB of closed segments at most, the current one, its 1 MiB
  // write buffer's worth, and the checkpoint. Without compaction: ~10 MiB.
  EXPECT_LE(peak, std::uint64_t{1536} << 10) << "peak " << peak;
  std::printf("data dir peak: %llu bytes\n", static_cast<unsigned long long>(peak));
  d.kill9();
  ASSERT_TRUE(Queue::remove(name).ok());
  Daemon d2(dir.path(), name, dir.path() + "/d2.log");
  ASSERT_TRUE(d2.wait_for("persisting", 2)) << d2.log_text();
  auto q2 = Queue::open(name).value();
  const Received r = drain(q2);
  EXPECT_TRUE(r.ids.contains(1)) << d2.log_text();
  (void)Queue::remove(name);
}

// Issue 10: shmqd serves a queue without durability too: its watchdog heals the queue when
// no attached process runs one, and its metrics are exported.
TEST(Shmqd, ServesANonDurableQueueWithItsWatchdogAndMetrics) {
  set_embedded_watchdog(false);  // only shmqd may heal here
  TempDir dir;
  const std::string name = unique_name("mem");
  auto q = Queue::create(name, {}).value();
  const std::string metrics = dir.path() + "/shmq.prom";
  Daemon d(dir.path(), name, dir.path() + "/d.log", metrics);
  ASSERT_TRUE(d.wait_for("serving (durability none")) << d.log_text();
  auto p = q.producer().value();
  for (std::uint64_t i = 1; i <= 5; ++i) ASSERT_EQ(p.send(as_bytes("m"), i), Status::ok);
  const pid_t holder = test::spawn_holder(name, 5);
  ASSERT_GT(holder, 0);
  ::kill(holder, SIGKILL);
  EXPECT_EQ(wait_exit(holder), 128 + SIGKILL);
  const Received r = drain(q);
  EXPECT_EQ(r.ids, (std::set<std::uint64_t>{1, 2, 3, 4, 5}));
  EXPECT_EQ(r.redelivered, 5);
  ASSERT_TRUE(d.wait_for("serving")) << d.log_text();
  std::string prom;
  for (const auto give_up = std::chrono::steady_clock::now() + 10s;
       prom.find("shmq_up{queue=\"" + name + "\"} 1") == std::string::npos &&
       std::chrono::steady_clock::now() < give_up;) {
    std::this_thread::sleep_for(20ms);  // polling the metrics file shmqd rewrites every second
    std::ifstream in(metrics);
    std::stringstream ss;
    ss << in.rdbuf();
    prom = ss.str();
  }
  EXPECT_NE(prom.find("shmq_up{queue=\"" + name + "\"} 1"), std::string::npos) << prom;
  EXPECT_EQ(d.terminate(), 0);
  set_embedded_watchdog(true);
  (void)Queue::remove(name);
}

TEST(Shmqd, KillNineDuringSyncSendsLosesNoConfirmedMessage) {
  TempDir dir;
  const std::string name = unique_name("kill9");
  auto q = Queue::create(name, durable(dir.path(), Durability::sync, 64)).value();
  // Per message id: confirmed (the producer's send returned ok) and received.
  constexpr int kMessages = 3000;
  struct Shared {
    std::atomic<bool> stop;
    std::atomic<std::uint8_t> confirmed[kMessages + 1];
    std::atomic<std::uint8_t> received[kMessages + 1];
  };
  auto* sh = static_cast<Shared*>(::mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE,
                                         MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  ASSERT_NE(static_cast<void*>(sh), MAP_FAILED);
  auto d1 = std::make_unique<Daemon>(dir.path(), name, dir.path() + "/d1.log");
  ASSERT_TRUE(d1->wait_for("persisting", 2));
  const pid_t consumer = test::spawn([&] {
    auto c = Queue::open(name).value().consumer().value();
    Message m;
    while (!sh->stop.load()) {
      if (c.receive_for(m, 20ms) != Status::ok) continue;
      if (m.id() >= 1 && m.id() <= kMessages) sh->received[m.id()].store(1);
      (void)c.ack(m);
    }
    return 0;
  });
  const pid_t producer = test::spawn([&] {
    auto p = Queue::open(name).value().producer().value();
    for (std::uint64_t i = 1; i <= kMessages; ++i) {
      // send_for waits while no shmqd runs and is confirmed by the next one. The bound is a
      // failure, not timing.
      if (p.send_for(as_bytes("v" + std::to_string(i)), 60s, i) != Status::ok) return 1;
      sh->confirmed[i].store(1);
    }
    return 0;
  });
  // Kill the daemon once some sends are confirmed, then start a new one.
  const auto give_up = std::chrono::steady_clock::now() + 20s;
  while (sh->confirmed[500].load() == 0 && std::chrono::steady_clock::now() < give_up)
    std::this_thread::yield();
  d1->kill9();
  auto d2 = std::make_unique<Daemon>(dir.path(), name, dir.path() + "/d2.log");
  EXPECT_EQ(wait_exit(producer), 0);
  // Then everything dies and the segment goes: only the log remains.
  ::kill(consumer, SIGKILL);
  wait_exit(consumer);
  d2->kill9();
  ASSERT_TRUE(Queue::remove(name).ok());
  Daemon d3(dir.path(), name, dir.path() + "/d3.log");
  ASSERT_TRUE(d3.wait_for("persisting", 2)) << d3.log_text();  // the segment exists from then
  auto rq = Queue::open(name).value();
  const Received r = drain(rq);
  for (std::uint64_t id : r.ids)
    if (id >= 1 && id <= kMessages) sh->received[id].store(1);
  int lost = 0, confirmed = 0;
  for (int i = 1; i <= kMessages; ++i) {
    confirmed += sh->confirmed[i].load();
    if (sh->confirmed[i].load() != 0 && sh->received[i].load() == 0) ++lost;
  }
  EXPECT_EQ(confirmed, kMessages);
  EXPECT_EQ(lost, 0);
  ::munmap(sh, sizeof(Shared));
  (void)Queue::remove(name);
}

TEST(Shmqd, HotStandbyTakesOverAfterKillNine) {
  TempDir dir;
  const std::string name = unique_name("standby");
  auto q = Queue::create(name, durable(dir.path(), Durability::sync)).value();
  Daemon active(dir.path(), name, dir.path() + "/active.log");
  ASSERT_TRUE(active.wait_for("persisting", 2));
  Daemon standby(dir.path(), name, dir.path() + "/standby.log");
  ASSERT_TRUE(standby.wait_for("waiting as hot standby")) << standby.log_text();
  auto p = q.producer().value();
  ASSERT_EQ(p.send_for(as_bytes("before"), 10s), Status::ok);
  active.kill9();
  ASSERT_TRUE(standby.wait_for("taking over")) << standby.log_text();
  // A sync send is confirmed only by a persister: the standby is now it.
  ASSERT_EQ(p.send_for(as_bytes("after"), 10s), Status::ok);
  const Received r = drain(q);
  EXPECT_EQ(r.ids.size(), 2u);
  (void)Queue::remove(name);
}

TEST(Shmqd, SegmentThatOutlivedEveryProcessIsReattachedAndHealed) {
  TempDir dir;
  const std::string name = unique_name("reattach");
  auto q = Queue::create(name, durable(dir.path(), Durability::sync)).value();
  auto d1 = std::make_unique<Daemon>(dir.path(), name, dir.path() + "/d1.log");
  ASSERT_TRUE(d1->wait_for("persisting", 2));
  {
    auto p = q.producer().value();
    for (std::uint64_t i = 1; i <= 10; ++i) ASSERT_EQ(p.send_for(as_bytes("r"), 10s, i), Status::ok);
  }
  // A consumer takes three and dies holding them; then the daemon dies too.
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  const pid_t holder = test::spawn([&] {
    auto c = Queue::open(name).value().consumer().value();
    std::vector<Message> ms(3);
    for (auto& m : ms)
      if (c.receive_for(m, 5s) != Status::ok) return 1;
    (void)!::write(ready[1], "x", 1);
    ::pause();
    return 0;
  });
  char b;
  ASSERT_EQ(::read(ready[0], &b, 1), 1);
  ::kill(holder, SIGKILL);
  wait_exit(holder);
  d1->kill9();
  // /dev/shm survived: the new daemon reattaches (no rebuild) and its watchdog heals.
  Daemon d2(dir.path(), name, dir.path() + "/d2.log");
  ASSERT_TRUE(d2.wait_for("reattached")) << d2.log_text();
  EXPECT_EQ(d2.occurrences("rebuilt"), 0);
  const Received r = drain(q);
  EXPECT_EQ(r.ids.size(), 10u);
  EXPECT_EQ(r.redelivered, 3);
  ::close(ready[0]);
  ::close(ready[1]);
  (void)Queue::remove(name);
}

TEST(Shmqd, WritesPrometheusMetrics) {
  TempDir dir;
  const std::string name = unique_name("metrics");
  auto q = Queue::create(name, durable(dir.path(), Durability::async)).value();
  const std::string prom = dir.path() + "/shmq.prom";
  Daemon d(dir.path(), name, dir.path() + "/d.log", prom);
  ASSERT_TRUE(d.wait_for("persisting", 2));
  auto p = q.producer().value();
  for (int i = 0; i < 7; ++i) ASSERT_EQ(p.send("m"), Status::ok);
  const std::string want = "shmq_sent_total{queue=\"" + name + "\"} 7";
  std::string text;
  const auto give_up = std::chrono::steady_clock::now() + 10s;
  while (text.find(want) == std::string::npos && std::chrono::steady_clock::now() < give_up) {
    std::this_thread::sleep_for(50ms);  // polling a file the daemon rewrites every second
    std::ifstream in(prom);
    std::stringstream ss;
    ss << in.rdbuf();
    text = ss.str();
  }
  EXPECT_NE(text.find(want), std::string::npos) << text;
  EXPECT_NE(text.find("# TYPE shmq_depth gauge"), std::string::npos);
  EXPECT_NE(text.find("shmq_delayed{queue=\"" + name + "\"} 0"), std::string::npos) << text;
  (void)Queue::remove(name);
}

TEST(Shmqd, AsyncQueueIsPersistedWithoutBlockingSenders) {
  TempDir dir;
  const std::string name = unique_name("async");
  auto q = Queue::create(name, durable(dir.path(), Durability::async)).value();
  Daemon d(dir.path(), name, dir.path() + "/d.log");
  ASSERT_TRUE(d.wait_for("persisting", 2));
  auto p = q.producer().value();
  for (std::uint64_t i = 1; i <= 1000; ++i) ASSERT_EQ(p.send_for(as_bytes("a"), 10s, i), Status::ok);
  // Persisted within a flush interval or so: wait for the cursor to pass them all.
  const auto give_up = std::chrono::steady_clock::now() + 10s;
  while (q.stats().persisted < 1000 && std::chrono::steady_clock::now() < give_up)
    std::this_thread::yield();
  EXPECT_GE(q.stats().persisted, 1000u);
  EXPECT_EQ(d.terminate(), 0);
  ASSERT_TRUE(Queue::remove(name).ok());
  Daemon d2(dir.path(), name, dir.path() + "/d2.log");
  ASSERT_TRUE(d2.wait_for("recovered messages republished"));
  auto rq = Queue::open(name).value();
  EXPECT_EQ(drain(rq).ids.size(), 1000u);
  (void)Queue::remove(name);
}

}  // namespace
}  // namespace shmq
