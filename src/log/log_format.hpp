// The write-ahead log's on-disk formats: segment file header, record header, checkpoint
// file, file names. This header is the only place that knows where a byte goes;
// docs/log_format.md draws the same layouts with a worked example. Change one, change both,
// and bump the version.
//
// Everything is little-endian and written byte by byte (no struct is ever memcpy'd to disk),
// so the formats do not depend on the compiler's layout or the host's byte order.
//
//   segment file  wal-<first position, 20 decimal digits>.log
//     FileHeader (64 bytes), then records back to back, no padding:
//     RecordHeader (32 bytes) + payload (length bytes)
//   checkpoint    CHECKPOINT (64 bytes)
//
// Checksums are XXH3-64. A record is checksummed with XXH3_64bits_withSeed(salt), where
// salt is a random value stored in its segment's header: a record only validates inside the
// file it was written to, so a message whose payload happens to contain log records (a
// segment shipped through a queue, say) can never be mistaken for records after a
// corruption, and neither can a stale record from another file.
#pragma once

#include <xxhash.h>

#include <array>
#include <charconv>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace shmq::log {

// --- Little-endian fields -------------------------------------------------------------

inline void store_u32(std::byte* p, std::uint32_t v) noexcept {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<std::byte>(v >> (8 * i));
}
inline void store_u64(std::byte* p, std::uint64_t v) noexcept {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<std::byte>(v >> (8 * i));
}
inline std::uint32_t load_u32(const std::byte* p) noexcept {
  std::uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | std::to_integer<std::uint32_t>(p[i]);
  return v;
}
inline std::uint64_t load_u64(const std::byte* p) noexcept {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | std::to_integer<std::uint64_t>(p[i]);
  return v;
}

// --- Segment file header: 64 bytes at offset 0 of every wal-*.log -----------------------
//
//    0  magic "SHMQWAL1"          8 bytes
//    8  format version            u32 (3; versions 1 and 2 files are still read)
//   12  header size               u32 (64)
//   16  first position            u64: greater than every position in earlier segments;
//                                      equals the position in the file name
//   24  created                   u64: unix time in ns (informational)
//   32  salt                      u64: random, seeds every record checksum in this file
//   40  reserved                  16 bytes, zero
//   56  header checksum           u64: XXH3_64bits(bytes 0..55)
inline constexpr std::size_t kFileHeaderSize = 64;
inline constexpr std::array<char, 8> kFileMagic = {'S', 'H', 'M', 'Q', 'W', 'A', 'L', '1'};
// Version 2 (issue 13) added the delayed record types 4 and 5. A version 1 file holds only
// types 1..3 and is read as before; a version 1 reader refuses a version 2 file
// (incompatible_version) instead of taking the new records for corruption (or, at the end
// of the last file, for a torn tail it would truncate). New records are only ever appended
// to a version 2 file: Wal::open starts a new segment after a version 1 one.
// Version 3 (issue 14) added the properties flag (kTypeHasProperties) to the type byte of
// message records; version 1 and 2 files never have it and are read as before, and a
// version 2 reader refuses a version 3 file.
inline constexpr std::uint32_t kFormatVersion = 3;
inline constexpr std::uint32_t kOldestReadableVersion = 1;

namespace file_header {
inline constexpr std::size_t kMagic = 0;
inline constexpr std::size_t kVersion = 8;
inline constexpr std::size_t kHeaderSize = 12;
inline constexpr std::size_t kFirstPosition = 16;
inline constexpr std::size_t kCreatedNs = 24;
inline constexpr std::size_t kSalt = 32;
inline constexpr std::size_t kReserved = 40;
inline constexpr std::size_t kChecksum = 56;
static_assert(kVersion == kMagic + sizeof(kFileMagic));
static_assert(kHeaderSize == kVersion + 4);
static_assert(kFirstPosition == kHeaderSize + 4);
static_assert(kCreatedNs == kFirstPosition + 8);
static_assert(kSalt == kCreatedNs + 8);
static_assert(kReserved == kSalt + 8);
static_assert(kChecksum == kReserved + 16);
static_assert(kChecksum + 8 == kFileHeaderSize);
}  // namespace file_header

