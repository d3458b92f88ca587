// shmqctl topic create|delete, group create|list|delete, and the topic side of stat and
// repair (issue 15). produce and consume on a topic are in shmqctl_messages.cpp, list and
// delete dispatch here from shmqctl_admin.cpp.
#include <charconv>
#include <chrono>
#include <cstdio>
#include <string>
#include <system_error>
#include <vector>

#include "persist/meta.hpp"
#include "segment/segment.hpp"
#include "shmqctl_commands.hpp"
#include "shmqctl_common.hpp"
#include "shmqctl_stats.hpp"

namespace shmqctl {

namespace {

std::string shm_path(const std::string& name) {
  return "/dev/shm/" + shmq::detail::Segment::object_name(name);
}

// A library error from a call whose arguments came from the command line: a bad value
// (invalid_argument) is a usage error, anything else a runtime failure.
[[noreturn]] void fail_call(const shmq::Error& e) {
  if (e.code() == shmq::Errc::invalid_argument) fail(kExitUsage, e.message());
  fail_topic(e);
}

// Opens TOPIC for a topic-only command: a queue of that name is named as such (exit 1).
shmq::Topic open_topic_only(const std::string& name) {
  check_name(name);
  if (!shmq::Topic::is_topic(name)) {
    if (shmq::Queue::open(name).ok())
      fail(kExitRuntime, "'" + name + "' is a queue, not a topic");
  }
  return open_topic(name);
}

shmq::GroupPolicy parse_policy(const std::string& w) {
  if (w == "reliable") return shmq::GroupPolicy::reliable;
  if (w == "lossy") return shmq::GroupPolicy::lossy;
  fail(kExitUsage, "--policy must be reliable or lossy, not '" + w + "'");
}

shmq::StallAction parse_on_stall(const std::string& w) {
  if (w == "hold") return shmq::StallAction::hold;
  if (w == "detach") return shmq::StallAction::detach;
  fail(kExitUsage, "--on-stall must be hold or detach, not '" + w + "'");
}

shmq::StartAt parse_start(const std::string& w) {
  if (w == "latest") return shmq::StartAt::latest();
  if (w == "earliest") return shmq::StartAt::earliest();
  std::uint64_t p = 0;
  const auto [end, ec] = std::from_chars(w.data(), w.data() + w.size(), p);
  if (w.empty() || ec != std::errc() || end != w.data() + w.size())
    fail(kExitUsage, "--start must be latest, earliest or a position (a whole number), not '" +
                         w + "'");
  return shmq::StartAt::at(p);
}

std::string start_text(const shmq::StartAt& s) {
  switch (s.kind) {
    case shmq::StartAt::Kind::latest: return "the latest message";
    case shmq::StartAt::Kind::earliest: return "the earliest retained message";
    case shmq::StartAt::Kind::position: return "position " + std::to_string(s.position);
  }
  return "?";
}

}  // namespace

// --- topic create ---------------------------------------------------------------------------

int cmd_topic_create(const TopicCreateArgs& a) {
  check_name(a.topic);
  shmq::TopicOptions o;
  o.slot_count = a.slots;
  o.slot_size = a.slot_size;
  o.max_groups = a.max_groups;
  o.max_members = a.max_members;
  o.mode = parse_mode(a.mode);
  o.history = a.history;
  o.lease = std::chrono::milliseconds(a.lease_ms);
  o.max_deliveries = a.max_deliveries;
  o.dead_letter = !a.no_dead_letter;
  o.claim_timeout = std::chrono::milliseconds(a.claim_timeout_ms);
  o.durability = parse_durability(a.durability);
  o.data_dir = a.data_dir;
  o.flush_interval = std::chrono::milliseconds(a.flush_interval_ms);
  o.retain_bytes = a.retain_bytes;
  o.retain_age = std::chrono::seconds(static_cast<std::int64_t>(
      std::min<std::uint64_t>(a.retain_age_s, INT64_MAX / 1'000'000'000)));
  if (o.durability != shmq::Durability::none && o.data_dir.empty())
    fail(kExitUsage, "--durability " + a.durability +
                         " needs --data-dir DIR (the directory shmqd persists the topic to)");
  if (o.durability == shmq::Durability::none && !o.data_dir.empty())
    fail(kExitUsage, "--data-dir is for durable topics: add --durability async or sync");
  if (o.durability == shmq::Durability::none && (a.retain_bytes != 0 || a.retain_age_s != 0))
    fail(kExitUsage, "--retain-bytes and --retain-age-s are for durable topics: add "
                     "--durability async or sync");
  if (a.history > a.slots)
    fail(kExitUsage, "--history " + std::to_string(a.history) + " is more than the ring's " +
                         std::to_string(a.slots) + " slots (0 = the whole ring)");
  auto t = shmq::Topic::create(a.topic, o);
  if (!t.ok()) fail_call(t.error());
  const shmq::TopicStats s = t->stats();
  std::printf("created topic '%s': %u slots x %u B, max message %u B, up to %u groups, history "
              "%u, durability %s",
              a.topic.c_str(), s.slot_count, s.slot_size, s.max_message_size, s.max_groups,
              s.history, std::string(shmq::to_string(s.durability)).c_str());
  if (s.durability != shmq::Durability::none) {
    const shmq::TopicOptions c = t->options();
    std::printf(", data in %s (persist with: shmqd --data-dir %s %s)",
                shmq::detail::queue_dir(c.data_dir, a.topic).c_str(), c.data_dir.c_str(),
                a.topic.c_str());
  }
  std::printf("\n");
  return kExitOk;
}

// --- topic delete ---------------------------------------------------------------------------

int cmd_topic_delete(const TopicDeleteArgs& a) {
  shmq::Topic t = open_topic_only(a.topic);
  const shmq::TopicOptions o = t.options();
  const shmq::TopicStats s = t.stats();
  if (s.publishers + s.subscribers != 0)
    warn(std::to_string(s.publishers) + " publisher(s) and " + std::to_string(s.subscribers) +
         " subscriber(s) still attached keep using the removed segment until they close it "
         "(their blocking calls return closed)");
  // Topic::remove also removes the groups' dead-letter queues ("<topic>.<group>.dlq"), ours
  // only: see which went, and name those it left.
  std::vector<std::string> dlqs;
  for (const auto& g : s.groups) {
    const std::string dlq = group_dead_letter_name(a.topic, g.name);
    if (shmq::Queue::validate_name(dlq).empty() && shmq::detail::Segment::owner_of(dlq).ok())
      dlqs.push_back(dlq);
  }
  if (auto r = shmq::Topic::remove(a.topic); !r.ok()) fail_topic(r.error());
  std::string what = shm_path(a.topic);
  for (const auto& d : dlqs) {
    if (auto f = shmq::detail::Segment::owner_of(d); f.ok())
      warn("not removing " + shm_path(d) + ": it is owned by uid " +
           std::to_string(f.value().uid) + ", not by you");
    else
      what += ", " + shm_path(d);
  }
  std::printf("deleted topic '%s' (%s)", a.topic.c_str(), what.c_str());
  if (a.after_remove)
    std::printf("%s", a.after_remove().c_str());
  else if (o.durability != shmq::Durability::none)
    std::printf("; data kept in %s (shmqd --data-dir %s %s rebuilds it)",
                shmq::detail::queue_dir(o.data_dir, a.topic).c_str(), o.data_dir.c_str(),
                a.topic.c_str());
  std::printf("\n");
  return kExitOk;
}

// --- group create, list, delete -----------------------------------------------------------

int cmd_group_create(const GroupCreateArgs& a) {
  check_name(a.topic);
  check_group_name(a.group);
  shmq::GroupOptions o;
  o.policy = parse_policy(a.policy);
  o.start = parse_start(a.start);
  o.stall_timeout = std::chrono::milliseconds(a.stall_timeout_ms);
  o.on_stall = parse_on_stall(a.on_stall);
  if (o.policy == shmq::GroupPolicy::lossy &&
      (a.stall_timeout_ms != 0 || o.on_stall != shmq::StallAction::hold))
    fail(kExitUsage, "--stall-timeout-ms and --on-stall are for reliable groups: a lossy group "
                     "never holds publishers back");
  if (o.on_stall == shmq::StallAction::detach && a.stall_timeout_ms == 0)
    fail(kExitUsage, "--on-stall detach needs --stall-timeout-ms MS (0 = never stalled)");
  shmq::Topic t = open_topic_only(a.topic);
  auto g = t.create_group(a.group, o);
  if (!g.ok()) fail_call(g.error());
  std::printf("created %s group '%s' on topic '%s', starting at %s\n",
              std::string(shmq::to_string(g->policy)).c_str(), a.group.c_str(), a.topic.c_str(),
              start_text(o.start).c_str());
  std::fputs(group_table({g.value()}).c_str(), stdout);
  return kExitOk;
}

int cmd_group_list(const GroupArgs& a) {
  shmq::Topic t = open_topic_only(a.topic);
  const std::vector<shmq::GroupStats> groups = t.groups();
  if (a.json) {
    // {"schema": 1, "topic", "groups": [as in stat --json]}
    nlohmann::ordered_json j;
    j["schema"] = 1;
    j["topic"] = t.name();
    j["groups"] = nlohmann::ordered_json::array();
    for (const auto& g : groups) j["groups"].push_back(group_json(t, g));
    std::printf("%s\n", dump_json(j).c_str());
    return kExitOk;
  }
  if (groups.empty()) {
    std::printf("(no groups: create one with 'shmqctl group create %s GROUP')\n", a.topic.c_str());
    return kExitOk;
  }
  std::fputs(group_table(groups).c_str(), stdout);
  return kExitOk;
}

int cmd_group_delete(const GroupArgs& a) {
  check_name(a.topic);
  check_group_name(a.group);
  shmq::Topic t = open_topic_only(a.topic);
  if (auto r = t.delete_group(a.group); !r.ok()) fail_call(r.error());
  std::printf("deleted group '%s' of topic '%s'\n", a.group.c_str(), a.topic.c_str());
  return kExitOk;
}

// --- stat, repair on a topic ----------------------------------------------------------------

int topic_stat(const StatArgs& a) {
  if (a.rate) fail(kExitUsage, "--rate is for queues; '" + a.queue + "' is a topic");
  shmq::Topic t = open_topic(a.queue);
  const shmq::TopicStats s = t.stats();
  if (a.json)
    std::printf("%s\n", dump_json(topic_stat_json(t, s)).c_str());
  else
    std::fputs(topic_stat_text(t, s).c_str(), stdout);
  return kExitOk;
}

int topic_repair(const RepairArgs& a) {
  shmq::Topic t = open_topic(a.queue);
  const shmq::TopicStats before = t.stats();
  const std::uint64_t changes = t.heal();
  const shmq::TopicStats after = t.stats();
  // What changed, from the counters: the figures include whatever the topic's own members
  // did meanwhile.
  std::uint64_t redelivered = 0;
  std::string now_stalled, now_detached;
  for (const auto& g : after.groups) {
    for (const auto& b : before.groups)
      if (b.name == g.name) {
        if (g.redelivered > b.redelivered) redelivered += g.redelivered - b.redelivered;
        if (g.state != b.state && g.state == "stalled") now_stalled += " " + g.name;
        if (g.state != b.state && g.state == "detached") now_detached += " " + g.name;
      }
  }
  const std::uint64_t holes = after.holes > before.holes ? after.holes - before.holes : 0;
  std::printf("topic '%s': %llu change(s): %llu message(s) redelivered, %llu dead publisher "
              "claim(s) turned into holes",
              a.queue.c_str(), static_cast<unsigned long long>(changes),
              static_cast<unsigned long long>(redelivered), static_cast<unsigned long long>(holes));
  if (!now_stalled.empty()) std::printf(", stalled:%s", now_stalled.c_str());
  if (!now_detached.empty()) std::printf(", detached:%s", now_detached.c_str());
  std::printf("\n");
  return kExitOk;
}

}  // namespace shmqctl
