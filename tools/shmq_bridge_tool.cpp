// shmq_bridge_tool: the bridge test's and benchmark's helper (never installed). Each mode
// does one thing and says what it found on stdout; exit 0 = as expected, 1 = not.
//
//   mkq NAME SLOTS SLOT_SIZE DEDUP PRIO     create a shmq queue (DEDUP 0: no window; PRIO:
//                                           max_priority; max_deliveries unlimited)
//   mkq-sync NAME DATA_DIR                  create a durability-sync queue (shmqd persists it)
//   fill NAME N SIZE                        send N messages, ids 1..N, payload "<id>:" padded
//   drain NAME N IDLE_MS                    receive until N distinct ids and IDLE_MS of quiet;
//                                           print total/distinct/missing/duplicates; 1 if any
//                                           id is missing or a payload does not match its id
//   depth NAME                              print ready + in flight + delayed
//   refused NAME                            print the sends its dedup window refused
//   wait-depth NAME DEPTH TIMEOUT_S         wait until ready + in flight + delayed == DEPTH
//                                           (polled in-process every 5 ms: no process spawned
//                                           per poll to steal the broker's CPU); print the
//                                           seconds waited; 1 on timeout
//   amqp-setup URL EXCHANGE QUEUE KEY       declare a durable direct exchange and a durable
//                                           queue, bind them, purge the queue
//   amqp-depth URL QUEUE                    print the messages ready in QUEUE
//   amqp-publish URL EXCHANGE KEY N SIZE WINDOW
//                                           publish N persistent messages (message_id 1..N)
//                                           with confirms, WINDOW unconfirmed at most; print
//                                           the rate (the benchmark's baseline)
//   props-send NAME                         send the property-test message into shmq
//   props-amqp URL QUEUE                    basic.get it from RabbitMQ, check the mapping,
//                                           requeue it; then publish a message with typed
//                                           headers and a text message_id to QUEUE
//   props-check NAME                        receive both from shmq and check every field
#include <amqp.h>
#include <amqp_framing.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "shmq/shmq.hpp"
#include "shmq_bridge_amqp.hpp"

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
namespace sb = shmq_bridge;

int failures = 0;
void expect(bool ok, const std::string& what) {
  if (!ok) {
    std::printf("MISMATCH: %s\n", what.c_str());
    ++failures;
  }
}
template <typename A, typename B>
void expect_eq(const A& got, const B& want, const std::string& what) {
  if (!(got == want)) {
    std::printf("MISMATCH: %s\n", what.c_str());
    ++failures;
  }
}

std::uint64_t num(const char* s) { return std::strtoull(s, nullptr, 10); }

[[noreturn]] void die(const std::string& m) {
  std::fprintf(stderr, "shmq_bridge_tool: %s\n", m.c_str());
  std::exit(1);
}

shmq::Queue open_queue(const char* name) {
  auto q = shmq::Queue::open(name);
  if (!q) die(q.error().message());
  return q.value();
}

std::string payload(std::uint64_t id, std::size_t size) {
  std::string p = std::to_string(id) + ":";
  p.resize(std::max(size, p.size()), 'x');
  return p;
}

void connect(sb::Connection& c, const char* url_text) {
  std::string error;
  const auto url = sb::parse_url(url_text, error);
  if (!url) die(error);
  if (!c.open(*url, 10s, 0)) die(c.error());
}

// The property test's message, as shmq sends it.
const shmq::Properties& test_properties() {
  static const shmq::Properties p = [] {
    shmq::Properties x;
    x.content_type = "application/json";
    x.correlation_id = "corr-42";
    x.reply_to = "replies.q";
    x.headers = {{"tenant", "acme"}, {"trace", "t-1"}, {"tenant", "second"}};
    return x;
  }();
  return p;
}
constexpr std::uint64_t kPropsId = 4711;
constexpr std::uint32_t kPropsPriority = 3;
constexpr char kPropsBody[] = "{\"order\":4711}";
constexpr char kTypedMessageId[] = "order-abc";

