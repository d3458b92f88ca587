/* The C API (include/shmq/shmq.h) from a C11 program: queues, properties, redelivery,
 * dead letters, priorities, deduplication, batches, errors and NULL arguments, topics, and a
 * consumer process killed with SIGKILL while it holds a message.
 *
 * Each test prints its name; a failed CHECK prints the file, line, expression and the last
 * error, and the program exits 1. Queue names carry the pid, so runs do not collide. */
#define _POSIX_C_SOURCE 200809L

#include <shmq/shmq.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define CHECK(cond)                                                                              \
  do {                                                                                           \
    if (!(cond)) {                                                                               \
      fprintf(stderr, "%s:%d: CHECK failed: %s (last error: '%s')\n", __FILE__, __LINE__, #cond, \
              shmq_last_error());                                                                \
      exit(1);                                                                                   \
    }                                                                                            \
  } while (0)

#define CHECK_STATUS(call, expected)                                                       \
  do {                                                                                     \
    shmq_status_t s_ = (call);                                                             \
    if (s_ != (expected)) {                                                                \
      fprintf(stderr, "%s:%d: %s returned %s, expected %s (last error: '%s')\n", __FILE__, \
              __LINE__, #call, shmq_status_string(s_), shmq_status_string(expected),       \
              shmq_last_error());                                                          \
      exit(1);                                                                             \
    }                                                                                      \
  } while (0)

#define CHECK_OK(call) CHECK_STATUS(call, SHMQ_OK)

static char names[16][64];
static int name_count;

/* A queue or topic name of this run, remembered for the cleanup. */
static const char* unique(const char* what) {
  char* n = names[name_count++];
  snprintf(n, sizeof names[0], "capi.%ld.%s", (long)getpid(), what);
  return n;
}

static void cleanup(void) {
  for (int i = 0; i < name_count; ++i) {
    if (shmq_topic_is_topic(names[i]))
      (void)shmq_topic_remove(names[i]);
    else
      (void)shmq_queue_remove(names[i]);
  }
}

static int data_is(const shmq_message_t* m, const char* text) {
  const size_t n = strlen(text);
  return shmq_message_size(m) == n && memcmp(shmq_message_data(m), text, n) == 0;
}

static int string_is(shmq_string_t s, const char* text) {
  const size_t n = strlen(text);
  return s.size == n && (n == 0 || memcmp(s.data, text, n) == 0);
}

static void status_strings_and_null_arguments(void) {
  puts("status_strings_and_null_arguments");
  CHECK(strcmp(shmq_status_string(SHMQ_OK), "ok") == 0);
  CHECK(strcmp(shmq_status_string(SHMQ_LEASE_LOST), "lease_lost") == 0);
  CHECK(strcmp(shmq_status_string(SHMQ_NOT_FOUND), "not_found") == 0);
  CHECK(strcmp(shmq_status_string((shmq_status_t)77), "unknown") == 0);

  shmq_queue_t* q = (shmq_queue_t*)1;
  CHECK_STATUS(shmq_queue_open(NULL, &q), SHMQ_INVALID);
  CHECK(q == NULL);
  CHECK(strstr(shmq_last_error(), "name is NULL") != NULL);
  CHECK_STATUS(shmq_queue_open("x", NULL), SHMQ_INVALID);
  CHECK_STATUS(shmq_queue_create(NULL, NULL, &q), SHMQ_INVALID);
  CHECK_STATUS(shmq_queue_remove(NULL), SHMQ_INVALID);
  CHECK_STATUS(shmq_queue_producer(NULL, NULL), SHMQ_INVALID);
  CHECK_STATUS(shmq_producer_send(NULL, "x", 1, NULL), SHMQ_INVALID);
  CHECK_STATUS(shmq_producer_send_batch(NULL, NULL, 0, 0, NULL, NULL), SHMQ_INVALID);
  CHECK_STATUS(shmq_consumer_receive(NULL, NULL), SHMQ_INVALID);
  CHECK_STATUS(shmq_consumer_ack(NULL, NULL), SHMQ_INVALID);
  CHECK_STATUS(shmq_message_get_properties(NULL, NULL), SHMQ_INVALID);
  CHECK_STATUS(shmq_queue_get_stats(NULL, NULL), SHMQ_INVALID);
  CHECK_STATUS(shmq_queue_repair(NULL, NULL), SHMQ_INVALID);
  CHECK_STATUS(shmq_queue_idempotent_producer(NULL, 0, 0, NULL), SHMQ_INVALID);
  CHECK_STATUS(shmq_topic_create_group(NULL, "g", NULL), SHMQ_INVALID);
  CHECK_STATUS(shmq_subscriber_ack(NULL, NULL), SHMQ_INVALID);
  CHECK_STATUS(shmq_message_new(NULL), SHMQ_INVALID);
  /* Accessors and close functions take NULL quietly. */
  CHECK(shmq_message_data(NULL) == NULL);
  CHECK(shmq_message_size(NULL) == 0);
  CHECK(!shmq_message_held(NULL));
  CHECK(shmq_queue_name(NULL) == NULL);
  CHECK(!shmq_topic_is_topic(NULL));
  shmq_queue_close(NULL);
  shmq_producer_close(NULL);
  shmq_consumer_close(NULL);
  shmq_message_free(NULL);
  shmq_topic_close(NULL);
  shmq_publisher_close(NULL);
  shmq_subscriber_close(NULL);
  shmq_delivery_free(NULL);
  shmq_consumer_interrupt(NULL);
  /* A successful call clears the last error. */
  shmq_message_t* m = NULL;
  CHECK_OK(shmq_message_new(&m));
  CHECK(strcmp(shmq_last_error(), "") == 0);
  shmq_message_free(m);
}

