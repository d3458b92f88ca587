// shmq-bench-instr: instructions per message of the hot path, for callgrind (issue 16).
//
// One process, one thread: no cross-core traffic, so the count is the code path's own and
// is stable on a noisy machine (unlike time). Each case moves N messages of 64 bytes:
//
//   ack             N x (try_send + try_receive + ack), default (copied, checked) consumer
//   ack-zero-copy   the same with ConsumerOptions::zero_copy
//   batch           N / 32 x (send_batch(32) + receive_batch(32) + ack(span of 32))
//   vyukov          N x (enqueue + dequeue) on the Vyukov ring of vyukov_ring.hpp (heap)
//
// Only the timed loop is counted: a warm-up of the same loop runs first (page faults, first
// use of the ring's lines), then CALLGRIND_START_INSTRUMENTATION + CALLGRIND_TOGGLE_COLLECT
// around the loop, so run it under
//
//   valgrind --tool=callgrind --collect-atstart=no --instr-atstart=no
//            build/rel/bench/shmq-bench-instr ack 100000
//
// and divide the total Ir by N (bench/callgrind.sh does this for every case). Outside
// valgrind the macros do nothing and the binary just runs the loops (and checks them).
// Prints "case=<c> messages=<N>" on success; exit status 1 on a failure, 2 on a bad
// command line.
#include <unistd.h>
#include <valgrind/callgrind.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "shmq/shmq.hpp"
#include "vyukov_ring.hpp"

namespace {

constexpr std::size_t kSize = 64;
constexpr std::size_t kBatch = 32;
constexpr std::uint32_t kSlots = 1024;
constexpr std::uint64_t kWarmup = 4096;

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "shmq-bench-instr: %s\n", what.c_str());
  std::exit(1);
}

