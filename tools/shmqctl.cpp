// shmqctl: create, inspect and operate shmq queues from the command line.
//
//   shmqctl create QUEUE [--slots N] [--slot-size BYTES] [--max-message-size BYTES]
//                        [--durability none|async|sync] [--data-dir DIR]
//                        [--max-deliveries N] [--lease-ms MS] [--ttl-ms MS] [--mode 0600|0660]
//                        [--max-members N] [--backoff-initial-ms MS] [--backoff-max-ms MS]
//                        [--no-dead-letter] [--heartbeat-liveness] [--heartbeat-timeout-ms MS]
//                        [--claim-timeout-ms MS] [--flush-interval-ms MS] [--checksum]
//                        [--max-priority N] [--dedup-window N[/SECONDS]]
//   shmqctl set QUEUE [--lease-ms MS] [--max-deliveries N] [--ttl-ms MS]
//                     [--backoff-initial-ms MS] [--backoff-max-ms MS]
//   shmqctl delete QUEUE [--purge-data [--data-dir DIR]] [--keep-dlq]
//   shmqctl list [--json]
//   shmqctl stat QUEUE [--json] [--rate [--rate-ms MS]]
//   shmqctl watch QUEUE [--interval-ms MS] [--count N]
//   shmqctl produce QUEUE [--count N [--size BYTES]] [--priority P] [--delay-ms D]
//                         [--id ID | --tab-ids] [--header K=V]... [--content-type T]
//                         [--correlation-id C] [--reply-to Q]
//   shmqctl consume QUEUE [--count N] [--timeout-ms MS | --follow] [--reject]
//                         [--show-properties]
//   shmqctl consume TOPIC --group GROUP [--count N] [--timeout-ms MS | --follow]
//   shmqctl peek QUEUE [--count N] [--max-bytes N] [--json]
//   shmqctl dlq list|replay|purge QUEUE [--count N]
//   shmqctl log verify|dump DIR
//   shmqctl topic create TOPIC [--slots N] [--slot-size BYTES] [--max-groups N]
//                              [--max-members N] [--mode 0600|0660] [--history N]
//                              [--lease-ms MS] [--max-deliveries N] [--no-dead-letter]
//                              [--claim-timeout-ms MS] [--durability none|async|sync]
//                              [--data-dir DIR] [--flush-interval-ms MS]
//                              [--retain-bytes N] [--retain-age-s S]
//   shmqctl topic delete TOPIC
//   shmqctl group create TOPIC GROUP [--policy reliable|lossy]
//                                    [--start latest|earliest|POSITION]
//                                    [--stall-timeout-ms MS] [--on-stall hold|detach]
//   shmqctl group list TOPIC [--json]
//   shmqctl group delete TOPIC GROUP
// A topic (issue 15) shares the queues' name space: produce, consume --group, stat, list,
// delete and repair take a topic's name too.
//
// Exit codes: 0 success; 1 runtime failure (queue not found, permission denied, I/O, a
// failed send); 2 usage error (unknown command or flag, bad value, bad queue name). Every
// failure is reported as one line on stderr: "shmqctl: error: <what went wrong>".
// docs/shmqctl.md is the user's manual.
//
// ---------------------------------------------------------------------------------------
// `shmqctl stat QUEUE --json`: schema 1. A stable interface: fields are only ever added
// (never renamed, removed or changed in meaning) while "schema" stays 1. Counts are
// unsigned integers; "rates" values are floats; times are milliseconds.
//
//   {
//     "schema": 1,                    // this layout; bumped only for incompatible changes
//     "kind": "queue",                // "topic" for a topic: docs/shmqctl.md, "stat --json
//                                     //   of a topic" (its figures and a "groups" array)
//     "queue": "orders",
//     "time_unix_ms": 1700000000000,  // when the sample was taken (wall clock)
//     "state": "ok",                  // "ok", or ','-joined: "full", "no-shmqd" (durable,
//                                     //   no live shmqd attached), "dead-members"
//     "geometry": {"slot_count": 1024, "slot_size": 256, "payload_size": 192,
//                  "max_message_size": 192, "max_members": 64,
//                  "segment_bytes": 395264, "mode": "0600"},
//     "policy": {"lease_ms": 30000, "max_deliveries": 20, "ttl_ms": 0,
//                "backoff_initial_ms": 0, "backoff_max_ms": 60000, "dead_letter": true,
//                "dead_letter_queue": "orders.dlq", "heartbeat_liveness": false,
//                "heartbeat_timeout_ms": 5000, "claim_timeout_ms": 5000,
//                "checksum": false, "max_priority": 0},
//     "durability": "none",           // "none" | "async" | "sync"
//     "data_dir": null,               // durable: the data dir root (files in <data_dir>/<queue>/)
//     "flush_interval_ms": 5,
//     "depth": 3,                     // messages waiting: ready + delayed
//     "ready": 3,                     // deliverable now
//     "delayed": 0,                   // sent or nacked with a delay, not yet delivered
//     "next_due_in_ms": null,         // the earliest delayed message is due in this many
//                                     //   ms (0: due now); null when none is delayed
//     "in_flight": 0,                 // delivered, not acked
//     "priorities": [                 // --max-priority N: per level, highest first; else []
//       {"priority": 3, "depth": 1, "ready": 1, "delayed": 0, "in_flight": 0}, ...],
//     "claimed": 0,                   // slots being written by producers
//     "free_slots": 1021,
//     "tail": 3,                      // next position producers will claim
//     "dispatch": 0,                  // next position consumers will look at
//     "persisted": null,              // durable: every position below is in the log
//     "persisted_lag": null,          // durable: tail - persisted
//     "synced": null,                 // durable: every position below is on disk
//     "counters": {"sent": 3, "received": 0, "acked": 0, "requeued": 0, "redelivered": 0,
//                  "dead_lettered": 0, "expired": 0, "dead_letter_failed": 0,
//                  "leases_expired": 0, "holes_repaired": 0, "members_reclaimed": 0,
//                  "corrupt": 0},         // checksummed queues: messages not delivered
//     "rates": null,                  // with --rate: {"interval_ms", "sent_per_s",
//                                     //   "received_per_s", "acked_per_s", "requeued_per_s",
//                                     //   "redelivered_per_s", "dead_lettered_per_s"}
//     "watchdog_active": false,
//     "producers": 0,                 // active producer rows
//     "consumers": 0,                 // active consumer rows
//     "members": [                    // every row in use: producers, consumers, watchdogs,
//       {"index": 0, "role": "consumer", "status": "active", "pid": 4242,  // persisters
//        "alive": true, "heartbeat_age_ms": 12, "held": 1}
//     ]
//   }
//
// `shmqctl list --json`: {"schema": 1, "queues": [{"queue", "kind", "slot_count", "depth",
// "in_flight", "durability", "members", "state"} (a topic: also "groups") or {"queue",
// "error"}]}.
// ---------------------------------------------------------------------------------------
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <functional>
#include <string>

