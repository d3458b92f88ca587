#include "topic/topic_log.hpp"

#include <xxhash.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <sstream>

namespace shmq::detail {

namespace {

template <typename T>
void put(std::vector<std::byte>& b, std::size_t off, T v) {
  std::memcpy(b.data() + off, &v, sizeof v);
}
template <typename T>
T get(std::span<const std::byte> b, std::size_t off) {
  T v;
  std::memcpy(&v, b.data() + off, sizeof v);
  return v;
}

constexpr std::uint32_t kMaxRecordPayload = 1u << 20;

std::uint64_t record_checksum(std::span<const std::byte> head40, std::span<const std::byte> payload) {
  // The header's hash seeds the payload's: one pass over each, no streaming state.
  const std::uint64_t h = XXH3_64bits(head40.data(), head40.size());
  return XXH3_64bits_withSeed(payload.data(), payload.size(), h);
}

bool parse_u64(std::string_view s, std::uint64_t& v) {
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  return ec == std::errc() && p == s.data() + s.size();
}

// "key value" lines.
std::map<std::string, std::string> parse_lines(std::span<const std::byte> text) {
  std::map<std::string, std::string> kv;
  std::string s(reinterpret_cast<const char*>(text.data()), text.size());
  std::istringstream in(s);
  std::string line;
  while (std::getline(in, line)) {
    const auto sp = line.find(' ');
    if (sp == std::string::npos) continue;
    kv[line.substr(0, sp)] = line.substr(sp + 1);
  }
  return kv;
}

// Reads file `name` record by record from offset 0. Returns the length of its valid prefix,
// the number of records in it and the newest record's time; `first` is checked against the
// first record's position and the positions must be contiguous.
struct Scan {
  std::uint64_t valid = 0;
  std::uint64_t count = 0;
  std::uint64_t last_ns = 0;
  std::uint64_t size = 0;
};
Result<Scan> scan_file(log::ReadableFile& f, std::uint64_t first) {
  Scan sc;
  auto size = f.size();
  if (!size.ok()) return size.error();
  sc.size = size.value();
  std::vector<std::byte> head(kTopicRecordHeader), payload;
  std::uint64_t off = 0, expect = first;
  while (off + kTopicRecordHeader <= sc.size) {
    auto r = f.read_at(off, head);
    if (!r.ok()) return r.error();
    if (r.value() != kTopicRecordHeader) break;
    if (get<std::uint32_t>(head, 0) != kTopicRecordMagic) break;
    const std::uint32_t len = get<std::uint32_t>(head, 4);
    if (len > kMaxRecordPayload || off + kTopicRecordHeader + len > sc.size) break;
    if (get<std::uint64_t>(head, 8) != expect) break;
    payload.resize(len);
    if (len != 0) {
      auto p = f.read_at(off + kTopicRecordHeader, payload);
      if (!p.ok()) return p.error();
      if (p.value() != len) break;
    }
    if (record_checksum(std::span(head).first(40), payload) != get<std::uint64_t>(head, 40)) break;
    sc.last_ns = get<std::uint64_t>(head, 24);
    off += kTopicRecordHeader + len;
    ++expect;
    ++sc.count;
  }
  sc.valid = off;
  return sc;
}

bool parse_log_name(std::string_view n, std::uint64_t& first) {
  if (n.size() != 2 + 20 + 4 || !n.starts_with("t-") || !n.ends_with(".log")) return false;
  return parse_u64(n.substr(2, 20), first);
}

}  // namespace

std::string topic_log_file_name(std::uint64_t first) {
  char b[32];
  std::snprintf(b, sizeof b, "t-%020llu.log", static_cast<unsigned long long>(first));
  return b;
}

std::string group_meta_file(std::string_view group) {
  return "group-" + std::string(group) + ".meta";
}

std::optional<TopicRecord> parse_topic_record(std::span<const std::byte> data, std::size_t* used) {
  if (data.size() < kTopicRecordHeader) return std::nullopt;
  if (get<std::uint32_t>(data, 0) != kTopicRecordMagic) return std::nullopt;
  const std::uint32_t len = get<std::uint32_t>(data, 4);
  if (len > kMaxRecordPayload || data.size() < kTopicRecordHeader + len) return std::nullopt;
  const auto payload = data.subspan(kTopicRecordHeader, len);
  if (record_checksum(data.first(40), payload) != get<std::uint64_t>(data, 40)) return std::nullopt;
  TopicRecord r;
  r.position = get<std::uint64_t>(data, 8);
  r.id = get<std::uint64_t>(data, 16);
  r.unix_ns = get<std::uint64_t>(data, 24);
  r.hole = (get<std::uint32_t>(data, 32) & 1) != 0;
  r.payload.assign(payload.begin(), payload.end());
  if (used) *used = kTopicRecordHeader + len;
  return r;
}

std::string format_topic_meta(const std::string& name, const TopicOptions& o) {
  std::ostringstream s;
  s << "shmq-topic 1\nname " << name << "\nslot_count " << o.slot_count << "\nslot_size "
    << o.slot_size << "\nmax_members " << o.max_members << "\nmax_groups " << o.max_groups
    << "\nmode " << o.mode << "\nhistory " << o.history << "\nlease_ms " << o.lease.count()
    << "\nmax_deliveries " << o.max_deliveries << "\ndead_letter " << (o.dead_letter ? 1 : 0)
    << "\nclaim_timeout_ms " << o.claim_timeout.count() << "\ndurability "
    << static_cast<int>(o.durability) << "\nflush_interval_ms " << o.flush_interval.count()
    << "\nretain_bytes " << o.retain_bytes << "\nretain_age_s " << o.retain_age.count() << "\n";
  return s.str();
}

Result<TopicOptions> parse_topic_meta(std::span<const std::byte> text, const std::string& name) {
  auto kv = parse_lines(text);
  auto bad = [&](const std::string& what) {
    return Error(Errc::corrupt, "topic.meta of '" + name + "': " + what);
  };
  if (kv["shmq-topic"] != "1") return bad("not a version 1 topic.meta");
  if (kv["name"] != name) return bad("names topic '" + kv["name"] + "'");
  TopicOptions o;
  std::uint64_t v = 0;
  auto num = [&](const char* k, std::uint64_t max) -> bool {
    return kv.count(k) && parse_u64(kv[k], v) && v <= max;
  };
  if (!num("slot_count", 1u << 24)) return bad("slot_count");
  o.slot_count = static_cast<std::uint32_t>(v);
  if (!num("slot_size", 1u << 20)) return bad("slot_size");
  o.slot_size = static_cast<std::uint32_t>(v);
  if (!num("max_members", 255)) return bad("max_members");
  o.max_members = static_cast<std::uint32_t>(v);
  if (!num("max_groups", kMaxGroups)) return bad("max_groups");
  o.max_groups = static_cast<std::uint32_t>(v);
  if (!num("mode", 0777)) return bad("mode");
  o.mode = static_cast<std::uint32_t>(v);
  if (!num("history", 1u << 24)) return bad("history");
  o.history = static_cast<std::uint32_t>(v);
  if (!num("lease_ms", UINT32_MAX)) return bad("lease_ms");
  o.lease = std::chrono::milliseconds(v);
  if (!num("max_deliveries", UINT32_MAX)) return bad("max_deliveries");
  o.max_deliveries = static_cast<std::uint32_t>(v);
  if (!num("dead_letter", 1)) return bad("dead_letter");
  o.dead_letter = v == 1;
  if (!num("claim_timeout_ms", UINT32_MAX)) return bad("claim_timeout_ms");
  o.claim_timeout = std::chrono::milliseconds(v);
  if (!num("durability", 2)) return bad("durability");
  o.durability = static_cast<Durability>(v);
  if (!num("flush_interval_ms", UINT32_MAX)) return bad("flush_interval_ms");
  o.flush_interval = std::chrono::milliseconds(v);
  if (!num("retain_bytes", UINT64_MAX)) return bad("retain_bytes");
  o.retain_bytes = v;
  if (!num("retain_age_s", UINT32_MAX)) return bad("retain_age_s");
  o.retain_age = std::chrono::seconds(v);
  return o;
}

std::string format_group_meta(const GroupMeta& g) {
  std::ostringstream s;
  s << "shmq-group 1\nname " << g.name << "\npolicy "
    << (g.options.policy == GroupPolicy::lossy ? 1 : 0) << "\non_stall "
    << (g.options.on_stall == StallAction::detach ? 1 : 0) << "\nstall_timeout_ms "
    << g.options.stall_timeout.count() << "\nstart " << g.start << "\n";
  return s.str();
}

Result<GroupMeta> parse_group_meta(std::span<const std::byte> text) {
  auto kv = parse_lines(text);
  GroupMeta g;
  std::uint64_t policy = 0, on_stall = 0, stall = 0;
  if (kv["shmq-group"] != "1" || !Topic::validate_group_name(kv["name"]).empty() ||
      !parse_u64(kv["policy"], policy) || policy > 1 || !parse_u64(kv["on_stall"], on_stall) ||
      on_stall > 1 || !parse_u64(kv["stall_timeout_ms"], stall) || stall > UINT32_MAX ||
      !parse_u64(kv["start"], g.start))
    return Error(Errc::corrupt, "a group .meta file is not valid");
  g.name = kv["name"];
  g.options.policy = policy ? GroupPolicy::lossy : GroupPolicy::reliable;
  g.options.on_stall = on_stall ? StallAction::detach : StallAction::hold;
  g.options.stall_timeout = std::chrono::milliseconds(stall);
  return g;
}

// ---------------------------------------------------------------------------------------

Result<std::unique_ptr<TopicLogWriter>> TopicLogWriter::open(std::unique_ptr<log::Directory> dir,
                                                             std::uint64_t segment_bytes) {
  std::unique_ptr<TopicLogWriter> w(new TopicLogWriter());
  w->segment_bytes_ = segment_bytes;
  auto names = dir->list();
  if (!names.ok()) return names.error();
  std::vector<std::uint64_t> firsts;
  for (const auto& n : names.value()) {
    std::uint64_t f = 0;
    if (parse_log_name(n, f)) firsts.push_back(f);
  }
  std::sort(firsts.begin(), firsts.end());
  std::uint64_t expect = firsts.empty() ? 0 : firsts.front();
  for (std::size_t i = 0; i < firsts.size(); ++i) {
    const std::string name = topic_log_file_name(firsts[i]);
    if (firsts[i] != expect)
      return Error(Errc::corrupt, dir->path_of(name) + ": starts at position " +
                                      std::to_string(firsts[i]) + ", the log before it ends at " +
                                      std::to_string(expect));
    auto f = dir->open_read(name);
    if (!f.ok()) return f.error();
    auto sc = scan_file(*f.value(), firsts[i]);
    if (!sc.ok()) return sc.error();
    const bool last = i + 1 == firsts.size();
    if (sc.value().valid != sc.value().size) {
      if (!last)
        return Error(Errc::corrupt, dir->path_of(name) + ": damaged record at offset " +
                                        std::to_string(sc.value().valid) +
                                        " in a file that is not the last");
      // A torn tail: what a crash mid-append leaves. Never acknowledged (sync had not
      // returned), so it is cut (and said: torn_bytes()).
      w->torn_bytes_ += sc.value().size - sc.value().valid;
      if (auto t = dir->truncate(name, sc.value().valid); !t.ok()) return t.error();
      auto a = dir->open_append(name);
      if (!a.ok()) return a.error();
      if (auto s = a.value()->sync(); !s.ok()) return s.error();
    }
    w->files_[firsts[i]] = File{firsts[i], sc.value().valid, sc.value().last_ns};
    expect = firsts[i] + sc.value().count;
  }
  w->first_ = firsts.empty() ? 0 : firsts.front();
  w->next_ = expect;
  w->dir_ = std::move(dir);
  return w;
}

VoidResult TopicLogWriter::append(std::uint64_t pos, std::uint64_t id, std::uint64_t unix_ns,
                                  bool hole, std::span<const std::byte> payload) {
  if (pos != next_)
    return Error(Errc::corrupt, dir_->path() + ": the log ends at position " +
                                    std::to_string(next_) + ", position " + std::to_string(pos) +
                                    " cannot follow it");
  const std::size_t off = buf_.size();
  buf_.resize(off + kTopicRecordHeader + payload.size());
  put(buf_, off + 0, kTopicRecordMagic);
  put(buf_, off + 4, static_cast<std::uint32_t>(payload.size()));
  put(buf_, off + 8, next_);
  put(buf_, off + 16, id);
  put(buf_, off + 24, unix_ns);
  put(buf_, off + 32, std::uint32_t{hole ? 1u : 0u});
  put(buf_, off + 36, std::uint32_t{0});
  if (!payload.empty()) std::memcpy(buf_.data() + off + kTopicRecordHeader, payload.data(), payload.size());
  put(buf_, off + 40,
      record_checksum(std::span<const std::byte>(buf_).subspan(off, 40),
                      std::span<const std::byte>(buf_).subspan(off + kTopicRecordHeader, payload.size())));
  ++next_;
  ++buffered_;
  buffered_last_ns_ = unix_ns;
  return {};
}

VoidResult TopicLogWriter::truncate_to(std::uint64_t pos) {
  if (pos >= next_) return {};
  if (!buf_.empty()) return Error(Errc::invalid_argument, "truncate_to with buffered records");
  current_.reset();
  // Whole files at or after pos go; the file holding pos is cut at its record.
  while (!files_.empty() && files_.rbegin()->first >= pos && files_.size() > 1) {
    if (auto u = dir_->unlink(topic_log_file_name(files_.rbegin()->first)); !u.ok()) return u.error();
    files_.erase(std::prev(files_.end()));
  }
  if (!files_.empty()) {
    File& f = files_.rbegin()->second;
    const std::string name = topic_log_file_name(f.first);
    std::uint64_t cut = 0;
    if (pos > f.first) {
      auto rf = dir_->open_read(name);
      if (!rf.ok()) return rf.error();
      std::vector<std::byte> head(kTopicRecordHeader);
      for (std::uint64_t p = f.first; p < pos; ++p) {
        auto r = rf.value()->read_at(cut, head);
        if (!r.ok()) return r.error();
        if (r.value() != kTopicRecordHeader) return Error(Errc::corrupt, dir_->path_of(name) + ": short");
        cut += kTopicRecordHeader + get<std::uint32_t>(head, 4);
      }
    }
    if (auto t = dir_->truncate(name, cut); !t.ok()) return t.error();
    auto a = dir_->open_append(name);
    if (!a.ok()) return a.error();
    if (auto sy = a.value()->sync(); !sy.ok()) return sy.error();
    f.bytes = cut;
    if (cut == 0 && pos == f.first && files_.size() == 1) first_ = pos;
  }
  if (auto sy = dir_->sync(); !sy.ok()) return sy.error();
  next_ = pos;
  return {};
}

VoidResult TopicLogWriter::sync() {
  if (buf_.empty()) return {};
  const std::uint64_t buf_first = next_ - buffered_;
  // The file to append to: the newest, unless it is full (then a new one from buf_first).
  if (files_.empty() || files_.rbegin()->second.bytes >= segment_bytes_) {
    current_.reset();
    const std::string name = topic_log_file_name(buf_first);
    auto f = dir_->create_file(name);
    if (!f.ok()) return f.error();
    if (auto s = dir_->sync(); !s.ok()) return s.error();
    current_ = std::move(f.value());
    files_[buf_first] = File{buf_first, 0, 0};
  } else if (!current_) {
    auto f = dir_->open_append(topic_log_file_name(files_.rbegin()->first));
    if (!f.ok()) return f.error();
    current_ = std::move(f.value());
  }
  if (auto a = current_->append(buf_); !a.ok()) return a.error();
  if (auto s = current_->sync(); !s.ok()) return s.error();
  File& last = files_.rbegin()->second;
  last.bytes += buf_.size();
  last.last_unix_ns = buffered_last_ns_;
  buf_.clear();
  buffered_ = 0;
  return {};
}

std::uint64_t TopicLogWriter::bytes() const noexcept {
  std::uint64_t b = 0;
  for (const auto& [f, file] : files_) b += file.bytes;
  return b;
}

VoidResult TopicLogWriter::retain(std::uint64_t max_bytes, std::uint64_t max_age_s,
                                  std::uint64_t now_unix_ns) {
  bool removed = false;
  while (files_.size() > 1) {
    const File& oldest = files_.begin()->second;
    const bool too_big = max_bytes != 0 && bytes() > max_bytes;
    const bool too_old = max_age_s != 0 && oldest.last_unix_ns != 0 &&
                         now_unix_ns > oldest.last_unix_ns + max_age_s * 1'000'000'000ull;
    if (!too_big && !too_old) break;
    auto next = std::next(files_.begin());
    if (auto u = dir_->unlink(topic_log_file_name(oldest.first)); !u.ok()) return u.error();
    first_ = next->first;
    files_.erase(files_.begin());
    removed = true;
  }
  if (removed) return dir_->sync();
  return {};
}

// ---------------------------------------------------------------------------------------

Result<std::optional<TopicRecord>> TopicLogReader::read(std::uint64_t pos) {
  if (!dir_) {
    auto d = log::posix_file_system().open_dir(path_, {.create = false, .require_private = false});
    if (!d.ok()) return d.error();
    dir_ = std::move(d.value());
  }
  if (file_ && pos >= file_first_ && pos < next_ && !index_.empty()) {
    // Behind us in this file: from the nearest indexed record at or before pos.
    auto it = std::upper_bound(index_.begin(), index_.end(), std::make_pair(pos, UINT64_MAX));
    --it;
    next_ = it->first;
    offset_ = it->second;
  } else if (!file_ || pos < file_first_) {
    // Find the file holding pos: the one with the largest first position <= pos.
    auto names = dir_->list();
    if (!names.ok()) return names.error();
    std::uint64_t best = 0;
    bool found = false;
    for (const auto& n : names.value()) {
      std::uint64_t f = 0;
      if (parse_log_name(n, f) && f <= pos && (!found || f > best)) {
        best = f;
        found = true;
      }
    }
    if (!found) return std::optional<TopicRecord>{};
    auto f = dir_->open_read(topic_log_file_name(best));
    if (!f.ok()) {
      if (f.error().code() == Errc::not_found) return std::optional<TopicRecord>{};
      return f.error();
    }
    file_ = std::move(f.value());
    file_first_ = best;
    offset_ = 0;
    next_ = best;
    index_.assign(1, {best, 0});
  }
  std::vector<std::byte> head(kTopicRecordHeader);
  for (;;) {
    auto r = file_->read_at(offset_, head);
    if (!r.ok()) return r.error();
    if (r.value() != kTopicRecordHeader) {
      // End of this file: the next one starts at next_ (if it exists yet).
      auto f = dir_->open_read(topic_log_file_name(next_));
      if (!f.ok()) return std::optional<TopicRecord>{};
      file_ = std::move(f.value());
      file_first_ = next_;
      offset_ = 0;
      index_.assign(1, {next_, 0});
      continue;
    }
    const std::uint32_t len = get<std::uint32_t>(head, 4);
    if (get<std::uint32_t>(head, 0) != kTopicRecordMagic || len > kMaxRecordPayload)
      return std::optional<TopicRecord>{};  // a tail being written, or damage: not retained
    std::vector<std::byte> rec(kTopicRecordHeader + len);
    auto r2 = file_->read_at(offset_, rec);
    if (!r2.ok()) return r2.error();
    if (r2.value() != rec.size()) return std::optional<TopicRecord>{};
    std::size_t used = 0;
    auto parsed = parse_topic_record(rec, &used);
    if (!parsed || parsed->position != next_) return std::optional<TopicRecord>{};
    offset_ += used;
    ++next_;
    if (next_ % 64 == 0 && (index_.empty() || index_.back().first < next_)) index_.emplace_back(next_, offset_);
    if (parsed->position == pos) return parsed;
  }
}

}  // namespace shmq::detail
