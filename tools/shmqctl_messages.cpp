// shmqctl produce, consume, peek, dlq list|replay|purge.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "core/properties_block.hpp"
#include "persist/republish.hpp"
#include "platform/process.hpp"
#include "ring/slot_word.hpp"
#include "segment/segment.hpp"
#include "persist/republish.hpp"
#include "shmqctl_commands.hpp"
#include "shmqctl_common.hpp"
#include "shmqctl_stats.hpp"

namespace shmqctl {

namespace {

using shmq::Status;
using shmq::detail::SlotState;

std::string status_text(Status s) { return std::string(shmq::to_string(s)); }

// --- properties in text and JSON (docs/shmqctl.md, "Message properties") -------------------

// A property's text as one word: printable ASCII but space and backslash as is, the rest
// escaped (\xNN, \\); in a key, '=' too (the first '=' of a word ends its key).
std::string escape_word(std::string_view s, bool key) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == '\\') {
      out += "\\\\";
    } else if (c > 0x20 && c < 0x7f && !(key && c == '=')) {
      out.push_back(ch);
    } else {
      out += "\\x";
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 0xf]);
    }
  }
  return out;
}

// "timestamp_ns=N priority=P [content_type=T] [correlation_id=C] [reply_to=Q] [h.K=V]...":
// the set fields only; timestamp_ns only for a message with properties.
std::string properties_words(const shmq::PropertiesView& v) {
  std::string out;
  if (v.present()) out += "timestamp_ns=" + std::to_string(v.timestamp_ns()) + " ";
  out += "priority=" + std::to_string(v.priority());
  const auto add = [&out](const char* name, std::string_view value) {
    if (!value.empty()) out += std::string(" ") + name + "=" + escape_word(value, false);
  };
  add("content_type", v.content_type());
  add("correlation_id", v.correlation_id());
  add("reply_to", v.reply_to());
  for (const auto& [k, val] : v.headers())
    out += " h." + escape_word(k, true) + "=" + escape_word(val, false);
  return out;
}

// null without properties; else {"content_type", "correlation_id", "reply_to" (null when
// not set), "timestamp_ns", "headers": [[key, value], ...]}.
nlohmann::ordered_json properties_json(const shmq::PropertiesView& v) {
  if (!v.present()) return nullptr;
  const auto str = [](std::string_view s) {
    return s.empty() ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(std::string(s));
  };
  nlohmann::ordered_json j;
  j["content_type"] = str(v.content_type());
  j["correlation_id"] = str(v.correlation_id());
  j["reply_to"] = str(v.reply_to());
  j["timestamp_ns"] = v.timestamp_ns();
  j["headers"] = nlohmann::ordered_json::array();
  for (const auto& [k, val] : v.headers())
    j["headers"].push_back(nlohmann::ordered_json::array({std::string(k), std::string(val)}));
  return j;
}

// --- peek: reading the ring without taking anything -----------------------------------------

struct Peeked {
  std::uint64_t position = 0;
  std::uint64_t id = 0;
  SlotState state = SlotState::ready;
  std::uint32_t owner = 0;
  std::uint32_t delivery_count = 0;
  std::uint64_t size = 0;    // the message's length
  std::uint64_t age_ms = 0;  // since it was committed
  std::optional<std::uint64_t> due_in_ms;  // delayed: due in this many ms (0: due now)
  std::uint32_t priority = 0;  // its level on a queue with priorities
  std::vector<std::byte> payload;  // its first bytes (at most the copy limit)
  std::vector<std::byte> properties_block;  // its properties (empty: none)
  shmq::PropertiesView properties() const noexcept { return {properties_block, priority}; }
};

bool live_state(SlotState s) {
  return s == SlotState::ready || s == SlotState::held || s == SlotState::delayed;
}

// Copies the message whose head is at `pos` if the slot word is `w`; false if the slot
// changed while it was read (seqlock-style: the word is read again after the copy).
bool read_message(const shmq::detail::Segment& seg, std::uint64_t pos, std::uint64_t w,
                  std::size_t copy_limit, Peeked& out) {
  const shmq::detail::SlotHeader& h = seg.slot(pos);
  const std::uint32_t k = shmq::detail::word_aux(w);
  const std::uint64_t payload = seg.payload_size();
  // Nothing read from the segment is trusted: fragments and length are bounded by the
  // geometry before they are used.
  if (k == 0 || k > seg.max_fragments() || k > seg.slot_count()) return false;
  const std::uint32_t length = h.length.load(std::memory_order_relaxed);
  const std::uint64_t len = length & shmq::detail::kLengthMask;
  const bool has_properties = (length & shmq::detail::kLengthHasProperties) != 0;
  // With properties the block comes first: copy it too (at most kMaxPropertiesSize).
  const std::size_t shown = copy_limit;
  if (has_properties) copy_limit = shown + std::min(shmq::kMaxPropertiesSize, SIZE_MAX - shown);
  const std::uint64_t bound = std::min<std::uint64_t>(seg.max_message_size(), k * payload);
  out.position = pos;
  out.id = h.id.load(std::memory_order_relaxed);
  out.state = shmq::detail::word_state(w);
  out.owner = shmq::detail::owner_row(shmq::detail::word_owner(w));
  out.delivery_count = h.delivery_count.load(std::memory_order_relaxed);
  out.priority = seg.priority_level();
  out.size = std::min(len, bound);
  const std::uint64_t enq = h.enqueued_ns.load(std::memory_order_relaxed);
  const std::uint64_t now = shmq::detail::monotonic_coarse_ns();
  out.age_ms = enq != 0 && now > enq ? (now - enq) / 1'000'000 : 0;
  out.due_in_ms.reset();
  if (out.state == SlotState::delayed) {
    // Rounded up: "due in 0 ms" only once it is due.
    const std::uint64_t due = h.deadline_ns.load(std::memory_order_relaxed);
    const std::uint64_t precise = shmq::detail::monotonic_ns();
    out.due_in_ms = due > precise ? (due - precise + 999'999) / 1'000'000 : 0;
  }
  const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(out.size, copy_limit));
  out.payload.resize(n);
  for (std::size_t off = 0, q = 0; off < n; ++q) {
    const std::size_t m = static_cast<std::size_t>(std::min<std::uint64_t>(payload, n - off));
    std::memcpy(out.payload.data() + off, seg.payload(pos + q), m);
    off += m;
  }
  std::atomic_thread_fence(std::memory_order_acquire);
  if (h.word.load(std::memory_order_relaxed) != w) return false;
  out.properties_block.clear();
  if (has_properties) {
    // A block that does not parse (a scribble) is shown as none, the bytes as they are.
    if (const std::size_t ps = shmq::detail::checked_properties_size(out.payload); ps != 0) {
      out.properties_block.assign(out.payload.begin(), out.payload.begin() + std::ptrdiff_t(ps));
      out.payload.erase(out.payload.begin(), out.payload.begin() + std::ptrdiff_t(ps));
      out.size -= ps;
    }
    if (out.payload.size() > shown) out.payload.resize(shown);
  }
  return true;
}