static void setup_errors(void) {
  puts("setup_errors");
  const char* name = unique("setup");
  shmq_queue_t* q = NULL;
  CHECK_STATUS(shmq_queue_open(name, &q), SHMQ_NOT_FOUND);
  CHECK(strstr(shmq_last_error(), name) != NULL);

  shmq_queue_options_t o;
  shmq_queue_options_init(&o);
  CHECK(o.struct_size == sizeof o && o.slot_count == 1024 && o.slot_size == 256);
  CHECK(o.lease_ms == 30000 && o.max_deliveries == 20 && o.dead_letter && o.mode == 0600);
  o.slot_count = 3; /* not a power of two */
  CHECK_STATUS(shmq_queue_create(name, &o, &q), SHMQ_INVALID);
  CHECK(q == NULL);
  shmq_queue_options_init(&o);
  o.struct_size = 0;
  CHECK_STATUS(shmq_queue_create(name, &o, &q), SHMQ_INVALID);
  CHECK(strstr(shmq_last_error(), "struct_size") != NULL);
  shmq_queue_options_init(&o);
  o.durability = (shmq_durability_t)9;
  CHECK_STATUS(shmq_queue_create(name, &o, &q), SHMQ_INVALID);
  CHECK_STATUS(shmq_queue_create("bad/name", NULL, &q), SHMQ_INVALID);

  shmq_queue_options_init(&o);
  o.slot_count = 16;
  CHECK_OK(shmq_queue_create(name, &o, &q));
  CHECK(strcmp(shmq_queue_name(q), name) == 0);
  shmq_queue_t* again = NULL;
  CHECK_STATUS(shmq_queue_create(name, &o, &again), SHMQ_ALREADY_EXISTS);
  o.slot_count = 32;
  CHECK_STATUS(shmq_queue_open_or_create(name, &o, &again), SHMQ_MISMATCH);
  CHECK(strstr(shmq_last_error(), "slot_count") != NULL);
  o.slot_count = 16;
  CHECK_OK(shmq_queue_open_or_create(name, &o, &again));
  shmq_queue_close(again);

  /* Options read back, policy changed for everyone. */
  shmq_queue_options_t got;
  shmq_queue_options_init(&got);
  CHECK_OK(shmq_queue_get_options(q, &got));
  CHECK(got.slot_count == 16 && got.lease_ms == 30000);
  shmq_policy_update_t u;
  shmq_policy_update_init(&u);
  u.has_lease = true;
  u.lease_ms = 1234;
  CHECK_OK(shmq_queue_set_policy(q, &u));
  CHECK_OK(shmq_queue_get_options(q, &got));
  CHECK(got.lease_ms == 1234 && got.max_deliveries == 20);

  /* A queue removed under its handles: blocking calls say closed. */
  shmq_consumer_t* c = NULL;
  shmq_message_t* m = NULL;
  CHECK_OK(shmq_queue_consumer(q, NULL, &c));
  CHECK_OK(shmq_message_new(&m));
  CHECK_OK(shmq_queue_remove(name));
  CHECK_STATUS(shmq_consumer_receive_for(c, m, 5000), SHMQ_CLOSED);
  CHECK_STATUS(shmq_queue_open(name, &again), SHMQ_NOT_FOUND);
  shmq_message_free(m);
  shmq_consumer_close(c);
  shmq_queue_close(q);
}

