// Tests of the write-ahead log (src/log): format, round trips, crash consistency against a
// fault-injecting file system, torn tails, bit flips, mid-log corruption, I/O errors,
// checkpoints, garbage files, permissions.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <xxhash.h>

#include "fault_fs.hpp"
#include "log/file.hpp"
#include "log/log_format.hpp"
#include "log/wal.hpp"

namespace shmq::log {
namespace {

using test::FaultFs;
using Bytes = std::vector<std::byte>;

const std::string kDir = "/data/q";

Bytes bytes_of(std::string_view s) {
  Bytes b(s.size());
  if (!s.empty()) std::memcpy(b.data(), s.data(), s.size());
  return b;
}

// A payload that differs per position and in length (0..40 bytes).
Bytes payload_for(std::uint64_t pos) {
  std::string s = "m" + std::to_string(pos) + ":";
  s.resize(pos % 41, static_cast<char>('a' + pos % 26));
  return bytes_of(s);
}

std::uint64_t id_for(std::uint64_t pos) { return 1000 + pos; }

WalOptions options_for(const std::string& dir, std::uint64_t segment_bytes = 64 << 20) {
  WalOptions o;
  o.dir = dir;
  o.segment_bytes = segment_bytes;
  return o;
}

std::unique_ptr<Wal> open_ok(const WalOptions& o, FileSystem& fs, RecoveryReport& report) {
  auto w = Wal::open(o, fs, report);
  EXPECT_TRUE(w.ok()) << (w.ok() ? "" : w.error().message());
  if (!w.ok()) return nullptr;
  return std::move(w.value());
}

std::vector<std::uint64_t> positions(const RecoveryReport& r) {
  std::vector<std::uint64_t> out;
  for (const auto& m : r.unacked) out.push_back(m.position);
  return out;
}

std::vector<std::uint64_t> range(std::uint64_t from, std::uint64_t to) {  // [from, to)
  std::vector<std::uint64_t> out;
  for (auto p = from; p < to; ++p) out.push_back(p);
  return out;
}

// Every recovered message is exactly what was appended at its position.
void expect_intact(const RecoveryReport& r) {
  for (const auto& m : r.unacked) {
    EXPECT_EQ(m.id, id_for(m.position)) << "position " << m.position;
    EXPECT_EQ(m.payload, payload_for(m.position)) << "position " << m.position;
  }
}

bool any_note_contains(const std::vector<std::string>& notes, std::string_view what) {
  return std::any_of(notes.begin(), notes.end(),
                     [&](const std::string& n) { return n.find(what) != std::string::npos; });
}

std::string all_notes(const std::vector<std::string>& notes) {
  std::string s;
  for (const auto& n : notes) s.append(n).append("\n");
  return s;
}

void append_messages(Wal& w, std::uint64_t from, std::uint64_t to) {
  for (auto p = from; p < to; ++p) ASSERT_TRUE(w.append_message(p, id_for(p), payload_for(p)).ok());
}

// Builds a log in a FaultFs with messages [0, n), synced in batches of `batch`.
void build_log(FaultFs& fs, std::uint64_t n, std::uint64_t batch = 1,
               std::uint64_t segment_bytes = 64 << 20) {
  RecoveryReport r;
  auto w = open_ok(options_for(kDir, segment_bytes), fs, r);
  ASSERT_TRUE(w);
  for (std::uint64_t p = 0; p < n; ++p) {
    ASSERT_TRUE(w->append_message(p, id_for(p), payload_for(p)).ok());
    if ((p + 1) % batch == 0 || p + 1 == n) {
      ASSERT_TRUE(w->sync().ok());
    }
  }
}

// Offsets of the records of a segment file (walks lengths; for well-formed files only).
std::vector<std::size_t> record_offsets(const Bytes& file) {
  std::vector<std::size_t> out;
  std::size_t off = kFileHeaderSize;
  while (off + kRecordHeaderSize <= file.size()) {
    out.push_back(off);
    off += kRecordHeaderSize + load_u32(file.data() + off + record_header::kLength);
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// Format

TEST(LogFormat, SegmentFileNamesAreTwentyDigitsAndParseBack) {
  EXPECT_EQ(segment_file_name(0), "wal-00000000000000000000.log");
  EXPECT_EQ(segment_file_name(42), "wal-00000000000000000042.log");
  EXPECT_EQ(segment_file_name(UINT64_MAX), "wal-18446744073709551615.log");
  for (std::uint64_t p : {0ull, 7ull, 123456789ull, 18446744073709551615ull})
    EXPECT_EQ(parse_segment_file_name(segment_file_name(p)), p);
  EXPECT_FALSE(parse_segment_file_name("wal-99999999999999999999.log"));  // > UINT64_MAX
  EXPECT_FALSE(parse_segment_file_name("wal-0000000000000000000.log"));   // 19 digits
  EXPECT_FALSE(parse_segment_file_name("wal-0000000000000000000x.log"));
  EXPECT_FALSE(parse_segment_file_name("wal-00000000000000000000.log.tmp"));
  EXPECT_FALSE(parse_segment_file_name("CHECKPOINT"));
}

TEST(LogFormat, RecordBytesSitWhereTheDocSays) {
  const std::uint64_t salt = 0x1122334455667788ull;
  Bytes out;
  encode_record(out, RecordType::message, 0x0102030405060708ull, 0xA1A2A3A4A5A6A7A8ull,
                bytes_of("hello"), salt);
  ASSERT_EQ(out.size(), kRecordHeaderSize + 5);
  EXPECT_EQ(load_u32(out.data() + 8), 5u);
  EXPECT_EQ(out[12], std::byte{1});
  EXPECT_EQ(load_u64(out.data() + 16), 0x0102030405060708ull);
  EXPECT_EQ(out[16], std::byte{0x08});  // little-endian
  EXPECT_EQ(load_u64(out.data() + 24), 0xA1A2A3A4A5A6A7A8ull);
  EXPECT_EQ(load_u64(out.data()), XXH3_64bits_withSeed(out.data() + 8, out.size() - 8, salt));
  const std::uint32_t check = std::to_integer<std::uint32_t>(out[13]) |
                              std::to_integer<std::uint32_t>(out[14]) << 8 |
                              std::to_integer<std::uint32_t>(out[15]) << 16;
  EXPECT_EQ(check, record_header_check(out.data(), salt));
  DecodedRecord rec;
  ASSERT_EQ(check_record(out, 0, salt, rec), RecordCheck::ok);
  EXPECT_EQ(rec.position, 0x0102030405060708ull);
  EXPECT_EQ(check_record(out, 0, salt + 1, rec), RecordCheck::bad_header);  // other file's salt

  Bytes ack;
  encode_record(ack, RecordType::ack, 9, 0, {}, salt);
  ASSERT_EQ(ack.size(), kRecordHeaderSize);
  EXPECT_EQ(ack[12], std::byte{2});
  ASSERT_EQ(check_record(ack, 0, salt, rec), RecordCheck::ok);
  EXPECT_EQ(rec.type, RecordType::ack);

  FileHeader h;
  h.first_position = 77;
  h.salt = salt;
  const auto fh = encode_file_header(h);
  EXPECT_EQ(std::memcmp(fh.data(), "SHMQWAL1", 8), 0);
  EXPECT_EQ(load_u32(fh.data() + 8), kFormatVersion);
  EXPECT_EQ(load_u32(fh.data() + 12), kFileHeaderSize);
  EXPECT_EQ(load_u64(fh.data() + 16), 77u);
  EXPECT_EQ(load_u64(fh.data() + 56), XXH3_64bits(fh.data(), 56));
}

TEST(LogFormat, TheWorkedExampleInTheDocIsExact) {
  // docs/log_format.md, "Worked example": keep the two in step.
  // clang-format off
  const std::uint8_t want[] = {
      0x53, 0x48, 0x4d, 0x51, 0x57, 0x41, 0x4c, 0x31, 0x02, 0x00, 0x00, 0x00, 0x40, 0x00, 0x00, 0x00,
      0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x2a, 0x36, 0xfe, 0x9c, 0x97, 0x17,
      0xef, 0xcd, 0xab, 0x89, 0x67, 0x45, 0x23, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
      0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x58, 0x90, 0xc9, 0x9d, 0x6d, 0x2c, 0x86, 0x57,
      0x7c, 0x9b, 0x97, 0x69, 0x1c, 0x4d, 0x43, 0x0c, 0x05, 0x00, 0x00, 0x00, 0x01, 0xa3, 0xf2, 0x8b,
      0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x2a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
      0x68, 0x65, 0x6c, 0x6c, 0x6f, 0x8b, 0x64, 0x3f, 0x72, 0xb0, 0x69, 0xcc, 0x6b, 0x00, 0x00, 0x00,
      0x00, 0x02, 0x08, 0xda, 0x1d, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
      0x00, 0x00, 0x00, 0x00, 0x00, 0xb1, 0x4b, 0xea, 0x18, 0x83, 0x26, 0xd2, 0x7d, 0x0d, 0x00, 0x00,
      0x00, 0x04, 0x63, 0xff, 0x35, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x2b, 0x00, 0x00,
      0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x58, 0x71, 0x2e, 0x0c, 0x9d, 0x97, 0x17, 0x6c, 0x61, 0x74,
      0x65, 0x72};
  // clang-format on
  FileHeader h;
  // A version 2 file, as the doc shows it: version 3 (issue 14) adds only the properties
  // flag, which these records do not carry.
  h.version = 2;
  h.first_position = 0;
  h.created_ns = 1700000000000000000ull;
  h.salt = 0x0123456789abcdefull;
  const auto header = encode_file_header(h);
  Bytes file(header.begin(), header.end());
  encode_record(file, RecordType::message, 0, 42, bytes_of("hello"), h.salt);
  encode_record(file, RecordType::ack, 0, 0, {}, h.salt);
  encode_delayed_record(file, 1, 43, 1700000060000000000ull, bytes_of("later"), h.salt);
  ASSERT_EQ(file.size(), sizeof want);
  for (std::size_t i = 0; i < sizeof want; ++i)
    EXPECT_EQ(std::to_integer<unsigned>(file[i]), want[i]) << "byte " << i;

  // And the log reads it back as the doc says.
  FaultFs fs;
  fs.write(kDir, segment_file_name(0), file);
  RecoveryReport r;
  auto w = open_ok(options_for(kDir), fs, r);
  EXPECT_EQ(r.records, 3u);
  EXPECT_EQ(r.acks, 1u);
  ASSERT_EQ(r.unacked.size(), 1u);
  EXPECT_EQ(r.unacked[0].position, 1u);
  EXPECT_EQ(r.unacked[0].id, 43u);
  EXPECT_EQ(r.unacked[0].due_unix_ns, 1700000060000000000ull);
  EXPECT_EQ(r.unacked[0].payload, bytes_of("later"));
  EXPECT_EQ(r.next_position, 2u);

  // clang-format off
  const std::uint8_t want_ckpt[] = {
      0x53, 0x48, 0x4d, 0x51, 0x43, 0x4b, 0x50, 0x31, 0x01, 0x00, 0x00, 0x00, 0x40, 0x00, 0x00, 0x00,
      0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
      0x00, 0x65, 0xf7, 0x53, 0xfe, 0x9c, 0x97, 0x17, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
      0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x61, 0x52, 0xa8, 0x76, 0x20, 0x21, 0x8f, 0x62};
  // clang-format on
  const auto ck = encode_checkpoint(
      {.min_unacked = 1, .next_position = 1, .created_ns = 1700000000500000000ull});
  ASSERT_EQ(ck.size(), sizeof want_ckpt);
  for (std::size_t i = 0; i < sizeof want_ckpt; ++i)
    EXPECT_EQ(std::to_integer<unsigned>(ck[i]), want_ckpt[i]) << "checkpoint byte " << i;
}

// ---------------------------------------------------------------------------------------
// The fault-injecting file system itself: the crash tests are only as good as it is.

TEST(FaultFs, CrashDropsUnsyncedBytesAndUnsyncedDirectoryEntries) {
  FaultFs fs;
  auto dir = std::move(fs.open_dir(kDir, {.create = true}).value());
  auto a = std::move(dir->create_file("a").value());
  ASSERT_TRUE(a->append(bytes_of("synced")).ok());
  ASSERT_TRUE(a->sync().ok());
  ASSERT_TRUE(dir->sync().ok());
  ASSERT_TRUE(a->append(bytes_of("+unsynced")).ok());
  auto b = std::move(dir->create_file("b").value());  // never fsync(dir)ed
  ASSERT_TRUE(b->append(bytes_of("x")).ok());
  ASSERT_TRUE(b->sync().ok());
  ASSERT_TRUE(dir->rename("a", "c", false).ok());  // not durable either
  fs.crash(FaultFs::CrashMode::drop);
  EXPECT_EQ(fs.names(kDir), std::vector<std::string>{"a"});
  EXPECT_EQ(fs.read(kDir, "a"), bytes_of("synced"));
  // A handle from before the crash is dead.
  EXPECT_FALSE(a->append(bytes_of("zombie")).ok());
}

TEST(FaultFs, CrashKeepsAPrefixOfDirectoryOperations) {
  FaultFs fs;
  auto dir = std::move(fs.open_dir(kDir, {.create = true}).value());
  ASSERT_TRUE(dir->write_new_file("x", bytes_of("1"), false).ok());
  ASSERT_TRUE(dir->create_file("y").ok());
  ASSERT_TRUE(dir->unlink("x").ok());
  ASSERT_EQ(fs.pending_dir_ops(kDir), 2u);
  fs.crash(FaultFs::CrashMode::drop, 1);  // create y survives, unlink x does not
  EXPECT_EQ(fs.names(kDir), (std::vector<std::string>{"x", "y"}));
}

TEST(FaultFs, DieAfterStopsEveryLaterMutation) {
  FaultFs fs;
  auto dir = std::move(fs.open_dir(kDir, {.create = true}).value());
  fs.die_after(1);
  EXPECT_TRUE(dir->create_file("a").ok());
  EXPECT_FALSE(dir->create_file("b").ok());
  EXPECT_FALSE(dir->sync().ok());
  EXPECT_TRUE(fs.dead());
  EXPECT_EQ(fs.names(kDir), std::vector<std::string>{"a"});
}

// ---------------------------------------------------------------------------------------
// Round trips

TEST(Wal, MessagesAndAcksSurviveCloseAndReopen) {
  FaultFs fs;
  {
    RecoveryReport r;
    auto w = open_ok(options_for(kDir), fs, r);
    ASSERT_TRUE(w);
    EXPECT_TRUE(r.unacked.empty());
    EXPECT_EQ(r.next_position, 0u);
    append_messages(*w, 0, 10);
    ASSERT_TRUE(w->append_ack(2).ok());
    ASSERT_TRUE(w->append_ack(5).ok());
    ASSERT_TRUE(w->sync().ok());
    EXPECT_EQ(w->bytes_synced(), fs.read(kDir, w->current_segment()).size() - kFileHeaderSize);
  }
  RecoveryReport r;
  auto w = open_ok(options_for(kDir), fs, r);
  ASSERT_TRUE(w);
  EXPECT_EQ(positions(r), (std::vector<std::uint64_t>{0, 1, 3, 4, 6, 7, 8, 9}));
  expect_intact(r);
  EXPECT_EQ(r.records, 12u);
  EXPECT_EQ(r.acks, 2u);
  EXPECT_EQ(r.next_position, 10u);
  EXPECT_EQ(r.truncated_bytes, 0u);
  EXPECT_EQ(r.corrupt_bytes, 0u);
  EXPECT_TRUE(r.notes.empty()) << all_notes(r.notes);

  // An ack logged before its message (a re-logged message) still counts.
  ASSERT_TRUE(w->append_ack(12).ok());
  ASSERT_TRUE(w->append_message(12, id_for(12), payload_for(12)).ok());
  ASSERT_TRUE(w->append_message(11, id_for(11), payload_for(11)).ok());
  ASSERT_TRUE(w->sync().ok());
  w.reset();
  w = open_ok(options_for(kDir), fs, r);
  EXPECT_EQ(positions(r), (std::vector<std::uint64_t>{0, 1, 3, 4, 6, 7, 8, 9, 11}));
  EXPECT_EQ(r.next_position, 13u);
}

TEST(Wal, CheckpointMinUnackedFiltersAndNextPositionComesBack) {
  FaultFs fs;
  {
    RecoveryReport r;
    auto w = open_ok(options_for(kDir), fs, r);
    append_messages(*w, 0, 10);
    ASSERT_TRUE(w->sync().ok());
    ASSERT_TRUE(w->checkpoint(6, 50).ok());
  }
  RecoveryReport r;
  auto w = open_ok(options_for(kDir), fs, r);
  EXPECT_EQ(r.min_unacked, 6u);
  EXPECT_EQ(positions(r), range(6, 10));
  EXPECT_EQ(r.next_position, 50u);         // the checkpoint's, above every logged position
  EXPECT_FALSE(w->checkpoint(7, 6).ok());  // min above next: refused...
  EXPECT_FALSE(w->failed());               // ...as a bad argument, not a failure
}

TEST(Wal, MessagesWithTheSameIdAreAllRecovered) {
  // Ids are the application's: recovery tells messages apart by position only.
  FaultFs fs;
  {
    RecoveryReport r;
    auto w = open_ok(options_for(kDir), fs, r);
    ASSERT_TRUE(w->append_message(3, 77, bytes_of("first")).ok());
    ASSERT_TRUE(w->append_message(4, 77, bytes_of("retry")).ok());
    ASSERT_TRUE(w->append_message(5, 0, bytes_of("anon")).ok());
    ASSERT_TRUE(w->append_message(7, 78, bytes_of("acked")).ok());
    ASSERT_TRUE(w->append_message(8, 78, bytes_of("again")).ok());
    ASSERT_TRUE(w->append_ack(7).ok());
    ASSERT_TRUE(w->sync().ok());
  }
  RecoveryReport r;
  auto w = open_ok(options_for(kDir), fs, r);
  EXPECT_EQ(positions(r), (std::vector<std::uint64_t>{3, 4, 5, 8}));
  EXPECT_EQ(r.unacked[1].payload, bytes_of("retry"));
  EXPECT_EQ(r.superseded, 0u);
}

TEST(Wal, DurableCopySupersedesItsOriginInAnyOrderAndAcrossEpochs) {
  FaultFs fs;
  {
    RecoveryReport r;
    auto w = open_ok(options_for(kDir), fs, r);
    // Epoch 1: positions 0..3, 1 acked.
    for (std::uint64_t p = 0; p < 4; ++p)
      ASSERT_TRUE(w->append_message(p, 100 + p, bytes_of("m" + std::to_string(p))).ok());
    ASSERT_TRUE(w->append_ack(1).ok());
    // Epoch 2 (rebuilt at 10): 0 and 2 republished as copies; 3 not yet.
    ASSERT_TRUE(w->append_copy(10, 0, 100, bytes_of("m0")).ok());
    ASSERT_TRUE(w->append_copy(11, 2, 102, bytes_of("m2")).ok());
    ASSERT_TRUE(w->append_ack(11).ok());  // the copy of 2 was acked
    // Epoch 3 (rebuilt at 20): the copy at 10 copied again.
    ASSERT_TRUE(w->append_copy(20, 10, 100, bytes_of("m0")).ok());
    // A duplicate of the origin 0 after its copy (compaction writes live records again):
    // still superseded.
    ASSERT_TRUE(w->append_message(0, 100, bytes_of("m0")).ok());
    ASSERT_TRUE(w->sync().ok());
  }
  RecoveryReport r;
  auto w = open_ok(options_for(kDir), fs, r);
  EXPECT_EQ(positions(r), (std::vector<std::uint64_t>{3, 20}));
  EXPECT_EQ(r.unacked[1].id, 100u);
  EXPECT_EQ(r.unacked[1].payload, bytes_of("m0"));
  EXPECT_EQ(r.superseded, 3u);  // 0, 2 and 10; 2's copy acked, the message is gone
  const VerifyReport v = verify(kDir, fs, nullptr);
  EXPECT_EQ(v.unacked, 2u);
  EXPECT_EQ(v.superseded, 3u);
  EXPECT_EQ(v.acked, 2u);
}

TEST(Wal, RotatesPastSegmentBytesWithTheSafeCreateSequence) {
  FaultFs fs;
  RecoveryReport r;
  auto w = open_ok(options_for(kDir, 256), fs, r);
  ASSERT_TRUE(w);
  EXPECT_EQ(w->segment_count(), 1u);
  append_messages(*w, 0, 6);
  ASSERT_TRUE(w->sync().ok());  // 64 + 6 records > 256: the next write rotates
  EXPECT_EQ(w->segment_count(), 1u);
  fs.clear_trace();
  append_messages(*w, 6, 7);
  ASSERT_TRUE(w->sync().ok());
  EXPECT_EQ(w->segment_count(), 2u);
  const std::string seg = segment_file_name(6);
  EXPECT_EQ(w->current_segment(), seg);
  // Old segment needed no sync (already synced); then tmp, header, fdatasync, rename,
  // fsync(dir), and only then the records.
  const std::vector<std::string> want = {"create " + seg + ".tmp", "append " + seg + ".tmp 64",
                                         "sync " + seg + ".tmp", "rename " + seg + ".tmp " + seg,
                                         "syncdir"};
  ASSERT_GE(fs.trace().size(), want.size() + 2);
  EXPECT_EQ(std::vector<std::string>(fs.trace().begin(), fs.trace().begin() + 5), want);
  EXPECT_EQ(fs.trace()[5].rfind("append " + seg, 0), 0u);
  EXPECT_EQ(fs.trace()[6], "sync " + seg);
  w.reset();
  w = open_ok(options_for(kDir, 256), fs, r);
  EXPECT_EQ(positions(r), range(0, 7));
  expect_intact(r);
  EXPECT_EQ(w->segment_count(), 2u);
}

TEST(WalCrash, AWriteOfMoreThanTheBufferIsSyncedBeforeTheSegmentRotates) {
  // A 1.5 MiB message is written (not synced) as soon as it is appended; the next record
  // goes to a new segment. The old segment must be synced before the new one takes
  // records, or a crash would keep the later record and lose the earlier one.
  FaultFs fs;
  const Bytes big(1536 * 1024, std::byte{0x5A});
  {
    RecoveryReport r;
    auto w = open_ok(options_for(kDir, 4096), fs, r);
    ASSERT_TRUE(w->append_message(0, 1, big).ok());
    ASSERT_TRUE(w->append_message(1, id_for(1), payload_for(1)).ok());
    ASSERT_TRUE(w->sync().ok());
    EXPECT_EQ(w->segment_count(), 2u);
    EXPECT_EQ(w->bytes_synced(), 2 * kRecordHeaderSize + big.size() + payload_for(1).size());
  }
  fs.crash(FaultFs::CrashMode::drop);
  RecoveryReport r;
  auto w = open_ok(options_for(kDir, 4096), fs, r);
  ASSERT_EQ(positions(r), range(0, 2));
  EXPECT_EQ(r.unacked[0].payload, big);
}

TEST(Wal, RoundTripOnTheRealFileSystem) {
  char tmpl[] = "/tmp/shmq-log-test-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string root = tmpl;
  const std::string dir = root + "/q";
  {
    RecoveryReport r;
    auto w = open_ok(options_for(dir, 300), posix_file_system(), r);
    ASSERT_TRUE(w);
    for (std::uint64_t p = 0; p < 40; ++p) {
      ASSERT_TRUE(w->append_message(p, id_for(p), payload_for(p)).ok());
      if (p % 3 == 0) {
        ASSERT_TRUE(w->append_ack(p).ok());
      }
      if (p % 4 == 3) {
        ASSERT_TRUE(w->sync().ok());
      }
    }
    ASSERT_TRUE(w->sync().ok());
    EXPECT_GT(w->segment_count(), 3u);
    ASSERT_TRUE(w->checkpoint(20, 40).ok());
  }
  RecoveryReport r;
  auto w = open_ok(options_for(dir, 300), posix_file_system(), r);
  ASSERT_TRUE(w);
  std::vector<std::uint64_t> want;
  for (std::uint64_t p = 20; p < 40; ++p)
    if (p % 3 != 0) want.push_back(p);
  EXPECT_EQ(positions(r), want);
  expect_intact(r);
  EXPECT_EQ(r.next_position, 40u);
  EXPECT_EQ(r.corrupt_bytes + r.truncated_bytes, 0u);
  const VerifyReport v = verify(dir, posix_file_system(), nullptr);
  EXPECT_TRUE(v.ok) << all_notes(v.notes);
  w.reset();
  std::filesystem::remove_all(root);
}

// A message with properties that compaction copies forward keeps its flag (issue 14).
TEST(WalCompaction, CopiedForwardMessageKeepsItsPropertiesFlag) {
  FaultFs fs;
  constexpr std::uint64_t kSegment = 16 << 10;
  const Bytes payload(64, std::byte{'x'});
  std::uint64_t compacted = 0;
  {
    RecoveryReport r;
    auto w = open_ok(options_for(kDir, kSegment), fs, r);
    ASSERT_TRUE(w->append_message(0, 4242, bytes_of("block+held"), std::nullopt, true).ok());
    ASSERT_TRUE(w->append_message(1, 4243, bytes_of("plain held")).ok());
    for (std::uint64_t p = 2; p <= 20'000; ++p) {
      ASSERT_TRUE(w->append_message(p, p, payload).ok());
      ASSERT_TRUE(w->append_ack(p).ok());
      if (p % 1'000 == 0) {
        ASSERT_TRUE(w->sync().ok());
        ASSERT_TRUE(w->checkpoint(0, p + 1).ok());
      }
    }
    compacted = w->compacted_records();
  }
  EXPECT_GE(compacted, 2u);
  RecoveryReport r;
  auto w = open_ok(options_for(kDir, kSegment), fs, r);
  ASSERT_EQ(positions(r), (std::vector<std::uint64_t>{0, 1}));
  EXPECT_TRUE(r.unacked[0].properties);
  EXPECT_EQ(r.unacked[0].payload, bytes_of("block+held"));
  EXPECT_FALSE(r.unacked[1].properties);
}

TEST(WalCompaction, OneLongUnackedMessageDoesNotPinTheLog) {
  // Message 0 is held unacked while a million more are logged and acked: the closed
  // segments are compacted (0 copied forward, the rest deleted), so the data dir stays
  // within 2 x max(live, segment) + the current segment + one write buffer (1 MiB).
  char tmpl[] = "/tmp/shmq-log-test-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string root = tmpl;
  const std::string dir = root + "/q";
  constexpr std::uint64_t kSegment = 256 << 10;
  constexpr std::uint64_t kBound = 4 * kSegment + (1 << 20) + (256 << 10);
  const Bytes payload(64, std::byte{'x'});
  auto dir_bytes = [&] {
    std::uint64_t total = 0;
    for (const auto& e : std::filesystem::directory_iterator(dir))
      if (e.is_regular_file()) total += e.file_size();
    return total;
  };
  std::uint64_t peak = 0, compactions = 0;
  {
    RecoveryReport r;
    auto w = open_ok(options_for(dir, kSegment), posix_file_system(), r);
    ASSERT_TRUE(w);
    ASSERT_TRUE(w->append_message(0, 4242, bytes_of("held")).ok());
    for (std::uint64_t p = 1; p <= 1'000'000; ++p) {
      ASSERT_TRUE(w->append_message(p, p, payload).ok());
      ASSERT_TRUE(w->append_ack(p).ok());
      if (p % 10'000 == 0) {
        ASSERT_TRUE(w->sync().ok());
        ASSERT_TRUE(w->checkpoint(0, p + 1).ok());  // min_unacked stays 0: message 0
        peak = std::max(peak, dir_bytes());
      }
    }
    compactions = w->compactions();
    EXPECT_GE(w->compacted_records(), 1u);
  }
  EXPECT_GT(compactions, 10u);
  EXPECT_LE(peak, kBound) << "peak " << peak << " bytes";
  std::printf("data dir peak: %llu bytes, %llu compactions\n", static_cast<unsigned long long>(peak),
              static_cast<unsigned long long>(compactions));
  RecoveryReport r;
  auto w = open_ok(options_for(dir, kSegment), posix_file_system(), r);
  ASSERT_TRUE(w);
  ASSERT_EQ(positions(r), (std::vector<std::uint64_t>{0}));
  EXPECT_EQ(r.unacked[0].payload, bytes_of("held"));
  EXPECT_EQ(r.next_position, 1'000'001u);
  w.reset();
  std::filesystem::remove_all(root);
}

// ---------------------------------------------------------------------------------------
// Crash consistency: every record whose sync() returned ok survives a crash at any point.

struct Oracle {
  std::set<std::uint64_t> appended_acks;
  std::set<std::uint64_t> confirmed_messages, confirmed_acks;
  std::uint64_t confirmed_min = 0;
  std::uint64_t confirmed_next = 0;  // 1 + highest confirmed position
  std::uint64_t appended_next = 0;
  std::uint64_t compactions = 0;  // the run compacted (so the crashes cover compaction)
};

// A persister-like workload: batches of messages and acks (mostly of the oldest message),
// sync after each batch, a checkpoint now and then. Stops at the first error.
void run_workload(FaultFs& fs, std::uint64_t seed, Oracle& o) {
  std::mt19937_64 rng(seed);
  RecoveryReport r;
  auto opened = Wal::open(options_for(kDir, 200), fs, r);
  if (!opened) return;
  Wal& w = *opened.value();
  std::uint64_t next = 0;
  std::set<std::uint64_t> unacked;
  for (int batch = 0; batch < 14; ++batch) {
    std::vector<std::pair<bool, std::uint64_t>> pending;  // (is_ack, position)
    const int n = 1 + static_cast<int>(rng() % 4);
    for (int i = 0; i < n; ++i) {
      // Position 0 is never acked: it pins the checkpoint, so only compaction deletes files.
      if (unacked.size() > 1 && rng() % 10 < 4) {
        auto it = std::next(unacked.begin());
        if (rng() % 3 == 0) std::advance(it, static_cast<long>(rng() % (unacked.size() - 1)));
        const std::uint64_t p = *it;
        unacked.erase(it);
        if (!w.append_ack(p)) return;
        o.appended_acks.insert(p);
        pending.emplace_back(true, p);
      } else {
        const std::uint64_t p = next++;
        if (!w.append_message(p, id_for(p), payload_for(p))) return;
        unacked.insert(p);
        pending.emplace_back(false, p);
      }
      o.appended_next = std::max(o.appended_next, pending.back().second + 1);
    }
    if (!w.sync()) return;
    for (auto [is_ack, p] : pending) {
      (is_ack ? o.confirmed_acks : o.confirmed_messages).insert(p);
      o.confirmed_next = std::max(o.confirmed_next, p + 1);
    }
    if (batch % 5 == 4) {
      std::uint64_t min = 0;
      while (o.confirmed_acks.contains(min)) ++min;
      if (!w.checkpoint(min, next)) return;
      o.confirmed_min = min;
      o.compactions = w.compactions();
    }
  }
}

void check_recovery(FaultFs& fs, const Oracle& o, bool expect_clean, const std::string& where) {
  SCOPED_TRACE(where);
  RecoveryReport r;
  auto w = open_ok(options_for(kDir, 200), fs, r);
  ASSERT_TRUE(w);
  std::set<std::uint64_t> got;
  for (const auto& m : r.unacked) {
    got.insert(m.position);
    ASSERT_LT(m.position, o.appended_next) << "a position never appended";
    EXPECT_FALSE(o.confirmed_acks.contains(m.position)) << "acked " << m.position;
    EXPECT_GE(m.position, o.confirmed_min);
  }
  expect_intact(r);
  for (std::uint64_t p : o.confirmed_messages)
    // (An ack appended but not confirmed may or may not have reached the disk.)
    if (!o.appended_acks.contains(p) && p >= o.confirmed_min) {
      EXPECT_TRUE(got.contains(p)) << "lost confirmed message " << p << "\n" << all_notes(r.notes);
    }
  EXPECT_GE(r.next_position, o.confirmed_next);
  if (expect_clean) {
    EXPECT_EQ(r.corrupt_bytes, 0u) << all_notes(r.notes);
  }

  // Appending after recovery works, and a further reopen sees it.
  const std::uint64_t p = std::max(r.next_position, o.appended_next);
  ASSERT_TRUE(w->append_message(p, id_for(p), payload_for(p)).ok());
  ASSERT_TRUE(w->sync().ok());
  const std::uint64_t corrupt = r.corrupt_bytes;
  w.reset();
  w = open_ok(options_for(kDir, 200), fs, r);
  ASSERT_TRUE(w);
  EXPECT_EQ(r.truncated_bytes, 0u);
  EXPECT_EQ(r.corrupt_bytes, corrupt);
  EXPECT_TRUE(std::any_of(r.unacked.begin(), r.unacked.end(),
                          [&](const RecoveredMessage& m) { return m.position == p; }));
  expect_intact(r);
}

TEST(WalCrash, EverySyncedRecordSurvivesACrashAtEveryOperation) {
  int cases = 0;
  std::uint64_t compacting_runs = 0;
  for (std::uint64_t seed = 1; seed <= 10; ++seed) {
    std::uint64_t total = 0;
    {
      FaultFs fs(seed);
      Oracle o;
      run_workload(fs, seed, o);
      compacting_runs += o.compactions > 0;
      total = fs.ops();
      ASSERT_GT(total, 40u);
      ASSERT_FALSE(o.confirmed_messages.empty());
    }
    for (std::uint64_t n = 0; n <= total; ++n) {
      for (auto mode : {FaultFs::CrashMode::drop, FaultFs::CrashMode::garble}) {
        // How many of the directory operations since the last fsync(dir) reach the disk:
        // every prefix.
        std::size_t pending = 0;
        {
          FaultFs fs(seed * 1000 + n);
          fs.die_after(n);
          Oracle o;
          run_workload(fs, seed, o);
          pending = fs.pending_dir_ops(kDir);
        }
        for (std::size_t keep = 0; keep <= pending; ++keep) {
          FaultFs fs(seed * 1000 + n);
          fs.die_after(n);
          Oracle o;
          run_workload(fs, seed, o);
          fs.crash(mode, keep);
          // A crash during recovery itself (truncating the torn tail, removing temp files,
          // creating the first segment) must not hurt either.
          if (n % 3 == 0) {
            fs.die_after(n % 4);
            RecoveryReport ignored;
            (void)Wal::open(options_for(kDir, 200), fs, ignored);
            fs.crash(mode, keep % 2);
          }
          check_recovery(fs, o, mode == FaultFs::CrashMode::drop,
                         "seed " + std::to_string(seed) + " crash after op " + std::to_string(n) +
                             (mode == FaultFs::CrashMode::drop ? " drop" : " garble") + " keep " +
                             std::to_string(keep));
          ++cases;
          if (HasFatalFailure() || HasNonfatalFailure()) return;
        }
      }
    }
  }
  EXPECT_GT(cases, 2000);
  EXPECT_GE(compacting_runs, 3u) << "the crash workload must exercise compaction";
}

// ---------------------------------------------------------------------------------------
// Torn tails and bit flips

TEST(WalTornTail, TruncatedAtEveryByteOfTheLastRecord) {
  FaultFs base;
  build_log(base, 6);
  const std::string seg = segment_file_name(0);
  const Bytes file = base.read(kDir, seg);
  const std::size_t last = record_offsets(file).back();
  for (std::size_t cut = last; cut < file.size(); ++cut) {
    SCOPED_TRACE("cut at " + std::to_string(cut));
    FaultFs fs;
    fs.write(kDir, seg, Bytes(file.begin(), file.begin() + static_cast<long>(cut)));
    RecoveryReport r;
    auto w = open_ok(options_for(kDir), fs, r);
    ASSERT_TRUE(w);
    EXPECT_EQ(positions(r), range(0, 5));
    expect_intact(r);
    EXPECT_EQ(r.truncated_bytes, cut - last);
    EXPECT_EQ(r.corrupt_bytes, 0u);
    if (cut > last) {
      EXPECT_TRUE(any_note_contains(
          r.notes, "truncated torn tail of " + seg + " at offset " + std::to_string(last)))
          << all_notes(r.notes);
    }
    EXPECT_EQ(fs.read(kDir, seg).size(), last);
    append_messages(*w, 5, 8);
    ASSERT_TRUE(w->sync().ok());
    w.reset();
    w = open_ok(options_for(kDir), fs, r);
    EXPECT_EQ(positions(r), range(0, 8));
    expect_intact(r);
    EXPECT_EQ(r.truncated_bytes, 0u);
  }
}

TEST(WalTornTail, EveryBitFlipInTheLastRecordHeaderDeliversNothingCorrupt) {
  FaultFs base;
  build_log(base, 6);
  const std::string seg = segment_file_name(0);
  const Bytes file = base.read(kDir, seg);
  const std::size_t last = record_offsets(file).back();
  ASSERT_GT(file.size() - last, kRecordHeaderSize);  // has a payload
  // Every header bit, and every payload bit too.
  for (std::size_t bit = 0; bit < (file.size() - last) * 8; ++bit) {
    SCOPED_TRACE("bit " + std::to_string(bit));
    Bytes bad = file;
    bad[last + bit / 8] ^= static_cast<std::byte>(1u << (bit % 8));
    FaultFs fs;
    fs.write(kDir, seg, bad);
    RecoveryReport r;
    auto w = open_ok(options_for(kDir), fs, r);
    ASSERT_TRUE(w);
    EXPECT_EQ(positions(r), range(0, 5));
    expect_intact(r);
    EXPECT_EQ(r.truncated_bytes, file.size() - last);
  }
}

TEST(WalTornTail, GarbledTailAfterTheLastRecordIsTruncated) {
  FaultFs base;
  build_log(base, 4);
  const std::string seg = segment_file_name(0);
  Bytes file = base.read(kDir, seg);
  std::mt19937_64 rng(3);
  for (int i = 0; i < 777; ++i) file.push_back(static_cast<std::byte>(rng()));
  FaultFs fs;
  fs.write(kDir, seg, file);
  RecoveryReport r;
  auto w = open_ok(options_for(kDir), fs, r);
  EXPECT_EQ(positions(r), range(0, 4));
  EXPECT_EQ(r.truncated_bytes, 777u);
}

// ---------------------------------------------------------------------------------------
// Corruption in the middle

class WalMidLogCorruption : public ::testing::Test {
 protected:
  // Three segments of messages [0, 30); record 12 (in the middle segment) is overwritten.
  void SetUp() override {
    build_log(fs_, 30, 3, 600);
    const auto names = fs_.names(kDir);
    ASSERT_GE(names.size(), 3u);
    for (const auto& n : names) {
      const Bytes f = fs_.read(kDir, n);
      for (std::size_t off : record_offsets(f))
        if (load_u64(f.data() + off + record_header::kPosition) == 12) {
          file_ = n;
          offset_ = off;
          size_ = kRecordHeaderSize + load_u32(f.data() + off + record_header::kLength);
        }
    }
    ASSERT_FALSE(file_.empty());
    ASSERT_NE(file_, names.back());  // a middle segment
    Bytes f = fs_.read(kDir, file_);
    for (std::size_t i = 0; i < 10; ++i) f[offset_ + 4 + i] = std::byte{0xEE};
    fs_.write(kDir, file_, f);
  }
  FaultFs fs_;
  std::string file_;
  std::size_t offset_ = 0, size_ = 0;
};

TEST_F(WalMidLogCorruption, IsReportedWithFileAndOffsetAndLaterRecordsAreRecovered) {
  RecoveryReport r;
  auto w = open_ok(options_for(kDir, 600), fs_, r);
  ASSERT_TRUE(w);
  std::vector<std::uint64_t> want = range(0, 30);
  want.erase(want.begin() + 12);
  EXPECT_EQ(positions(r), want);
  expect_intact(r);
  EXPECT_EQ(r.corrupt_bytes, size_);
  EXPECT_EQ(r.truncated_bytes, 0u);
  EXPECT_TRUE(any_note_contains(r.notes, "corruption in " + file_ + " at offset " +
                                             std::to_string(offset_) + ": " +
                                             std::to_string(size_) + " bytes skipped"))
      << all_notes(r.notes);
  EXPECT_TRUE(any_note_contains(r.notes, "position 12 lost")) << all_notes(r.notes);
  // Still appendable, and the corruption is reported again (it is still there).
  append_messages(*w, 30, 31);
  ASSERT_TRUE(w->sync().ok());
  w.reset();
  w = open_ok(options_for(kDir, 600), fs_, r);
  EXPECT_EQ(r.unacked.back().position, 30u);
  EXPECT_EQ(r.corrupt_bytes, size_);
}

TEST_F(WalMidLogCorruption, StopOnCorruptionStopsThereAndSaysSo) {
  const auto before = fs_.names(kDir);
  const std::uint64_t ops = fs_.ops();
  WalOptions o = options_for(kDir, 600);
  o.stop_on_corruption = true;
  RecoveryReport r;
  auto w = Wal::open(o, fs_, r);
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.error().code(), Errc::corrupt);
  EXPECT_NE(w.error().message().find(file_), std::string::npos) << w.error().message();
  EXPECT_EQ(positions(r), range(0, 12));
  EXPECT_TRUE(any_note_contains(r.notes, "recovery stopped")) << all_notes(r.notes);
  EXPECT_TRUE(any_note_contains(r.notes, "at offset " + std::to_string(offset_)));
  EXPECT_EQ(fs_.ops(), ops);  // nothing modified
  EXPECT_EQ(fs_.names(kDir), before);
}

TEST_F(WalMidLogCorruption, VerifyReportsItWithoutModifyingAnything) {
  const std::uint64_t ops = fs_.ops();
  std::vector<std::uint64_t> seen;
  const VerifyReport v = verify(kDir, fs_, [&](const RecordView& rec) {
    EXPECT_EQ(rec.type, RecordType::message);
    EXPECT_EQ(Bytes(rec.payload.begin(), rec.payload.end()), payload_for(rec.position));
    EXPECT_TRUE(parse_segment_file_name(rec.file).has_value()) << rec.file;
    seen.push_back(rec.position);
  });
  EXPECT_FALSE(v.ok);
  EXPECT_EQ(v.files, fs_.names(kDir).size());  // all segments, no checkpoint
  EXPECT_EQ(v.records, 29u);
  EXPECT_EQ(v.corrupt_bytes, size_);
  EXPECT_EQ(seen.size(), 29u);
  EXPECT_TRUE(std::is_sorted(seen.begin(), seen.end()));
  EXPECT_TRUE(any_note_contains(v.notes, file_ + " at offset " + std::to_string(offset_)));
  EXPECT_EQ(fs_.ops(), ops);
}

TEST(WalCorruption, CorruptionInTheLastSegmentFollowedByValidRecordsIsSkippedNotTruncated) {
  FaultFs fs;
  build_log(fs, 10);
  const std::string seg = segment_file_name(0);
  Bytes f = fs.read(kDir, seg);
  const std::size_t off = record_offsets(f)[4];
  f[off + 20] ^= std::byte{0x40};  // inside record 4's position field
  fs.write(kDir, seg, f);
  RecoveryReport r;
  auto w = open_ok(options_for(kDir), fs, r);
  std::vector<std::uint64_t> want = range(0, 10);
  want.erase(want.begin() + 4);
  EXPECT_EQ(positions(r), want);
  EXPECT_EQ(r.truncated_bytes, 0u);
  EXPECT_GT(r.corrupt_bytes, 0u);
  EXPECT_TRUE(any_note_contains(r.notes, "position 4 lost")) << all_notes(r.notes);
}

TEST(WalCorruption, RecordsInsideAPayloadAreNeverMistakenForLogRecords) {
  // A message carrying a whole log segment (another file, another salt) as its payload;
  // then the outer record's header is damaged, so recovery resynchronises inside it.
  FaultFs other;
  build_log(other, 5);
  const Bytes inner = other.read(kDir, segment_file_name(0));
  FaultFs fs;
  {
    RecoveryReport r;
    auto w = open_ok(options_for(kDir), fs, r);
    ASSERT_TRUE(w->append_message(100, 1, bytes_of("before")).ok());
    ASSERT_TRUE(w->append_message(101, 2, inner).ok());
    ASSERT_TRUE(w->append_message(102, 3, bytes_of("after")).ok());
    ASSERT_TRUE(w->sync().ok());
  }
  const std::string seg = segment_file_name(0);
  Bytes f = fs.read(kDir, seg);
  f[record_offsets(f)[1] + record_header::kType] = std::byte{0x7F};
  fs.write(kDir, seg, f);
  RecoveryReport r;
  auto w = open_ok(options_for(kDir), fs, r);
  EXPECT_EQ(positions(r), (std::vector<std::uint64_t>{100, 102}));
  EXPECT_EQ(r.records, 2u);
}

// ---------------------------------------------------------------------------------------
// I/O errors: fail-stop

TEST(WalIoError, FdatasyncEioFailsStopAndReopenRecoversWhatWasSynced) {
  for (bool crash : {false, true}) {
    SCOPED_TRACE(crash ? "reopen after a crash" : "reopen without a crash");
    FaultFs fs;
    RecoveryReport r;
    auto w = open_ok(options_for(kDir), fs, r);
    append_messages(*w, 0, 3);
    ASSERT_TRUE(w->sync().ok());
    append_messages(*w, 3, 5);
    fs.fail_next_sync(EIO);
    const VoidResult s = w->sync();
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.error().code(), Errc::system_error);
    EXPECT_NE(s.error().message().find("fdatasync"), std::string::npos) << s.error().message();
    EXPECT_TRUE(w->failed());
    // The next fdatasync would succeed; the Wal must not try it and trust it.
    const std::uint64_t ops = fs.ops();
    EXPECT_FALSE(w->sync().ok());
    EXPECT_FALSE(w->append_message(5, id_for(5), payload_for(5)).ok());
    EXPECT_FALSE(w->append_ack(0).ok());
    EXPECT_FALSE(w->sync().ok());
    EXPECT_FALSE(w->checkpoint(0, 5).ok());
    EXPECT_NE(w->sync().error().message().find("fail-stop"), std::string::npos);
    EXPECT_EQ(fs.ops(), ops);  // not a single I/O after the failure
    w.reset();
    if (crash) fs.crash(FaultFs::CrashMode::drop);
    w = open_ok(options_for(kDir), fs, r);
    ASSERT_TRUE(w);
    const auto got = positions(r);
    ASSERT_GE(got.size(), 3u);  // the confirmed ones; 3 and 4 may or may not be there
    EXPECT_EQ(std::vector<std::uint64_t>(got.begin(), got.begin() + 3), range(0, 3));
    if (crash) {
      EXPECT_EQ(got, range(0, 3));
    }
    expect_intact(r);
    append_messages(*w, 10, 11);
    EXPECT_TRUE(w->sync().ok());
  }
}

TEST(WalIoError, NoSpaceGivesAClearMessageFailsStopAndRecoveryTruncatesThePartialWrite) {
  FaultFs fs;
  RecoveryReport r;
  auto w = open_ok(options_for(kDir), fs, r);
  append_messages(*w, 0, 3);
  ASSERT_TRUE(w->sync().ok());
  fs.set_space_left(50);  // part of the next batch fits
  append_messages(*w, 3, 6);
  const VoidResult s = w->sync();
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code(), Errc::no_space);
  EXPECT_NE(s.error().message().find("no space left on device writing " + kDir + "/" +
                                     segment_file_name(0)),
            std::string::npos)
      << s.error().message();
  EXPECT_TRUE(w->failed());
  EXPECT_FALSE(w->append_message(6, id_for(6), payload_for(6)).ok());
  EXPECT_EQ(w->sync().error().code(), Errc::no_space);
  w.reset();
  fs.crash(FaultFs::CrashMode::drop);
  w = open_ok(options_for(kDir), fs, r);
  EXPECT_EQ(positions(r), range(0, 3));
  append_messages(*w, 3, 4);
  EXPECT_TRUE(w->sync().ok());

