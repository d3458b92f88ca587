#include "core/dead_letter.hpp"
#include "shmq/queue.hpp"

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "core/checksum.hpp"
#include "core/properties_block.hpp"
#include "core/slot_ops.hpp"
#include "persist/republish.hpp"
#include "platform/crash_point.hpp"
#include "platform/process.hpp"
#include "ring/ring.hpp"
#include "ring/slot_word.hpp"

namespace shmq {

std::string_view to_string(DeadLetterReason r) noexcept {
  switch (r) {
    case DeadLetterReason::max_deliveries: return "max_deliveries";
    case DeadLetterReason::expired: return "expired";
    case DeadLetterReason::rejected: return "rejected";
    case DeadLetterReason::corrupt: return "corrupt";
  }
  return "unknown";
}

std::optional<DeadLetter> parse_dead_letter(std::span<const std::byte> m) noexcept {
  if (m.size() < kDeadLetterEnvelopeSize) return std::nullopt;
  std::uint32_t magic = 0, dc = 0, priority = 0;
  std::uint16_t version = 0, reason = 0;
  std::uint64_t pos = 0, id = 0;
  std::memcpy(&magic, m.data(), 4);
  std::memcpy(&version, m.data() + 4, 2);
  std::memcpy(&reason, m.data() + 6, 2);
  std::memcpy(&dc, m.data() + 8, 4);
  std::memcpy(&priority, m.data() + 12, 4);
  std::memcpy(&pos, m.data() + 16, 8);
  std::memcpy(&id, m.data() + 24, 8);
  if (magic != kDeadLetterMagic || (version != 1 && version != 2) || reason < 1 || reason > 4)
    return std::nullopt;
  if (priority > kMaxPriority) priority = 0;  // not ours to interpret
  std::span<const std::byte> rest = m.subspan(kDeadLetterEnvelopeSize);
  std::span<const std::byte> block;
  if (version == 2) {
    const std::size_t ps = detail::checked_properties_size(rest);
    if (ps == 0) return std::nullopt;  // a version 2 envelope must carry a valid block
    block = rest.first(ps);
    rest = rest.subspan(ps);
  }
  return DeadLetter{static_cast<DeadLetterReason>(reason), dc, pos, id, rest, priority, block};
}

}  // namespace shmq

