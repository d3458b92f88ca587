// shmqctl log verify|dump: read-only views of a durable queue's write-ahead log.
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <system_error>

#include "core/properties_block.hpp"
#include "log/file.hpp"
#include "log/wal.hpp"
#include "persist/meta.hpp"
#include "shmqctl_commands.hpp"
#include "shmqctl_common.hpp"
#include "shmqctl_stats.hpp"

namespace shmqctl {

namespace {

// DIR must be a directory we can read. A data dir root (queues in subdirectories) instead
// of a queue's own dir is a common slip: say which dirs to pass instead.
void check_log_dir(const std::string& dir) {
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0)
    fail(kExitRuntime, "cannot open log dir " + dir + ": " + std::strerror(errno));
  if (!S_ISDIR(st.st_mode)) fail(kExitRuntime, dir + " is not a directory");
  auto d = shmq::log::posix_file_system().open_dir(
      dir, shmq::log::DirOptions{.create = false, .require_private = false});
  if (!d.ok()) fail(d.error());
  auto names = d.value()->list();
  if (!names.ok()) fail(names.error());
  bool has_log = false;
  for (const auto& n : names.value())
    if (shmq::log::parse_segment_file_name(n) || n == shmq::log::kCheckpointName ||
        n == shmq::detail::kMetaFile)
      has_log = true;
  if (has_log) return;
  std::string queues;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    std::error_code ec2;
    if (e.is_directory(ec2) && std::filesystem::exists(e.path() / shmq::detail::kMetaFile, ec2))
      queues += (queues.empty() ? "" : ", ") + e.path().string();
  }
  if (!queues.empty())
    fail(kExitRuntime, dir + " is a data dir root, not a queue's log dir: pass one of " + queues);
  fail(kExitRuntime, dir + " holds no shmq log (no wal-*.log, " +
                         std::string(shmq::log::kCheckpointName) + " or " +
                         shmq::detail::kMetaFile + ")");
}

}  // namespace

int cmd_log_verify(const LogArgs& a) {
  check_log_dir(a.dir);
  Progress progress("verifying: records", 0);
  std::uint64_t seen = 0;
  const shmq::log::VerifyReport r = shmq::log::verify(
      a.dir, shmq::log::posix_file_system(),
      [&](const shmq::log::RecordView&) { progress.update(++seen); });
  progress.finish();
  if (a.json) {
    nlohmann::ordered_json j;
    j["schema"] = 1;
    j["dir"] = a.dir;
    j["ok"] = r.ok;
    j["files"] = r.files;
    j["records"] = r.records;
    j["messages"] = r.records - std::min(r.acks, r.records);
    j["acks"] = r.acks;
    j["unacked"] = r.unacked;
    j["acked"] = r.acked;
    j["superseded"] = r.superseded;
    j["below_checkpoint"] = r.below_checkpoint;
    j["corrupt_bytes"] = r.corrupt_bytes;
    j["torn_tail_bytes"] = r.torn_tail_bytes;
    j["notes"] = r.notes;
    std::printf("%s\n", dump_json(j).c_str());
  } else {
    std::printf("log %s: %llu segment file(s), %llu record(s): %llu message(s), %llu ack(s)\n",
                a.dir.c_str(), static_cast<unsigned long long>(r.files),
                static_cast<unsigned long long>(r.records),
                static_cast<unsigned long long>(r.records - std::min(r.acks, r.records)),
                static_cast<unsigned long long>(r.acks));
    std::printf("recovery would return %llu unacked message(s); not returned: %llu acked, %llu "
                "superseded by a copy republished after a rebuild, %llu record(s) below the "
                "checkpoint\n",
                static_cast<unsigned long long>(r.unacked), static_cast<unsigned long long>(r.acked),
                static_cast<unsigned long long>(r.superseded),
                static_cast<unsigned long long>(r.below_checkpoint));
    for (const auto& n : r.notes) std::printf("  %s\n", one_line(n).c_str());
    if (r.ok)
      std::printf("OK%s\n", r.torn_tail_bytes ? " (a torn tail is an interrupted write, not damage)" : "");
    else
      std::printf("CORRUPT: %llu byte(s) unreadable\n",
                  static_cast<unsigned long long>(r.corrupt_bytes));
  }
  if (!r.ok)
    fail(kExitRuntime, "log in " + a.dir + " is damaged: " + std::to_string(r.corrupt_bytes) +
                           " byte(s) unreadable (details above)");
  return kExitOk;
}

int cmd_log_dump(const LogArgs& a) {
  check_log_dir(a.dir);
  std::printf("%-28s %-10s %-8s %-12s %-20s %-8s %s\n", "FILE", "OFFSET", "TYPE", "POSITION",
              "ID", "SIZE", "PAYLOAD");
  const shmq::log::VerifyReport r = shmq::log::verify(
      a.dir, shmq::log::posix_file_system(), [&](const shmq::log::RecordView& v) {
        const bool msg = v.type != shmq::log::RecordType::ack;
        std::string type = shmq::log::is_copy_record(v.type) ? "copy<" + std::to_string(v.origin)
                           : msg                                 ? "message"
                                                                 : "ack";
        // A delayed record: its due time, unix ms.
        if (v.due_unix_ns) type += "@" + std::to_string(*v.due_unix_ns / 1'000'000);
        // A message with properties: "+p", and SIZE and PAYLOAD are its payload's (after the
        // properties block, which is skipped).
        std::span<const std::byte> shown = v.payload;
        if (v.properties) {
          type += "+p";
          const std::size_t ps = shmq::detail::checked_properties_size(v.payload);
          shown = v.payload.subspan(ps);
        }
        std::printf("%-28.*s %-10llu %-8s %-12llu %-20llu %-8zu %s\n",
                    static_cast<int>(v.file.size()), v.file.data(),
                    static_cast<unsigned long long>(v.offset), type.c_str(),
                    static_cast<unsigned long long>(v.position),
                    static_cast<unsigned long long>(v.id), shown.size(),
                    msg ? render_payload(shown, a.max_bytes).c_str() : "-");
      });
  if (!r.ok) {
    std::fflush(stdout);
    for (const auto& n : r.notes) warn(n);
    fail(kExitRuntime, "log in " + a.dir + " is damaged: " + std::to_string(r.corrupt_bytes) +
                           " byte(s) unreadable were skipped");
  }
  return kExitOk;
}

}  // namespace shmqctl