// The oldest `count` (0 = all) messages in the ring: ready, held (in flight) or delayed.
std::vector<Peeked> peek_messages(const shmq::Queue& q, std::uint64_t count,
                                  std::size_t copy_limit) {
  const shmq::detail::Segment& seg = *q.segment();
  const shmq::detail::SegmentHeader& hdr = seg.header();
  const std::uint64_t tail = hdr.tail.value.load(std::memory_order_acquire);
  const std::uint64_t n = seg.slot_count();
  // Counted from the window's start, not "pos < tail": a step past a tail scribbled near
  // 2^64 wraps pos to 0 (an endless walk).
  const std::uint64_t start = tail > n ? tail - n : 0;
  std::vector<Peeked> out;
  for (std::uint64_t walked = 0; walked < tail - start && (count == 0 || out.size() < count);) {
    const std::uint64_t pos = start + walked;
    const shmq::detail::SlotHeader& h = seg.slot(pos);
    std::uint64_t step = 1;
    for (int attempt = 0; attempt < 4; ++attempt) {
      const std::uint64_t w = h.word.load(std::memory_order_acquire);
      if (shmq::detail::word_lap(w) != shmq::detail::lap_of(pos, seg.slot_shift()) ||
          !live_state(shmq::detail::word_state(w)))
        break;
      Peeked m;
      if (read_message(seg, pos, w, copy_limit, m)) {
        step = std::max<std::uint64_t>(1, shmq::detail::word_aux(w));
        out.push_back(std::move(m));
        break;
      }
    }
    walked += step;
  }
  return out;
}

const char* state_name(SlotState s) {
  switch (s) {
    case SlotState::ready: return "ready";
    case SlotState::held: return "held";
    case SlotState::delayed: return "delayed";
    default: return "other";
  }
}

// The dead-letter queue of `name`, or nullopt if it has none. Exit 1 if neither it nor the
// queue exists.
std::optional<shmq::Queue> open_dlq(const std::string& name) {
  check_name(name);
  const std::string dlq = shmq::Queue::dead_letter_name(name);
  if (auto e = shmq::Queue::validate_name(dlq); !e.empty())
    fail(kExitUsage, "queue name '" + name + "' is too long to have a dead-letter queue");
  auto d = shmq::Queue::open(dlq);
  if (d.ok()) return std::move(d.value());
  if (d.error().code() != shmq::Errc::not_found) fail(d.error());
  (void)open_queue(name);  // exit 1 if the queue itself is missing too
  return std::nullopt;
}

void no_dead_letters(const std::string& name) {
  std::printf("queue '%s' has no dead letters (no %s)\n", name.c_str(),
              shmq::Queue::dead_letter_name(name).c_str());
}

// Is a live persister (shmqd) attached?
bool persister_attached(const shmq::QueueStats& s) {
  for (const auto& m : s.members)
    if (m.role == "persister" && m.alive && m.status == "active") return true;
  return false;
}

// --- produce -------------------------------------------------------------------------------

// Sends `batch` in full; false (and `why`) if it stopped early. `sent` counts what is known
// to be accepted (and, on a sync queue, confirmed).
// produce --id / --tab-ids: the ids of the messages of a batch, and the duplicates seen.
struct IdSource {
  bool on = false;
  std::uint64_t next = 0;          // --id: the next message's id
  bool from_input = false;          // --tab-ids: ids[] holds the batch's ids
  std::vector<std::uint64_t> ids;
  std::uint64_t duplicates = 0;
};
IdSource g_ids;

bool send_all(shmq::Producer& p, std::span<const shmq::Bytes> batch, std::uint64_t& sent,
              Status& why, const shmq::SendOptions& options) {
  if (g_ids.on) {
    // One send per message, each with its id: a duplicate (an id already sent within the
    // queue's dedup window) is accepted, not enqueued again, and counted.
    for (std::size_t i = 0; i < batch.size(); ++i) {
      shmq::SendOptions o = options;
      if (!g_ids.from_input && g_ids.next >= shmq::kSessionIdBit)
        fail(kExitUsage, "--id: message ids would pass 2^62-1 after " + std::to_string(sent) +
                             " message(s)");
      o.id = g_ids.from_input ? g_ids.ids[i] : g_ids.next++;
      const Status s = p.send(batch[i], o);
      if (s == Status::duplicate) {
        ++g_ids.duplicates;
      } else if (s != Status::ok) {
        why = s;
        return false;
      }
      ++sent;
    }
    g_ids.ids.clear();
    return true;
  }
  std::size_t done = 0;
  while (done < batch.size()) {
    Status s = Status::ok;
    // On a sync queue this waits for shmqd (also while one starts or restarts), as
    // documented.
    const std::size_t n =
        p.send_batch(batch.subspan(done), std::chrono::nanoseconds::max(), &s, options);
    done += n;
    sent += n;
    if (s != Status::ok) {
      why = s;
      return false;
    }
    if (n == 0) {  // no progress without a reason: should not happen
      why = Status::invalid;
      return false;
    }
  }
  return true;
}