#include <CLI/CLI.hpp>

#include "platform/fd.hpp"
#include "shmqctl_commands.hpp"
#include "shmqctl_common.hpp"

namespace {

using namespace shmqctl;

// The deepest subcommand given on the command line, and its path ("shmqctl dlq replay").
const CLI::App* deepest(const CLI::App* app, std::string& path) {
  path = app->get_name();
  const CLI::App* at = app;
  for (;;) {
    const auto subs = at->get_subcommands();
    if (subs.empty()) return at;
    at = subs.front();
    path += " " + at->get_name();
  }
}

// One line for a parse error, naming the command whose --help says more.
std::string failure_line(const CLI::App* app, const CLI::Error& e) {
  std::string path;
  const CLI::App* at = deepest(app, path);
  std::string what = e.what();
  // "shmqctl bogus": CLI11 would only say that a subcommand is required.
  if (!at->get_subcommands({}).empty() && dynamic_cast<const CLI::RequiredError*>(&e) != nullptr) {
    const auto rest = at->remaining();
    if (!rest.empty() && !rest.front().empty() && rest.front().front() != '-')
      what = "unknown command '" + rest.front() + "'";
  }
  return "shmqctl: error: " + one_line(what) + " (see '" + path + " --help')\n";
}

CLI::Validator one_of(std::vector<std::string> words) {
  std::string all;
  for (const auto& w : words) all += (all.empty() ? "" : "|") + w;
  return CLI::Validator(
      [words, all](std::string& v) -> std::string {
        for (const auto& w : words)
          if (v == w) return {};
        return "must be " + all + ", not '" + v + "'";
      },
      all);
}

// A count: digits only (CLI11 would read "-3" into an unsigned 64-bit value as 2^64 - 3).
CLI::Validator whole_number() {
  return CLI::Validator(
      [](std::string& v) -> std::string {
        if (v.empty() || v.size() > 20 || v.find_first_not_of("0123456789") != std::string::npos)
          return "must be a whole number (0 or more), not '" + v + "'";
        return {};
      },
      "");
}

}  // namespace