int mkq(char** a) {
  shmq::QueueOptions o;
  o.slot_count = static_cast<std::uint32_t>(num(a[1]));
  o.slot_size = static_cast<std::uint32_t>(num(a[2]));
  o.dedup_window.count = static_cast<std::uint32_t>(num(a[3]));
  o.max_priority = static_cast<std::uint32_t>(num(a[4]));
  o.lease = 60s;
  // The bridge gives a message back on every connection loss: each counts as a delivery.
  o.max_deliveries = 0;
  auto q = shmq::Queue::create(a[0], o);
  if (!q) die(q.error().message());
  return 0;
}

int mkq_sync(char** a) {
  shmq::QueueOptions o;
  o.slot_count = 1024;
  o.slot_size = 256;
  o.durability = shmq::Durability::sync;
  o.data_dir = a[1];
  o.max_deliveries = 0;
  auto q = shmq::Queue::create(a[0], o);
  if (!q) die(q.error().message());
  return 0;
}

int fill(char** a) {
  auto q = open_queue(a[0]);
  auto p = q.producer().value();
  const std::uint64_t n = num(a[1]);
  const std::size_t size = num(a[2]);
  for (std::uint64_t i = 1; i <= n; ++i) {
    const std::string body = payload(i, size);
    const shmq::Status s = p.send(body, shmq::SendOptions{.id = i});
    if (s != shmq::Status::ok)
      die("send " + std::to_string(i) + ": " + std::string(shmq::to_string(s)));
  }
  std::printf("filled %llu\n", static_cast<unsigned long long>(n));
  return 0;
}

int drain(char** a) {
  auto q = open_queue(a[0]);
  auto c = q.consumer().value();
  const std::uint64_t n = num(a[1]);
  const auto idle = std::chrono::milliseconds(num(a[2]));
  std::vector<std::uint32_t> seen(n + 1, 0);
  std::uint64_t total = 0, distinct = 0, bad = 0, foreign = 0;
  auto last = Clock::now();
  const auto deadline = Clock::now() + 120s;
  shmq::Message m;
  while (Clock::now() < deadline) {
    const shmq::Status s = c.receive_for(m, 50ms);
    if (s != shmq::Status::ok) {
      if (distinct == n && Clock::now() - last >= idle) break;
      continue;
    }
    last = Clock::now();
    ++total;
    const std::uint64_t id = m.id();
    if (id == 0 || id > n) {
      ++foreign;
    } else {
      if (seen[id]++ == 0) ++distinct;
      if (m.view() != payload(id, m.size())) ++bad;
    }
    (void)c.ack(m);
  }
  const std::uint64_t missing = n - distinct;
  std::printf(
      "total=%llu distinct=%llu missing=%llu duplicates=%llu bad_payload=%llu foreign=%llu\n",
      static_cast<unsigned long long>(total), static_cast<unsigned long long>(distinct),
      static_cast<unsigned long long>(missing),
      static_cast<unsigned long long>(total - distinct - foreign),
      static_cast<unsigned long long>(bad), static_cast<unsigned long long>(foreign));
  return missing == 0 && bad == 0 && foreign == 0 ? 0 : 1;
}

int depth(char** a) {
  const shmq::QueueStats s = open_queue(a[0]).stats();
  std::printf("%llu\n", static_cast<unsigned long long>(s.ready + s.in_flight + s.delayed));
  return 0;
}

int wait_depth(char** a) {
  auto q = open_queue(a[0]);
  const std::uint64_t want = num(a[1]);
  const auto t0 = Clock::now();
  const auto deadline = t0 + std::chrono::seconds(num(a[2]));
  for (;;) {
    const shmq::QueueStats s = q.stats();
    if (s.ready + s.in_flight + s.delayed == want) break;
    if (Clock::now() >= deadline) {
      std::printf("timeout\n");
      return 1;
    }
    std::this_thread::sleep_for(5ms);  // the poll interval: the timing's resolution
  }
  std::printf("%.3f\n", std::chrono::duration<double>(Clock::now() - t0).count());
  return 0;
}

int refused(char** a) {
  std::printf("%llu\n", static_cast<unsigned long long>(open_queue(a[0]).stats().dedup_duplicates));
  return 0;
}

int amqp_setup(char** a) {
  sb::Connection c;
  connect(c, a[0]);
  if (!c.declare_exchange(a[1], "direct") || !c.declare_queue(a[2], false) ||
      !c.bind(a[2], a[1], a[3]))
    die(c.error());
  amqp_queue_purge(c.get(), 1, sb::bytes_of(a[2]));
  if (!c.rpc_ok("purge")) die(c.error());
  return 0;
}