[[noreturn]] void produce_stopped(Status why, std::uint64_t sent, bool sync) {
  std::string m = why == Status::interrupted ? "interrupted" : "send failed (" + status_text(why) + ")";
  m += " after " + std::to_string(sent) + " message(s) were " + (sync ? "confirmed" : "sent");
  if (sync && why == Status::interrupted)
    m += "; messages after them may have been sent without confirmation";
  fail(kExitRuntime, m);
}

// Where produce sends: a queue's producer or a topic's publisher, behind one batch call.
struct SendTarget {
  std::string what;  // "queue 'q'" or "topic 't'"
  std::size_t max_message_size = 0;
  bool sync = false;
  // Sends `batch` in full; false (and `why`) if it stopped early; `sent` as send_all's.
  std::function<bool(std::span<const shmq::Bytes>, std::uint64_t&, Status&)> send_all;
};

int produce_generated(const SendTarget& t, std::uint64_t count, std::uint32_t size) {
  if (size > t.max_message_size)
    fail(kExitRuntime, "--size " + std::to_string(size) + " is larger than " + t.what +
                           " accepts (max message size " + std::to_string(t.max_message_size) +
                           " bytes)");
  const bool sync = t.sync;
  constexpr std::size_t kBatch = 64;
  std::vector<std::string> bodies(kBatch);
  std::vector<shmq::Bytes> batch;
  batch.reserve(kBatch);
  Progress progress("sending", count);
  std::uint64_t sent = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (std::uint64_t next = 0; next < count;) {
    batch.clear();
    for (std::size_t i = 0; i < kBatch && next < count; ++i, ++next) {
      // "msg-<n> " then filler: readable with peek, unique, exactly `size` bytes.
      std::string& b = bodies[i];
      b = "msg-" + std::to_string(next) + " ";
      b.resize(size, 'x');
      batch.push_back(shmq::as_bytes(b));
    }
    Status why = Status::ok;
    if (!t.send_all(batch, sent, why)) {
      progress.finish();
      produce_stopped(why, sent, sync);
    }
    progress.update(sent);
  }
  progress.finish();
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double rate = secs > 0 ? static_cast<double>(sent) / secs : 0.0;
  std::printf("sent %llu messages of %u bytes in %.3f s: %.0f msg/s, %.1f MiB/s\n",
              static_cast<unsigned long long>(sent), size, secs, rate,
              rate * size / (1024.0 * 1024.0));
  return kExitOk;
}

// A line of standard input as a message: all of it, or with --tab-ids the part after
// "ID<TAB>" (its id noted in g_ids).
shmq::Bytes line_message(std::string_view line, std::uint64_t line_no) {
  if (!g_ids.from_input) return shmq::as_bytes(line);
  const std::size_t tab = line.find('\t');
  std::uint64_t id = 0;
  const auto [end, ec] = std::from_chars(line.data(), line.data() + (tab == std::string_view::npos ? 0 : tab), id);
  if (tab == std::string_view::npos || tab == 0 || ec != std::errc() || end != line.data() + tab ||
      id == 0 || id >= shmq::kSessionIdBit)
    fail(kExitUsage, "line " + std::to_string(line_no) +
                         ": --tab-ids expects ID<TAB>payload with ID from 1 to 2^62-1");
  g_ids.ids.push_back(id);
  return shmq::as_bytes(line.substr(tab + 1));
}

int produce_stdin(const SendTarget& t) {
  const std::size_t max = t.max_message_size;
  const bool sync = t.sync;
  std::vector<char> buf;  // what was read and not sent yet: at most an unfinished line
  std::uint64_t line_no = 0;
  std::uint64_t sent = 0;
  std::vector<shmq::Bytes> batch;
  auto too_long = [&](std::uint64_t line, std::size_t len, bool at_least) {
    fail(kExitRuntime, "line " + std::to_string(line) + " is " + (at_least ? "at least " : "") +
                           std::to_string(len) + " bytes, longer than " + t.what +
                           " accepts (max message size " + std::to_string(max) + " bytes); " +
                           std::to_string(sent) + " line(s) before it were sent");
  };
  for (bool eof = false; !eof;) {
    // Read what is there (a pipe gives whatever was written; a terminal, one line).
    constexpr std::size_t kChunk = 1 << 16;
    const std::size_t old = buf.size();
    buf.resize(old + kChunk);
    ssize_t r;
    do {
      r = ::read(STDIN_FILENO, buf.data() + old, kChunk);
    } while (r < 0 && errno == EINTR && !stop_requested());
    if (r < 0) {
      if (errno == EINTR) produce_stopped(Status::interrupted, sent, sync);
      fail(kExitRuntime, std::string("reading standard input: ") + std::strerror(errno));
    }
    buf.resize(old + static_cast<std::size_t>(r));
    eof = r == 0;
    if (stop_requested()) produce_stopped(Status::interrupted, sent, sync);

    // Every complete line (and, at the end, an unterminated last line) is a message.
    batch.clear();
    std::size_t s = 0;
    for (;;) {
      const auto nl = std::find(buf.begin() + static_cast<std::ptrdiff_t>(s), buf.end(), '\n');
      if (nl == buf.end()) break;
      const auto e = static_cast<std::size_t>(nl - buf.begin());
      ++line_no;
      if (e - s > max) {
        Status why = Status::ok;
        if (!t.send_all(batch, sent, why)) produce_stopped(why, sent, sync);
        too_long(line_no, e - s, false);
      }
      batch.push_back(line_message(std::string_view(buf.data() + s, e - s), line_no));
      s = e + 1;
    }
    const std::size_t rest = buf.size() - s;
    if (rest > max) {  // an unfinished line already too long: no need to read the rest
      Status why = Status::ok;
      if (!t.send_all(batch, sent, why)) produce_stopped(why, sent, sync);
      too_long(line_no + 1, rest, !eof);
    }
    if (eof && rest > 0) {
      ++line_no;
      batch.push_back(line_message(std::string_view(buf.data() + s, rest), line_no));
      s = buf.size();
    }
    Status why = Status::ok;
    if (!t.send_all(batch, sent, why)) produce_stopped(why, sent, sync);
    // Keep only the unfinished line.
    buf.erase(buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(s));
  }
  return kExitOk;
}