void put_seq(std::byte* p, std::uint64_t seq) { std::memcpy(p, &seq, sizeof seq); }
std::uint64_t get_seq(const std::byte* p) {
  std::uint64_t v = 0;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// Counted region: the loop body between these two runs under callgrind's collection.
struct Collect {
  Collect() {
    CALLGRIND_START_INSTRUMENTATION;
    CALLGRIND_TOGGLE_COLLECT;
  }
  ~Collect() {
    CALLGRIND_TOGGLE_COLLECT;
    CALLGRIND_STOP_INSTRUMENTATION;
  }
  Collect(const Collect&) = delete;
  Collect& operator=(const Collect&) = delete;
};

// A queue of 1024 slots of 128 bytes (64-byte header + 64-byte payload), removed at exit.
struct ShmqQueue {
  std::string name = "shmq-instr-" + std::to_string(::getpid());
  shmq::Queue q;
  ShmqQueue() : q(open_new(name)) {}
  ~ShmqQueue() { (void)shmq::Queue::remove(name); }
  ShmqQueue(const ShmqQueue&) = delete;
  ShmqQueue& operator=(const ShmqQueue&) = delete;

  static shmq::Queue open_new(const std::string& name) {
    (void)shmq::Queue::remove(name);  // a leftover of a killed run
    shmq::QueueOptions o;
    o.slot_count = kSlots;
    o.slot_size = 128;
    o.mode = 0600;
    auto r = shmq::Queue::create(name, o);
    if (!r.ok()) die("create " + name + ": " + r.error().message());
    return std::move(r).value();
  }
};

void run_ack(std::uint64_t n, bool zero_copy) {
  ShmqQueue sq;
  auto p = sq.q.producer();
  auto c = sq.q.consumer({.zero_copy = zero_copy});
  if (!p.ok() || !c.ok()) die("producer/consumer");
  shmq::Producer& prod = p.value();
  shmq::Consumer& cons = c.value();
  std::array<std::byte, kSize> buf{};
  shmq::Message m;
  std::uint64_t sum = 0;
  auto one = [&](std::uint64_t i) {
    put_seq(buf.data(), i);
    if (prod.try_send(shmq::Bytes(buf.data(), buf.size())) != shmq::Status::ok) die("try_send");
    if (cons.try_receive(m) != shmq::Status::ok) die("try_receive");
    sum += get_seq(m.data().data());
    if (cons.ack(m) != shmq::Status::ok) die("ack");
  };
  for (std::uint64_t i = 0; i < kWarmup; ++i) one(i);
  sum = 0;
  {
    const Collect counted;
    for (std::uint64_t i = 0; i < n; ++i) one(i);
  }
  if (sum != n * (n - 1) / 2) die("lost or reordered messages");
}

void run_batch(std::uint64_t n) {
  ShmqQueue sq;
  auto p = sq.q.producer();
  auto c = sq.q.consumer();
  if (!p.ok() || !c.ok()) die("producer/consumer");
  shmq::Producer& prod = p.value();
  shmq::Consumer& cons = c.value();
  std::vector<std::byte> bufs(kBatch * kSize);
  std::array<shmq::Bytes, kBatch> spans;
  for (std::size_t t = 0; t < kBatch; ++t) spans[t] = shmq::Bytes(bufs.data() + t * kSize, kSize);
  std::array<shmq::Message, kBatch> ms;
  std::uint64_t sum = 0;
  auto one = [&](std::uint64_t base) {
    for (std::size_t t = 0; t < kBatch; ++t) put_seq(bufs.data() + t * kSize, base + t);
    shmq::Status st = shmq::Status::ok;
    if (prod.send_batch(spans, std::chrono::nanoseconds::zero(), &st) != kBatch) die("send_batch");
    std::size_t got = 0;
    while (got < kBatch) {
      const std::size_t k =
          cons.receive_batch(std::span<shmq::Message>(ms.data() + got, kBatch - got), std::chrono::nanoseconds::zero());
      if (k == 0) die("receive_batch: nothing ready");
      got += k;
    }
    for (const shmq::Message& m : ms) sum += get_seq(m.data().data());
    if (cons.ack(std::span<shmq::Message>(ms)) != shmq::Status::ok) die("ack(span)");
  };
  for (std::uint64_t i = 0; i < kWarmup; i += kBatch) one(i);
  sum = 0;
  const std::uint64_t batches = n / kBatch;
  {
    const Collect counted;
    for (std::uint64_t b = 0; b < batches; ++b) one(b * kBatch);
  }
  const std::uint64_t total = batches * kBatch;
  if (sum != total * (total - 1) / 2) die("lost or reordered messages");
}

void run_vyukov(std::uint64_t n) {
  std::size_t bytes = shmq_bench::VyukovRing::bytes_for(kSlots, kSize);
  std::vector<std::byte> raw(bytes + 128);
  void* mem = raw.data();
  std::size_t space = raw.size();
  if (std::align(128, bytes, mem, space) == nullptr) die("align");
  shmq_bench::VyukovRing ring = shmq_bench::VyukovRing::init(mem, kSlots, kSize);
  std::array<std::byte, kSize> in{}, out{};
  std::uint64_t sum = 0;
  auto one = [&](std::uint64_t i) {
    put_seq(in.data(), i);
    if (!ring.try_enqueue(in.data())) die("enqueue");
    if (!ring.try_dequeue(out.data())) die("dequeue");
    sum += get_seq(out.data());
  };
  for (std::uint64_t i = 0; i < kWarmup; ++i) one(i);
  sum = 0;
  {
    const Collect counted;
    for (std::uint64_t i = 0; i < n; ++i) one(i);
  }
  if (sum != n * (n - 1) / 2) die("lost or reordered messages");
}

}  // namespace

int main(int argc, char** argv) {
  const std::string_view what = argc > 1 ? argv[1] : "";
  std::uint64_t n = 100'000;
  if (argc > 2) {
    char* end = nullptr;
    n = std::strtoull(argv[2], &end, 10);
    if (end == argv[2] || *end != '\0' || n < kBatch || n > 100'000'000) {
      std::fprintf(stderr, "shmq-bench-instr: N must be a whole number from 32 to 100000000\n");
      return 2;
    }
  }
  if (argc > 3 || (what != "ack" && what != "ack-zero-copy" && what != "batch" && what != "vyukov")) {
    std::fprintf(stderr, "usage: shmq-bench-instr ack|ack-zero-copy|batch|vyukov [N]\n");
    return 2;
  }
  if (what == "ack") run_ack(n, false);
  if (what == "ack-zero-copy") run_ack(n, true);
  if (what == "batch") {
    run_batch(n);
    n = n / kBatch * kBatch;
  }
  if (what == "vyukov") run_vyukov(n);
  std::printf("case=%s messages=%llu\n", std::string(what).c_str(), static_cast<unsigned long long>(n));
  return 0;
}