/* A caller built against an older, shorter struct: the library reads (and writes) only its
 * struct_size bytes; the fields after them keep their defaults (and are left alone). */
static void versioned_structs(void) {
  puts("versioned_structs");
  const char* name = unique("versioned");
  shmq_queue_options_t o;
  memset(&o, 0xab, sizeof o); /* garbage after the prefix the "old" caller knows */
  o.struct_size = offsetof(shmq_queue_options_t, max_message_size);
  o.slot_count = 16;
  o.slot_size = 128;
  shmq_queue_t* q = NULL;
  CHECK_OK(shmq_queue_create(name, &o, &q));
  shmq_queue_options_t got;
  shmq_queue_options_init(&got);
  CHECK_OK(shmq_queue_get_options(q, &got));
  CHECK(got.slot_count == 16 && got.slot_size == 128);
  CHECK(got.lease_ms == 30000 && got.max_deliveries == 20 && got.max_members == 64);

  shmq_queue_stats_t st;
  memset(&st, 0xcd, sizeof st);
  st.struct_size = offsetof(shmq_queue_stats_t, max_members);
  CHECK_OK(shmq_queue_get_stats(q, &st));
  CHECK(st.slot_count == 16 && st.slot_size == 128 && st.max_message_size == 64);
  CHECK(st.max_members == 0xcdcdcdcdu); /* past struct_size: not written */

  o.struct_size = sizeof o + 8; /* a newer caller than this library */
  CHECK_STATUS(shmq_queue_get_options(q, (shmq_queue_options_t*)&o), SHMQ_INVALID);
  shmq_queue_close(q);
}

