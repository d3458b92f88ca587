// The C API (include/shmq/shmq.h): thin wrappers over the C++ API. Each handle is a struct
// that owns one C++ object; every function that returns a status runs its body through
// guarded(), which sets the thread's last error and turns any exception into a status, so
// that nothing C++ crosses into C.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <initializer_list>
#include <new>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "shmq/shmq.h"
#include "shmq/shmq.hpp"

struct shmq_queue {
  shmq::Queue queue;
  std::string data_dir;  // shmq_queue_get_options hands out a pointer to it
};
struct shmq_producer {
  shmq::Producer producer;
};
struct shmq_consumer {
  shmq::Consumer consumer;
};
struct shmq_message {
  shmq::Message message;
};
struct shmq_topic {
  shmq::Topic topic;
};
struct shmq_publisher {
  shmq::Publisher publisher;
};
struct shmq_subscriber {
  shmq::Subscriber subscriber;
};
struct shmq_delivery {
  shmq::Delivery delivery;
};

namespace {

using std::chrono::milliseconds;
using std::chrono::nanoseconds;

// shmq_status_t mirrors shmq::Status value for value.
static_assert(SHMQ_OK == static_cast<int>(shmq::Status::ok));
static_assert(SHMQ_FULL == static_cast<int>(shmq::Status::full));
static_assert(SHMQ_EMPTY == static_cast<int>(shmq::Status::empty));
static_assert(SHMQ_TIMEOUT == static_cast<int>(shmq::Status::timeout));
static_assert(SHMQ_INTERRUPTED == static_cast<int>(shmq::Status::interrupted));
static_assert(SHMQ_TOO_LARGE == static_cast<int>(shmq::Status::too_large));
static_assert(SHMQ_LEASE_LOST == static_cast<int>(shmq::Status::lease_lost));
static_assert(SHMQ_INVALID == static_cast<int>(shmq::Status::invalid));
static_assert(SHMQ_CLOSED == static_cast<int>(shmq::Status::closed));
static_assert(SHMQ_NO_PERSISTER == static_cast<int>(shmq::Status::no_persister));
static_assert(SHMQ_UNCONFIRMED == static_cast<int>(shmq::Status::unconfirmed));
static_assert(SHMQ_WRONG_CONSUMER == static_cast<int>(shmq::Status::wrong_consumer));
static_assert(SHMQ_EVICTED == static_cast<int>(shmq::Status::evicted));
static_assert(SHMQ_DUPLICATE == static_cast<int>(shmq::Status::duplicate));

// The calling thread's last error message: a fixed buffer, not a std::string, so that it
// never allocates and is never destroyed (a call from an atexit handler runs after the
// thread's thread_local destructors).
constexpr std::size_t kLastErrorSize = 1024;
char* last_error() noexcept {
  thread_local char message[kLastErrorSize] = {};
  return message;
}

// Sets the last error to the concatenation of `parts`, cut at kLastErrorSize - 1 bytes.
void set_error(std::initializer_list<std::string_view> parts) noexcept {
  char* e = last_error();
  std::size_t n = 0;
  for (std::string_view part : parts) {
    const std::size_t k = std::min(part.size(), kLastErrorSize - 1 - n);
    std::memcpy(e + n, part.data(), k);
    n += k;
  }
  e[n] = '\0';
}

// Sets the last error to "<fn>: <what>" and returns `s`.
shmq_status_t fail(const char* fn, shmq_status_t s, std::string_view what) noexcept {
  set_error({fn, ": ", what});
  return s;
}

shmq_status_t from_status(const char* fn, shmq::Status s) noexcept {
  if (s == shmq::Status::ok) return SHMQ_OK;
  return fail(fn, static_cast<shmq_status_t>(s), shmq::to_string(s));
}

shmq_status_t from_errc(shmq::Errc e) noexcept {
  switch (e) {
    case shmq::Errc::ok:
      return SHMQ_OK;
    case shmq::Errc::invalid_argument:
      return SHMQ_INVALID;
    case shmq::Errc::not_found:
      return SHMQ_NOT_FOUND;
    case shmq::Errc::already_exists:
      return SHMQ_ALREADY_EXISTS;
    case shmq::Errc::permission_denied:
      return SHMQ_PERMISSION_DENIED;
    case shmq::Errc::bad_magic:
      return SHMQ_BAD_MAGIC;
    case shmq::Errc::incompatible_version:
      return SHMQ_INCOMPATIBLE_VERSION;
    case shmq::Errc::corrupt:
      return SHMQ_CORRUPT;
    case shmq::Errc::not_initialized:
      return SHMQ_NOT_INITIALIZED;
    case shmq::Errc::no_space:
      return SHMQ_NO_SPACE;
    case shmq::Errc::system_error:
      return SHMQ_SYSTEM_ERROR;
    case shmq::Errc::mismatch:
      return SHMQ_MISMATCH;
  }
  return SHMQ_INTERNAL;
}

shmq_status_t from_error(const char* fn, const shmq::Error& e) noexcept {
  const shmq_status_t s = from_errc(e.code());
  return s == SHMQ_OK ? SHMQ_OK : fail(fn, s, e.message());
}

shmq_status_t null_argument(const char* fn, const char* name) noexcept {
  set_error({fn, ": ", name, " is NULL"});
  return SHMQ_INVALID;
}

// Runs `body` (which returns a shmq_status_t and sets the message of a failure itself):
// clears the last error first, and maps an escaping exception to a status.
template <typename F>
shmq_status_t guarded(const char* fn, F&& body) noexcept {
  last_error()[0] = '\0';
  try {
    return body();
  } catch (const std::bad_alloc&) {
    return fail(fn, SHMQ_NO_MEMORY, "out of memory");
  } catch (const shmq::BadResultAccess& e) {
    return from_error(fn, e.error());
  } catch (const std::exception& e) {
    return fail(fn, SHMQ_INTERNAL, e.what());
  } catch (...) {
    return fail(fn, SHMQ_INTERNAL, "unknown exception");
  }
}

// Copies a caller's versioned struct over `out` (which holds the defaults): the first
// struct_size bytes, so fields a caller built with an older header does not know keep their
// defaults. False (SHMQ_INVALID) for a struct_size this library cannot read.
template <typename T>
bool read_versioned(const char* fn, const T* in, T& out, shmq_status_t& status) noexcept {
  if (in == nullptr) return true;
  if (in->struct_size < sizeof(size_t) || in->struct_size > sizeof(T)) {
    status = fail(fn, SHMQ_INVALID,
                  "struct_size " + std::to_string(in->struct_size) +
                      " is not that of this library's struct (" + std::to_string(sizeof(T)) +
                      "): initialise it with its _init function");
    return false;
  }
  std::memcpy(static_cast<void*>(&out), in, in->struct_size);
  out.struct_size = sizeof(T);
  return true;
}

// Writes `full` into the caller's struct: its first struct_size bytes (struct_size kept).
// The _init functions of the versioned structs: zeroed, struct_size set. NULL: nothing.
template <typename T>
void init_versioned(T* s) noexcept {
  if (s == nullptr) return;
  std::memset(static_cast<void*>(s), 0, sizeof *s);
  s->struct_size = sizeof *s;
}

template <typename T>
shmq_status_t write_versioned(const char* fn, const T& full, T* out) noexcept {
  if (out == nullptr) return null_argument(fn, "out");
  const std::size_t n = out->struct_size;
  if (n < sizeof(size_t) || n > sizeof(T))
    return fail(fn, SHMQ_INVALID,
                "struct_size " + std::to_string(n) + " is not that of this library's struct (" +
                    std::to_string(sizeof(T)) + "): initialise it with its _init function");
  std::memcpy(static_cast<void*>(out), &full, n);
  out->struct_size = n;
  return SHMQ_OK;
}

// A duration in ms, at most 100 years (the library adds durations to clock readings in
// nanoseconds: no overflow).
milliseconds ms(std::uint64_t v) noexcept {
  constexpr std::uint64_t kMaxMs = 100ull * 365 * 86400 * 1000;
  return milliseconds(static_cast<milliseconds::rep>(std::min(v, kMaxMs)));
}

std::uint64_t to_ms(milliseconds d) noexcept {
  return d.count() < 0 ? 0 : static_cast<std::uint64_t>(d.count());
}

// A timeout in ms as nanoseconds, saturating (nanoseconds::max() waits forever).
nanoseconds timeout_ns(std::uint64_t timeout_ms) noexcept {
  constexpr std::uint64_t kMaxMs = static_cast<std::uint64_t>(INT64_MAX) / 1'000'000;
  if (timeout_ms >= kMaxMs) return nanoseconds::max();
  return nanoseconds(static_cast<std::int64_t>(timeout_ms) * 1'000'000);
}

shmq::Bytes bytes(const void* data, std::size_t size) noexcept {
  return {static_cast<const std::byte*>(data), size};
}

shmq::QueueOptions to_cpp(const shmq_queue_options_t& o) {
  shmq::QueueOptions q;
  q.slot_count = o.slot_count;
  q.slot_size = o.slot_size;
  q.max_message_size = o.max_message_size;
  q.max_members = o.max_members;
  q.mode = o.mode;
  q.lease = ms(o.lease_ms);
  q.max_deliveries = o.max_deliveries;
  q.ttl = ms(o.ttl_ms);
  q.backoff_initial = ms(o.backoff_initial_ms);
  q.backoff_max = ms(o.backoff_max_ms);
  q.dead_letter = o.dead_letter;
  q.heartbeat_liveness = o.heartbeat_liveness;
  q.heartbeat_timeout = ms(o.heartbeat_timeout_ms);
  q.claim_timeout = ms(o.claim_timeout_ms);
  q.durability = static_cast<shmq::Durability>(o.durability);
  q.data_dir = o.data_dir != nullptr ? o.data_dir : "";
  q.flush_interval = ms(o.flush_interval_ms);
  q.checksum = o.checksum;
  q.max_priority = o.max_priority;
  q.dedup_window.count = o.dedup_count;
  q.dedup_window.time = std::chrono::seconds(static_cast<std::int64_t>(
      std::min<std::uint64_t>(o.dedup_time_s, static_cast<std::uint64_t>(INT64_MAX))));
  return q;
}

shmq_queue_options_t from_cpp(const shmq::QueueOptions& q, const std::string& data_dir) {
  shmq_queue_options_t o;
  shmq_queue_options_init(&o);
  o.slot_count = q.slot_count;
  o.slot_size = q.slot_size;
  o.max_message_size = q.max_message_size;
  o.max_members = q.max_members;
  o.mode = q.mode;
  o.lease_ms = to_ms(q.lease);
  o.max_deliveries = q.max_deliveries;
  o.ttl_ms = to_ms(q.ttl);
  o.backoff_initial_ms = to_ms(q.backoff_initial);
  o.backoff_max_ms = to_ms(q.backoff_max);
  o.dead_letter = q.dead_letter;
  o.heartbeat_liveness = q.heartbeat_liveness;
  o.heartbeat_timeout_ms = to_ms(q.heartbeat_timeout);
  o.claim_timeout_ms = to_ms(q.claim_timeout);
  o.durability = static_cast<shmq_durability_t>(q.durability);
  o.data_dir = data_dir.empty() ? nullptr : data_dir.c_str();
  o.flush_interval_ms = to_ms(q.flush_interval);
  o.checksum = q.checksum;
  o.max_priority = q.max_priority;
  o.dedup_count = q.dedup_window.count;
  o.dedup_time_s =
      static_cast<std::uint64_t>(std::max<std::int64_t>(q.dedup_window.time.count(), 0));
  return o;
}

// The value a C caller stored in an enum field, read as its underlying integer: C lets any
// int be stored there, and loading a value outside the enumerators through the enum type is
// undefined in C++.
template <typename E>
std::underlying_type_t<E> raw(const E& field) noexcept {
  std::underlying_type_t<E> v;
  std::memcpy(&v, &field, sizeof v);
  return v;
}

bool valid_durability(const shmq_durability_t& d) noexcept {
  const auto v = raw(d);
  return v == SHMQ_DURABILITY_NONE || v == SHMQ_DURABILITY_ASYNC || v == SHMQ_DURABILITY_SYNC;
}

// Reads options (NULL: defaults) into C++ queue options.
bool queue_options(const char* fn, const shmq_queue_options_t* in, shmq::QueueOptions& out,
                   shmq_status_t& status) {
  shmq_queue_options_t o;
  shmq_queue_options_init(&o);
  if (!read_versioned(fn, in, o, status)) return false;
  if (!valid_durability(o.durability)) {
    status = fail(fn, SHMQ_INVALID, "durability is not a shmq_durability_t");
    return false;
  }
  out = to_cpp(o);
  return true;
}

// Send options and their properties, converted to C++ (the Properties owned here, so the
// SendOptions' pointer stays valid for the call).
struct SendArgs {
  shmq::SendOptions options;
  shmq::Properties properties;
};

bool send_args(const char* fn, const shmq_send_options_t* in, SendArgs& out,
               shmq_status_t& status) {
  shmq_send_options_t o;
  shmq_send_options_init(&o);
  if (!read_versioned(fn, in, o, status)) return false;
  out.options.id = o.id;
  out.options.priority = o.priority;
  out.options.delay = ms(o.delay_ms);
  if (o.not_before_unix_ms > 0)
    out.options.not_before = std::chrono::system_clock::time_point(
        std::chrono::duration_cast<std::chrono::system_clock::duration>(
            milliseconds(o.not_before_unix_ms)));
  if (o.properties != nullptr) {
    shmq_properties_t p;
    shmq_properties_init(&p);
    if (!read_versioned(fn, o.properties, p, status)) return false;
    if (p.header_count > 0 && p.headers == nullptr) {
      status = null_argument(fn, "properties->headers");
      return false;
    }
    auto str = [](const char* s) { return s != nullptr ? std::string(s) : std::string(); };
    out.properties.content_type = str(p.content_type);
    out.properties.correlation_id = str(p.correlation_id);
    out.properties.reply_to = str(p.reply_to);
    for (std::size_t i = 0; i < p.header_count; ++i) {
      if (p.headers[i].key == nullptr || p.headers[i].value == nullptr) {
        status = null_argument(fn, "a header's key or value");
        return false;
      }
      out.properties.headers.emplace_back(p.headers[i].key, p.headers[i].value);
    }
    out.options.properties = &out.properties;
  }
  return true;
}

// The C++ Message of a handle, for functions that return a value (NULL-safe).
const shmq::Message* msg(const shmq_message_t* m) noexcept {
  return m != nullptr ? &m->message : nullptr;
}

shmq_string_t sv(std::string_view s) noexcept { return {s.data(), s.size()}; }

const char* kStillHeld = "the message handle still holds a delivery: ack, nack or reject it first";

}  // namespace

