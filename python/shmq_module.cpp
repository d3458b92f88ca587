// The Python module `shmq` (pybind11): queues, producers, consumers, messages, topics.
//
// Blocking calls (send, receive, receive_batch, and the topic ones) release the GIL and wait
// in slices of kSlice; between slices they take the GIL back and call PyErr_CheckSignals(),
// so Ctrl-C raises KeyboardInterrupt in the main thread within a slice. A slice that timed
// out did nothing (a receive took no message; a send to a queue that is not `sync` put
// nothing in the ring), so waiting again is the same call. A send to a `sync` queue or topic
// cannot be sliced (its timeout after the message went in means "sent, not confirmed", and
// the C++ API has no call that resumes the wait for a confirmation): it is one blocking call
// with the GIL released, and Ctrl-C is seen when it returns.
//
// Message data: Message.data is a read-only memoryview of the bytes the consumer received
// (the copy Consumer::receive makes; no second copy). The memoryview is released when the
// message is acked, nacked or rejected: using it afterwards raises ValueError. The bytes
// belong to the Message's C++ object, which lives as long as any buffer made from the view
// (a slice, a numpy array): such a buffer keeps reading the bytes received, never freed
// memory. Topic deliveries work the same way; theirs point into the topic's slot (reliable
// groups), which stays mapped as long as any view of it lives.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "shmq/shmq.hpp"

namespace py = pybind11;
using namespace pybind11::literals;

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using std::chrono::nanoseconds;

// How long a blocking call waits without looking for signals.
constexpr nanoseconds kSlice = std::chrono::milliseconds(50);

// --- exceptions ------------------------------------------------------------------------

// shmq.Error and one subclass per status (by its name in to_string).
struct Exceptions {
  py::object base;
  std::map<std::string, py::object, std::less<>> by_status;
};
Exceptions& exceptions() {
  static Exceptions* e = new Exceptions();  // lives as long as the interpreter
  return *e;
}

// `status`: a Status's or Errc's to_string ("lease lost"), named as in the C API
// ("lease_lost") in the exception's .status.
[[noreturn]] void raise(std::string_view status, const std::string& message) {
  std::string name(status);
  std::replace(name.begin(), name.end(), ' ', '_');
  const Exceptions& e = exceptions();
  const auto it = e.by_status.find(name);
  const py::object& type = it != e.by_status.end() ? it->second : e.base;
  py::object value = type(message);
  value.attr("status") = py::str(name);
  PyErr_SetObject(type.ptr(), value.ptr());
  throw py::error_already_set();
}

[[noreturn]] void raise(shmq::Status s, std::string_view what) {
  raise(shmq::to_string(s), std::string(what) + ": " + std::string(shmq::to_string(s)));
}

[[noreturn]] void raise(const shmq::Error& e) {
  // Named as the C API names them (shmq_status_string): the Errc's to_string, but for two.
  const std::string_view name = e.code() == shmq::Errc::invalid_argument ? "invalid"
                                : e.code() == shmq::Errc::mismatch       ? "mismatch"
                                                                   : shmq::to_string(e.code());
  raise(name, e.message());
}

template <typename T>
T check(shmq::Result<T>&& r) {
  if (!r) raise(r.error());
  return std::move(r.value());
}

void check(const shmq::VoidResult& r) {
  if (!r) raise(r.error());
}

// --- arguments -------------------------------------------------------------------------

// Seconds (int or float) as milliseconds.
milliseconds to_ms(py::handle seconds, const char* what) {
  const double s = py::cast<double>(seconds);
  if (!(s >= 0) || !std::isfinite(s))
    throw py::value_error(std::string(what) + " must be a finite number of seconds >= 0");
  // At most 100 years: the library adds durations to clock readings in nanoseconds.
  if (s > 100.0 * 365 * 86400)
    return std::chrono::duration_cast<milliseconds>(std::chrono::years(100));
  return milliseconds(static_cast<std::int64_t>(std::llround(s * 1000.0)));
}

double to_seconds(milliseconds d) { return static_cast<double>(d.count()) / 1000.0; }

// A timeout in seconds, or None for "forever".
std::optional<nanoseconds> to_timeout(const std::optional<double>& seconds) {
  if (!seconds) return std::nullopt;
  if (!(*seconds >= 0) || std::isnan(*seconds))
    throw py::value_error("timeout must be None or a number of seconds >= 0");
  if (*seconds > 1e9) return std::nullopt;  // 30 years: forever
  return nanoseconds(static_cast<std::int64_t>(*seconds * 1e9));
}

// The bytes of a message to send: any contiguous buffer (bytes, bytearray, memoryview,
// numpy...) without a copy, or a str as UTF-8. Holds the buffer while it lives.
class Payload {
 public:
  explicit Payload(py::handle obj) {
    if (py::isinstance<py::str>(obj)) {
      encoded_ = py::reinterpret_steal<py::object>(PyUnicode_AsUTF8String(obj.ptr()));
      if (!encoded_) throw py::error_already_set();
      char* data = nullptr;
      Py_ssize_t size = 0;
      PyBytes_AsStringAndSize(encoded_.ptr(), &data, &size);
      bytes_ = {reinterpret_cast<const std::byte*>(data), static_cast<std::size_t>(size)};
      return;
    }
    if (PyObject_GetBuffer(obj.ptr(), &view_, PyBUF_C_CONTIGUOUS) != 0) {
      PyErr_Clear();
      throw py::type_error("a message is bytes-like (bytes, bytearray, memoryview) or a str, not " +
                           std::string(py::str(obj.get_type().attr("__name__"))));
    }
    has_view_ = true;
    bytes_ = {static_cast<const std::byte*>(view_.buf), static_cast<std::size_t>(view_.len)};
  }
  Payload(const Payload&) = delete;
  Payload& operator=(const Payload&) = delete;
  Payload(Payload&& o) noexcept
      : encoded_(std::move(o.encoded_)), view_(o.view_), has_view_(o.has_view_), bytes_(o.bytes_) {
    o.has_view_ = false;
  }
  ~Payload() {
    if (has_view_) PyBuffer_Release(&view_);
  }
  shmq::Bytes bytes() const noexcept { return bytes_; }

 private:
  py::object encoded_;
  Py_buffer view_{};
  bool has_view_ = false;
  shmq::Bytes bytes_;
};

std::string to_string_arg(py::handle h, const char* what) {
  if (!py::isinstance<py::str>(h)) throw py::type_error(std::string(what) + " must be a str");
  return py::cast<std::string>(h);
}

