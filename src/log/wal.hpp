// The write-ahead log: the persister's durable record of messages and acks.
//
// A log is a sequence of segment files in the queue's data dir (formats: log_format.hpp and
// docs/log_format.md) plus a CHECKPOINT file. The persister appends message and ack records,
// calls sync() once per batch (group commit) and confirms the batch only when sync()
// returned ok. After a crash, Wal::open() rebuilds what was durable: every message that was
// logged, synced and not acked comes back in the RecoveryReport.
//
// Failure model: fail-stop. The first failed write, fdatasync, create, rename or unlink
// makes the Wal failed(); every later call returns that error and nothing more reaches the
// disk. A failed fdatasync is never retried (the kernel may already have dropped the pages
// it could not write, and a retry would report success over the loss). The way back is a
// new Wal::open(), which recovers from what is on disk.
//
// Threading: a Wal is used by one thread (the persister's). Only one Wal may be open on a
// data dir at a time; the daemon guarantees that with its lock on the dir (kLockName), which
// the Wal itself does not take.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "log/file.hpp"
#include "log/log_format.hpp"
#include "shmq/error.hpp"

namespace shmq::log {

struct WalOptions {
  std::string dir;                         // the queue's data dir
  std::uint64_t segment_bytes = 64 << 20;  // rotate to a new file past this size (>= 128)
  bool stop_on_corruption = false;         // mid-log corruption: stop recovery there (true:
                                           // open() fails with Errc::corrupt) or skip past
                                           // it and go on (false)
  // A queue with a dedup window (issue 14): the records of the last `retain_positions`
  // positions are kept (neither deleted by a checkpoint nor compacted away), and recovery
  // returns their ids (RecoveryReport::recent_ids) to rebuild the window. 0 = none.
  std::uint64_t retain_positions = 0;
};

struct RecoveredMessage {
  std::uint64_t position = 0;
  std::uint64_t id = 0;
  std::vector<std::byte> payload;
  // A delayed message: not to be delivered before this unix time (ns, CLOCK_REALTIME).
  std::optional<std::uint64_t> due_unix_ns;
  // The payload is [properties block][message payload] (a record with kTypeHasProperties):
  // republish it with the slot length's properties flag.
  bool properties = false;
};

struct RecoveryReport {
  std::uint64_t next_position = 0;  // > every position seen in the log or the checkpoint
  std::uint64_t min_unacked = 0;    // from the checkpoint (0 without a valid one)
  // Durable messages with no ack, not below min_unacked and not superseded by a durable
  // copy (a copy record naming their position as its origin), sorted by position. Messages
  // are told apart by position only: two messages with the same id are both returned.
  std::vector<RecoveredMessage> unacked;
  // WalOptions::retain_positions != 0: the ids of the message and copy records at positions
  // >= next_position - retain_positions, acked or not, in position order.
  std::vector<std::pair<std::uint64_t, std::uint64_t>> recent_ids;  // (position, id)
  std::uint64_t records = 0, acks = 0;  // valid records read (records counts acks too)
  std::uint64_t segments = 0;           // segment files read
  std::uint64_t truncated_bytes = 0;    // torn tail removed from the last segment
  std::uint64_t corrupt_bytes = 0;      // skipped in the middle (or unreadable files)
  std::uint64_t superseded = 0;         // unacked messages dropped: a durable copy replaces
                                        // them (republished after a rebuild)
  std::vector<std::string> notes;       // one human line per event
};

// One valid record, as verify() reports it.
struct RecordView {
  RecordType type = RecordType::message;
  std::uint64_t position = 0;
  std::uint64_t id = 0;
  std::uint64_t origin = 0;            // a copy's origin position (0 otherwise)
  std::optional<std::uint64_t> due_unix_ns;  // a delayed record's due time, unix ns
  std::span<const std::byte> payload;  // valid during the callback only
  std::string_view file;               // segment file name
  std::uint64_t offset = 0;            // of the record header in that file
  bool properties = false;             // payload = [properties block][message payload]
};

class Wal {
 public:
  // Recovers what is on disk into `report`, then opens (or creates) the last segment for
  // appending. Creates the data dir (0700) if it is missing; refuses a symlink or a dir
  // open to others. Locks nothing (the daemon holds the dir lock).
  //
  // Recovery: reads CHECKPOINT (missing: min_unacked 0; corrupt: reported, treated as
  // missing); removes stale *.tmp files; scans every segment in name order; truncates a torn
  // tail of the last segment (invalid bytes with no valid record after them) so appends
  // continue cleanly; reports corruption elsewhere with file, byte offset, byte count and
  // the position range lost, and skips past it (or, with stop_on_corruption, fails with
  // Errc::corrupt, modifying nothing; `report` then holds what was read up to there).
  // Never crashes and never delivers a record whose checksum does not match, whatever the
  // files hold. `report` is filled in on error too, as far as recovery got.
  static Result<std::unique_ptr<Wal>> open(const WalOptions& options, FileSystem& fs,
                                           RecoveryReport& report);