// One pass over the dead letters that are in the DLQ now. Newer ones (a replayed message that
// died again) and those `visit` keeps are held aside and returned to the DLQ at the end, so
// the pass ends. `visit(m)` returns handled (counts toward `count`; 0 = no limit), kept, or
// stop (interrupted).
enum class Visit { handled, kept, stop };
struct WalkResult {
  std::uint64_t handled = 0;
  bool interrupted = false;
};

template <typename Visitor>
WalkResult walk_dead_letters(shmq::Queue& dlq, shmq::Consumer& c, std::uint64_t count,
                             Visitor&& visit) {
  const std::uint64_t end = dlq.stats().tail;
  std::deque<shmq::Message> kept;
  WalkResult r;
  // An honest walk receives each message there at the start once, and holds (keeps) at most
  // a ring of newer ones: 2N + 64 receives. A peer that keeps putting messages back (or a
  // scribbled tail, so that nothing counts as newer) must not keep us here for ever.
  const std::uint64_t budget = 2 * std::uint64_t(dlq.options().slot_count) + 64;
  for (std::uint64_t received = 0; count == 0 || r.handled < count; ++received) {
    if (stop_requested() || received == budget) {
      r.interrupted = true;
      break;
    }
    shmq::Message m;
    const Status s = c.try_receive(m);
    if (s == Status::empty) break;
    if (s == Status::interrupted) {
      r.interrupted = true;
      break;
    }
    if (s != Status::ok)
      fail(kExitRuntime, "receive from the dead-letter queue failed: " + status_text(s));
    if (m.position() >= end) {
      kept.push_back(std::move(m));
      continue;
    }
    const Visit v = visit(m);
    if (v == Visit::handled) ++r.handled;
    if (v != Visit::handled && m.held()) kept.push_back(std::move(m));
    if (v == Visit::stop) {
      r.interrupted = true;
      break;
    }
  }
  kept.clear();
  c.release_all();
  return r;
}

// --id / --tab-ids: checked (usage errors) and set up in g_ids.
void setup_ids(const ProduceArgs& a) {
  if (a.id && a.tab_ids) fail(kExitUsage, "--id and --tab-ids exclude each other");
  if (a.id && (*a.id == 0 || *a.id >= shmq::kSessionIdBit))
    fail(kExitUsage, "--id must be from 1 to 2^62-1 (0 asks for a generated id: leave --id out)");
  if (a.tab_ids && a.count) fail(kExitUsage, "--tab-ids reads ids from standard input: not with --count");
  g_ids.on = a.id.has_value() || a.tab_ids;
  g_ids.next = a.id.value_or(0);
  g_ids.from_input = a.tab_ids;
}

// produce on a topic: one publish per message (every group gets it), ids as for a queue.
int produce_topic(const ProduceArgs& a, const shmq::WaitOptions& wait) {
  // A topic message is its payload: no priority, no delay, no properties (usage errors
  // before anything is opened or sent).
  std::string unsupported;
  const auto add = [&](bool given, const char* flag) {
    if (given) unsupported += (unsupported.empty() ? "" : ", ") + std::string(flag);
  };
  add(a.priority != 0, "--priority");
  add(a.delay_ms != 0, "--delay-ms");
  add(!a.headers.empty(), "--header");
  add(!a.content_type.empty(), "--content-type");
  add(!a.correlation_id.empty(), "--correlation-id");
  add(!a.reply_to.empty(), "--reply-to");
  if (!unsupported.empty())
    fail(kExitUsage, "'" + a.queue + "' is a topic: topics do not support priorities, delays or "
                     "message properties (" + unsupported + ")");
  setup_ids(a);
  shmq::Topic t = open_topic(a.queue);
  auto p = t.publisher(wait);
  if (!p.ok()) fail_topic(p.error());
  install_stop_handlers();
  InterruptScope scope(&p.value());
  const shmq::TopicStats st = t.stats();
  SendTarget target{
      .what = "topic '" + a.queue + "'",
      .max_message_size = st.max_message_size,
      .sync = st.durability == shmq::Durability::sync,
      .send_all = [&](std::span<const shmq::Bytes> batch, std::uint64_t& sent, Status& why) {
        for (std::size_t i = 0; i < batch.size(); ++i) {
          std::uint64_t id = 0;  // generated
          if (g_ids.on && g_ids.from_input) {
            id = g_ids.ids[i];
          } else if (g_ids.on) {
            if (g_ids.next >= shmq::kSessionIdBit)
              fail(kExitUsage, "--id: message ids would pass 2^62-1 after " +
                                   std::to_string(sent) + " message(s)");
            id = g_ids.next++;
          }
          // Blocks while a reliable group holds the ring (as a full queue does).
          const Status s = p->send(batch[i], id);
          if (s != Status::ok) {
            why = s;
            return false;
          }
          ++sent;
        }
        g_ids.ids.clear();
        return true;
      }};
  return a.count ? produce_generated(target, *a.count, a.size.value_or(64)) : produce_stdin(target);
}