// properties={"content_type": ..., "correlation_id": ..., "reply_to": ...,
//             "headers": {key: value} or [(key, value), ...]}
shmq::Properties to_properties(const py::dict& d) {
  shmq::Properties p;
  for (const auto& [k, v] : d) {
    const std::string key = to_string_arg(k, "a properties key");
    if (key == "content_type") {
      p.content_type = to_string_arg(v, "content_type");
    } else if (key == "correlation_id") {
      p.correlation_id = to_string_arg(v, "correlation_id");
    } else if (key == "reply_to") {
      p.reply_to = to_string_arg(v, "reply_to");
    } else if (key == "headers") {
      py::iterable items = py::isinstance<py::dict>(v)
                               ? py::reinterpret_borrow<py::dict>(v).attr("items")()
                               : py::reinterpret_borrow<py::iterable>(v);
      for (py::handle item : items) {
        const auto pair = py::cast<py::tuple>(item);
        if (pair.size() != 2) throw py::value_error("a header is a (key, value) pair");
        p.headers.emplace_back(to_string_arg(pair[0], "a header key"),
                               to_string_arg(pair[1], "a header value"));
      }
    } else {
      throw py::type_error("unknown property '" + key +
                           "' (content_type, correlation_id, reply_to, headers)");
    }
  }
  return p;
}

// Send keyword arguments: id, priority, delay (seconds), properties.
struct SendArgs {
  shmq::SendOptions options;
  shmq::Properties properties;
};

SendArgs send_args(std::uint64_t id, std::uint32_t priority, double delay,
                   const std::optional<py::dict>& properties) {
  SendArgs a;
  a.options.id = id;
  a.options.priority = priority;
  a.options.delay = to_ms(py::float_(delay), "delay");
  if (properties) {
    a.properties = to_properties(*properties);
    a.options.properties = &a.properties;
  }
  return a;
}

py::str decode(std::string_view s) {
  PyObject* o =
      PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), "surrogateescape");
  if (o == nullptr) throw py::error_already_set();
  return py::reinterpret_steal<py::str>(o);
}

shmq::Durability to_durability(py::handle h) {
  const std::string s = to_string_arg(h, "durability");
  if (s == "none") return shmq::Durability::none;
  if (s == "async") return shmq::Durability::async;
  if (s == "sync") return shmq::Durability::sync;
  throw py::value_error("durability is 'none', 'async' or 'sync', not '" + s + "'");
}

shmq::QueueOptions to_queue_options(const py::kwargs& kw) {
  shmq::QueueOptions o;
  for (const auto& [k, v] : kw) {
    const std::string key = py::cast<std::string>(k);
    if (key == "slot_count")
      o.slot_count = py::cast<std::uint32_t>(v);
    else if (key == "slot_size")
      o.slot_size = py::cast<std::uint32_t>(v);
    else if (key == "max_message_size")
      o.max_message_size = py::cast<std::uint32_t>(v);
    else if (key == "max_members")
      o.max_members = py::cast<std::uint32_t>(v);
    else if (key == "mode")
      o.mode = py::cast<std::uint32_t>(v);
    else if (key == "lease")
      o.lease = to_ms(v, "lease");
    else if (key == "max_deliveries")
      o.max_deliveries = py::cast<std::uint32_t>(v);
    else if (key == "ttl")
      o.ttl = to_ms(v, "ttl");
    else if (key == "backoff_initial")
      o.backoff_initial = to_ms(v, "backoff_initial");
    else if (key == "backoff_max")
      o.backoff_max = to_ms(v, "backoff_max");
    else if (key == "dead_letter")
      o.dead_letter = py::cast<bool>(v);
    else if (key == "heartbeat_liveness")
      o.heartbeat_liveness = py::cast<bool>(v);
    else if (key == "heartbeat_timeout")
      o.heartbeat_timeout = to_ms(v, "heartbeat_timeout");
    else if (key == "claim_timeout")
      o.claim_timeout = to_ms(v, "claim_timeout");
    else if (key == "durability")
      o.durability = to_durability(v);
    else if (key == "data_dir")
      o.data_dir = py::cast<std::string>(py::str(v));
    else if (key == "flush_interval")
      o.flush_interval = to_ms(v, "flush_interval");
    else if (key == "checksum")
      o.checksum = py::cast<bool>(v);
    else if (key == "max_priority")
      o.max_priority = py::cast<std::uint32_t>(v);
    else if (key == "dedup_count")
      o.dedup_window.count = py::cast<std::uint32_t>(v);
    else if (key == "dedup_time")
      o.dedup_window.time = std::chrono::seconds(py::cast<std::int64_t>(v));
    else
      throw py::type_error("unknown queue option '" + key + "'");
  }
  return o;
}

py::dict queue_options_dict(const shmq::QueueOptions& o) {
  return py::dict(
      "slot_count"_a = o.slot_count, "slot_size"_a = o.slot_size,
      "max_message_size"_a = o.max_message_size, "max_members"_a = o.max_members, "mode"_a = o.mode,
      "lease"_a = to_seconds(o.lease), "max_deliveries"_a = o.max_deliveries,
      "ttl"_a = to_seconds(o.ttl), "backoff_initial"_a = to_seconds(o.backoff_initial),
      "backoff_max"_a = to_seconds(o.backoff_max), "dead_letter"_a = o.dead_letter,
      "heartbeat_liveness"_a = o.heartbeat_liveness,
      "heartbeat_timeout"_a = to_seconds(o.heartbeat_timeout),
      "claim_timeout"_a = to_seconds(o.claim_timeout),
      "durability"_a = std::string(shmq::to_string(o.durability)), "data_dir"_a = o.data_dir,
      "flush_interval"_a = to_seconds(o.flush_interval), "checksum"_a = o.checksum,
      "max_priority"_a = o.max_priority, "dedup_count"_a = o.dedup_window.count,
      "dedup_time"_a = o.dedup_window.time.count());
}