// Definitions of the functions declared extern "C" in shmq.h (they keep that linkage).

// --- status and errors -------------------------------------------------------------------

const char* shmq_status_string(shmq_status_t status) {
  switch (status) {
    case SHMQ_OK:
      return "ok";
    case SHMQ_FULL:
      return "full";
    case SHMQ_EMPTY:
      return "empty";
    case SHMQ_TIMEOUT:
      return "timeout";
    case SHMQ_INTERRUPTED:
      return "interrupted";
    case SHMQ_TOO_LARGE:
      return "too_large";
    case SHMQ_LEASE_LOST:
      return "lease_lost";
    case SHMQ_INVALID:
      return "invalid";
    case SHMQ_CLOSED:
      return "closed";
    case SHMQ_NO_PERSISTER:
      return "no_persister";
    case SHMQ_UNCONFIRMED:
      return "unconfirmed";
    case SHMQ_WRONG_CONSUMER:
      return "wrong_consumer";
    case SHMQ_EVICTED:
      return "evicted";
    case SHMQ_DUPLICATE:
      return "duplicate";
    case SHMQ_NOT_FOUND:
      return "not_found";
    case SHMQ_ALREADY_EXISTS:
      return "already_exists";
    case SHMQ_PERMISSION_DENIED:
      return "permission_denied";
    case SHMQ_BAD_MAGIC:
      return "bad_magic";
    case SHMQ_INCOMPATIBLE_VERSION:
      return "incompatible_version";
    case SHMQ_CORRUPT:
      return "corrupt";
    case SHMQ_NOT_INITIALIZED:
      return "not_initialized";
    case SHMQ_NO_SPACE:
      return "no_space";
    case SHMQ_SYSTEM_ERROR:
      return "system_error";
    case SHMQ_MISMATCH:
      return "mismatch";
    case SHMQ_NO_MEMORY:
      return "no_memory";
    case SHMQ_INTERNAL:
      return "internal";
  }
  return "unknown";
}

