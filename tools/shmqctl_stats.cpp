#include "shmqctl_stats.hpp"

#include <algorithm>
#include <chrono>
#include <utility>
#include <cstdio>
#include <sstream>

#include "platform/process.hpp"
#include "segment/segment.hpp"
#include "shmqctl_common.hpp"

namespace shmqctl {

namespace {

double per_second(std::uint64_t before, std::uint64_t after, std::uint64_t interval_ms) {
  // Counters of members that leave move into the header totals; a sample taken in between
  // may go back by a little. Never report a negative rate.
  if (after <= before || interval_ms == 0) return 0.0;
  return static_cast<double>(after - before) * 1000.0 / static_cast<double>(interval_ms);
}

std::string fmt_rate(double r) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f/s", r);
  return buf;
}

std::string mode_string(std::uint32_t mode) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%04o", mode & 07777);
  return buf;
}

std::uint64_t ms(std::chrono::milliseconds d) {
  return d.count() < 0 ? 0 : static_cast<std::uint64_t>(d.count());
}

}  // namespace

Rates compute_rates(const shmq::QueueStats& a, const shmq::QueueStats& b,
                    std::uint64_t interval_ms) {
  Rates r;
  r.interval_ms = interval_ms;
  r.sent = per_second(a.sent, b.sent, interval_ms);
  r.received = per_second(a.received, b.received, interval_ms);
  r.acked = per_second(a.acked, b.acked, interval_ms);
  r.requeued = per_second(a.requeued, b.requeued, interval_ms);
  r.redelivered = per_second(a.redelivered, b.redelivered, interval_ms);
  r.dead_lettered = per_second(a.dead_lettered, b.dead_lettered, interval_ms);
  return r;
}

std::optional<std::uint64_t> persisted_lag(const shmq::QueueOptions& o,
                                           const shmq::QueueStats& s) {
  if (o.durability == shmq::Durability::none) return std::nullopt;
  return s.tail > s.persisted ? s.tail - s.persisted : 0;
}

std::string queue_state(const shmq::QueueOptions& o, const shmq::QueueStats& s) {
  std::string out;
  auto add = [&](const char* w) {
    if (!out.empty()) out += ',';
    out += w;
  };
  if (s.free_slots == 0 && s.slot_count > 0) add("full");
  if (o.durability != shmq::Durability::none) {
    bool persister = false;
    for (const auto& m : s.members)
      if (m.role == "persister" && m.alive && m.status == "active") persister = true;
    if (!persister) add("no-shmqd");
  }
  for (const auto& m : s.members)
    if (!m.alive) {
      add("dead-members");
      break;
    }
  return out.empty() ? "ok" : out;
}