py::dict queue_stats_dict(const shmq::QueueStats& s) {
  py::dict d("slot_count"_a = s.slot_count, "slot_size"_a = s.slot_size,
             "max_message_size"_a = s.max_message_size, "max_members"_a = s.max_members,
             "tail"_a = s.tail, "dispatch"_a = s.dispatch, "ready"_a = s.ready,
             "in_flight"_a = s.in_flight, "claimed"_a = s.claimed, "free_slots"_a = s.free_slots,
             "producers"_a = s.producers, "consumers"_a = s.consumers, "sent"_a = s.sent,
             "received"_a = s.received, "acked"_a = s.acked, "requeued"_a = s.requeued,
             "delayed"_a = s.delayed, "next_due_ns"_a = s.next_due_ns,
             "max_priority"_a = s.max_priority, "oldest_unacked_age_ms"_a = s.oldest_unacked_age_ms,
             "members_reclaimed"_a = s.members_reclaimed, "redelivered"_a = s.redelivered,
             "leases_expired"_a = s.leases_expired, "holes_repaired"_a = s.holes_repaired,
             "dead_lettered"_a = s.dead_lettered, "expired"_a = s.expired,
             "dead_letter_failed"_a = s.dead_letter_failed, "corrupt"_a = s.corrupt,
             "dedup_duplicates"_a = s.dedup_duplicates,
             "dedup_evicted_early"_a = s.dedup_evicted_early, "dedup_voided"_a = s.dedup_voided,
             "watchdog_active"_a = s.watchdog_active, "persisted"_a = s.persisted,
             "synced"_a = s.synced);
  py::list levels;
  for (const auto& l : s.levels)
    levels.append(py::dict("priority"_a = l.priority, "ready"_a = l.ready,
                           "in_flight"_a = l.in_flight, "delayed"_a = l.delayed));
  d["levels"] = levels;
  py::list members;
  for (const auto& m : s.members)
    members.append(py::dict("index"_a = m.index, "role"_a = m.role, "status"_a = m.status,
                            "pid"_a = m.pid, "heartbeat_age_ms"_a = m.heartbeat_age_ms,
                            "held"_a = m.held, "alive"_a = m.alive));
  d["members"] = members;
  return d;
}

py::dict group_stats_dict(const shmq::GroupStats& g) {
  return py::dict("name"_a = g.name, "policy"_a = std::string(shmq::to_string(g.policy)),
                  "on_stall"_a = std::string(shmq::to_string(g.on_stall)),
                  "stall_timeout_ms"_a = g.stall_timeout_ms, "state"_a = g.state,
                  "position"_a = g.position, "acked"_a = g.acked, "lag"_a = g.lag,
                  "in_flight"_a = g.in_flight, "requeued"_a = g.requeued, "members"_a = g.members,
                  "delivered"_a = g.delivered, "acks"_a = g.acks, "redelivered"_a = g.redelivered,
                  "missed"_a = g.missed, "dead_lettered"_a = g.dead_lettered,
                  "dropped"_a = g.dropped);
}

// --- blocking calls --------------------------------------------------------------------

// Runs `call(slice)` (a timed call that returns Status::timeout when its slice ran out) with
// the GIL released, again and again until it returns something else or `timeout` (nullopt:
// forever) has passed; between slices, with the GIL, lets Python run its signal handlers
// (KeyboardInterrupt propagates as py::error_already_set). `lock` is the handle's mutex,
// held during each slice: a handle is used by one thread at a time.
template <typename Call>
shmq::Status sliced(std::mutex& lock, std::optional<nanoseconds> timeout, Call&& call) {
  const Clock::time_point deadline = timeout ? Clock::now() + *timeout : Clock::time_point::max();
  for (;;) {
    const Clock::time_point now = Clock::now();
    const nanoseconds left =
        deadline == Clock::time_point::max()
            ? kSlice
            : std::max(nanoseconds(0), std::chrono::duration_cast<nanoseconds>(deadline - now));
    shmq::Status s;
    {
      py::gil_scoped_release released;
      std::lock_guard<std::mutex> guard(lock);
      s = call(std::min(left, kSlice));
    }
    if (s != shmq::Status::timeout) return s;
    if (Clock::now() >= deadline) return s;
    if (PyErr_CheckSignals() != 0) throw py::error_already_set();
  }
}

// One call with the GIL released and the handle's lock held: a call that does not wait
// (try_, ack, ...) or must not be sliced (a sync send). The lock is taken without the GIL, so
// a thread waiting for the handle never stops the others. A signal that came meanwhile is
// handled by the interpreter as soon as the call returns (its result is not lost).
template <typename Call>
auto unsliced(std::mutex& lock, Call&& call) {
  py::gil_scoped_release released;
  std::lock_guard<std::mutex> guard(lock);
  return call();
}

// --- messages and deliveries -----------------------------------------------------------

// A received message or delivery and the bytes it had when received. Shared by the Python
// object and the exporters of its memoryviews, so the bytes outlive neither.
template <typename T>
struct Held {
  T item;
  const std::byte* data = nullptr;
  std::size_t size = 0;
  bool released = false;  // acked, nacked or rejected: no more views
};

// The object a memoryview of a message's data is made from (shmq._MessageBuffer): exports
// the bytes read-only; an empty buffer once the message was released.
template <typename T>
struct Exporter {
  std::shared_ptr<Held<T>> held;
};

// What a Python Message / Delivery holds.
template <typename T>
struct PyHeld {
  std::shared_ptr<Held<T>> held = std::make_shared<Held<T>>();
  py::object view;  // a weak reference to the memoryview .data returned, or None

  // Fills data/size from the item just received.
  void received() {
    held->data = held->item.data().data();
    held->size = held->item.size();
    held->released = false;
  }
  void require_held(const char* what) const {
    if (held->released)
      throw py::value_error(std::string(what) +
                            ": the message was acked, nacked or rejected: its data is released "
                            "(copy it with bytes() before)");
  }
  py::object data() {
    require_held("data");
    if (!view.is_none()) {
      py::object v = view();
      if (!v.is_none()) return v;
    }
    py::object exporter = py::cast(Exporter<T>{held});
    py::object mv = py::reinterpret_steal<py::object>(PyMemoryView_FromObject(exporter.ptr()));
    if (!mv) throw py::error_already_set();
    view = py::weakref(mv);
    return mv;
  }
  py::bytes copy() const {
    require_held("bytes");
    return py::bytes(reinterpret_cast<const char*>(held->data), held->size);
  }
  // The hold ended: the memoryview handed out is released (using it raises ValueError).
  // A buffer exported from it (a numpy array over it) keeps it from being released; it
  // then keeps the bytes alive instead (see the top of this file).
  void release() {
    held->released = true;
    if (view.is_none()) return;
    py::object v = view();
    view = py::none();
    if (v.is_none()) return;
    try {
      v.attr("release")();
    } catch (py::error_already_set& e) {
      if (!e.matches(PyExc_BufferError)) throw;
    }
  }
  PyHeld() : view(py::none()) {}
};

