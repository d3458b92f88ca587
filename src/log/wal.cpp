#include "log/wal.hpp"

#include "platform/crash_point.hpp"

#include <sys/random.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <random>
#include <unordered_map>
#include <unordered_set>

namespace shmq::log {

namespace {

constexpr std::size_t kFlushBytes = std::size_t{1} << 20;  // write (not sync) past this
constexpr std::uint64_t kMinSegmentBytes = 128;

std::uint64_t now_ns() {
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                        std::chrono::system_clock::now().time_since_epoch())
                                        .count());
}

std::uint64_t random_salt() {
  std::uint64_t v = 0;
  if (::getrandom(&v, sizeof v, GRND_NONBLOCK) == static_cast<ssize_t>(sizeof v)) return v;
  std::random_device rd;  // getrandom unavailable or not yet seeded: good enough for a salt
  return (std::uint64_t{rd()} << 32) ^ rd() ^ now_ns();
}

std::uint64_t plus_one(std::uint64_t v) { return v == UINT64_MAX ? v : v + 1; }

std::string describe(RecordCheck c) {
  switch (c) {
    case RecordCheck::ok: return "valid";
    case RecordCheck::short_header: return "partial record header";
    case RecordCheck::bad_header: return "bad record header";
    case RecordCheck::past_end: return "record runs past the end of the file";
    case RecordCheck::bad_checksum: return "checksum mismatch";
  }
  return "unknown";
}

bool is_stale_temp(std::string_view name) {
  if (!name.ends_with(kTempSuffix)) return false;
  const std::string_view base = name.substr(0, name.size() - kTempSuffix.size());
  return base == kCheckpointName || parse_segment_file_name(base).has_value();
}

struct SegmentName {
  std::string name;
  std::uint64_t position;
};

// Segment files in name order (= first-position order: the digits are fixed-width).
std::vector<SegmentName> segment_names(const std::vector<std::string>& names) {
  std::vector<SegmentName> out;
  for (const auto& n : names)
    if (auto p = parse_segment_file_name(n)) out.push_back({n, *p});
  std::sort(out.begin(), out.end(),
            [](const SegmentName& a, const SegmentName& b) { return a.position < b.position; });
  return out;
}

// The offset of the next valid record at or after `from`, or data.size(). Cheap per byte on
// garbage: a wrong type or header check rejects before any payload is hashed.
std::size_t find_record(std::span<const std::byte> data, std::size_t from, std::uint64_t salt) {
  for (std::size_t q = from; q + kRecordHeaderSize <= data.size(); ++q) {
    const auto t = std::to_integer<std::uint8_t>(data[q + record_header::kType]);
    if (!is_record_type(static_cast<std::uint8_t>(t & ~kTypeHasProperties))) continue;
    DecodedRecord rec;
    if (check_record(data, q, salt, rec) == RecordCheck::ok) return q;
  }
  return data.size();
}

// Walks segment files in order, validating every byte, and says what it found. Shared by
// Wal::open (which then truncates a torn tail) and verify (which only reports).
class Scanner {
 public:
  using Sink = std::function<void(const DecodedRecord&, std::string_view file, std::uint64_t)>;

  struct FileResult {
    HeaderVerdict verdict;
    FileHeader header;
    std::uint64_t size = 0;
    std::uint64_t torn_at = 0;  // start of a torn tail in the last file; == size if none
    bool stopped = false;       // stop_on_corruption hit corruption here
  };

  Scanner(bool stop_on_corruption, Sink sink)
      : stop_on_corruption_(stop_on_corruption), sink_(std::move(sink)) {}

