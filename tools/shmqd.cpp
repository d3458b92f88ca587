// shmqd: persists durable shmq queues and runs their watchdog.
//
//   shmqd --data-dir DIR QUEUE...
//
// For each queue (files in DIR/QUEUE/): takes the directory's lock (a second shmqd on the
// same dir waits as a hot standby and takes over when the lock is released, by exit or by
// the kernel when the holder dies), recovers the log, reattaches to the queue's segment or
// rebuilds it from the log (after a reboot), then persists with group commit and heals with
// the watchdog until SIGTERM or SIGINT (flush, checkpoint, exit 0). A failed write or
// fdatasync is fatal: the daemon stops confirming and exits 1; a restart recovers from the
// log. A configuration error (a bad option, a queue never created, a data dir that is not
// ours) exits 2: a restart cannot fix it, and the systemd unit does not restart on 2
// (RestartPreventExitStatus=2). Stays in the foreground, logging plain lines to stderr.
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <fmt/core.h>
#include <fmt/printf.h>
#include <systemd/sd-daemon.h>

#include "log/file.hpp"
#include "log/wal.hpp"
#include "persist/meta.hpp"
#include "persist/persister.hpp"
#include "persist/republish.hpp"
#include "platform/crash_point.hpp"
#include "platform/process.hpp"
#include "platform/fd.hpp"
#include "segment/segment.hpp"
#include "shmq/shmq.hpp"
#include "topic/topic_internal.hpp"
#include "topic/topic_log.hpp"

