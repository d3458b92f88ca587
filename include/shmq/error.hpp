// One error model for the whole library.
//
// Setup and administrative calls (create, open, attach) return Result<T>: a value, or an
// Error with a code and a message that says what failed and why. Hot-path calls (send,
// receive, ack) return a [[nodiscard]] Status enum and never allocate.
#pragma once

#include <cstdint>
#include <exception>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace shmq {

// Outcome of a hot-path operation.
enum class [[nodiscard]] Status : std::uint8_t {
  ok = 0,
  full,         // ring full of unacked messages (try_ / timed send only)
  empty,        // nothing to receive (try_ / timed receive only)
  timeout,      // a timed call ran out of time
  interrupted,  // interrupt() was called on the producer/consumer
  too_large,    // message larger than the queue's max message size
  lease_lost,   // ack/nack of a message this consumer no longer holds (lease expired,
                // reclaimed, or already acked or nacked through this handle)
  invalid,      // bad argument (e.g. a message handle that never held a message)
  closed,       // the queue was removed (Queue::remove, shmqctl delete): this process is
                // attached to a segment nobody can open any more; blocking calls return this
                // instead of waiting forever. Open the queue again.
  no_persister, // sync queue, try_send, no persister (shmqd) attached: the message was sent
                // (it is in the ring and will be delivered) but nobody can confirm it now
  unconfirmed,  // sync queue, try_send: the message was sent, its confirmation did not come
                // within try_send's bounded wait (it may still be persisted)
  wrong_consumer,  // ack/nack/extend_lease of a message another consumer received
  evicted,      // this producer's or consumer's member row was taken from it: a watchdog
                // judged it dead (heartbeat mode: no heartbeat for heartbeat_timeout, e.g.
                // the process was stopped). Everything it held was redelivered; the handle
                // can do nothing more (every call returns this). Open a new one.
  duplicate,    // a send whose id was already sent within the queue's deduplication window
                // (QueueOptions::dedup_window): nothing was enqueued; the first send's
                // message is (or was) in the queue
};

std::string_view to_string(Status s) noexcept;

enum class Errc : std::uint8_t {
  ok = 0,
  invalid_argument,      // bad name, bad geometry, bad option
  not_found,             // queue segment does not exist
  already_exists,        // create of an existing queue
  permission_denied,     // owner/mode check or EACCES
  bad_magic,             // not an shmq segment
  incompatible_version,  // another layout version
  corrupt,               // segment fails validation (too small, bad geometry)
  not_initialized,       // creator never finished initialising the segment
  no_space,              // /dev/shm full, or no free member row
  system_error,          // any other errno
  mismatch,              // open_or_create: the existing queue's options differ from those given
};

std::string_view to_string(Errc e) noexcept;

class Error {
 public:
  Error() = default;
  Error(Errc code, std::string message) : code_(code), message_(std::move(message)) {}

  Errc code() const noexcept { return code_; }
  const std::string& message() const noexcept { return message_; }

 private:
  Errc code_ = Errc::ok;
  std::string message_;
};

// Thrown by Result<T>::value() (and ->, *) on a Result that holds an Error: it carries that
// Error, and what() is "shmq: <code>: <message>".
class BadResultAccess : public std::exception {
 public:
  explicit BadResultAccess(Error error)
      : error_(std::move(error)),
        what_("shmq: " + std::string(to_string(error_.code())) + ": " + error_.message()) {}
  const Error& error() const noexcept { return error_; }
  const char* what() const noexcept override { return what_.c_str(); }

 private:
  Error error_;
  std::string what_;
};

// A value or an Error. Deliberately small: ok(), value(), error(), operator bool.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}          // NOLINT(google-explicit-constructor)
  Result(Error error) : v_(std::move(error)) {}      // NOLINT(google-explicit-constructor)

  bool ok() const noexcept { return v_.index() == 0; }
  explicit operator bool() const noexcept { return ok(); }

  // The value; on an error, throws BadResultAccess carrying the Error (check ok() first to
  // avoid exceptions).
  T& value() & { checked(); return std::get<0>(v_); }
  T&& value() && { checked(); return std::get<0>(std::move(v_)); }
  const T& value() const& { checked(); return std::get<0>(v_); }
  T* operator->() { return &value(); }
  T& operator*() & { return value(); }

  // Precondition: !ok(). On a Result that holds a value, returns an Error with code ok.
  const Error& error() const {
    static const Error kNone;
    return ok() ? kNone : std::get<1>(v_);
  }

 private:
  void checked() const {
    if (!ok()) throw BadResultAccess(std::get<1>(v_));
  }
  std::variant<T, Error> v_;
};

// Result<void>.
class [[nodiscard]] VoidResult {
 public:
  VoidResult() = default;
  VoidResult(Error error) : error_(std::move(error)) {}  // NOLINT(google-explicit-constructor)
  bool ok() const noexcept { return error_.code() == Errc::ok; }
  explicit operator bool() const noexcept { return ok(); }
  const Error& error() const noexcept { return error_; }

 private:
  Error error_;
};

}  // namespace shmq