  FileResult scan(const SegmentName& file, std::span<const std::byte> data, bool last) {
    FileResult res;
    res.size = data.size();
    res.torn_at = data.size();
    if (data.empty()) {
      ++bad_files_;
      res.verdict = {HeaderVerdict::bad, "empty file"};
      notes.push_back("empty segment file " + file.name + " (0 bytes, no header): ignored");
      return res;
    }
    res.verdict = check_file_header(data, res.header);
    if (res.verdict.kind == HeaderVerdict::ok && res.header.first_position != file.position)
      res.verdict = {HeaderVerdict::bad,
                     "header says first position " + std::to_string(res.header.first_position) +
                         ", the file name says " + std::to_string(file.position)};
    if (res.verdict.kind == HeaderVerdict::incompatible) return res;
    if (res.verdict.kind == HeaderVerdict::bad) {
      // Its salt is unknown, so none of its records can be validated: the file is lost.
      ++bad_files_;
      corrupt_bytes += data.size();
      std::string what = "bad header in " + file.name + " (" + res.verdict.why + "): all " +
                         std::to_string(data.size()) + " bytes unreadable";
      if (stop_on_corruption_) return stop(res, std::move(what));
      add_pending(std::move(what));
      return res;
    }
    // Every record of an earlier file is below this file's first position.
    if (res.header.first_position > 0) settle_pending(res.header.first_position - 1);
    next_position = std::max(next_position, res.header.first_position);

    const std::uint64_t salt = res.header.salt;
    std::size_t off = kFileHeaderSize;
    while (off < data.size()) {
      DecodedRecord rec;
      const RecordCheck c = check_record(data, off, salt, rec);
      if (c == RecordCheck::ok) {
        deliver(rec, file.name, off);
        off += rec.size;
        continue;
      }
      const std::size_t resume = find_record(data, off + 1, salt);
      if (resume == data.size() && last) {
        res.torn_at = off;  // nothing valid after it: the end of an interrupted write
        break;
      }
      corrupt_bytes += resume - off;
      std::string what = "corruption in " + file.name + " at offset " + std::to_string(off) + ": " +
                         std::to_string(resume - off) + " bytes skipped (" + describe(c) +
                         (resume == data.size() ? ", to the end of the file)" : ")");
      if (stop_on_corruption_) return stop(res, std::move(what));
      add_pending(std::move(what));
      off = resume;
    }
    return res;
  }

  // Ends the walk: corruption not yet followed by a message says so.
  void finish() {
    for (auto& p : pending_)
      notes.push_back(p.text + ", positions from " + std::to_string(p.from) +
                      " on lost (no valid message follows)");
    pending_.clear();
  }

  std::uint64_t records = 0, acks = 0, corrupt_bytes = 0;
  std::uint64_t next_position = 0;  // > every position in a valid record or header
  std::vector<std::string> notes;

  std::uint64_t bad_file_count() const { return bad_files_; }

 private:
  struct Pending {
    std::string text;
    std::uint64_t from;  // first message position that may be lost
  };

  std::uint64_t first_unseen() const { return last_message_ ? plus_one(*last_message_) : 0; }

  FileResult& stop(FileResult& res, std::string what) {
    res.stopped = true;
    notes.push_back(what + ": recovery stopped there (stop_on_corruption); positions from " +
                    std::to_string(first_unseen()) + " on not recovered");
    return res;
  }

  void add_pending(std::string text) { pending_.push_back({std::move(text), first_unseen()}); }

  // Every position up to `upper` that was not seen by now is lost.
  void settle_pending(std::uint64_t upper) {
    for (auto& p : pending_) {
      if (upper < p.from)
        notes.push_back(p.text + ", no message position missing around it");
      else if (upper == p.from)
        notes.push_back(p.text + ", position " + std::to_string(p.from) + " lost");
      else
        notes.push_back(p.text + ", positions " + std::to_string(p.from) + ".." +
                        std::to_string(upper) + " lost");
    }
    pending_.clear();
  }

  void deliver(const DecodedRecord& rec, std::string_view file, std::uint64_t offset) {
    ++records;
    next_position = std::max(next_position, plus_one(rec.position));
    if (rec.type == RecordType::ack) {
      ++acks;
    } else {
      if (!pending_.empty()) settle_pending(rec.position == 0 ? 0 : rec.position - 1);
      if (!last_message_ || rec.position > *last_message_) last_message_ = rec.position;
    }
    if (sink_) sink_(rec, file, offset);
  }

  bool stop_on_corruption_;
  Sink sink_;
  std::optional<std::uint64_t> last_message_;
  std::vector<Pending> pending_;
  std::uint64_t bad_files_ = 0;
};

// What recovery makes of the records, in any order: which messages are still unacked, and
// why every other one is not returned. Messages are told apart by position only (never by
// id). An ack and a durable copy are facts about a position, so the order in which records
// are read does not matter (compaction writes live records again after older acks).
class Accounting {
 public:
  struct Counts {
    std::uint64_t acked = 0;             // message positions with an ack record
    std::uint64_t superseded = 0;        // unacked message positions replaced by a copy
    std::uint64_t below_checkpoint = 0;  // records below min_unacked (retired)
  };

  explicit Accounting(std::uint64_t min_unacked) : min_unacked_(min_unacked) {}

