// Per-message checksums of checksummed queues (QueueOptions::checksum, kFlagChecksum).
//
// The checksum covers everything a consumer trusts about a message it takes: the position it
// claimed it at, its id, its origin (republished copies), its length and its bytes:
//
//   meta     = position, id, origin, length: four u64, little-endian (32 bytes)
//   checksum = XXH3_64bits_withSeed(payload, length, XXH3_64bits(meta))
//
// It lives in the 8 bytes after the header of the message's first slot
// (Segment::checksum_word, layout.hpp). The producer seals a message (stores its checksum)
// after it wrote the header fields and the payload and before it publishes the slot with a
// release CAS, so the checksum is published with them. A reader (a consumer after its
// ready -> held CAS, the persister before it logs, a dead-lettering move) checks the values
// it is about to use: the id and origin it read, the bytes it will hand out (its copy; the
// slot's own for a one-slot message received zero-copy) and their length. So a scribble of
// the payload, the length, the id or the origin after the publish, or a slot's whole content
// copied into another slot, is caught; a writer that recomputes the checksum is not
// (integrity, not authentication).
#pragma once

#include <cstdint>
#include <span>

#include "segment/segment.hpp"

namespace shmq::detail {

// `length_flags`: the flag bits of the slot header's length (kLengthHasProperties), hashed
// with the length so that a flipped flag is caught like a changed length.
std::uint64_t message_checksum(std::uint64_t position, std::uint64_t id, std::uint64_t origin,
                               std::span<const std::byte> payload,
                               std::uint32_t length_flags = 0) noexcept;

// Producer: stores the checksum of the message it wrote at `position`. `id`, `origin` and
// `payload` are the producer's own values (what it wrote), not read back. Relaxed: published
// by the producer's release CAS of the slot word (ready).
inline void seal_message(const Segment& seg, std::uint64_t position, std::uint64_t id,
                         std::uint64_t origin, std::span<const std::byte> payload,
                         std::uint32_t length_flags = 0) noexcept {
  seg.checksum_word(position).store(message_checksum(position, id, origin, payload, length_flags),
                                    std::memory_order_relaxed);
}

// What a reader needs besides the id, read (relaxed) before it copies the message, so that
// its check of the slot word after the copy covers them too.
struct Seal {
  std::uint64_t origin = 0;
  std::uint64_t checksum = 0;
  std::uint32_t length_flags = 0;  // the length field's flags (kLengthHasProperties)
};
inline Seal read_seal(const Segment& seg, std::uint64_t position) noexcept {
  return {seg.slot(position).origin.load(std::memory_order_relaxed),
          seg.checksum_word(position).load(std::memory_order_relaxed),
          seg.slot(position).length.load(std::memory_order_relaxed) & kLengthHasProperties};
}
// True if the message at `position` with this `id`, `seal` and `payload` (the bytes the reader
// will deliver; their size its length) is what its producer sealed.
inline bool seal_matches(const Seal& seal, std::uint64_t position, std::uint64_t id,
                         std::span<const std::byte> payload) noexcept {
  return message_checksum(position, id, seal.origin, payload, seal.length_flags) == seal.checksum;
}

// Reader of a slot that cannot change under it (the persister: nothing reuses a slot before
// `persisted` passes it): read_seal and seal_matches in one.
inline bool message_intact(const Segment& seg, std::uint64_t position, std::uint64_t id,
                           std::span<const std::byte> payload) noexcept {
  return seal_matches(read_seal(seg, position), position, id, payload);
}

}  // namespace shmq::detail
