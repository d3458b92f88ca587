// Fuzz target (issue 12, hostile input): the write-ahead log's readers on arbitrary files -
// `shmqctl log verify` (log::verify) and recovery (Wal::open, what shmqd runs at start),
// then appends, a checkpoint and recovery again on what recovery left.
//
// The files live in the fault-injecting in-memory file system of the log tests
// (tests/fault_fs.hpp): no disk I/O, and it counts every mutating operation, so "verify
// changes nothing" is checked exactly.
//
// The input is a small program that builds the data dir, structure-aware so that the
// fuzzer gets past the checksums: segment files with valid or damaged headers, records
// encoded with the file's salt (messages, acks, copies) or another file's, garbage, bit
// flips, truncations, checkpoints, stale temporary files and strays. Little-endian:
//   byte 0   options: bit 0 stop_on_corruption, bit 1 segments of 128 bytes (rotation and
//            compaction during the appends below), else 64 MiB
//   then ops, each an op byte (mod 10) and its arguments (see run_program)
// A position argument is one byte p: p < 0xfc: the current file's first position + p;
// 0xfc: UINT64_MAX - 1; 0xfd: UINT64_MAX; 0xfe: 2^63 + the next byte; 0xff: the next 8 bytes.
//
// Checked (a violation traps):
//   - verify calls back once per valid record, its counts add up, and it modifies nothing;
//   - recovery that succeeds agrees with verify (records, acks, unacked, superseded, corrupt
//     bytes), returns unacked messages sorted, unique, at or above min_unacked and below
//     next_position (which saturates at UINT64_MAX);
//   - recovery is idempotent: a second one reads the same records, returns the same messages
//     and truncates nothing;
//   - a message appended and synced after recovery is recovered (also after a checkpoint),
//     unless the log holds a copy record naming its position as origin (only a forged log
//     can: origins are positions of earlier epochs).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "fault_fs.hpp"
#include "log/file.hpp"
#include "log/log_format.hpp"
#include "log/wal.hpp"

namespace {

namespace log = shmq::log;
using Bytes = std::vector<std::byte>;

[[noreturn]] void violated(const char* what) {
  std::fprintf(stderr, "fuzz_log: invariant violated: %s\n", what);
  std::fflush(stderr);
  __builtin_trap();
}
#define FUZZ_CHECK(cond) ((cond) ? (void)0 : violated(#cond))

const std::string kDir = "/data/q";

// Salts files are written with; a "stale" record uses the next one (another file's).
constexpr std::uint64_t kSalts[] = {0x9e3779b97f4a7c15ull, 0, 1, 0xfeedfacecafebeefull};

class Reader {
 public:
  Reader(const std::uint8_t* data, std::size_t size) : data_(data), size_(size) {}
  bool done() const { return at_ >= size_; }
  std::uint8_t byte() { return at_ < size_ ? data_[at_++] : 0; }
  std::uint64_t u64() {
    std::uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v |= std::uint64_t{byte()} << (8 * i);
    return v;
  }
  std::uint16_t u16() { return static_cast<std::uint16_t>(byte() | (byte() << 8)); }
  Bytes bytes(std::size_t n) {
    n = std::min(n, size_ - std::min(at_, size_));
    Bytes out(n);
    if (n != 0) std::memcpy(out.data(), data_ + at_, n);
    at_ += n;
    return out;
  }