  // `segment`: the first position of the segment file the record was read from.
  void add(const DecodedRecord& rec, std::uint64_t segment = 0) {
    if (rec.type != RecordType::ack) where_[rec.position] = {segment, rec.size};
    if (is_copy_record(rec.type) && rec.origin >= min_unacked_) {
      superseded_.insert(rec.origin);
      if (messages_.erase(rec.origin) != 0) dropped_.insert(rec.origin);
    }
    if (rec.position < min_unacked_) {
      ++below_;
      return;
    }
    if (rec.type == RecordType::ack) {
      acked_.insert(rec.position);
      messages_.erase(rec.position);
      dropped_.erase(rec.position);
      return;
    }
    if (superseded_.contains(rec.position)) {
      if (!acked_.contains(rec.position)) dropped_.insert(rec.position);
    } else if (!acked_.contains(rec.position) && !messages_.contains(rec.position)) {
      messages_.emplace(rec.position,
                        RecoveredMessage{rec.position, rec.id,
                                         {rec.payload.begin(), rec.payload.end()},
                                         rec.due_unix_ns, rec.properties});
    }
  }

  Counts counts() const { return {acked_.size(), dropped_.size(), below_}; }
  // Where the last record of each unacked message is: position -> (segment, record bytes).
  std::map<std::uint64_t, std::pair<std::uint64_t, std::uint64_t>> live_records() const {
    std::map<std::uint64_t, std::pair<std::uint64_t, std::uint64_t>> out;
    for (const auto& [pos, m] : messages_)
      if (auto it = where_.find(pos); it != where_.end()) out[pos] = it->second;
    return out;
  }
  std::size_t unacked_count() const { return messages_.size(); }

  std::vector<RecoveredMessage> take_unacked() {
    std::vector<RecoveredMessage> out;
    out.reserve(messages_.size());
    for (auto& [pos, m] : messages_) out.push_back(std::move(m));
    messages_.clear();
    return out;
  }

 private:
  std::uint64_t min_unacked_;
  std::map<std::uint64_t, RecoveredMessage> messages_;
  std::unordered_map<std::uint64_t, std::pair<std::uint64_t, std::uint64_t>> where_;
  std::unordered_set<std::uint64_t> acked_, superseded_, dropped_;
  std::uint64_t below_ = 0;
};

}  // namespace

// --- Recovery ---------------------------------------------------------------------------

