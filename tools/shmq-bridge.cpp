// shmq-bridge: moves messages between a shmq queue and RabbitMQ, at-least-once each way.
//
//   out: shmq queue -> RabbitMQ exchange. Publishes in confirm mode with a window of
//        unconfirmed messages; a shmq message is acked only once the broker confirmed it
//        (basic.ack), nacked back (redelivered) on basic.nack, connection loss or stop.
//   in:  RabbitMQ queue -> shmq queue. Consumes with manual acks and a prefetch; a delivery
//        is acked only once the shmq send returned ok (on a sync queue: on disk) or
//        duplicate (the queue's dedup window already holds its id).
//
// One thread; both directions reconnect with capped exponential backoff. docs/bridge.md has
// the usage, the property mapping and the guarantees end to end.
#include <signal.h>
#include <time.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "persist/republish.hpp"
#include "platform/fd.hpp"
#include "shmq/shmq.hpp"
#include "shmq_bridge_amqp.hpp"

#ifndef SHMQ_VERSION
#error "SHMQ_VERSION must be defined by the build"
#endif

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using shmq::Status;
namespace sb = shmq_bridge;

constexpr int kExitOk = 0;
constexpr int kExitRuntime = 1;
constexpr int kExitUsage = 2;

std::atomic<bool> g_stop{false};
std::atomic<shmq::Consumer*> g_consumer{nullptr};
std::atomic<shmq::Producer*> g_producer{nullptr};

// Signal-safe: a store and interrupt() (documented signal-safe) of the blocking shmq call.
void on_stop_signal(int) {
  g_stop.store(true);
  if (auto* c = g_consumer.load()) c->interrupt();
  if (auto* p = g_producer.load()) p->interrupt();
}

void install_stop_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  // SA_RESETHAND: a second signal ends the process the default way, wherever it is stuck.
  sa.sa_flags = SA_RESETHAND;
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
  ::signal(SIGPIPE, SIG_IGN);  // a broker gone mid-write is an error return, not a death
}