static void round_trip_with_properties(void) {
  puts("round_trip_with_properties");
  const char* name = unique("props");
  shmq_queue_t* q = NULL;
  CHECK_OK(shmq_queue_create(name, NULL, &q));
  shmq_producer_t* p = NULL;
  shmq_consumer_t* c = NULL;
  CHECK_OK(shmq_queue_producer(q, &p));
  CHECK_OK(shmq_queue_consumer(q, NULL, &c));

  const shmq_header_t headers[2] = {{"tenant", "acme"}, {"region", "eu"}};
  shmq_properties_t props;
  shmq_properties_init(&props);
  props.content_type = "text/plain";
  props.correlation_id = "42";
  props.reply_to = "replies";
  props.headers = headers;
  props.header_count = 2;
  shmq_send_options_t so;
  shmq_send_options_init(&so);
  so.id = 7;
  so.properties = &props;
  CHECK_OK(shmq_producer_send(p, "hello", 5, &so));
  CHECK(shmq_producer_last_position(p) == 0);
  CHECK_OK(shmq_producer_try_send(p, "plain", 5, NULL));
  CHECK_OK(shmq_producer_send_for(p, "", 0, 1000, NULL));

  shmq_message_t* m = NULL;
  CHECK_OK(shmq_message_new(&m));
  CHECK_OK(shmq_consumer_receive(c, m));
  CHECK(data_is(m, "hello"));
  CHECK(shmq_message_position(m) == 0 && shmq_message_id(m) == 7);
  CHECK(shmq_message_delivery_count(m) == 1 && !shmq_message_redelivered(m));
  CHECK(shmq_message_held(m) && shmq_message_valid(m) && shmq_message_priority(m) == 0);
  shmq_message_properties_t mp;
  shmq_message_properties_init(&mp);
  CHECK_OK(shmq_message_get_properties(m, &mp));
  CHECK(mp.present && mp.header_count == 2 && mp.timestamp_ns > 0);
  CHECK(string_is(mp.content_type, "text/plain"));
  CHECK(string_is(mp.correlation_id, "42"));
  CHECK(string_is(mp.reply_to, "replies"));
  shmq_string_t key, value;
  CHECK_OK(shmq_message_header_at(m, 1, &key, &value));
  CHECK(string_is(key, "region") && string_is(value, "eu"));
  CHECK_STATUS(shmq_message_header_at(m, 2, &key, &value), SHMQ_INVALID);
  CHECK_OK(shmq_message_header(m, "tenant", &value));
  CHECK(string_is(value, "acme"));
  CHECK_STATUS(shmq_message_header(m, "nope", &value), SHMQ_EMPTY);

  /* A handle that holds a delivery is not received into again. */
  CHECK_STATUS(shmq_consumer_try_receive(c, m), SHMQ_INVALID);
  CHECK(strstr(shmq_last_error(), "still holds") != NULL);
  CHECK_OK(shmq_consumer_ack(c, m));
  CHECK(!shmq_message_held(m));
  CHECK_STATUS(shmq_consumer_ack(c, m), SHMQ_LEASE_LOST);

  CHECK_OK(shmq_consumer_try_receive(c, m));
  CHECK(data_is(m, "plain"));
  CHECK(shmq_message_id(m) == ((uint64_t)1 << 63) + 1); /* generated: 2^63 + position */
  CHECK_OK(shmq_message_get_properties(m, &mp));
  CHECK(!mp.present && mp.header_count == 0 && mp.content_type.size == 0);
  CHECK_OK(shmq_consumer_ack(c, m));
  CHECK_OK(shmq_consumer_receive_for(c, m, 1000));
  CHECK(shmq_message_size(m) == 0);
  CHECK_OK(shmq_consumer_ack(c, m));
  CHECK_STATUS(shmq_consumer_try_receive(c, m), SHMQ_EMPTY);
  CHECK_STATUS(shmq_consumer_receive_for(c, m, 10), SHMQ_TIMEOUT);
  CHECK(strstr(shmq_last_error(), "timeout") != NULL);

  /* Bad properties and sizes. */
  shmq_header_t empty_key = {"", "v"};
  props.headers = &empty_key;
  props.header_count = 1;
  CHECK_STATUS(shmq_producer_send(p, "x", 1, &so), SHMQ_INVALID);
  props.headers = NULL;
  CHECK_STATUS(shmq_producer_send(p, "x", 1, &so), SHMQ_INVALID); /* count 1, no array */
  CHECK_STATUS(shmq_producer_send(p, NULL, 1, NULL), SHMQ_INVALID);
  static char big[4096];
  CHECK_STATUS(shmq_producer_try_send(p, big, sizeof big, NULL), SHMQ_TOO_LARGE);

  shmq_queue_stats_t st;
  shmq_queue_stats_init(&st);
  CHECK_OK(shmq_queue_get_stats(q, &st));
  CHECK(st.sent == 3 && st.acked == 3 && st.ready == 0 && st.in_flight == 0);
  CHECK(st.producers == 1 && st.consumers == 1 && st.slot_count == 1024);

  shmq_message_free(m);
  shmq_consumer_close(c);
  shmq_producer_close(p);
  shmq_queue_close(q);
}