using PyMessage = PyHeld<shmq::Message>;
using PyDelivery = PyHeld<shmq::Delivery>;

py::dict properties_dict(const PyMessage& m) {
  m.require_held("properties");
  const shmq::PropertiesView p = m.held->item.properties();
  py::dict headers;
  for (const auto& [k, v] : p.headers()) {
    py::str key = decode(k);
    if (!headers.contains(key)) headers[key] = decode(v);  // the first of a repeated key
  }
  return py::dict("content_type"_a = decode(p.content_type()),
                  "correlation_id"_a = decode(p.correlation_id()),
                  "reply_to"_a = decode(p.reply_to()), "headers"_a = headers,
                  "timestamp_ns"_a = p.timestamp_ns(), "present"_a = p.present());
}

// --- handles ---------------------------------------------------------------------------

// Each handle with the mutex that keeps it to one thread at a time (Python threads may
// share a handle; its calls run with the GIL released).
struct PyProducer {
  PyProducer(shmq::Producer p, bool s) : producer(std::move(p)), sync(s) {}
  shmq::Producer producer;
  bool sync;  // a sync queue: sends are not sliced
  std::mutex lock;
};

struct PyConsumer {
  explicit PyConsumer(shmq::Consumer c) : consumer(std::move(c)) {}
  shmq::Consumer consumer;
  std::mutex lock;
};

struct PyPublisher {
  PyPublisher(shmq::Publisher p, bool s) : publisher(std::move(p)), sync(s) {}
  shmq::Publisher publisher;
  bool sync;
  std::mutex lock;
};

struct PySubscriber {
  explicit PySubscriber(shmq::Subscriber s) : subscriber(std::move(s)) {}
  shmq::Subscriber subscriber;
  std::mutex lock;
};

// The status of a send that did not return ok, as an exception (ok: the position).
std::uint64_t sent(shmq::Status s, std::uint64_t position, const char* what) {
  if (s != shmq::Status::ok) raise(s, what);
  return position;
}

std::uint64_t producer_send(PyProducer& p, py::handle data, std::optional<nanoseconds> timeout,
                            const SendArgs& a) {
  const Payload payload(data);
  shmq::Status s;
  if (p.sync) {
    s = unsliced(p.lock, [&] {
      return timeout ? p.producer.send_for(payload.bytes(), *timeout, a.options)
                     : p.producer.send(payload.bytes(), a.options);
    });
  } else {
    s = sliced(p.lock, timeout, [&](nanoseconds slice) {
      return p.producer.send_for(payload.bytes(), slice, a.options);
    });
  }
  return sent(s, p.producer.last_position(), "send");
}

// Receives into a new Message (a consumer's) or Delivery (a subscriber's): None on timeout
// (or empty), an exception for the rest. `end` has try_receive and receive_for.
template <typename Out, typename End>
std::shared_ptr<Out> receive_new(std::mutex& lock, End& end, std::optional<nanoseconds> timeout,
                                 bool wait) {
  auto out = std::make_shared<Out>();
  shmq::Status s;
  if (!wait) {
    s = unsliced(lock, [&] { return end.try_receive(out->held->item); });
  } else {
    s = sliced(lock, timeout,
               [&](nanoseconds slice) { return end.receive_for(out->held->item, slice); });
  }
  if (s == shmq::Status::timeout || s == shmq::Status::empty) return nullptr;
  if (s != shmq::Status::ok) raise(s, "receive");
  out->received();
  return out;
}

std::shared_ptr<PyMessage> consumer_receive(PyConsumer& c, std::optional<nanoseconds> timeout,
                                            bool wait) {
  return receive_new<PyMessage>(c.lock, c.consumer, timeout, wait);
}

std::shared_ptr<PyDelivery> subscriber_receive(PySubscriber& sub,
                                               std::optional<nanoseconds> timeout, bool wait) {
  return receive_new<PyDelivery>(sub.lock, sub.subscriber, timeout, wait);
}

// ack / nack / reject / extend of a Message or Delivery: an exception unless ok; its view is
// released once the consumer (subscriber) no longer holds it.
template <typename End, typename Held, typename Op>
void held_op(std::mutex& lock, End& end, Held& h, const char* what, Op&& op) {
  bool still_held = false;
  const shmq::Status s = unsliced(lock, [&] {
    const shmq::Status st = op(end, h.held->item);
    still_held = h.held->item.held();
    return st;
  });
  if (!still_held) h.release();
  if (s != shmq::Status::ok) raise(s, what);
}

template <typename Op>
void consumer_op(PyConsumer& c, PyMessage& m, const char* what, Op&& op) {
  held_op(c.lock, c.consumer, m, what, std::forward<Op>(op));
}

template <typename Op>
void subscriber_op(PySubscriber& sub, PyDelivery& d, const char* what, Op&& op) {
  held_op(sub.lock, sub.subscriber, d, what, std::forward<Op>(op));
}

shmq::GroupOptions to_group_options(const std::string& policy, py::handle start,
                                    double stall_timeout, const std::string& on_stall) {
  shmq::GroupOptions g;
  if (policy == "reliable")
    g.policy = shmq::GroupPolicy::reliable;
  else if (policy == "lossy")
    g.policy = shmq::GroupPolicy::lossy;
  else
    throw py::value_error("policy is 'reliable' or 'lossy', not '" + policy + "'");
  if (py::isinstance<py::str>(start)) {
    const std::string s = py::cast<std::string>(start);
    if (s == "latest")
      g.start = shmq::StartAt::latest();
    else if (s == "earliest")
      g.start = shmq::StartAt::earliest();
    else
      throw py::value_error("start is 'latest', 'earliest' or a position, not '" + s + "'");
  } else {
    g.start = shmq::StartAt::at(py::cast<std::uint64_t>(start));
  }
  g.stall_timeout = to_ms(py::float_(stall_timeout), "stall_timeout");
  if (on_stall == "hold")
    g.on_stall = shmq::StallAction::hold;
  else if (on_stall == "detach")
    g.on_stall = shmq::StallAction::detach;
  else
    throw py::value_error("on_stall is 'hold' or 'detach', not '" + on_stall + "'");
  return g;
}

