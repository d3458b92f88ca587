// In-process microbenchmarks of the shmq hot path (Google Benchmark).
//
// Everything here runs in one thread of one process: producer and consumer share the core
// and the cache, so these numbers are the cost of the code path itself (atomics, copies,
// bookkeeping), not of moving cache lines between cores. Cross-process throughput and
// latency are measured by shmq-bench.
//
// Each benchmark run creates its own queue ("bench-micro-<pid>-<n>") and removes it at
// the end. moodycamel::ConcurrentQueue, measured the same way (enqueue + dequeue of a
// 64-byte struct in one thread), is the in-process ceiling.
//
//   shmq-bench-micro --benchmark_min_time=0.1

#include <benchmark/benchmark.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <concurrentqueue/concurrentqueue.h>

#include "shmq/shmq.hpp"

namespace {

constexpr std::uint32_t kSlotCount = 1024;
constexpr std::size_t kSlotHeader = 64;

// Smallest slot that holds `payload` bytes in one slot (zero-copy receive).
std::uint32_t slot_size_for(std::size_t payload) {
  const std::size_t s = (payload + kSlotHeader + 63) / 64 * 64;
  return static_cast<std::uint32_t>(std::max<std::size_t>(s, 128));
}

std::string unique_queue_name() {
  static std::atomic<unsigned> counter{0};
  return "bench-micro-" + std::to_string(::getpid()) + "-" +
         std::to_string(counter.fetch_add(1, std::memory_order_relaxed));
}

// One queue with one producer and one consumer, in this process. The queue is removed
// when the fixture goes out of scope. On a setup failure the benchmark is skipped with the
// library's error message and ok() is false.
class QueueFixture {
 public:
  QueueFixture(benchmark::State& state, std::size_t max_payload, bool checksum = false,
               bool zero_copy = false, std::uint32_t dedup_window = 0)
      : name_(unique_queue_name()) {
    shmq::QueueOptions options;
    options.dedup_window.count = dedup_window;
    options.slot_count = kSlotCount;
    options.slot_size = slot_size_for(max_payload + (checksum ? 8 : 0));  // + the checksum word
    options.checksum = checksum;
    auto q = shmq::Queue::create(name_, options);
    if (!q.ok()) {
      state.SkipWithError(("create: " + q.error().message()).c_str());
      return;
    }
    created_ = true;
    auto p = q.value().producer();
    if (!p.ok()) {
      state.SkipWithError(("producer: " + p.error().message()).c_str());
      return;
    }
    auto c = q.value().consumer(shmq::ConsumerOptions{.zero_copy = zero_copy});
    if (!c.ok()) {
      state.SkipWithError(("consumer: " + c.error().message()).c_str());
      return;
    }
    producer_.emplace(std::move(p.value()));
    consumer_.emplace(std::move(c.value()));
  }

  ~QueueFixture() {
    consumer_.reset();
    producer_.reset();
    if (created_) (void)shmq::Queue::remove(name_);
  }

  QueueFixture(const QueueFixture&) = delete;
  QueueFixture& operator=(const QueueFixture&) = delete;

  bool ok() const { return producer_.has_value() && consumer_.has_value(); }
  shmq::Producer& producer() { return *producer_; }
  shmq::Consumer& consumer() { return *consumer_; }

