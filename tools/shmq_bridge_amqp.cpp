#include "shmq_bridge_amqp.hpp"

#include <amqp_tcp_socket.h>
#include <sys/time.h>

#include <algorithm>
#include <charconv>
#include <cinttypes>
#include <cstdio>
#include <limits>

namespace shmq_bridge {

namespace {

timeval to_timeval(std::chrono::milliseconds d) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(d.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((d.count() % 1000) * 1000);
  return tv;
}

constexpr std::uint64_t kIdMask = (std::uint64_t{1} << 62) - 1;

std::optional<std::uint64_t> parse_u64(std::string_view s) {
  std::uint64_t v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || end != s.data() + s.size() || s.empty()) return std::nullopt;
  return v;
}

void append_json_string(std::string& out, std::string_view s) {
  out += '"';
  for (const char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  out += '"';
}

// Nested values are rendered JSON-like: strings quoted, scalars as field_text gives them.
void append_nested(std::string& out, const amqp_field_value_t& v) {
  switch (v.kind) {
    case AMQP_FIELD_KIND_UTF8:
    case AMQP_FIELD_KIND_BYTES:
      append_json_string(out, view_of(v.value.bytes));
      break;
    default:
      out += field_text(v);
  }
}

}  // namespace

std::optional<AmqpUrl> parse_url(const std::string& url, std::string& error) {
  // amqp_parse_url parses in place and points into the buffer it is given.
  std::vector<char> buf(url.begin(), url.end());
  buf.push_back('\0');
  amqp_connection_info info{};
  amqp_default_connection_info(&info);
  if (const int st = amqp_parse_url(buf.data(), &info); st != AMQP_STATUS_OK) {
    error = "bad AMQP URL '" + url + "': " + amqp_error_string2(st) +
            " (expected amqp://user:password@host:port/vhost)";
    return std::nullopt;
  }
  if (info.ssl) {
    error = "bad AMQP URL '" + url + "': amqps:// (TLS) is not supported by shmq-bridge";
    return std::nullopt;
  }
  AmqpUrl u;
  u.user = info.user;
  u.password = info.password;
  u.host = info.host;
  u.port = info.port;
  u.vhost = info.vhost;
  return u;
}

std::string status_text(int status) { return amqp_error_string2(status); }

std::string reply_text(const amqp_rpc_reply_t& r) {
  switch (r.reply_type) {
    case AMQP_RESPONSE_NORMAL:
      return "ok";
    case AMQP_RESPONSE_NONE:
      return "no reply from the broker";
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
      return amqp_error_string2(r.library_error);
    case AMQP_RESPONSE_SERVER_EXCEPTION:
      if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
        const auto* c = static_cast<const amqp_connection_close_t*>(r.reply.decoded);
        return "connection closed by the broker: " + std::to_string(c->reply_code) + " " +
               std::string(view_of(c->reply_text));
      }
      if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
        const auto* c = static_cast<const amqp_channel_close_t*>(r.reply.decoded);
        return "channel closed by the broker: " + std::to_string(c->reply_code) + " " +
               std::string(view_of(c->reply_text));
      }
      return "unexpected method from the broker";
  }
  return "unknown reply";
}

bool Connection::open(const AmqpUrl& url, std::chrono::milliseconds timeout, int heartbeat_s) {
  close();
  conn_ = amqp_new_connection();
  if (conn_ == nullptr) {
    error_ = "out of memory";
    return false;
  }
  amqp_socket_t* socket = amqp_tcp_socket_new(conn_);
  if (socket == nullptr) {
    error_ = "cannot create a TCP socket";
    drop();
    return false;
  }
  timeval tv = to_timeval(timeout);
  // Bounded everywhere: a broker that accepts the connection and then hangs must not hang
  // the bridge (handshake, login, and every synchronous call after it).
  if (const int st = amqp_socket_open_noblock(socket, url.host.c_str(), url.port, &tv);
      st != AMQP_STATUS_OK) {
    error_ = "connect to " + url.host + ":" + std::to_string(url.port) + ": " + status_text(st);
    drop();
    return false;
  }
  (void)amqp_set_handshake_timeout(conn_, &tv);
  (void)amqp_set_rpc_timeout(conn_, &tv);
  const amqp_rpc_reply_t login =
      amqp_login(conn_, url.vhost.c_str(), 0, AMQP_DEFAULT_FRAME_SIZE, heartbeat_s,
                 AMQP_SASL_METHOD_PLAIN, url.user.c_str(), url.password.c_str());
  if (login.reply_type != AMQP_RESPONSE_NORMAL) {
    error_ = "login to " + url.host + ":" + std::to_string(url.port) + " vhost '" + url.vhost +
             "' as '" + url.user + "': " + reply_text(login);
    drop();
    return false;
  }
  amqp_channel_open(conn_, 1);
  if (!rpc_ok("channel.open")) {
    drop();
    return false;
  }
  channel_open_ = true;
  return true;
}