const char* shmq_last_error(void) { return last_error(); }

// --- queues ------------------------------------------------------------------------------

void shmq_queue_options_init(shmq_queue_options_t* o) {
  if (o == nullptr) return;
  const shmq::QueueOptions d;
  std::memset(static_cast<void*>(o), 0, sizeof *o);
  o->struct_size = sizeof *o;
  o->slot_count = d.slot_count;
  o->slot_size = d.slot_size;
  o->max_message_size = d.max_message_size;
  o->max_members = d.max_members;
  o->mode = d.mode;
  o->lease_ms = to_ms(d.lease);
  o->max_deliveries = d.max_deliveries;
  o->ttl_ms = to_ms(d.ttl);
  o->backoff_initial_ms = to_ms(d.backoff_initial);
  o->backoff_max_ms = to_ms(d.backoff_max);
  o->dead_letter = d.dead_letter;
  o->heartbeat_liveness = d.heartbeat_liveness;
  o->heartbeat_timeout_ms = to_ms(d.heartbeat_timeout);
  o->claim_timeout_ms = to_ms(d.claim_timeout);
  o->durability = static_cast<shmq_durability_t>(d.durability);
  o->data_dir = nullptr;
  o->flush_interval_ms = to_ms(d.flush_interval);
  o->checksum = d.checksum;
  o->max_priority = d.max_priority;
  o->dedup_count = d.dedup_window.count;
  o->dedup_time_s = static_cast<std::uint64_t>(d.dedup_window.time.count());
}

namespace {
template <typename Open>
shmq_status_t open_queue(const char* fn, const char* name, shmq_queue_t** out, Open&& open) {
  return guarded(fn, [&]() -> shmq_status_t {
    if (out == nullptr) return null_argument(fn, "out");
    *out = nullptr;
    if (name == nullptr) return null_argument(fn, "name");
    shmq::Result<shmq::Queue> q = open();
    if (!q) return from_error(fn, q.error());
    *out = new shmq_queue{std::move(q.value()), {}};
    return SHMQ_OK;
  });
}
}  // namespace

shmq_status_t shmq_queue_create(const char* name, const shmq_queue_options_t* options,
                                shmq_queue_t** out) {
  static constexpr const char* fn = "shmq_queue_create";
  shmq_status_t status = SHMQ_OK;
  shmq::QueueOptions o;
  const shmq_status_t s = guarded(fn, [&]() -> shmq_status_t {
    return queue_options(fn, options, o, status) ? SHMQ_OK : status;
  });
  if (s != SHMQ_OK) {
    if (out != nullptr) *out = nullptr;
    return s;
  }
  return open_queue(fn, name, out, [&] { return shmq::Queue::create(name, o); });
}

shmq_status_t shmq_queue_open(const char* name, shmq_queue_t** out) {
  return open_queue("shmq_queue_open", name, out, [&] { return shmq::Queue::open(name); });
}

shmq_status_t shmq_queue_open_or_create(const char* name, const shmq_queue_options_t* options,
                                        shmq_queue_t** out) {
  static constexpr const char* fn = "shmq_queue_open_or_create";
  shmq_status_t status = SHMQ_OK;
  shmq::QueueOptions o;
  const shmq_status_t s = guarded(fn, [&]() -> shmq_status_t {
    return queue_options(fn, options, o, status) ? SHMQ_OK : status;
  });
  if (s != SHMQ_OK) {
    if (out != nullptr) *out = nullptr;
    return s;
  }
  return open_queue(fn, name, out, [&] { return shmq::Queue::open_or_create(name, o); });
}

shmq_status_t shmq_queue_remove(const char* name) {
  static constexpr const char* fn = "shmq_queue_remove";
  return guarded(fn, [&]() -> shmq_status_t {
    if (name == nullptr) return null_argument(fn, "name");
    const shmq::VoidResult r = shmq::Queue::remove(name);
    return r ? SHMQ_OK : from_error(fn, r.error());
  });
}

void shmq_queue_close(shmq_queue_t* queue) { delete queue; }

const char* shmq_queue_name(const shmq_queue_t* queue) {
  return queue != nullptr ? queue->queue.name().c_str() : nullptr;
}

shmq_status_t shmq_queue_get_options(const shmq_queue_t* queue, shmq_queue_options_t* out) {
  static constexpr const char* fn = "shmq_queue_get_options";
  return guarded(fn, [&]() -> shmq_status_t {
    if (queue == nullptr) return null_argument(fn, "queue");
    if (out == nullptr) return null_argument(fn, "out");
    const shmq::QueueOptions q = queue->queue.options();
    // The handle keeps the string the returned data_dir points to.
    auto* mutable_queue = const_cast<shmq_queue_t*>(queue);
    mutable_queue->data_dir = q.data_dir;
    return write_versioned(fn, from_cpp(q, mutable_queue->data_dir), out);
  });
}

void shmq_policy_update_init(shmq_policy_update_t* u) { init_versioned(u); }

shmq_status_t shmq_queue_set_policy(shmq_queue_t* queue, const shmq_policy_update_t* update) {
  static constexpr const char* fn = "shmq_queue_set_policy";
  return guarded(fn, [&]() -> shmq_status_t {
    if (queue == nullptr) return null_argument(fn, "queue");
    if (update == nullptr) return null_argument(fn, "update");
    shmq_policy_update_t u;
    shmq_policy_update_init(&u);
    shmq_status_t status = SHMQ_OK;
    if (!read_versioned(fn, update, u, status)) return status;
    shmq::PolicyUpdate p;
    if (u.has_lease) p.lease = ms(u.lease_ms);
    if (u.has_max_deliveries) p.max_deliveries = u.max_deliveries;
    if (u.has_ttl) p.ttl = ms(u.ttl_ms);
    if (u.has_backoff_initial) p.backoff_initial = ms(u.backoff_initial_ms);
    if (u.has_backoff_max) p.backoff_max = ms(u.backoff_max_ms);
    const shmq::VoidResult r = queue->queue.set_policy(p);
    return r ? SHMQ_OK : from_error(fn, r.error());
  });
}

void shmq_queue_stats_init(shmq_queue_stats_t* s) { init_versioned(s); }