// --wait STRATEGY [--spin-us US] [--sleep-us US] of produce and consume (issue 16).
template <typename Args>
void add_wait_options(CLI::App* cmd, Args& a, const char* what) {
  cmd->add_option("--wait", a.wait,
                  std::string("How ") + what +
                      " waits: futex (default: spin briefly, then sleep until woken), "
                      "busy-spin (never sleeps: a core of its own), spin-yield, spin-sleep")
      ->check(CLI::IsMember({"futex", "busy-spin", "spin-yield", "spin-sleep"}));
  cmd->add_option("--spin-us", a.spin_us,
                  "With --wait: spin this long before yielding, sleeping or blocking");
  cmd->add_option("--sleep-us", a.sleep_us, "With --wait spin-sleep: the sleep between looks")
      ->check(CLI::Range(std::uint64_t{1}, std::uint64_t{1'000'000}));
}

int main(int argc, char** argv) {
  // First of all: fds 0-2 must be open, else the queue's segment could be opened as fd 1
  // and `consume` would print the messages over it (issue 12). A closed one stays unusable.
  shmq::detail::make_stdio_valid();
  CLI::App app{"Create, inspect and operate shmq queues (shared-memory message queues) and "
               "topics (publish/subscribe with subscriber groups).",
               "shmqctl"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("shmqctl ") + SHMQ_VERSION,
                       "Print \"shmqctl VERSION\" and exit");
  app.failure_message(failure_line);
  app.footer(
      "Exit codes: 0 ok, 1 runtime failure (queue not found, permission denied, I/O),\n"
      "2 usage error (bad flag, bad value, bad queue name). Errors are one line on stderr.\n"
      "QUEUE: 1-200 characters of [A-Za-z0-9._-], not starting with '.' or '-', no '..';\n"
      "1-196 for a queue with dead letters (QUEUE.dlq must fit 200).\n"
      "Queues live in /dev/shm/shmq.<QUEUE>; durable ones also in <data dir>/<QUEUE>/.\n"
      "TOPIC: a name in the same name space, 1-130 characters with dead letters (every\n"
      "TOPIC.GROUP.dlq must fit); GROUP: 1-64 characters of [A-Za-z0-9_-].\n"
      "Run 'shmqctl COMMAND --help' for a command's options; manual: docs/shmqctl.md.");
  app.option_defaults()->always_capture_default();

  std::function<int()> run;

  // create
  CreateArgs ca;
  auto* create = app.add_subcommand("create", "Create a queue");
  create->add_option("QUEUE", ca.queue,
                     "Queue name: 1-196 characters of [A-Za-z0-9._-] (1-200 with "
                     "--no-dead-letter: QUEUE.dlq must fit 200), not starting with '.' or '-', "
                     "no '..'")
      ->required();
  create->add_option("--slots", ca.slots, "Slots in the ring: a power of two, 2..16777216");
  create->add_option("--slot-size", ca.slot_size,
                     "Bytes per slot incl. its 64-byte header: a multiple of 64, 128..1048576");
  create->add_option("--max-message-size", ca.max_message_size,
                     "Largest message in bytes; 0 = one slot's payload (larger ones span slots)");
  create->add_option("--max-members", ca.max_members, "Producer/consumer rows, 1..255");
  create->add_option("--durability", ca.durability,
                     "none (memory only), async (persisted by shmqd soon after), sync (a send "
                     "returns once on disk)")
      ->check(one_of({"none", "async", "sync"}));
  create->add_option("--data-dir", ca.data_dir,
                     "Durable queues: the data dir (as for shmqd --data-dir); created 0700 if "
                     "missing; the queue's files go to DIR/QUEUE/");
  create->add_option("--max-deliveries", ca.max_deliveries,
                     "Dead-letter a message given back after this many deliveries; 0 = never");
  create->add_option("--lease-ms", ca.lease_ms,
                     "Visibility timeout of a delivery in ms (redelivered if not acked); 0 = none");
  create->add_option("--ttl-ms", ca.ttl_ms, "Dead-letter messages older than this; 0 = never");
  create->add_option("--mode", ca.mode, "Segment file mode: 0600 (owner) or 0660 (owner and group)")
      ->check(one_of({"0600", "600", "0660", "660"}));
  create->add_option("--backoff-initial-ms", ca.backoff_initial_ms,
                     "Delay of a plain nack's redelivery, doubled per delivery; 0 = at once");
  create->add_option("--backoff-max-ms", ca.backoff_max_ms, "Cap of that doubling backoff");
  create->add_flag("--no-dead-letter", ca.no_dead_letter,
                   "Drop messages over --max-deliveries, expired or rejected instead of moving "
                   "them to QUEUE.dlq (no dead-letter queue is made)");
  create->add_flag("--heartbeat-liveness", ca.heartbeat_liveness,
                   "Judge members dead by heartbeat age, not by pid (processes in separate pid "
                   "namespaces)");
  create->add_option("--heartbeat-timeout-ms", ca.heartbeat_timeout_ms,
                     "With --heartbeat-liveness: a member silent this long is dead");
  create->add_option("--claim-timeout-ms", ca.claim_timeout_ms,
                     "A producer holding a claimed slot this long is stalled: its claim becomes "
                     "a hole; above 0");
  create->add_option("--flush-interval-ms", ca.flush_interval_ms,
                     "async: the longest a message waits before shmqd writes it");
  create->add_flag("--checksum", ca.checksum,
                   "Checksum every message (XXH3 over position, id, length and payload): a "
                   "message scribbled in shared memory after it was sent is never delivered "
                   "but dead-lettered with reason 'corrupt' (dropped with --no-dead-letter)");
  create->add_option("--max-priority", ca.max_priority,
                     "Priorities 0..N (0 = none, at most 31): consumers always receive the "
                     "highest-priority message first; each level above 0 is a ring of its own "
                     "(segment QUEUE.pN, same geometry): N + 1 times the memory")
      ->check(CLI::Range(0u, shmq::kMaxPriority));
  create->add_option("--dedup-window", ca.dedup_window,
                     "Deduplicate sends by id: a send whose id was among the last N ids sent "
                     "(and, with /SECONDS, sent less than SECONDS ago) is not enqueued again "
                     "(produce --id). N from 1 to 1048576; 256 bytes of memory per id");
  create->callback([&] { run = [&] { return cmd_create(ca); }; });

  // set
  SetArgs sta;
  auto* set = app.add_subcommand(
      "set",
      "Change a queue's run-time policy for every attached process (and in its queue.meta, if "
      "durable); options not given keep their value");
  set->add_option("QUEUE", sta.queue, "Queue name")->required();
  const auto ms_range = CLI::Range(std::int64_t{0}, std::int64_t{UINT32_MAX});
  set->add_option("--lease-ms", sta.lease_ms, "Visibility timeout of later deliveries; 0 = none")
      ->check(ms_range);
  set->add_option("--max-deliveries", sta.max_deliveries, "Dead-letter after N deliveries; 0 = never")
      ->check(ms_range);
  set->add_option("--ttl-ms", sta.ttl_ms, "Dead-letter messages older than this; 0 = never")
      ->check(ms_range);
  set->add_option("--backoff-initial-ms", sta.backoff_initial_ms, "Delay of a plain nack; 0 = none")
      ->check(ms_range);
  set->add_option("--backoff-max-ms", sta.backoff_max_ms, "Cap of the doubling backoff")
      ->check(ms_range);
  set->callback([&] { run = [&] { return cmd_set(sta); }; });

  // repair
  RepairArgs ra;
  auto* repair = app.add_subcommand(
      "repair",
      "Reclaim the member rows of dead processes and redeliver what they held (the way out of "
      "a member table full of dead rows); does nothing while a live watchdog runs");
  repair->add_option("QUEUE", ra.queue,
                     "Queue name; of a topic: Topic::heal() (redeliver dead subscribers' "
                     "messages, holes for dead publishers' claims, stall policies)")
      ->required();
  repair->callback([&] { run = [&] { return cmd_repair(ra); }; });

  // delete
  DeleteArgs da;
  auto* del = app.add_subcommand(
      "delete",
      "Delete a queue's shared segment (and its dead-letter queue's). Without --purge-data the "
      "data dir is kept, so that 'shmqd --data-dir DIR QUEUE' rebuilds the queue from it");
  del->add_option("QUEUE", da.queue, "Queue (or topic: as 'topic delete') name")->required();
  auto* purge_flag =
      del->add_flag("--purge-data", da.purge_data, "Also remove the queue's files in its data dir");
  del->add_option("--data-dir", da.data_dir,
                  "With --purge-data: the data dir (else the segment's, used only if DIR/QUEUE "
                  "holds a queue.meta naming QUEUE and has the queue's owner)")
      ->needs(purge_flag);
  del->add_flag("--keep-dlq", da.keep_dlq, "Keep the dead-letter queue QUEUE.dlq");
  del->callback([&] { run = [&] { return cmd_delete(da); }; });

  // list
  ListArgs la;
  auto* list = app.add_subcommand(
      "list", "List the queues and topics on this host with depth and state");
  list->add_flag("--json", la.json, "Machine-readable output (schema in docs/shmqctl.md)");
  list->callback([&] { run = [&] { return cmd_list(la); }; });

  // stat
  StatArgs sa;
  auto* stat = app.add_subcommand(
      "stat", "Geometry, durability, depth, in flight, persisted lag, counters and members");
  stat->add_option("QUEUE", sa.queue, "Queue (or topic: its figures and groups) name")->required();
  stat->add_flag("--json", sa.json, "Machine-readable output, schema 1 (docs/shmqctl.md)");
  stat->add_flag("--rate", sa.rate, "Also measure rates per second over --rate-ms");
  stat->add_option("--rate-ms", sa.rate_ms, "Sampling interval of --rate in ms")
      ->check(CLI::Range(1u, 3'600'000u));
  stat->callback([&] { run = [&] { return cmd_stat(sa); }; });

  // watch
  WatchArgs wa;
  auto* watch = app.add_subcommand("watch", "stat, refreshed live, with rates per second");
  watch->add_option("QUEUE", wa.queue, "Queue name")->required();
  watch->add_option("--interval-ms", wa.interval_ms, "Refresh interval in ms")
      ->check(CLI::Range(10u, 3'600'000u));
  watch->add_option("--count", wa.count, "Stop after N refreshes; 0 = until Ctrl-C")
      ->check(whole_number());
  watch->callback([&] { run = [&] { return cmd_watch(wa); }; });

  // produce
  ProduceArgs pa;
  auto* produce = app.add_subcommand(
      "produce",
      "Send one message per line of standard input (newline stripped); exit 0 once every line "
      "is accepted (on a sync queue: on disk). Blocks while the queue is full");
  produce->add_option("QUEUE", pa.queue,
                      "Queue (or topic: each message is published once, for every group) name")
      ->required();
  auto* count_opt =
      produce->add_option("--count", pa.count, "Send N generated messages instead (load)")
      ->check(whole_number());
  produce->add_option("--size", pa.size, "With --count: bytes per generated message (default 64)")
      ->needs(count_opt);
  produce->add_option("--priority", pa.priority,
                      "Send at priority P (0 .. the queue's max priority; default 0)")
      ->check(CLI::Range(0u, shmq::kMaxPriority));
  produce->add_option("--delay-ms", pa.delay_ms,
                      "Delayed delivery: no message is delivered before D ms after its send")
      ->check(whole_number());
  produce->add_option("--id", pa.id,
                      "Message ids: the first message gets ID, the next ones ID+1, ID+2, ... "
                      "(1 .. 2^62-1). On a queue with a dedup window an id already sent within "
                      "it is not enqueued again (counted on stderr; exit 0)");
  produce->add_flag("--tab-ids", pa.tab_ids,
                    "Each line is ID<TAB>payload: the message is the payload, with id ID");
  produce->add_option("--header", pa.headers,
                      "Message property: an application header K=V (repeatable; K not empty, K "
                      "and V at most 255 bytes each, all properties at most 4096 bytes)")
      ->allow_extra_args(false);
  produce->add_option("--content-type", pa.content_type,
                      "Message property: content type (at most 255 bytes)");
  produce->add_option("--correlation-id", pa.correlation_id,
                      "Message property: correlation id (at most 255 bytes)");
  produce->add_option("--reply-to", pa.reply_to,
                      "Message property: reply-to queue name (at most 255 bytes)");
  add_wait_options(produce, pa, "a send on a full queue (topic: held by a group)");
  produce->callback([&] { run = [&] { return cmd_produce(pa); }; });

  // consume
  ConsumeArgs coa;
  auto* consume = app.add_subcommand(
      "consume",
      "Write each message and a newline to standard output, flush, then ack it. Ctrl-C stops "
      "cleanly and returns unacked messages to the queue");
  consume->add_option("QUEUE", coa.queue, "Queue (or topic) name")->required();
  consume->add_option("-g,--group", coa.group,
                      "Topics (required there): the subscriber group to consume as; each "
                      "message is acked in that group only");
  consume->add_option("--count", coa.count, "Stop after N messages; 0 = no limit")
      ->check(whole_number());
  auto* timeout_opt = consume->add_option(
      "--timeout-ms", coa.timeout_ms, "Stop once no message came for this long; 0 = do not wait");
  consume->add_flag("-f,--follow", coa.follow, "Wait for messages forever (until Ctrl-C or --count)")
      ->excludes(timeout_opt);
  consume->add_flag("--reject", coa.reject,
                    "Reject instead of ack: each message goes to the dead-letter queue with "
                    "reason 'rejected' (after it was written)");
  consume->add_flag("--show-properties", coa.show_properties,
                    "Before each payload line, a line '#' + the message's properties as "
                    "key=value words (docs/shmqctl.md)");
  add_wait_options(consume, coa, "a receive on an empty queue (topic: group)");
  consume->callback([&] { run = [&] { return cmd_consume(coa); }; });

  // peek
  PeekArgs pka;
  auto* peek = app.add_subcommand(
      "peek", "Show the oldest messages (ready, in flight, delayed) without consuming them");
  peek->add_option("QUEUE", pka.queue, "Queue name")->required();
  peek->add_option("--count", pka.count, "Show at most N messages; 0 = all")
      ->check(whole_number());
  peek->add_option("--max-bytes", pka.max_bytes, "Show at most this many payload bytes each");
  peek->add_flag("--json", pka.json, "Machine-readable output (docs/shmqctl.md)");
  peek->callback([&] { run = [&] { return cmd_peek(pka); }; });

  // dlq
  auto* dlq = app.add_subcommand("dlq", "The dead-letter queue QUEUE.dlq");
  dlq->require_subcommand(1);
  DlqArgs dla;
  auto add_dlq = [&](const char* name, const char* help, int (*fn)(const DlqArgs&)) {
    auto* s = dlq->add_subcommand(name, help);
    s->add_option("QUEUE", dla.queue, "The queue whose dead letters these are")->required();
    s->add_option("--count", dla.count, "At most N dead letters; 0 = all")
      ->check(whole_number());
    if (fn == cmd_dlq_list)
      s->add_option("--max-bytes", dla.max_bytes, "Show at most this many payload bytes each");
    s->callback([&, fn] { run = [&, fn] { return fn(dla); }; });
  };
  add_dlq("list", "Show the dead letters with their reasons (without removing them)",
          cmd_dlq_list);
  add_dlq("replay", "Move dead letters back to QUEUE (original payload and id)", cmd_dlq_replay);
  add_dlq("purge", "Drop the dead letters", cmd_dlq_purge);

  // log
  auto* log = app.add_subcommand("log", "A durable queue's write-ahead log (read only)");
  log->require_subcommand(1);
  LogArgs lga;
  auto* verify = log->add_subcommand(
      "verify", "Check the log's integrity and report; never modifies anything");
  verify->add_option("DIR", lga.dir, "The queue's dir: <data dir>/<QUEUE>")->required();
  verify->add_flag("--json", lga.json, "Machine-readable report (docs/shmqctl.md)");
  verify->callback([&] { run = [&] { return cmd_log_verify(lga); }; });
  auto* dump = log->add_subcommand("dump", "Print the log's records");
  dump->add_option("DIR", lga.dir, "The queue's dir: <data dir>/<QUEUE>")->required();
  dump->add_option("--max-bytes", lga.max_bytes, "Show at most this many payload bytes each");
  dump->callback([&] { run = [&] { return cmd_log_dump(lga); }; });

  // topic
  auto* topic = app.add_subcommand(
      "topic", "Publish/subscribe topics: every group gets every message (docs/shmqctl.md)");
  topic->require_subcommand(1);
  TopicCreateArgs tca;
  auto* tcreate = topic->add_subcommand("create", "Create a topic (add groups with 'group create')");
  tcreate->add_option("TOPIC", tca.topic,
                      "Topic name: as a queue's (1-200 characters of [A-Za-z0-9._-], not "
                      "starting with '.' or '-', no '..'), in the same name space")
      ->required();
  tcreate->add_option("--slots", tca.slots, "Slots in the ring: a power of two, 2..16777216");
  tcreate->add_option("--slot-size", tca.slot_size,
                      "Bytes per slot incl. its 64-byte header: a multiple of 64, 128..1048576; "
                      "a message takes one slot");
  tcreate->add_option("--max-groups", tca.max_groups,
                      "Group rows, 1..64 (each costs 16 bytes of shared memory per slot)");
  tcreate->add_option("--max-members", tca.max_members, "Publisher/subscriber rows, 1..255");
  tcreate->add_option("--mode", tca.mode, "Segment file mode: 0600 (owner) or 0660 (owner and group)")
      ->check(one_of({"0600", "600", "0660", "660"}));
  tcreate->add_option("--history", tca.history,
                      "Messages a group created with --start earliest gets first; 0 = the whole "
                      "ring (at most --slots)");
  tcreate->add_option("--lease-ms", tca.lease_ms,
                      "Per group: a delivery not acked within this is redelivered; 0 = none");
  tcreate->add_option("--max-deliveries", tca.max_deliveries,
                      "Per group: dead-letter a message given back after this many deliveries "
                      "(to TOPIC.GROUP.dlq); 0 = never; at most 4095");
  tcreate->add_flag("--no-dead-letter", tca.no_dead_letter,
                    "Drop messages over --max-deliveries instead of dead-lettering them");
  tcreate->add_option("--claim-timeout-ms", tca.claim_timeout_ms,
                      "A publisher holding a claimed slot this long is stalled: its claim "
                      "becomes a hole every group passes");
  tcreate->add_option("--durability", tca.durability,
                      "none (memory only), async (logged by shmqd soon after), sync (a publish "
                      "returns once on disk)")
      ->check(one_of({"none", "async", "sync"}));
  tcreate->add_option("--data-dir", tca.data_dir,
                      "Durable topics: the data dir (as for shmqd --data-dir); the topic's "
                      "files go to DIR/TOPIC/");
  tcreate->add_option("--flush-interval-ms", tca.flush_interval_ms,
                      "async: the longest a message waits before shmqd writes it");
  tcreate->add_option("--retain-bytes", tca.retain_bytes,
                      "Durable topics: delete the oldest log files once the log is larger; 0 = "
                      "no size limit")
      ->check(whole_number());
  tcreate->add_option("--retain-age-s", tca.retain_age_s,
                      "Durable topics: delete log files whose newest message is older; 0 = no "
                      "age limit")
      ->check(whole_number());
  tcreate->callback([&] { run = [&] { return cmd_topic_create(tca); }; });
  TopicDeleteArgs tda;
  auto* tdelete = topic->add_subcommand(
      "delete", "Delete a topic's segment with its groups (and their dead-letter queues); a "
                "durable topic's data dir is kept");
  tdelete->add_option("TOPIC", tda.topic, "Topic name")->required();
  tdelete->callback([&] { run = [&] { return cmd_topic_delete(tda); }; });

  // group
  auto* group = app.add_subcommand("group", "A topic's subscriber groups");
  group->require_subcommand(1);
  GroupCreateArgs gca;
  auto* gcreate = group->add_subcommand(
      "create", "Create a subscriber group: it sees every message from its start on, and keeps "
                "its position without subscribers");
  gcreate->add_option("TOPIC", gca.topic, "Topic name")->required();
  gcreate->add_option("GROUP", gca.group, "Group name: 1-64 characters of [A-Za-z0-9_-]")
      ->required();
  gcreate->add_option("--policy", gca.policy,
                      "reliable (publishers wait for the group: it misses nothing) or lossy "
                      "(publishers never wait: a group a ring behind skips ahead and is told "
                      "how many it missed)")
      ->check(one_of({"reliable", "lossy"}));
  gcreate->add_option("--start", gca.start,
                      "latest (the next message published), earliest (the oldest the topic "
                      "keeps: its history or retained log) or a position");
  gcreate->add_option("--stall-timeout-ms", gca.stall_timeout_ms,
                      "Reliable groups: once the group held publishers back this long with no "
                      "live subscriber, it is stalled; 0 = never");
  gcreate->add_option("--on-stall", gca.on_stall,
                      "Reliable groups, once stalled: hold (keep holding publishers back) or "
                      "detach (stop holding them; its receives fail with closed)")
      ->check(one_of({"hold", "detach"}));
  gcreate->callback([&] { run = [&] { return cmd_group_create(gca); }; });
  GroupArgs ga;
  auto* glist = group->add_subcommand(
      "list", "A topic's groups: policy, state, position, lag, in flight, members, counters");
  glist->add_option("TOPIC", ga.topic, "Topic name")->required();
  glist->add_flag("--json", ga.json, "Machine-readable output (docs/shmqctl.md)");
  glist->callback([&] { run = [&] { return cmd_group_list(ga); }; });
  auto* gdelete = group->add_subcommand(
      "delete", "Delete a group: its subscribers' calls return closed, what it held is dropped");
  gdelete->add_option("TOPIC", ga.topic, "Topic name")->required();
  gdelete->add_option("GROUP", ga.group, "Group name")->required();
  gdelete->callback([&] { run = [&] { return cmd_group_delete(ga); }; });

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    app.exit(e);  // --help on stdout; an error as one line on stderr (failure_line)
    return e.get_exit_code() == static_cast<int>(CLI::ExitCodes::Success) ? kExitOk : kExitUsage;
  }

  try {
    if (!run) return kExitUsage;  // unreachable: a subcommand is required
    const int rc = run();
    if (std::fflush(stdout) != 0 || std::ferror(stdout))
      fail(kExitRuntime, std::string("writing to standard output: ") + std::strerror(errno));
    return rc;
  } catch (const Failure& f) {
    std::fflush(stdout);
    std::fprintf(stderr, "shmqctl: error: %s\n", one_line(f.message).c_str());
    return f.code;
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "shmqctl: error: %s\n", one_line(e.what()).c_str());
    return kExitRuntime;
  } catch (...) {
    std::fprintf(stderr, "shmqctl: error: unexpected failure\n");
    return kExitRuntime;
  }
}