shmq::TopicOptions to_topic_options(const py::kwargs& kw) {
  shmq::TopicOptions o;
  for (const auto& [k, v] : kw) {
    const std::string key = py::cast<std::string>(k);
    if (key == "slot_count")
      o.slot_count = py::cast<std::uint32_t>(v);
    else if (key == "slot_size")
      o.slot_size = py::cast<std::uint32_t>(v);
    else if (key == "max_members")
      o.max_members = py::cast<std::uint32_t>(v);
    else if (key == "max_groups")
      o.max_groups = py::cast<std::uint32_t>(v);
    else if (key == "mode")
      o.mode = py::cast<std::uint32_t>(v);
    else if (key == "history")
      o.history = py::cast<std::uint32_t>(v);
    else if (key == "lease")
      o.lease = to_ms(v, "lease");
    else if (key == "max_deliveries")
      o.max_deliveries = py::cast<std::uint32_t>(v);
    else if (key == "dead_letter")
      o.dead_letter = py::cast<bool>(v);
    else if (key == "claim_timeout")
      o.claim_timeout = to_ms(v, "claim_timeout");
    else if (key == "durability")
      o.durability = to_durability(v);
    else if (key == "data_dir")
      o.data_dir = py::cast<std::string>(py::str(v));
    else if (key == "flush_interval")
      o.flush_interval = to_ms(v, "flush_interval");
    else if (key == "retain_bytes")
      o.retain_bytes = py::cast<std::uint64_t>(v);
    else if (key == "retain_age")
      o.retain_age = std::chrono::seconds(py::cast<std::int64_t>(v));
    else
      throw py::type_error("unknown topic option '" + key + "'");
  }
  return o;
}

template <typename T>
void define_exporter(py::module_& m, const char* buffer_name) {
  py::class_<Exporter<T>>(m, buffer_name, py::buffer_protocol())
      .def_buffer([](Exporter<T>& e) -> py::buffer_info {
        static const char kEmpty = 0;
        const Held<T>& h = *e.held;
        const void* ptr = h.released ? &kEmpty : static_cast<const void*>(h.data);
        const auto size = static_cast<py::ssize_t>(h.released ? 0 : h.size);
        return py::buffer_info(const_cast<void*>(ptr), 1,
                               py::format_descriptor<std::uint8_t>::format(), 1, {size},
                               {py::ssize_t(1)}, /*readonly=*/true);
      });
}

}  // namespace