shmq_status_t shmq_queue_get_stats(const shmq_queue_t* queue, shmq_queue_stats_t* out) {
  static constexpr const char* fn = "shmq_queue_get_stats";
  return guarded(fn, [&]() -> shmq_status_t {
    if (queue == nullptr) return null_argument(fn, "queue");
    if (out == nullptr) return null_argument(fn, "out");
    const shmq::QueueStats q = queue->queue.stats();
    shmq_queue_stats_t s;
    shmq_queue_stats_init(&s);
    s.slot_count = q.slot_count;
    s.slot_size = q.slot_size;
    s.max_message_size = q.max_message_size;
    s.max_members = q.max_members;
    s.max_priority = q.max_priority;
    s.producers = q.producers;
    s.consumers = q.consumers;
    s.tail = q.tail;
    s.dispatch = q.dispatch;
    s.ready = q.ready;
    s.in_flight = q.in_flight;
    s.claimed = q.claimed;
    s.free_slots = q.free_slots;
    s.sent = q.sent;
    s.received = q.received;
    s.acked = q.acked;
    s.requeued = q.requeued;
    s.delayed = q.delayed;
    s.next_due_ns = q.next_due_ns;
    s.oldest_unacked_age_ms = q.oldest_unacked_age_ms;
    s.members_reclaimed = q.members_reclaimed;
    s.redelivered = q.redelivered;
    s.leases_expired = q.leases_expired;
    s.holes_repaired = q.holes_repaired;
    s.dead_lettered = q.dead_lettered;
    s.expired = q.expired;
    s.dead_letter_failed = q.dead_letter_failed;
    s.corrupt = q.corrupt;
    s.dedup_duplicates = q.dedup_duplicates;
    s.dedup_evicted_early = q.dedup_evicted_early;
    s.dedup_voided = q.dedup_voided;
    s.persisted = q.persisted;
    s.watchdog_active = q.watchdog_active;
    s.synced = q.synced;
    return write_versioned(fn, s, out);
  });
}

shmq_status_t shmq_queue_producer(shmq_queue_t* queue, shmq_producer_t** out) {
  static constexpr const char* fn = "shmq_queue_producer";
  return guarded(fn, [&]() -> shmq_status_t {
    if (out == nullptr) return null_argument(fn, "out");
    *out = nullptr;
    if (queue == nullptr) return null_argument(fn, "queue");
    shmq::Result<shmq::Producer> p = queue->queue.producer();
    if (!p) return from_error(fn, p.error());
    *out = new shmq_producer{std::move(p.value())};
    return SHMQ_OK;
  });
}

shmq_status_t shmq_queue_idempotent_producer(shmq_queue_t* queue, uint32_t producer_id,
                                             uint32_t next_sequence, shmq_producer_t** out) {
  static constexpr const char* fn = "shmq_queue_idempotent_producer";
  return guarded(fn, [&]() -> shmq_status_t {
    if (out == nullptr) return null_argument(fn, "out");
    *out = nullptr;
    if (queue == nullptr) return null_argument(fn, "queue");
    shmq::Result<shmq::Producer> p = queue->queue.idempotent_producer(
        {.producer_id = producer_id, .next_sequence = next_sequence});
    if (!p) return from_error(fn, p.error());
    *out = new shmq_producer{std::move(p.value())};
    return SHMQ_OK;
  });
}

void shmq_repair_report_init(shmq_repair_report_t* r) { init_versioned(r); }

shmq_status_t shmq_queue_repair(shmq_queue_t* queue, shmq_repair_report_t* out) {
  static constexpr const char* fn = "shmq_queue_repair";
  return guarded(fn, [&]() -> shmq_status_t {
    if (queue == nullptr) return null_argument(fn, "queue");
    const shmq::RepairReport r = queue->queue.repair();
    if (out == nullptr) return SHMQ_OK;
    shmq_repair_report_t c;
    shmq_repair_report_init(&c);
    c.watchdog_running = r.watchdog_running;
    c.members_reclaimed = r.members_reclaimed;
    c.redelivered = r.redelivered;
    c.holes_repaired = r.holes_repaired;
    return write_versioned(fn, c, out);
  });
}

void shmq_consumer_options_init(shmq_consumer_options_t* o) {
  if (o == nullptr) return;
  std::memset(static_cast<void*>(o), 0, sizeof *o);
  o->struct_size = sizeof *o;
  o->zero_copy = shmq::ConsumerOptions{}.zero_copy;
}

shmq_status_t shmq_queue_consumer(shmq_queue_t* queue, const shmq_consumer_options_t* options,
                                  shmq_consumer_t** out) {
  static constexpr const char* fn = "shmq_queue_consumer";
  return guarded(fn, [&]() -> shmq_status_t {
    if (out == nullptr) return null_argument(fn, "out");
    *out = nullptr;
    if (queue == nullptr) return null_argument(fn, "queue");
    shmq_consumer_options_t o;
    shmq_consumer_options_init(&o);
    shmq_status_t status = SHMQ_OK;
    if (!read_versioned(fn, options, o, status)) return status;
    shmq::Result<shmq::Consumer> c = queue->queue.consumer({.zero_copy = o.zero_copy});
    if (!c) return from_error(fn, c.error());
    *out = new shmq_consumer{std::move(c.value())};
    return SHMQ_OK;
  });
}

// --- producers ---------------------------------------------------------------------------

void shmq_properties_init(shmq_properties_t* p) { init_versioned(p); }

void shmq_send_options_init(shmq_send_options_t* o) { init_versioned(o); }

namespace {
// The common part of the three sends: arguments checked, options converted.
template <typename Send>
shmq_status_t producer_send(const char* fn, shmq_producer_t* producer, const void* data,
                            std::size_t size, const shmq_send_options_t* options, Send&& send) {
  return guarded(fn, [&]() -> shmq_status_t {
    if (producer == nullptr) return null_argument(fn, "producer");
    if (data == nullptr && size != 0) return null_argument(fn, "data");
    SendArgs args;
    shmq_status_t status = SHMQ_OK;
    if (!send_args(fn, options, args, status)) return status;
    return from_status(fn, send(producer->producer, bytes(data, size), args.options));
  });
}
}  // namespace

shmq_status_t shmq_producer_send(shmq_producer_t* producer, const void* data, size_t size,
                                 const shmq_send_options_t* options) {
  return producer_send(
      "shmq_producer_send", producer, data, size, options,
      [](shmq::Producer& p, shmq::Bytes b, const shmq::SendOptions& o) { return p.send(b, o); });
}

shmq_status_t shmq_producer_try_send(shmq_producer_t* producer, const void* data, size_t size,
                                     const shmq_send_options_t* options) {
  return producer_send("shmq_producer_try_send", producer, data, size, options,
                       [](shmq::Producer& p, shmq::Bytes b, const shmq::SendOptions& o) {
                         return p.try_send(b, o);
                       });
}

shmq_status_t shmq_producer_send_for(shmq_producer_t* producer, const void* data, size_t size,
                                     uint64_t timeout_ms, const shmq_send_options_t* options) {
  return producer_send(
      "shmq_producer_send_for", producer, data, size, options,
      [timeout_ms](shmq::Producer& p, shmq::Bytes b, const shmq::SendOptions& o) {
        return timeout_ms == SHMQ_FOREVER ? p.send(b, o) : p.send_for(b, timeout_ns(timeout_ms), o);
      });
}

shmq_status_t shmq_producer_send_batch(shmq_producer_t* producer, const shmq_buffer_t* messages,
                                       size_t count, uint64_t timeout_ms,
                                       const shmq_send_options_t* options, size_t* sent) {
  static constexpr const char* fn = "shmq_producer_send_batch";
  if (sent != nullptr) *sent = 0;
  return guarded(fn, [&]() -> shmq_status_t {
    if (producer == nullptr) return null_argument(fn, "producer");
    if (messages == nullptr && count != 0) return null_argument(fn, "messages");
    SendArgs args;
    shmq_status_t status = SHMQ_OK;
    if (!send_args(fn, options, args, status)) return status;
    std::vector<shmq::Bytes> batch;
    batch.reserve(count);
    for (std::size_t i = 0; i < count; ++i) {
      if (messages[i].data == nullptr && messages[i].size != 0)
        return null_argument(fn, "messages[i].data");
      batch.push_back(bytes(messages[i].data, messages[i].size));
    }
    shmq::Status s = shmq::Status::ok;
    const std::size_t n =
        producer->producer.send_batch(batch, timeout_ns(timeout_ms), &s, args.options);
    if (sent != nullptr) *sent = n;
    if (n == count && s == shmq::Status::ok) return SHMQ_OK;
    // send_batch leaves *status ok when it stops for no reason of its own (it should not).
    return from_status(fn, s == shmq::Status::ok ? shmq::Status::invalid : s);
  });
}