nlohmann::ordered_json stat_json(const shmq::Queue& q, const shmq::QueueStats& s,
                                 const std::optional<Rates>& rates) {
  using nlohmann::ordered_json;
  const shmq::QueueOptions o = q.options();
  const auto now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  ordered_json j;
  j["schema"] = 1;
  j["kind"] = "queue";
  j["queue"] = q.name();
  j["time_unix_ms"] = now_ms;
  j["state"] = queue_state(o, s);
  j["geometry"] = {
      {"slot_count", s.slot_count},
      {"slot_size", s.slot_size},
      {"payload_size", q.segment()->payload_size()},
      {"max_message_size", s.max_message_size},
      {"max_members", s.max_members},
      {"segment_bytes", q.segment()->mapped_size()},
      {"mode", mode_string(o.mode)},
  };
  j["policy"] = {
      {"lease_ms", ms(o.lease)},
      {"max_deliveries", o.max_deliveries},
      {"ttl_ms", ms(o.ttl)},
      {"backoff_initial_ms", ms(o.backoff_initial)},
      {"backoff_max_ms", ms(o.backoff_max)},
      {"dead_letter", o.dead_letter},
      {"dead_letter_queue", shmq::Queue::dead_letter_name(q.name())},
      {"heartbeat_liveness", o.heartbeat_liveness},
      {"heartbeat_timeout_ms", ms(o.heartbeat_timeout)},
      {"claim_timeout_ms", ms(o.claim_timeout)},
      {"checksum", o.checksum},
      {"max_priority", o.max_priority},
      {"dedup_window", o.dedup_window.count},
      {"dedup_window_s", o.dedup_window.time.count()},
  };
  const bool durable = o.durability != shmq::Durability::none;
  j["durability"] = std::string(shmq::to_string(o.durability));
  j["data_dir"] = durable ? ordered_json(o.data_dir) : ordered_json(nullptr);
  j["flush_interval_ms"] = ms(o.flush_interval);
  j["depth"] = depth(s);
  j["ready"] = s.ready;
  j["delayed"] = s.delayed;
  const auto due = next_due_in_ms(s);
  j["next_due_in_ms"] = due ? ordered_json(*due) : ordered_json(nullptr);
  j["in_flight"] = s.in_flight;
  // Queues with priorities: one entry per level, highest first (empty without).
  ordered_json levels = ordered_json::array();
  for (const auto& l : s.levels)
    levels.push_back({{"priority", l.priority},
                      {"depth", l.ready + l.delayed},
                      {"ready", l.ready},
                      {"delayed", l.delayed},
                      {"in_flight", l.in_flight}});
  j["priorities"] = std::move(levels);
  j["oldest_unacked_age_ms"] = s.oldest_unacked_age_ms;
  j["claimed"] = s.claimed;
  j["free_slots"] = s.free_slots;
  j["tail"] = s.tail;
  j["dispatch"] = s.dispatch;
  j["persisted"] = durable ? ordered_json(s.persisted) : ordered_json(nullptr);
  const auto lag = persisted_lag(o, s);
  j["persisted_lag"] = lag ? ordered_json(*lag) : ordered_json(nullptr);
  j["synced"] = durable ? ordered_json(s.synced) : ordered_json(nullptr);
  j["counters"] = {
      {"sent", s.sent},
      {"received", s.received},
      {"acked", s.acked},
      {"requeued", s.requeued},
      {"redelivered", s.redelivered},
      {"dead_lettered", s.dead_lettered},
      {"expired", s.expired},
      {"dead_letter_failed", s.dead_letter_failed},
      {"leases_expired", s.leases_expired},
      {"holes_repaired", s.holes_repaired},
      {"members_reclaimed", s.members_reclaimed},
      {"corrupt", s.corrupt},
      {"duplicates", s.dedup_duplicates},
      {"dedup_evicted_early", s.dedup_evicted_early},
  };
  if (rates) {
    j["rates"] = {
        {"interval_ms", rates->interval_ms},
        {"sent_per_s", rates->sent},
        {"received_per_s", rates->received},
        {"acked_per_s", rates->acked},
        {"requeued_per_s", rates->requeued},
        {"redelivered_per_s", rates->redelivered},
        {"dead_lettered_per_s", rates->dead_lettered},
    };
  } else {
    j["rates"] = nullptr;
  }
  j["watchdog_active"] = s.watchdog_active;
  j["producers"] = s.producers;
  j["consumers"] = s.consumers;
  ordered_json members = ordered_json::array();
  for (const auto& m : s.members) {
    members.push_back({
        {"index", m.index},
        {"role", m.role},
        {"status", m.status},
        {"pid", m.pid},
        {"alive", m.alive},
        {"heartbeat_age_ms", m.heartbeat_age_ms},
        {"held", m.held},
    });
  }
  j["members"] = std::move(members);
  return j;
}