// consume on a topic, as a subscriber of `group`: as for a queue, each message is written
// and flushed before it is acked. Lossy groups: skipped messages are reported on stderr.
int consume_topic(const ConsumeArgs& a, const std::string& group,
                  const shmq::WaitOptions& wait) {
  if (a.show_properties)
    fail(kExitUsage, "'" + a.queue + "' is a topic: topic messages have no properties "
                     "(drop --show-properties)");
  shmq::Topic t = open_topic(a.queue);
  auto sub = t.subscriber(group, wait);
  if (!sub.ok()) fail_topic(sub.error());
  install_stop_handlers();
  InterruptScope scope(&sub.value());
  // As for a queue: a closed stdout is an error we see (EPIPE), not a silent death.
  ::signal(SIGPIPE, SIG_IGN);
  static char out_buf[1 << 16];
  std::setvbuf(stdout, out_buf, _IOFBF, sizeof out_buf);

  constexpr std::size_t kBatch = 64;
  std::array<shmq::Delivery, kBatch> batch;
  const auto timeout = std::chrono::nanoseconds(std::chrono::milliseconds(a.timeout_ms));
  std::uint64_t got = 0;
  bool warned = false;
  const auto stopped = [&](const std::string& why) {
    fail(kExitRuntime, why + "; stopped after " + std::to_string(got) + " message(s)");
  };
  while ((a.count == 0 || got < a.count) && !stop_requested()) {
    const std::size_t want =
        a.count == 0 ? kBatch : static_cast<std::size_t>(std::min<std::uint64_t>(kBatch, a.count - got));
    // Wait for one, then take what else is ready (up to the batch) without waiting.
    const Status first = a.follow ? sub->receive(batch[0]) : sub->receive_for(batch[0], timeout);
    if (first == Status::timeout || first == Status::empty || first == Status::interrupted) break;
    if (first == Status::closed)
      stopped("group '" + group + "' of topic '" + a.queue +
              "' is closed (the group was deleted or detached, or the topic removed)");
    if (first == Status::evicted)
      stopped("this subscriber was evicted (judged dead); what it held is delivered again");
    if (first != Status::ok) stopped("receive failed: " + status_text(first));
    std::size_t n = 1;
    while (n < want && sub->try_receive(batch[n]) == Status::ok) ++n;

    // Write and flush the batch, then ack: see cmd_consume.
    int err = 0;
    for (std::size_t i = 0; i < n && err == 0; ++i) {
      if (const std::uint64_t missed = batch[i].missed_before(); missed != 0) {
        // On stderr, after what came before it on stdout.
        errno = 0;
        if (std::fflush(stdout) != 0) {
          err = errno != 0 ? errno : EIO;
          break;
        }
        std::fprintf(stderr,
                     "shmqctl: group '%s' missed %llu message(s) before position %llu (lossy: it "
                     "fell a ring behind)\n",
                     group.c_str(), static_cast<unsigned long long>(missed),
                     static_cast<unsigned long long>(batch[i].position()));
      }
      const auto d = batch[i].data();
      errno = 0;
      if ((!d.empty() && std::fwrite(d.data(), 1, d.size(), stdout) != d.size()) ||
          std::fputc('\n', stdout) == EOF)
        err = errno != 0 ? errno : EIO;
    }
    if (err == 0) {
      errno = 0;
      if (std::fflush(stdout) != 0 || std::ferror(stdout)) err = errno != 0 ? errno : EIO;
    }
    if (err != 0) {
      const std::size_t returned = sub->release_all();
      fail(kExitRuntime, std::string("writing to standard output: ") + std::strerror(err) +
                             "; stopped after " + std::to_string(got) + " message(s), " +
                             std::to_string(returned) + " unacked returned to the group");
    }
    for (std::size_t i = 0; i < n; ++i) {
      // --reject: to the group's dead-letter queue (reason rejected) instead of an ack.
      const Status s = a.reject ? sub->reject(batch[i]) : sub->ack(batch[i]);
      if (s == Status::full)
        fail(kExitRuntime, "reject failed: the dead-letter queue of group '" + group +
                               "' is full; the message stays in the group");
      if (s == Status::lease_lost && !warned) {
        warn("message at position " + std::to_string(batch[i].position()) +
             " was taken back (lease expired) before it was acked: it will be delivered again");
        warned = true;
      } else if (s != Status::ok && s != Status::lease_lost) {
        fail(kExitRuntime, std::string(a.reject ? "reject" : "ack") + " failed: " + status_text(s));
      }
    }
    got += n;
  }
  return kExitOk;
}

}  // namespace

// The WaitOptions of --wait / --spin-us / --sleep-us (issue 16): queues and topics.
template <typename Args>
shmq::WaitOptions wait_options(const Args& a) {
  shmq::WaitOptions w;
  if (!a.wait && !a.spin_us && !a.sleep_us) return w;
  if (!a.wait) fail(kExitUsage, "--spin-us and --sleep-us need --wait STRATEGY");
  if (*a.wait == "busy-spin") w.strategy = shmq::WaitStrategy::busy_spin;
  else if (*a.wait == "spin-yield") w.strategy = shmq::WaitStrategy::spin_yield;
  else if (*a.wait == "spin-sleep") w.strategy = shmq::WaitStrategy::spin_sleep;
  if (a.sleep_us && w.strategy != shmq::WaitStrategy::spin_sleep)
    fail(kExitUsage, "--sleep-us is for --wait spin-sleep");
  if (a.spin_us) {
    if (*a.spin_us > 60'000'000) fail(kExitUsage, "--spin-us: at most 60000000 (a minute)");
    w.spin = std::chrono::microseconds(*a.spin_us);
  }
  if (a.sleep_us) w.sleep = std::chrono::microseconds(*a.sleep_us);
  return w;
}