Result<std::unique_ptr<Wal>> Wal::open(const WalOptions& options, FileSystem& fs,
                                       RecoveryReport& report) {
  report = RecoveryReport{};
  if (options.dir.empty()) return Error(Errc::invalid_argument, "log: data dir is empty");
  if (options.segment_bytes < kMinSegmentBytes)
    return Error(Errc::invalid_argument, "log: segment_bytes must be at least " +
                                             std::to_string(kMinSegmentBytes) + ", got " +
                                             std::to_string(options.segment_bytes));
  auto dir_r = fs.open_dir(options.dir, DirOptions{.create = true, .require_private = true});
  if (!dir_r) return dir_r.error();
  std::unique_ptr<Wal> wal(new Wal(options, std::move(dir_r.value())));
  Directory& dir = *wal->dir_;

  auto names_r = dir.list();
  if (!names_r) return names_r.error();
  const std::vector<std::string>& names = names_r.value();

  // The checkpoint.
  std::uint64_t ckpt_next = 0;
  if (std::find(names.begin(), names.end(), kCheckpointName) != names.end()) {
    auto data = dir.read_all(kCheckpointName);
    if (!data) return data.error();
    Checkpoint c;
    const HeaderVerdict v = check_checkpoint(data.value(), c);
    if (v.kind == HeaderVerdict::incompatible)
      return Error(Errc::incompatible_version, dir.path_of(kCheckpointName) + " has " + v.why);
    if (v.kind == HeaderVerdict::ok) {
      report.min_unacked = c.min_unacked;
      ckpt_next = c.next_position;
    } else {
      report.notes.push_back(std::string(kCheckpointName) + " is corrupt (" + v.why +
                             "): ignored, min_unacked taken as 0");
    }
  }

  // The segments, through the same accounting that verify() reports.
  Accounting accounting(report.min_unacked);
  std::map<std::uint64_t, std::uint64_t> recent;  // position -> id (retain_positions)
  Scanner scanner(options.stop_on_corruption,
                  [&](const DecodedRecord& rec, std::string_view file, std::uint64_t) {
                    accounting.add(rec, parse_segment_file_name(file).value_or(0));
                    if (options.retain_positions != 0 && rec.type != RecordType::ack)
                      recent[rec.position] = rec.id;
                  });
  auto take_unacked = [&] {
    const std::uint64_t floor = report.next_position > options.retain_positions
                                    ? report.next_position - options.retain_positions
                                    : 0;
    for (auto it = recent.lower_bound(floor); it != recent.end(); ++it)
      report.recent_ids.emplace_back(it->first, it->second);
    for (const auto& [pos, where] : accounting.live_records())
      wal->live_[pos] = Live{where.first, where.second};
    const Accounting::Counts c = accounting.counts();
    report.superseded = c.superseded;
    report.unacked = accounting.take_unacked();
    if (c.superseded != 0)
      report.notes.push_back(std::to_string(c.superseded) +
                             " logged message(s) not returned: superseded by their copies "
                             "republished after a rebuild (same message, a later position)");
  };
  const std::vector<SegmentName> segs = segment_names(names);
  Scanner::FileResult last_result;
  for (std::size_t i = 0; i < segs.size(); ++i) {
    auto data = dir.read_all(segs[i].name);
    if (!data) return data.error();
    const bool last = i + 1 == segs.size();
    Scanner::FileResult res = scanner.scan(segs[i], data.value(), last);
    ++report.segments;
    if (res.verdict.kind == HeaderVerdict::incompatible)
      return Error(Errc::incompatible_version,
                   dir.path_of(segs[i].name) + " has " + res.verdict.why);
    if (res.stopped) {
      report.records = scanner.records;
      report.acks = scanner.acks;
      report.corrupt_bytes = scanner.corrupt_bytes;
      report.notes.insert(report.notes.end(), scanner.notes.begin(), scanner.notes.end());
      report.next_position = std::max(ckpt_next, scanner.next_position);
      take_unacked();
      return Error(Errc::corrupt, "log in " + options.dir + " is corrupt: " + scanner.notes.back() +
                                      "; run `shmqctl log verify` to see it all");
    }
    wal->segments_.push_back(
        {segs[i].name,
         res.verdict.kind == HeaderVerdict::ok ? res.header.first_position : segs[i].position,
         res.verdict.kind == HeaderVerdict::ok, res.torn_at});
    if (last) last_result = res;
  }
  scanner.finish();
  report.records = scanner.records;
  report.acks = scanner.acks;
  report.corrupt_bytes = scanner.corrupt_bytes;
  report.notes.insert(report.notes.end(), scanner.notes.begin(), scanner.notes.end());
  report.next_position = std::max(ckpt_next, scanner.next_position);

  take_unacked();

  // Clean up: stale temporary files (never referred to by anything).
  bool removed = false;
  for (const auto& n : names) {
    if (!is_stale_temp(n)) continue;
    if (auto r = dir.unlink(n); !r) return r.error();
    report.notes.push_back("removed stale temporary file " + n + " (left by a crash)");
    removed = true;
  }
  if (removed)
    if (auto r = dir.sync(); !r) return r.error();

  // Open the segment to append to.
  wal->written_next_ = report.next_position;
  // A last segment of an older format version is not appended to (its records would be of
  // types its version does not have): it is closed, and a new segment follows it.
  const bool old_version = !wal->segments_.empty() && wal->segments_.back().valid &&
                           last_result.header.version < kFormatVersion;
  if (old_version && last_result.torn_at < last_result.size) {
    // Its torn tail goes first, as below: once it is not the last segment, those bytes
    // would read as corruption in the middle of the log.
    const Segment& seg = wal->segments_.back();
    if (auto r = dir.truncate(seg.name, last_result.torn_at); !r) return r.error();
    auto file = dir.open_append(seg.name);
    if (!file) return file.error();
    if (auto r = file.value()->sync(); !r) return r.error();
    report.truncated_bytes = last_result.size - last_result.torn_at;
    report.notes.push_back("truncated torn tail of " + seg.name + " at offset " +
                           std::to_string(last_result.torn_at) + " (" +
                           std::to_string(report.truncated_bytes) + " bytes)");
  }
  if (!wal->segments_.empty() && wal->segments_.back().valid && !old_version) {
    const Segment& seg = wal->segments_.back();
    const bool torn = last_result.torn_at < last_result.size;
    if (torn)
      if (auto r = dir.truncate(seg.name, last_result.torn_at); !r) return r.error();
    auto file = dir.open_append(seg.name);
    if (!file) return file.error();
    wal->current_ = std::move(file.value());
    // Synced now, torn or not: the truncation must be durable before anything is appended
    // after it, and the process that wrote the segment may have died between a write and its
    // fdatasync (an async queue's persister writes every round and syncs once per flush
    // interval). Its bytes are in the page cache; our own first sync would not cover them if
    // we had nothing to write, yet `synced` would then claim them (design note 25).
    if (auto r = wal->current_->sync(); !r) return r.error();
    if (torn) {
      report.truncated_bytes = last_result.size - last_result.torn_at;
      report.notes.push_back("truncated torn tail of " + seg.name + " at offset " +
                             std::to_string(last_result.torn_at) + " (" +
                             std::to_string(report.truncated_bytes) + " bytes)");
    }
    wal->salt_ = last_result.header.salt;
    wal->current_size_ = last_result.torn_at;
  } else {
    // No segment yet, the last one is unreadable (left in place for inspection; a
    // checkpoint deletes it once it is obsolete), or of an older format version (kept,
    // read as it is): start a new one after it.
    std::uint64_t first = report.next_position;
    if (!wal->segments_.empty()) {
      const Segment& bad = wal->segments_.back();
      if (bad.first_position >= first) {
        if (bad.first_position == UINT64_MAX)
          return Error(Errc::corrupt,
                       "log in " + options.dir + ": no segment name is left after " + bad.name);
        first = bad.first_position + 1;
      }
      report.notes.push_back("last segment " + bad.name +
                             (old_version ? " is of format version " +
                                                std::to_string(last_result.header.version) +
                                                ": appending to a new "
                                          : " is unreadable: appending to a new ") +
                             "segment " + segment_file_name(first));
    }
    if (auto r = wal->start_segment(first, random_salt()); !r) return r.error();
    // Positions continue from the new segment's name, as a later recovery will see them.
    report.next_position = first;
    wal->written_next_ = first;
  }
  return wal;
}