  // Without a crash the partial write is still there (page cache): a torn tail.
  FaultFs fs2;
  w = open_ok(options_for(kDir), fs2, r);
  append_messages(*w, 0, 3);
  ASSERT_TRUE(w->sync().ok());
  fs2.set_space_left(50);
  append_messages(*w, 3, 6);
  EXPECT_FALSE(w->sync().ok());
  w.reset();
  fs2.set_space_left(UINT64_MAX);
  w = open_ok(options_for(kDir), fs2, r);
  EXPECT_EQ(positions(r), range(0, 4));  // 50 bytes: record 3 and a torn piece of 4
  EXPECT_EQ(r.truncated_bytes, 50u - (kRecordHeaderSize + payload_for(3).size()));
  EXPECT_TRUE(w->append_message(9, id_for(9), payload_for(9)).ok());
  EXPECT_TRUE(w->sync().ok());
}

// ---------------------------------------------------------------------------------------
// Checkpoints

// Three full segments and a current one; messages [0, 20) were consumed (no ack records:
// only the checkpoint says so), [20, 30) were not.
void build_for_checkpoint(FaultFs& fs, std::unique_ptr<Wal>& w) {
  RecoveryReport r;
  w = open_ok(options_for(kDir, 400), fs, r);
  ASSERT_TRUE(w);
  for (std::uint64_t p = 0; p < 30; ++p) {
    ASSERT_TRUE(w->append_message(p, id_for(p), payload_for(p)).ok());
    ASSERT_TRUE(w->sync().ok());
  }
  ASSERT_GE(w->segment_count(), 4u);
}

TEST(WalCheckpoint, SegmentsAreUnlinkedOnlyAfterTheCheckpointIsDurable) {
  FaultFs fs;
  std::unique_ptr<Wal> w;
  build_for_checkpoint(fs, w);
  const std::size_t before = w->segment_count();
  fs.clear_trace();
  ASSERT_TRUE(w->checkpoint(20, 30).ok());
  EXPECT_LT(w->segment_count(), before);
  const auto& t = fs.trace();
  const std::vector<std::string> head = {"create CHECKPOINT.tmp", "append CHECKPOINT.tmp 64",
                                         "sync CHECKPOINT.tmp", "rename CHECKPOINT.tmp CHECKPOINT",
                                         "syncdir"};
  ASSERT_GT(t.size(), head.size() + 1);
  EXPECT_EQ(std::vector<std::string>(t.begin(), t.begin() + 5), head);
  for (std::size_t i = 5; i + 1 < t.size(); ++i)
    EXPECT_EQ(t[i].rfind("unlink wal-", 0), 0u) << t[i];
  EXPECT_EQ(t.back(), "syncdir");
  // Every deleted segment held only positions below 20.
  RecoveryReport r;
  w.reset();
  w = open_ok(options_for(kDir, 400), fs, r);
  EXPECT_EQ(positions(r), range(20, 30));
  // The oldest remaining segment starts at or below 20, and the next one above it.
  std::vector<std::uint64_t> firsts;
  for (const auto& n : fs.names(kDir))
    if (auto p = parse_segment_file_name(n)) firsts.push_back(*p);
  ASSERT_GE(firsts.size(), 2u);
  EXPECT_LE(firsts[0], 20u);
  EXPECT_GT(firsts[1], 20u);
}

TEST(WalCheckpoint, ACrashAnywhereInACheckpointRecoversCorrectly) {
  std::uint64_t total = 0;
  std::size_t segments = 0;
  {
    FaultFs fs;
    std::unique_ptr<Wal> w;
    build_for_checkpoint(fs, w);
    segments = w->segment_count();
    const std::uint64_t ops = fs.ops();
    ASSERT_TRUE(w->checkpoint(20, 30).ok());
    total = fs.ops() - ops;
  }
  int renamed_not_synced = 0, durable_not_unlinked = 0;
  for (std::uint64_t n = 0; n <= total; ++n) {
    for (std::size_t keep = 0; keep <= segments; ++keep) {
      SCOPED_TRACE("crash after checkpoint op " + std::to_string(n) + ", keep " +
                   std::to_string(keep));
      FaultFs fs;
      std::unique_ptr<Wal> w;
      build_for_checkpoint(fs, w);
      fs.die_after(n);
      const bool ok = w->checkpoint(20, 30).ok();
      EXPECT_EQ(ok, n == total);
      const bool rename_pending =
          !fs.trace().empty() && fs.trace().back() == "rename CHECKPOINT.tmp CHECKPOINT";
      w.reset();
      fs.crash(FaultFs::CrashMode::drop, keep);
      const auto names = fs.names(kDir);
      const auto segs = std::count_if(names.begin(), names.end(), [](const std::string& s) {
        return parse_segment_file_name(s).has_value();
      });
      RecoveryReport r;
      w = open_ok(options_for(kDir, 400), fs, r);
      ASSERT_TRUE(w);
      // A missing segment implies the checkpoint that retired it is there.
      if (static_cast<std::size_t>(segs) < segments) {
        EXPECT_EQ(r.min_unacked, 20u);
        ++durable_not_unlinked;
      }
      if (rename_pending) ++renamed_not_synced;
      // Whatever the checkpoint's state, nothing unacked is lost.
      const auto got = positions(r);
      const auto want = range(20, 30);
      EXPECT_TRUE(std::includes(got.begin(), got.end(), want.begin(), want.end()));
      EXPECT_EQ(got.size(), r.min_unacked == 20 ? 10u : 30u);
      EXPECT_EQ(r.next_position, 30u);
      expect_intact(r);
    }
  }
  EXPECT_GT(renamed_not_synced, 0);    // crashed between rename and fsync(dir)
  EXPECT_GT(durable_not_unlinked, 0);  // crashed with some unlinks done
}

TEST(WalCheckpoint, ACorruptCheckpointIsReportedAndIgnored) {
  FaultFs fs;
  {
    RecoveryReport r;
    auto w = open_ok(options_for(kDir), fs, r);
    append_messages(*w, 0, 10);
    ASSERT_TRUE(w->sync().ok());
    ASSERT_TRUE(w->checkpoint(5, 10).ok());
  }
  Bytes ck = fs.read(kDir, "CHECKPOINT");
  ck[20] ^= std::byte{1};
  fs.write(kDir, "CHECKPOINT", ck);
  RecoveryReport r;
  auto w = open_ok(options_for(kDir), fs, r);
  EXPECT_EQ(r.min_unacked, 0u);
  EXPECT_EQ(positions(r), range(0, 10));  // duplicates, never loss
  EXPECT_TRUE(any_note_contains(r.notes, "CHECKPOINT is corrupt (bad checksum)"))
      << all_notes(r.notes);
  // A fresh checkpoint replaces it.
  ASSERT_TRUE(w->checkpoint(5, 10).ok());
  w.reset();
  w = open_ok(options_for(kDir), fs, r);
  EXPECT_EQ(r.min_unacked, 5u);
  EXPECT_TRUE(r.notes.empty()) << all_notes(r.notes);
}

// ---------------------------------------------------------------------------------------
// Garbage

TEST(WalGarbage, ASegmentFullOfRandomBytesIsReportedAndSkipped) {
  FaultFs fs;
  build_log(fs, 5);
  std::mt19937_64 rng(11);
  Bytes junk(5000);
  for (auto& b : junk) b = static_cast<std::byte>(rng());
  fs.write(kDir, segment_file_name(3), junk);  // sorts after wal-0, before a new segment
  RecoveryReport r;
  auto w = open_ok(options_for(kDir), fs, r);
  ASSERT_TRUE(w);
  EXPECT_EQ(positions(r), range(0, 5));
  EXPECT_EQ(r.corrupt_bytes, 5000u);
  EXPECT_TRUE(any_note_contains(r.notes, "bad header in " + segment_file_name(3)))
      << all_notes(r.notes);
  // The unreadable file is the last one: appends go to a new segment after it.
  EXPECT_EQ(w->current_segment(), segment_file_name(5));
  append_messages(*w, 5, 6);
  ASSERT_TRUE(w->sync().ok());
  w.reset();
  w = open_ok(options_for(kDir), fs, r);
  EXPECT_EQ(positions(r), range(0, 6));
  // A checkpoint past it removes it.
  ASSERT_TRUE(w->checkpoint(5, 6).ok());
  EXPECT_FALSE(fs.exists(kDir, segment_file_name(3)));
}

TEST(WalGarbage, AZeroLengthSegmentIsReported) {
  FaultFs fs;
  build_log(fs, 3);
  fs.write(kDir, segment_file_name(9), {});
  RecoveryReport r;
  auto w = open_ok(options_for(kDir), fs, r);
  ASSERT_TRUE(w);
  EXPECT_EQ(positions(r), range(0, 3));
  EXPECT_TRUE(any_note_contains(r.notes, "empty segment file " + segment_file_name(9)))
      << all_notes(r.notes);
  EXPECT_EQ(w->current_segment(), segment_file_name(10));
  EXPECT_EQ(r.next_position, 10u);  // positions continue past the new segment's name
  EXPECT_FALSE(verify(kDir, fs, nullptr).ok);
}

TEST(WalGarbage, AHeaderWithABadChecksumIsReportedAndItsPositionsCountedLost) {
  FaultFs fs;
  build_log(fs, 15, 1, 200);
  auto names = fs.names(kDir);
  ASSERT_GE(names.size(), 3u);
  Bytes f = fs.read(kDir, names[1]);
  f[30] ^= std::byte{0x10};  // in the header's created time
  fs.write(kDir, names[1], f);
  RecoveryReport r;
  auto w = open_ok(options_for(kDir, 200), fs, r);
  ASSERT_TRUE(w);
  const auto lost_from = *parse_segment_file_name(names[1]);
  const auto lost_to = *parse_segment_file_name(names[2]);
  std::vector<std::uint64_t> want = range(0, lost_from);
  for (auto p : range(lost_to, 15)) want.push_back(p);
  EXPECT_EQ(positions(r), want);
  EXPECT_EQ(r.corrupt_bytes, f.size());
  EXPECT_TRUE(any_note_contains(r.notes, "bad header in " + names[1] + " (bad header checksum)"))
      << all_notes(r.notes);
  EXPECT_TRUE(any_note_contains(r.notes, "positions " + std::to_string(lost_from) + ".." +
                                             std::to_string(lost_to - 1) + " lost"))
      << all_notes(r.notes);
}

TEST(WalGarbage, AnotherFormatVersionIsRefusedNotSkipped) {
  for (const std::uint32_t version : {kFormatVersion + 1, 0u}) {
    FaultFs fs;
    FileHeader h;
    h.version = version;
    const auto b = encode_file_header(h);
    fs.write(kDir, segment_file_name(0), Bytes(b.begin(), b.end()));
    RecoveryReport r;
    auto w = Wal::open(options_for(kDir), fs, r);
    ASSERT_FALSE(w.ok()) << version;
    EXPECT_EQ(w.error().code(), Errc::incompatible_version) << version;
  }
}

// Issue 13 bumped the format to version 2 (delayed records). A version 1 log still reads,
// its torn tail is cut as before, and appends go to a new (version 2) segment, so a version
// 1 file never holds a record type its version does not have.
TEST(WalGarbage, AVersion1LogIsReadAndContinuedInANewSegment) {
  FaultFs fs;
  FileHeader h;
  h.version = 1;
  h.salt = 99;
  const auto hb = encode_file_header(h);
  Bytes file(hb.begin(), hb.end());
  encode_record(file, RecordType::message, 0, 10, bytes_of("zero"), h.salt);
  encode_record(file, RecordType::message, 1, 11, bytes_of("one"), h.salt);
  encode_record(file, RecordType::ack, 0, 0, {}, h.salt);
  const std::size_t intact = file.size();
  file.insert(file.end(), 7, std::byte{0x5a});  // a torn tail
  fs.write(kDir, segment_file_name(0), file);
  {
    RecoveryReport r;
    auto w = open_ok(options_for(kDir), fs, r);
    EXPECT_EQ(positions(r), std::vector<std::uint64_t>{1});
    EXPECT_EQ(r.truncated_bytes, 7u);
    EXPECT_EQ(w->current_segment(), segment_file_name(2));
    ASSERT_TRUE(w->append_message(2, 12, bytes_of("two"), 1234).ok());
    ASSERT_TRUE(w->sync().ok());
  }
  EXPECT_EQ(fs.read(kDir, segment_file_name(0)).size(), intact);
  const Bytes next = fs.read(kDir, segment_file_name(2));
  ASSERT_GE(next.size(), kFileHeaderSize);
  EXPECT_EQ(load_u32(next.data() + file_header::kVersion), kFormatVersion);
  RecoveryReport r;
  auto w = open_ok(options_for(kDir), fs, r);
  EXPECT_EQ(positions(r), (std::vector<std::uint64_t>{1, 2}));
  EXPECT_EQ(r.corrupt_bytes, 0u);
  EXPECT_EQ(r.unacked[1].due_unix_ns, 1234u);
  EXPECT_FALSE(r.unacked[0].due_unix_ns);
}

// Issue 14 bumped the format to version 3 (the properties flag in the type byte). A version
// 2 log (delayed records, no flags) still reads; appends go to a new version 3 segment, and
// a message record with properties keeps its flag through recovery and compaction's copies.
TEST(WalGarbage, AVersion2LogIsReadAndContinuedWithPropertiesRecords) {
  FaultFs fs;
  FileHeader h;
  h.version = 2;
  h.salt = 77;
  const auto hb = encode_file_header(h);
  Bytes file(hb.begin(), hb.end());
  encode_record(file, RecordType::message, 0, 10, bytes_of("zero"), h.salt);
  encode_delayed_record(file, 1, 11, 4321, bytes_of("one"), h.salt);
  fs.write(kDir, segment_file_name(0), file);
  {
    RecoveryReport r;
    auto w = open_ok(options_for(kDir), fs, r);
    EXPECT_EQ(positions(r), (std::vector<std::uint64_t>{0, 1}));
    EXPECT_EQ(w->current_segment(), segment_file_name(2));
    ASSERT_TRUE(w->append_message(2, 12, bytes_of("block+two"), std::nullopt, true).ok());
    ASSERT_TRUE(w->append_copy(3, 0, 10, bytes_of("block+zero"), std::nullopt, true).ok());
    ASSERT_TRUE(w->sync().ok());
  }
  const Bytes next = fs.read(kDir, segment_file_name(2));
  ASSERT_GE(next.size(), kFileHeaderSize + kRecordHeaderSize);
  EXPECT_EQ(load_u32(next.data() + file_header::kVersion), 3u);
  EXPECT_EQ(std::to_integer<int>(next[kFileHeaderSize + record_header::kType]),
            0x80 | int(RecordType::message));
  RecoveryReport r;
  auto w = open_ok(options_for(kDir), fs, r);
  EXPECT_EQ(positions(r), (std::vector<std::uint64_t>{1, 2, 3}));
  EXPECT_EQ(r.corrupt_bytes, 0u);
  EXPECT_FALSE(r.unacked[0].properties);
  EXPECT_EQ(r.unacked[0].due_unix_ns, 4321u);
  EXPECT_TRUE(r.unacked[1].properties);
  EXPECT_TRUE(r.unacked[2].properties);
}

TEST(WalGarbage, StaleTempFilesAreRemovedAndOtherFilesIgnored) {
  FaultFs fs;
  build_log(fs, 2);
  fs.write(kDir, segment_file_name(7) + ".tmp", bytes_of("half-made"));
  fs.write(kDir, "CHECKPOINT.tmp", bytes_of("half-made"));
  fs.write(kDir, "LOCK", {});
  fs.write(kDir, "notes.txt", bytes_of("operator's"));
  RecoveryReport r;
  auto w = open_ok(options_for(kDir), fs, r);
  EXPECT_EQ(positions(r), range(0, 2));
  EXPECT_FALSE(fs.exists(kDir, segment_file_name(7) + ".tmp"));
  EXPECT_FALSE(fs.exists(kDir, "CHECKPOINT.tmp"));
  EXPECT_TRUE(fs.exists(kDir, "LOCK"));
  EXPECT_TRUE(fs.exists(kDir, "notes.txt"));
}

TEST(WalGarbage, RandomBytesAnywhereNeverCrashOrDeliverACorruptRecord) {
  std::mt19937_64 rng(5);
  FaultFs base;
  build_log(base, 40, 4, 500);
  const auto names = base.names(kDir);
  for (int iter = 0; iter < 300; ++iter) {
    FaultFs fs;
    for (const auto& n : names) {
      Bytes f = base.read(kDir, n);
      const int hits = static_cast<int>(rng() % 4);
      for (int i = 0; i < hits && !f.empty(); ++i) {
        const std::size_t at = rng() % f.size();
        const std::size_t len = std::min<std::size_t>(1 + rng() % 48, f.size() - at);
        for (std::size_t j = 0; j < len; ++j) f[at + j] = static_cast<std::byte>(rng());
      }
      if (rng() % 8 == 0) f.resize(rng() % (f.size() + 1));
      fs.write(kDir, n, f);
    }
    RecoveryReport r;
    auto w = Wal::open(options_for(kDir, 500), fs, r);
    ASSERT_TRUE(w.ok()) << w.error().message();
    expect_intact(r);
    (void)verify(kDir, fs, nullptr);
  }
}

// ---------------------------------------------------------------------------------------
// Permissions (the real file system)

class WalPermissions : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/shmq-log-perm-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    root_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(root_); }
  static unsigned mode_of(const std::string& p) {
    struct stat st {};
    EXPECT_EQ(::lstat(p.c_str(), &st), 0) << p;
    return st.st_mode & 07777;
  }
  std::string root_;
};

