// shmq-bridge's side of AMQP: one connection to a RabbitMQ broker through Debian's
// librabbitmq (no AMQP written here), and the mapping between shmq message properties and
// AMQP basic properties (docs/bridge.md, "Property mapping").
#pragma once

#include <amqp.h>
#include <amqp_framing.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "shmq/consumer.hpp"
#include "shmq/properties.hpp"

namespace shmq_bridge {

// A parsed amqp://user:pass@host:port/vhost URL.
struct AmqpUrl {
  std::string user = "guest";
  std::string password = "guest";
  std::string host = "localhost";
  int port = 5672;
  std::string vhost = "/";
};
// Nothing, with `error` set, for a URL librabbitmq cannot parse (or amqps://: this build
// speaks plain TCP only).
std::optional<AmqpUrl> parse_url(const std::string& url, std::string& error);

// One connection with one channel (1). Not thread-safe; the bridge uses it from one thread.
// Every failing call leaves a message in error() and the connection unusable: the caller
// drops it and connects again.
class Connection {
 public:
  Connection() = default;
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  ~Connection() { close(); }

  // Opens the TCP connection (bounded by `timeout`), logs in and opens channel 1.
  bool open(const AmqpUrl& url, std::chrono::milliseconds timeout, int heartbeat_s);
  // Closes the channel and the connection politely if they are up, then frees everything.
  void close() noexcept;
  // Frees everything without a word to the broker: the connection already failed (a socket
  // error, or the broker closed the channel or connection), so nothing polite can follow.
  void drop() noexcept;
  bool is_open() const noexcept { return conn_ != nullptr; }
  amqp_connection_state_t get() const noexcept { return conn_; }
  const std::string& error() const noexcept { return error_; }
  void set_error(std::string e) { error_ = std::move(e); }

  // Checks the reply of the last synchronous call (declare, qos, ...); false with error()
  // set if it failed (the channel or connection is then closed by the broker).
  bool rpc_ok(std::string_view what);

  // Declarations (the bridge's --declare, and the test tool).
  bool declare_exchange(const std::string& name, const std::string& type);
  // `quorum`: x-queue-type quorum (RabbitMQ's replicated queue; needs 3.8+).
  bool declare_queue(const std::string& name, bool quorum);
  bool bind(const std::string& queue, const std::string& exchange, const std::string& key);
  // The number of messages ready in `queue` (passive declare), or nothing.
  std::optional<std::uint32_t> queue_depth(const std::string& queue);

 private:
  amqp_connection_state_t conn_ = nullptr;
  bool channel_open_ = false;
  std::string error_;
};

// The text of a librabbitmq status code.
std::string status_text(int status);
// The text of a failed amqp_rpc_reply_t (a library error, or the broker's close reason).
std::string reply_text(const amqp_rpc_reply_t& r);

// --- property mapping ---------------------------------------------------------------------

// Header names the bridge adds to carry what the other side cannot hold exactly; both are
// taken out again by the opposite direction (docs/bridge.md).
inline constexpr std::string_view kTimestampNsHeader = "shmq-timestamp-ns";
inline constexpr std::string_view kMessageIdHeader = "shmq-message-id";

// The shmq id for an AMQP message_id: a decimal in 1 .. 2^62 - 1 is that id; anything else
// (text, 0, larger numbers such as shmq's generated ids) is FNV-1a 64 of its bytes, folded
// into 1 .. 2^62 - 1 (ids with bit 62 or 63 set are shmq's own, and a queue with a dedup
// window refuses ids with bit 63). `hashed` says which. An empty message_id gives 0 (the
// queue generates an id: such a message cannot be deduplicated).
std::uint64_t id_from_message_id(std::string_view message_id, bool& hashed) noexcept;

// An AMQP basic.properties built from a received shmq message, and the storage its
// amqp_bytes_t fields point into (kept alive until the publish).
struct OutProperties {
  amqp_basic_properties_t props{};
  std::string message_id;
  std::string timestamp_ns;
  std::vector<amqp_table_entry_t> entries;
  std::vector<std::string> owned;  // strings the entries point into
};
// Fills `out` for `m` (see docs/bridge.md): message_id = decimal id (or the shmq-message-id
// header's text if the message came from AMQP with a hashed id), correlation_id, reply_to,
// content_type, priority, timestamp (seconds) + shmq-timestamp-ns, headers as longstr.
// `persistent`: delivery_mode 2.
void to_amqp(const shmq::Message& m, bool persistent, OutProperties& out);

// shmq send arguments built from an AMQP delivery.
struct InMessage {
  std::uint64_t id = 0;
  bool id_hashed = false;
  std::uint32_t priority = 0;
  std::uint64_t timestamp_ns = 0;  // 0: none (the library stamps the send time)
  bool has_properties = false;
  shmq::Properties props;
  std::uint32_t headers_dropped = 0;  // over shmq's limits (kMaxPropertyString, block size)
};
// Maps `p` (see docs/bridge.md). Non-string header values become text: integers and
// timestamps in decimal, booleans true/false, floats with %.17g, decimals as digits with a
// point, byte strings as they are, void as "", arrays and tables as JSON-like text.
void from_amqp(const amqp_basic_properties_t& p, std::uint32_t max_priority, InMessage& out);

// The text a header value becomes (exposed for the test tool and the docs' examples).
std::string field_text(const amqp_field_value_t& v);

inline amqp_bytes_t bytes_of(std::string_view s) noexcept {
  return amqp_bytes_t{s.size(), const_cast<char*>(s.data())};
}
inline std::string_view view_of(amqp_bytes_t b) noexcept {
  return {static_cast<const char*>(b.bytes), b.len};
}

}  // namespace shmq_bridge