  ~Wal();  // closes the segment; buffered records not yet written are dropped (no I/O)
  Wal(const Wal&) = delete;
  Wal& operator=(const Wal&) = delete;

  // Buffered appends: no I/O until sync(), or until the buffer passes 1 MiB (then it is
  // written, not synced). Positions must be below UINT64_MAX; an ack carries the acked
  // position. Errc::invalid_argument for a payload over 4 GiB - 1 (the Wal stays usable).
  // `due_unix_ns`: a delayed message, due at that unix time (ns): a delayed record.
  // `properties`: `payload` is [properties block][payload] (the slot's length had
  // kLengthHasProperties): the record's type byte carries kTypeHasProperties.
  VoidResult append_message(std::uint64_t position, std::uint64_t id,
                            std::span<const std::byte> payload,
                            std::optional<std::uint64_t> due_unix_ns = std::nullopt,
                            bool properties = false);
  VoidResult append_ack(std::uint64_t position);
  // A message republished at `position` from `origin` (a position of an earlier rebuild
  // epoch, below the rebuilt segment's base). Once durable it supersedes `origin`.
  // `due_unix_ns`: as for append_message (a delayed copy record).
  VoidResult append_copy(std::uint64_t position, std::uint64_t origin, std::uint64_t id,
                         std::span<const std::byte> payload,
                         std::optional<std::uint64_t> due_unix_ns = std::nullopt,
                         bool properties = false);

  // Writes everything buffered and fdatasyncs it (group commit). Only after ok may the
  // caller confirm what it appended. When the current segment has grown past
  // segment_bytes, the write first moves to a new segment (old one synced, new one created
  // with the tmp + fdatasync + rename + fsync(dir) sequence).
  VoidResult sync();

  // Writes everything buffered to the log file (write(2)) without fdatasync: after ok, what
  // was appended survives a crash of this process (the kernel has it), not of the host. An
  // async queue's persister flushes every round and syncs once per flush interval. A
  // segment change on the way syncs the old segment (as sync() does).
  VoidResult flush();

  // True if something was written or buffered since the last sync().
  bool unsynced() const noexcept { return unsynced_bytes_ != 0 || !buffer_.empty(); }

  // Durably records that every position < min_unacked is done and that next_position is
  // above every position ever logged (CHECKPOINT.tmp, fdatasync, rename over CHECKPOINT,
  // fsync(dir)); only then deletes the segment files that hold nothing at or above
  // min_unacked (a file goes when the next file's first position <= min_unacked; the
  // current segment always stays), then fsync(dir). Needs min_unacked <= next_position.
  // Does not sync buffered appends.
  VoidResult checkpoint(std::uint64_t min_unacked, std::uint64_t next_position);

  // Copy-forward compaction (checkpoint() calls it): when the closed segments hold more dead
  // bytes than live ones and than one segment, their live records are written again into
  // the current segment, synced, and the closed segments deleted. Disk use stays within
  // about 2 x max(live bytes, segment_bytes) + 2 segments, whatever a few long-unacked
  // messages do.
  VoidResult compact();