int cmd_produce(const ProduceArgs& a) {
  if (a.size && !a.count)
    fail(kExitUsage, "--size needs --count N (generated messages); without --count, produce "
                     "sends the lines of standard input");
  const bool topic = is_topic(a.queue);
  const shmq::WaitOptions wait = wait_options(a);
  if (topic) return produce_topic(a, wait);
  shmq::Queue q = open_queue(a.queue);
  auto p = q.producer({.wait = wait});
  if (!p.ok()) fail(p.error());
  install_stop_handlers();
  InterruptScope scope(&p.value());
  const shmq::QueueOptions o = q.options();
  if (a.priority > o.max_priority)
    fail(kExitUsage, "--priority " + std::to_string(a.priority) + " is above queue '" + a.queue +
                         "'s max priority " + std::to_string(o.max_priority) +
                         (o.max_priority == 0 ? " (it has no priorities: create it with "
                                                "--max-priority N)"
                                              : ""));
  if (o.durability == shmq::Durability::sync && !persister_attached(q.stats()))
    warn("no shmqd persists sync queue '" + a.queue +
         "' now: every send waits for one to confirm it (shmqd --data-dir " + o.data_dir + " " +
         a.queue + ")");
  shmq::SendOptions options;
  options.priority = a.priority;
  // Properties: checked here, before anything is sent (usage errors, exit 2).
  shmq::Properties props;
  props.content_type = a.content_type;
  props.correlation_id = a.correlation_id;
  props.reply_to = a.reply_to;
  for (const std::string& h : a.headers) {
    const std::size_t eq = h.find('=');
    if (eq == std::string::npos || eq == 0)
      fail(kExitUsage, "--header '" + h + "' is not K=V with a non-empty K");
    props.headers.emplace_back(h.substr(0, eq), h.substr(eq + 1));
  }
  const bool with_properties = !a.headers.empty() || !a.content_type.empty() ||
                               !a.correlation_id.empty() || !a.reply_to.empty();
  if (with_properties) {
    for (const auto& [what, s] : {std::pair<const char*, const std::string*>{"--content-type", &a.content_type},
                                  {"--correlation-id", &a.correlation_id},
                                  {"--reply-to", &a.reply_to}})
      if (s->size() > shmq::kMaxPropertyString)
        fail(kExitUsage, std::string(what) + " is " + std::to_string(s->size()) +
                             " bytes, over the 255-byte limit of a property");
    for (const auto& [k, v] : props.headers)
      if (k.size() > shmq::kMaxPropertyString || v.size() > shmq::kMaxPropertyString)
        fail(kExitUsage, "--header '" + k.substr(0, 40) + (k.size() > 40 ? "..." : "") +
                             "': key and value are at most 255 bytes each");
    if (!shmq::encoded_properties_size(props))
      fail(kExitUsage, "the properties are over the 4096-byte limit of a message's properties");
    options.properties = &props;
  }
  options.delay = std::chrono::milliseconds(
      static_cast<std::int64_t>(std::min<std::uint64_t>(a.delay_ms, INT64_MAX / 1'000'000)));
  setup_ids(a);
  SendTarget target{.what = "queue '" + a.queue + "'",
                    .max_message_size = q.max_message_size(),
                    .sync = o.durability == shmq::Durability::sync,
                    .send_all = [&](std::span<const shmq::Bytes> batch, std::uint64_t& sent,
                                    Status& why) {
                      return send_all(p.value(), batch, sent, why, options);
                    }};
  const int rc = a.count ? produce_generated(target, *a.count, a.size.value_or(64))
                         : produce_stdin(target);
  if (g_ids.duplicates != 0)
    std::fprintf(stderr,
                 "shmqctl: %llu duplicate(s) not enqueued again: their ids were already sent "
                 "within queue '%s''s dedup window\n",
                 static_cast<unsigned long long>(g_ids.duplicates), a.queue.c_str());
  return rc;
}

// --- consume -------------------------------------------------------------------------------

int cmd_consume(const ConsumeArgs& a) {
  // A topic needs --group, a queue takes none.
  if (a.group) check_group_name(*a.group);
  const bool topic = is_topic(a.queue);
  const shmq::WaitOptions wait = wait_options(a);
  if (topic) {
    if (!a.group)
      fail(kExitUsage, "'" + a.queue + "' is a topic: consume from it with --group GROUP (its "
                       "groups: shmqctl group list " + a.queue + ")");
    return consume_topic(a, *a.group, wait);
  }
  if (a.group) {
    if (auto q = shmq::Queue::open(a.queue); q.ok())
      fail(kExitUsage, "--group is for topics; '" + a.queue + "' is a queue");
    (void)open_topic(a.queue);  // exit 1: "topic '...' not found", or why it cannot be opened
  }
  shmq::Queue q = open_queue(a.queue);
  auto c = q.consumer({.wait = wait});
  if (!c.ok()) fail(c.error());
  install_stop_handlers();
  InterruptScope scope(&c.value());
  // A closed stdout must be an error we see (EPIPE), not a silent death that would leave
  // the messages we hold to the lease timeout.
  ::signal(SIGPIPE, SIG_IGN);
  static char out_buf[1 << 16];
  std::setvbuf(stdout, out_buf, _IOFBF, sizeof out_buf);

  constexpr std::size_t kBatch = 64;
  std::array<shmq::Message, kBatch> batch;
  const auto timeout = a.follow ? std::chrono::nanoseconds::max()
                                : std::chrono::nanoseconds(std::chrono::milliseconds(a.timeout_ms));
  std::uint64_t got = 0;
  bool warned = false;
  while ((a.count == 0 || got < a.count) && !stop_requested()) {
    const std::size_t want =
        a.count == 0 ? kBatch : static_cast<std::size_t>(std::min<std::uint64_t>(kBatch, a.count - got));
    const std::size_t n = c->receive_batch(std::span(batch.data(), want), timeout);
    if (n == 0) {
      // idle for the timeout, or interrupted; or evicted (stopped past the heartbeat timeout)
      if (c->evicted())
        fail(kExitRuntime, "this consumer was evicted (silent for the queue's heartbeat timeout, "
                           "e.g. stopped); what it held is delivered again; stopped after " +
                               std::to_string(got) + " message(s)");
      break;
    }
    // Print the batch, then flush it, and ack only once the flush succeeded: a message
    // whose bytes did not all reach stdout is never acked. On the first failed write
    // (EBADF for a closed stdout, EPIPE, ENOSPC behind >/dev/full) stop, and give every
    // message of the batch back: the ones already out may come again (at least once), the
    // others were never seen. errno is taken at the failing call, before anything else
    // can overwrite it.
    int err = 0;
    for (std::size_t i = 0; i < n && err == 0; ++i) {
      const auto d = batch[i].data();
      errno = 0;
      if (a.show_properties &&
          std::fprintf(stdout, "# %s\n", properties_words(batch[i].properties()).c_str()) < 0) {
        err = errno != 0 ? errno : EIO;
        break;
      }
      if ((!d.empty() && std::fwrite(d.data(), 1, d.size(), stdout) != d.size()) ||
          std::fputc('\n', stdout) == EOF)
        err = errno != 0 ? errno : EIO;
    }
    if (err == 0) {
      errno = 0;
      if (std::fflush(stdout) != 0 || std::ferror(stdout)) err = errno != 0 ? errno : EIO;
    }
    if (err != 0) {
      const std::size_t returned = c->release_all();
      fail(kExitRuntime, std::string("writing to standard output: ") + std::strerror(err) +
                             "; stopped after " + std::to_string(got) + " message(s), " +
                             std::to_string(returned) + " unacked returned to the queue");
    }
    for (std::size_t i = 0; i < n; ++i) {
      const Status s = a.reject ? c->nack(batch[i], false) : c->ack(batch[i]);
      if (s == Status::lease_lost && !warned) {
        warn("message at position " + std::to_string(batch[i].position()) +
             " was taken back (lease expired) before it was acked: it will be delivered again");
        warned = true;
      } else if (s != Status::ok && s != Status::lease_lost) {
        fail(kExitRuntime, std::string(a.reject ? "reject" : "ack") + " failed: " + status_text(s));
      }
    }
    got += n;
  }
  return kExitOk;
}