 private:
  std::string name_;
  bool created_ = false;
  std::optional<shmq::Producer> producer_;
  std::optional<shmq::Consumer> consumer_;
};

void fail(benchmark::State& state, const char* what, shmq::Status s) {
  state.SkipWithError((std::string(what) + ": " + std::string(shmq::to_string(s))).c_str());
}

// One message through the queue: try_send (copy in), try_receive (a checked copy, the
// default; or zero-copy), ack.
// The consumer half of every single-message benchmark: take the message, touch it, ack it.
bool receive_and_ack(benchmark::State& state, QueueFixture& f, shmq::Message& m) {
  if (const auto s = f.consumer().try_receive(m); s != shmq::Status::ok) {
    fail(state, "try_receive", s);
    return false;
  }
  benchmark::DoNotOptimize(m.data().data());
  if (const auto s = f.consumer().ack(m); s != shmq::Status::ok) {
    fail(state, "ack", s);
    return false;
  }
  return true;
}

void try_send_receive_ack(benchmark::State& state, bool checksum, bool zero_copy = false) {
  const auto size = static_cast<std::size_t>(state.range(0));
  QueueFixture f(state, size, checksum, zero_copy);
  if (!f.ok()) return;
  const std::vector<std::byte> payload(size, std::byte{0x5a});
  shmq::Message m;
  for (auto _ : state) {
    if (const auto s = f.producer().try_send(payload); s != shmq::Status::ok) {
      fail(state, "try_send", s);
      break;
    }
    if (!receive_and_ack(state, f, m)) break;
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(size));
}

// Arg: message size in bytes.
void BM_TrySendReceiveAck(benchmark::State& state) { try_send_receive_ack(state, false); }

// The same with a dedup window (issue 14) of Arg ids, each message with an id of its own
// (the table's inserts and lookups, never a duplicate). Against BM_TrySendReceiveAck/64.
void BM_TrySendReceiveAckDedup(benchmark::State& state) {
  QueueFixture f(state, 64, false, false, static_cast<std::uint32_t>(state.range(0)));
  if (!f.ok()) return;
  const std::vector<std::byte> payload(64, std::byte{0x5a});
  shmq::Message m;
  std::uint64_t id = 0;
  for (auto _ : state) {
    if (const auto s = f.producer().try_send(payload, ++id); s != shmq::Status::ok) {
      fail(state, "try_send", s);
      break;
    }
    if (!receive_and_ack(state, f, m)) break;
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_TrySendReceiveAckDedup)->Arg(1000)->Arg(100'000);
BENCHMARK(BM_TrySendReceiveAck)->Arg(8)->Arg(64)->Arg(512)->Arg(4096);

// What message properties cost (issue 14) on the path itself: 64 B payloads sent with
// try_send(bytes, SendOptions), with none (properties = nullptr: the options path of a
// message without), a few (content type, correlation id, 2 headers: a 92-byte block) or
// many (those, a reply-to and 16 more headers: 613 bytes); the consumer reads the
// correlation id and looks a header up. Arg: 0 none, 1 a few, 2 many.
void BM_TrySendReceiveAckProperties(benchmark::State& state) {
  constexpr std::size_t kSize = 64;
  const auto kind = static_cast<int>(state.range(0));
  shmq::Properties props;
  if (kind >= 1) {
    props.content_type = "application/octet-stream";
    props.correlation_id = "req-0000000123";
    props.headers = {{"tenant", "acme"}, {"trace", "4bf92f3577b34da6"}};
  }
  if (kind >= 2) {
    props.reply_to = "bench.replies.client-0001";
    for (int i = 0; i < 16; ++i)
      props.headers.emplace_back("x-header-" + std::to_string(10 + i),
                                 "value-of-header-" + std::to_string(10 + i));
  }
  // Slots big enough for the largest block on every arm: the same geometry throughout.
  QueueFixture f(state, kSize + 640);
  if (!f.ok()) return;
  const std::vector<std::byte> payload(kSize, std::byte{0x5a});
  const shmq::SendOptions options{.properties = kind == 0 ? nullptr : &props};
  shmq::Message m;
  for (auto _ : state) {
    if (const auto s = f.producer().try_send(payload, options); s != shmq::Status::ok) {
      fail(state, "try_send", s);
      break;
    }
    if (const auto s = f.consumer().try_receive(m); s != shmq::Status::ok) {
      fail(state, "try_receive", s);
      break;
    }
    benchmark::DoNotOptimize(m.data().data());
    benchmark::DoNotOptimize(m.properties().correlation_id().data());
    benchmark::DoNotOptimize(m.properties().header("trace"));
    if (const auto s = f.consumer().ack(m); s != shmq::Status::ok) {
      fail(state, "ack", s);
      break;
    }
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_TrySendReceiveAckProperties)->Arg(0)->Arg(1)->Arg(2);

// What the default copied and checked receive costs (issue 11): compare with
// BM_TrySendReceiveAck of the same size, whose consumer copies. Arg: message size.
void BM_TrySendReceiveAckZeroCopy(benchmark::State& state) {
  try_send_receive_ack(state, false, true);
}
BENCHMARK(BM_TrySendReceiveAckZeroCopy)->Arg(64)->Arg(4096);

// What QueueOptions::checksum costs on the path itself (one hash on send, one on receive):
// compare with BM_TrySendReceiveAck of the same size; with --benchmark_repetitions and
// --benchmark_enable_random_interleaving=true the two alternate. Arg: message size.
void BM_TrySendReceiveAckChecksum(benchmark::State& state) { try_send_receive_ack(state, true); }
BENCHMARK(BM_TrySendReceiveAckChecksum)->Arg(64)->Arg(4096);

// A batch of 64-byte messages: send_batch (one wake-up for the batch), receive_batch,
// ack(span). Arg: batch size. Items are messages, not batches.
void BM_SendBatchReceiveBatchAck(benchmark::State& state) {
  constexpr std::size_t kSize = 64;
  const auto batch = static_cast<std::size_t>(state.range(0));
  QueueFixture f(state, kSize);
  if (!f.ok()) return;
  const std::vector<std::byte> payload(kSize, std::byte{0x5a});
  const std::vector<shmq::Bytes> messages(batch, shmq::Bytes(payload));
  std::vector<shmq::Message> received(batch);
  for (auto _ : state) {
    shmq::Status s = shmq::Status::ok;
    // Zero timeout: the ring is drained every iteration, so it is never full.
    const std::size_t sent =
        f.producer().send_batch(messages, std::chrono::nanoseconds::zero(), &s);
    if (sent != batch) {
      fail(state, "send_batch", s);
      break;
    }
    std::size_t got = 0;
    while (got < batch) {
      const std::size_t n = f.consumer().receive_batch(std::span(received).subspan(got),
                                                       std::chrono::nanoseconds::zero());
      if (n == 0) break;
      got += n;
    }
    if (got != batch) {
      state.SkipWithError("receive_batch returned fewer messages than were sent");
      break;
    }
    benchmark::DoNotOptimize(received.data());
    if (const auto a = f.consumer().ack(std::span(received)); a != shmq::Status::ok) {
      fail(state, "ack(span)", a);
      break;
    }
  }
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(batch));
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(batch * kSize));
}
BENCHMARK(BM_SendBatchReceiveBatchAck)->Arg(32);

// Zero-copy send: try_reserve, write the payload in place (a memcpy stands in for the
// application building its message there), commit; then try_receive and ack so that the
// ring does not fill. Compare with BM_TrySendReceiveAck at the same size.
// Arg: message size in bytes.
void BM_ReserveCommitReceiveAck(benchmark::State& state) {
  const auto size = static_cast<std::size_t>(state.range(0));
  QueueFixture f(state, size);
  if (!f.ok()) return;
  const std::vector<std::byte> payload(size, std::byte{0x5a});
  shmq::Message m;
  for (auto _ : state) {
    shmq::Reservation r;
    if (const auto s = f.producer().try_reserve(size, r); s != shmq::Status::ok) {
      fail(state, "try_reserve", s);
      break;
    }
    std::memcpy(r.data().data(), payload.data(), size);
    if (const auto s = f.producer().commit(r); s != shmq::Status::ok) {
      fail(state, "commit", s);
      break;
    }
    if (!receive_and_ack(state, f, m)) break;
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(size));
}
BENCHMARK(BM_ReserveCommitReceiveAck)->Arg(64)->Arg(4096);

// --- In-process ceiling: moodycamel::ConcurrentQueue ---------------------------------

struct Msg64 {
  std::array<std::byte, 64> bytes;
};
static_assert(sizeof(Msg64) == 64);

// enqueue + try_dequeue of a 64-byte struct, implicit producer (no tokens): what a
// straightforward user of ConcurrentQueue writes.
void BM_MoodycamelEnqueueDequeue64(benchmark::State& state) {
  moodycamel::ConcurrentQueue<Msg64> q(kSlotCount);
  Msg64 in{};
  Msg64 out{};
  in.bytes.fill(std::byte{0x5a});
  for (auto _ : state) {
    if (!q.enqueue(in)) {
      state.SkipWithError("enqueue failed");
      break;
    }
    if (!q.try_dequeue(out)) {
      state.SkipWithError("try_dequeue found nothing");
      break;
    }
    benchmark::DoNotOptimize(out);
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(sizeof(Msg64)));
}
BENCHMARK(BM_MoodycamelEnqueueDequeue64);

// The same with explicit producer and consumer tokens: ConcurrentQueue's fastest path.
void BM_MoodycamelTokensEnqueueDequeue64(benchmark::State& state) {
  moodycamel::ConcurrentQueue<Msg64> q(kSlotCount);
  moodycamel::ProducerToken ptok(q);
  moodycamel::ConsumerToken ctok(q);
  Msg64 in{};
  Msg64 out{};
  in.bytes.fill(std::byte{0x5a});
  for (auto _ : state) {
    if (!q.enqueue(ptok, in)) {
      state.SkipWithError("enqueue failed");
      break;
    }
    if (!q.try_dequeue(ctok, out)) {
      state.SkipWithError("try_dequeue found nothing");
      break;
    }
    benchmark::DoNotOptimize(out);
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(sizeof(Msg64)));
}
BENCHMARK(BM_MoodycamelTokensEnqueueDequeue64);

}  // namespace

BENCHMARK_MAIN();
