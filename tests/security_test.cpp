// Other users' files (issue 12, items 4 and 5): a dead-letter queue made by another user is
// never adopted, and a data dir written into the segment header by a group member is never
// purged on its word alone. The second user is `nobody` (uid 65534); the tests that need it
// run as root and are skipped otherwise.
#include <grp.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>

#include <gtest/gtest.h>

#include "segment/segment.hpp"
#include "test_util.hpp"

namespace shmq {
namespace {

using namespace std::chrono_literals;

constexpr uid_t kOtherUid = 65534;  // nobody

#define REQUIRE_ROOT()                                                                     \
  if (::geteuid() != 0)                                                                    \
  GTEST_SKIP() << "needs root to act as a second user (uid " << kOtherUid                 \
               << "); run the suite as root to check other users' files"

// Runs `body` in a child as uid 65534 with group `gid` (0: root's group, so that root is
// "a member of the group" of what it creates with mode 0660). Returns the child's exit code.
int as_other_user(gid_t gid, const std::function<int()>& body) {
  const pid_t pid = test::spawn([&] {
    if (::setgroups(0, nullptr) != 0 || ::setresgid(gid, gid, gid) != 0 ||
        ::setresuid(kOtherUid, kOtherUid, kOtherUid) != 0)
      return 90;
    return body();
  });
  return test::wait_exit(pid);
}

QueueOptions small(std::uint32_t mode = 0600) {
  QueueOptions o;
  o.slot_count = 16;
  o.slot_size = 128;
  o.mode = mode;
  return o;
}

uid_t shm_owner(const std::string& queue) {
  struct stat st {};
  if (::stat(("/dev/shm/" + detail::Segment::object_name(queue)).c_str(), &st) != 0)
    return static_cast<uid_t>(-1);
  return st.st_uid;
}

// Removes both segments at the end of a test, whoever owns them (the test runs as root).
struct ShmCleanup {
  std::string q;
  ~ShmCleanup() {
    (void)detail::Segment::remove(q);
    (void)detail::Segment::remove(Queue::dead_letter_name(q));
  }
};

TEST(OtherUsersDeadLetterQueue, PrecreatedDlqMakesCreateFailNamingItsOwner) {
  REQUIRE_ROOT();
  const std::string q = test::unique_name("dlqown");
  const std::string dlq = Queue::dead_letter_name(q);
  ShmCleanup cleanup{q};
  QueueOptions theirs = small();
  theirs.dead_letter = false;
  ASSERT_EQ(as_other_user(kOtherUid, [&] { return Queue::create(dlq, theirs).ok() ? 0 : 1; }), 0);
  ASSERT_EQ(shm_owner(dlq), kOtherUid);

  auto r = Queue::create(q, small());
  ASSERT_FALSE(r.ok()) << "adopted a dead-letter queue made by uid " << kOtherUid;
  EXPECT_EQ(r.error().code(), Errc::permission_denied);
  EXPECT_NE(r.error().message().find("owned by uid " + std::to_string(kOtherUid)),
            std::string::npos)
      << r.error().message();
  EXPECT_EQ(r.error().message().find('\n'), std::string::npos);
  EXPECT_EQ(Queue::open(q).error().code(), Errc::not_found) << "the queue was left behind";
  EXPECT_EQ(shm_owner(dlq), kOtherUid) << "the other user's segment was touched";
}

TEST(OtherUsersDeadLetterQueue, GroupSharedDlqOfAnotherUserIsRefusedAndTheMessageStays) {
  REQUIRE_ROOT();
  const std::string q = test::unique_name("dlqgrp");
  const std::string dlq = Queue::dead_letter_name(q);
  ShmCleanup cleanup{q};
  // Our queue, shared with group 0; its own DLQ replaced by a group member's 0660 one, which
  // we may open (same group): only its owner tells it apart.
  auto queue = Queue::create(q, small(0660));
  ASSERT_TRUE(queue.ok()) << queue.error().message();
  ASSERT_TRUE(detail::Segment::remove(dlq).ok());
  QueueOptions theirs = small(0660);
  theirs.dead_letter = false;
  ASSERT_EQ(as_other_user(0, [&] { return Queue::create(dlq, theirs).ok() ? 0 : 1; }), 0);
  ASSERT_EQ(shm_owner(dlq), kOtherUid);
  ASSERT_TRUE(Queue::open(dlq).ok()) << "the test needs a DLQ that opens";

  auto p = queue->producer();
  auto c = queue->consumer();
  ASSERT_TRUE(p.ok() && c.ok());
  ASSERT_EQ(p->send("poison"), Status::ok);
  Message m;
  ASSERT_EQ(c->receive_for(m, 5s), Status::ok);
  EXPECT_NE(c->nack(m, false), Status::ok) << "rejected into another user's queue";
  // Nothing reached the other user's queue, and the message is still ours, unacked.
  auto other = Queue::open(dlq);
  ASSERT_TRUE(other.ok());
  EXPECT_EQ(other->stats().tail, 0u);
  const QueueStats s = queue->stats();
  EXPECT_EQ(s.in_flight, 1u);
  EXPECT_EQ(s.acked, 0u);
  ASSERT_EQ(c->nack(m), Status::ok);
  Message again;
  ASSERT_EQ(c->receive_for(again, 5s), Status::ok);
  EXPECT_EQ(again.view(), "poison");
  EXPECT_EQ(c->ack(again), Status::ok);
}

#ifdef SHMQCTL_PATH
// Runs shmqctl with `args`, output to /dev/null; its exit code.
int shmqctl(const std::vector<std::string>& args) {
  const pid_t pid = test::spawn([&] {
    std::vector<char*> argv{const_cast<char*>("shmqctl")};
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    std::freopen("/dev/null", "w", stdout);
    std::freopen("/dev/null", "w", stderr);
    ::execv(SHMQCTL_PATH, argv.data());
    return 127;
  });
  return test::wait_exit(pid);
}

// Writes `dir` into the segment header's data_dir, as any writer of the segment can.
int write_header_data_dir(const std::string& q, const std::string& dir) {
  auto queue = Queue::open(q);
  if (!queue.ok()) return 1;
  detail::SegmentHeader& h = queue->segment()->header();
  std::memset(h.data_dir, 0, sizeof h.data_dir);
  std::memcpy(h.data_dir, dir.data(), dir.size());
  return 0;
}

TEST(PurgeData, GroupMembersHeaderWriteDoesNotRedirectThePurge) {
  char tmpl[] = "/tmp/shmq-security.XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::filesystem::path work = tmpl;
  struct RemoveAll {
    std::filesystem::path p;
    ~RemoveAll() {
      std::error_code ec;
      std::filesystem::remove_all(p, ec);
    }
  } remove_work{work};
  const std::string q = test::unique_name("purge");
  ShmCleanup cleanup{q};
  QueueOptions o = small(0660);
  o.durability = Durability::sync;
  o.data_dir = (work / "data").string();
  ASSERT_TRUE(Queue::create(q, o).ok());
  // Somebody's directory that happens to hold a <queue> subdirectory.
  const auto victim = work / "victim";
  std::filesystem::create_directories(victim / q);
  std::ofstream(victim / q / "precious") << "keep me\n";

  const bool root = ::geteuid() == 0;
  auto scribble = [&](const std::filesystem::path& dir) {
    // A group member of the 0660 queue (uid 65534 in group 0) when we are root.
    return root ? as_other_user(0, [&] { return write_header_data_dir(q, dir.string()); })
                : write_header_data_dir(q, dir.string());
  };
  ASSERT_EQ(scribble(victim), 0);
  EXPECT_EQ(shmqctl({"delete", q, "--purge-data"}), 1);
  EXPECT_TRUE(std::filesystem::exists(victim / q / "precious")) << "purged the planted path";

  if (root) {
    // The attacker's own directory with a queue.meta naming the queue: not the queue's
    // owner's, so still refused.
    const auto planted = work / "planted";
    std::filesystem::create_directories(planted / q);
    std::ofstream(planted / q / "queue.meta") << "name=" << q << "\n";
    ASSERT_EQ(::chown((planted / q).c_str(), kOtherUid, kOtherUid), 0);
    ASSERT_EQ(scribble(planted), 0);
    EXPECT_EQ(shmqctl({"delete", q, "--purge-data"}), 1);
    EXPECT_TRUE(std::filesystem::exists(planted / q / "queue.meta"));
  }
  // The true data dir, named on the command line, after the segment is gone.
  EXPECT_EQ(shmqctl({"delete", q}), 0);
  EXPECT_EQ(shmqctl({"delete", q, "--purge-data", "--data-dir", o.data_dir}), 0);
  EXPECT_FALSE(std::filesystem::exists(work / "data" / q));
}
#endif

}  // namespace
}  // namespace shmq