// --- peek ----------------------------------------------------------------------------------

int cmd_peek(const PeekArgs& a) {
  shmq::Queue q = open_queue(a.queue);
  // A queue with priorities: its levels highest first (the order consumers take them),
  // each oldest first, then the queue's own ring.
  std::vector<Peeked> msgs;
  const std::uint32_t levels = q.segment()->priority_level() == 0 ? q.options().max_priority : 0;
  for (std::uint32_t p = levels; p >= 1 && (a.count == 0 || msgs.size() < a.count); --p) {
    auto l = q.open_level(p);
    if (!l.ok()) fail(l.error());
    for (auto& m : peek_messages(l.value(), a.count == 0 ? 0 : a.count - msgs.size(), a.max_bytes))
      msgs.push_back(std::move(m));
  }
  if (a.count == 0 || msgs.size() < a.count)
    for (auto& m : peek_messages(q, a.count == 0 ? 0 : a.count - msgs.size(), a.max_bytes))
      msgs.push_back(std::move(m));
  if (a.json) {
    // {"schema": 1, "queue", "messages": [{"position", "id", "state", "holder", "delivery_count",
    // "size", "age_ms", "due_in_ms", "payload"}]}: holder and due_in_ms are null unless the
    // message is held (the member row) or delayed (due in this many ms, 0: due now).
    nlohmann::ordered_json j;
    j["schema"] = 1;
    j["queue"] = q.name();
    j["messages"] = nlohmann::ordered_json::array();
    for (const auto& m : msgs) {
      nlohmann::ordered_json e;
      e["position"] = m.position;
      e["id"] = m.id;
      e["state"] = state_name(m.state);
      e["holder"] = m.state == SlotState::held ? nlohmann::ordered_json(m.owner)
                                               : nlohmann::ordered_json(nullptr);
      e["delivery_count"] = m.delivery_count;
      e["priority"] = m.priority;
      e["size"] = m.size;
      e["age_ms"] = m.age_ms;
      e["due_in_ms"] =
          m.due_in_ms ? nlohmann::ordered_json(*m.due_in_ms) : nlohmann::ordered_json(nullptr);
      e["payload"] = render_payload(m.payload, a.max_bytes, m.size);
      e["properties"] = properties_json(m.properties());
      j["messages"].push_back(std::move(e));
    }
    std::printf("%s\n", dump_json(j).c_str());
    return kExitOk;
  }
  // DUE: a delayed message is due in this many ms ("-" for the others). PRIO (queues with
  // priorities only): its priority. Before PAYLOAD, which stays the last column.
  const char* prio_header = levels != 0 ? "PRIO " : "";
  std::printf("%-12s %-20s %-8s %s%-10s %-8s %-8s %-8s %s\n", "POSITION", "ID", "STATE",
              prio_header, "DELIVERIES", "SIZE", "AGE", "DUE-MS", "PAYLOAD");
  for (const auto& m : msgs) {
    std::string state = state_name(m.state);
    if (m.state == SlotState::held) state += "/" + std::to_string(m.owner);
    const std::string due = m.due_in_ms ? std::to_string(*m.due_in_ms) : "-";
    char prio[16] = "";
    if (levels != 0) std::snprintf(prio, sizeof prio, "%-4u ", m.priority);
    std::printf("%-12llu %-20llu %-8s %s%-10u %-8llu %-8s %-8s %s\n",
                static_cast<unsigned long long>(m.position), static_cast<unsigned long long>(m.id),
                state.c_str(), prio, m.delivery_count, static_cast<unsigned long long>(m.size),
                human_ms(m.age_ms).c_str(), due.c_str(),
                render_payload(m.payload, a.max_bytes, m.size).c_str());
    // A message with properties: one more line, indented, in consume --show-properties' words.
    if (m.properties().present())
      std::printf("  # %s\n", properties_words(m.properties()).c_str());
  }
  if (msgs.empty()) std::printf("(no messages)\n");
  return kExitOk;
}

// --- dlq -----------------------------------------------------------------------------------