shmq_status_t shmq_producer_session(const shmq_producer_t* producer, uint32_t* producer_id,
                                    uint32_t* next_sequence) {
  static constexpr const char* fn = "shmq_producer_session";
  return guarded(fn, [&]() -> shmq_status_t {
    if (producer == nullptr) return null_argument(fn, "producer");
    if (producer_id == nullptr) return null_argument(fn, "producer_id");
    if (next_sequence == nullptr) return null_argument(fn, "next_sequence");
    const std::optional<shmq::ProducerSession> session = producer->producer.session();
    if (!session) return fail(fn, SHMQ_INVALID, "not an idempotent producer");
    *producer_id = session->producer_id;
    *next_sequence = session->next_sequence;
    return SHMQ_OK;
  });
}

uint64_t shmq_producer_last_position(const shmq_producer_t* producer) {
  return producer != nullptr ? producer->producer.last_position() : 0;
}

void shmq_producer_interrupt(shmq_producer_t* producer) {
  if (producer != nullptr) producer->producer.interrupt();
}

void shmq_producer_clear_interrupt(shmq_producer_t* producer) {
  if (producer != nullptr) producer->producer.clear_interrupt();
}

void shmq_producer_close(shmq_producer_t* producer) { delete producer; }

// --- messages ----------------------------------------------------------------------------

shmq_status_t shmq_message_new(shmq_message_t** out) {
  static constexpr const char* fn = "shmq_message_new";
  return guarded(fn, [&]() -> shmq_status_t {
    if (out == nullptr) return null_argument(fn, "out");
    *out = new shmq_message{};
    return SHMQ_OK;
  });
}

void shmq_message_free(shmq_message_t* message) { delete message; }

const void* shmq_message_data(const shmq_message_t* m) {
  return m != nullptr ? static_cast<const void*>(m->message.data().data()) : nullptr;
}
size_t shmq_message_size(const shmq_message_t* m) { return m != nullptr ? m->message.size() : 0; }
uint64_t shmq_message_position(const shmq_message_t* m) {
  return m != nullptr ? m->message.position() : 0;
}
uint64_t shmq_message_id(const shmq_message_t* m) { return m != nullptr ? m->message.id() : 0; }
uint32_t shmq_message_delivery_count(const shmq_message_t* m) {
  return m != nullptr ? m->message.delivery_count() : 0;
}
bool shmq_message_redelivered(const shmq_message_t* m) {
  return m != nullptr && m->message.redelivered();
}
uint32_t shmq_message_priority(const shmq_message_t* m) {
  return m != nullptr ? m->message.priority() : 0;
}
bool shmq_message_held(const shmq_message_t* m) { return m != nullptr && m->message.held(); }
bool shmq_message_valid(const shmq_message_t* m) { return m != nullptr && m->message.valid(); }

void shmq_message_properties_init(shmq_message_properties_t* p) { init_versioned(p); }

shmq_status_t shmq_message_get_properties(const shmq_message_t* message,
                                          shmq_message_properties_t* out) {
  static constexpr const char* fn = "shmq_message_get_properties";
  return guarded(fn, [&]() -> shmq_status_t {
    const shmq::Message* m = msg(message);
    if (m == nullptr) return null_argument(fn, "message");
    if (out == nullptr) return null_argument(fn, "out");
    if (m->data().data() == nullptr)
      return fail(fn, SHMQ_INVALID, "the message handle holds no message");
    const shmq::PropertiesView v = m->properties();
    shmq_message_properties_t p;
    shmq_message_properties_init(&p);
    p.present = v.present();
    p.content_type = sv(v.content_type());
    p.correlation_id = sv(v.correlation_id());
    p.reply_to = sv(v.reply_to());
    p.timestamp_ns = v.timestamp_ns();
    p.header_count = v.header_count();
    return write_versioned(fn, p, out);
  });
}

shmq_status_t shmq_message_header_at(const shmq_message_t* message, size_t index,
                                     shmq_string_t* key, shmq_string_t* value) {
  static constexpr const char* fn = "shmq_message_header_at";
  return guarded(fn, [&]() -> shmq_status_t {
    const shmq::Message* m = msg(message);
    if (m == nullptr) return null_argument(fn, "message");
    if (key == nullptr) return null_argument(fn, "key");
    if (value == nullptr) return null_argument(fn, "value");
    std::size_t i = 0;
    for (const auto& [k, v] : m->properties().headers()) {
      if (i++ == index) {
        *key = sv(k);
        *value = sv(v);
        return SHMQ_OK;
      }
    }
    return fail(fn, SHMQ_INVALID,
                "index " + std::to_string(index) + " is past the " + std::to_string(i) +
                    " headers of the message");
  });
}

shmq_status_t shmq_message_header(const shmq_message_t* message, const char* key,
                                  shmq_string_t* value) {
  static constexpr const char* fn = "shmq_message_header";
  return guarded(fn, [&]() -> shmq_status_t {
    const shmq::Message* m = msg(message);
    if (m == nullptr) return null_argument(fn, "message");
    if (key == nullptr) return null_argument(fn, "key");
    if (value == nullptr) return null_argument(fn, "value");
    const std::optional<std::string_view> v = m->properties().header(key);
    if (!v) return fail(fn, SHMQ_EMPTY, std::string("no header '") + key + "'");
    *value = sv(*v);
    return SHMQ_OK;
  });
}

// --- consumers ---------------------------------------------------------------------------

namespace {
template <typename Receive>
shmq_status_t consumer_receive(const char* fn, shmq_consumer_t* consumer, shmq_message_t* message,
                               Receive&& receive) {
  return guarded(fn, [&]() -> shmq_status_t {
    if (consumer == nullptr) return null_argument(fn, "consumer");
    if (message == nullptr) return null_argument(fn, "message");
    if (message->message.held()) return fail(fn, SHMQ_INVALID, kStillHeld);
    return from_status(fn, receive(consumer->consumer, message->message));
  });
}

template <typename Op>
shmq_status_t consumer_op(const char* fn, shmq_consumer_t* consumer, shmq_message_t* message,
                          Op&& op) {
  return guarded(fn, [&]() -> shmq_status_t {
    if (consumer == nullptr) return null_argument(fn, "consumer");
    if (message == nullptr) return null_argument(fn, "message");
    return from_status(fn, op(consumer->consumer, message->message));
  });
}
}  // namespace

shmq_status_t shmq_consumer_receive(shmq_consumer_t* consumer, shmq_message_t* message) {
  return consumer_receive("shmq_consumer_receive", consumer, message,
                          [](shmq::Consumer& c, shmq::Message& m) { return c.receive(m); });
}

shmq_status_t shmq_consumer_try_receive(shmq_consumer_t* consumer, shmq_message_t* message) {
  return consumer_receive("shmq_consumer_try_receive", consumer, message,
                          [](shmq::Consumer& c, shmq::Message& m) { return c.try_receive(m); });
}

shmq_status_t shmq_consumer_receive_for(shmq_consumer_t* consumer, shmq_message_t* message,
                                        uint64_t timeout_ms) {
  return consumer_receive(
      "shmq_consumer_receive_for", consumer, message,
      [timeout_ms](shmq::Consumer& c, shmq::Message& m) {
        return timeout_ms == SHMQ_FOREVER ? c.receive(m) : c.receive_for(m, timeout_ns(timeout_ms));
      });
}