void Connection::close() noexcept {
  if (conn_ == nullptr) return;
  // Polite closes are bounded by the rpc timeout set at open; on a dead socket they fail
  // at once.
  if (channel_open_) (void)amqp_channel_close(conn_, 1, AMQP_REPLY_SUCCESS);
  (void)amqp_connection_close(conn_, AMQP_REPLY_SUCCESS);
  amqp_destroy_connection(conn_);
  conn_ = nullptr;
  channel_open_ = false;
}

void Connection::drop() noexcept {
  if (conn_ == nullptr) return;
  amqp_destroy_connection(conn_);
  conn_ = nullptr;
  channel_open_ = false;
}

bool Connection::rpc_ok(std::string_view what) {
  const amqp_rpc_reply_t r = amqp_get_rpc_reply(conn_);
  if (r.reply_type == AMQP_RESPONSE_NORMAL) return true;
  error_ = std::string(what) + ": " + reply_text(r);
  // After a server exception the channel (or connection) is closed: nothing polite left.
  channel_open_ = false;
  return false;
}

bool Connection::declare_exchange(const std::string& name, const std::string& type) {
  amqp_exchange_declare(conn_, 1, bytes_of(name), bytes_of(type), 0, 1, 0, 0, amqp_empty_table);
  return rpc_ok("declare exchange '" + name + "'");
}

bool Connection::declare_queue(const std::string& name, bool quorum) {
  amqp_table_entry_t entry{};
  amqp_table_t args = amqp_empty_table;
  if (quorum) {
    entry.key = amqp_cstring_bytes("x-queue-type");
    entry.value.kind = AMQP_FIELD_KIND_UTF8;
    entry.value.value.bytes = amqp_cstring_bytes("quorum");
    args.num_entries = 1;
    args.entries = &entry;
  }
  amqp_queue_declare(conn_, 1, bytes_of(name), 0, 1, 0, 0, args);
  return rpc_ok("declare queue '" + name + "'");
}

bool Connection::bind(const std::string& queue, const std::string& exchange,
                      const std::string& key) {
  amqp_queue_bind(conn_, 1, bytes_of(queue), bytes_of(exchange), bytes_of(key), amqp_empty_table);
  return rpc_ok("bind queue '" + queue + "' to '" + exchange + "'");
}

std::optional<std::uint32_t> Connection::queue_depth(const std::string& queue) {
  const amqp_queue_declare_ok_t* ok =
      amqp_queue_declare(conn_, 1, bytes_of(queue), 1, 0, 0, 0, amqp_empty_table);
  if (!rpc_ok("declare queue '" + queue + "' (passive)") || ok == nullptr) return std::nullopt;
  return ok->message_count;
}

std::uint64_t id_from_message_id(std::string_view message_id, bool& hashed) noexcept {
  hashed = false;
  if (message_id.empty()) return 0;
  if (const auto v = parse_u64(message_id); v && *v != 0 && *v <= kIdMask) return *v;
  // FNV-1a 64: short, stable across versions and machines (documented in docs/bridge.md).
  std::uint64_t h = 14695981039346656037ull;
  for (const char c : message_id) {
    h ^= static_cast<unsigned char>(c);
    h *= 1099511628211ull;
  }
  hashed = true;
  h &= kIdMask;
  return h == 0 ? 1 : h;
}