// --- Appending --------------------------------------------------------------------------

Wal::Wal(const WalOptions& options, std::unique_ptr<Directory> dir)
    : options_(options), dir_(std::move(dir)) {}

Wal::~Wal() = default;  // closes the file; buffered, unsynced records are dropped

const std::string& Wal::current_segment() const { return segments_.back().name; }

VoidResult Wal::fail(Error error) {
  failure_ = Error(error.code(),
                   "write-ahead log in " + options_.dir +
                       " failed and stopped (fail-stop; reopen to recover): " + error.message());
  current_.reset();
  buffer_.clear();
  return error;
}

VoidResult Wal::failed_error() const { return *failure_; }

VoidResult Wal::start_segment(std::uint64_t first_position, std::uint64_t salt) {
  FileHeader h;
  h.first_position = first_position;
  h.created_ns = now_ns();
  h.salt = salt;
  const std::string name = segment_file_name(first_position);
  const auto bytes = encode_file_header(h);
  // Nothing refers to the new file before it is durable under its final name.
  if (auto r = dir_->write_new_file(name, bytes, /*replace=*/false); !r) return r;
  auto file = dir_->open_append(name);
  if (!file) return file.error();
  current_ = std::move(file.value());
  segments_.push_back({name, first_position, true, kFileHeaderSize});
  salt_ = salt;
  current_size_ = kFileHeaderSize;
  unsynced_bytes_ = 0;
  return {};
}

VoidResult Wal::check_appendable(std::uint64_t position) const {
  if (failure_) return failed_error();
  if (position == UINT64_MAX)
    return Error(Errc::invalid_argument,
                 "log: position " + std::to_string(position) + " is out of range");
  return {};
}

void Wal::begin_record() {
  if (!buffer_.empty()) return;
  // The first record of a write decides where the write goes, because records are
  // checksummed with the salt of the file they land in. A segment past its size moves on
  // to a new file, unless nothing at or above its first position was written to it yet
  // (a file of acks only): the next file's first position must be above every position in
  // this one.
  buffer_rotates_ =
      current_size_ >= options_.segment_bytes && written_next_ > segments_.back().first_position;
  buffer_salt_ = buffer_rotates_ ? random_salt() : salt_;
}

VoidResult Wal::append_message(std::uint64_t position, std::uint64_t id,
                               std::span<const std::byte> payload,
                               std::optional<std::uint64_t> due_unix_ns, bool properties) {
  if (auto r = check_appendable(position); !r) return r;
  if (payload.size() > kMaxPayload - (due_unix_ns ? kDueSize : 0))
    return Error(Errc::invalid_argument, "log: message of " + std::to_string(payload.size()) +
                                             " bytes is over the " + std::to_string(kMaxPayload) +
                                             "-byte record limit");
  begin_record();
  const std::size_t at = buffer_.size();
  if (due_unix_ns)
    encode_delayed_record(buffer_, position, id, *due_unix_ns, payload, buffer_salt_, properties);
  else
    encode_record(buffer_, RecordType::message, position, id, payload, buffer_salt_, properties);
  note_live(position, buffer_.size() - at);
  buffer_next_ = std::max(buffer_next_, position + 1);
  if (buffer_.size() >= kFlushBytes) return write_buffer();
  return {};
}