// --- Record header: 32 bytes, followed by `length` payload bytes -------------------------
//
//    0  checksum       u64: XXH3_64bits_withSeed(bytes 8..31 of this header + payload, salt)
//    8  length         u32: payload bytes (0 for an ack)
//   12  type           u8:  1 = message, 2 = ack, 3 = copy, 4 = delayed message,
//                           5 = delayed copy; | 0x80 (kTypeHasProperties, version 3) on a
//                           message type: the message bytes start with a properties block
//                           (include/shmq/properties.hpp). Every other value is invalid.
//   13  header check   3 bytes, u24: low 24 bits of XXH3_64bits_withSeed(bytes 8..31 with
//                      bytes 13..15 zeroed, salt). Lets recovery reject a garbage header in
//                      a few nanoseconds without hashing a payload it claims to have.
//   16  position       u64: message position (for an ack: the acked position)
//   24  id             u64: producer-assigned message id (0 for an ack)
//
// A copy record is a message record for a message republished at a new position after a
// rebuild: its payload starts with the u64 position it was copied from (its origin), then
// the message bytes. A durable copy supersedes its origin: recovery never returns the
// origin again, whatever the id (see docs/log_format.md, "Rebuild epochs").
//
// A delayed message (sent with a delay, and logged while it waits for it) is not to be
// delivered before its due time: its payload starts with the u64 due time as
// unix time in ns (CLOCK_REALTIME: the monotonic clock does not survive a reboot), then
// the message bytes. A delayed copy carries both prefixes: origin, then due time.
inline constexpr std::size_t kRecordHeaderSize = 32;
inline constexpr std::size_t kOriginSize = 8;  // the origin prefix of a copy's payload
inline constexpr std::size_t kDueSize = 8;     // the due-time prefix of a delayed record
inline constexpr std::uint64_t kMaxPayload = UINT32_MAX;
inline constexpr std::uint8_t kTypeHasProperties = 0x80;

enum class RecordType : std::uint8_t {
  message = 1,
  ack = 2,
  copy = 3,
  delayed = 4,
  delayed_copy = 5,
};

// Types that carry a message (all but ack), and those that name an origin.
constexpr bool is_message_record(RecordType t) noexcept { return t != RecordType::ack; }
constexpr bool is_copy_record(RecordType t) noexcept {
  return t == RecordType::copy || t == RecordType::delayed_copy;
}
constexpr bool is_delayed_record(RecordType t) noexcept {
  return t == RecordType::delayed || t == RecordType::delayed_copy;
}
// The bytes in front of the message in a record's payload.
constexpr std::size_t prefix_size(RecordType t) noexcept {
  return (is_copy_record(t) ? kOriginSize : 0) + (is_delayed_record(t) ? kDueSize : 0);
}
// True for a type byte that names a valid type.
constexpr bool is_record_type(std::uint8_t t) noexcept { return t >= 1 && t <= 5; }

namespace record_header {
inline constexpr std::size_t kChecksum = 0;
inline constexpr std::size_t kLength = 8;
inline constexpr std::size_t kType = 12;
inline constexpr std::size_t kHeaderCheck = 13;
inline constexpr std::size_t kPosition = 16;
inline constexpr std::size_t kId = 24;
inline constexpr std::size_t kChecksummedFrom = 8;  // the checksum covers [8, 32 + length)
static_assert(kLength == kChecksum + 8);
static_assert(kType == kLength + 4);
static_assert(kHeaderCheck == kType + 1);
static_assert(kPosition == kHeaderCheck + 3);
static_assert(kPosition % 8 == 0 && kId % 8 == 0);
static_assert(kId == kPosition + 8);
static_assert(kId + 8 == kRecordHeaderSize);
}  // namespace record_header