int amqp_depth(char** a) {
  sb::Connection c;
  connect(c, a[0]);
  const auto d = c.queue_depth(a[1]);
  if (!d) die(c.error());
  std::printf("%u\n", *d);
  return 0;
}

// A plain librabbitmq publisher with confirms: the benchmark's baseline, and the source of
// the in direction's messages.
int amqp_publish(char** a) {
  sb::Connection c;
  connect(c, a[0]);
  amqp_confirm_select(c.get(), 1);
  if (!c.rpc_ok("confirm.select")) die(c.error());
  const std::string exchange = a[1], key = a[2];
  const std::uint64_t n = num(a[3]);
  const std::size_t size = num(a[4]);
  const std::uint64_t window = num(a[5]);
  std::uint64_t published = 0, confirmed = 0;
  const auto t0 = Clock::now();
  while (confirmed < n) {
    while (published < n && published - confirmed < window) {
      ++published;
      const std::string id = std::to_string(published);
      const std::string body = payload(published, size);
      amqp_basic_properties_t p{};
      p._flags = AMQP_BASIC_MESSAGE_ID_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG;
      p.delivery_mode = 2;
      p.message_id = sb::bytes_of(id);
      const int st = amqp_basic_publish(c.get(), 1, sb::bytes_of(exchange), sb::bytes_of(key), 0, 0,
                                        &p, sb::bytes_of(body));
      if (st != AMQP_STATUS_OK) die("publish: " + sb::status_text(st));
    }
    amqp_frame_t f;
    timeval tv{10, 0};
    const int st = amqp_simple_wait_frame_noblock(c.get(), &f, &tv);
    if (st != AMQP_STATUS_OK) die("wait for confirms: " + sb::status_text(st));
    if (f.frame_type != AMQP_FRAME_METHOD) continue;
    if (f.payload.method.id == AMQP_BASIC_NACK_METHOD) die("broker nacked a publish");
    if (f.payload.method.id != AMQP_BASIC_ACK_METHOD) continue;
    const auto* ack = static_cast<const amqp_basic_ack_t*>(f.payload.method.decoded);
    // Tags are 1..n in publish order: a multiple ack confirms everything up to its tag.
    confirmed = ack->multiple ? ack->delivery_tag : std::max(confirmed, ack->delivery_tag);
  }
  const double s = std::chrono::duration<double>(Clock::now() - t0).count();
  std::printf("published %llu in %.3f s: %.0f msg/s\n", static_cast<unsigned long long>(n), s,
              static_cast<double>(n) / s);
  return 0;
}

int props_send(char** a) {
  auto q = open_queue(a[0]);
  auto p = q.producer().value();
  const shmq::Status s = p.send(kPropsBody, shmq::SendOptions{.id = kPropsId,
                                                              .priority = kPropsPriority,
                                                              .properties = &test_properties()});
  if (s != shmq::Status::ok) die("send: " + std::string(shmq::to_string(s)));
  return 0;
}