static void nack_reject_extend_and_interrupt(void) {
  puts("nack_reject_extend_and_interrupt");
  const char* name = unique("nack");
  shmq_queue_t* q = NULL;
  CHECK_OK(shmq_queue_create(name, NULL, &q));
  shmq_producer_t* p = NULL;
  shmq_consumer_t* c = NULL;
  shmq_consumer_t* other = NULL;
  CHECK_OK(shmq_queue_producer(q, &p));
  CHECK_OK(shmq_queue_consumer(q, NULL, &c));
  CHECK_OK(shmq_queue_consumer(q, NULL, &other));
  shmq_message_t* m = NULL;
  CHECK_OK(shmq_message_new(&m));

  CHECK_OK(shmq_producer_send(p, "again", 5, NULL));
  CHECK_OK(shmq_consumer_receive(c, m));
  CHECK_STATUS(shmq_consumer_ack(other, m), SHMQ_WRONG_CONSUMER);
  CHECK_OK(shmq_consumer_extend_lease(c, m, 60000));
  CHECK_OK(shmq_consumer_nack(c, m));
  CHECK_OK(shmq_consumer_receive_for(c, m, 5000));
  CHECK(data_is(m, "again") && shmq_message_delivery_count(m) == 2);
  CHECK(shmq_message_redelivered(m));
  CHECK_OK(shmq_consumer_nack_after(c, m, 0));
  CHECK_OK(shmq_consumer_receive_for(c, m, 5000));
  CHECK(shmq_message_delivery_count(m) == 3);

  /* Rejected: to "<name>.dlq". */
  CHECK_OK(shmq_consumer_reject(c, m));
  char dlq_name[80];
  snprintf(dlq_name, sizeof dlq_name, "%s.dlq", name);
  shmq_queue_t* dlq = NULL;
  CHECK_OK(shmq_queue_open(dlq_name, &dlq));
  shmq_consumer_t* dc = NULL;
  CHECK_OK(shmq_queue_consumer(dlq, NULL, &dc));
  shmq_message_t* dead = NULL;
  CHECK_OK(shmq_message_new(&dead));
  CHECK_OK(shmq_consumer_receive_for(dc, dead, 5000));
  /* The dead letter: a 32-byte envelope (magic 0x51444c53, reason 3 = rejected, little
   * endian), then the payload. */
  CHECK(shmq_message_size(dead) == 32 + 5);
  uint32_t magic = 0;
  uint16_t reason = 0;
  memcpy(&magic, shmq_message_data(dead), 4);
  memcpy(&reason, (const char*)shmq_message_data(dead) + 6, 2);
  CHECK(magic == 0x51444c53u && reason == 3);
  CHECK(memcmp((const char*)shmq_message_data(dead) + 32, "again", 5) == 0);
  CHECK_OK(shmq_consumer_ack(dc, dead));

  /* release_all gives back what the consumer holds. */
  CHECK_OK(shmq_producer_send(p, "held", 4, NULL));
  CHECK_OK(shmq_consumer_receive(c, m));
  size_t released = 0;
  CHECK_OK(shmq_consumer_release_all(c, &released));
  CHECK(released == 1 && !shmq_message_held(m));
  CHECK_STATUS(shmq_consumer_ack(c, m), SHMQ_LEASE_LOST);
  CHECK_OK(shmq_consumer_receive(other, m));
  CHECK(data_is(m, "held") && shmq_message_redelivered(m));
  CHECK_OK(shmq_consumer_ack(other, m));

  /* interrupt: blocking calls return interrupted until cleared. */
  shmq_consumer_interrupt(c);
  CHECK_STATUS(shmq_consumer_receive(c, m), SHMQ_INTERRUPTED);
  shmq_consumer_clear_interrupt(c);
  CHECK_STATUS(shmq_consumer_receive_for(c, m, 1), SHMQ_TIMEOUT);

  shmq_message_free(dead);
  shmq_consumer_close(dc);
  shmq_queue_close(dlq);
  shmq_message_free(m);
  shmq_consumer_close(other);
  shmq_consumer_close(c);
  shmq_producer_close(p);
  shmq_queue_close(q);
}

