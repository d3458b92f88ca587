#include "shmq/error.hpp"

namespace shmq {

std::string_view to_string(Status s) noexcept {
  switch (s) {
    case Status::ok: return "ok";
    case Status::full: return "full";
    case Status::empty: return "empty";
    case Status::timeout: return "timeout";
    case Status::interrupted: return "interrupted";
    case Status::too_large: return "too large";
    case Status::lease_lost: return "lease lost";
    case Status::invalid: return "invalid";
    case Status::closed: return "closed";
    case Status::no_persister: return "no persister";
    case Status::unconfirmed: return "unconfirmed";
    case Status::evicted: return "evicted";
    case Status::duplicate: return "duplicate";
    case Status::wrong_consumer: return "wrong consumer";
  }
  return "unknown";
}

std::string_view to_string(Errc e) noexcept {
  switch (e) {
    case Errc::ok: return "ok";
    case Errc::invalid_argument: return "invalid argument";
    case Errc::not_found: return "not found";
    case Errc::already_exists: return "already exists";
    case Errc::permission_denied: return "permission denied";
    case Errc::bad_magic: return "bad magic";
    case Errc::incompatible_version: return "incompatible version";
    case Errc::corrupt: return "corrupt";
    case Errc::not_initialized: return "not initialized";
    case Errc::no_space: return "no space";
    case Errc::system_error: return "system error";
    case Errc::mismatch: return "options mismatch";
  }
  return "unknown";
}

}  // namespace shmq