void to_amqp(const shmq::Message& m, bool persistent, OutProperties& out) {
  out.props = amqp_basic_properties_t{};
  out.entries.clear();
  amqp_basic_properties_t& p = out.props;
  p._flags = AMQP_BASIC_MESSAGE_ID_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG;
  p.delivery_mode = persistent ? 2 : 1;
  const shmq::PropertiesView v = m.properties();
  // A message that came in from AMQP with a non-numeric message_id carries it in a header:
  // it goes back out as it came.
  const std::optional<std::string_view> original = v.header(kMessageIdHeader);
  out.message_id = original ? std::string(*original) : std::to_string(m.id());
  p.message_id = bytes_of(out.message_id);
  if (m.priority() != 0) {
    p._flags |= AMQP_BASIC_PRIORITY_FLAG;
    p.priority = static_cast<std::uint8_t>(std::min<std::uint32_t>(m.priority(), 255));
  }
  if (!v.present()) return;
  if (!v.content_type().empty()) {
    p._flags |= AMQP_BASIC_CONTENT_TYPE_FLAG;
    p.content_type = bytes_of(v.content_type());
  }
  if (!v.correlation_id().empty()) {
    p._flags |= AMQP_BASIC_CORRELATION_ID_FLAG;
    p.correlation_id = bytes_of(v.correlation_id());
  }
  if (!v.reply_to().empty()) {
    p._flags |= AMQP_BASIC_REPLY_TO_FLAG;
    p.reply_to = bytes_of(v.reply_to());
  }
  const std::uint64_t ns = v.timestamp_ns();
  if (ns != 0) {
    // AMQP's timestamp is whole seconds; the header keeps the nanoseconds for the way back.
    p._flags |= AMQP_BASIC_TIMESTAMP_FLAG;
    p.timestamp = ns / 1'000'000'000u;
    out.timestamp_ns = std::to_string(ns);
  }
  out.entries.reserve(v.header_count() + 1);
  auto add = [&](std::string_view k, std::string_view val) {
    amqp_table_entry_t e{};
    e.key = bytes_of(k);
    e.value.kind = AMQP_FIELD_KIND_UTF8;
    e.value.value.bytes = bytes_of(val);
    out.entries.push_back(e);
  };
  for (const auto& [k, val] : v.headers())
    if (k != kMessageIdHeader) add(k, val);
  if (ns != 0) add(kTimestampNsHeader, out.timestamp_ns);
  if (!out.entries.empty()) {
    p._flags |= AMQP_BASIC_HEADERS_FLAG;
    p.headers.num_entries = static_cast<int>(out.entries.size());
    p.headers.entries = out.entries.data();
  }
}

std::string field_text(const amqp_field_value_t& v) {
  char buf[64];
  switch (v.kind) {
    case AMQP_FIELD_KIND_UTF8:
    case AMQP_FIELD_KIND_BYTES:
      return std::string(view_of(v.value.bytes));
    case AMQP_FIELD_KIND_BOOLEAN:
      return v.value.boolean ? "true" : "false";
    case AMQP_FIELD_KIND_I8:
      return std::to_string(v.value.i8);
    case AMQP_FIELD_KIND_U8:
      return std::to_string(v.value.u8);
    case AMQP_FIELD_KIND_I16:
      return std::to_string(v.value.i16);
    case AMQP_FIELD_KIND_U16:
      return std::to_string(v.value.u16);
    case AMQP_FIELD_KIND_I32:
      return std::to_string(v.value.i32);
    case AMQP_FIELD_KIND_U32:
      return std::to_string(v.value.u32);
    case AMQP_FIELD_KIND_I64:
      return std::to_string(v.value.i64);
    case AMQP_FIELD_KIND_U64:
    case AMQP_FIELD_KIND_TIMESTAMP:
      return std::to_string(v.value.u64);
    case AMQP_FIELD_KIND_F32:
      std::snprintf(buf, sizeof buf, "%.9g", static_cast<double>(v.value.f32));
      return buf;
    case AMQP_FIELD_KIND_F64:
      std::snprintf(buf, sizeof buf, "%.17g", v.value.f64);
      return buf;
    case AMQP_FIELD_KIND_DECIMAL: {
      // value * 10^-decimals, written with a decimal point.
      std::string digits = std::to_string(v.value.decimal.value);
      const std::size_t d = v.value.decimal.decimals;
      if (d == 0) return digits;
      if (digits.size() <= d) digits.insert(0, d + 1 - digits.size(), '0');
      digits.insert(digits.size() - d, 1, '.');
      return digits;
    }
    case AMQP_FIELD_KIND_VOID:
      return "";
    case AMQP_FIELD_KIND_ARRAY: {
      std::string out = "[";
      for (int i = 0; i < v.value.array.num_entries; ++i) {
        if (i != 0) out += ',';
        append_nested(out, v.value.array.entries[i]);
      }
      return out + "]";
    }
    case AMQP_FIELD_KIND_TABLE: {
      std::string out = "{";
      for (int i = 0; i < v.value.table.num_entries; ++i) {
        if (i != 0) out += ',';
        append_json_string(out, view_of(v.value.table.entries[i].key));
        out += ':';
        append_nested(out, v.value.table.entries[i].value);
      }
      return out + "}";
    }
    default:
      return "";
  }
}