int cmd_dlq_list(const DlqArgs& a) {
  auto d = open_dlq(a.queue);
  if (!d) {
    no_dead_letters(a.queue);
    return kExitOk;
  }
  // The envelope, the original's properties block if any (version 2), the payload shown.
  const auto msgs = peek_messages(
      *d, a.count, shmq::kDeadLetterEnvelopeSize + shmq::kMaxPropertiesSize + a.max_bytes);
  std::printf("%-12s %-15s %-10s %-12s %-20s %-8s %-8s %s\n", "DLQ-POS", "REASON", "DELIVERIES",
              "ORIG-POS", "ORIG-ID", "SIZE", "AGE", "PAYLOAD");
  for (const auto& m : msgs) {
    const auto dl = shmq::parse_dead_letter(m.payload);
    if (!dl) {
      std::printf("%-12llu %-15s %-10s %-12s %-20s %-8llu %-8s %s\n",
                  static_cast<unsigned long long>(m.position), "(unreadable)", "-", "-", "-",
                  static_cast<unsigned long long>(m.size), human_ms(m.age_ms).c_str(),
                  render_payload(m.payload, a.max_bytes, m.size).c_str());
      continue;
    }
    const std::uint64_t envelope = shmq::kDeadLetterEnvelopeSize + dl->properties_block.size();
    const std::uint64_t size = m.size >= envelope ? m.size - envelope : 0;
    const std::string shown = render_payload(dl->payload, a.max_bytes, size);
    std::printf("%-12llu %-15s %-10u %-12llu %-20llu %-8llu %-8s %s\n",
                static_cast<unsigned long long>(m.position),
                std::string(shmq::to_string(dl->reason)).c_str(), dl->delivery_count,
                static_cast<unsigned long long>(dl->original_position),
                static_cast<unsigned long long>(dl->original_id),
                static_cast<unsigned long long>(size), human_ms(m.age_ms).c_str(), shown.c_str());
    if (dl->properties().present())
      std::printf("  # %s\n", properties_words(dl->properties()).c_str());
  }
  if (msgs.empty()) std::printf("(no dead letters)\n");
  return kExitOk;
}

int cmd_dlq_replay(const DlqArgs& a) {
  auto d = open_dlq(a.queue);
  if (!d) {
    no_dead_letters(a.queue);
    return kExitOk;
  }
  shmq::Queue q = open_queue(a.queue);
  auto p = q.producer();
  if (!p.ok()) fail(p.error());
  // A replayed dead letter keeps its id, which is in the queue's dedup window: it must go
  // back all the same.
  shmq::detail::ProducerAccess::bypass_dedup(p.value());
  auto c = d->consumer();
  if (!c.ok()) fail(c.error());
  install_stop_handlers();
  InterruptScope ps(&p.value());
  InterruptScope cs(&c.value());

  // Replay what is there now, not what comes back while we replay (a message that dies
  // again would otherwise go round forever).
  std::uint64_t total = depth(d->stats());
  if (a.count != 0) total = std::min(total, a.count);
  Progress progress("replaying", total);
  std::uint64_t unreadable = 0, too_large = 0, done = 0;
  const WalkResult w = walk_dead_letters(*d, *c, a.count, [&](shmq::Message& m) {
    const auto dl = shmq::parse_dead_letter(m.data());
    if (!dl) {
      ++unreadable;
      return Visit::kept;
    }
    // Back at its priority (on a queue that has it; else at the top level it has).
    const std::uint32_t level = std::min(dl->priority, q.options().max_priority);
    // With its properties as they were sent (send time included).
    const shmq::Properties props = dl->properties().to_properties();
    const shmq::SendOptions options{.id = dl->original_id,
                                    .priority = level,
                                    .properties = dl->properties().present() ? &props : nullptr};
    const Status sent = shmq::detail::ProducerAccess::send_replayed(
        p.value(), dl->payload, options, dl->properties().timestamp_ns());
    if (sent == Status::too_large) {
      ++too_large;
      return Visit::kept;
    }
    if (sent == Status::interrupted) return Visit::stop;
    if (sent != Status::ok) fail(kExitRuntime, "send to '" + a.queue + "' failed: " + status_text(sent));
    // Sent first, acked after: a crash in between leaves a duplicate, never a loss.
    if (c->ack(m) == Status::lease_lost)
      warn("dead letter at position " + std::to_string(m.position()) +
           " was taken back before its ack: it may be replayed twice");
    progress.update(++done);
    return Visit::handled;
  });
  const std::uint64_t replayed = w.handled;
  const bool interrupted = w.interrupted;
  progress.finish();
  std::printf("replayed %llu dead letter(s) to '%s'\n", static_cast<unsigned long long>(replayed),
              a.queue.c_str());
  if (interrupted) fail(kExitRuntime, "interrupted after " + std::to_string(replayed) + " replayed");
  if (unreadable + too_large > 0)
    fail(kExitRuntime, std::to_string(unreadable + too_large) + " dead letter(s) left in " +
                           d->name() + ": " + std::to_string(unreadable) + " unreadable, " +
                           std::to_string(too_large) + " larger than '" + a.queue + "' accepts");
  return kExitOk;
}

int cmd_dlq_purge(const DlqArgs& a) {
  auto d = open_dlq(a.queue);
  if (!d) {
    no_dead_letters(a.queue);
    return kExitOk;
  }
  auto c = d->consumer();
  if (!c.ok()) fail(c.error());
  install_stop_handlers();
  InterruptScope cs(&c.value());
  const WalkResult w = walk_dead_letters(*d, *c, a.count, [&](shmq::Message& m) {
    return c->ack(m) == Status::ok ? Visit::handled : Visit::kept;
  });
  const std::uint64_t purged = w.handled;
  const bool interrupted = w.interrupted;
  std::printf("purged %llu dead letter(s) from %s\n", static_cast<unsigned long long>(purged),
              d->name().c_str());
  if (interrupted) fail(kExitRuntime, "interrupted after " + std::to_string(purged) + " purged");
  return kExitOk;
}

}  // namespace shmqctl