// --- Checkpoint file CHECKPOINT: 64 bytes ------------------------------------------------
//
//    0  magic "SHMQCKP1"   8 bytes
//    8  version            u32 (1)
//   12  size               u32 (64)
//   16  min unacked        u64: every position below it is acked or was never a message
//   24  next position      u64: greater than every position ever logged
//   32  created            u64: unix time in ns (informational)
//   40  reserved           16 bytes, zero
//   56  checksum           u64: XXH3_64bits(bytes 0..55)
inline constexpr std::size_t kCheckpointSize = 64;
inline constexpr std::array<char, 8> kCheckpointMagic = {'S', 'H', 'M', 'Q', 'C', 'K', 'P', '1'};
inline constexpr std::uint32_t kCheckpointVersion = 1;

namespace checkpoint_layout {
inline constexpr std::size_t kMagic = 0;
inline constexpr std::size_t kVersion = 8;
inline constexpr std::size_t kSize = 12;
inline constexpr std::size_t kMinUnacked = 16;
inline constexpr std::size_t kNextPosition = 24;
inline constexpr std::size_t kCreatedNs = 32;
inline constexpr std::size_t kReserved = 40;
inline constexpr std::size_t kChecksum = 56;
static_assert(kVersion == kMagic + sizeof(kCheckpointMagic));
static_assert(kSize == kVersion + 4);
static_assert(kMinUnacked == kSize + 4);
static_assert(kNextPosition == kMinUnacked + 8);
static_assert(kCreatedNs == kNextPosition + 8);
static_assert(kReserved == kCreatedNs + 8);
static_assert(kChecksum == kReserved + 16);
static_assert(kChecksum + 8 == kCheckpointSize);
}  // namespace checkpoint_layout

// --- File names in the data dir ----------------------------------------------------------
inline constexpr std::string_view kSegmentPrefix = "wal-";
inline constexpr std::string_view kSegmentSuffix = ".log";
inline constexpr std::size_t kSegmentDigits = 20;        // UINT64_MAX has 20 decimal digits
inline constexpr std::string_view kTempSuffix = ".tmp";  // a file being created; never valid
inline constexpr std::string_view kCheckpointName = "CHECKPOINT";
inline constexpr std::string_view kLockName = "LOCK";  // the daemon's flock; not the log's
static_assert(kSegmentDigits >= std::numeric_limits<std::uint64_t>::digits10 + 1);

inline std::string segment_file_name(std::uint64_t first_position) {
  std::array<char, kSegmentDigits> digits{};
  auto [end, ec] = std::to_chars(digits.data(), digits.data() + digits.size(), first_position);
  (void)ec;  // 20 characters always suffice (static_assert above)
  const auto n = static_cast<std::size_t>(end - digits.data());
  std::string name(kSegmentPrefix);
  name.append(kSegmentDigits - n, '0').append(digits.data(), n).append(kSegmentSuffix);
  return name;
}

// The first position named by a segment file name, or nothing if `name` is not exactly
// wal-<20 digits>.log with a value that fits 64 bits.
inline std::optional<std::uint64_t> parse_segment_file_name(std::string_view name) {
  if (name.size() != kSegmentPrefix.size() + kSegmentDigits + kSegmentSuffix.size() ||
      !name.starts_with(kSegmentPrefix) || !name.ends_with(kSegmentSuffix))
    return std::nullopt;
  const std::string_view digits = name.substr(kSegmentPrefix.size(), kSegmentDigits);
  std::uint64_t v = 0;
  auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), v);
  if (ec != std::errc{} || ptr != digits.data() + digits.size()) return std::nullopt;
  return v;
}

// --- Encoding and checking ---------------------------------------------------------------

struct FileHeader {
  std::uint32_t version = kFormatVersion;
  std::uint32_t header_size = kFileHeaderSize;
  std::uint64_t first_position = 0;
  std::uint64_t created_ns = 0;
  std::uint64_t salt = 0;
};

