// A bounded MPMC ring after Dmitry Vyukov's per-slot-sequence algorithm: the baseline of
// issue 16 (the closest structure to shmq's ring without acks, leases or durability).
//
// Layout (one block of memory, in shared memory or on the heap):
//
//   VyukovHeader   enqueue and dequeue positions on cache lines of their own, then the
//                  geometry (read-only once the ring is in use)
//   cells          cell_count cells of cell_bytes each: an 8-byte sequence word, then the
//                  payload (message_size bytes), the cell rounded up to whole cache lines
//
// Cell i's sequence starts at i. A producer that read enqueue position `pos` may write the
// cell when its sequence equals pos (the cell is free for lap pos / count), claims it by
// moving the enqueue position from pos to pos + 1 (CAS), writes the payload and publishes
// it by storing sequence pos + 1. A consumer at dequeue position `pos` may read the cell
// when its sequence equals pos + 1, claims it with a CAS of the dequeue position, reads the
// payload and frees the cell for the next lap by storing pos + count.
//
// Written for the benchmark from the published description; no acks, no crash recovery:
// a process that dies between claim and publish blocks the ring for ever.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <new>

namespace shmq_bench {

struct VyukovHeader {
  // Both written by every producer (resp. consumer) with a CAS; 128 bytes apart so that
  // producers and consumers never share a line (adjacent-line prefetch included).
  alignas(128) std::atomic<std::uint64_t> enqueue_pos;
  alignas(128) std::atomic<std::uint64_t> dequeue_pos;
  alignas(128) std::uint64_t cell_count;  // a power of two
  std::uint64_t cell_bytes;               // sequence word + payload, whole cache lines
  std::uint64_t message_size;             // every message has exactly this size
};
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);
static_assert(sizeof(VyukovHeader) == 384);
static_assert(offsetof(VyukovHeader, dequeue_pos) == 128);

struct VyukovCell {
  std::atomic<std::uint64_t> seq;
  // the payload follows, at offset 8
};
static_assert(sizeof(VyukovCell) == 8);

// A view of a ring laid out as above; cheap to copy, holds no ownership.
class VyukovRing {
 public:
  static std::size_t cell_bytes_for(std::size_t message_size) {
    return (sizeof(VyukovCell) + message_size + 63) / 64 * 64;
  }
  static std::size_t bytes_for(std::size_t cells, std::size_t message_size) {
    return sizeof(VyukovHeader) + cells * cell_bytes_for(message_size);
  }

  // Lays an empty ring out in `mem` (bytes_for(cells, message_size) bytes, 128-aligned,
  // not yet seen by any other thread or process). `cells`: a power of two.
  static VyukovRing init(void* mem, std::size_t cells, std::size_t message_size) {
    auto* h = new (mem) VyukovHeader();
    h->enqueue_pos.store(0, std::memory_order_relaxed);
    h->dequeue_pos.store(0, std::memory_order_relaxed);
    h->cell_count = cells;
    h->cell_bytes = cell_bytes_for(message_size);
    h->message_size = message_size;
    VyukovRing r(mem);
    for (std::size_t i = 0; i < cells; ++i) {
      auto* c = new (r.cell(i)) VyukovCell();
      c->seq.store(i, std::memory_order_relaxed);
    }
    // The block reaches other processes through fork/mmap (and threads through their
    // creation), which order these plain stores before any use.
    return r;
  }

  // A view of a ring init() laid out (in this or another process's mapping).
  explicit VyukovRing(void* mem)
      : h_(static_cast<VyukovHeader*>(mem)),
        cells_(static_cast<std::byte*>(mem) + sizeof(VyukovHeader)),
        mask_(h_->cell_count - 1),
        cell_bytes_(h_->cell_bytes),
        size_(h_->message_size) {}

  std::size_t message_size() const noexcept { return size_; }
  std::size_t cell_count() const noexcept { return mask_ + 1; }

  // One message of message_size() bytes from `p`; false if the ring is full.
  bool try_enqueue(const std::byte* p) noexcept {
    // Relaxed: the position is only a hint of where to look; the cell's sequence (acquire)
    // says whether the cell is ours to claim, and the CAS decides who gets it.
    std::uint64_t pos = h_->enqueue_pos.load(std::memory_order_relaxed);
    VyukovCell* c;
    for (;;) {
      c = cell(pos & mask_);
      // Acquire pairs with the release in try_dequeue(): the previous lap's reader is done
      // with the payload before we overwrite it.
      const std::uint64_t seq = c->seq.load(std::memory_order_acquire);
      const auto dif = static_cast<std::int64_t>(seq - pos);
      if (dif == 0) {
        // Relaxed CAS: it only arbitrates between producers; the payload is published by
        // the release store of the sequence below.
        if (h_->enqueue_pos.compare_exchange_weak(pos, pos + 1, std::memory_order_relaxed)) break;
      } else if (dif < 0) {
        return false;  // the cell still holds the message of the previous lap: full
      } else {
        pos = h_->enqueue_pos.load(std::memory_order_relaxed);  // another producer took it
      }
    }
    std::memcpy(payload(c), p, size_);
    c->seq.store(pos + 1, std::memory_order_release);  // publishes the payload
    return true;
  }

  // One message into `out` (message_size() bytes); false if the ring is empty.
  bool try_dequeue(std::byte* out) noexcept {
    std::uint64_t pos = h_->dequeue_pos.load(std::memory_order_relaxed);  // a hint, as above
    VyukovCell* c;
    for (;;) {
      c = cell(pos & mask_);
      // Acquire pairs with the producer's release of pos + 1: the payload is complete.
      const std::uint64_t seq = c->seq.load(std::memory_order_acquire);
      const auto dif = static_cast<std::int64_t>(seq - (pos + 1));
      if (dif == 0) {
        if (h_->dequeue_pos.compare_exchange_weak(pos, pos + 1, std::memory_order_relaxed)) break;
      } else if (dif < 0) {
        return false;  // not yet written this lap: empty
      } else {
        pos = h_->dequeue_pos.load(std::memory_order_relaxed);
      }
    }
    std::memcpy(out, payload(c), size_);
    // Release: our read of the payload happens-before the next lap's producer writes it.
    c->seq.store(pos + mask_ + 1, std::memory_order_release);
    return true;
  }

 private:
  VyukovCell* cell(std::uint64_t i) const noexcept {
    return reinterpret_cast<VyukovCell*>(cells_ + i * cell_bytes_);
  }
  static std::byte* payload(VyukovCell* c) noexcept {
    return reinterpret_cast<std::byte*>(c) + sizeof(VyukovCell);
  }

  VyukovHeader* h_;
  std::byte* cells_;
  std::uint64_t mask_;
  std::uint64_t cell_bytes_;
  std::size_t size_;
};

}  // namespace shmq_bench