void logf(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void logf(const char* fmt, ...) {
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  tm t{};
  ::gmtime_r(&ts.tv_sec, &t);
  char line[1024];
  const int n = std::snprintf(line, sizeof line, "%02d:%02d:%02d.%03ld shmq-bridge: ", t.tm_hour,
                              t.tm_min, t.tm_sec, ts.tv_nsec / 1'000'000);
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(line + n, sizeof line - static_cast<std::size_t>(n), fmt, ap);
  va_end(ap);
  std::fprintf(stderr, "%s\n", line);
}

struct Options {
  std::string direction;
  std::string queue;
  std::string url_text;
  sb::AmqpUrl url;
  std::string stats_file;
  std::string metrics_file;
  int heartbeat_s = 30;
  std::uint32_t connect_timeout_ms = 5000;
  std::uint32_t backoff_min_ms = 50;
  std::uint32_t backoff_max_ms = 5000;
  bool declare = false;
  // out
  std::string exchange;
  std::string exchange_type = "direct";
  std::string routing_key;
  std::uint32_t window = 256;
  bool transient = false;
  std::uint32_t drain_ms = 5000;
  // in
  std::string amqp_queue;
  std::uint32_t prefetch = 256;
  bool quorum = false;
  std::string bind_exchange;
  std::string bind_key;
};

// What the bridge did; written as JSON (--stats-file) and Prometheus text (--metrics-file).
struct Counters {
  std::uint64_t forwarded = 0;        // out: published; in: sent into shmq (ok or duplicate)
  std::uint64_t confirmed = 0;        // out: confirmed by the broker and acked in shmq; in: acked
  std::uint64_t nacked = 0;           // out: basic.nack from the broker; in: deliveries nacked back
  std::uint64_t released = 0;         // out: unconfirmed messages given back to shmq (conn. lost)
  std::uint64_t redelivered = 0;      // messages that arrived marked redelivered
  std::uint64_t reconnects = 0;       // connections made after the first
  std::uint64_t duplicates = 0;       // in: sends the queue's dedup window refused
  std::uint64_t rejected = 0;         // in: deliveries shmq can never take (too large, invalid)
  std::uint64_t lease_lost = 0;       // out: confirmed after the shmq lease ran out (a duplicate)
  std::uint64_t headers_dropped = 0;  // in: headers over shmq's property limits
  std::uint64_t lag = 0;              // out: shmq queue depth; in: deliveries not yet acked
  std::uint64_t in_flight = 0;        // out: published, not confirmed
  bool connected = false;
  std::string last_error;
};

class StatsWriter {
 public:
  explicit StatsWriter(const Options& o) : o_(o) {}
  // At most once a second unless `force` (the final write at exit): bounded output.
  void maybe_write(const Counters& c, bool force = false) {
    if (o_.stats_file.empty() && o_.metrics_file.empty()) return;
    const auto now = Clock::now();
    if (!force && now - last_ < 1s) return;
    last_ = now;
    if (!o_.stats_file.empty()) {
      nlohmann::json j = {{"direction", o_.direction},
                          {"queue", o_.queue},
                          {"connected", c.connected},
                          {"forwarded", c.forwarded},
                          {"confirmed", c.confirmed},
                          {"nacked", c.nacked},
                          {"released", c.released},
                          {"redelivered", c.redelivered},
                          {"reconnects", c.reconnects},
                          {"duplicates", c.duplicates},
                          {"rejected", c.rejected},
                          {"lease_lost", c.lease_lost},
                          {"headers_dropped", c.headers_dropped},
                          {"lag", c.lag},
                          {"in_flight", c.in_flight},
                          {"last_error", c.last_error}};
      write_atomically(o_.stats_file, j.dump() + "\n");
    }
    if (!o_.metrics_file.empty()) {
      std::string out;
      const std::string labels = "{direction=\"" + o_.direction + "\",queue=\"" + o_.queue + "\"}";
      auto metric = [&](const char* name, const char* type, const char* help, auto value) {
        out += std::string("# HELP shmq_bridge_") + name + " " + help + "\n# TYPE shmq_bridge_" +
               name + " " + type + "\nshmq_bridge_" + name + labels + " " + std::to_string(value) +
               "\n";
      };
      metric("connected", "gauge", "1 while connected to the broker.", c.connected ? 1 : 0);
      metric("forwarded_total", "counter", "Messages published (out) or sent into shmq (in).",
             c.forwarded);
      metric("confirmed_total", "counter", "Messages confirmed by the other side and acked.",
             c.confirmed);
      metric("nacked_total", "counter", "Messages nacked by the broker (out) or back to it (in).",
             c.nacked);
      metric("released_total", "counter",
             "Unconfirmed messages given back on connection loss or stop.", c.released);
      metric("redelivered_total", "counter", "Messages received marked redelivered.",
             c.redelivered);
      metric("reconnects_total", "counter", "Connections made after the first.", c.reconnects);
      metric("duplicates_total", "counter", "Sends refused by the queue's dedup window (in).",
             c.duplicates);
      metric("rejected_total", "counter",
             "Deliveries shmq cannot take, rejected to the broker (in).", c.rejected);
      metric("lag", "gauge",
             "Out: messages waiting in the shmq queue. In: deliveries not yet acked.", c.lag);
      metric("in_flight", "gauge", "Out: messages published and not yet confirmed.", c.in_flight);
      write_atomically(o_.metrics_file, out);
    }
  }

 private:
  static void write_atomically(const std::string& path, const std::string& text) {
    const std::string tmp = path + ".tmp";
    std::FILE* f = std::fopen(tmp.c_str(), "we");
    if (f == nullptr) return;
    const bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size();
    if (std::fclose(f) == 0 && ok) std::rename(tmp.c_str(), path.c_str());
  }
  const Options& o_;
  Clock::time_point last_ = Clock::now() - 2s;
};

// Capped exponential backoff between connection attempts; the wait ends early on stop.
class Backoff {
 public:
  Backoff(std::uint32_t min_ms, std::uint32_t max_ms) : min_(min_ms), max_(max_ms), next_(min_ms) {}
  void reset() { next_ = min_; }
  void wait() {
    const auto until = Clock::now() + std::chrono::milliseconds(next_);
    // Sliced so that SIGTERM is honoured within 10 ms; this is a timer, not synchronisation.
    while (!g_stop.load() && Clock::now() < until) std::this_thread::sleep_for(10ms);
    next_ = std::min(max_, next_ * 2);
  }

 private:
  std::uint32_t min_, max_, next_;
};

// Connects (once), with the counters and the log kept right; false on failure.
bool connect(sb::Connection& conn, const Options& o, Counters& c, bool& ever_connected) {
  if (!conn.open(o.url, std::chrono::milliseconds(o.connect_timeout_ms), o.heartbeat_s)) {
    c.last_error = conn.error();
    logf("%s (retrying)", conn.error().c_str());
    return false;
  }
  if (ever_connected) ++c.reconnects;
  ever_connected = true;
  logf("connected to %s:%d vhost '%s'", o.url.host.c_str(), o.url.port, o.url.vhost.c_str());
  return true;
}

void fail_connection(sb::Connection& conn, Counters& c, const std::string& why) {
  c.last_error = why;
  c.connected = false;
  logf("connection lost: %s", why.c_str());
  conn.drop();
}

// ---- out: shmq -> RabbitMQ ------------------------------------------------------------------

class OutBridge {
 public:
  OutBridge(const Options& o, shmq::Queue& q, shmq::Consumer& consumer)
      : o_(o),
        q_(q),
        consumer_(consumer),
        stats_(o),
        backoff_(o.backoff_min_ms, o.backoff_max_ms) {}

  int run() {
    auto last_lag = Clock::now() - 2s;
    while (!g_stop.load()) {
      if (!conn_.is_open() && !setup()) {
        stats_.maybe_write(c_);
        backoff_.wait();
        continue;
      }
      const bool got = fill_window();
      if (conn_.is_open()) {
        // Wait for confirms only when there is nothing better to do: the window is full,
        // or the queue had nothing for us.
        const auto wait =
            pending_.size() >= o_.window ? 200ms : (got ? 0ms : (pending_.empty() ? 0ms : 5ms));
        read_frames(wait);
      }
      if (Clock::now() - last_lag >= 1s) {
        last_lag = Clock::now();
        const shmq::QueueStats s = q_.stats();
        c_.lag = s.ready + s.delayed;
      }
      c_.in_flight = pending_.size();
      stats_.maybe_write(c_);
    }
    drain();
    c_.in_flight = pending_.size();
    const shmq::QueueStats s = q_.stats();
    c_.lag = s.ready + s.delayed;
    stats_.maybe_write(c_, true);
    logf("stopped: forwarded %llu, confirmed %llu, released %llu",
         static_cast<unsigned long long>(c_.forwarded),
         static_cast<unsigned long long>(c_.confirmed),
         static_cast<unsigned long long>(c_.released));
    return kExitOk;
  }

 private:
  bool setup() {
    if (!connect(conn_, o_, c_, ever_connected_)) return false;
    if (o_.declare && !conn_.declare_exchange(o_.exchange, o_.exchange_type)) {
      fail_connection(conn_, c_, conn_.error());
      return false;
    }
    // A missing exchange would close the channel at the first publish, after messages were
    // taken from shmq: each such round would raise their delivery counts. Check first
    // (passive declare; the default exchange "" always exists).
    if (!o_.declare && !o_.exchange.empty()) {
      amqp_exchange_declare(conn_.get(), 1, sb::bytes_of(o_.exchange), sb::bytes_of("direct"), 1, 0,
                            0, 0, amqp_empty_table);
      if (!conn_.rpc_ok("exchange '" + o_.exchange + "'")) {
        fail_connection(conn_, c_, conn_.error());
        return false;
      }
    }
    amqp_confirm_select(conn_.get(), 1);
    if (!conn_.rpc_ok("confirm.select")) {
      fail_connection(conn_, c_, conn_.error());
      return false;
    }
    next_tag_ = 1;  // delivery tags count from 1 on every new channel
    c_.connected = true;
    // The backoff is reset by the first confirm, not by the connect: a broker that accepts
    // connections and then fails every publish is retried at the capped pace.
    confirmed_since_connect_ = false;
    return true;
  }

  // Receives and publishes until the window is full or the queue has nothing ready.
  bool fill_window() {
    bool got = false;
    while (pending_.size() < o_.window && !g_stop.load() && conn_.is_open()) {
      shmq::Message m;
      // Block (briefly) only when nothing is in flight: otherwise confirms are waiting.
      const Status s =
          pending_.empty() ? consumer_.receive_for(m, 100ms) : consumer_.try_receive(m);
      if (s != Status::ok) {
        if (s == Status::closed) {
          logf("queue '%s' was removed: stopping", o_.queue.c_str());
          g_stop.store(true);
        }
        break;
      }
      got = true;
      if (m.redelivered()) ++c_.redelivered;
      sb::to_amqp(m, !o_.transient, props_);
      const amqp_bytes_t body{m.size(), const_cast<std::byte*>(m.data().data())};
      const int st = amqp_basic_publish(conn_.get(), 1, sb::bytes_of(o_.exchange),
                                        sb::bytes_of(o_.routing_key), 0, 0, &props_.props, body);
      if (st != AMQP_STATUS_OK) {
        (void)consumer_.nack(m);  // not published: straight back
        ++c_.released;
        release_pending();
        fail_connection(conn_, c_, "publish: " + sb::status_text(st));
        break;
      }
      ++c_.forwarded;
      pending_.emplace(next_tag_++, std::move(m));
    }
    return got;
  }

  // Handles what the broker sent: confirms, nacks, closes. Waits up to `first_wait` for the
  // first frame, then takes whatever else is already there.
  void read_frames(std::chrono::milliseconds first_wait) {
    // Frames are decoded into the connection's pools; nothing from earlier calls is still
    // referenced here, so let librabbitmq reuse them (else they grow with every confirm).
    if (conn_.is_open()) amqp_maybe_release_buffers(conn_.get());
    auto wait = first_wait;
    while (conn_.is_open()) {
      amqp_frame_t frame;
      timeval tv{static_cast<time_t>(wait.count() / 1000),
                 static_cast<suseconds_t>((wait.count() % 1000) * 1000)};
      const int st = amqp_simple_wait_frame_noblock(conn_.get(), &frame, &tv);
      if (st == AMQP_STATUS_TIMEOUT) return;
      if (st != AMQP_STATUS_OK) {
        release_pending();
        fail_connection(conn_, c_, sb::status_text(st));
        return;
      }
      wait = 0ms;
      if (frame.frame_type != AMQP_FRAME_METHOD) continue;  // a returned message's content
      switch (frame.payload.method.id) {
        case AMQP_BASIC_ACK_METHOD: {
          const auto* a = static_cast<const amqp_basic_ack_t*>(frame.payload.method.decoded);
          settle(a->delivery_tag, a->multiple != 0, true);
          break;
        }
        case AMQP_BASIC_NACK_METHOD: {
          const auto* n = static_cast<const amqp_basic_nack_t*>(frame.payload.method.decoded);
          settle(n->delivery_tag, n->multiple != 0, false);
          break;
        }
        case AMQP_CHANNEL_CLOSE_METHOD: {
          const auto* cl = static_cast<const amqp_channel_close_t*>(frame.payload.method.decoded);
          release_pending();
          fail_connection(conn_, c_,
                          "channel closed by the broker: " + std::to_string(cl->reply_code) + " " +
                              std::string(sb::view_of(cl->reply_text)));
          return;
        }
        case AMQP_CONNECTION_CLOSE_METHOD: {
          const auto* cl =
              static_cast<const amqp_connection_close_t*>(frame.payload.method.decoded);
          release_pending();
          fail_connection(conn_, c_,
                          "connection closed by the broker: " + std::to_string(cl->reply_code) +
                              " " + std::string(sb::view_of(cl->reply_text)));
          return;
        }
        case AMQP_CONNECTION_BLOCKED_METHOD:
          logf("broker blocked publishing (resource alarm); waiting");
          break;
        case AMQP_CONNECTION_UNBLOCKED_METHOD:
          logf("broker unblocked publishing");
          break;
        default:
          break;
      }
    }
  }

  // A confirm (ok) or nack for `tag`, or for every tag up to it (`multiple`).
  void settle(std::uint64_t tag, bool multiple, bool ok) {
    if (ok && !confirmed_since_connect_) {
      confirmed_since_connect_ = true;
      backoff_.reset();
    }
    auto one = [&](shmq::Message& m) {
      if (ok) {
        const Status s = consumer_.ack(m);
        if (s == Status::ok) {
          ++c_.confirmed;
        } else {
          // Its lease ran out while the broker took its time: shmq redelivers it, and it is
          // published again (a duplicate, never a loss).
          ++c_.lease_lost;
        }
      } else {
        (void)consumer_.nack(m);
        ++c_.nacked;
      }
    };
    if (multiple) {
      auto it = pending_.begin();
      while (it != pending_.end() && it->first <= tag) {
        one(it->second);
        it = pending_.erase(it);
      }
    } else if (auto it = pending_.find(tag); it != pending_.end()) {
      one(it->second);
      pending_.erase(it);
    }
  }

  // The connection is gone: nothing unconfirmed can be confirmed any more (a new channel
  // has new tags). Back to shmq, delivered again, published again: at-least-once.
  void release_pending() {
    for (auto& [tag, m] : pending_) {
      (void)consumer_.nack(m);
      ++c_.released;
    }
    pending_.clear();
  }

  // Stop: publish nothing more, wait (bounded) for the confirms of what is in flight, give
  // back the rest.
  void drain() {
    const auto until = Clock::now() + std::chrono::milliseconds(o_.drain_ms);
    while (conn_.is_open() && !pending_.empty() && Clock::now() < until) read_frames(50ms);
    release_pending();
    c_.connected = false;
    conn_.close();
  }

  const Options& o_;
  shmq::Queue& q_;
  shmq::Consumer& consumer_;
  sb::Connection conn_;
  Counters c_;
  StatsWriter stats_;
  Backoff backoff_;
  bool ever_connected_ = false;
  bool confirmed_since_connect_ = false;
  std::uint64_t next_tag_ = 1;
  std::map<std::uint64_t, shmq::Message> pending_;  // delivery tag -> unconfirmed message
  sb::OutProperties props_;
};

// ---- in: RabbitMQ -> shmq -------------------------------------------------------------------

class InBridge {
 public:
  InBridge(const Options& o, shmq::Queue& q, shmq::Producer& producer)
      : o_(o),
        producer_(producer),
        max_priority_(q.options().max_priority),
        stats_(o),
        backoff_(o.backoff_min_ms, o.backoff_max_ms) {}

  int run() {
    int rc = kExitOk;
    while (!g_stop.load()) {
      if (!conn_.is_open() && !setup()) {
        stats_.maybe_write(c_);
        backoff_.wait();
        continue;
      }
      amqp_maybe_release_buffers(conn_.get());
      amqp_envelope_t env;
      // Short when acks are owed: they go out as soon as the deliveries stop coming.
      timeval tv{0, unacked_ != 0 ? 0 : 100'000};
      const amqp_rpc_reply_t r = amqp_consume_message(conn_.get(), &env, &tv, 0);
      if (r.reply_type == AMQP_RESPONSE_NORMAL) {
        const bool keep_going = deliver(env);
        amqp_destroy_envelope(&env);
        if (!keep_going) {
          rc = kExitRuntime;
          break;
        }
      } else if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
                 r.library_error == AMQP_STATUS_TIMEOUT) {
        flush_acks();
      } else if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
                 r.library_error == AMQP_STATUS_UNEXPECTED_STATE) {
        other_frame();
      } else {
        lost(sb::reply_text(r));
      }
      c_.lag = unacked_;
      stats_.maybe_write(c_);
    }
    // Acks owed go out; deliveries not sent into shmq stay unacked and the broker requeues
    // them when the connection closes.
    if (conn_.is_open()) flush_acks();
    c_.connected = false;
    conn_.close();
    c_.lag = 0;
    stats_.maybe_write(c_, true);
    logf("stopped: forwarded %llu (%llu duplicates), acked %llu",
         static_cast<unsigned long long>(c_.forwarded),
         static_cast<unsigned long long>(c_.duplicates),
         static_cast<unsigned long long>(c_.confirmed));
    return rc;
  }

 private:
  bool setup() {
    if (!connect(conn_, o_, c_, ever_connected_)) return false;
    auto fail = [&] {
      fail_connection(conn_, c_, conn_.error());
      return false;
    };
    if (o_.declare) {
      if (!conn_.declare_queue(o_.amqp_queue, o_.quorum)) return fail();
      if (!o_.bind_exchange.empty() && !conn_.bind(o_.amqp_queue, o_.bind_exchange, o_.bind_key))
        return fail();
    }
    amqp_basic_qos(conn_.get(), 1, 0, static_cast<std::uint16_t>(o_.prefetch), 0);
    if (!conn_.rpc_ok("basic.qos")) return fail();
    amqp_basic_consume(conn_.get(), 1, sb::bytes_of(o_.amqp_queue), amqp_empty_bytes, 0, 0, 0,
                       amqp_empty_table);
    if (!conn_.rpc_ok("basic.consume from '" + o_.amqp_queue + "'")) return fail();
    unacked_ = 0;
    last_tag_ = 0;
    c_.connected = true;
    // Reset by the first delivery sent into shmq, not by the connect (see OutBridge::setup).
    sent_since_connect_ = false;
    return true;
  }

  // Sends one delivery into shmq and settles it. False: stop the bridge (queue removed).
  bool deliver(const amqp_envelope_t& env) {
    if (env.redelivered) ++c_.redelivered;
    sb::from_amqp(env.message.properties, max_priority_, in_);
    c_.headers_dropped += in_.headers_dropped;
    const shmq::SendOptions options{.id = in_.id,
                                    .priority = in_.priority,
                                    .properties = in_.has_properties ? &in_.props : nullptr};
    const shmq::Bytes body(static_cast<const std::byte*>(env.message.body.bytes),
                           env.message.body.len);
    // send_replayed: a send that stamps the properties with the AMQP timestamp instead of
    // now (0: now). Waits while the ring is full, and on a sync queue until the message is
    // on disk; SIGTERM interrupts it.
    const Status s =
        shmq::detail::ProducerAccess::send_replayed(producer_, body, options, in_.timestamp_ns);
    if (s == Status::ok || s == Status::duplicate) {
      ++c_.forwarded;
      if (s == Status::duplicate) ++c_.duplicates;
      if (!sent_since_connect_) {
        sent_since_connect_ = true;
        backoff_.reset();
      }
      last_tag_ = env.delivery_tag;
      // Acks go out in groups (multiple=true): one frame per 64 deliveries, or when the
      // stream pauses.
      if (++unacked_ >= 64) flush_acks();
      return true;
    }
    if (s == Status::too_large || s == Status::invalid) {
      // It can never go in: requeueing would loop forever. The broker dead-letters it if the
      // queue has a dead-letter exchange, else drops it (counted, logged).
      flush_acks();
      if (c_.rejected++ < 10)
        logf("delivery %llu rejected: shmq says %s",
             static_cast<unsigned long long>(env.delivery_tag),
             std::string(shmq::to_string(s)).c_str());
      (void)amqp_basic_reject(conn_.get(), 1, env.delivery_tag, 0);
      return true;
    }
    if (s == Status::closed) {
      logf("queue '%s' was removed: stopping", o_.queue.c_str());
      return false;
    }
    // interrupted (stop), timeout, unconfirmed, evicted...: not known to be in shmq. Back to
    // the broker; a resend of it is deduplicated by a queue with a dedup window.
    flush_acks();
    if (s != Status::interrupted)
      logf("send failed: %s; delivery requeued", std::string(shmq::to_string(s)).c_str());
    (void)amqp_basic_nack(conn_.get(), 1, env.delivery_tag, 0, 1);
    ++c_.nacked;
    if (s == Status::evicted) {
      logf("the bridge's producer was evicted from '%s': stopping", o_.queue.c_str());
      return false;
    }
    return true;
  }

  void flush_acks() {
    if (unacked_ == 0 || !conn_.is_open()) return;
    const int st = amqp_basic_ack(conn_.get(), 1, last_tag_, 1);
    if (st != AMQP_STATUS_OK) {
      lost("ack: " + sb::status_text(st));
      return;
    }
    c_.confirmed += unacked_;
    unacked_ = 0;
  }

  // A frame that is not a delivery: the broker closing the channel or connection, or
  // cancelling our consumer (queue deleted).
  void other_frame() {
    amqp_frame_t frame;
    const int st = amqp_simple_wait_frame(conn_.get(), &frame);
    if (st != AMQP_STATUS_OK) return lost(sb::status_text(st));
    if (frame.frame_type != AMQP_FRAME_METHOD) return;
    switch (frame.payload.method.id) {
      case AMQP_CHANNEL_CLOSE_METHOD: {
        const auto* cl = static_cast<const amqp_channel_close_t*>(frame.payload.method.decoded);
        return lost("channel closed by the broker: " + std::to_string(cl->reply_code) + " " +
                    std::string(sb::view_of(cl->reply_text)));
      }
      case AMQP_CONNECTION_CLOSE_METHOD: {
        const auto* cl = static_cast<const amqp_connection_close_t*>(frame.payload.method.decoded);
        return lost("connection closed by the broker: " + std::to_string(cl->reply_code) + " " +
                    std::string(sb::view_of(cl->reply_text)));
      }
      case AMQP_BASIC_CANCEL_METHOD:
        return lost("the broker cancelled our consumer (queue deleted?)");
      default:
        return;
    }
  }

  // Deliveries sent into shmq but not acked are redelivered by the broker (duplicates that
  // a dedup window removes); none is lost.
  void lost(const std::string& why) {
    unacked_ = 0;
    fail_connection(conn_, c_, why);
  }

  const Options& o_;
  shmq::Producer& producer_;
  std::uint32_t max_priority_;
  sb::Connection conn_;
  Counters c_;
  StatsWriter stats_;
  Backoff backoff_;
  bool ever_connected_ = false;
  bool sent_since_connect_ = false;
  std::uint64_t unacked_ = 0;   // deliveries sent into shmq, ack not yet sent
  std::uint64_t last_tag_ = 0;  // the newest of them
  sb::InMessage in_;
};