namespace shmq::detail {

QueueOptions dead_letter_options(const QueueOptions& parent) {
  QueueOptions o = parent;
  o.max_message_size = parent.max_message_size + kDeadLetterEnvelopeSize;
  // Grow the ring until a largest message plus its envelope fits.
  auto fits = [&] {
    const std::uint64_t payload = o.slot_size - payload_offset(o.checksum);
    return std::min<std::uint64_t>(o.slot_count, kMaxFragments) * payload >= o.max_message_size;
  };
  while (!fits() && o.slot_count < kMaxFragments && o.slot_count < kMaxSlots) o.slot_count *= 2;
  while (!fits() && o.slot_size < kMaxSlotSize) o.slot_size *= 2;
  o.max_deliveries = 0;
  o.ttl = std::chrono::milliseconds(0);
  o.backoff_initial = std::chrono::milliseconds(0);
  o.dead_letter = false;
  // Dead letters keep their ids (and one id may be dead-lettered twice: redelivered from
  // the DLQ by replay, then dead-lettered again): never deduplicated.
  o.dedup_window = {};
  return o;
}

std::string foreign_dead_letter_queue(std::string_view queue, uid_t owner,
                                      std::uint32_t queue_mode) {
  const std::string dlq = Queue::dead_letter_name(queue);
  auto f = Segment::owner_of(dlq);
  if (!f.ok()) return f.error().message();
  const std::string path = "/dev/shm/" + Segment::object_name(dlq);
  char mode[16];
  std::snprintf(mode, sizeof mode, "%04o", f.value().mode);
  char qmode[16];
  std::snprintf(qmode, sizeof qmode, "%04o", queue_mode & 07777);
  if (!f.value().regular)
    return "its dead-letter queue " + path + " exists and is not a segment (owner uid " +
           std::to_string(f.value().uid) + "); remove it";
  if (f.value().uid != owner)
    return "its dead-letter queue " + path + " already exists and is owned by uid " +
           std::to_string(f.value().uid) + ", not by the queue's owner (uid " +
           std::to_string(owner) + "); refusing to use it (remove it or pick another name)";
  if ((f.value().mode & 0777 & ~queue_mode) != 0)
    return "its dead-letter queue " + path + " already exists with mode " + mode +
           ", wider than the queue's " + qmode + "; refusing to use it (remove it or chmod " +
           qmode + " it)";
  return {};
}

bool DeadLetterSink::open() {
  // A DLQ removed since we opened it (shmqctl delete, Queue::remove) is nobody's any more:
  // a dead letter sent there would be lost with it. Open the current one instead.
  if (producer_ && dlq_ && dlq_->segment()->removed()) {
    producer_.reset();
    dlq_.reset();
  }
  if (producer_) return true;
  // A level of a queue with priorities dead-letters into its queue's DLQ.
  const std::string name = Queue::dead_letter_name(src_->base_name());
  auto q = Queue::open(name);
  if (!q.ok()) return false;
  // Owned by whoever owns the source queue, checked on the descriptor (fstat at open):
  // not another group member's segment that happens to carry the name.
  if (q->segment()->owner_uid() != src_->owner_uid()) return false;
  auto p = q->producer();
  if (!p.ok()) return false;
  dlq_.emplace(std::move(q.value()));
  producer_.emplace(std::move(p.value()));
  return true;
}

DeadLetterSink::Outcome DeadLetterSink::move(std::uint64_t pos, std::uint64_t held,
                                             DeadLetterReason reason, std::uint32_t member,
                                             bool requeue_on_failure) {
  Segment& seg = *src_;
  auto& counters = seg.header().watchdog_counters;
  if (!seg.dead_letter()) {
    if (!release_held(seg, pos, held, member)) return Outcome::lease_lost;
    if (reason == DeadLetterReason::corrupt)
      counters.corrupt.fetch_add(1, std::memory_order_relaxed);
    return Outcome::moved;
  }
  const std::uint32_t k = word_aux(held);
  SlotHeader& hdr = seg.slot(pos);
  const std::size_t len = bounded_length(seg, pos, k);
  buf_.resize(kDeadLetterEnvelopeSize + len);
  const std::uint32_t magic = kDeadLetterMagic;
  // The bytes copied below start with the original's properties block: envelope version 2
  // (decided after the copy). Read before the copy like the id.
  const bool has_properties =
      (hdr.length.load(std::memory_order_relaxed) & kLengthHasProperties) != 0;
  std::uint16_t version = 1;
  const std::uint32_t dc = hdr.delivery_count.load(std::memory_order_relaxed);
  const std::uint32_t priority = seg.priority_level();
  const std::uint64_t id = hdr.id.load(std::memory_order_relaxed);
  // Read before the copy, like the id: the check of the slot word after it covers them.
  const Seal seal = seg.checksummed() ? read_seal(seg, pos) : Seal{};
  std::memcpy(buf_.data(), &magic, 4);
  std::memcpy(buf_.data() + 8, &dc, 4);
  std::memcpy(buf_.data() + 12, &priority, 4);
  std::memcpy(buf_.data() + 16, &pos, 8);
  std::memcpy(buf_.data() + 24, &id, 8);
  const std::size_t p = seg.payload_size();
  for (std::size_t off = 0, q = pos; off < len; ++q) {
    const std::size_t n = std::min(p, len - off);
    std::memcpy(buf_.data() + kDeadLetterEnvelopeSize + off, seg.payload(q), n);
    off += n;
  }
  // Still ours after the copy? A holder stopped past its lease (or a watchdog that lost the
  // election) may be copying a slot that was taken back and reused meanwhile: send nothing.
  acquire_fence_after_copy();
  if (seg.slot(pos).word.load(std::memory_order_relaxed) != held) return Outcome::lease_lost;
  // Whatever sends a message of a checksummed queue here (expiry, max deliveries, a
  // rejection), a copy that fails its checksum goes as corrupt: a dead letter replayed into
  // a queue gets a fresh checksum, so its reason must say what it is.
  if (reason != DeadLetterReason::corrupt && seg.checksummed() &&
      !seal_matches(seal, pos, id, Bytes(buf_).subspan(kDeadLetterEnvelopeSize)))
    reason = DeadLetterReason::corrupt;
  // A dead letter always parses: a flag whose block does not parse in the copy (a scribble
  // of the length or the block) makes a version 1 envelope of the bytes as they are, with
  // reason corrupt (what a consumer would have found too).
  if (has_properties) {
    if (checked_properties_size(Bytes(buf_).subspan(kDeadLetterEnvelopeSize)) != 0)
      version = 2;
    else
      reason = DeadLetterReason::corrupt;
  }
  std::memcpy(buf_.data() + 4, &version, 2);
  const auto r = static_cast<std::uint16_t>(reason);
  std::memcpy(buf_.data() + 6, &r, 2);
  // The dead letter keeps the message's id (never 0: ids are generated at send).
  DeadLetterSink& out = shared_ != nullptr ? *shared_ : *this;
  if (!out.open() ||
      ProducerAccess::send_unconfirmed(*out.producer_, Bytes(buf_), id) != Status::ok) {
    counters.dead_letter_failed.fetch_add(1, std::memory_order_relaxed);
    if (requeue_on_failure)
      (void)requeue_held(seg, pos, held, monotonic_coarse_ns() + 1'000'000'000ull);
    return Outcome::not_moved;
  }
  // Sent: now release the original. A crash between the two leaves the message in both
  // queues (a duplicate dead letter), never in neither.
  SHMQ_CRASH_POINT("dead_letter.after_send");
  if (!release_held(seg, pos, held, member)) return Outcome::lease_lost;
  counters.dead_lettered.fetch_add(1, std::memory_order_relaxed);
  if (reason == DeadLetterReason::expired)
    counters.expired.fetch_add(1, std::memory_order_relaxed);
  if (reason == DeadLetterReason::corrupt)
    counters.corrupt.fetch_add(1, std::memory_order_relaxed);
  return Outcome::moved;
}

}  // namespace shmq::detail