inline std::array<std::byte, kFileHeaderSize> encode_file_header(const FileHeader& h) {
  namespace f = file_header;
  std::array<std::byte, kFileHeaderSize> b{};
  std::memcpy(b.data() + f::kMagic, kFileMagic.data(), kFileMagic.size());
  store_u32(b.data() + f::kVersion, h.version);
  store_u32(b.data() + f::kHeaderSize, h.header_size);
  store_u64(b.data() + f::kFirstPosition, h.first_position);
  store_u64(b.data() + f::kCreatedNs, h.created_ns);
  store_u64(b.data() + f::kSalt, h.salt);
  store_u64(b.data() + f::kChecksum, XXH3_64bits(b.data(), f::kChecksum));
  return b;
}

// The verdict on a header: valid, damaged (unreadable), or intact but from another format
// version (which must be refused, not skipped as garbage).
struct HeaderVerdict {
  enum Kind : std::uint8_t { ok, bad, incompatible } kind = ok;
  std::string why;  // empty when ok
};

inline HeaderVerdict check_file_header(std::span<const std::byte> file, FileHeader& out) {
  namespace f = file_header;
  if (file.size() < kFileHeaderSize)
    return {HeaderVerdict::bad, "file is " + std::to_string(file.size()) +
                                    " bytes, shorter than its " + std::to_string(kFileHeaderSize) +
                                    "-byte header"};
  const std::byte* b = file.data();
  if (std::memcmp(b + f::kMagic, kFileMagic.data(), kFileMagic.size()) != 0)
    return {HeaderVerdict::bad, "bad magic (not an shmq log segment)"};
  if (load_u64(b + f::kChecksum) != XXH3_64bits(b, f::kChecksum))
    return {HeaderVerdict::bad, "bad header checksum"};
  out.version = load_u32(b + f::kVersion);
  out.header_size = load_u32(b + f::kHeaderSize);
  out.first_position = load_u64(b + f::kFirstPosition);
  out.created_ns = load_u64(b + f::kCreatedNs);
  out.salt = load_u64(b + f::kSalt);
  if (out.version < kOldestReadableVersion || out.version > kFormatVersion)
    return {HeaderVerdict::incompatible, "format version " + std::to_string(out.version) +
                                             " (this build reads versions " +
                                             std::to_string(kOldestReadableVersion) + " to " +
                                             std::to_string(kFormatVersion) + ")"};
  if (out.header_size != kFileHeaderSize)
    return {HeaderVerdict::bad, "bad header size " + std::to_string(out.header_size)};
  return {};
}

inline std::uint32_t record_header_check(const std::byte* header, std::uint64_t salt) noexcept {
  namespace r = record_header;
  std::array<std::byte, kRecordHeaderSize - r::kChecksummedFrom> t;
  std::memcpy(t.data(), header + r::kChecksummedFrom, t.size());
  for (std::size_t i = 0; i < 3; ++i) t[r::kHeaderCheck - r::kChecksummedFrom + i] = std::byte{0};
  return static_cast<std::uint32_t>(XXH3_64bits_withSeed(t.data(), t.size(), salt) & 0xFFFFFF);
}

// Appends one record (header + payload) to `out`. Precondition: payload.size() <= kMaxPayload,
// and an ack has an empty payload and id 0.
inline void encode_record(std::vector<std::byte>& out, RecordType type, std::uint64_t position,
                          std::uint64_t id, std::span<const std::byte> payload,
                          std::uint64_t salt, bool properties = false) {
  namespace r = record_header;
  const std::size_t at = out.size();
  out.resize(at + kRecordHeaderSize + payload.size());
  std::byte* h = out.data() + at;
  store_u32(h + r::kLength, static_cast<std::uint32_t>(payload.size()));
  h[r::kType] = static_cast<std::byte>(static_cast<std::uint8_t>(type) |
                                       (properties ? kTypeHasProperties : 0));
  store_u64(h + r::kPosition, position);
  store_u64(h + r::kId, id);
  const std::uint32_t check = record_header_check(h, salt);
  for (std::size_t i = 0; i < 3; ++i)
    h[r::kHeaderCheck + i] = static_cast<std::byte>(check >> (8 * i));
  if (!payload.empty()) std::memcpy(h + kRecordHeaderSize, payload.data(), payload.size());
  store_u64(h + r::kChecksum,
            XXH3_64bits_withSeed(h + r::kChecksummedFrom,
                                 kRecordHeaderSize - r::kChecksummedFrom + payload.size(), salt));
}