shmq_status_t shmq_consumer_receive_batch(shmq_consumer_t* consumer,
                                          shmq_message_t* const* messages, size_t count,
                                          uint64_t timeout_ms, size_t* received) {
  static constexpr const char* fn = "shmq_consumer_receive_batch";
  if (received != nullptr) *received = 0;
  return guarded(fn, [&]() -> shmq_status_t {
    if (consumer == nullptr) return null_argument(fn, "consumer");
    if (received == nullptr) return null_argument(fn, "received");
    if (messages == nullptr) return null_argument(fn, "messages");
    if (count == 0) return fail(fn, SHMQ_INVALID, "count is 0");
    for (std::size_t i = 0; i < count; ++i) {
      if (messages[i] == nullptr) return null_argument(fn, "messages[i]");
      if (messages[i]->message.held()) return fail(fn, SHMQ_INVALID, kStillHeld);
    }
    // Received into C++ messages, then moved into the handles (a move hands the delivery
    // over: Message's move assignment).
    std::vector<shmq::Message> batch(count);
    const std::size_t n = consumer->consumer.receive_batch(batch, timeout_ns(timeout_ms));
    for (std::size_t i = 0; i < n; ++i) messages[i]->message = std::move(batch[i]);
    *received = n;
    if (n > 0) return SHMQ_OK;
    // receive_batch does not say why it got nothing; a zero-wait poll tells closed and
    // interrupted from a plain timeout.
    shmq::Message probe;
    const shmq::Status s = consumer->consumer.try_receive(probe);
    if (s == shmq::Status::ok) {
      messages[0]->message = std::move(probe);
      *received = 1;
      return SHMQ_OK;
    }
    return from_status(fn, s == shmq::Status::empty ? shmq::Status::timeout : s);
  });
}

shmq_status_t shmq_consumer_ack(shmq_consumer_t* consumer, shmq_message_t* message) {
  return consumer_op("shmq_consumer_ack", consumer, message,
                     [](shmq::Consumer& c, shmq::Message& m) { return c.ack(m); });
}

shmq_status_t shmq_consumer_nack(shmq_consumer_t* consumer, shmq_message_t* message) {
  return consumer_op("shmq_consumer_nack", consumer, message,
                     [](shmq::Consumer& c, shmq::Message& m) { return c.nack(m); });
}

shmq_status_t shmq_consumer_nack_after(shmq_consumer_t* consumer, shmq_message_t* message,
                                       uint64_t delay_ms) {
  return consumer_op(
      "shmq_consumer_nack_after", consumer, message,
      [delay_ms](shmq::Consumer& c, shmq::Message& m) { return c.nack_after(m, ms(delay_ms)); });
}

shmq_status_t shmq_consumer_reject(shmq_consumer_t* consumer, shmq_message_t* message) {
  return consumer_op("shmq_consumer_reject", consumer, message,
                     [](shmq::Consumer& c, shmq::Message& m) { return c.nack(m, false); });
}

shmq_status_t shmq_consumer_extend_lease(shmq_consumer_t* consumer, shmq_message_t* message,
                                         uint64_t extension_ms) {
  return consumer_op("shmq_consumer_extend_lease", consumer, message,
                     [extension_ms](shmq::Consumer& c, shmq::Message& m) {
                       return c.extend_lease(m, ms(extension_ms));
                     });
}

shmq_status_t shmq_consumer_release_all(shmq_consumer_t* consumer, size_t* released) {
  static constexpr const char* fn = "shmq_consumer_release_all";
  return guarded(fn, [&]() -> shmq_status_t {
    if (consumer == nullptr) return null_argument(fn, "consumer");
    const std::size_t n = consumer->consumer.release_all();
    if (released != nullptr) *released = n;
    return SHMQ_OK;
  });
}

void shmq_consumer_interrupt(shmq_consumer_t* consumer) {
  if (consumer != nullptr) consumer->consumer.interrupt();
}

void shmq_consumer_clear_interrupt(shmq_consumer_t* consumer) {
  if (consumer != nullptr) consumer->consumer.clear_interrupt();
}

void shmq_consumer_close(shmq_consumer_t* consumer) { delete consumer; }

// --- topics ------------------------------------------------------------------------------

void shmq_topic_options_init(shmq_topic_options_t* o) {
  if (o == nullptr) return;
  const shmq::TopicOptions d;
  std::memset(static_cast<void*>(o), 0, sizeof *o);
  o->struct_size = sizeof *o;
  o->slot_count = d.slot_count;
  o->slot_size = d.slot_size;
  o->max_members = d.max_members;
  o->max_groups = d.max_groups;
  o->mode = d.mode;
  o->history = d.history;
  o->lease_ms = to_ms(d.lease);
  o->max_deliveries = d.max_deliveries;
  o->dead_letter = d.dead_letter;
  o->claim_timeout_ms = to_ms(d.claim_timeout);
  o->durability = static_cast<shmq_durability_t>(d.durability);
  o->data_dir = nullptr;
  o->flush_interval_ms = to_ms(d.flush_interval);
  o->retain_bytes = d.retain_bytes;
  o->retain_age_s = static_cast<std::uint64_t>(d.retain_age.count());
}

void shmq_group_options_init(shmq_group_options_t* o) {
  if (o == nullptr) return;
  std::memset(static_cast<void*>(o), 0, sizeof *o);
  o->struct_size = sizeof *o;
  o->policy = SHMQ_GROUP_RELIABLE;
  o->start = SHMQ_START_LATEST;
  o->on_stall = SHMQ_STALL_HOLD;
}

shmq_status_t shmq_topic_create(const char* name, const shmq_topic_options_t* options,
                                shmq_topic_t** out) {
  static constexpr const char* fn = "shmq_topic_create";
  return guarded(fn, [&]() -> shmq_status_t {
    if (out == nullptr) return null_argument(fn, "out");
    *out = nullptr;
    if (name == nullptr) return null_argument(fn, "name");
    shmq_topic_options_t o;
    shmq_topic_options_init(&o);
    shmq_status_t status = SHMQ_OK;
    if (!read_versioned(fn, options, o, status)) return status;
    if (!valid_durability(o.durability))
      return fail(fn, SHMQ_INVALID, "durability is not a shmq_durability_t");
    shmq::TopicOptions t;
    t.slot_count = o.slot_count;
    t.slot_size = o.slot_size;
    t.max_members = o.max_members;
    t.max_groups = o.max_groups;
    t.mode = o.mode;
    t.history = o.history;
    t.lease = ms(o.lease_ms);
    t.max_deliveries = o.max_deliveries;
    t.dead_letter = o.dead_letter;
    t.claim_timeout = ms(o.claim_timeout_ms);
    t.durability = static_cast<shmq::Durability>(o.durability);
    t.data_dir = o.data_dir != nullptr ? o.data_dir : "";
    t.flush_interval = ms(o.flush_interval_ms);
    t.retain_bytes = o.retain_bytes;
    t.retain_age = std::chrono::seconds(static_cast<std::int64_t>(
        std::min<std::uint64_t>(o.retain_age_s, static_cast<std::uint64_t>(INT64_MAX))));
    shmq::Result<shmq::Topic> r = shmq::Topic::create(name, t);
    if (!r) return from_error(fn, r.error());
    *out = new shmq_topic{std::move(r.value())};
    return SHMQ_OK;
  });
}

shmq_status_t shmq_topic_open(const char* name, shmq_topic_t** out) {
  static constexpr const char* fn = "shmq_topic_open";
  return guarded(fn, [&]() -> shmq_status_t {
    if (out == nullptr) return null_argument(fn, "out");
    *out = nullptr;
    if (name == nullptr) return null_argument(fn, "name");
    shmq::Result<shmq::Topic> r = shmq::Topic::open(name);
    if (!r) return from_error(fn, r.error());
    *out = new shmq_topic{std::move(r.value())};
    return SHMQ_OK;
  });
}

