// One error model for the whole library.
//
// Setup and administrative calls (create, open, attach) return Result<T>: a value, or an
// Error with a code and a message that says what failed and why. Hot-path calls (send,
// receive, ack) return a [[nodiscard]] Status enum and never allocate.
#pragma once

#include <cstdint>
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
                // reclaimed, or already acked)
  invalid,      // bad argument (e.g. empty message handle)
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

// A value or an Error. Deliberately small: ok(), value(), error(), operator bool.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}          // NOLINT(google-explicit-constructor)
  Result(Error error) : v_(std::move(error)) {}      // NOLINT(google-explicit-constructor)

  bool ok() const noexcept { return v_.index() == 0; }
  explicit operator bool() const noexcept { return ok(); }

  // Precondition: ok().
  T& value() & { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  const T& value() const& { return std::get<0>(v_); }
  T* operator->() { return &std::get<0>(v_); }
  T& operator*() & { return std::get<0>(v_); }

  // Precondition: !ok().
  const Error& error() const { return std::get<1>(v_); }

 private:
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