std::string stat_text(const shmq::Queue& q, const shmq::QueueStats& s,
                      const std::optional<Rates>& rates) {
  const shmq::QueueOptions o = q.options();
  const std::uint32_t payload = q.segment()->payload_size();
  std::ostringstream out;
  out << "queue        " << q.name() << "  [" << queue_state(o, s) << "]\n";
  out << "geometry     " << s.slot_count << " slots x " << s.slot_size << " B (" << payload
      << " B payload), max message " << s.max_message_size << " B, " << s.max_members
      << " member rows, segment " << human_bytes(q.segment()->mapped_size()) << ", mode "
      << mode_string(o.mode) << "\n";
  out << "policy       lease " << (o.lease.count() ? human_ms(ms(o.lease)) : "none")
      << ", max deliveries "
      << (o.max_deliveries ? std::to_string(o.max_deliveries) : std::string("unlimited"))
      << ", ttl " << (o.ttl.count() ? human_ms(ms(o.ttl)) : "none") << ", backoff "
      << (o.backoff_initial.count()
              ? human_ms(ms(o.backoff_initial)) + ".." + human_ms(ms(o.backoff_max))
              : std::string("none"))
      << ", dead letters "
      << (o.dead_letter ? "-> " + shmq::Queue::dead_letter_name(q.name())
                        : std::string("dropped"))
      << ", checksum " << (o.checksum ? "on" : "off") << "\n";
  out << "durability   " << shmq::to_string(o.durability);
  if (const auto lag = persisted_lag(o, s)) {
    out << ", data dir " << o.data_dir << ", persisted below " << s.persisted << ", lag "
        << *lag << ", on disk below " << s.synced;
  }
  out << "\n";
  out << "messages     depth " << depth(s) << " (ready " << s.ready << ", delayed " << s.delayed
      << "), in flight " << s.in_flight << ", being written " << s.claimed << ", free slots "
      << s.free_slots << ", oldest unacked " << s.oldest_unacked_age_ms << " ms";
  if (const auto due = next_due_in_ms(s)) out << ", next due in " << *due << " ms";
  out << "\n";
  if (!s.levels.empty()) {
    out << "priorities   0.." << o.max_priority << " (levels " << q.name() << ".p1 .. " << q.name()
        << ".p" << o.max_priority << "); depth by priority, highest first:";
    for (const auto& l : s.levels)
      if (l.ready + l.delayed + l.in_flight != 0)
        out << " " << l.priority << ": " << l.ready + l.delayed << " (+" << l.in_flight
            << " in flight)";
    out << "\n";
  }
  if (o.dedup_window.count != 0) {
    out << "dedup        window " << o.dedup_window.count << " ids";
    if (o.dedup_window.time.count() != 0) out << " / " << o.dedup_window.time.count() << " s";
    if (o.max_priority != 0) out << " (per priority level)";
    out << "; duplicates refused " << s.dedup_duplicates
        << ", evicted early " << s.dedup_evicted_early << "\n";
  }
  out << "positions    tail " << s.tail << ", dispatch " << s.dispatch << "\n";
  out << "counters     sent " << s.sent << ", received " << s.received << ", acked " << s.acked
      << ", requeued " << s.requeued << ", redelivered " << s.redelivered
      << ", dead-lettered " << s.dead_lettered << " (expired " << s.expired
      << ", failed " << s.dead_letter_failed << "), corrupt " << s.corrupt << "\n";
  out << "watchdog     " << (s.watchdog_active ? "active" : "none") << "; leases expired "
      << s.leases_expired << ", holes repaired " << s.holes_repaired << ", members reclaimed "
      << s.members_reclaimed << "\n";
  if (rates) {
    out << "rates        sent " << fmt_rate(rates->sent) << ", received "
        << fmt_rate(rates->received) << ", acked " << fmt_rate(rates->acked) << ", redelivered "
        << fmt_rate(rates->redelivered) << ", dead-lettered " << fmt_rate(rates->dead_lettered)
        << " (over " << human_ms(rates->interval_ms) << ")\n";
  }
  out << "members      " << s.members.size() << " (" << s.producers << " producers, "
      << s.consumers << " consumers)\n";
  if (!s.members.empty()) {
    char line[160];
    std::snprintf(line, sizeof line, "  %-5s %-10s %-8s %-8s %-6s %-10s %s\n", "ROW", "ROLE",
                  "STATUS", "PID", "ALIVE", "HEARTBEAT", "HELD");
    out << line;
    for (const auto& m : s.members) {
      std::snprintf(line, sizeof line, "  %-5u %-10s %-8s %-8u %-6s %-10s %llu\n", m.index,
                    m.role.c_str(), m.status.c_str(), m.pid, m.alive ? "yes" : "NO",
                    human_ms(m.heartbeat_age_ms).c_str(),
                    static_cast<unsigned long long>(m.held));
      out << line;
    }
  }
  return out.str();
}