namespace {

std::atomic<bool> g_stop{false};
std::atomic<std::size_t> g_ready_queues{0};
std::atomic<int> g_exit_code{0};

// Exit codes (shmqd --help, shmqd(8), tools/shmqd.service.in).
constexpr int kExitRuntime = 1;  // a fatal runtime error: a restart recovers from the log
constexpr int kExitConfig = 2;   // usage or configuration: a restart would fail the same way
std::mutex g_log_mutex;

// Log lines that could not be written (stderr closed, a full disk behind 2>/dev/full, a
// formatting failure); said in the last line, in case stderr works again by then.
std::atomic<std::uint64_t> g_log_dropped{0};

// One plain line per event on stderr (journald adds its own timestamp under systemd; we
// add one for humans and files): "<UTC time> shmqd[<pid>]: <text>".
//
// Never throws and never stops the daemon: a line that cannot be written is dropped and
// counted. fmt reports a failed write by throwing (issue 12: 2>/dev/full made shmqd abort
// with the exception escaping a worker thread); persisting matters more than telling.
template <typename... Args>
void logf(const char* format, const Args&... args) noexcept {
  try {
    char when[32];
    const std::time_t now = std::time(nullptr);
    std::tm tm{};
    ::gmtime_r(&now, &tm);
    std::strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    const std::string text = fmt::sprintf(format, args...);
    std::lock_guard<std::mutex> lock(g_log_mutex);
    try {
      fmt::print(stderr, "{} shmqd[{}]: {}\n", when, ::getpid(), text);
      if (std::fflush(stderr) != 0) throw std::runtime_error("fflush");
    } catch (...) {
      // The next line tries again: the error indicator would otherwise stick.
      std::clearerr(stderr);
      throw;
    }
  } catch (...) {
    g_log_dropped.fetch_add(1, std::memory_order_relaxed);
  }
}

// The first fatal error's code is the exit code: a queue stopped by another queue's fatal
// error must not turn a configuration error into a runtime failure.
void stop_with(int code) {
  int none = 0;
  g_exit_code.compare_exchange_strong(none, code);
  g_stop.store(true);
}

void fatal(const std::string& queue, const std::string& what) {
  logf("queue '%s': FATAL: %s; exiting (restart shmqd to recover from the log)", queue.c_str(),
       what.c_str());
  stop_with(kExitRuntime);
}

// A queue shmqd cannot serve as configured (never created, not durable, named otherwise in
// its queue.meta, a data dir another user owns or may write): exit 2, which systemd does not
// restart, instead of 1, which it would restart every second to fail the same way.
void config_error(const std::string& queue, const std::string& what) {
  logf("queue '%s': FATAL: configuration: %s; exiting (exit code 2)", queue.c_str(), what.c_str());
  stop_with(kExitConfig);
}

// A failed data dir or queue.meta: the administrator's to fix (missing, not ours, writable by
// others, unreadable to us, malformed), or a runtime failure (EIO, ENOSPC and other errno).
void fail_on(const std::string& queue, const shmq::Error& e, const std::string& context = "") {
  const std::string what = context.empty() ? e.message() : context + ": " + e.message();
  switch (e.code()) {
    case shmq::Errc::invalid_argument:
    case shmq::Errc::not_found:
    case shmq::Errc::permission_denied:
    case shmq::Errc::corrupt:
      return config_error(queue, what);
    default:
      return fatal(queue, what);
  }
}

void usage(std::FILE* out) {
  std::fprintf(out,
               "usage: shmqd --data-dir DIR [--metrics-file PATH] [OPTION...] QUEUE...\n"
               "       shmqd --mark-down --metrics-file PATH\n"
               "       shmqd --version\n"
               "\n"
               "Persists each durable QUEUE to DIR/QUEUE/ and runs its watchdog; for a QUEUE\n"
               "without durability (no DIR/QUEUE/queue.meta), runs its watchdog and metrics.\n"
               "  --data-dir DIR   the data dir the queues were created with (shmqctl create\n"
               "                   --data-dir DIR); DIR/QUEUE/queue.meta describes each queue\n"
               "  --standby-poll-ms MS  how often a hot standby retries the lock (default 100)\n"
               "  --takeover-ms MS  a standby fences (SIGKILL) an active shmqd that made no\n"
               "                   progress for MS and takes over (default 5000)\n"
               "  --segment-bytes N  log segment file size before rotating (default 64 MiB,\n"
               "                   at least 4096); closed segments are compacted when their\n"
               "                   dead bytes outweigh their live ones and one segment\n"
               "  --group-wait-us US  sync queues: how long an fdatasync may wait for more\n"
               "                   senders (those woken by the last one) to commit; also at\n"
               "                   most a quarter of the recent fdatasync time; 0 = never\n"
               "                   (default 500)\n"
               "  --stop-on-corruption  refuse to start when the log is corrupt in the middle\n"
               "                   (default: report the damage, skip past it, go on)\n"
               "  --metrics-file PATH  write the queues' figures in Prometheus text format to\n"
               "                   PATH every second (for node_exporter's textfile collector);\n"
               "                   a clean stop writes it once more with shmq_up 0\n"
               "  --mark-down      only set every shmq_up and shmq_topic_up in the metrics\n"
               "                   file to 0 and exit (after a crash: systemd's ExecStopPost)\n"
               "  --version        print \"shmqd VERSION\" and exit\n"
               "  -h, --help       this text\n"
               "QUEUE: 1-200 characters of [A-Za-z0-9._-], not starting with '.' or '-', no\n"
               "'..'; 1-196 for a queue with dead letters (QUEUE.dlq must fit 200).\n"
               "A queue with priorities (shmqctl create --max-priority N) is served with its\n"
               "levels QUEUE.p1 .. QUEUE.pN, a ring and a log each (DIR/QUEUE.pN/), and a\n"
               "durable queue with its dead-letter queue QUEUE.dlq.\n"
               "Exit codes: 0 ok (SIGTERM or SIGINT: flush, checkpoint, exit 0), 1 runtime\n"
               "failure (a fatal error, see the log), 2 usage or configuration error (bad flag,\n"
               "value or name; a queue never created or not durable; a data dir not ours).\n");
}

int g_takeover_ms = 5000;

// The active shmqd of `queue` as its persister row in the segment names it: pid, process
// start time and heartbeat age. False if there is no segment or no live persister row.
bool primary_of(const std::string& queue, pid_t& pid, std::uint64_t& start_time,
                std::uint64_t& age_ms) {
  auto seg = shmq::detail::Segment::open(queue);
  if (!seg.ok()) return false;
  shmq::detail::Segment& s = *seg.value();
  const std::uint64_t now = shmq::detail::monotonic_coarse_ns();
  for (std::uint32_t i = 0; i < s.max_members(); ++i) {
    const std::uint64_t w = s.member(i).state.load(std::memory_order_acquire);
    if (shmq::detail::member_status(w) != shmq::detail::MemberStatus::active ||
        shmq::detail::member_role(w) != shmq::detail::Role::persister)
      continue;
    pid = static_cast<pid_t>(shmq::detail::member_pid(w));
    start_time = s.member(i).start_time.load(std::memory_order_relaxed);
    const std::uint64_t beat = s.member(i).heartbeat_ns.load(std::memory_order_relaxed);
    age_ms = now > beat ? (now - beat) / 1'000'000 : 0;
    return pid > 0 && pid != ::getpid();
  }
  return false;
}

// Holds DIR/QUEUE/LOCK with flock: released by the kernel when this process dies. A standby
// waits for it; if the active shmqd stops making progress (its persister's heartbeat in the
// segment older than --takeover-ms: SIGSTOPped, livelocked, stuck), the standby fences it
// with SIGKILL (after checking pid and process start time, so a reused pid is never hit)
// and takes the lock when the kernel releases it, that is once the old process is gone:
// there are never two writers, and a stopped primary cannot resume to write or confirm.
int take_lock(const std::string& dir, const std::string& queue, int poll_ms) {
  const std::string path = dir + "/LOCK";
  const int fd = shmq::detail::fd_above_stdio(
      ::open(path.c_str(), O_CREAT | O_RDWR | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (fd < 0) {
    fatal(queue, "cannot open " + path + ": " + std::strerror(errno));
    return -1;
  }
  bool said = false;
  pid_t fenced = 0;
  while (!g_stop.load()) {
    if (::flock(fd, LOCK_EX | LOCK_NB) == 0) {
      if (said) logf("queue '%s': lock acquired, taking over", queue.c_str());
      return fd;
    }
    if (errno != EWOULDBLOCK && errno != EINTR) {
      fatal(queue, "flock " + path + ": " + std::strerror(errno));
      ::close(fd);
      return -1;
    }
    if (!said) {
      logf("queue '%s': %s is locked by another shmqd; waiting as hot standby (takeover "
           "after %d ms without progress)", queue.c_str(), path.c_str(), g_takeover_ms);
      said = true;
    }
    pid_t pid = 0;
    std::uint64_t start = 0, age_ms = 0;
    if (primary_of(queue, pid, start, age_ms) && pid != fenced &&
        age_ms > static_cast<std::uint64_t>(g_takeover_ms) &&
        shmq::detail::process_alive(pid, start) && start != 0 &&
        shmq::detail::process_start_time(pid) == start) {
      logf("queue '%s': the active shmqd (pid %d) has made no progress for %llu ms: fencing it "
           "with SIGKILL and taking over", queue.c_str(), static_cast<int>(pid),
           static_cast<unsigned long long>(age_ms));
      if (::kill(pid, SIGKILL) == 0)
        fenced = pid;
      else
        logf("queue '%s': cannot fence pid %d: %s; still waiting", queue.c_str(),
             static_cast<int>(pid), std::strerror(errno));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(poll_ms));  // standby poll
  }
  ::close(fd);
  return -1;
}

bool g_stop_on_corruption = false;
std::uint64_t g_segment_bytes = 64ull << 20;
long g_group_wait_us = 500;  // --group-wait-us

// A queue that lives in memory only (durability none): nothing to persist, but shmqd still
// runs its watchdog (elected with the attached processes' embedded ones) and exports its
// metrics, so that `shmqd QUEUE...` serves every queue it is given.
void serve_memory(const std::string& queue, shmq::Queue& q) {
  auto watchdog = shmq::Watchdog::attach(q);
  if (!watchdog.ok()) return fatal(queue, watchdog.error().message());
  watchdog->start();
  logf("queue '%s': serving (durability none: watchdog and metrics, nothing to persist)",
       queue.c_str());
  g_ready_queues.fetch_add(1);
  while (!g_stop.load())
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // the watchdog thread works
  watchdog->stop();
  logf("queue '%s': stopped cleanly", queue.c_str());
}

// A topic (issue 15; in memory only): shmqd heals it every tick, so that a topic whose
// subscribers and publishers all died, or that nobody waits on, is repaired without them:
// dead subscribers' holds go back to their groups, dead publishers' claims become holes,
// stall policies apply. Metrics per group.
void serve_topic(const std::string& name, shmq::Topic& t) {
  logf("topic '%s': serving (heals groups, metrics; %u group rows)", name.c_str(),
       t.options().max_groups);
  g_ready_queues.fetch_add(1);
  while (!g_stop.load()) {
    if (t.segment()->removed()) {
      logf("topic '%s': removed; stopped serving it", name.c_str());
      return;
    }
    if (const std::uint64_t n = t.heal(); n != 0)
      logf("topic '%s': healed %llu (redelivered holds, holes, dead rows)", name.c_str(),
           static_cast<unsigned long long>(n));
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // the healer's tick
  }
  logf("topic '%s': stopped cleanly", name.c_str());
}

// A durable topic (issue 15): its retained log in DIR/TOPIC/ (topic/topic_log.hpp). After a
// reboot (no segment) the topic is rebuilt from DIR/TOPIC/topic.meta, its groups' .meta
// files and their saved positions; the ring starts at the log's end and subscribers replay
// the rest from the log.
void serve_topic_durable(const std::string& root, const std::string& name, int poll_ms) {
  namespace d = shmq::detail;
  auto qdir = d::prepare_data_dir(d::queue_dir(root, name));
  if (!qdir.ok()) return fail_on(name, qdir.error());
  const std::string dir = qdir.value();
  const int lock = take_lock(dir, name, poll_ms);
  if (lock < 0) return;
  auto opened = shmq::log::posix_file_system().open_dir(dir, {.create = false, .require_private = true});
  if (!opened.ok()) return fail_on(name, opened.error());
  auto meta_bytes = opened.value()->read_all(d::kTopicMetaFile);
  if (!meta_bytes.ok()) return fail_on(name, meta_bytes.error(), "topic");
  auto meta = d::parse_topic_meta(meta_bytes.value(), name);
  if (!meta.ok()) return fail_on(name, meta.error());
  shmq::TopicOptions options = meta.value();
  options.data_dir = root;
  // Groups and their saved positions.
  std::vector<d::RecoveredGroup> groups;
  std::map<std::string, std::pair<std::uint64_t, std::uint64_t>> saved;  // floor, dispatch
  if (auto pos = opened.value()->read_all(d::kTopicPositionsFile); pos.ok()) {
    std::istringstream in(std::string(reinterpret_cast<const char*>(pos.value().data()), pos.value().size()));
    std::string line;
    while (std::getline(in, line)) {
      std::istringstream ls(line);
      std::string g;
      std::uint64_t f = 0, dsp = 0;
      if (ls >> g >> f) {
        if (!(ls >> dsp)) dsp = f;
        saved[g] = {f, dsp};
      }
    }
  }
  auto names = opened.value()->list();
  if (!names.ok()) return fatal(name, names.error().message());
  for (const auto& n : names.value()) {
    if (!n.starts_with("group-") || !n.ends_with(".meta")) continue;
    auto b = opened.value()->read_all(n);
    if (!b.ok()) return fatal(name, b.error().message());
    auto gm = d::parse_group_meta(b.value());
    if (!gm.ok()) return fail_on(name, gm.error(), dir + "/" + n);
    const auto it = saved.find(gm.value().name);
    d::RecoveredGroup rg{gm.value().name, gm.value().options, gm.value().start, gm.value().start};
    if (it != saved.end()) std::tie(rg.floor, rg.dispatch) = it->second;
    groups.push_back(rg);
  }
  auto writer = d::TopicLogWriter::open(std::move(opened.value()), g_segment_bytes);
  if (!writer.ok()) return fatal(name, "topic log recovery failed: " + writer.error().message());
  d::TopicLogWriter& log = *writer.value();
  std::shared_ptr<d::Segment> seg;
  auto existing = shmq::Topic::open(name);
  if (!existing.ok() && existing.error().code() == shmq::Errc::not_initialized) {
    // A rebuild that died half-way (ours, before a crash): remove it and rebuild again.
    logf("topic '%s': removing a segment whose creation never finished", name.c_str());
    (void)d::Segment::remove(name);
    existing = shmq::Topic::open(name);
  }
  if (auto& t = existing; t.ok()) {
    seg = t->segment();
    if (!seg->durable()) return config_error(name, "the topic exists with durability none");
    logf("topic '%s': attached (log positions %llu to %llu)", name.c_str(),
         static_cast<unsigned long long>(log.first()), static_cast<unsigned long long>(log.next()));
  } else if (t.error().code() == shmq::Errc::not_found) {
    // The ring starts where the log ends (floors were saved no further than that).
    const std::uint64_t head = log.next();
    auto made = d::recreate_topic(name, options, head, log.first() == log.next() ? head : log.first(), groups);
    if (!made.ok()) return fatal(name, "rebuild: " + made.error().message());
    seg = made.value();
    log.start_at(head);
    logf("topic '%s': rebuilt from %s: log positions %llu to %llu, %zu group(s), ring starts at %llu",
         name.c_str(), dir.c_str(), static_cast<unsigned long long>(log.first()),
         static_cast<unsigned long long>(log.next()), groups.size(), static_cast<unsigned long long>(head));
  } else {
    return fatal(name, t.error().message());
  }
  auto row = seg->register_member(d::Role::persister);
  if (!row.ok()) return fatal(name, "no member row for the persister: " + row.error().message());
  shmq::Topic topic = shmq::Topic::open(name).value();
  g_ready_queues.fetch_add(1);
  d::TopicPersistState pstate;
  pstate.retain_bytes = options.retain_bytes;
  pstate.retain_age_s = static_cast<std::uint64_t>(options.retain_age.count());
  if (log.torn_bytes() != 0)
    logf("topic '%s': recovery cut %llu bytes of a torn tail at position %llu", name.c_str(),
         static_cast<unsigned long long>(log.torn_bytes()), static_cast<unsigned long long>(log.next()));
  const auto tick = std::chrono::milliseconds(std::max<std::int64_t>(1, options.flush_interval.count()));
  auto last_heal = std::chrono::steady_clock::now();
  for (;;) {
    const bool stopping = g_stop.load();
    seg->member(row.value().row).heartbeat_ns.store(d::monotonic_coarse_ns(), std::memory_order_relaxed);
    pstate.final_pass = stopping || seg->removed();
    auto n = d::persist_topic(*seg, log, pstate);
    if (!n.ok()) return fatal(name, "persisting: " + n.error().message());
    if (stopping || seg->removed()) break;
    if (std::chrono::steady_clock::now() - last_heal >= std::chrono::milliseconds(50)) {
      if (const std::uint64_t h = topic.heal(); h != 0)
        logf("topic '%s': healed %llu (redelivered holds, holes, dead rows)", name.c_str(),
             static_cast<unsigned long long>(h));
      last_heal = std::chrono::steady_clock::now();
    }
    if (n.value() == 0) std::this_thread::sleep_for(tick);  // the group-commit interval
  }
  seg->unregister_member(row.value());
  ::close(lock);
  logf("topic '%s': stopped cleanly (persisted up to %llu)", name.c_str(),
       static_cast<unsigned long long>(log.next()));
}

void serve(const std::string& root, const std::string& queue, int poll_ms) {
  {
    // A topic: durable if its segment says so, or if the data dir holds one (a reboot).
    struct stat st {};
    const std::string tmeta = shmq::detail::queue_dir(root, queue) + "/" + shmq::detail::kTopicMetaFile;
    auto t = shmq::Topic::open(queue);
    if (t.ok() && !t->segment()->durable()) return serve_topic(queue, t.value());
    if (t.ok() || (::lstat(tmeta.c_str(), &st) == 0 && S_ISREG(st.st_mode)))
      return serve_topic_durable(root, queue, poll_ms);
  }
  {
    // No queue.meta in the data dir and a queue in memory only: serve that.
    struct stat st {};
    const std::string meta = shmq::detail::queue_dir(root, queue) + "/" + shmq::detail::kMetaFile;
    if (::lstat(meta.c_str(), &st) != 0 && errno == ENOENT) {
      if (auto existing = shmq::Queue::open(queue);
          existing.ok() && !existing->segment()->durable())
        return serve_memory(queue, existing.value());
    }
  }
  auto qdir = shmq::detail::prepare_data_dir(shmq::detail::queue_dir(root, queue));
  if (!qdir.ok()) return fail_on(queue, qdir.error());
  const std::string dir = qdir.value();
  const int lock = take_lock(dir, queue, poll_ms);
  if (lock < 0) return;

  auto meta = shmq::detail::read_queue_meta(dir);
  if (!meta.ok()) {
    // Say what is true: "create the queue" is wrong advice for a queue that exists, only
    // not as a durable queue in this data dir.
    if (auto existing = shmq::Queue::open(queue); existing.ok()) {
      const shmq::detail::Segment& seg = *existing->segment();
      if (!seg.durable())
        return config_error(queue, "the queue exists with durability none: nothing to persist (to "
                                   "make it durable, delete it and create it again with "
                                   "--durability async|sync --data-dir " + root + ")");
      return fail_on(queue, shmq::Error(meta.error().code(),
                                        meta.error().message() + " (the queue exists; its "
                                        "segment names data dir " + seg.data_dir() + ")"));
    }
    return fail_on(queue, shmq::Error(meta.error().code(),
                                      meta.error().message() + " (create the queue with shmqctl "
                                      "create " + queue + " --durability async|sync --data-dir " +
                                      root + ")"));
  }
  shmq::QueueOptions options = meta.value().second;
  options.data_dir = root;
  if (meta.value().first != queue)
    return config_error(queue, dir + "/queue.meta names queue '" + meta.value().first + "'");
  if (options.durability == shmq::Durability::none)
    return config_error(queue, "queue.meta says durability none: nothing to persist");

  shmq::log::PosixFileSystem fs;
  shmq::log::RecoveryReport report;
  shmq::log::WalOptions wal_options;
  wal_options.dir = dir;
  wal_options.stop_on_corruption = g_stop_on_corruption;
  wal_options.segment_bytes = g_segment_bytes;
  wal_options.retain_positions = options.dedup_window.count;
  auto wal = shmq::log::Wal::open(wal_options, fs, report);
  if (!wal.ok()) return fatal(queue, "log recovery failed: " + wal.error().message());
  for (const auto& note : report.notes) logf("queue '%s': recovery: %s", queue.c_str(), note.c_str());
  logf("queue '%s': log recovered: %llu records, %llu acks, %zu unacked messages, next "
       "position %llu, %llu torn bytes truncated, %llu corrupt bytes skipped",
       queue.c_str(), static_cast<unsigned long long>(report.records),
       static_cast<unsigned long long>(report.acks), report.unacked.size(),
       static_cast<unsigned long long>(report.next_position),
       static_cast<unsigned long long>(report.truncated_bytes),
       static_cast<unsigned long long>(report.corrupt_bytes));

  auto q = shmq::Queue::open(queue);
  if (!q.ok() && q.error().code() == shmq::Errc::not_initialized) {
    // Its creator died half-way (a shmqd killed while rebuilding it; open has waited for it
    // to finish). Nobody can have used it; the log is the truth: rebuild.
    logf("queue '%s': the segment was left half-created by a crash: removing it and rebuilding "
         "it from the log", queue.c_str());
    if (auto r = shmq::detail::Segment::remove(queue); !r.ok() && r.error().code() != shmq::Errc::not_found)
      return fatal(queue, r.error().message());
    q = shmq::Queue::open(queue);
  }
  if (!q.ok() && q.error().code() == shmq::Errc::not_found) {
    // The segment is gone (a reboot, or `shmqctl delete` without --purge-data): rebuild it
    // from the log, positions continuing after the last logged one.
    q = shmq::Queue::recreate(queue, options, report.next_position, report.recent_ids);
    if (!q.ok()) return fatal(queue, "cannot rebuild the segment: " + q.error().message());
    SHMQ_CRASH_POINT("shmqd.after_rebuild");
    logf("queue '%s': segment rebuilt from the log at position %llu; %zu messages to redeliver",
         queue.c_str(), static_cast<unsigned long long>(report.next_position),
         report.unacked.size());
    if (options.dedup_window.count != 0)
      logf("queue '%s': dedup window rebuilt from the log: %zu ids of the last %u positions",
           queue.c_str(), report.recent_ids.size(), options.dedup_window.count);
  } else if (!q.ok()) {
    // A segment we may not open (created by another user), or not a queue's.
    return fail_on(queue, q.error());
  } else {
    logf("queue '%s': reattached to the existing segment (tail %llu, persisted %llu)",
         queue.c_str(), static_cast<unsigned long long>(q->stats().tail),
         static_cast<unsigned long long>(q->stats().persisted));
  }
  const auto seg = q->segment();
  if (seg->durability() == shmq::Durability::none)
    return config_error(queue, "the segment says durability none; recreate the queue");

  auto member = seg->register_member(shmq::detail::Role::persister);
  if (!member.ok()) return fatal(queue, member.error().message());
  shmq::detail::Persister persister(seg, *wal.value(), member.value().row);
  persister.set_group_wait(std::chrono::microseconds(g_group_wait_us), true);
  auto watchdog = shmq::Watchdog::attach(*q);
  if (!watchdog.ok()) return fatal(queue, watchdog.error().message());
  watchdog->start();

  // Recovery as a state machine (docs/log_format.md, "Rebuild epochs"): every unacked
  // message the log holds below the segment's base belongs to an earlier epoch and must
  // reach the ring as a copy (same id, a new position, tagged with its origin). The copies
  // that a previous run of shmqd already put into this ring are found there and not sent
  // again; the rest are republished now. Each origin stays live in the log until its copy
  // is durable, so a crash at any step, any number of times, loses none of them.
  if (auto r = persister.adopt(report); !r.ok()) return fatal(queue, r.error().message());
  const std::uint64_t base = seg->header().base_position;
  const std::set<std::uint64_t> in_ring = shmq::detail::copies_in_ring(*seg);
  std::vector<std::uint64_t> origins;
  std::vector<const shmq::log::RecoveredMessage*> to_send;
  for (const auto& m : report.unacked) {
    if (m.position >= base) continue;
    origins.push_back(m.position);
    if (!in_ring.contains(m.position)) to_send.push_back(&m);
  }
  persister.expect_copies(origins);
  if (!origins.empty())
    logf("queue '%s': %zu message(s) of an earlier epoch: %zu already in the ring, %zu to "
         "republish",
         queue.c_str(), origins.size(), origins.size() - to_send.size(), to_send.size());
  SHMQ_CRASH_POINT("shmqd.before_republish");

  // Republish from its own thread: the ring may be smaller than the backlog, and only the
  // persister below frees slots.
  std::thread republisher;
  std::optional<shmq::Producer> producer;
  if (!to_send.empty()) {
    auto p = q->producer();
    if (!p.ok()) return fatal(queue, p.error().message());
    producer.emplace(std::move(p.value()));
    republisher = std::thread([&, queue] {
      std::uint64_t end = 0;
      for (const auto* m : to_send) {
        // A delayed message is due at the same wall-clock time as before the reboot (at
        // once if that has passed).
        const std::uint64_t due_ns =
            m->due_unix_ns ? shmq::detail::unix_to_monotonic_ns(*m->due_unix_ns) : 0;
        const shmq::Status s = shmq::detail::ProducerAccess::send_recovered(
            *producer, shmq::Bytes(m->payload), m->id, m->position, &end, due_ns,
            m->properties);
        if (s == shmq::Status::interrupted) return;
        if (s != shmq::Status::ok) return fatal(queue, "cannot republish a recovered message");
        SHMQ_CRASH_POINT("shmqd.mid_republish");
      }
      logf("queue '%s': %zu recovered messages republished", queue.c_str(), to_send.size());
    });
  }

  logf("queue '%s': persisting (durability %s) in %s", queue.c_str(),
       std::string(shmq::to_string(options.durability)).c_str(), dir.c_str());
  g_ready_queues.fetch_add(1);
  // Wake at least every 100 ms even when idle: the heartbeat above is our proof of life.
  const auto idle = std::chrono::milliseconds(
      std::clamp<std::int64_t>(options.flush_interval.count(), 1, 100));
  // Group-commit waits are a fraction of an fdatasync (tens to hundreds of microseconds):
  // the default 50 us timer slack would stretch them.
  ::prctl(PR_SET_TIMERSLACK, 5'000UL, 0UL, 0UL, 0UL);
  std::uint64_t corrupt_seen = 0;  // checksum failures already reported
  while (!g_stop.load()) {
    // Progress, for a standby watching whether we are stuck (take_lock).
    seg->member(member.value().row).heartbeat_ns.store(shmq::detail::monotonic_coarse_ns(),
                                                   std::memory_order_relaxed);
    auto r = persister.round();
    if (!r.ok()) {
      fatal(queue, r.error().message());
      break;
    }
    if (persister.stats().corrupt != corrupt_seen) {
      logf("queue '%s': %llu committed message(s) failed their checksum and were not logged "
           "(%llu in all)",
           queue.c_str(),
           static_cast<unsigned long long>(persister.stats().corrupt - corrupt_seen),
           static_cast<unsigned long long>(persister.stats().corrupt));
      corrupt_seen = persister.stats().corrupt;
    }
    if (r.value() == 0) persister.wait_for_work(idle);
  }
  if (republisher.joinable()) {
    producer->interrupt();
    republisher.join();
  }
  producer.reset();
  watchdog->stop();
  if (g_exit_code.load() == 0) {
    auto r = persister.round();
    if (r.ok()) {
      auto c = persister.checkpoint();
      if (!c.ok()) logf("queue '%s': final checkpoint failed: %s", queue.c_str(), c.error().message().c_str());
    }
    // "R records, A acks, S syncs" is parsed by shmq-bench: keep it first.
    const auto& st = persister.stats();
    logf("queue '%s': stopped cleanly (%llu records, %llu acks, %llu syncs; %.2f messages "
         "per fdatasync, %llu group waits, %llu ended at their bound, %.0f us per "
         "fdatasync)",
         queue.c_str(), static_cast<unsigned long long>(st.records),
         static_cast<unsigned long long>(st.acks), static_cast<unsigned long long>(st.syncs),
         st.syncs == 0 ? 0.0 : static_cast<double>(st.records) / static_cast<double>(st.syncs),
         static_cast<unsigned long long>(st.group_waits),
         static_cast<unsigned long long>(st.group_wait_timeouts),
         st.syncs == 0 ? 0.0 : static_cast<double>(st.sync_ns) / 1e3 / static_cast<double>(st.syncs));
  }
  seg->unregister_member(member.value());
  ::close(lock);
}

void on_signal(int) { g_stop.store(true); }

// Prometheus text exposition of what `shmqctl stat` shows, written atomically (temp file,
// rename) so the textfile collector never reads half a file.
bool replace_file(const std::string& path, const std::string& text);

// `up`: false for the last write of a clean stop, which leaves the figures as they were last
// seen with shmq_up 0, so that a stopped shmqd is not reported as serving.
void write_metrics(const std::string& path, const std::vector<std::string>& queues, bool up) {
  std::string out;
  auto metric = [&](const char* name, const char* type, const char* help) {
    out += fmt::format("# HELP shmq_{} {}\n# TYPE shmq_{} {}\n", name, help, name, type);
  };
  struct Row {
    std::string queue;
    shmq::QueueStats s;
  };
  std::vector<Row> rows;
  for (const auto& q : queues) {
    if (shmq::Topic::is_topic(q)) continue;  // below
    auto queue = shmq::Queue::open(q);
    // A level of a queue with priorities is counted in its queue's row (and by level below).
    if (queue.ok() && queue->segment()->priority_level() == 0) rows.push_back({q, queue->stats()});
  }
  auto series = [&](const char* name, const char* type, const char* help, auto value) {
    metric(name, type, help);
    for (const auto& r : rows) out += fmt::format("shmq_{}{{queue=\"{}\"}} {}\n", name, r.queue, value(r.s));
  };
  using S = shmq::QueueStats;
  series("up", "gauge", "1 while shmqd serves the queue.", [up](const S&) { return up ? 1 : 0; });
  series("depth", "gauge", "Messages ready or delayed, not delivered.", [](const S& s) { return s.ready + s.delayed; });
  series("delayed", "gauge", "Messages delayed (sent with a delay, or nacked with one), not yet delivered.", [](const S& s) { return s.delayed; });
  series("in_flight", "gauge", "Messages delivered and not yet acked.", [](const S& s) { return s.in_flight; });
  series("oldest_unacked_age_seconds", "gauge", "Age of the oldest message not yet acked (0: none).", [](const S& s) { return static_cast<double>(s.oldest_unacked_age_ms) / 1000.0; });
  series("persisted_lag", "gauge", "Positions committed but not yet in the log (sync: on disk; async: written).", [](const S& s) { return s.tail - std::min(s.tail, s.persisted); });
  series("synced_lag", "gauge", "Positions committed but not yet on disk (fdatasync).", [](const S& s) { return s.tail - std::min(s.tail, s.synced); });
  series("producers", "gauge", "Registered producers.", [](const S& s) { return s.producers; });
  series("consumers", "gauge", "Registered consumers.", [](const S& s) { return s.consumers; });
  series("sent_total", "counter", "Messages sent.", [](const S& s) { return s.sent; });
  series("received_total", "counter", "Deliveries.", [](const S& s) { return s.received; });
  series("acked_total", "counter", "Messages acked.", [](const S& s) { return s.acked; });
  series("requeued_total", "counter", "Messages nacked or returned by a closing consumer.", [](const S& s) { return s.requeued; });
  series("redelivered_total", "counter", "Messages taken back from dead or lease-expired consumers.", [](const S& s) { return s.redelivered; });
  series("dead_lettered_total", "counter", "Messages moved to the dead-letter queue.", [](const S& s) { return s.dead_lettered; });
  series("members_reclaimed_total", "counter", "Dead members whose rows the watchdog freed.", [](const S& s) { return s.members_reclaimed; });
  series("holes_repaired_total", "counter", "Claims of dead or stalled producers repaired.", [](const S& s) { return s.holes_repaired; });
  series("corrupt_total", "counter", "Checksummed queues: messages that failed their checksum, dead-lettered or dropped, never delivered.", [](const S& s) { return s.corrupt; });
  series("duplicates_total", "counter", "Queues with a dedup window: sends refused as duplicates (their id was in the window).", [](const S& s) { return s.dedup_duplicates; });
  metric("priority_depth", "gauge", "Queues with priorities: messages ready or delayed, by priority.");
  for (const auto& r : rows)
    for (const auto& l : r.s.levels)
      out += fmt::format("shmq_priority_depth{{queue=\"{}\",priority=\"{}\"}} {}\n", r.queue,
                         l.priority, l.ready + l.delayed);
  // Topics (issue 15): one row per topic, one per group.
  std::vector<std::pair<std::string, shmq::TopicStats>> topics;
  for (const auto& q : queues)
    if (auto t = shmq::Topic::open(q); t.ok()) topics.emplace_back(q, t->stats());
  metric("topic_up", "gauge", "1 while shmqd serves the topic.");
  for (const auto& [n, t] : topics)
    out += fmt::format("shmq_topic_up{{topic=\"{}\"}} {}\n", n, up ? 1 : 0);
  metric("topic_published_total", "counter", "Messages published to the topic.");
  for (const auto& [n, t] : topics)
    out += fmt::format("shmq_topic_published_total{{topic=\"{}\"}} {}\n", n, t.published);
  auto group_series = [&](const char* name, const char* type, const char* help, auto value) {
    metric(name, type, help);
    for (const auto& [n, t] : topics)
      for (const auto& g : t.groups)
        out += fmt::format("shmq_{}{{topic=\"{}\",group=\"{}\",policy=\"{}\"}} {}\n", name, n, g.name,
                           shmq::to_string(g.policy), value(g));
  };
  using G = shmq::GroupStats;
  group_series("group_lag", "gauge", "Messages published and not yet acked by the group.", [](const G& g) { return g.lag; });
  group_series("group_in_flight", "gauge", "Messages delivered to the group's subscribers, not acked.", [](const G& g) { return g.in_flight; });
  group_series("group_members", "gauge", "Live subscribers of the group.", [](const G& g) { return g.members; });
  group_series("group_stalled", "gauge", "1 if the group is stalled or detached.", [](const G& g) { return g.state == "active" ? 0 : 1; });
  group_series("group_delivered_total", "counter", "Deliveries to the group (redeliveries included).", [](const G& g) { return g.delivered; });
  group_series("group_acked_total", "counter", "Acks by the group's subscribers.", [](const G& g) { return g.acks; });
  group_series("group_redelivered_total", "counter", "Messages given back to the group (nack, lease, dead subscriber).", [](const G& g) { return g.redelivered; });
  group_series("group_missed_total", "counter", "Lossy groups: messages skipped because the group fell a ring behind.", [](const G& g) { return g.missed; });
  group_series("group_dead_lettered_total", "counter", "Messages moved to the group's dead-letter queue.", [](const G& g) { return g.dead_lettered; });
  (void)replace_file(path, out);
}

// Writes `text` to `path` atomically (a temp file beside it, then rename). False on failure.
bool replace_file(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "we");
  if (f == nullptr) return false;
  const bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size();
  if (std::fclose(f) != 0 || !ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    (void)std::remove(tmp.c_str());
    return false;
  }
  return true;
}

// shmqd --mark-down --metrics-file PATH: for the systemd unit's ExecStopPost, which runs
// however shmqd ended; a SIGKILLed or crashed shmqd cannot mark its own figures down. Every
// sample of shmq_up and shmq_topic_up becomes 0, the rest is kept as last written (no
// segment is opened: the queues may be gone). No file: nothing to mark, exit 0.
int mark_down(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "re");
  if (f == nullptr) {
    if (errno == ENOENT) return 0;
    std::fprintf(stderr, "shmqd: --mark-down: cannot read %s: %s\n", path.c_str(), std::strerror(errno));
    return kExitRuntime;
  }
  std::string in;
  char buf[65536];
  for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, f)) > 0;) in.append(buf, n);
  const bool read_ok = std::ferror(f) == 0;
  std::fclose(f);
  if (!read_ok) {
    std::fprintf(stderr, "shmqd: --mark-down: cannot read %s\n", path.c_str());
    return kExitRuntime;
  }
  std::string out;
  std::istringstream lines(in);
  for (std::string line; std::getline(lines, line);) {
    // A sample line: NAME{labels} VALUE. The labels hold queue names ([A-Za-z0-9._-]) and
    // group names, never a space, so the value is what follows the last space.
    const auto space = line.rfind(' ');
    if (space != std::string::npos &&
        (line.starts_with("shmq_up{") || line.starts_with("shmq_topic_up{")))
      line = line.substr(0, space) + " 0";
    out += line;
    out += '\n';
  }
  if (!replace_file(path, out)) {
    std::fprintf(stderr, "shmqd: --mark-down: cannot write %s: %s\n", path.c_str(), std::strerror(errno));
    return kExitRuntime;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // First of all: fds 0-2 must be open, else the data dir's LOCK or a log file opened by
  // us could become "stderr" and get our log lines written into it.
  shmq::detail::make_stdio_valid();
  std::string root;
  std::vector<std::string> queues;
  int poll_ms = 100;
  std::string metrics_file;
  bool only_mark_down = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      usage(stdout);
      return 0;
    }
    if (arg == "--version") {
      std::printf("shmqd %s\n", SHMQ_VERSION);
      return std::fflush(stdout) == 0 ? 0 : kExitRuntime;
    }
    if (arg == "--mark-down") {
      only_mark_down = true;
      continue;
    }
    if (arg == "--data-dir" || arg == "--standby-poll-ms" || arg == "--metrics-file" ||
        arg == "--segment-bytes" || arg == "--takeover-ms" || arg == "--group-wait-us") {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "shmqd: %s needs a value (try --help)\n", arg.c_str());
        return kExitConfig;
      }
      const std::string v = argv[++i];
      // A whole number in [min, max], or a usage error naming the option and its range.
      auto number = [&](std::uint64_t min, std::uint64_t max, const char* range) {
        char* end = nullptr;
        errno = 0;
        const unsigned long long n = std::strtoull(v.c_str(), &end, 10);
        if (v.empty() || v[0] == '-' || *end != '\0' || errno != 0 || n < min || n > max) {
          std::fprintf(stderr, "shmqd: %s takes %s, not '%s'\n", arg.c_str(), range, v.c_str());
          std::exit(kExitConfig);
        }
        return static_cast<std::uint64_t>(n);
      };
      if (arg == "--data-dir") {
        root = v;
      } else if (arg == "--metrics-file") {
        metrics_file = v;
      } else if (arg == "--takeover-ms") {
        g_takeover_ms = static_cast<int>(number(100, 3'600'000, "100..3600000"));
      } else if (arg == "--segment-bytes") {
        g_segment_bytes = number(4096, 1ull << 40, "4096..2^40");
      } else if (arg == "--group-wait-us") {
        g_group_wait_us = static_cast<long>(number(0, 10'000, "0..10000"));
      } else {
        poll_ms = static_cast<int>(number(1, 10'000, "1..10000"));
      }
      continue;
    }
    if (arg == "--stop-on-corruption") {
      g_stop_on_corruption = true;
      continue;
    }
    if (!arg.empty() && arg[0] == '-') {
      std::fprintf(stderr, "shmqd: unknown option '%s' (try --help)\n", arg.c_str());
      return kExitConfig;
    }
    if (auto e = shmq::Queue::validate_name(arg); !e.empty()) {
      std::fprintf(stderr, "shmqd: %s\n", e.c_str());
      return kExitConfig;
    }
    queues.push_back(arg);
  }
  if (only_mark_down) {
    if (metrics_file.empty() || !root.empty() || !queues.empty()) {
      std::fprintf(stderr, "shmqd: --mark-down takes --metrics-file PATH and nothing else (try --help)\n");
      return kExitConfig;
    }
    return mark_down(metrics_file);
  }
  if (root.empty() || queues.empty()) {
    std::fprintf(stderr, "shmqd: need --data-dir DIR and at least one QUEUE (try --help)\n");
    return kExitConfig;
  }
  // The data dir first, before anything is created in it: walked from "/" without
  // following symlinks, ours, and under no directory other users may write (root's shmqd
  // would otherwise create directories wherever a planted symlink points).
  if (auto d = shmq::detail::prepare_data_dir(root); !d.ok()) {
    const bool config = d.error().code() != shmq::Errc::system_error &&
                        d.error().code() != shmq::Errc::no_space;
    logf("FATAL: %s%s; exiting", config ? "configuration: " : "", d.error().message().c_str());
    return config ? kExitConfig : kExitRuntime;
  }
  // A durable queue's dead-letter queue lives beside it (DIR/QUEUE.dlq, made with the queue)
  // and is served with it: its dead letters are as durable as the queue's messages.
  for (std::size_t i = 0, n = queues.size(); i < n; ++i) {
    const std::string dlq = shmq::Queue::dead_letter_name(queues[i]);
    struct stat st {};
    const std::string meta = shmq::detail::queue_dir(root, dlq) + "/" + shmq::detail::kMetaFile;
    if (std::find(queues.begin(), queues.end(), dlq) == queues.end() &&
        ::lstat(meta.c_str(), &st) == 0 && S_ISREG(st.st_mode))
      queues.push_back(dlq);
  }
  // A queue with priorities is served with its levels ("QUEUE.p1" .. "QUEUE.pN", each a ring
  // with its own log in DIR/QUEUE.pN): the queue's max_priority comes from its queue.meta, or
  // from its segment for a queue in memory only.
  for (std::size_t i = 0, n = queues.size(); i < n; ++i) {
    std::uint32_t levels = 0;
    if (auto m = shmq::detail::read_queue_meta(shmq::detail::queue_dir(root, queues[i])); m.ok())
      levels = m.value().second.max_priority;
    else if (auto seg = shmq::detail::Segment::open(queues[i]); seg.ok())
      levels = seg.value()->max_priority();
    if (shmq::detail::Segment::level_of(queues[i], levels) != 0) continue;  // itself a level
    for (std::uint32_t p = 1; p <= levels; ++p) {
      const std::string level = shmq::detail::Segment::level_name(queues[i], p);
      if (std::find(queues.begin(), queues.end(), level) == queues.end()) queues.push_back(level);
    }
  }
#ifdef SHMQ_CRASH_POINTS
  // Test builds only (shmqd_crashpoints): SHMQ_CRASH_AT=name:count kills this process with
  // SIGKILL the count-th time it passes crash point `name`.
  if (const char* at = std::getenv("SHMQ_CRASH_AT"); at != nullptr) {
    const std::string spec = at;
    const auto colon = spec.rfind(':');
    static std::string name = spec.substr(0, colon);
    const unsigned count =
        colon == std::string::npos ? 1u : static_cast<unsigned>(std::stoul(spec.substr(colon + 1)));
    shmq::detail::arm_crash_point(name.c_str(), count);
  }
#endif
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  ::sigemptyset(&sa.sa_mask);
  ::sigaction(SIGTERM, &sa, nullptr);
  ::sigaction(SIGINT, &sa, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  shmq::set_embedded_watchdog(false);  // serve() runs the queue's watchdog itself
  logf("starting: data dir %s, %zu queue(s)", root.c_str(), queues.size());
  std::vector<std::thread> workers;
  for (const auto& q : queues) workers.emplace_back(serve, root, q, poll_ms);
  // systemd (Type=notify): ready once every queue is served; figures every second.
  bool notified = false;
  auto last_metrics = std::chrono::steady_clock::now() - std::chrono::seconds(1);
  while (!g_stop.load()) {
    if (!notified && g_ready_queues.load() == queues.size()) {
      ::sd_notify(0, "READY=1\nSTATUS=persisting");
      notified = true;
    }
    if (!metrics_file.empty() && std::chrono::steady_clock::now() - last_metrics >= std::chrono::seconds(1)) {
      write_metrics(metrics_file, queues, true);
      last_metrics = std::chrono::steady_clock::now();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // the supervisor's tick
  }
  ::sd_notify(0, "STOPPING=1");
  for (auto& w : workers) w.join();
  // Figures as last seen, marked down: node_exporter must not report a stopped shmqd as up
  // (after a crash, the unit's ExecStopPost runs shmqd --mark-down).
  if (!metrics_file.empty()) write_metrics(metrics_file, queues, false);
  if (const std::uint64_t dropped = g_log_dropped.load(); dropped != 0)
    logf("%llu log lines could not be written to stderr", static_cast<unsigned long long>(dropped));
  logf("exiting with %d", g_exit_code.load());
  return g_exit_code.load();
}
