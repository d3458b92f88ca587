// shmq-demo: a producer process and a consumer process on one queue.
//
// Creates a queue, forks a consumer and a producer, and shows messages flowing between
// them: the consumer nacks every tenth message once (it comes back redelivered), acks the
// rest, and the demo ends with the queue's counters.
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "shmq/shmq.hpp"

namespace {

void usage(std::FILE* out) {
  std::fprintf(out,
               "usage: shmq-demo [--messages N] [--queue NAME]\n"
               "\n"
               "Creates queue NAME (default: demo-<pid>), forks one consumer and one producer\n"
               "process, sends N messages (default 20) from one to the other and prints what\n"
               "the consumer sees. The queue is removed at the end.\n");
}

int consumer_main(const std::string& name, int expected) {
  auto q = shmq::Queue::open(name);
  if (!q) {
    std::fprintf(stderr, "consumer: %s\n", q.error().message().c_str());
    return 1;
  }
  auto consumer = q->consumer();
  if (!consumer) {
    std::fprintf(stderr, "consumer: %s\n", consumer.error().message().c_str());
    return 1;
  }
  int acked = 0;
  shmq::Message m;
  while (acked < expected) {
    if (consumer->receive_for(m, std::chrono::seconds(10)) != shmq::Status::ok) {
      std::fprintf(stderr, "consumer: no message for 10 s, giving up\n");
      return 1;
    }
    const bool nack = m.position() % 10 == 9 && !m.redelivered();
    std::printf("  consumer pid %d  position %-3llu delivery %u  %-20.*s -> %s\n", ::getpid(),
                static_cast<unsigned long long>(m.position()), m.delivery_count(),
                static_cast<int>(m.size()), m.view().data(), nack ? "nack (requeue)" : "ack");
    std::fflush(stdout);
    if (nack) {
      if (consumer->nack(m) != shmq::Status::ok) return 1;
    } else {
      if (consumer->ack(m) != shmq::Status::ok) return 1;
      ++acked;
    }
  }
  return 0;
}

int producer_main(const std::string& name, int count) {
  auto q = shmq::Queue::open(name);
  if (!q) {
    std::fprintf(stderr, "producer: %s\n", q.error().message().c_str());
    return 1;
  }
  auto producer = q->producer();
  if (!producer) {
    std::fprintf(stderr, "producer: %s\n", producer.error().message().c_str());
    return 1;
  }
  for (int i = 1; i <= count; ++i) {
    const std::string text = "order #" + std::to_string(i);
    if (producer->send(text) != shmq::Status::ok) return 1;
  }
  std::printf("  producer pid %d  sent %d messages\n", ::getpid(), count);
  std::fflush(stdout);
  return 0;
}

int wait_child(pid_t pid) {
  int status = 0;
  if (::waitpid(pid, &status, 0) < 0) return 1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}

}  // namespace

int main(int argc, char** argv) {
  int count = 20;
  std::string name = "demo-" + std::to_string(::getpid());
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      usage(stdout);
      return 0;
    }
    if ((arg == "--messages" || arg == "--queue") && i + 1 < argc) {
      const std::string value = argv[++i];
      if (arg == "--queue") {
        name = value;
        continue;
      }
      char* end = nullptr;
      const long n = std::strtol(value.c_str(), &end, 10);
      if (*end != '\0' || n < 1 || n > 1'000'000) {
        std::fprintf(stderr, "shmq-demo: --messages takes a number from 1 to 1000000, not '%s'\n",
                     value.c_str());
        return 2;
      }
      count = static_cast<int>(n);
      continue;
    }
    std::fprintf(stderr, "shmq-demo: unknown or incomplete option '%s' (try --help)\n",
                 arg.c_str());
    return 2;
  }

  auto q = shmq::Queue::create(name, {.slot_count = 64, .slot_size = 128});
  if (!q) {
    std::fprintf(stderr, "shmq-demo: %s\n", q.error().message().c_str());
    return 1;
  }
  std::printf("created queue '%s' (/dev/shm/shmq.%s): %u slots of %u bytes\n", name.c_str(),
              name.c_str(), q->slot_count(), q->slot_size());
  std::fflush(stdout);

  const pid_t consumer = ::fork();
  if (consumer == 0) std::_Exit(consumer_main(name, count));
  const pid_t producer = ::fork();
  if (producer == 0) std::_Exit(producer_main(name, count));
  const int rc = wait_child(producer) | wait_child(consumer);

  const shmq::QueueStats s = q->stats();
  std::printf("done: sent %llu, received %llu, acked %llu, requeued %llu; %llu left in the queue\n",
              static_cast<unsigned long long>(s.sent), static_cast<unsigned long long>(s.received),
              static_cast<unsigned long long>(s.acked),
              static_cast<unsigned long long>(s.requeued),
              static_cast<unsigned long long>(s.ready + s.in_flight));
  (void)shmq::Queue::remove(name);
  return rc == 0 ? 0 : 1;
}