VoidResult Wal::append_ack(std::uint64_t position) {
  if (auto r = check_appendable(position); !r) return r;
  begin_record();
  encode_record(buffer_, RecordType::ack, position, 0, {}, buffer_salt_);
  live_.erase(position);
  buffer_next_ = std::max(buffer_next_, position + 1);
  if (buffer_.size() >= kFlushBytes) return write_buffer();
  return {};
}

VoidResult Wal::append_copy(std::uint64_t position, std::uint64_t origin, std::uint64_t id,
                            std::span<const std::byte> payload,
                            std::optional<std::uint64_t> due_unix_ns, bool properties) {
  if (auto r = check_appendable(position); !r) return r;
  if (payload.size() > kMaxPayload - kOriginSize - (due_unix_ns ? kDueSize : 0))
    return Error(Errc::invalid_argument, "log: message of " + std::to_string(payload.size()) +
                                             " bytes is over the record limit");
  begin_record();
  const std::size_t at = buffer_.size();
  encode_copy_record(buffer_, position, origin, id, payload, buffer_salt_, due_unix_ns,
                     properties);
  live_.erase(origin);
  note_live(position, buffer_.size() - at);
  buffer_next_ = std::max(buffer_next_, position + 1);
  if (buffer_.size() >= kFlushBytes) return write_buffer();
  return {};
}

void Wal::note_live(std::uint64_t position, std::uint64_t bytes) {
  // The segment the buffer will land in (begin_record decided it for the whole buffer).
  live_[position] = Live{buffer_rotates_ ? written_next_ : segments_.back().first_position, bytes};
}

VoidResult Wal::sync_current() {
  if (unsynced_bytes_ == 0) return {};
  if (auto r = current_->sync(); !r) return fail(r.error());
  bytes_synced_ += unsynced_bytes_;
  unsynced_bytes_ = 0;
  return {};
}

VoidResult Wal::write_buffer() {
  if (buffer_.empty()) return {};
  if (buffer_rotates_) {
    // The old segment is complete and synced before the new one exists: a crash never
    // leaves a hole in an earlier file behind durable records in a later one.
    if (auto r = sync_current(); !r) return r;
    if (auto r = current_->close(); !r) return fail(r.error());
    if (auto r = start_segment(written_next_, buffer_salt_); !r) return fail(r.error());
    buffer_rotates_ = false;
  }
  if (auto r = current_->append(buffer_); !r) return fail(r.error());
  current_size_ += buffer_.size();
  segments_.back().bytes = current_size_;
  unsynced_bytes_ += buffer_.size();
  written_next_ = std::max(written_next_, buffer_next_);
  buffer_.clear();
  buffer_next_ = 0;
  return {};
}

VoidResult Wal::flush() {
  if (failure_) return failed_error();
  return write_buffer();
}

VoidResult Wal::sync() {
  if (failure_) return failed_error();
  const std::size_t segments = segments_.size();
  if (auto r = write_buffer(); !r) return r;
  if (auto r = sync_current(); !r) return r;
  // A segment was closed: the closed segments may now be worth compacting. Checked once per
  // segment written (the check walks the live records), so disk use is bounded by traffic
  // volume, not by how often checkpoints come.
  if (segments_.size() > segments && !compacting_) return compact();
  return {};
}

VoidResult Wal::checkpoint(std::uint64_t min_unacked, std::uint64_t next_position) {
  if (failure_) return failed_error();
  if (min_unacked > next_position)
    return Error(Errc::invalid_argument,
                 "log: checkpoint min_unacked " + std::to_string(min_unacked) +
                     " is above next_position " + std::to_string(next_position));
  Checkpoint c;
  c.min_unacked = min_unacked;
  c.next_position = std::max({next_position, written_next_, buffer_next_});
  c.created_ns = now_ns();
  const auto bytes = encode_checkpoint(c);
  if (auto r = dir_->write_new_file(kCheckpointName, bytes, /*replace=*/true); !r)
    return fail(r.error());
  SHMQ_CRASH_POINT("wal.checkpoint.after_rename");

  // The checkpoint is durable: segments holding only positions below min_unacked can go.
  // Every record of a segment is below the first position of the next readable one.
  // With a dedup window the last retain_positions positions stay too (their ids rebuild
  // the window after a reboot).
  std::vector<std::size_t> obsolete;
  const std::size_t retained_from = below_retention(c.next_position);
  for (std::size_t i = 0; i + 1 < segments_.size() && i < retained_from; ++i) {
    std::size_t j = i + 1;
    while (!segments_[j].valid) ++j;  // terminates: back() is the current, valid segment
    if (segments_[j].first_position <= min_unacked) obsolete.push_back(i);
  }
  if (obsolete.empty()) return compact();
  for (const std::size_t i : obsolete) {
    auto r = dir_->unlink(segments_[i].name);
    if (!r && r.error().code() != Errc::not_found) return fail(r.error());
  }
  if (auto r = dir_->sync(); !r) return fail(r.error());
  for (auto it = obsolete.rbegin(); it != obsolete.rend(); ++it)
    segments_.erase(segments_.begin() + static_cast<std::ptrdiff_t>(*it));
  return compact();
}