std::optional<std::uint64_t> next_due_in_ms(const shmq::QueueStats& s) {
  if (s.delayed == 0 || s.next_due_ns == 0) return std::nullopt;
  const std::uint64_t now = shmq::detail::monotonic_ns();
  return s.next_due_ns > now ? (s.next_due_ns - now + 999'999) / 1'000'000 : 0;
}

// --- topics -------------------------------------------------------------------------------

std::string topic_state(const shmq::TopicStats& s) {
  bool full = false, stalled = false, detached = false;
  for (const auto& g : s.groups) {
    if (g.policy == shmq::GroupPolicy::reliable && g.state != "detached" && s.slot_count != 0 &&
        g.lag >= s.slot_count)
      full = true;
    if (g.state == "stalled") stalled = true;
    if (g.state == "detached") detached = true;
  }
  std::string out;
  for (const auto& [on, word] : {std::pair{full, "full"}, {stalled, "stalled"}, {detached, "detached"}})
    if (on) out += (out.empty() ? "" : ",") + std::string(word);
  return out.empty() ? "ok" : out;
}

std::uint64_t topic_depth(const shmq::TopicStats& s) {
  std::uint64_t d = 0;
  for (const auto& g : s.groups) d = std::max(d, g.lag);
  return d;
}

std::string group_dead_letter_name(std::string_view topic, std::string_view group) {
  return std::string(topic) + "." + std::string(group) + ".dlq";
}

nlohmann::ordered_json group_json(const shmq::Topic& t, const shmq::GroupStats& g) {
  using nlohmann::ordered_json;
  const bool dlq = t.options().dead_letter;
  return {
      {"name", g.name},
      {"policy", std::string(shmq::to_string(g.policy))},
      {"state", g.state},
      {"on_stall", std::string(shmq::to_string(g.on_stall))},
      {"stall_timeout_ms", g.stall_timeout_ms},
      {"position", g.position},
      {"acked", g.acked},
      {"lag", g.lag},
      {"in_flight", g.in_flight},
      {"requeued", g.requeued},
      {"members", g.members},
      {"delivered", g.delivered},
      {"acks", g.acks},
      {"redelivered", g.redelivered},
      {"missed", g.missed},
      {"dead_lettered", g.dead_lettered},
      {"dropped", g.dropped},
      {"dead_letter_queue",
       dlq ? ordered_json(group_dead_letter_name(t.name(), g.name)) : ordered_json(nullptr)},
  };
}

std::string group_table(const std::vector<shmq::GroupStats>& groups) {
  std::string out;
  char line[512];
  std::snprintf(line, sizeof line, "%-16s %-8s %-8s %10s %10s %8s %9s %8s %7s %10s %10s %11s %8s %13s\n",
                "GROUP", "POLICY", "STATE", "POSITION", "ACKED", "LAG", "IN-FLIGHT", "REQUEUED",
                "MEMBERS", "DELIVERED", "ACKS", "REDELIVERED", "MISSED", "DEAD-LETTERED");
  out += line;
  const auto u = [](std::uint64_t v) { return static_cast<unsigned long long>(v); };
  for (const auto& g : groups) {
    std::snprintf(line, sizeof line,
                  "%-16s %-8s %-8s %10llu %10llu %8llu %9llu %8llu %7u %10llu %10llu %11llu %8llu %13llu\n",
                  g.name.c_str(), std::string(shmq::to_string(g.policy)).c_str(), g.state.c_str(),
                  u(g.position), u(g.acked), u(g.lag), u(g.in_flight), u(g.requeued), g.members,
                  u(g.delivered), u(g.acks), u(g.redelivered), u(g.missed), u(g.dead_lettered));
    out += line;
  }
  return out;
}

nlohmann::ordered_json topic_stat_json(const shmq::Topic& t, const shmq::TopicStats& s) {
  using nlohmann::ordered_json;
  const shmq::TopicOptions o = t.options();
  const auto now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  const bool durable = s.durability != shmq::Durability::none;
  ordered_json j;
  j["schema"] = 1;
  j["kind"] = "topic";
  j["topic"] = t.name();
  j["time_unix_ms"] = now_ms;
  j["state"] = topic_state(s);
  j["geometry"] = {
      {"slot_count", s.slot_count},
      {"slot_size", s.slot_size},
      {"max_message_size", s.max_message_size},
      {"max_members", o.max_members},
      {"max_groups", s.max_groups},
      {"segment_bytes", t.segment()->mapped_size()},
      {"mode", mode_string(o.mode)},
  };
  j["policy"] = {
      {"lease_ms", ms(o.lease)},
      {"max_deliveries", o.max_deliveries},
      {"dead_letter", o.dead_letter},
      {"claim_timeout_ms", ms(o.claim_timeout)},
      {"history", s.history},
  };
  j["durability"] = std::string(shmq::to_string(s.durability));
  j["data_dir"] = durable ? ordered_json(o.data_dir) : ordered_json(nullptr);
  j["flush_interval_ms"] = ms(o.flush_interval);
  j["retain_bytes"] = o.retain_bytes;
  j["retain_age_s"] = o.retain_age.count() < 0 ? 0 : static_cast<std::uint64_t>(o.retain_age.count());
  j["head"] = s.head;
  j["earliest"] = s.earliest;
  j["persisted"] = durable ? ordered_json(s.persisted) : ordered_json(nullptr);
  j["persisted_lag"] =
      durable ? ordered_json(s.head > s.persisted ? s.head - s.persisted : 0) : ordered_json(nullptr);
  j["counters"] = {{"published", s.published}, {"holes", s.holes}};
  j["publishers"] = s.publishers;
  j["subscribers"] = s.subscribers;
  ordered_json groups = ordered_json::array();
  for (const auto& g : s.groups) groups.push_back(group_json(t, g));
  j["groups"] = std::move(groups);
  return j;
}

std::string topic_stat_text(const shmq::Topic& t, const shmq::TopicStats& s) {
  const shmq::TopicOptions o = t.options();
  std::ostringstream out;
  out << "topic        " << t.name() << "  [" << topic_state(s) << "]\n";
  out << "geometry     " << s.slot_count << " slots x " << s.slot_size << " B, max message "
      << s.max_message_size << " B, " << o.max_members << " member rows, " << s.max_groups
      << " group rows, segment " << human_bytes(t.segment()->mapped_size()) << ", mode "
      << mode_string(o.mode) << "\n";
  out << "policy       lease " << (o.lease.count() ? human_ms(ms(o.lease)) : "none")
      << ", max deliveries "
      << (o.max_deliveries ? std::to_string(o.max_deliveries) : std::string("unlimited"))
      << ", dead letters "
      << (o.dead_letter ? "-> " + group_dead_letter_name(t.name(), "GROUP")
                        : std::string("dropped"))
      << ", claim timeout " << human_ms(ms(o.claim_timeout)) << ", history " << s.history
      << " messages\n";
  out << "durability   " << shmq::to_string(s.durability);
  if (s.durability != shmq::Durability::none) {
    out << ", data dir " << o.data_dir << ", persisted below " << s.persisted << ", lag "
        << (s.head > s.persisted ? s.head - s.persisted : 0) << ", retain "
        << (o.retain_bytes ? human_bytes(o.retain_bytes) : std::string("any size")) << " / "
        << (o.retain_age.count() ? std::to_string(o.retain_age.count()) + " s"
                                 : std::string("any age"));
  }
  out << "\n";
  out << "positions    head " << s.head << ", earliest " << s.earliest << "\n";
  out << "counters     published " << s.published << ", holes " << s.holes << "\n";
  out << "members      " << s.publishers << " publishers, " << s.subscribers << " subscribers\n";
  out << "groups       " << s.groups.size() << " of " << s.max_groups << "\n";
  if (!s.groups.empty()) {
    std::istringstream table(group_table(s.groups));
    for (std::string line; std::getline(table, line);) out << "  " << line << "\n";
  }
  return out.str();
}

std::string dump_json(const nlohmann::ordered_json& j) {
  return j.dump(2, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

}  // namespace shmqctl