void from_amqp(const amqp_basic_properties_t& p, std::uint32_t max_priority, InMessage& out) {
  out = InMessage{};
  const amqp_flags_t f = p._flags;
  std::string_view message_id;
  if (f & AMQP_BASIC_MESSAGE_ID_FLAG) message_id = view_of(p.message_id);
  out.id = id_from_message_id(message_id, out.id_hashed);
  if (f & AMQP_BASIC_PRIORITY_FLAG)
    out.priority = std::min<std::uint32_t>(p.priority, max_priority);
  if (f & AMQP_BASIC_CONTENT_TYPE_FLAG) out.props.content_type = view_of(p.content_type);
  if (f & AMQP_BASIC_CORRELATION_ID_FLAG) out.props.correlation_id = view_of(p.correlation_id);
  if (f & AMQP_BASIC_REPLY_TO_FLAG) out.props.reply_to = view_of(p.reply_to);
  bool has_timestamp = false;
  if (f & AMQP_BASIC_TIMESTAMP_FLAG) {
    has_timestamp = true;
    out.timestamp_ns = p.timestamp <= std::numeric_limits<std::uint64_t>::max() / 1'000'000'000u
                           ? p.timestamp * 1'000'000'000u
                           : 0;
  }
  if (f & AMQP_BASIC_HEADERS_FLAG) {
    for (int i = 0; i < p.headers.num_entries; ++i) {
      const amqp_table_entry_t& e = p.headers.entries[i];
      const std::string_view key = view_of(e.key);
      if (key == kMessageIdHeader) continue;  // ours, set again below if needed
      std::string text = field_text(e.value);
      if (key == kTimestampNsHeader) {
        // The nanoseconds shmq-bridge out kept: used if they agree with the AMQP timestamp
        // (a publisher in between may have changed it).
        const auto ns = parse_u64(text);
        if (ns && (!has_timestamp || *ns / 1'000'000'000u == p.timestamp)) {
          out.timestamp_ns = *ns;
          continue;
        }
      }
      if (key.empty() || key.size() > shmq::kMaxPropertyString ||
          text.size() > shmq::kMaxPropertyString) {
        ++out.headers_dropped;
        continue;
      }
      out.props.headers.emplace_back(std::string(key), std::move(text));
    }
  }
  // First, so that the size limit below drops application headers before this one.
  if (out.id_hashed)
    out.props.headers.emplace(out.props.headers.begin(), std::string(kMessageIdHeader),
                              std::string(message_id));
  // The block's limit (kMaxPropertiesSize): headers that do not fit are dropped from the end
  // (counted), never the message.
  while (!out.props.headers.empty() && !shmq::encoded_properties_size(out.props)) {
    out.props.headers.pop_back();
    ++out.headers_dropped;
  }
  out.has_properties = out.timestamp_ns != 0 || !out.props.content_type.empty() ||
                       !out.props.correlation_id.empty() || !out.props.reply_to.empty() ||
                       !out.props.headers.empty();
}

}  // namespace shmq_bridge
