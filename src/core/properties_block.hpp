// The properties block's encoder and checker (format: include/shmq/properties.hpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "shmq/error.hpp"
#include "shmq/properties.hpp"

namespace shmq::detail {

// Replaces `out` with the encoded block of `p` sent at unix time `timestamp_ns`.
// Status::invalid if `p` breaks a limit (properties.hpp); `out` is then unspecified.
Status encode_properties(const Properties& p, std::uint64_t timestamp_ns,
                         std::vector<std::byte>& out);

// The size of the well-formed properties block at the start of `bytes` (a message whose
// length has kLengthHasProperties): 0 if there is none that parses entirely inside `bytes`
// (size field in range, format 1, every string and the header count inside the block).
std::size_t checked_properties_size(std::span<const std::byte> bytes) noexcept;

}  // namespace shmq::detail