int run(Options& o) {
  auto q = shmq::Queue::open(o.queue);
  if (!q) {
    std::fprintf(stderr, "shmq-bridge: %s\n", q.error().message().c_str());
    return kExitUsage;
  }
  install_stop_handlers();
  logf("%s: queue '%s' %s %s", o.direction.c_str(), o.queue.c_str(),
       o.direction == "out" ? "->" : "<-",
       o.direction == "out" ? ("exchange '" + o.exchange + "' key '" + o.routing_key + "'").c_str()
                            : ("AMQP queue '" + o.amqp_queue + "'").c_str());
  if (o.direction == "out") {
    auto consumer = q->consumer();
    if (!consumer) {
      std::fprintf(stderr, "shmq-bridge: %s\n", consumer.error().message().c_str());
      return kExitRuntime;
    }
    g_consumer.store(&consumer.value());
    if (g_stop.load()) consumer->interrupt();
    OutBridge b(o, q.value(), consumer.value());
    const int rc = b.run();
    g_consumer.store(nullptr);
    return rc;
  }
  auto producer = q->producer();
  if (!producer) {
    std::fprintf(stderr, "shmq-bridge: %s\n", producer.error().message().c_str());
    return kExitRuntime;
  }
  g_producer.store(&producer.value());
  if (g_stop.load()) producer->interrupt();
  InBridge b(o, q.value(), producer.value());
  const int rc = b.run();
  g_producer.store(nullptr);
  return rc;
}

}  // namespace