// Copy-forward compaction. A few long-unacked messages must not pin every segment written
// since: when the dead bytes in the closed segments (acked, superseded, acks themselves)
// outweigh both the live bytes there and one segment, every live record of the closed
// segments is appended again (same position, same id, same origin: recovery tells records
// apart by position, so a duplicate is harmless), synced, and only then are the closed
// segments deleted, oldest first (a prefix: an ack is never deleted while an older record of
// its message remains), then the directory is synced. A crash at any point leaves either
// the old files, or the old files and the copies, or the copies alone.
// Disk use is then at most the current segment + 2 x max(live bytes, segment_bytes) + one
// segment in the making.
VoidResult Wal::compact() {
  if (failure_) return failed_error();
  if (segments_.size() < 2 || compacting_) return {};
  compacting_ = true;
  const VoidResult r = compact_closed_segments();
  compacting_ = false;
  return r;
}

std::size_t Wal::below_retention(std::uint64_t next_position) const {
  if (segments_.empty()) return 0;
  if (options_.retain_positions == 0) return segments_.size() - 1;
  const std::uint64_t floor =
      next_position > options_.retain_positions ? next_position - options_.retain_positions : 0;
  std::size_t m = 0;
  while (m + 1 < segments_.size() && segments_[m + 1].first_position <= floor) ++m;
  return m;
}

VoidResult Wal::compact_closed_segments() {
  // Only the closed segments below the retention floor (all of them without a dedup
  // window): a retained segment is kept whole, so its dead bytes are not counted either.
  const std::size_t m =
      below_retention(std::max({written_next_, buffer_next_, segments_.back().first_position}));
  if (m == 0) return {};
  const std::uint64_t current = segments_[m].first_position;
  std::uint64_t closed = 0, live = 0;
  for (std::size_t i = 0; i < m; ++i) closed += segments_[i].bytes;
  std::map<std::uint64_t, std::uint64_t> live_per_segment;  // first position -> records
  for (const auto& [pos, l] : live_) {
    if (l.segment >= current) continue;
    live += l.bytes;
    ++live_per_segment[l.segment];
  }
  const std::uint64_t dead = closed - std::min(closed, live);
  if (dead < std::max(live, options_.segment_bytes)) return {};

  std::uint64_t copied = 0;
  for (std::size_t i = 0; i < m; ++i) {
    const Segment seg = segments_[i];  // a copy: appends below may add segments
    const auto wanted = live_per_segment.find(seg.first_position);
    if (!seg.valid || wanted == live_per_segment.end()) continue;
    auto data = dir_->read_all(seg.name);
    if (!data) return fail(data.error());
    FileHeader header;
    if (check_file_header(data.value(), header).kind != HeaderVerdict::ok) return {};
    std::uint64_t found = 0;
    std::size_t off = kFileHeaderSize;
    while (off < data.value().size()) {
      DecodedRecord rec;
      if (check_record(data.value(), off, header.salt, rec) != RecordCheck::ok) {
        off = find_record(data.value(), off + 1, header.salt);
        continue;
      }
      off += rec.size;
      if (rec.type == RecordType::ack) continue;
      const auto it = live_.find(rec.position);
      if (it == live_.end() || it->second.segment != seg.first_position) continue;
      VoidResult r =
          is_copy_record(rec.type)
              ? append_copy(rec.position, rec.origin, rec.id, rec.payload, rec.due_unix_ns,
                            rec.properties)
              : append_message(rec.position, rec.id, rec.payload, rec.due_unix_ns,
                               rec.properties);
      if (!r) return r;
      ++found;
    }
    // A live record that can no longer be read (the disk changed under us): keep the files.
    if (found != wanted->second) return sync();
    copied += found;
  }
  if (auto r = sync(); !r) return r;  // the copies are durable before anything is deleted
  SHMQ_CRASH_POINT("wal.compact.after_copy");
  // Delete the oldest closed segments that hold nothing live now.
  std::size_t n = 0;
  while (n < m) {
    const std::uint64_t first = segments_[n].first_position;
    const bool holds_live = std::any_of(live_.begin(), live_.end(),
                                        [&](const auto& e) { return e.second.segment == first; });
    if (holds_live) break;
    ++n;
  }
  for (std::size_t i = 0; i < n; ++i) {
    auto r = dir_->unlink(segments_[i].name);
    if (!r && r.error().code() != Errc::not_found) return fail(r.error());
    SHMQ_CRASH_POINT("wal.compact.mid_delete");
  }
  if (n > 0)
    if (auto r = dir_->sync(); !r) return fail(r.error());
  segments_.erase(segments_.begin(), segments_.begin() + static_cast<std::ptrdiff_t>(n));
  ++compactions_;
  compacted_records_ += copied;
  return {};
}