int props_amqp(char** a) {
  sb::Connection c;
  connect(c, a[0]);
  const std::string queue = a[1];
  // What shmq-bridge out published, seen from RabbitMQ.
  const amqp_rpc_reply_t r = amqp_basic_get(c.get(), 1, sb::bytes_of(queue), 0);
  if (r.reply_type != AMQP_RESPONSE_NORMAL) die("basic.get: " + sb::reply_text(r));
  if (r.reply.id != AMQP_BASIC_GET_OK_METHOD) die("basic.get: queue '" + queue + "' is empty");
  const auto* ok = static_cast<const amqp_basic_get_ok_t*>(r.reply.decoded);
  const std::uint64_t tag = ok->delivery_tag;
  amqp_message_t msg;
  const amqp_rpc_reply_t rm = amqp_read_message(c.get(), 1, &msg, 0);
  if (rm.reply_type != AMQP_RESPONSE_NORMAL) die("read message: " + sb::reply_text(rm));
  const amqp_basic_properties_t& p = msg.properties;
  const auto f = p._flags;
  expect_eq(sb::view_of(msg.body), std::string_view(kPropsBody), "amqp body");
  expect((f & AMQP_BASIC_MESSAGE_ID_FLAG) && sb::view_of(p.message_id) == std::to_string(kPropsId),
         "amqp message_id");
  expect((f & AMQP_BASIC_CONTENT_TYPE_FLAG) && sb::view_of(p.content_type) == "application/json",
         "amqp content_type");
  expect((f & AMQP_BASIC_CORRELATION_ID_FLAG) && sb::view_of(p.correlation_id) == "corr-42",
         "amqp correlation_id");
  expect((f & AMQP_BASIC_REPLY_TO_FLAG) && sb::view_of(p.reply_to) == "replies.q", "amqp reply_to");
  expect((f & AMQP_BASIC_PRIORITY_FLAG) && p.priority == kPropsPriority, "amqp priority");
  expect((f & AMQP_BASIC_DELIVERY_MODE_FLAG) && p.delivery_mode == 2, "amqp delivery_mode");
  const auto now_s = static_cast<std::uint64_t>(std::time(nullptr));
  expect((f & AMQP_BASIC_TIMESTAMP_FLAG) && p.timestamp <= now_s && p.timestamp + 600 >= now_s,
         "amqp timestamp (seconds, within the last 10 min)");
  std::vector<std::pair<std::string, std::string>> headers;
  for (int i = 0; i < p.headers.num_entries; ++i)
    headers.emplace_back(sb::view_of(p.headers.entries[i].key),
                         sb::field_text(p.headers.entries[i].value));
  expect(headers.size() == 4 &&
             headers[0] == std::pair<std::string, std::string>{"tenant", "acme"} &&
             headers[1] == std::pair<std::string, std::string>{"trace", "t-1"} &&
             headers[2] == std::pair<std::string, std::string>{"tenant", "second"} &&
             headers[3].first == sb::kTimestampNsHeader &&
             num(headers[3].second.c_str()) / 1'000'000'000u == p.timestamp,
         "amqp headers (3 in order, then shmq-timestamp-ns agreeing with the timestamp)");
  amqp_destroy_message(&msg);
  // Back to the queue for shmq-bridge in.
  if (amqp_basic_nack(c.get(), 1, tag, 0, 1) != AMQP_STATUS_OK) die("nack");

  // A message from a plain AMQP publisher: text message_id, typed headers, a timestamp.
  amqp_table_entry_t e[6]{};
  e[0].key = amqp_cstring_bytes("n");
  e[0].value.kind = AMQP_FIELD_KIND_I32;
  e[0].value.value.i32 = -17;
  e[1].key = amqp_cstring_bytes("ok");
  e[1].value.kind = AMQP_FIELD_KIND_BOOLEAN;
  e[1].value.value.boolean = 1;
  e[2].key = amqp_cstring_bytes("price");
  e[2].value.kind = AMQP_FIELD_KIND_DECIMAL;
  e[2].value.value.decimal = amqp_decimal_t{2, 1999};
  amqp_table_entry_t inner[1]{};
  inner[0].key = amqp_cstring_bytes("k");
  inner[0].value.kind = AMQP_FIELD_KIND_UTF8;
  inner[0].value.value.bytes = amqp_cstring_bytes("v");
  e[3].key = amqp_cstring_bytes("t");
  e[3].value.kind = AMQP_FIELD_KIND_TABLE;
  e[3].value.value.table = amqp_table_t{1, inner};
  e[4].key = amqp_cstring_bytes("big");
  e[4].value.kind = AMQP_FIELD_KIND_I64;
  e[4].value.value.i64 = 1234567890123;
  const std::string long_value(300, 'z');  // over shmq's 255-byte limit: dropped, counted
  e[5].key = amqp_cstring_bytes("long");
  e[5].value.kind = AMQP_FIELD_KIND_UTF8;
  e[5].value.value.bytes = sb::bytes_of(long_value);
  amqp_basic_properties_t tp{};
  tp._flags = AMQP_BASIC_MESSAGE_ID_FLAG | AMQP_BASIC_HEADERS_FLAG | AMQP_BASIC_TIMESTAMP_FLAG |
              AMQP_BASIC_DELIVERY_MODE_FLAG;
  tp.message_id = amqp_cstring_bytes(kTypedMessageId);
  tp.headers = amqp_table_t{6, e};
  tp.timestamp = 1'700'000'000;
  tp.delivery_mode = 2;
  if (amqp_basic_publish(c.get(), 1, amqp_empty_bytes, sb::bytes_of(queue), 0, 0, &tp,
                         amqp_cstring_bytes("typed")) != AMQP_STATUS_OK)
    die("publish typed");
  if (failures != 0) return 1;
  std::printf("amqp side: every mapped field as expected\n");
  return 0;
}