// Appends a copy record: `payload` at `position`, republished from `origin`; a delayed
// copy if `due_unix_ns` is set.
inline void encode_copy_record(std::vector<std::byte>& out, std::uint64_t position,
                               std::uint64_t origin, std::uint64_t id,
                               std::span<const std::byte> payload, std::uint64_t salt,
                               std::optional<std::uint64_t> due_unix_ns = std::nullopt,
                               bool properties = false) {
  const RecordType type = due_unix_ns ? RecordType::delayed_copy : RecordType::copy;
  std::vector<std::byte> body(prefix_size(type) + payload.size());
  store_u64(body.data(), origin);
  if (due_unix_ns) store_u64(body.data() + kOriginSize, *due_unix_ns);
  if (!payload.empty())
    std::memcpy(body.data() + prefix_size(type), payload.data(), payload.size());
  encode_record(out, type, position, id, body, salt, properties);
}

// Appends a delayed message record: `payload` at `position`, not to be delivered before
// unix time `due_unix_ns`.
inline void encode_delayed_record(std::vector<std::byte>& out, std::uint64_t position,
                                  std::uint64_t id, std::uint64_t due_unix_ns,
                                  std::span<const std::byte> payload, std::uint64_t salt,
                                  bool properties = false) {
  std::vector<std::byte> body(kDueSize + payload.size());
  store_u64(body.data(), due_unix_ns);
  if (!payload.empty()) std::memcpy(body.data() + kDueSize, payload.data(), payload.size());
  encode_record(out, RecordType::delayed, position, id, body, salt, properties);
}

struct DecodedRecord {
  RecordType type = RecordType::message;
  std::uint64_t position = 0;
  std::uint64_t id = 0;
  std::uint64_t origin = 0;            // copy: the position it supersedes; else 0
  std::optional<std::uint64_t> due_unix_ns;  // delayed: due time, unix ns; else none
  std::size_t size = 0;                // of the whole record: header + stored payload
  std::span<const std::byte> payload;  // the message bytes (without a copy's origin or a
                                       // delayed record's due time); points into the
                                       // buffer that was checked
  bool properties = false;  // the message bytes are [properties block][payload]
};

enum class RecordCheck : std::uint8_t {
  ok,
  short_header,  // fewer than 32 bytes left
  bad_header,    // type, ack fields or header check wrong: these bytes are not a header
  past_end,      // a plausible header whose payload runs past the end of the data
  bad_checksum,  // a plausible header, but header + payload do not match the checksum
};