static void batches_priorities_and_duplicates(void) {
  puts("batches_priorities_and_duplicates");
  const char* name = unique("batch");
  shmq_queue_options_t o;
  shmq_queue_options_init(&o);
  o.max_priority = 3;
  o.dedup_count = 64;
  shmq_queue_t* q = NULL;
  CHECK_OK(shmq_queue_create(name, &o, &q));
  shmq_producer_t* p = NULL;
  shmq_consumer_t* c = NULL;
  CHECK_OK(shmq_queue_producer(q, &p));
  CHECK_OK(shmq_queue_consumer(q, NULL, &c));

  const shmq_buffer_t batch[3] = {{"a", 1}, {"bb", 2}, {"ccc", 3}};
  size_t sent = 0;
  CHECK_OK(shmq_producer_send_batch(p, batch, 3, SHMQ_FOREVER, NULL, &sent));
  CHECK(sent == 3);
  shmq_message_t* ms[4] = {NULL, NULL, NULL, NULL};
  for (int i = 0; i < 4; ++i) CHECK_OK(shmq_message_new(&ms[i]));
  size_t got = 0;
  size_t total = 0;
  while (total < 3) {
    CHECK_OK(shmq_consumer_receive_batch(c, ms, 4, 5000, &got));
    for (size_t i = 0; i < got; ++i) {
      CHECK(shmq_message_size(ms[i]) == total + 1);
      CHECK_OK(shmq_consumer_ack(c, ms[i]));
      ++total;
    }
  }
  CHECK_STATUS(shmq_consumer_receive_batch(c, ms, 4, 10, &got), SHMQ_TIMEOUT);
  CHECK(got == 0);

  /* The higher priority first; above max_priority is invalid. */
  shmq_send_options_t so;
  shmq_send_options_init(&so);
  CHECK_OK(shmq_producer_send(p, "low", 3, &so));
  so.priority = 3;
  CHECK_OK(shmq_producer_send(p, "high", 4, &so));
  so.priority = 4;
  CHECK_STATUS(shmq_producer_send(p, "x", 1, &so), SHMQ_INVALID);
  CHECK_OK(shmq_consumer_receive_for(c, ms[0], 5000));
  CHECK(data_is(ms[0], "high") && shmq_message_priority(ms[0]) == 3);
  CHECK_OK(shmq_consumer_receive_for(c, ms[1], 5000));
  CHECK(data_is(ms[1], "low"));
  CHECK_OK(shmq_consumer_ack(c, ms[0]));
  CHECK_OK(shmq_consumer_ack(c, ms[1]));

  /* An id sent again within the window is a duplicate: nothing is enqueued. */
  shmq_send_options_init(&so);
  so.id = 99;
  CHECK_OK(shmq_producer_send(p, "once", 4, &so));
  const uint64_t first = shmq_producer_last_position(p);
  CHECK_STATUS(shmq_producer_send(p, "once", 4, &so), SHMQ_DUPLICATE);
  CHECK(shmq_producer_last_position(p) == first);
  CHECK_OK(shmq_consumer_receive_for(c, ms[0], 5000));
  CHECK(shmq_message_id(ms[0]) == 99);
  CHECK_OK(shmq_consumer_ack(c, ms[0]));
  CHECK_STATUS(shmq_consumer_try_receive(c, ms[0]), SHMQ_EMPTY);

  /* An idempotent producer's resend under the same sequence number is a duplicate. */
  uint32_t producer_id = 0, next = 0;
  CHECK_STATUS(shmq_producer_session(p, &producer_id, &next), SHMQ_INVALID);
  shmq_producer_t* ip = NULL;
  CHECK_OK(shmq_queue_idempotent_producer(q, 0, 0, &ip));
  CHECK_OK(shmq_producer_session(ip, &producer_id, &next));
  CHECK(producer_id != 0 && next == 0);
  CHECK_OK(shmq_producer_send(ip, "seq0", 4, NULL));
  CHECK_OK(shmq_producer_session(ip, &producer_id, &next));
  CHECK(next == 1);
  shmq_producer_t* resumed = NULL;
  CHECK_OK(shmq_queue_idempotent_producer(q, producer_id, 0, &resumed));
  CHECK_STATUS(shmq_producer_send(resumed, "seq0", 4, NULL), SHMQ_DUPLICATE);
  CHECK_OK(shmq_producer_send(resumed, "seq1", 4, NULL));
  CHECK_OK(shmq_consumer_receive_for(c, ms[0], 5000));
  CHECK(data_is(ms[0], "seq0"));
  CHECK_OK(shmq_consumer_ack(c, ms[0]));
  CHECK_OK(shmq_consumer_receive_for(c, ms[0], 5000));
  CHECK(data_is(ms[0], "seq1"));
  CHECK_OK(shmq_consumer_ack(c, ms[0]));
  shmq_producer_close(resumed);
  shmq_producer_close(ip);
  shmq_repair_report_t report;
  shmq_repair_report_init(&report);
  CHECK_OK(shmq_queue_repair(q, &report));
  CHECK(report.members_reclaimed == 0 && report.redelivered == 0);
  CHECK_OK(shmq_queue_repair(q, NULL));

  /* Delayed: not before its delay (try_receive sees nothing now). */
  shmq_send_options_init(&so);
  so.delay_ms = 60000;
  CHECK_OK(shmq_producer_send(p, "later", 5, &so));
  CHECK_STATUS(shmq_consumer_try_receive(c, ms[0]), SHMQ_EMPTY);
  shmq_queue_stats_t st;
  shmq_queue_stats_init(&st);
  CHECK_OK(shmq_queue_get_stats(q, &st));
  CHECK(st.delayed == 1 && st.max_priority == 3);

  for (int i = 0; i < 4; ++i) shmq_message_free(ms[i]);
  shmq_consumer_close(c);
  shmq_producer_close(p);
  shmq_queue_close(q);
}