int props_check(char** a) {
  auto q = open_queue(a[0]);
  auto c = q.consumer().value();
  int found = 0;
  shmq::Message m;
  const auto deadline = Clock::now() + 30s;
  while (found < 2 && Clock::now() < deadline) {
    if (c.receive_for(m, 100ms) != shmq::Status::ok) continue;
    const shmq::PropertiesView p = m.properties();
    std::vector<std::pair<std::string, std::string>> h;
    for (const auto& [k, v] : p.headers()) h.emplace_back(k, v);
    if (m.view() == kPropsBody) {
      ++found;
      // The round trip shmq -> RabbitMQ -> shmq: every field as sent, send time to the ns.
      expect_eq(m.id(), kPropsId, "round trip id");
      expect_eq(m.priority(), kPropsPriority, "round trip priority");
      expect_eq(p.content_type(), std::string_view("application/json"), "round trip content_type");
      expect_eq(p.correlation_id(), std::string_view("corr-42"), "round trip correlation_id");
      expect_eq(p.reply_to(), std::string_view("replies.q"), "round trip reply_to");
      expect(h == test_properties().headers, "round trip headers (order, repeated key)");
      const auto now_ns =
          static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                         std::chrono::system_clock::now().time_since_epoch())
                                         .count());
      expect(p.timestamp_ns() <= now_ns && p.timestamp_ns() + 600'000'000'000ull >= now_ns,
             "round trip timestamp (ns, the original send time)");
    } else if (m.view() == "typed") {
      ++found;
      bool hashed = false;
      expect_eq(m.id(), sb::id_from_message_id(kTypedMessageId, hashed), "typed: hashed id");
      expect(hashed && m.id() < (std::uint64_t{1} << 62), "typed: id below 2^62");
      expect_eq(p.timestamp_ns(), std::uint64_t{1'700'000'000} * 1'000'000'000u,
                "typed: timestamp");
      const std::vector<std::pair<std::string, std::string>> want = {
          {"shmq-message-id", "order-abc"},
          {"n", "-17"},
          {"ok", "true"},
          {"price", "19.99"},
          {"t", "{\"k\":\"v\"}"},
          {"big", "1234567890123"}};
      expect(h == want, "typed: headers as text, message_id kept, over-long header dropped");
      if (h != want)
        for (const auto& [k, v] : h) std::printf("  got header %s=%s\n", k.c_str(), v.c_str());
    } else {
      expect(false, "unexpected message '" + std::string(m.view()) + "'");
    }
    (void)c.ack(m);
  }
  expect_eq(found, 2, "both property-test messages arrived");
  if (failures != 0) return 1;
  std::printf("shmq side: every mapped field as expected (round trip and typed headers)\n");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::map<std::string, std::pair<int, int (*)(char**)>> modes = {
      {"mkq", {5, mkq}}, {"mkq-sync", {2, mkq_sync}},
      {"fill", {3, fill}},
      {"drain", {3, drain}},
      {"depth", {1, depth}},
      {"refused", {1, refused}},
      {"wait-depth", {3, wait_depth}},
      {"amqp-setup", {4, amqp_setup}},
      {"amqp-depth", {2, amqp_depth}},
      {"amqp-publish", {6, amqp_publish}},
      {"props-send", {1, props_send}},
      {"props-amqp", {2, props_amqp}},
      {"props-check", {1, props_check}}};
  if (argc < 2 || modes.count(argv[1]) == 0)
    die("usage: see the comment at the top of shmq_bridge_tool.cpp");
  const auto& [args, fn] = modes.at(argv[1]);
  if (argc - 2 != args)
    die(std::string(argv[1]) + ": expects " + std::to_string(args) + " arguments");
  return fn(argv + 2);
}
