// Queue::browse: copies messages out of the ring without taking them.
#include <algorithm>
#include <atomic>
#include <cstring>

#include "core/properties_block.hpp"
#include "ring/ring.hpp"
#include "ring/slot_word.hpp"
#include "segment/segment.hpp"
#include "shmq/queue.hpp"

namespace shmq {

namespace {

using detail::SlotState;

// Copies the message whose head is at `pos` if its slot word is `w`. False if the slot
// changed while it was read (the word is read again after the copy, seqlock-style) or if it
// does not describe a message honestly (fragment count out of range).
bool copy_out(const detail::Segment& seg, std::uint64_t pos, std::uint64_t w,
              std::size_t max_bytes, BrowsedMessage& out) {
  const detail::SlotHeader& h = seg.slot(pos);
  const std::uint32_t k = detail::word_aux(w);
  // Nothing read from the segment is trusted: bound fragments and length by the geometry.
  if (k == 0 || k > seg.max_fragments() || k > seg.slot_count()) return false;
  const std::uint64_t payload = seg.payload_size();
  const std::uint32_t length = h.length.load(std::memory_order_relaxed);
  const std::uint64_t len = length & detail::kLengthMask;
  const bool has_properties = (length & detail::kLengthHasProperties) != 0;
  out.position = pos;
  out.priority = seg.priority_level();
  out.id = h.id.load(std::memory_order_relaxed);
  out.delivery_count = h.delivery_count.load(std::memory_order_relaxed);
  // Checked with the rest by the word's re-read below.
  out.due_ns = detail::word_state(w) == SlotState::delayed
                   ? h.deadline_ns.load(std::memory_order_relaxed)
                   : 0;
  out.size = static_cast<std::size_t>(
      std::min<std::uint64_t>(len, std::min<std::uint64_t>(seg.max_message_size(), k * payload)));
  // With properties, the block comes first: copy it too (it is at most kMaxPropertiesSize).
  const std::size_t want =
      !has_properties ? max_bytes
      : max_bytes > SIZE_MAX - kMaxPropertiesSize ? SIZE_MAX
                                                  : max_bytes + kMaxPropertiesSize;
  const std::size_t n = std::min(out.size, want);
  out.data.resize(n);
  for (std::size_t off = 0, q = 0; off < n; ++q) {
    const std::size_t m = static_cast<std::size_t>(std::min<std::uint64_t>(payload, n - off));
    std::memcpy(out.data.data() + off, seg.payload(pos + q), m);
    off += m;
  }
  detail::acquire_fence_after_copy();
  if (h.word.load(std::memory_order_relaxed) != w) return false;
  out.properties_block.clear();
  if (has_properties) {
    // A block that does not parse (a scribble) is shown as none, the bytes as they are.
    const std::size_t ps = detail::checked_properties_size(out.data);
    if (ps != 0) {
      out.properties_block.assign(out.data.begin(), out.data.begin() + std::ptrdiff_t(ps));
      out.data.erase(out.data.begin(), out.data.begin() + std::ptrdiff_t(ps));
      out.size -= ps;
    }
    if (out.data.size() > max_bytes) out.data.resize(max_bytes);
  }
  return true;
}

}  // namespace

std::vector<BrowsedMessage> Queue::browse(std::size_t max_count, bool include_in_flight,
                                          std::size_t max_bytes) const {
  if (segment_->priority_level() != 0 || segment_->max_priority() == 0)
    return browse_one(max_count, include_in_flight, max_bytes);
  // A queue with priorities: in the order a consumer would take them, highest level first.
  std::vector<BrowsedMessage> out;
  for (std::uint32_t p = segment_->max_priority(); p >= 1 && out.size() < max_count; --p) {
    auto q = open_level(p);
    if (!q.ok()) continue;
    for (BrowsedMessage& m : q.value().browse_one(max_count - out.size(), include_in_flight,
                                                  max_bytes))
      out.push_back(std::move(m));
  }
  if (out.size() < max_count)
    for (BrowsedMessage& m : browse_one(max_count - out.size(), include_in_flight, max_bytes))
      out.push_back(std::move(m));
  return out;
}

std::vector<BrowsedMessage> Queue::browse_one(std::size_t max_count, bool include_in_flight,
                                              std::size_t max_bytes) const {
  const detail::Segment& seg = *segment_;
  const std::uint64_t tail = seg.header().tail.value.load(std::memory_order_acquire);
  const std::uint64_t n = seg.slot_count();
  std::vector<BrowsedMessage> out;
  // Every message lies in [tail - N, tail); the walk is bounded by the ring. Counted from
  // its start, not "pos < tail": a step past a tail scribbled near 2^64 wraps pos to 0.
  const std::uint64_t start = tail > n ? tail - n : 0;
  const std::uint64_t span = tail - start;
  for (std::uint64_t walked = 0; walked < span && out.size() < max_count;) {
    const std::uint64_t pos = start + walked;
    std::uint64_t step = 1;
    for (int attempt = 0; attempt < 4; ++attempt) {
      // Acquire: pairs with the producer's release of ready (header and payload visible).
      const std::uint64_t w = seg.slot(pos).word.load(std::memory_order_acquire);
      if (detail::word_lap(w) != detail::lap_of(pos, seg.slot_shift())) break;
      const SlotState st = detail::word_state(w);
      BrowsedMessage m;
      if (st == SlotState::ready) {
        m.state = BrowsedMessage::State::ready;
      } else if (include_in_flight && st == SlotState::held) {
        m.state = BrowsedMessage::State::in_flight;
      } else if (include_in_flight && st == SlotState::delayed) {
        m.state = BrowsedMessage::State::delayed;
      } else {
        // Skip over the continuations of a multi-slot message that is not shown.
        if (st == SlotState::held || st == SlotState::delayed || st == SlotState::claimed ||
            detail::is_relocating(st))
          step = std::max<std::uint64_t>(1, std::min<std::uint64_t>(detail::word_aux(w), n));
        break;
      }
      if (copy_out(seg, pos, w, max_bytes, m)) {
        step = std::max<std::uint64_t>(1, detail::word_aux(w));
        out.push_back(std::move(m));
        break;
      }
    }
    walked += step;
  }
  return out;
}

}  // namespace shmq