shmq_status_t shmq_topic_remove(const char* name) {
  static constexpr const char* fn = "shmq_topic_remove";
  return guarded(fn, [&]() -> shmq_status_t {
    if (name == nullptr) return null_argument(fn, "name");
    const shmq::VoidResult r = shmq::Topic::remove(name);
    return r ? SHMQ_OK : from_error(fn, r.error());
  });
}

bool shmq_topic_is_topic(const char* name) {
  if (name == nullptr) return false;
  try {
    return shmq::Topic::is_topic(name);
  } catch (...) {
    return false;
  }
}

void shmq_topic_close(shmq_topic_t* topic) { delete topic; }

const char* shmq_topic_name(const shmq_topic_t* topic) {
  return topic != nullptr ? topic->topic.name().c_str() : nullptr;
}

shmq_status_t shmq_topic_create_group(shmq_topic_t* topic, const char* group,
                                      const shmq_group_options_t* options) {
  static constexpr const char* fn = "shmq_topic_create_group";
  return guarded(fn, [&]() -> shmq_status_t {
    if (topic == nullptr) return null_argument(fn, "topic");
    if (group == nullptr) return null_argument(fn, "group");
    shmq_group_options_t o;
    shmq_group_options_init(&o);
    shmq_status_t status = SHMQ_OK;
    if (!read_versioned(fn, options, o, status)) return status;
    shmq::GroupOptions g;
    switch (raw(o.policy)) {
      case SHMQ_GROUP_RELIABLE:
        g.policy = shmq::GroupPolicy::reliable;
        break;
      case SHMQ_GROUP_LOSSY:
        g.policy = shmq::GroupPolicy::lossy;
        break;
      default:
        return fail(fn, SHMQ_INVALID, "policy is not a shmq_group_policy_t");
    }
    switch (raw(o.start)) {
      case SHMQ_START_LATEST:
        g.start = shmq::StartAt::latest();
        break;
      case SHMQ_START_EARLIEST:
        g.start = shmq::StartAt::earliest();
        break;
      case SHMQ_START_POSITION:
        g.start = shmq::StartAt::at(o.start_position);
        break;
      default:
        return fail(fn, SHMQ_INVALID, "start is not a shmq_start_at_t");
    }
    switch (raw(o.on_stall)) {
      case SHMQ_STALL_HOLD:
        g.on_stall = shmq::StallAction::hold;
        break;
      case SHMQ_STALL_DETACH:
        g.on_stall = shmq::StallAction::detach;
        break;
      default:
        return fail(fn, SHMQ_INVALID, "on_stall is not a shmq_stall_action_t");
    }
    g.stall_timeout = ms(o.stall_timeout_ms);
    const shmq::Result<shmq::GroupStats> r = topic->topic.create_group(group, g);
    return r ? SHMQ_OK : from_error(fn, r.error());
  });
}

shmq_status_t shmq_topic_delete_group(shmq_topic_t* topic, const char* group) {
  static constexpr const char* fn = "shmq_topic_delete_group";
  return guarded(fn, [&]() -> shmq_status_t {
    if (topic == nullptr) return null_argument(fn, "topic");
    if (group == nullptr) return null_argument(fn, "group");
    const shmq::VoidResult r = topic->topic.delete_group(group);
    return r ? SHMQ_OK : from_error(fn, r.error());
  });
}

void shmq_topic_stats_init(shmq_topic_stats_t* s) { init_versioned(s); }

shmq_status_t shmq_topic_get_stats(const shmq_topic_t* topic, shmq_topic_stats_t* out) {
  static constexpr const char* fn = "shmq_topic_get_stats";
  return guarded(fn, [&]() -> shmq_status_t {
    if (topic == nullptr) return null_argument(fn, "topic");
    if (out == nullptr) return null_argument(fn, "out");
    const shmq::TopicStats t = topic->topic.stats();
    shmq_topic_stats_t s;
    shmq_topic_stats_init(&s);
    s.slot_count = t.slot_count;
    s.slot_size = t.slot_size;
    s.max_message_size = t.max_message_size;
    s.max_groups = t.max_groups;
    s.history = t.history;
    s.publishers = t.publishers;
    s.subscribers = t.subscribers;
    s.group_count = static_cast<std::uint32_t>(t.groups.size());
    s.head = t.head;
    s.earliest = t.earliest;
    s.persisted = t.persisted;
    s.published = t.published;
    s.holes = t.holes;
    return write_versioned(fn, s, out);
  });
}

void shmq_group_stats_init(shmq_group_stats_t* s) { init_versioned(s); }

shmq_status_t shmq_topic_group_stats(const shmq_topic_t* topic, const char* group,
                                     shmq_group_stats_t* out) {
  static constexpr const char* fn = "shmq_topic_group_stats";
  return guarded(fn, [&]() -> shmq_status_t {
    if (topic == nullptr) return null_argument(fn, "topic");
    if (group == nullptr) return null_argument(fn, "group");
    if (out == nullptr) return null_argument(fn, "out");
    for (const shmq::GroupStats& g : topic->topic.groups()) {
      if (g.name != group) continue;
      shmq_group_stats_t s;
      shmq_group_stats_init(&s);
      std::snprintf(s.name, sizeof s.name, "%s", g.name.c_str());
      std::snprintf(s.state, sizeof s.state, "%s", g.state.c_str());
      s.policy = g.policy == shmq::GroupPolicy::lossy ? SHMQ_GROUP_LOSSY : SHMQ_GROUP_RELIABLE;
      s.position = g.position;
      s.acked = g.acked;
      s.lag = g.lag;
      s.in_flight = g.in_flight;
      s.requeued = g.requeued;
      s.members = g.members;
      s.delivered = g.delivered;
      s.acks = g.acks;
      s.redelivered = g.redelivered;
      s.missed = g.missed;
      s.dead_lettered = g.dead_lettered;
      s.dropped = g.dropped;
      return write_versioned(fn, s, out);
    }
    return fail(fn, SHMQ_NOT_FOUND,
                std::string("no group '") + group + "' in topic '" + topic->topic.name() + "'");
  });
}

shmq_status_t shmq_topic_publisher(shmq_topic_t* topic, shmq_publisher_t** out) {
  static constexpr const char* fn = "shmq_topic_publisher";
  return guarded(fn, [&]() -> shmq_status_t {
    if (out == nullptr) return null_argument(fn, "out");
    *out = nullptr;
    if (topic == nullptr) return null_argument(fn, "topic");
    shmq::Result<shmq::Publisher> p = topic->topic.publisher();
    if (!p) return from_error(fn, p.error());
    *out = new shmq_publisher{std::move(p.value())};
    return SHMQ_OK;
  });
}

shmq_status_t shmq_topic_subscriber(shmq_topic_t* topic, const char* group,
                                    shmq_subscriber_t** out) {
  static constexpr const char* fn = "shmq_topic_subscriber";
  return guarded(fn, [&]() -> shmq_status_t {
    if (out == nullptr) return null_argument(fn, "out");
    *out = nullptr;
    if (topic == nullptr) return null_argument(fn, "topic");
    if (group == nullptr) return null_argument(fn, "group");
    shmq::Result<shmq::Subscriber> s = topic->topic.subscriber(group);
    if (!s) return from_error(fn, s.error());
    *out = new shmq_subscriber{std::move(s.value())};
    return SHMQ_OK;
  });
}

namespace {
template <typename Send>
shmq_status_t publisher_send(const char* fn, shmq_publisher_t* publisher, const void* data,
                             std::size_t size, Send&& send) {
  return guarded(fn, [&]() -> shmq_status_t {
    if (publisher == nullptr) return null_argument(fn, "publisher");
    if (data == nullptr && size != 0) return null_argument(fn, "data");
    return from_status(fn, send(publisher->publisher, bytes(data, size)));
  });
}
}  // namespace

