#include "shmq/properties.hpp"

#include <cstring>

#include "core/properties_block.hpp"
#include "platform/process.hpp"

namespace shmq {

namespace {

std::uint32_t load_u32(const std::byte* p) noexcept {
  std::uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | std::to_integer<std::uint32_t>(p[i]);
  return v;
}
std::uint64_t load_u64(const std::byte* p) noexcept {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | std::to_integer<std::uint64_t>(p[i]);
  return v;
}
void store_le(std::byte* p, std::uint64_t v, int n) noexcept {
  for (int i = 0; i < n; ++i) p[i] = static_cast<std::byte>(v >> (8 * i));
}

// Reads the u8-length string at the front of `rest` and moves past it; false (and `rest`
// emptied) if it runs past the end.
bool take_string(std::span<const std::byte>& rest, std::string_view& out) noexcept {
  if (rest.empty()) return false;
  const std::size_t n = std::to_integer<std::size_t>(rest[0]);
  if (rest.size() < 1 + n) {
    rest = {};
    return false;
  }
  out = std::string_view(reinterpret_cast<const char*>(rest.data() + 1), n);
  rest = rest.subspan(1 + n);
  return true;
}

// The block's strings (after the fixed fields), bounded by its own size field and by the
// bytes at hand.
std::span<const std::byte> strings_of(std::span<const std::byte> block) noexcept {
  if (block.size() < kPropertiesFixedSize) return {};
  const std::size_t size = std::min<std::size_t>(load_u32(block.data()), block.size());
  if (size < kPropertiesFixedSize) return {};
  return block.subspan(kPropertiesFixedSize, size - kPropertiesFixedSize);
}

}  // namespace

std::uint64_t PropertiesView::timestamp_ns() const noexcept {
  return block_.size() >= kPropertiesFixedSize ? load_u64(block_.data() + 8) : 0;
}

std::size_t PropertiesView::header_count() const noexcept {
  if (block_.size() < kPropertiesFixedSize) return 0;
  return std::to_integer<std::size_t>(block_[6]) | (std::to_integer<std::size_t>(block_[7]) << 8);
}

std::string_view PropertiesView::string_at(int index) const noexcept {
  std::span<const std::byte> rest = strings_of(block_);
  std::string_view s;
  for (int i = 0; i <= index; ++i)
    if (!take_string(rest, s)) return {};
  return s;
}

PropertiesView::HeaderRange PropertiesView::headers() const noexcept {
  std::span<const std::byte> rest = strings_of(block_);
  std::string_view s;
  for (int i = 0; i < 3; ++i)
    if (!take_string(rest, s)) return {};
  return {HeaderIterator(rest, header_count()), HeaderIterator()};
}

void PropertiesView::HeaderIterator::load_next() noexcept {
  if (left_ == 0) return;
  --left_;
  if (left_ == 0) return;
  if (!take_string(rest_, current_.first) || !take_string(rest_, current_.second)) left_ = 0;
}

std::optional<std::string_view> PropertiesView::header(std::string_view key) const noexcept {
  for (const auto& [k, v] : headers())
    if (k == key) return v;
  return std::nullopt;
}

Properties PropertiesView::to_properties() const {
  Properties p;
  p.content_type = content_type();
  p.correlation_id = correlation_id();
  p.reply_to = reply_to();
  for (const auto& [k, v] : headers()) p.headers.emplace_back(k, v);
  return p;
}

std::optional<std::size_t> encoded_properties_size(const Properties& p) noexcept {
  std::size_t size = kPropertiesFixedSize;
  const auto add = [&size](std::string_view s) {
    if (s.size() > kMaxPropertyString) return false;
    size += 1 + s.size();
    return true;
  };
  if (!add(p.content_type) || !add(p.correlation_id) || !add(p.reply_to)) return std::nullopt;
  if (p.headers.size() > UINT16_MAX) return std::nullopt;
  for (const auto& [k, v] : p.headers)
    if (k.empty() || !add(k) || !add(v)) return std::nullopt;
  if (size > kMaxPropertiesSize) return std::nullopt;
  return size;
}

}  // namespace shmq

namespace shmq::detail {

Status encode_properties(const Properties& p, std::uint64_t timestamp_ns,
                         std::vector<std::byte>& out) {
  const std::optional<std::size_t> size = encoded_properties_size(p);
  if (!size) return Status::invalid;
  out.resize(*size);
  std::byte* b = out.data();
  store_le(b, *size, 4);
  b[4] = std::byte{kPropertiesFormat};
  b[5] = std::byte{0};
  store_le(b + 6, p.headers.size(), 2);
  store_le(b + 8, timestamp_ns, 8);
  std::size_t at = kPropertiesFixedSize;
  const auto put = [&](std::string_view s) {
    b[at] = static_cast<std::byte>(s.size());
    if (!s.empty()) std::memcpy(b + at + 1, s.data(), s.size());
    at += 1 + s.size();
  };
  put(p.content_type);
  put(p.correlation_id);
  put(p.reply_to);
  for (const auto& [k, v] : p.headers) {
    put(k);
    put(v);
  }
  return Status::ok;
}

std::size_t checked_properties_size(std::span<const std::byte> bytes) noexcept {
  if (bytes.size() < kPropertiesFixedSize) return 0;
  const std::size_t size = load_u32(bytes.data());
  if (size < kPropertiesFixedSize || size > kMaxPropertiesSize || size > bytes.size()) return 0;
  if (std::to_integer<std::uint8_t>(bytes[4]) != kPropertiesFormat) return 0;
  std::span<const std::byte> rest = bytes.subspan(kPropertiesFixedSize, size - kPropertiesFixedSize);
  const std::size_t count =
      std::to_integer<std::size_t>(bytes[6]) | (std::to_integer<std::size_t>(bytes[7]) << 8);
  std::string_view s;
  for (std::size_t i = 0; i < 3 + 2 * count; ++i)
    if (!take_string(rest, s)) return 0;
  return rest.empty() ? size : 0;  // nothing left over inside the block
}

}  // namespace shmq::detail