TEST_F(WalPermissions, DirIsCreated0700AndFiles0600WhateverTheUmask) {
  const mode_t old = ::umask(0);
  const std::string dir = root_ + "/q";
  {
    RecoveryReport r;
    auto w = open_ok(options_for(dir), posix_file_system(), r);
    ASSERT_TRUE(w);
    append_messages(*w, 0, 2);
    ASSERT_TRUE(w->sync().ok());
    ASSERT_TRUE(w->checkpoint(0, 2).ok());
  }
  ::umask(old);
  EXPECT_EQ(mode_of(dir), 0700u);
  EXPECT_EQ(mode_of(dir + "/" + segment_file_name(0)), 0600u);
  EXPECT_EQ(mode_of(dir + "/CHECKPOINT"), 0600u);
}

TEST_F(WalPermissions, ASymlinkedDirIsRefused) {
  const std::string real = root_ + "/real";
  ASSERT_EQ(::mkdir(real.c_str(), 0700), 0);
  const std::string link = root_ + "/link";
  ASSERT_EQ(::symlink(real.c_str(), link.c_str()), 0);
  RecoveryReport r;
  auto w = Wal::open(options_for(link), posix_file_system(), r);
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.error().code(), Errc::permission_denied);
  EXPECT_NE(w.error().message().find("symbolic link"), std::string::npos) << w.error().message();
  EXPECT_FALSE(verify(link, posix_file_system(), nullptr).ok);
  EXPECT_TRUE(std::filesystem::is_empty(real));
}

