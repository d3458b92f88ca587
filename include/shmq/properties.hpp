// Message properties (issue 14): a content type, a correlation id, a reply-to queue name,
// the send time (set by the library) and application key/value headers, carried with a
// message through redelivery, dead-lettering, the log and recovery. The priority is the
// message's level (Message::priority()), also shown in the view.
//
// Sending: fill a Properties and pass its address in SendOptions::properties:
//   shmq::Properties props{.content_type = "application/json", .reply_to = "replies"};
//   props.headers.emplace_back("tenant", "acme");
//   producer.send(bytes, {.properties = &props});
// Receiving: Message::data() / view() / size() are the payload only; Message::properties()
// is a view into the message's own bytes (no copy, no allocation).
//
// Limits (Status::invalid on send when exceeded): each string (content type, correlation
// id, reply-to, a header's key, a header's value) at most kMaxPropertyString = 255 bytes; a
// header key is not empty; the whole encoded block at most kMaxPropertiesSize = 4096 bytes
// (16 bytes of fixed fields, then 1 + length bytes per string: about 2 x 255 headers of
// 8-byte keys and values). The block is part of the message's bytes: block + payload must
// fit the queue's max_message_size (Status::too_large otherwise).
//
// The encoded block, little-endian, no padding (design note 22, docs/design_notes.md):
//
//   offset  size  field
//        0     4  block size in bytes, this field included (16 .. 4096)
//        4     1  format (1)
//        5     1  reserved (0)
//        6     2  header count
//        8     8  send time: unix time in ns (CLOCK_REALTIME), set by the producer library
//       16     -  strings, each a u8 length then its bytes: content type, correlation id,
//                 reply-to, then key, value of each header in the order given
//
// In the ring, a message with properties has the top bit of its slot header's length set
// and its bytes are [block][payload]; a message without properties is unchanged.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace shmq {

inline constexpr std::size_t kMaxPropertyString = 255;
inline constexpr std::size_t kMaxPropertiesSize = 4096;
inline constexpr std::size_t kPropertiesFixedSize = 16;
inline constexpr std::uint8_t kPropertiesFormat = 1;

// Properties to send (owning). Empty strings mean "not set".
struct Properties {
  std::string content_type;
  std::string correlation_id;
  std::string reply_to;  // a queue name
  std::vector<std::pair<std::string, std::string>> headers;
};

// A received message's properties: string_views into the message's bytes, valid while the
// Message lives and holds them (for a zero-copy message: while it is held, like its data();
// every access is bounds-checked against the block, so a slot changed under a reader gives
// wrong strings, never a read outside it). Empty (present() false) for a message sent
// without properties: every string empty, timestamp 0, no headers.
class PropertiesView {
 public:
  PropertiesView() = default;
  PropertiesView(std::span<const std::byte> block, std::uint32_t priority) noexcept
      : block_(block), priority_(priority) {}

  // True if the message carries a properties block.
  bool present() const noexcept { return !block_.empty(); }
  std::string_view content_type() const noexcept { return string_at(0); }
  std::string_view correlation_id() const noexcept { return string_at(1); }
  std::string_view reply_to() const noexcept { return string_at(2); }
  // The send time, unix ns (CLOCK_REALTIME of the sending process); 0 without properties.
  std::uint64_t timestamp_ns() const noexcept;
  std::chrono::system_clock::time_point timestamp() const noexcept {
    return std::chrono::system_clock::time_point(
        std::chrono::duration_cast<std::chrono::system_clock::duration>(
            std::chrono::nanoseconds(timestamp_ns())));
  }
  // The message's priority (Message::priority()).
  std::uint32_t priority() const noexcept { return priority_; }
  std::size_t header_count() const noexcept;
  // The value of the first header named `key`, or nothing.
  std::optional<std::string_view> header(std::string_view key) const noexcept;

  // Iteration over (key, value) pairs in the order they were sent:
  //   for (auto [k, v] : m.properties().headers()) ...
  class HeaderIterator {
   public:
    using iterator_category = std::forward_iterator_tag;
    using value_type = std::pair<std::string_view, std::string_view>;
    using difference_type = std::ptrdiff_t;
    using pointer = const value_type*;
    using reference = const value_type&;
    HeaderIterator() = default;
    reference operator*() const noexcept { return current_; }
    pointer operator->() const noexcept { return &current_; }
    HeaderIterator& operator++() noexcept {
      load_next();
      return *this;
    }
    HeaderIterator operator++(int) noexcept {
      HeaderIterator t = *this;
      load_next();
      return t;
    }
    bool operator==(const HeaderIterator& o) const noexcept { return left_ == o.left_; }

   private:
    friend class PropertiesView;
    HeaderIterator(std::span<const std::byte> rest, std::size_t count) noexcept
        : rest_(rest), left_(count + 1) {
      load_next();
    }
    void load_next() noexcept;
    std::span<const std::byte> rest_;
    std::size_t left_ = 0;  // pairs not yet consumed, + 1 for the current one (0: end)
    value_type current_;
  };
  struct HeaderRange {
    HeaderIterator b, e;
    HeaderIterator begin() const noexcept { return b; }
    HeaderIterator end() const noexcept { return e; }
  };
  HeaderRange headers() const noexcept;

  // An owning copy (e.g. to send the same properties on).
  Properties to_properties() const;
  // The encoded block (empty without properties).
  std::span<const std::byte> bytes() const noexcept { return block_; }

 private:
  std::string_view string_at(int index) const noexcept;
  std::span<const std::byte> block_;
  std::uint32_t priority_ = 0;
};

// The encoded size of `p`, or nothing if it breaks a limit above (a string over 255 bytes,
// an empty header key, a block over kMaxPropertiesSize).
std::optional<std::size_t> encoded_properties_size(const Properties& p) noexcept;

}  // namespace shmq