// Checks the record starting at data[offset]. Reads nothing outside `data`, whatever it holds.
inline RecordCheck check_record(std::span<const std::byte> data, std::size_t offset,
                                std::uint64_t salt, DecodedRecord& out) noexcept {
  namespace r = record_header;
  if (offset > data.size() || data.size() - offset < kRecordHeaderSize)
    return RecordCheck::short_header;
  const std::byte* h = data.data() + offset;
  const auto type_byte = std::to_integer<std::uint8_t>(h[r::kType]);
  const bool properties = (type_byte & kTypeHasProperties) != 0;
  const auto type = static_cast<std::uint8_t>(type_byte & ~kTypeHasProperties);
  if (properties && type == static_cast<std::uint8_t>(RecordType::ack))
    return RecordCheck::bad_header;
  const std::uint32_t length = load_u32(h + r::kLength);
  const std::uint64_t id = load_u64(h + r::kId);
  if (type == static_cast<std::uint8_t>(RecordType::message)) {
    // any length, any id
  } else if (type == static_cast<std::uint8_t>(RecordType::ack)) {
    if (length != 0 || id != 0) return RecordCheck::bad_header;
  } else if (is_record_type(type)) {
    // copy, delayed, delayed copy: the payload holds at least their prefixes
    if (length < prefix_size(static_cast<RecordType>(type))) return RecordCheck::bad_header;
  } else {
    return RecordCheck::bad_header;
  }
  const std::uint32_t stored_check = std::to_integer<std::uint32_t>(h[r::kHeaderCheck]) |
                                     (std::to_integer<std::uint32_t>(h[r::kHeaderCheck + 1]) << 8) |
                                     (std::to_integer<std::uint32_t>(h[r::kHeaderCheck + 2]) << 16);
  if (stored_check != record_header_check(h, salt)) return RecordCheck::bad_header;
  if (length > data.size() - offset - kRecordHeaderSize) return RecordCheck::past_end;
  const std::uint64_t sum = XXH3_64bits_withSeed(
      h + r::kChecksummedFrom, kRecordHeaderSize - r::kChecksummedFrom + length, salt);
  if (sum != load_u64(h + r::kChecksum)) return RecordCheck::bad_checksum;
  out.type = static_cast<RecordType>(type);
  out.position = load_u64(h + r::kPosition);
  out.id = id;
  out.origin = 0;
  out.due_unix_ns.reset();
  out.properties = properties;
  out.size = kRecordHeaderSize + length;
  out.payload = data.subspan(offset + kRecordHeaderSize, length);
  if (is_copy_record(out.type)) {
    out.origin = load_u64(out.payload.data());
    out.payload = out.payload.subspan(kOriginSize);
  }
  if (is_delayed_record(out.type)) {
    out.due_unix_ns = load_u64(out.payload.data());
    out.payload = out.payload.subspan(kDueSize);
  }
  return RecordCheck::ok;
}

struct Checkpoint {
  std::uint64_t min_unacked = 0;
  std::uint64_t next_position = 0;
  std::uint64_t created_ns = 0;
};

inline std::array<std::byte, kCheckpointSize> encode_checkpoint(const Checkpoint& c) {
  namespace k = checkpoint_layout;
  std::array<std::byte, kCheckpointSize> b{};
  std::memcpy(b.data() + k::kMagic, kCheckpointMagic.data(), kCheckpointMagic.size());
  store_u32(b.data() + k::kVersion, kCheckpointVersion);
  store_u32(b.data() + k::kSize, kCheckpointSize);
  store_u64(b.data() + k::kMinUnacked, c.min_unacked);
  store_u64(b.data() + k::kNextPosition, c.next_position);
  store_u64(b.data() + k::kCreatedNs, c.created_ns);
  store_u64(b.data() + k::kChecksum, XXH3_64bits(b.data(), k::kChecksum));
  return b;
}

inline HeaderVerdict check_checkpoint(std::span<const std::byte> file, Checkpoint& out) {
  namespace k = checkpoint_layout;
  if (file.size() != kCheckpointSize)
    return {HeaderVerdict::bad, "size is " + std::to_string(file.size()) + " bytes, not " +
                                    std::to_string(kCheckpointSize)};
  const std::byte* b = file.data();
  if (std::memcmp(b + k::kMagic, kCheckpointMagic.data(), kCheckpointMagic.size()) != 0)
    return {HeaderVerdict::bad, "bad magic"};
  if (load_u64(b + k::kChecksum) != XXH3_64bits(b, k::kChecksum))
    return {HeaderVerdict::bad, "bad checksum"};
  if (load_u32(b + k::kVersion) != kCheckpointVersion)
    return {HeaderVerdict::incompatible, "version " + std::to_string(load_u32(b + k::kVersion)) +
                                             " (this build reads " + "version " +
                                             std::to_string(kCheckpointVersion) + ")"};
  if (load_u32(b + k::kSize) != kCheckpointSize) return {HeaderVerdict::bad, "bad size field"};
  out.min_unacked = load_u64(b + k::kMinUnacked);
  out.next_position = load_u64(b + k::kNextPosition);
  out.created_ns = load_u64(b + k::kCreatedNs);
  if (out.min_unacked > out.next_position)
    return {HeaderVerdict::bad, "min unacked " + std::to_string(out.min_unacked) +
                                    " is above next position " + std::to_string(out.next_position)};
  return {};
}

}  // namespace shmq::log
