// The retained log of a durable topic (issue 15), in <data_dir>/<topic>/:
//
//   topic.meta                 the topic's options (written once, by Topic::create)
//   group-<name>.meta          one per group: policy, stall policy, start position
//                              (written by create_group, removed by delete_group)
//   positions                  every group's acked position (floor), rewritten by shmqd
//                              (write-new-then-rename) after the log is synced past what it
//                              persisted: a group restarted after a crash resumes there
//   t-<first position, 20 digits>.log
//                              log files: one record per position, contiguous, holes
//                              included. Retention deletes whole files from the oldest.
//
// Record (little-endian): magic u32 "STL1" | length of payload u32 | position u64 | id u64 |
// unix ns u64 | flags u32 (bit 0: a hole) | reserved u32 | checksum u64 (XXH3-64 of the 40
// bytes before it and the payload) | payload. A torn or garbled record ends the last file
// (truncated at recovery); anywhere else it is corruption (refused, never skipped).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "log/file.hpp"
#include "shmq/error.hpp"
#include "shmq/topic.hpp"

namespace shmq::detail {

inline constexpr std::uint32_t kTopicRecordMagic = 0x314c5453;  // "STL1"
inline constexpr std::size_t kTopicRecordHeader = 48;
inline constexpr const char* kTopicMetaFile = "topic.meta";
inline constexpr const char* kTopicPositionsFile = "positions";

struct TopicRecord {
  std::uint64_t position = 0;
  std::uint64_t id = 0;
  std::uint64_t unix_ns = 0;
  bool hole = false;
  std::vector<std::byte> payload;
};

struct GroupMeta {
  std::string name;
  GroupOptions options;
  std::uint64_t start = 0;  // the position it started at
};

// topic.meta and group-<name>.meta: "key value" lines.
std::string format_topic_meta(const std::string& name, const TopicOptions& o);
Result<TopicOptions> parse_topic_meta(std::span<const std::byte> text, const std::string& name);
std::string format_group_meta(const GroupMeta& g);
Result<GroupMeta> parse_group_meta(std::span<const std::byte> text);
std::string group_meta_file(std::string_view group);

// The writer (shmqd, one per topic, holding the data dir's lock).
class TopicLogWriter {
 public:
  // Opens the log in `dir`: validates every file, truncates a torn tail of the last one.
  static Result<std::unique_ptr<TopicLogWriter>> open(std::unique_ptr<log::Directory> dir,
                                                      std::uint64_t segment_bytes);
  // Retained positions: [first, next). Both equal when the log is empty.
  std::uint64_t first() const noexcept { return first_; }
  std::uint64_t next() const noexcept { return next_; }
  // Starts the log at `pos` when it is empty (a new topic, or one whose log was deleted).
  void start_at(std::uint64_t pos) noexcept {
    if (first_ == next_) first_ = next_ = pos;
  }
  // Buffers the record of position `pos`, which must be next() (positions are contiguous;
  // a gap is refused: Errc::corrupt, nothing written).
  VoidResult append(std::uint64_t pos, std::uint64_t id, std::uint64_t unix_ns, bool hole,
                    std::span<const std::byte> payload);
  // Cuts the log back to [first, pos) (synced): what a shmqd that died or failed its
  // fdatasync left beyond what it published as persisted is never trusted; the ring still
  // holds it and it is appended again.
  VoidResult truncate_to(std::uint64_t pos);
  // Bytes cut from a torn tail at open, and the position it started at.
  std::uint64_t torn_bytes() const noexcept { return torn_bytes_; }
  // Writes what is buffered and fdatasyncs it (rolling to a new file past segment_bytes).
  VoidResult sync();
  // Deletes the oldest files while the log is larger than `max_bytes` (0: no limit) or
  // their newest record is older than `max_age_s` (0: no limit); never the current file.
  VoidResult retain(std::uint64_t max_bytes, std::uint64_t max_age_s, std::uint64_t now_unix_ns);
  std::uint64_t bytes() const noexcept;
  log::Directory& dir() noexcept { return *dir_; }

 private:
  struct File {
    std::uint64_t first;
    std::uint64_t bytes;
    std::uint64_t last_unix_ns;
  };
  std::unique_ptr<log::Directory> dir_;
  std::uint64_t segment_bytes_ = 64ull << 20;
  std::map<std::uint64_t, File> files_;  // by first position
  std::unique_ptr<log::WritableFile> current_;
  std::uint64_t first_ = 0, next_ = 0;
  std::uint64_t buffered_ = 0;  // records in buf_
  std::uint64_t buffered_last_ns_ = 0;
  std::uint64_t torn_bytes_ = 0;
  std::vector<std::byte> buf_;
};

// A reader (subscribers replaying positions the ring no longer holds). Sequential reads are
// cheap: it keeps its file and offset.
class TopicLogReader {
 public:
  explicit TopicLogReader(std::string dir_path) : path_(std::move(dir_path)) {}
  // The record at `pos`; nullopt if the log does not retain it (any more, or yet).
  Result<std::optional<TopicRecord>> read(std::uint64_t pos);

 private:
  std::string path_;
  std::unique_ptr<log::Directory> dir_;
  std::unique_ptr<log::ReadableFile> file_;
  std::uint64_t file_first_ = 0;
  std::uint64_t offset_ = 0;    // of the record of position next_
  std::uint64_t next_ = 0;
  // (position, offset) of every 64th record of the current file seen so far: a read
  // behind next_ (a redelivery) seeks from the nearest one instead of from the start.
  std::vector<std::pair<std::uint64_t, std::uint64_t>> index_;
};

// Parses the record at `offset` of `data`; nullopt if it is torn or garbled.
std::optional<TopicRecord> parse_topic_record(std::span<const std::byte> data, std::size_t* used);
std::string topic_log_file_name(std::uint64_t first);

}  // namespace shmq::detail