int main(int argc, char** argv) {
  shmq::detail::make_stdio_valid();
  Options o;
  CLI::App app{
      "Bridge a shmq queue and RabbitMQ, at-least-once each way (docs/bridge.md).\n"
      "  out: shmq queue -> exchange, publisher confirms; a message is acked in shmq once "
      "confirmed.\n"
      "  in:  AMQP queue -> shmq queue; a delivery is acked once the shmq send returned ok."};
  app.set_version_flag("--version", std::string("shmq-bridge ") + SHMQ_VERSION);
  app.require_subcommand(1);
  auto common = [&](CLI::App* s) {
    s->add_option("--queue", o.queue, "the shmq queue (must exist)")->required();
    s->add_option("--amqp-url", o.url_text, "amqp://user:password@host:port/vhost")->required();
    s->add_option("--stats-file", o.stats_file,
                  "write the counters as JSON here every second (tmp + rename)");
    s->add_option("--metrics-file", o.metrics_file,
                  "write the counters in Prometheus text format here every second");
    s->add_option("--heartbeat", o.heartbeat_s, "AMQP heartbeat in seconds (0: off)")
        ->default_val(30)
        ->check(CLI::Range(0, 3600));
    s->add_option("--connect-timeout-ms", o.connect_timeout_ms,
                  "bound on connect, login and each synchronous call")
        ->default_val(5000)
        ->check(CLI::Range(10u, 600'000u));
    s->add_option("--backoff-min-ms", o.backoff_min_ms, "first wait before reconnecting")
        ->default_val(50)
        ->check(CLI::Range(1u, 600'000u));
    s->add_option("--backoff-max-ms", o.backoff_max_ms,
                  "cap of the doubling wait before reconnecting")
        ->default_val(5000)
        ->check(CLI::Range(1u, 600'000u));
    s->add_flag("--declare", o.declare,
                "declare the exchange (out) or the queue (in), durable, on each connect");
  };
  CLI::App* out = app.add_subcommand("out", "forward a shmq queue to a RabbitMQ exchange");
  common(out);
  out->add_option("--exchange", o.exchange, "the exchange (\"\" = the default exchange)")
      ->required();
  out->add_option("--routing-key", o.routing_key, "routing key of every message");
  out->add_option("--exchange-type", o.exchange_type,
                  "with --declare: direct, fanout, topic, headers")
      ->default_val("direct")
      ->check(CLI::IsMember({"direct", "fanout", "topic", "headers"}));
  out->add_option("--window", o.window, "unconfirmed publishes in flight at most")
      ->default_val(256)
      ->check(CLI::Range(1u, 65535u));
  out->add_flag("--transient", o.transient,
                "publish with delivery_mode 1 (default: 2, persistent)");
  out->add_option("--drain-ms", o.drain_ms,
                  "on SIGTERM/SIGINT, wait this long for outstanding confirms")
      ->default_val(5000)
      ->check(CLI::Range(0u, 600'000u));
  CLI::App* in = app.add_subcommand("in", "forward a RabbitMQ queue into a shmq queue");
  common(in);
  in->add_option("--amqp-queue", o.amqp_queue, "the RabbitMQ queue to consume")->required();
  in->add_option("--prefetch", o.prefetch, "unacked deliveries the broker may send (basic.qos)")
      ->default_val(256)
      ->check(CLI::Range(1u, 65535u));
  in->add_flag("--quorum", o.quorum, "with --declare: declare a quorum queue (replicated)");
  in->add_option("--bind-exchange", o.bind_exchange,
                 "with --declare: bind the queue to this exchange");
  in->add_option("--bind-key", o.bind_key, "with --bind-exchange: the binding key");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == static_cast<int>(CLI::ExitCodes::Success) ? kExitOk : kExitUsage;
  }
  o.direction = out->parsed() ? "out" : "in";
  std::string error;
  const auto url = shmq_bridge::parse_url(o.url_text, error);
  if (!url) {
    std::fprintf(stderr, "shmq-bridge: %s\n", error.c_str());
    return kExitUsage;
  }
  o.url = *url;
  if (o.backoff_min_ms > o.backoff_max_ms) {
    std::fprintf(stderr, "shmq-bridge: --backoff-min-ms is above --backoff-max-ms\n");
    return kExitUsage;
  }
  if (const std::string bad = shmq::Queue::validate_name(o.queue); !bad.empty()) {
    std::fprintf(stderr, "shmq-bridge: --queue: %s\n", bad.c_str());
    return kExitUsage;
  }
  return run(o);
}
