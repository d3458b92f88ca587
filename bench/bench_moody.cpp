// shmq-bench: the in-process ceiling. moodycamel::ConcurrentQueue between two threads of one
// (forked) process, measured by the same harness: fixed-size messages copied in and out,
// the same tags and checks, the same capacity (the producer waits while `capacity`
// messages are unconsumed: the queue itself is unbounded).
#include <concurrentqueue/concurrentqueue.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "bench_proc.hpp"
#include "bench_runs.hpp"
#include "bench_transports.hpp"

namespace shmq_bench {

namespace {

template <std::size_t N>
struct Blob {
  std::byte b[N];
};

// Wait for a start flag set by the process once the parent says go.
void wait_flag(const std::atomic<bool>& go) {
  Backoff b;
  while (!go.load(std::memory_order_acquire)) b.pause();
}

template <std::size_t N>
void throughput_child(ChildIo& io, TpShared* sh, std::uint64_t count, std::uint32_t capacity) {
  using Q = moodycamel::ConcurrentQueue<Blob<N>>;
  auto q = std::make_unique<Q>(capacity + 2 * Q::BLOCK_SIZE);
  std::atomic<bool> go{false};
  alignas(64) std::atomic<std::uint64_t> consumed{0};
  std::atomic<bool> failed{false};
  std::exception_ptr error;
  std::thread producer([&] {
    moodycamel::ProducerToken tok(*q);
    auto item = std::make_unique<Blob<N>>();
    std::memset(item->b, 0x5a, N);
    wait_flag(go);
    sh->start_ns[0].store(now_ns());
    std::uint64_t seen = 0;
    for (std::uint64_t seq = 0; seq < count; ++seq) {
      put_tag(item->b, N, make_tag(0, seq));
      Backoff b;
      while (seq - seen >= capacity) {
        if (failed.load(std::memory_order_relaxed)) return;
        seen = consumed.load(std::memory_order_acquire);
        if (seq - seen >= capacity) b.pause();
      }
      q->enqueue(tok, *item);
    }
  });
  std::thread consumer([&] {
    try {
      moodycamel::ConsumerToken tok(*q);
      auto item = std::make_unique<Blob<N>>();
      std::uint64_t sum = 0;
      wait_flag(go);
      for (std::uint64_t seq = 0; seq < count; ++seq) {
        Backoff b;
        while (!q->try_dequeue(tok, *item)) {
          if (failed.load(std::memory_order_relaxed)) return;
          b.pause();
        }
        const std::uint64_t tag = get_tag(item->b);
        if (tag != make_tag(0, seq) || !trailer_ok(item->b, N, tag))
          fail("moodycamel: message " + std::to_string(seq) + " carries tag " + std::to_string(tag));
        sum += seq;
        consumed.store(seq + 1, std::memory_order_release);
      }
      sh->end_ns.store(now_ns());
      sh->count[0].store(count);
      sh->sum[0].store(sum);
    } catch (...) {
      error = std::current_exception();
      failed.store(true);  // let the producer stop
    }
  });
  try {
    io.ready();
    io.wait_go();
  } catch (...) {
    failed.store(true);
    go.store(true, std::memory_order_release);
    producer.join();
    consumer.join();
    throw;
  }
  go.store(true, std::memory_order_release);
  producer.join();
  consumer.join();
  if (error) std::rethrow_exception(error);
}

template <std::size_t N>
void roundtrip_child(ChildIo& io, std::uint64_t* lat, std::uint64_t samples, std::uint64_t warmup) {
  using Q = moodycamel::ConcurrentQueue<Blob<N>>;
  auto ping = std::make_unique<Q>(4 * Q::BLOCK_SIZE);
  auto pong = std::make_unique<Q>(4 * Q::BLOCK_SIZE);
  std::atomic<bool> go{false};
  std::atomic<bool> failed{false};
  std::thread echo([&] {
    moodycamel::ProducerToken ptok(*pong);
    moodycamel::ConsumerToken ctok(*ping);
    auto item = std::make_unique<Blob<N>>();
    wait_flag(go);
    for (std::uint64_t i = 0; i < warmup + samples && !failed.load(std::memory_order_relaxed); ++i) {
      Backoff b;
      while (!ping->try_dequeue(ctok, *item)) {
        if (failed.load(std::memory_order_relaxed)) return;
        b.pause();
      }
      pong->enqueue(ptok, *item);
    }
  });
  std::exception_ptr error;
  try {
    moodycamel::ProducerToken ptok(*ping);
    moodycamel::ConsumerToken ctok(*pong);
    auto out = std::make_unique<Blob<N>>();
    auto in = std::make_unique<Blob<N>>();
    std::memset(out->b, 0x5a, N);
    io.ready();
    io.wait_go();
    go.store(true, std::memory_order_release);
    for (std::uint64_t i = 0; i < warmup + samples; ++i) {
      const std::uint64_t tag = make_tag(0, i);
      put_tag(out->b, N, tag);
      const std::uint64_t t0 = now_ns();
      ping->enqueue(ptok, *out);
      Backoff b;
      while (!pong->try_dequeue(ctok, *in)) b.pause();
      const std::uint64_t t1 = now_ns();
      if (get_tag(in->b) != tag || !trailer_ok(in->b, N, tag))
        fail("moodycamel round trip " + std::to_string(i) + ": wrong pong");
      if (i >= warmup) lat[i - warmup] = t1 - t0;
    }
  } catch (...) {
    error = std::current_exception();
    failed.store(true);
  }
  go.store(true, std::memory_order_release);
  echo.join();
  if (error) std::rethrow_exception(error);
}

template <typename F>
void by_size(std::size_t size, F&& f) {
  switch (size) {
    case 64: f(std::integral_constant<std::size_t, 64>{}); break;
    case 1024: f(std::integral_constant<std::size_t, 1024>{}); break;
    case 4096: f(std::integral_constant<std::size_t, 4096>{}); break;
    case 65536: f(std::integral_constant<std::size_t, 65536>{}); break;
    default: fail("moodycamel: no instance for " + std::to_string(size) + "-byte messages");
  }
}

}  // namespace

RepResult moody_throughput(const Scenario& sc, std::uint64_t count) {
  SharedMap map(sizeof(TpShared));
  auto* sh = new (map.get()) TpShared();
  ProcessGroup g(sc.name);
  g.spawn("threads", [&](ChildIo& io) {
    by_size(sc.size, [&](auto n) { throughput_child<decltype(n)::value>(io, sh, count, capacity_for(sc.size)); });
  });
  const std::uint64_t switches = g.run(std::chrono::milliseconds(30'000), std::chrono::milliseconds(180'000));
  return finish_throughput(sc, *sh, count, switches);
}

RepResult moody_roundtrip(const Scenario& sc, std::uint64_t samples, std::uint64_t warmup) {
  SharedMap map(sizeof(std::uint64_t) * samples);
  auto* lat = static_cast<std::uint64_t*>(map.get());
  ProcessGroup g(sc.name);
  g.spawn("threads", [&](ChildIo& io) {
    by_size(sc.size, [&](auto n) { roundtrip_child<decltype(n)::value>(io, lat, samples, warmup); });
  });
  const std::uint64_t switches = g.run(std::chrono::milliseconds(30'000), std::chrono::milliseconds(180'000));
  RepResult r;
  std::vector<std::uint64_t> v(lat, lat + samples);
  std::uint64_t total = 0;
  for (const std::uint64_t x : v) total += x;
  r.elapsed_s = static_cast<double>(total) / 1e9;
  std::sort(v.begin(), v.end());
  r.switches_per_msg = static_cast<double>(switches) / static_cast<double>(samples);
  r.lat = std::move(v);
  return r;
}

}  // namespace shmq_bench