  bool failed() const { return failure_.has_value(); }
  std::uint64_t disk_bytes() const;        // segment files' bytes, as this Wal knows them
  std::uint64_t live_records() const { return live_.size(); }
  std::uint64_t compactions() const { return compactions_; }
  std::uint64_t compacted_records() const { return compacted_records_; }
  std::uint64_t bytes_synced() const { return bytes_synced_; }  // record bytes made durable
  std::size_t segment_count() const { return segments_.size(); }
  const std::string& current_segment() const;  // file name of the segment being appended

 private:
  struct Segment {
    std::string name;
    std::uint64_t first_position = 0;  // from the header (or the name, if !valid)
    bool valid = true;                 // header checked out; records can be read
    std::uint64_t bytes = 0;           // file size (of its valid part)
  };
  struct Live {  // an unacked message's last record
    std::uint64_t segment = 0;  // first position of the segment it is in
    std::uint64_t bytes = 0;    // record size
  };

  Wal(const WalOptions& options, std::unique_ptr<Directory> dir);
  VoidResult fail(Error error);
  VoidResult failed_error() const;
  VoidResult write_buffer();
  VoidResult sync_current();
  VoidResult start_segment(std::uint64_t first_position, std::uint64_t salt);
  VoidResult check_appendable(std::uint64_t position) const;
  void begin_record();
  void note_live(std::uint64_t position, std::uint64_t bytes);
  VoidResult compact_closed_segments();
  // Closed segments (a prefix) that hold nothing at or above the retention floor: the only
  // ones a checkpoint may delete or compaction may rewrite.
  std::size_t below_retention(std::uint64_t next_position) const;

  WalOptions options_;
  std::unique_ptr<Directory> dir_;
  std::vector<Segment> segments_;  // name order; back() is the current segment
  std::unique_ptr<WritableFile> current_;
  std::uint64_t salt_ = 0;            // current segment's record checksum seed
  std::uint64_t current_size_ = 0;    // bytes in the current segment file
  std::uint64_t unsynced_bytes_ = 0;  // written to current_ but not yet synced
  std::vector<std::byte> buffer_;     // encoded records not yet written
  bool buffer_rotates_ = false;       // buffer_ goes to a new segment
  std::uint64_t buffer_salt_ = 0;     // the salt buffer_'s records are encoded with
  std::uint64_t buffer_next_ = 0;     // 1 + highest position in buffer_ (or 0)
  std::uint64_t written_next_ = 0;    // 1 + highest position written (or recovered)
  std::uint64_t bytes_synced_ = 0;
  std::unordered_map<std::uint64_t, Live> live_;  // unacked messages -> where their record is
  std::uint64_t compactions_ = 0, compacted_records_ = 0;
  bool compacting_ = false;  // compact() appends and syncs: no nested compaction
  std::optional<Error> failure_;
};

struct VerifyReport {
  std::uint64_t files = 0, records = 0, acks = 0, corrupt_bytes = 0, torn_tail_bytes = 0;
  // What a recovery would make of the valid records: messages it would return (unacked),
  // and why it would not return the others (acked, superseded by a copy republished after
  // a rebuild, below the checkpoint). Nothing is dropped for any other reason.
  std::uint64_t unacked = 0, acked = 0, superseded = 0, below_checkpoint = 0;
  std::vector<std::string> notes;
  bool ok = false;  // readable, no corruption (a torn tail alone is a clean crash: still ok)
};

// Read-only walk over a data dir for `shmqctl log verify|dump`: never modifies, creates or
// removes anything, and does not require the dir to be private (it may run as another
// user). Calls on_record (if set) for every valid record in log order.
VerifyReport verify(const std::string& dir, FileSystem& fs,
                    const std::function<void(const RecordView&)>& on_record);

}  // namespace shmq::log