shmq_status_t shmq_publisher_send(shmq_publisher_t* publisher, const void* data, size_t size,
                                  uint64_t id) {
  return publisher_send("shmq_publisher_send", publisher, data, size,
                        [id](shmq::Publisher& p, shmq::Bytes b) { return p.send(b, id); });
}

shmq_status_t shmq_publisher_try_send(shmq_publisher_t* publisher, const void* data, size_t size,
                                      uint64_t id) {
  return publisher_send("shmq_publisher_try_send", publisher, data, size,
                        [id](shmq::Publisher& p, shmq::Bytes b) { return p.try_send(b, id); });
}

shmq_status_t shmq_publisher_send_for(shmq_publisher_t* publisher, const void* data, size_t size,
                                      uint64_t timeout_ms, uint64_t id) {
  return publisher_send("shmq_publisher_send_for", publisher, data, size,
                        [id, timeout_ms](shmq::Publisher& p, shmq::Bytes b) {
                          return timeout_ms == SHMQ_FOREVER
                                     ? p.send(b, id)
                                     : p.send_for(b, timeout_ns(timeout_ms), id);
                        });
}

uint64_t shmq_publisher_last_position(const shmq_publisher_t* publisher) {
  return publisher != nullptr ? publisher->publisher.last_position() : 0;
}

void shmq_publisher_interrupt(shmq_publisher_t* publisher) {
  if (publisher != nullptr) publisher->publisher.interrupt();
}

void shmq_publisher_close(shmq_publisher_t* publisher) { delete publisher; }

shmq_status_t shmq_delivery_new(shmq_delivery_t** out) {
  static constexpr const char* fn = "shmq_delivery_new";
  return guarded(fn, [&]() -> shmq_status_t {
    if (out == nullptr) return null_argument(fn, "out");
    *out = new shmq_delivery{};
    return SHMQ_OK;
  });
}

void shmq_delivery_free(shmq_delivery_t* delivery) { delete delivery; }

const void* shmq_delivery_data(const shmq_delivery_t* d) {
  return d != nullptr ? static_cast<const void*>(d->delivery.data().data()) : nullptr;
}
size_t shmq_delivery_size(const shmq_delivery_t* d) {
  return d != nullptr ? d->delivery.size() : 0;
}
uint64_t shmq_delivery_position(const shmq_delivery_t* d) {
  return d != nullptr ? d->delivery.position() : 0;
}
uint64_t shmq_delivery_id(const shmq_delivery_t* d) { return d != nullptr ? d->delivery.id() : 0; }
uint32_t shmq_delivery_delivery_count(const shmq_delivery_t* d) {
  return d != nullptr ? d->delivery.delivery_count() : 0;
}
bool shmq_delivery_redelivered(const shmq_delivery_t* d) {
  return d != nullptr && d->delivery.redelivered();
}
uint64_t shmq_delivery_missed_before(const shmq_delivery_t* d) {
  return d != nullptr ? d->delivery.missed_before() : 0;
}
bool shmq_delivery_held(const shmq_delivery_t* d) { return d != nullptr && d->delivery.held(); }

namespace {
template <typename Receive>
shmq_status_t subscriber_receive(const char* fn, shmq_subscriber_t* subscriber,
                                 shmq_delivery_t* delivery, Receive&& receive) {
  return guarded(fn, [&]() -> shmq_status_t {
    if (subscriber == nullptr) return null_argument(fn, "subscriber");
    if (delivery == nullptr) return null_argument(fn, "delivery");
    if (delivery->delivery.held())
      return fail(fn, SHMQ_INVALID,
                  "the delivery handle still holds a delivery: ack, nack or reject it first");
    return from_status(fn, receive(subscriber->subscriber, delivery->delivery));
  });
}

template <typename Op>
shmq_status_t subscriber_op(const char* fn, shmq_subscriber_t* subscriber,
                            shmq_delivery_t* delivery, Op&& op) {
  return guarded(fn, [&]() -> shmq_status_t {
    if (subscriber == nullptr) return null_argument(fn, "subscriber");
    if (delivery == nullptr) return null_argument(fn, "delivery");
    return from_status(fn, op(subscriber->subscriber, delivery->delivery));
  });
}
}  // namespace

shmq_status_t shmq_subscriber_receive(shmq_subscriber_t* subscriber, shmq_delivery_t* delivery) {
  return subscriber_receive("shmq_subscriber_receive", subscriber, delivery,
                            [](shmq::Subscriber& s, shmq::Delivery& d) { return s.receive(d); });
}

shmq_status_t shmq_subscriber_try_receive(shmq_subscriber_t* subscriber,
                                          shmq_delivery_t* delivery) {
  return subscriber_receive(
      "shmq_subscriber_try_receive", subscriber, delivery,
      [](shmq::Subscriber& s, shmq::Delivery& d) { return s.try_receive(d); });
}

shmq_status_t shmq_subscriber_receive_for(shmq_subscriber_t* subscriber, shmq_delivery_t* delivery,
                                          uint64_t timeout_ms) {
  return subscriber_receive(
      "shmq_subscriber_receive_for", subscriber, delivery,
      [timeout_ms](shmq::Subscriber& s, shmq::Delivery& d) {
        return timeout_ms == SHMQ_FOREVER ? s.receive(d) : s.receive_for(d, timeout_ns(timeout_ms));
      });
}

shmq_status_t shmq_subscriber_ack(shmq_subscriber_t* subscriber, shmq_delivery_t* delivery) {
  return subscriber_op("shmq_subscriber_ack", subscriber, delivery,
                       [](shmq::Subscriber& s, shmq::Delivery& d) { return s.ack(d); });
}

shmq_status_t shmq_subscriber_nack(shmq_subscriber_t* subscriber, shmq_delivery_t* delivery,
                                   uint64_t delay_ms) {
  return subscriber_op(
      "shmq_subscriber_nack", subscriber, delivery,
      [delay_ms](shmq::Subscriber& s, shmq::Delivery& d) { return s.nack(d, ms(delay_ms)); });
}

shmq_status_t shmq_subscriber_reject(shmq_subscriber_t* subscriber, shmq_delivery_t* delivery) {
  return subscriber_op("shmq_subscriber_reject", subscriber, delivery,
                       [](shmq::Subscriber& s, shmq::Delivery& d) { return s.reject(d); });
}

shmq_status_t shmq_subscriber_extend_lease(shmq_subscriber_t* subscriber, shmq_delivery_t* delivery,
                                           uint64_t extension_ms) {
  return subscriber_op("shmq_subscriber_extend_lease", subscriber, delivery,
                       [extension_ms](shmq::Subscriber& s, shmq::Delivery& d) {
                         return s.extend_lease(d, ms(extension_ms));
                       });
}

shmq_status_t shmq_subscriber_release_all(shmq_subscriber_t* subscriber, size_t* released) {
  static constexpr const char* fn = "shmq_subscriber_release_all";
  return guarded(fn, [&]() -> shmq_status_t {
    if (subscriber == nullptr) return null_argument(fn, "subscriber");
    const std::size_t n = subscriber->subscriber.release_all();
    if (released != nullptr) *released = n;
    return SHMQ_OK;
  });
}

void shmq_subscriber_interrupt(shmq_subscriber_t* subscriber) {
  if (subscriber != nullptr) subscriber->subscriber.interrupt();
}

const char* shmq_subscriber_group(const shmq_subscriber_t* subscriber) {
  return subscriber != nullptr ? subscriber->subscriber.group().c_str() : nullptr;
}

void shmq_subscriber_close(shmq_subscriber_t* subscriber) { delete subscriber; }