 private:
  const std::uint8_t* data_;
  std::size_t size_;
  std::size_t at_ = 0;
};

struct File {
  std::string name;
  Bytes data;
  std::uint64_t first = 0;  // for positions relative to the file
  std::uint64_t salt = 0;
};

std::uint64_t position(Reader& in, const File* f) {
  const std::uint8_t p = in.byte();
  switch (p) {
    case 0xfc:
      return UINT64_MAX - 1;
    case 0xfd:
      return UINT64_MAX;
    case 0xfe:
      return (std::uint64_t{1} << 63) + in.byte();
    case 0xff:
      return in.u64();
    default:
      return (f != nullptr ? f->first : 0) + p;
  }
}

std::vector<File> run_program(Reader& in) {
  std::vector<File> files;
  File* cur = nullptr;
  auto current = [&]() -> File* {
    if (cur == nullptr) {
      files.push_back(File{log::segment_file_name(0), {}, 0, kSalts[0]});
      const auto h = log::encode_file_header(log::FileHeader{.salt = kSalts[0]});
      files.back().data.assign(h.begin(), h.end());
      cur = &files.back();
    }
    return cur;
  };
  while (!in.done() && files.size() < 16) {
    const std::uint8_t op = in.byte() % 10;
    switch (op) {
      case 0: {  // a new segment file: header valid or damaged in one way
        const std::uint64_t first = position(in, cur);
        const std::uint8_t variant = in.byte();
        const std::uint64_t salt = kSalts[variant % 4];
        log::FileHeader h;
        h.first_position = first;
        h.salt = salt;
        std::string name = log::segment_file_name(first);
        auto bytes = log::encode_file_header(h);
        switch ((variant >> 2) % 8) {
          case 4:
            name = log::segment_file_name(first + 1);
            break;  // name and header disagree
          case 5:
            h.version = 2;
            bytes = log::encode_file_header(h);
            break;  // incompatible
          case 6:
            bytes[log::file_header::kChecksum] ^= std::byte{1};
            break;
          case 7:
            h.header_size = 32;
            bytes = log::encode_file_header(h);
            break;
          default:
            break;
        }
        files.push_back(File{name, Bytes(bytes.begin(), bytes.end()), first, salt});
        cur = &files.back();
        break;
      }
      case 1:    // a message record
      case 3:    // a copy record
      case 9: {  // a message record with another file's salt (stale)
        File* f = current();
        const std::uint64_t pos = position(in, f);
        const std::uint64_t origin = op == 3 ? position(in, f) : 0;
        const std::uint64_t id = in.byte();
        const Bytes payload = in.bytes(in.byte());
        const std::uint64_t salt =
            op == 9 ? kSalts[(std::find(std::begin(kSalts), std::end(kSalts), f->salt) -
                              std::begin(kSalts) + 1) %
                             4]
                    : f->salt;
        // Ids with the top bit set make delayed records (format version 2), due at `id`.
        const bool late = (id & 0x80) != 0;
        if (op == 3)
          log::encode_copy_record(f->data, pos, origin, id, payload, salt,
                                  late ? std::optional<std::uint64_t>(id) : std::nullopt);
        else if (late)
          log::encode_delayed_record(f->data, pos, id, id, payload, salt);
        else
          log::encode_record(f->data, log::RecordType::message, pos, id, payload, salt);
        break;
      }
      case 2: {  // an ack
        File* f = current();
        log::encode_record(f->data, log::RecordType::ack, position(in, f), 0, {}, f->salt);
        break;
      }
      case 4: {  // garbage
        File* f = current();
        const Bytes g = in.bytes(in.byte());
        f->data.insert(f->data.end(), g.begin(), g.end());
        break;
      }
      case 5: {  // a bit flip
        File* f = current();
        const std::uint16_t off = in.u16();
        const std::uint8_t x = in.byte();
        if (!f->data.empty())
          f->data[off % f->data.size()] ^= static_cast<std::byte>(x == 0 ? 1 : x);
        break;
      }
      case 6: {  // a truncation
        File* f = current();
        f->data.resize(in.u16() % (f->data.size() + 1));
        break;
      }
      case 7: {  // CHECKPOINT: valid (maybe min > next), another version, garbage, short
        const std::uint8_t variant = in.byte();
        log::Checkpoint c;
        c.min_unacked = position(in, cur);
        c.next_position = position(in, cur);
        auto bytes = log::encode_checkpoint(c);
        Bytes data(bytes.begin(), bytes.end());
        switch (variant % 5) {
          case 1:
            log::store_u32(data.data() + log::checkpoint_layout::kVersion, 2);
            log::store_u64(data.data() + log::checkpoint_layout::kChecksum,
                           XXH3_64bits(data.data(), log::checkpoint_layout::kChecksum));
            break;
          case 2:
            data = in.bytes(log::kCheckpointSize);
            break;
          case 3:
            data.pop_back();
            break;
          default:
            break;
        }
        files.push_back(File{std::string(log::kCheckpointName), std::move(data), 0, 0});
        cur = nullptr;
        break;
      }
      default: {  // 8: a stray: stale temporaries, other names, an empty segment
        const std::uint8_t kind = in.byte();
        const std::uint64_t pos = position(in, cur);
        const std::string names[] = {
            std::string(log::kCheckpointName) + std::string(log::kTempSuffix),
            log::segment_file_name(pos) + std::string(log::kTempSuffix),
            "queue.meta",
            std::string(log::kLockName),
            "wal-1.log",
            log::segment_file_name(pos)};
        files.push_back(File{names[kind % 6], in.bytes(kind / 6 % 8), pos, 0});
        cur = nullptr;
        break;
      }
    }
  }
  return files;
}

void check_report(const log::RecoveryReport& r) {
  for (std::size_t i = 0; i < r.unacked.size(); ++i) {
    const auto& m = r.unacked[i];
    FUZZ_CHECK(m.position >= r.min_unacked);
    // next_position saturates: a (forged) record at UINT64_MAX leaves it there.
    FUZZ_CHECK(m.position < r.next_position || r.next_position == UINT64_MAX);
    if (i > 0) FUZZ_CHECK(r.unacked[i - 1].position < m.position);
  }
  FUZZ_CHECK(r.acks <= r.records);
  FUZZ_CHECK(r.unacked.size() + r.acks <= r.records);
}

bool same_messages(const log::RecoveryReport& a, const log::RecoveryReport& b) {
  if (a.unacked.size() != b.unacked.size()) return false;
  for (std::size_t i = 0; i < a.unacked.size(); ++i) {
    const auto& x = a.unacked[i];
    const auto& y = b.unacked[i];
    if (x.position != y.position || x.id != y.id || x.payload != y.payload) return false;
  }
  return true;
}

const log::RecoveredMessage* find(const log::RecoveryReport& r, std::uint64_t pos) {
  for (const auto& m : r.unacked)
    if (m.position == pos) return &m;
  return nullptr;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  Reader in(data, size);
  const std::uint8_t flags = in.byte();
  log::WalOptions options;
  options.dir = kDir;
  options.stop_on_corruption = (flags & 1) != 0;
  options.segment_bytes = (flags & 2) != 0 ? 128 : std::uint64_t{64} << 20;

  shmq::log::test::FaultFs fs;
  for (auto& f : run_program(in)) fs.write(kDir, f.name, std::move(f.data));

  // shmqctl log verify: read-only, one callback per valid record.
  std::uint64_t seen = 0, max_origin = 0;
  bool any_copy = false;
  const std::uint64_t ops_before = fs.ops();
  const log::VerifyReport v = log::verify(kDir, fs, [&](const log::RecordView& r) {
    ++seen;
    std::uint8_t sum = 0;
    for (std::byte b : r.payload) sum ^= std::to_integer<std::uint8_t>(b);
    volatile std::uint8_t sink = sum;
    (void)sink;
    if (log::is_copy_record(r.type)) {
      any_copy = true;
      max_origin = std::max(max_origin, r.origin);
    }
  });
  FUZZ_CHECK(fs.ops() == ops_before);
  FUZZ_CHECK(seen == v.records);
  FUZZ_CHECK(v.acks <= v.records);
  FUZZ_CHECK(v.unacked + v.acks <= v.records);
  if (v.ok) FUZZ_CHECK(v.corrupt_bytes == 0);

  // Recovery.
  log::RecoveryReport r1;
  auto w1 = log::Wal::open(options, fs, r1);
  if (!w1.ok()) return 0;  // refused: another format version, or corrupt and told to stop
  check_report(r1);
  FUZZ_CHECK(r1.records == v.records);
  FUZZ_CHECK(r1.acks == v.acks);
  FUZZ_CHECK(r1.unacked.size() == v.unacked);
  FUZZ_CHECK(r1.superseded == v.superseded);
  FUZZ_CHECK(r1.corrupt_bytes == v.corrupt_bytes);
  w1.value().reset();

  // Recovery again, on what the first one left (torn tail truncated, stale files removed, a
  // new segment after an unreadable last one): the same messages, nothing more to cut.
  log::RecoveryReport r2;
  auto w2 = log::Wal::open(options, fs, r2);
  FUZZ_CHECK(w2.ok());
  check_report(r2);
  FUZZ_CHECK(same_messages(r1, r2));
  FUZZ_CHECK(r2.next_position == r1.next_position);
  FUZZ_CHECK(r2.truncated_bytes == 0);
  FUZZ_CHECK(r2.records == r1.records && r2.acks == r1.acks);
  FUZZ_CHECK(r2.corrupt_bytes == r1.corrupt_bytes);

  // A message appended and synced now is recovered, also after a checkpoint. (One Wal on
  // the dir at a time, as shmqd's lock guarantees.)
  const std::uint64_t p = r2.next_position;
  if (p == UINT64_MAX || (any_copy && max_origin >= p)) return 0;
  const Bytes payload(static_cast<std::size_t>(p % 97), std::byte{0x6d});
  const std::uint64_t id = 0x4242;
  auto recovered = [&](const log::RecoveryReport& r) {
    const log::RecoveredMessage* m = find(r, p);
    return m != nullptr && m->id == id && m->payload == payload;
  };
  // I/O errors cannot happen on this file system unless asked for: every step succeeds.
  FUZZ_CHECK(w2.value()->append_message(p, id, payload).ok());
  FUZZ_CHECK(w2.value()->sync().ok());
  w2.value().reset();
  log::RecoveryReport r3;
  auto w3 = log::Wal::open(options, fs, r3);
  FUZZ_CHECK(w3.ok());
  check_report(r3);
  FUZZ_CHECK(recovered(r3));
  FUZZ_CHECK(r3.next_position > p);
  FUZZ_CHECK(w3.value()->checkpoint(r2.min_unacked, r3.next_position).ok());
  w3.value().reset();
  log::RecoveryReport r4;
  auto w4 = log::Wal::open(options, fs, r4);
  FUZZ_CHECK(w4.ok());
  check_report(r4);
  FUZZ_CHECK(r4.min_unacked == r2.min_unacked);
  FUZZ_CHECK(recovered(r4));
  return 0;
}