static void topics(void) {
  puts("topics");
  const char* name = unique("topic");
  (void)unique("topic.audit.dlq"); /* the group's dead-letter queue, removed at exit */
  shmq_topic_options_t o;
  shmq_topic_options_init(&o);
  o.slot_count = 64;
  o.history = 16;
  shmq_topic_t* t = NULL;
  CHECK_OK(shmq_topic_create(name, &o, &t));
  CHECK(shmq_topic_is_topic(name));
  CHECK(strcmp(shmq_topic_name(t), name) == 0);
  shmq_group_options_t g;
  shmq_group_options_init(&g);
  CHECK_OK(shmq_topic_create_group(t, "audit", &g));
  g.policy = SHMQ_GROUP_LOSSY;
  CHECK_OK(shmq_topic_create_group(t, "dash", &g));
  CHECK_STATUS(shmq_topic_create_group(t, "bad name", NULL), SHMQ_INVALID);
  g.policy = (shmq_group_policy_t)5;
  CHECK_STATUS(shmq_topic_create_group(t, "other", &g), SHMQ_INVALID);

  shmq_publisher_t* pub = NULL;
  shmq_subscriber_t* audit = NULL;
  shmq_subscriber_t* dash = NULL;
  CHECK_OK(shmq_topic_publisher(t, &pub));
  CHECK_OK(shmq_topic_subscriber(t, "audit", &audit));
  CHECK_OK(shmq_topic_subscriber(t, "dash", &dash));
  CHECK(strcmp(shmq_subscriber_group(audit), "audit") == 0);
  shmq_subscriber_t* none = NULL;
  CHECK(shmq_topic_subscriber(t, "missing", &none) != SHMQ_OK && none == NULL);

  CHECK_OK(shmq_publisher_send(pub, "t0", 2, 0));
  CHECK_OK(shmq_publisher_try_send(pub, "t1", 2, 0));
  CHECK_OK(shmq_publisher_send_for(pub, "t2", 2, 1000, 0));
  CHECK(shmq_publisher_last_position(pub) == 2);
  static char big[512];
  CHECK_STATUS(shmq_publisher_try_send(pub, big, sizeof big, 0), SHMQ_TOO_LARGE);

  shmq_delivery_t* d = NULL;
  CHECK_OK(shmq_delivery_new(&d));
  /* Every group gets every message. */
  shmq_subscriber_t* subs[2] = {audit, dash};
  for (int s = 0; s < 2; ++s) {
    for (int i = 0; i < 3; ++i) {
      CHECK_OK(shmq_subscriber_receive_for(subs[s], d, 5000));
      char want[3] = {'t', (char)('0' + i), 0};
      CHECK(shmq_delivery_size(d) == 2 && memcmp(shmq_delivery_data(d), want, 2) == 0);
      CHECK(shmq_delivery_position(d) == (uint64_t)i && shmq_delivery_held(d));
      CHECK(shmq_delivery_missed_before(d) == 0);
      if (s == 0 && i == 0) {
        /* nack: back to the group, redelivered. */
        CHECK_STATUS(shmq_subscriber_receive(subs[s], d), SHMQ_INVALID);
        CHECK_OK(shmq_subscriber_extend_lease(subs[s], d, 60000));
        CHECK_OK(shmq_subscriber_nack(subs[s], d, 0));
        CHECK_OK(shmq_subscriber_receive_for(subs[s], d, 5000));
        CHECK(shmq_delivery_position(d) == 0 && shmq_delivery_redelivered(d));
        CHECK(shmq_delivery_delivery_count(d) == 2);
      }
      CHECK_OK(shmq_subscriber_ack(subs[s], d));
      CHECK(!shmq_delivery_held(d));
    }
    CHECK_STATUS(shmq_subscriber_try_receive(subs[s], d), SHMQ_EMPTY);
  }

  /* reject: to the group's dead-letter queue. */
  CHECK_OK(shmq_publisher_send(pub, "bad", 3, 0));
  CHECK_OK(shmq_subscriber_receive_for(audit, d, 5000));
  CHECK_OK(shmq_subscriber_reject(audit, d));
  CHECK_OK(shmq_subscriber_receive_for(dash, d, 5000));
  CHECK_OK(shmq_subscriber_ack(dash, d));

  shmq_group_stats_t gs;
  shmq_group_stats_init(&gs);
  CHECK_OK(shmq_topic_group_stats(t, "audit", &gs));
  CHECK(strcmp(gs.name, "audit") == 0 && gs.policy == SHMQ_GROUP_RELIABLE);
  CHECK(gs.acked == 4 && gs.dead_lettered == 1 && gs.redelivered == 1 && gs.in_flight == 0);
  CHECK_STATUS(shmq_topic_group_stats(t, "missing", &gs), SHMQ_NOT_FOUND);
  shmq_topic_stats_t ts;
  shmq_topic_stats_init(&ts);
  CHECK_OK(shmq_topic_get_stats(t, &ts));
  CHECK(ts.head == 4 && ts.group_count == 2 && ts.publishers == 1 && ts.subscribers == 2);

  /* A late group starting at the earliest kept message gets the history. */
  shmq_group_options_init(&g);
  g.start = SHMQ_START_EARLIEST;
  CHECK_OK(shmq_topic_create_group(t, "late", &g));
  shmq_subscriber_t* late = NULL;
  CHECK_OK(shmq_topic_subscriber(t, "late", &late));
  CHECK_OK(shmq_subscriber_try_receive(late, d));
  CHECK(shmq_delivery_position(d) == 0);
  size_t released = 0;
  CHECK_OK(shmq_subscriber_release_all(late, &released));
  CHECK(released == 1);

  /* A deleted group's subscribers are closed. */
  CHECK_OK(shmq_topic_delete_group(t, "dash"));
  shmq_delivery_t* d2 = NULL;
  CHECK_OK(shmq_delivery_new(&d2));
  CHECK_STATUS(shmq_subscriber_receive_for(dash, d2, 1000), SHMQ_CLOSED);

  shmq_delivery_free(d2);
  shmq_delivery_free(d);
  shmq_subscriber_close(late);
  shmq_subscriber_close(dash);
  shmq_subscriber_close(audit);
  shmq_publisher_close(pub);
  CHECK_OK(shmq_topic_remove(name));
  shmq_topic_t* gone = NULL;
  CHECK(shmq_topic_open(name, &gone) != SHMQ_OK && gone == NULL);
  shmq_topic_close(t);
}