PYBIND11_MODULE(shmq, m) {
  m.doc() =
      "shmq: a fault-tolerant shared-memory message queue for processes on one Linux host.\n"
      "Queue, Producer, Consumer, Message; Topic, Publisher, Subscriber, Delivery; "
      "shmq.Error and its subclasses.";

  // Exceptions: shmq.Error(status, message) and one subclass per status.
  Exceptions& ex = exceptions();
  ex.base = py::reinterpret_steal<py::object>(PyErr_NewExceptionWithDoc(
      "shmq.Error", "An shmq call failed; .status names the shmq status or error code.",
      PyExc_Exception, nullptr));
  m.attr("Error") = ex.base;
  struct Kind {
    const char* status;
    const char* name;
    PyObject* builtin;  // a builtin exception it also derives from, or nullptr
  };
  const Kind kinds[] = {
      {"full", "FullError", nullptr},
      {"empty", "EmptyError", nullptr},
      {"timeout", "TimeoutError", PyExc_TimeoutError},
      {"interrupted", "InterruptedError", nullptr},
      {"too_large", "TooLargeError", PyExc_ValueError},
      {"lease_lost", "LeaseLostError", nullptr},
      {"invalid", "InvalidError", PyExc_ValueError},
      {"closed", "ClosedError", nullptr},
      {"no_persister", "NoPersisterError", nullptr},
      {"unconfirmed", "UnconfirmedError", nullptr},
      {"wrong_consumer", "WrongConsumerError", nullptr},
      {"evicted", "EvictedError", nullptr},
      {"duplicate", "DuplicateError", nullptr},
      {"not_found", "NotFoundError", nullptr},
      {"already_exists", "AlreadyExistsError", nullptr},
      {"permission_denied", "PermissionDeniedError", PyExc_PermissionError},
      {"mismatch", "MismatchError", nullptr},
  };
  for (const Kind& k : kinds) {
    py::tuple bases = k.builtin != nullptr
                          ? py::make_tuple(ex.base, py::reinterpret_borrow<py::object>(k.builtin))
                          : py::make_tuple(ex.base);
    py::object type = py::reinterpret_steal<py::object>(
        PyErr_NewException((std::string("shmq.") + k.name).c_str(), bases.ptr(), nullptr));
    if (!type) throw py::error_already_set();
    m.attr(k.name) = type;
    ex.by_status.emplace(k.status, type);
  }

  define_exporter<shmq::Message>(m, "_MessageBuffer");
  define_exporter<shmq::Delivery>(m, "_DeliveryBuffer");

  py::class_<PyMessage, std::shared_ptr<PyMessage>>(
      m, "Message",
      "A received message. .data is a read-only memoryview of its bytes, valid while the "
      "message is held: ack, nack and reject release it (using it then raises ValueError).")
      .def_property_readonly("data", &PyMessage::data)
      .def("bytes", &PyMessage::copy, "A copy of the data (while held).")
      .def_property_readonly("position", [](const PyMessage& x) { return x.held->item.position(); })
      .def_property_readonly("id", [](const PyMessage& x) { return x.held->item.id(); })
      .def_property_readonly("delivery_count",
                             [](const PyMessage& x) { return x.held->item.delivery_count(); })
      .def_property_readonly("redelivered",
                             [](const PyMessage& x) { return x.held->item.redelivered(); })
      .def_property_readonly("priority", [](const PyMessage& x) { return x.held->item.priority(); })
      .def_property_readonly("properties", &properties_dict,
                             "content_type, correlation_id, reply_to, headers (a dict: the "
                             "first value of a repeated key), timestamp_ns, present.")
      .def_property_readonly(
          "held", [](const PyMessage& x) { return !x.held->released && x.held->item.held(); })
      .def("__len__", [](const PyMessage& x) { return x.held->size; })
      .def("__repr__", [](const PyMessage& x) {
        return "<shmq.Message position=" + std::to_string(x.held->item.position()) +
               " size=" + std::to_string(x.held->size) +
               " delivery_count=" + std::to_string(x.held->item.delivery_count()) + ">";
      });

  py::class_<PyProducer, std::shared_ptr<PyProducer>>(m, "Producer")
      .def(
          "send",
          [](PyProducer& p, py::handle data, std::uint64_t id, std::uint32_t priority, double delay,
             std::optional<py::dict> properties, std::optional<double> timeout) {
            return producer_send(p, data, to_timeout(timeout),
                                 send_args(id, priority, delay, properties));
          },
          "data"_a, py::kw_only(), "id"_a = 0, "priority"_a = 0, "delay"_a = 0.0,
          "properties"_a = py::none(), "timeout"_a = py::none(),
          "Sends a copy of data (bytes-like or str); waits while the ring is full (timeout: "
          "seconds, None = forever; Ctrl-C raises KeyboardInterrupt). Returns its position.")
      .def(
          "send_for",
          [](PyProducer& p, py::handle data, double timeout, std::uint64_t id,
             std::uint32_t priority, double delay, std::optional<py::dict> properties) {
            return producer_send(p, data, to_timeout(timeout),
                                 send_args(id, priority, delay, properties));
          },
          "data"_a, "timeout"_a, py::kw_only(), "id"_a = 0, "priority"_a = 0, "delay"_a = 0.0,
          "properties"_a = py::none(), "send with a timeout in seconds: shmq.TimeoutError.")
      .def(
          "try_send",
          [](PyProducer& p, py::handle data, std::uint64_t id, std::uint32_t priority, double delay,
             std::optional<py::dict> properties) {
            const Payload payload(data);
            const SendArgs a = send_args(id, priority, delay, properties);
            const shmq::Status s =
                unsliced(p.lock, [&] { return p.producer.try_send(payload.bytes(), a.options); });
            return sent(s, p.producer.last_position(), "try_send");
          },
          "data"_a, py::kw_only(), "id"_a = 0, "priority"_a = 0, "delay"_a = 0.0,
          "properties"_a = py::none(), "Sends without waiting for room: shmq.FullError.")
      .def(
          "send_batch",
          [](PyProducer& p, py::iterable messages, std::optional<double> timeout,
             std::uint32_t priority, double delay, std::optional<py::dict> properties) {
            std::vector<Payload> payloads;
            for (py::handle h : messages) payloads.emplace_back(h);
            std::vector<shmq::Bytes> batch;
            for (const Payload& x : payloads) batch.push_back(x.bytes());
            const SendArgs a = send_args(0, priority, delay, properties);
            std::size_t done = 0;
            shmq::Status s = shmq::Status::ok;
            const auto t = to_timeout(timeout);
            auto rest = [&] { return std::span<const shmq::Bytes>(batch).subspan(done); };
            if (p.sync) {
              done = unsliced(p.lock, [&] {
                return p.producer.send_batch(batch, t.value_or(nanoseconds::max()), &s, a.options);
              });
            } else {
              s = sliced(p.lock, t, [&](nanoseconds slice) {
                shmq::Status st = shmq::Status::ok;
                done += p.producer.send_batch(rest(), slice, &st, a.options);
                return done == batch.size() ? shmq::Status::ok
                                            : (st == shmq::Status::ok ? shmq::Status::timeout : st);
              });
            }
            if (done == batch.size()) return done;
            raise(s == shmq::Status::ok ? shmq::Status::timeout : s,
                  "send_batch (" + std::to_string(done) + " of " + std::to_string(batch.size()) +
                      " sent)");
          },
          "messages"_a, "timeout"_a = py::none(), py::kw_only(), "priority"_a = 0, "delay"_a = 0.0,
          "properties"_a = py::none(),
          "Sends messages in order; returns how many (all), or raises with how many were sent "
          "in the message.")
      .def_property_readonly("last_position",
                             [](const PyProducer& p) { return p.producer.last_position(); })
      .def_property_readonly(
          "session",
          [](const PyProducer& p) -> std::optional<std::pair<std::uint32_t, std::uint32_t>> {
            const auto session = p.producer.session();
            if (!session) return std::nullopt;
            return std::pair(session->producer_id, session->next_sequence);
          },
          "An idempotent producer's (producer_id, next_sequence); None for a plain one.")
      .def(
          "interrupt", [](PyProducer& p) { p.producer.interrupt(); },
          "Makes blocking calls raise shmq.InterruptedError (any thread).")
      .def("clear_interrupt", [](PyProducer& p) { p.producer.clear_interrupt(); });

  py::class_<PyConsumer, std::shared_ptr<PyConsumer>>(m, "Consumer")
      .def(
          "receive",
          [](PyConsumer& c, std::optional<double> timeout) {
            return consumer_receive(c, to_timeout(timeout), true);
          },
          "timeout"_a = py::none(),
          "The next message, waiting at most timeout seconds (None: forever); None on "
          "timeout. Releases the GIL; Ctrl-C raises KeyboardInterrupt.")
      .def(
          "receive_for",
          [](PyConsumer& c, double timeout) {
            return consumer_receive(c, to_timeout(timeout), true);
          },
          "timeout"_a)
      .def(
          "try_receive", [](PyConsumer& c) { return consumer_receive(c, std::nullopt, false); },
          "The next message if one is ready, else None.")
      .def(
          "receive_batch",
          [](PyConsumer& c, std::size_t max_count, std::optional<double> timeout) {
            if (max_count == 0) throw py::value_error("max_count must be at least 1");
            std::vector<shmq::Message> batch(max_count);
            std::size_t n = 0;
            const shmq::Status s = sliced(c.lock, to_timeout(timeout), [&](nanoseconds slice) {
              n = c.consumer.receive_batch(batch, slice);
              if (n > 0) return shmq::Status::ok;
              // receive_batch does not say why it got nothing: a zero-wait poll tells a
              // closed queue or an interrupt from a timeout.
              const shmq::Status probe = c.consumer.try_receive(batch[0]);
              if (probe == shmq::Status::ok) n = 1;
              return probe == shmq::Status::empty ? shmq::Status::timeout : probe;
            });
            if (s != shmq::Status::ok && s != shmq::Status::timeout) raise(s, "receive_batch");
            py::list out;
            for (std::size_t i = 0; i < n; ++i) {
              auto msg = std::make_shared<PyMessage>();
              msg->held->item = std::move(batch[i]);
              msg->received();
              out.append(msg);
            }
            return out;
          },
          "max_count"_a, "timeout"_a = py::none(),
          "Waits up to timeout for a first message, then takes what is ready; a list (empty "
          "on timeout).")
      .def(
          "ack",
          [](PyConsumer& c, PyMessage& msg) {
            consumer_op(c, msg, "ack",
                        [](shmq::Consumer& x, shmq::Message& y) { return x.ack(y); });
          },
          "message"_a)
      .def(
          "nack",
          [](PyConsumer& c, PyMessage& msg, std::optional<double> delay) {
            const std::optional<milliseconds> d =
                delay ? std::optional(to_ms(py::float_(*delay), "delay")) : std::nullopt;
            consumer_op(c, msg, "nack", [&](shmq::Consumer& x, shmq::Message& y) {
              return d ? x.nack_after(y, *d) : x.nack(y);
            });
          },
          "message"_a, "delay"_a = py::none(),
          "Gives it back: redelivered after the queue's backoff, or after delay seconds.")
      .def(
          "reject",
          [](PyConsumer& c, PyMessage& msg) {
            consumer_op(c, msg, "reject",
                        [](shmq::Consumer& x, shmq::Message& y) { return x.nack(y, false); });
          },
          "message"_a, "To the dead-letter queue; shmq.FullError (still held) if it is full.")
      .def(
          "extend",
          [](PyConsumer& c, PyMessage& msg, double seconds) {
            const milliseconds d = to_ms(py::float_(seconds), "extension");
            consumer_op(c, msg, "extend",
                        [&](shmq::Consumer& x, shmq::Message& y) { return x.extend_lease(y, d); });
          },
          "message"_a, "seconds"_a, "Pushes the message's lease to seconds from now.")
      .def("release_all",
           [](PyConsumer& c) { return unsliced(c.lock, [&] { return c.consumer.release_all(); }); })
      .def("interrupt", [](PyConsumer& c) { c.consumer.interrupt(); })
      .def("clear_interrupt", [](PyConsumer& c) { c.consumer.clear_interrupt(); });

  py::class_<shmq::Queue>(m, "Queue")
      .def_static(
          "create",
          [](const std::string& name, const py::kwargs& kw) {
            return check(shmq::Queue::create(name, to_queue_options(kw)));
          },
          "name"_a,
          "Creates a queue. Options as keyword arguments (QueueOptions; durations in "
          "seconds, durability 'none' | 'async' | 'sync').")
      .def_static(
          "open", [](const std::string& name) { return check(shmq::Queue::open(name)); }, "name"_a)
      .def_static(
          "open_or_create",
          [](const std::string& name, const py::kwargs& kw) {
            return check(shmq::Queue::open_or_create(name, to_queue_options(kw)));
          },
          "name"_a)
      .def_static(
          "remove", [](const std::string& name) { check(shmq::Queue::remove(name)); }, "name"_a)
      .def_property_readonly("name", &shmq::Queue::name)
      .def("options", [](const shmq::Queue& q) { return queue_options_dict(q.options()); })
      .def("stats", [](const shmq::Queue& q) { return queue_stats_dict(q.stats()); })
      .def("set_policy",
           [](shmq::Queue& q, const py::kwargs& kw) {
             shmq::PolicyUpdate u;
             for (const auto& [k, v] : kw) {
               const std::string key = py::cast<std::string>(k);
               if (key == "lease")
                 u.lease = to_ms(v, "lease");
               else if (key == "max_deliveries")
                 u.max_deliveries = py::cast<std::uint32_t>(v);
               else if (key == "ttl")
                 u.ttl = to_ms(v, "ttl");
               else if (key == "backoff_initial")
                 u.backoff_initial = to_ms(v, "backoff_initial");
               else if (key == "backoff_max")
                 u.backoff_max = to_ms(v, "backoff_max");
               else
                 throw py::type_error("unknown policy field '" + key + "'");
             }
             check(q.set_policy(u));
           })
      .def(
          "idempotent_producer",
          [](shmq::Queue& q, std::optional<std::pair<std::uint32_t, std::uint32_t>> session) {
            shmq::ProducerSession resume;
            if (session) resume = {.producer_id = session->first, .next_sequence = session->second};
            return std::make_shared<PyProducer>(check(q.idempotent_producer(resume)),
                                                q.options().durability == shmq::Durability::sync);
          },
          "session"_a = py::none(),
          "A producer whose sends carry session ids (the queue needs dedup_count): session "
          "None starts one, a saved (producer_id, next_sequence) resumes it.")
      .def(
          "browse",
          [](const shmq::Queue& q, std::size_t max_count, bool include_in_flight) {
            const std::vector<shmq::BrowsedMessage> found = [&] {
              py::gil_scoped_release released;
              return q.browse(max_count, include_in_flight);
            }();
            static constexpr const char* kStates[] = {"ready", "in_flight", "delayed"};
            py::list out;
            for (const shmq::BrowsedMessage& b : found)
              out.append(py::dict(
                  "position"_a = b.position, "id"_a = b.id, "delivery_count"_a = b.delivery_count,
                  "state"_a = kStates[static_cast<int>(b.state)], "priority"_a = b.priority,
                  "due_ns"_a = b.due_ns,
                  "data"_a = py::bytes(reinterpret_cast<const char*>(b.data.data()), b.data.size()),
                  "size"_a = b.size));
            return out;
          },
          "max_count"_a, "include_in_flight"_a = false,
          "Copies of up to max_count messages, oldest first, without taking them (dicts).")
      .def(
          "repair",
          [](shmq::Queue& q) {
            const shmq::RepairReport r = [&] {
              py::gil_scoped_release released;
              return q.repair();
            }();
            return py::dict("watchdog_running"_a = r.watchdog_running,
                            "members_reclaimed"_a = r.members_reclaimed,
                            "redelivered"_a = r.redelivered, "holes_repaired"_a = r.holes_repaired);
          },
          "Reclaims dead members' rows and redelivers what they held (shmqctl repair).")
      .def("producer",
           [](shmq::Queue& q) {
             return std::make_shared<PyProducer>(check(q.producer()),
                                                 q.options().durability == shmq::Durability::sync);
           })
      .def("consumer",
           [](shmq::Queue& q) { return std::make_shared<PyConsumer>(check(q.consumer())); });

  // --- topics ---------------------------------------------------------------------------

  py::class_<PyDelivery, std::shared_ptr<PyDelivery>>(
      m, "Delivery", "A message received through a Subscriber; .data as Message.data.")
      .def_property_readonly("data", &PyDelivery::data)
      .def("bytes", &PyDelivery::copy)
      .def_property_readonly("position",
                             [](const PyDelivery& x) { return x.held->item.position(); })
      .def_property_readonly("id", [](const PyDelivery& x) { return x.held->item.id(); })
      .def_property_readonly("delivery_count",
                             [](const PyDelivery& x) { return x.held->item.delivery_count(); })
      .def_property_readonly("redelivered",
                             [](const PyDelivery& x) { return x.held->item.redelivered(); })
      .def_property_readonly("missed_before",
                             [](const PyDelivery& x) { return x.held->item.missed_before(); })
      .def_property_readonly(
          "held", [](const PyDelivery& x) { return !x.held->released && x.held->item.held(); })
      .def("__len__", [](const PyDelivery& x) { return x.held->size; });

  py::class_<PyPublisher, std::shared_ptr<PyPublisher>>(m, "Publisher")
      .def(
          "send",
          [](PyPublisher& p, py::handle data, std::uint64_t id, std::optional<double> timeout) {
            const Payload payload(data);
            const auto t = to_timeout(timeout);
            shmq::Status s;
            if (p.sync) {
              s = unsliced(p.lock, [&] {
                return t ? p.publisher.send_for(payload.bytes(), *t, id)
                         : p.publisher.send(payload.bytes(), id);
              });
            } else {
              s = sliced(p.lock, t, [&](nanoseconds slice) {
                return p.publisher.send_for(payload.bytes(), slice, id);
              });
            }
            return sent(s, p.publisher.last_position(), "send");
          },
          "data"_a, py::kw_only(), "id"_a = 0, "timeout"_a = py::none())
      .def(
          "try_send",
          [](PyPublisher& p, py::handle data, std::uint64_t id) {
            const Payload payload(data);
            const shmq::Status s =
                unsliced(p.lock, [&] { return p.publisher.try_send(payload.bytes(), id); });
            return sent(s, p.publisher.last_position(), "try_send");
          },
          "data"_a, py::kw_only(), "id"_a = 0)
      .def_property_readonly("last_position",
                             [](const PyPublisher& p) { return p.publisher.last_position(); })
      .def("interrupt", [](PyPublisher& p) { p.publisher.interrupt(); });

  py::class_<PySubscriber, std::shared_ptr<PySubscriber>>(m, "Subscriber")
      .def(
          "receive",
          [](PySubscriber& s, std::optional<double> timeout) {
            return subscriber_receive(s, to_timeout(timeout), true);
          },
          "timeout"_a = py::none())
      .def("try_receive",
           [](PySubscriber& s) { return subscriber_receive(s, std::nullopt, false); })
      .def(
          "ack",
          [](PySubscriber& s, PyDelivery& d) {
            subscriber_op(s, d, "ack",
                          [](shmq::Subscriber& x, shmq::Delivery& y) { return x.ack(y); });
          },
          "delivery"_a)
      .def(
          "nack",
          [](PySubscriber& s, PyDelivery& d, double delay) {
            const milliseconds ms = to_ms(py::float_(delay), "delay");
            subscriber_op(s, d, "nack",
                          [&](shmq::Subscriber& x, shmq::Delivery& y) { return x.nack(y, ms); });
          },
          "delivery"_a, "delay"_a = 0.0)
      .def(
          "reject",
          [](PySubscriber& s, PyDelivery& d) {
            subscriber_op(s, d, "reject",
                          [](shmq::Subscriber& x, shmq::Delivery& y) { return x.reject(y); });
          },
          "delivery"_a)
      .def(
          "extend",
          [](PySubscriber& s, PyDelivery& d, double seconds) {
            const milliseconds ms = to_ms(py::float_(seconds), "extension");
            subscriber_op(s, d, "extend", [&](shmq::Subscriber& x, shmq::Delivery& y) {
              return x.extend_lease(y, ms);
            });
          },
          "delivery"_a, "seconds"_a)
      .def("release_all",
           [](PySubscriber& s) {
             return unsliced(s.lock, [&] { return s.subscriber.release_all(); });
           })
      .def_property_readonly("group", [](const PySubscriber& s) { return s.subscriber.group(); })
      .def("interrupt", [](PySubscriber& s) { s.subscriber.interrupt(); });

  py::class_<shmq::Topic>(m, "Topic")
      .def_static(
          "create",
          [](const std::string& name, const py::kwargs& kw) {
            return check(shmq::Topic::create(name, to_topic_options(kw)));
          },
          "name"_a)
      .def_static(
          "open", [](const std::string& name) { return check(shmq::Topic::open(name)); }, "name"_a)
      .def_static(
          "remove", [](const std::string& name) { check(shmq::Topic::remove(name)); }, "name"_a)
      .def_static(
          "is_topic", [](const std::string& name) { return shmq::Topic::is_topic(name); }, "name"_a)
      .def_property_readonly("name", &shmq::Topic::name)
      .def(
          "create_group",
          [](shmq::Topic& t, const std::string& group, const std::string& policy, py::object start,
             double stall_timeout, const std::string& on_stall) {
            return group_stats_dict(check(
                t.create_group(group, to_group_options(policy, start, stall_timeout, on_stall))));
          },
          "group"_a, py::kw_only(), "policy"_a = "reliable", "start"_a = "latest",
          "stall_timeout"_a = 0.0, "on_stall"_a = "hold")
      .def(
          "delete_group",
          [](shmq::Topic& t, const std::string& group) { check(t.delete_group(group)); }, "group"_a)
      .def("groups",
           [](const shmq::Topic& t) {
             py::list out;
             for (const auto& g : t.groups()) out.append(group_stats_dict(g));
             return out;
           })
      .def("stats",
           [](const shmq::Topic& t) {
             const shmq::TopicStats s = t.stats();
             py::list groups;
             for (const auto& g : s.groups) groups.append(group_stats_dict(g));
             return py::dict("slot_count"_a = s.slot_count, "slot_size"_a = s.slot_size,
                             "max_message_size"_a = s.max_message_size,
                             "max_groups"_a = s.max_groups, "history"_a = s.history,
                             "durability"_a = std::string(shmq::to_string(s.durability)),
                             "head"_a = s.head, "earliest"_a = s.earliest,
                             "persisted"_a = s.persisted, "published"_a = s.published,
                             "holes"_a = s.holes, "publishers"_a = s.publishers,
                             "subscribers"_a = s.subscribers, "groups"_a = groups);
           })
      .def("publisher",
           [](shmq::Topic& t) {
             return std::make_shared<PyPublisher>(check(t.publisher()),
                                                  t.options().durability == shmq::Durability::sync);
           })
      .def(
          "subscriber",
          [](shmq::Topic& t, const std::string& group) {
            return std::make_shared<PySubscriber>(check(t.subscriber(group)));
          },
          "group"_a);
}
