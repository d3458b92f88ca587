// Ring operations shared by producers, consumers and (later) the watchdog. Each is a
// sequence of single-word CAS steps on slot words; see slot_word.hpp for the encoding and
// docs/slot_state_machine.md for the transitions.
#pragma once

#include <atomic>
#include <bit>
#include <chrono>
#include <cstdint>

#include "platform/crash_point.hpp"
#include "platform/futex.hpp"
#include "ring/slot_word.hpp"
#include "segment/segment.hpp"

namespace shmq::detail {

// Finishes releasing the message whose head at `head` has word `w` in state releasing or
// releasing_skipped: frees its continuation slots, then the head (-> free / free_skipped at
// the next lap, aux = fragments). Any process may call it, any number of times, concurrently:
// every step is a CAS from the exact state it expects, so late or repeated helpers do nothing.
// Continuations are freed before the head so that "head free" implies "whole message free":
// a producer at the head's next lap never finds a continuation still covered.
inline void finish_release(Segment& seg, std::uint64_t head, std::uint64_t w) noexcept {
  const SlotState s = word_state(w);
  if (s != SlotState::releasing && s != SlotState::releasing_skipped) return;
  const std::uint32_t k = word_aux(w);
  if (k < 1 || k > seg.max_fragments()) return;  // garbage: not ours to interpret
  const std::uint32_t shift = seg.slot_shift();
  for (std::uint32_t j = 1; j < k; ++j) {
    const std::uint64_t q = head + j;
    std::atomic<std::uint64_t>& cw = seg.slot(q).word;
    std::uint64_t c = cw.load(std::memory_order_acquire);
    // Exactly the continuation's lap and a free state: still covered by this head. Any
    // other value means a helper already freed it (and it may even be reused since).
    if (word_lap(c) == lap_of(q, shift) && is_free(word_state(c))) {
      // seq_cst: a producer sleeping on this continuation pairs with it (wait_on).
      cw.compare_exchange_strong(c, make_word(lap_of(q, shift) + 1, SlotState::free, 0, 0),
                                 std::memory_order_seq_cst);
    }
  }
  const SlotState to =
      s == SlotState::releasing ? SlotState::free : SlotState::free_skipped;
  std::uint64_t expected = w;
  // Release: the readers' (consumer's) use of the payload happens-before a producer's
  // acquire of this free word and its overwrite.
  seg.slot(head).word.compare_exchange_strong(
      expected, make_word(word_lap(w) + 1, to, 0, k), std::memory_order_seq_cst);
}

// Wakes every member sleeping on `line` if any is (one seq_cst load per bitmap word on the
// fast path, no system call). The caller's preceding seq_cst RMW on a slot word and these
// seq_cst loads pair with the sleeper's seq_cst fetch_or on its bit and seq_cst re-check of
// the slot (wait_on): of the two, at least one sees the other, so no wakeup is lost.
//
// The waker takes the bits it wakes (exchange with 0): a sleeper that must sleep again sets
// its bit again, so the next waker skips the system call until then. Without this, with
// more processes than cores some bit is nearly always set and every send and ack made a
// futex_wake that woke nobody.
//
// Returns how many members it woke (the bits it took).
inline std::uint32_t wake_waiters(WaitLine& line, std::uint32_t max_members) noexcept {
  const std::uint32_t words = (max_members + 63) / 64;
  std::uint32_t woken = 0;
  for (std::uint32_t i = 0; i < words; ++i) {
    if (line.waiting[i].load(std::memory_order_seq_cst) != 0)
      woken += static_cast<std::uint32_t>(
          std::popcount(line.waiting[i].exchange(0, std::memory_order_seq_cst)));
  }
  if (woken != 0) {
    line.futex.fetch_add(1, std::memory_order_seq_cst);
    futex_wake_all(line.futex);
  }
  return woken;
}

// Unconditional wake (interrupt(), shutdown).
inline void wake_all(WaitLine& line) noexcept {
  line.futex.fetch_add(1, std::memory_order_seq_cst);
  futex_wake_all(line.futex);
}

// Sleeps on `line` as member `member` unless `ready()` becomes true first. `ready` is
// evaluated after our waiting bit is set (seq_cst), so a waker that made it true either is
// seen by it or sees our bit. `deadline` is read after ready() ran, which may shorten it.
// Returns ready()'s last value.
inline constexpr std::chrono::milliseconds kMaxSleep{250};

template <typename Ready>
bool wait_on(WaitLine& line, std::uint32_t member,
             const std::chrono::steady_clock::time_point& deadline, Ready&& ready) {
  const std::uint64_t bit = std::uint64_t{1} << (member % 64);
  std::atomic<std::uint64_t>& bits = line.waiting[member / 64];
  bits.fetch_or(bit, std::memory_order_seq_cst);
  const std::uint32_t seq = line.futex.load(std::memory_order_seq_cst);
  bool ok = ready();
  if (!ok) {
    // Backstop: never sleep longer than kMaxSleep at a time. A process that died between
    // changing a slot and waking its sleepers must not leave them asleep forever; the
    // caller re-checks and sleeps again.
    const auto cap = std::chrono::steady_clock::now() + kMaxSleep;
    futex_wait(line.futex, seq, deadline < cap ? deadline : cap);
    ok = false;
  }
  bits.fetch_and(~bit, std::memory_order_relaxed);
  return ok;
}

// The reader's side of a seqlock over a slot: orders the plain loads of a copy of the slot's
// bytes before the re-read of its word (relaxed). If the word is unchanged, no producer
// reused the slot during the copy: a reuse changes the word before it writes the bytes.
// (GCC warns that TSan does not model fences; the fence is what the C++ model needs here.
// Under TSan the copies this guards were already ordered by the acquire CAS or load that
// preceded them.)
inline void acquire_fence_after_copy() noexcept {
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wtsan"
#endif
  std::atomic_thread_fence(std::memory_order_acquire);
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
}

// The writer's side: after the CAS that claims a slot, before the writes of its bytes.
inline void release_fence_before_write() noexcept {
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wtsan"
#endif
  std::atomic_thread_fence(std::memory_order_release);
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
}

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// Spin iterations before a blocking call sleeps. Short: on a machine with more runnable
// processes than cores, spinning steals the core from the process that would make progress.
inline constexpr int kSpinBeforeSleep = 128;

}  // namespace shmq::detail