std::uint64_t Wal::disk_bytes() const {
  std::uint64_t total = 0;
  for (const auto& s : segments_) total += s.bytes;
  return total;
}

// --- Verify -----------------------------------------------------------------------------

VerifyReport verify(const std::string& dir_path, FileSystem& fs,
                    const std::function<void(const RecordView&)>& on_record) {
  VerifyReport report;
  auto dir_r = fs.open_dir(dir_path, DirOptions{.create = false, .require_private = false});
  if (!dir_r) {
    report.notes.push_back(dir_r.error().message());
    return report;
  }
  Directory& dir = *dir_r.value();
  auto names_r = dir.list();
  if (!names_r) {
    report.notes.push_back(names_r.error().message());
    return report;
  }
  const std::vector<std::string>& names = names_r.value();
  bool ok = true;
  std::uint64_t min_unacked = 0;

  if (std::find(names.begin(), names.end(), kCheckpointName) != names.end()) {
    auto data = dir.read_all(kCheckpointName);
    Checkpoint c;
    if (!data) {
      report.notes.push_back(data.error().message());
      ok = false;
    } else if (const HeaderVerdict v = check_checkpoint(data.value(), c);
               v.kind != HeaderVerdict::ok) {
      report.notes.push_back(std::string(kCheckpointName) + " is unreadable (" + v.why + ")");
      ok = false;
    } else {
      min_unacked = c.min_unacked;
      report.notes.push_back(std::string(kCheckpointName) + ": min_unacked " +
                             std::to_string(c.min_unacked) + ", next_position " +
                             std::to_string(c.next_position));
    }
  } else {
    report.notes.push_back("no " + std::string(kCheckpointName) + " (min_unacked is 0)");
  }
  for (const auto& n : names)
    if (is_stale_temp(n))
      report.notes.push_back("stale temporary file " + n +
                             " (left by a crash; removed at the next open)");

  Accounting accounting(min_unacked);
  Scanner scanner(/*stop_on_corruption=*/false, [&](const DecodedRecord& rec, std::string_view file,
                                                    std::uint64_t offset) {
    accounting.add(rec);
    if (!on_record) return;
    on_record(RecordView{rec.type, rec.position, rec.id, rec.origin, rec.due_unix_ns, rec.payload,
                         file, offset, rec.properties});
  });
  const std::vector<SegmentName> segs = segment_names(names);
  for (std::size_t i = 0; i < segs.size(); ++i) {
    ++report.files;
    auto data = dir.read_all(segs[i].name);
    if (!data) {
      report.notes.push_back(data.error().message());
      ok = false;
      continue;
    }
    const Scanner::FileResult res = scanner.scan(segs[i], data.value(), i + 1 == segs.size());
    if (res.verdict.kind == HeaderVerdict::incompatible) {
      report.notes.push_back(segs[i].name + " has " + res.verdict.why + ": not checked");
      ok = false;
    }
    if (res.torn_at < res.size) {
      report.torn_tail_bytes = res.size - res.torn_at;
      report.notes.push_back("torn tail in " + segs[i].name + " at offset " +
                             std::to_string(res.torn_at) + " (" +
                             std::to_string(report.torn_tail_bytes) +
                             " bytes): an interrupted write, truncated at the next open");
    }
  }
  scanner.finish();
  report.records = scanner.records;
  report.acks = scanner.acks;
  report.corrupt_bytes = scanner.corrupt_bytes;
  const Accounting::Counts counts = accounting.counts();
  report.unacked = accounting.unacked_count();
  report.acked = counts.acked;
  report.superseded = counts.superseded;
  report.below_checkpoint = counts.below_checkpoint;
  report.notes.insert(report.notes.end(), scanner.notes.begin(), scanner.notes.end());
  report.ok = ok && scanner.corrupt_bytes == 0 && scanner.bad_file_count() == 0;
  return report;
}

}  // namespace shmq::log
