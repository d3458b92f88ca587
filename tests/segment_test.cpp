// The segment: names, geometry, creation and the checks an opener makes on a segment it
// cannot trust (wrong magic, another layout version, too short, wrong owner or mode).
#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "log/file.hpp"
#include "platform/fd.hpp"
#include "segment/layout.hpp"
#include "segment/segment.hpp"
#include "test_util.hpp"

namespace shmq {
namespace {

using test::ScopedQueue;
using test::unique_name;

// Writes a raw /dev/shm object the way a foreign or hostile process could.
class RawObject {
 public:
  RawObject(const std::string& queue, std::size_t size, mode_t mode = 0600)
      : path_("/" + detail::Segment::object_name(queue)) {
    fd_ = ::shm_open(path_.c_str(), O_CREAT | O_EXCL | O_RDWR, mode);
    EXPECT_GE(fd_, 0) << std::strerror(errno);
    ::fchmod(fd_, mode);
    EXPECT_EQ(::ftruncate(fd_, static_cast<off_t>(size)), 0);
    size_ = size;
  }
  ~RawObject() {
    ::close(fd_);
    ::shm_unlink(path_.c_str());
  }
  void write(std::size_t offset, const void* data, std::size_t n) {
    ASSERT_EQ(::pwrite(fd_, data, n, static_cast<off_t>(offset)), static_cast<ssize_t>(n));
  }
  int fd() const { return fd_; }