TEST_F(WalPermissions, ADirOpenToOthersIsRefused) {
  const std::string dir = root_ + "/open";
  ASSERT_EQ(::mkdir(dir.c_str(), 0700), 0);
  ASSERT_EQ(::chmod(dir.c_str(), 0755), 0);
  RecoveryReport r;
  auto w = Wal::open(options_for(dir), posix_file_system(), r);
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.error().code(), Errc::permission_denied);
  EXPECT_NE(w.error().message().find("0755"), std::string::npos) << w.error().message();
}

TEST_F(WalPermissions, AFifoInPlaceOfASegmentIsRefusedWithoutBlocking) {
  const std::string dir = root_ + "/q";
  ASSERT_EQ(::mkdir(dir.c_str(), 0700), 0);
  ASSERT_EQ(::mkfifo((dir + "/" + segment_file_name(0)).c_str(), 0600), 0);
  RecoveryReport r;
  auto w = Wal::open(options_for(dir), posix_file_system(), r);
  ASSERT_FALSE(w.ok());
  EXPECT_NE(w.error().message().find("not a regular file"), std::string::npos)
      << w.error().message();
}

TEST_F(WalPermissions, TheDirLockIsExclusive) {
  auto dir = posix_file_system().open_dir(root_, {.create = false, .require_private = false});
  ASSERT_TRUE(dir.ok());
  auto a = dir.value()->lock("LOCK", false);
  ASSERT_TRUE(a.ok()) << a.error().message();
  auto dir2 = posix_file_system().open_dir(root_, {.create = false, .require_private = false});
  auto b = dir2.value()->lock("LOCK", false);
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.error().code(), Errc::already_exists);
  a.value().reset();
  EXPECT_TRUE(dir2.value()->lock("LOCK", false).ok());
}

}  // namespace
}  // namespace shmq::log