/* A consumer process killed with SIGKILL while it holds a message: the message is
 * redelivered to a consumer of this process that waits for it. The child says it holds the
 * message through a pipe; nothing here sleeps. */
static void killed_consumer_message_redelivered(void) {
  puts("killed_consumer_message_redelivered");
  const char* name = unique("kill");
  shmq_queue_t* q = NULL;
  CHECK_OK(shmq_queue_create(name, NULL, &q));
  shmq_producer_t* p = NULL;
  CHECK_OK(shmq_queue_producer(q, &p));
  CHECK_OK(shmq_producer_send(p, "precious", 8, NULL));

  int ready[2];
  CHECK(pipe(ready) == 0);
  const pid_t child = fork();
  CHECK(child >= 0);
  if (child == 0) {
    close(ready[0]);
    shmq_queue_t* cq = NULL;
    shmq_consumer_t* c = NULL;
    shmq_message_t* m = NULL;
    if (shmq_queue_open(name, &cq) != SHMQ_OK || shmq_queue_consumer(cq, NULL, &c) != SHMQ_OK ||
        shmq_message_new(&m) != SHMQ_OK || shmq_consumer_receive_for(c, m, 10000) != SHMQ_OK ||
        !data_is(m, "precious"))
      _exit(3);
    if (write(ready[1], "h", 1) != 1) _exit(4);
    for (;;) pause(); /* holds the message until killed */
  }
  close(ready[1]);
  char byte = 0;
  CHECK(read(ready[0], &byte, 1) == 1 && byte == 'h');
  close(ready[0]);
  CHECK(kill(child, SIGKILL) == 0);
  int status = 0;
  CHECK(waitpid(child, &status, 0) == child);
  CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

  shmq_consumer_t* c = NULL;
  shmq_message_t* m = NULL;
  CHECK_OK(shmq_queue_consumer(q, NULL, &c));
  CHECK_OK(shmq_message_new(&m));
  /* Taken back from the dead consumer (pid liveness, about a second), then delivered. */
  CHECK_OK(shmq_consumer_receive_for(c, m, 30000));
  CHECK(data_is(m, "precious"));
  CHECK(shmq_message_redelivered(m) && shmq_message_delivery_count(m) == 2);
  CHECK_OK(shmq_consumer_ack(c, m));
  shmq_queue_stats_t st;
  shmq_queue_stats_init(&st);
  CHECK_OK(shmq_queue_get_stats(q, &st));
  CHECK(st.acked == 1 && st.in_flight == 0 && st.ready == 0);

  shmq_message_free(m);
  shmq_consumer_close(c);
  shmq_producer_close(p);
  shmq_queue_close(q);
}

int main(void) {
  atexit(cleanup);
  status_strings_and_null_arguments();
  setup_errors();
  versioned_structs();
  round_trip_with_properties();
  nack_reject_extend_and_interrupt();
  batches_priorities_and_duplicates();
  topics();
  killed_consumer_message_redelivered();
  puts("c_api_test: all passed");
  return 0;
}