 private:
  std::string path_;
  int fd_ = -1;
  std::size_t size_ = 0;
};

Errc open_error(const std::string& name) {
  auto q = Queue::open(name);
  EXPECT_FALSE(q.ok());
  return q.ok() ? Errc::ok : q.error().code();
}

std::string open_message(const std::string& name) {
  auto q = Queue::open(name);
  return q.ok() ? std::string() : q.error().message();
}

TEST(QueueName, ValidNamesPass) {
  for (const char* n : {"orders", "a", "orders.dlq", "A-b_c.9", "x.y.z"})
    EXPECT_EQ(Queue::validate_name(n), "") << n;
  EXPECT_EQ(Queue::validate_name(std::string(200, 'n')), "");
}

TEST(QueueName, BadNamesAreRefusedWithAReason) {
  EXPECT_NE(Queue::validate_name("").find("empty"), std::string::npos);
  EXPECT_NE(Queue::validate_name("a/b").find("'/'"), std::string::npos);
  EXPECT_NE(Queue::validate_name("..").find("'.'"), std::string::npos);
  EXPECT_NE(Queue::validate_name("a..b").find("'..'"), std::string::npos);
  EXPECT_NE(Queue::validate_name(".hidden").find("start"), std::string::npos);
  // A leading '-' would read as an option on every command line that names the queue.
  EXPECT_NE(Queue::validate_name("-x").find("may not start with '-'"), std::string::npos);
  EXPECT_EQ(Queue::create("-x").error().code(), Errc::invalid_argument);
  EXPECT_NE(Queue::validate_name("sp ace").find("only letters"), std::string::npos);
  EXPECT_NE(Queue::validate_name(std::string(201, 'n')).find("longer than 200"),
            std::string::npos);
  auto q = Queue::create("../etc/passwd");
  ASSERT_FALSE(q.ok());
  EXPECT_EQ(q.error().code(), Errc::invalid_argument);
  EXPECT_EQ(Queue::open("a/b").error().code(), Errc::invalid_argument);
  EXPECT_EQ(Queue::remove("a/b").error().code(), Errc::invalid_argument);
}

TEST(Geometry, BadOptionsAreRefusedWithAReason) {
  struct Case {
    QueueOptions o;
    const char* says;
  };
  const Case cases[] = {
      {{.slot_count = 1000}, "power of two"},
      {{.slot_count = 1}, "power of two"},
      {{.slot_count = 1u << 25}, "power of two"},
      {{.slot_size = 100}, "multiple of 64"},
      {{.slot_size = 64}, "multiple of 64"},
      {{.max_members = 0}, "max members"},
      {{.max_members = 256}, "max members"},
      {{.mode = 0666}, "mode"},
      {{.mode = 0644}, "mode"},
      {{.slot_count = 4, .slot_size = 128, .max_message_size = 257}, "does not fit"},
  };
  for (const Case& c : cases) {
    auto q = Queue::create(unique_name("geom"), c.o);
    ASSERT_FALSE(q.ok()) << c.says;
    EXPECT_EQ(q.error().code(), Errc::invalid_argument);
    EXPECT_NE(q.error().message().find(c.says), std::string::npos) << q.error().message();
  }
}

TEST(Geometry, OneMebibyteMessagesAreConfigurable) {
  ScopedQueue q("mib", {.slot_count = 256, .slot_size = 8192, .max_message_size = 1u << 20});
  auto p = q->producer().value();
  auto c = q->consumer().value();
  std::string big(1u << 20, '\0');
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = char(i * 131 % 251);
  ASSERT_EQ(p.try_send(big), Status::ok);
  Message m;
  ASSERT_EQ(c.try_receive(m), Status::ok);
  EXPECT_EQ(m.size(), big.size());
  EXPECT_TRUE(m.view() == big);
  EXPECT_EQ(c.ack(m), Status::ok);
}

TEST(Segment, OpenTakesGeometryFromTheSegment) {
  ScopedQueue q("geomopen", {.slot_count = 32, .slot_size = 512, .max_message_size = 2000,
                             .max_members = 9});
  auto o = Queue::open(q.name());
  ASSERT_TRUE(o.ok()) << o.error().message();
  EXPECT_EQ(o->slot_count(), 32u);
  EXPECT_EQ(o->slot_size(), 512u);
  EXPECT_EQ(o->max_message_size(), 2000u);
  EXPECT_EQ(o->max_members(), 9u);
  EXPECT_EQ(o->name(), q.name());
}

TEST(Segment, CreateOfAnExistingQueueFails) {
  ScopedQueue q("exists");
  auto again = Queue::create(q.name());
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code(), Errc::already_exists);
  EXPECT_NE(again.error().message().find("already exists"), std::string::npos);
  EXPECT_TRUE(Queue::open_or_create(q.name()).ok());
}

TEST(Segment, OpenOfAMissingQueueSaysNotFound) {
  const std::string name = unique_name("missing");
  EXPECT_EQ(open_error(name), Errc::not_found);
  EXPECT_NE(open_message(name).find("queue '" + name + "' not found"), std::string::npos);
  EXPECT_EQ(Queue::remove(name).error().code(), Errc::not_found);
}

TEST(Segment, ModeIsExactWhateverTheUmask) {
  for (std::uint32_t mode : {0600u, 0660u}) {
    const mode_t old = ::umask(0077);
    ScopedQueue q("mode", {.mode = mode});
    ::umask(old);
    struct stat st {};
    ASSERT_EQ(::stat(("/dev/shm/" + detail::Segment::object_name(q.name())).c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, mode);
  }
}

TEST(Segment, MemoryIsReservedAtCreate) {
  ScopedQueue q("reserved", {.slot_count = 1024, .slot_size = 1024});
  struct stat st {};
  ASSERT_EQ(::stat(("/dev/shm/" + detail::Segment::object_name(q.name())).c_str(), &st), 0);
  // posix_fallocate: blocks are allocated, not a sparse file that SIGBUSes when tmpfs fills.
  EXPECT_GE(static_cast<std::uint64_t>(st.st_blocks) * 512, 1024u * 1024u);
}

TEST(Segment, WrongMagicIsRefused) {
  const std::string name = unique_name("magic");
  RawObject raw(name, 8192);
  const char junk[] = "this is not a queue";
  raw.write(0, junk, sizeof junk);
  EXPECT_EQ(open_error(name), Errc::bad_magic);
  EXPECT_NE(open_message(name).find("not an shmq segment"), std::string::npos);
}

TEST(Segment, ForeignLayoutVersionIsRefused) {
  ScopedQueue q("version");
  q->segment()->header().version.store(detail::kLayoutVersion + 1);
  EXPECT_EQ(open_error(q.name()), Errc::incompatible_version);
  EXPECT_NE(open_message(q.name()).find("layout version " + std::to_string(detail::kLayoutVersion + 1)),
            std::string::npos);
}

TEST(Segment, SegmentShorterThanItsHeaderIsRefused) {
  const std::string name = unique_name("short");
  RawObject raw(name, 100);
  EXPECT_EQ(open_error(name), Errc::corrupt);
  EXPECT_NE(open_message(name).find("smaller than its"), std::string::npos);
}

TEST(Segment, SegmentShorterThanItsGeometryIsRefused) {
  // A valid header claiming a ring larger than the object: refuse, never map past the end.
  ScopedQueue q("shortring", {.slot_count = 64, .slot_size = 256});
  const std::string name = unique_name("shortring-copy");
  RawObject raw(name, 4096 * 2);
  raw.write(0, &q->segment()->header(), sizeof(detail::SegmentHeader));
  EXPECT_EQ(open_error(name), Errc::corrupt);
  EXPECT_NE(open_message(name).find("geometry needs"), std::string::npos);
}

TEST(Segment, ScribbledGeometryIsRefused) {
  ScopedQueue q("scribble", {.slot_count = 64});
  auto& h = q->segment()->header();
  h.slot_count = 63;  // not a power of two
  EXPECT_EQ(open_error(q.name()), Errc::corrupt);
  h.slot_count = 64;
  h.slot_shift = 5;
  EXPECT_EQ(open_error(q.name()), Errc::corrupt);
  h.slot_shift = 6;
  h.max_message_size = 1u << 30;
  EXPECT_EQ(open_error(q.name()), Errc::corrupt);
  h.max_message_size = 192;
  EXPECT_TRUE(Queue::open(q.name()).ok());
}

TEST(Segment, UninitialisedSegmentTimesOutWithAClearError) {
  // What a creator that died between create and publish leaves behind.
  const std::string name = unique_name("uninit");
  RawObject raw(name, 8192);
  EXPECT_EQ(open_error(name), Errc::not_initialized);
  EXPECT_NE(open_message(name).find("never initialised"), std::string::npos);
}

TEST(Segment, WorldWritableSegmentIsRefused) {
  const std::string name = unique_name("world");
  RawObject raw(name, 8192, 0666);
  EXPECT_EQ(open_error(name), Errc::permission_denied);
  EXPECT_NE(open_message(name).find("mode 0666"), std::string::npos);
}

TEST(Segment, SegmentOwnedByAnotherUserIsRefused) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to chown a segment to another user";
  ScopedQueue q("owner");
  const std::string path = "/dev/shm/" + detail::Segment::object_name(q.name());
  ASSERT_EQ(::chown(path.c_str(), 1001, 1001), 0);
  EXPECT_EQ(open_error(q.name()), Errc::permission_denied);
  EXPECT_NE(open_message(q.name()).find("owned by uid 1001 with mode 0600 (you are uid 0)"),
            std::string::npos)
      << open_message(q.name());
}

TEST(Segment, RemoveMakesTheNameFreeAgain) {
  const std::string name = unique_name("remove");
  {
    auto q = Queue::create(name);
    ASSERT_TRUE(q.ok());
    ASSERT_TRUE(Queue::remove(name).ok());
    // The old mapping keeps working for whoever holds it.
    auto p = q->producer().value();
    EXPECT_EQ(p.try_send("still fine"), Status::ok);
  }
  EXPECT_EQ(open_error(name), Errc::not_found);
  auto again = Queue::create(name);
  EXPECT_TRUE(again.ok());
  (void)Queue::remove(name);
}

TEST(Segment, ReadableByOthersIsRefusedAndSaysRead) {
  const std::string name = unique_name("readable");
  RawObject raw(name, 8192, 0644);
  EXPECT_EQ(open_error(name), Errc::permission_denied);
  EXPECT_NE(open_message(name).find("mode 0644 lets any user read it"), std::string::npos)
      << open_message(name);
}

TEST(Segment, ADirectoryUnderTheNameIsNamedAsOne) {
  const std::string name = unique_name("isdir");
  const std::string path = "/dev/shm/" + detail::Segment::object_name(name);
  ASSERT_EQ(::mkdir(path.c_str(), 0700), 0) << std::strerror(errno);
  auto q = Queue::open(name);
  ASSERT_FALSE(q.ok());
  EXPECT_EQ(q.error().code(), Errc::bad_magic);
  EXPECT_NE(q.error().message().find("is a directory, not an shmq segment"), std::string::npos)
      << q.error().message();
  auto oc = Queue::open_or_create(name);
  ASSERT_FALSE(oc.ok());
  EXPECT_NE(oc.error().message().find("is a directory"), std::string::npos)
      << oc.error().message();
  ::rmdir(path.c_str());
}

TEST(Segment, AFifoUnderTheNameIsNamedAsOneWhateverItsMode) {
  const std::string name = unique_name("isfifo");
  const std::string path = "/dev/shm/" + detail::Segment::object_name(name);
  ASSERT_EQ(::mkfifo(path.c_str(), 0600), 0) << std::strerror(errno);
  ASSERT_EQ(::chmod(path.c_str(), 0644), 0);  // the type is the problem, not the mode
  EXPECT_EQ(open_error(name), Errc::bad_magic);
  EXPECT_NE(open_message(name).find("is a FIFO, not an shmq segment"), std::string::npos)
      << open_message(name);
  ::unlink(path.c_str());
}

// Every descriptor open in this process whose target contains `needle`: -1 if one is
// below 3, -2 if one lacks close-on-exec, else how many there are.
int check_descriptors(const std::string& needle) {
  DIR* d = ::opendir("/proc/self/fd");
  if (d == nullptr) return -3;
  int found = 0, bad = 0;
  while (const dirent* e = ::readdir(d)) {
    const int fd = std::atoi(e->d_name);
    if (e->d_name[0] == '.' || fd == ::dirfd(d)) continue;
    char target[4096];
    const std::string link = std::string("/proc/self/fd/") + e->d_name;
    const ssize_t n = ::readlink(link.c_str(), target, sizeof target - 1);
    if (n < 0) continue;
    target[n] = '\0';
    if (std::string(target).find(needle) == std::string::npos) continue;
    ++found;
    if (fd < 3) bad = bad == 0 ? -1 : bad;
    else if ((::fcntl(fd, F_GETFD) & FD_CLOEXEC) == 0) bad = bad == 0 ? -2 : bad;
  }
  ::closedir(d);
  return bad != 0 ? bad : found;
}

// With fds 0, 1 and 2 closed, as a daemon or a careless shell leaves them, the library must
// not hand any of them to a segment, a log file, a directory or a lock: the program's next
// printf would write into it (issue 12). Every descriptor it keeps is close-on-exec.
TEST(Descriptors, TheLibraryNeverTakesFdsZeroToTwo) {
  const std::string name = unique_name("fds");
  const std::string dir = std::filesystem::temp_directory_path() / ("shmq-" + name);
  const pid_t child = test::spawn([&] {
    ::close(0);
    ::close(1);
    ::close(2);
    QueueOptions o;
    o.durability = Durability::async;  // create writes queue.meta in the data dir
    o.data_dir = dir;
    auto q = Queue::create(name, o);
    if (!q.ok()) return 10;
    auto opened = Queue::open(name);
    if (!opened.ok()) return 11;
    auto p = opened->producer();
    auto c = opened->consumer();
    if (!p.ok() || !c.ok() || p->send("intact") != Status::ok) return 12;
    auto fsd = log::posix_file_system().open_dir(dir + "/" + name, {});
    if (!fsd.ok()) return 13;
    auto lock = fsd.value()->lock("LOCK", false);
    auto file = fsd.value()->create_file("f");
    auto listed = fsd.value()->list();
    if (!lock.ok() || !file.ok() || !listed.ok()) return 14;
    // Still closed. The embedded watchdog's thread may be between an open() that got one
    // of them and the dup that moves it above 2 (fd_above_stdio) at the moment we look:
    // look again until all three are closed at once (a descriptor kept there would stay).
    int open_low = -1;
    for (int attempt = 0; attempt < 10000; ++attempt) {
      open_low = -1;
      for (int fd = 0; fd <= 2 && open_low < 0; ++fd)
        if (::fcntl(fd, F_GETFD) != -1 || errno != EBADF) open_low = fd;
      if (open_low < 0) break;
      std::this_thread::yield();
    }
    if (open_low >= 0) return 20 + open_low;
    // The data dir, its lock and file are held open: off 0-2 and close-on-exec.
    if (check_descriptors(dir) < 3) return 30 + (check_descriptors(dir) < 0 ? 1 : 0);
    // The segment keeps no descriptor at all once mapped.
    if (check_descriptors("/dev/shm/shmq." + name) != 0) return 32;
    Message m;
    if (c->try_receive(m) != Status::ok || m.view() != "intact") return 40;
    (void)c->ack(m);
    return 0;
  });
  EXPECT_EQ(test::wait_exit(child), 0);
  auto q = Queue::open(name);
  ASSERT_TRUE(q.ok()) << q.error().message();  // the header was not written over
  (void)Queue::remove(name);
  std::filesystem::remove_all(dir);
}

TEST(Descriptors, ALowDescriptorIsMovedAboveTwoAndTheLowOneClosed) {
  const pid_t child = test::spawn([] {
    ::close(0);
    const int low = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (low != 0) return 10;
    const int fd = detail::fd_above_stdio(low);
    if (fd < 3) return 11;
    if ((::fcntl(fd, F_GETFD) & FD_CLOEXEC) == 0) return 12;
    if (::fcntl(0, F_GETFD) != -1 || errno != EBADF) return 13;  // the low one is free again
    if (detail::fd_above_stdio(fd) != fd) return 14;              // 3 and up: unchanged
    errno = ENOENT;
    if (detail::fd_above_stdio(-1) != -1 || errno != ENOENT) return 15;  // open's error kept
    return 0;
  });
  EXPECT_EQ(test::wait_exit(child), 0);
}

// The tools' first call: closed 0-2 are filled, but stay unusable in their direction, so a
// program still sees "stdout is closed" as a write error and not as a sink.
TEST(Descriptors, ClosedStdioIsFilledButStaysUnusable) {
  const pid_t child = test::spawn([] {
    ::close(0);
    ::close(1);
    if (!detail::make_stdio_valid()) return 10;
    if (::fcntl(0, F_GETFD) == -1 || ::fcntl(1, F_GETFD) == -1) return 11;
    char c;
    if (::read(0, &c, 1) != -1 || errno != EBADF) return 12;
    if (::write(1, "x", 1) != -1 || errno != EBADF) return 13;
    // A descriptor opened now lands above 2.
    const int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    return fd > 2 ? 0 : 14;
  });
  EXPECT_EQ(test::wait_exit(child), 0);
}

TEST(Segment, OpenOrCreateRefusesOtherGeometryOrPolicy) {
  ScopedQueue q("oc-mismatch", {.slot_count = 64, .lease = std::chrono::milliseconds(2000)});
  // The same options: it opens.
  EXPECT_TRUE(
      Queue::open_or_create(q.name(), {.slot_count = 64, .lease = std::chrono::milliseconds(2000)})
          .ok());
  // Another geometry and another policy: refused, naming each field.
  auto other = Queue::open_or_create(q.name(), {.slot_count = 128, .max_deliveries = 3});
  ASSERT_FALSE(other.ok());
  EXPECT_EQ(other.error().code(), Errc::mismatch);
  const std::string& msg = other.error().message();
  EXPECT_NE(msg.find("slot_count (queue: 64, given: 128)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("lease (queue: 2000 ms, given: 30000 ms)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("max_deliveries (queue: 20, given: 3)"), std::string::npos) << msg;
  EXPECT_EQ(msg.find("slot_size"), std::string::npos) << msg;
  // max_message_size 0 means one slot's payload: equal to the queue's resolved value.
  EXPECT_TRUE(Queue::open_or_create(q.name(), {.slot_count = 64,
                                               .max_message_size = 192,
                                               .lease = std::chrono::milliseconds(2000)})
                  .ok());
  EXPECT_EQ(Queue::open_or_create(q.name(), {.slot_count = 64,
                                             .lease = std::chrono::milliseconds(2000),
                                             .dead_letter = false})
                .error()
                .code(),
            Errc::mismatch);
  EXPECT_TRUE(Queue::open(q.name()).ok());  // open() attaches whatever the options
}

TEST(Segment, SetPolicyChangesItForEveryHandleAndOpenOrCreateComparesTheNewOne) {
  ScopedQueue q("setpolicy");
  auto other = Queue::open(q.name()).value();
  ASSERT_TRUE(q->set_policy({.lease = std::chrono::milliseconds(1500),
                             .max_deliveries = 7,
                             .ttl = std::chrono::milliseconds(60000),
                             .backoff_initial = std::chrono::milliseconds(10),
                             .backoff_max = std::chrono::milliseconds(100)})
                  .ok());
  const QueueOptions o = other.options();
  EXPECT_EQ(o.lease, std::chrono::milliseconds(1500));
  EXPECT_EQ(o.max_deliveries, 7u);
  EXPECT_EQ(o.ttl, std::chrono::milliseconds(60000));
  EXPECT_EQ(o.backoff_initial, std::chrono::milliseconds(10));
  EXPECT_EQ(o.backoff_max, std::chrono::milliseconds(100));
  EXPECT_EQ(o.slot_count, 1024u);  // nothing else changed
  // A field left empty keeps its value.
  ASSERT_TRUE(other.set_policy({.max_deliveries = 0}).ok());
  EXPECT_EQ(q->options().lease, std::chrono::milliseconds(1500));
  EXPECT_EQ(q->options().max_deliveries, 0u);
  // Validated like create's options.
  auto bad = q->set_policy({.lease = std::chrono::milliseconds(-1)});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code(), Errc::invalid_argument);
  EXPECT_EQ(q->options().lease, std::chrono::milliseconds(1500));
  EXPECT_EQ(Queue::open_or_create(q.name()).error().code(), Errc::mismatch);
}

TEST(Segment, ValueOfAnErrorThrowsTheErrorNotBadVariantAccess) {
  auto r = Queue::open(unique_name("never-made"));
  ASSERT_FALSE(r.ok());
  try {
    (void)r.value();
    ADD_FAILURE() << "value() did not throw";
  } catch (const BadResultAccess& e) {
    EXPECT_EQ(e.error().code(), Errc::not_found);
    EXPECT_EQ(e.error().message(), r.error().message());
    EXPECT_NE(std::string(e.what()).find(r.error().message()), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("not found"), std::string::npos) << e.what();
  }
  EXPECT_THROW((void)r->name(), BadResultAccess);
  // error() of a value is an Error with code ok, not an exception.
  ScopedQueue q("valueok");
  auto ok = Queue::open(q.name());
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(ok.error().code(), Errc::ok);
}

TEST(Segment, ANameWhoseDeadLetterQueueWouldNotFitIsRefusedAtCreate) {
  const std::string name = unique_name("long") + std::string(
      detail::kMaxNameLength - 2 - unique_name("long").size(), 'x');
  ASSERT_LE(name.size(), detail::kMaxNameLength);
  ASSERT_GT(name.size() + 4, detail::kMaxNameLength);
  auto q = Queue::create(name);
  ASSERT_FALSE(q.ok());
  EXPECT_EQ(q.error().code(), Errc::invalid_argument);
  EXPECT_NE(q.error().message().find("at most 196"), std::string::npos) << q.error().message();
  // Without dead letters the whole 200 are available.
  auto plain = Queue::create(name, {.dead_letter = false});
  ASSERT_TRUE(plain.ok()) << plain.error().message();
  EXPECT_TRUE(Queue::remove(name).ok());
}

TEST(Segment, RemovedQueueClosesBlockedReceiversAndSenders) {
  std::string name = unique_name("closed");
  auto q = Queue::create(name, {.slot_count = 2}).value();
  auto c = q.consumer().value();
  auto p = q.producer().value();
  ASSERT_EQ(p.send("a"), Status::ok);
  ASSERT_EQ(p.send("b"), Status::ok);  // full now
  Status sent = Status::ok;
  std::thread sender([&] { sent = p.send("c"); });  // waits for room that never comes
  ASSERT_TRUE(Queue::remove(name).ok());
  sender.join();
  EXPECT_EQ(sent, Status::closed);
  // What was in the ring can still be taken; then receive says closed instead of waiting.
  Message m;
  ASSERT_EQ(c.receive(m), Status::ok);
  ASSERT_EQ(c.ack(m), Status::ok);
  ASSERT_EQ(c.receive(m), Status::ok);
  ASSERT_EQ(c.ack(m), Status::ok);
  // A new queue of the same name does not reopen the old one.
  auto again = Queue::create(name).value();
  auto p2 = again.producer().value();
  ASSERT_EQ(p2.send("new"), Status::ok);
  Status got = Status::ok;
  std::thread receiver([&] { got = c.receive(m); });
  receiver.join();
  EXPECT_EQ(got, Status::closed);
  EXPECT_EQ(c.receive_for(m, std::chrono::hours(1)), Status::closed);
  (void)Queue::remove(name);
}

TEST(Segment, RemoveWakesAReceiverAlreadyAsleep) {
  std::string name = unique_name("closedwake");
  auto q = Queue::create(name).value();
  auto c = q.consumer().value();
  Status got = Status::ok;
  std::atomic<bool> started{false};
  std::thread receiver([&] {
    Message m;
    started = true;
    got = c.receive(m);
  });
  // Wait until it sleeps on the futex (its waiting bit is set): remove must wake it.
  const auto& line = q.segment()->header().consumers_wait;
  while (!started || (line.waiting[0].load() == 0 && line.waiting[1].load() == 0 &&
                      line.waiting[2].load() == 0 && line.waiting[3].load() == 0))
    std::this_thread::yield();
  ASSERT_TRUE(Queue::remove(name).ok());
  receiver.join();
  EXPECT_EQ(got, Status::closed);
}

TEST(Segment, ErrorsHaveNames) {
  EXPECT_EQ(to_string(Errc::bad_magic), "bad magic");
  EXPECT_EQ(to_string(Status::full), "full");
  EXPECT_EQ(to_string(Status::lease_lost), "lease lost");
  EXPECT_EQ(to_string(Status::closed), "closed");
  EXPECT_EQ(to_string(Status::no_persister), "no persister");
  EXPECT_EQ(to_string(Status::unconfirmed), "unconfirmed");
  EXPECT_EQ(to_string(Errc::mismatch), "options mismatch");
}

}  // namespace
}  // namespace shmq
