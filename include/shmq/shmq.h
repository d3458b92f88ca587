/* shmq C API: the queues and topics of the C++ library (shmq/shmq.hpp) for C programs.
 *
 * Built into the same library (libshmq); link it as a C++ library (it needs libstdc++:
 * `target_link_libraries(app PRIVATE shmq::shmq)` does that, or link with g++/-lstdc++).
 *
 * Conventions, for every function below unless its comment says otherwise:
 *
 *  - Errors. A function that can fail returns a shmq_status_t: SHMQ_OK, one of the hot-path
 *    statuses of shmq::Status (same numbers), or a setup error (SHMQ_NOT_FOUND and the
 *    others from 100, mirroring shmq::Errc; shmq::Errc::invalid_argument is SHMQ_INVALID).
 *    Every such call also sets this thread's last error message (shmq_last_error()): ""
 *    after SHMQ_OK, otherwise a sentence that says what failed. No C++ exception ever leaves
 *    a function of this header: an allocation failure is SHMQ_NO_MEMORY, anything else
 *    unexpected SHMQ_INTERNAL, each with its message.
 *  - NULL. A NULL handle or a NULL required pointer argument gives SHMQ_INVALID, never a
 *    crash. Arguments documented as optional (options structs, send options, properties)
 *    may be NULL: the defaults then apply. Accessors that return a value instead of a status
 *    return 0 / NULL / false for a NULL handle. The *_close and *_free functions accept NULL
 *    and do nothing with it, like free().
 *  - Ownership. A function with a `**out` parameter stores a new handle there on SHMQ_OK
 *    (and NULL on any other status); the caller owns it and releases it with the matching
 *    *_close or *_free function, exactly once. Handles are independent: a producer, consumer,
 *    message, publisher, subscriber or delivery keeps the shared memory it needs mapped by
 *    itself, so it may outlive the queue or topic handle it came from, and messages may
 *    outlive their consumer (they can then no longer be acked).
 *  - Threads. A handle is used by one thread at a time (none is synchronised); different
 *    handles may be used by different threads at once. The exceptions: *_interrupt may be
 *    called from any thread (and from a signal handler) while another thread uses the
 *    handle; shmq_status_string and shmq_last_error are always safe (the last error is per
 *    thread).
 *  - Time. Durations are milliseconds (`_ms`), at most 100 years (longer ones are taken as
 *    100 years); SHMQ_FOREVER as a timeout waits forever.
 *  - Versioned structs. Every options and stats struct starts with `size_t struct_size`.
 *    Initialise it with its *_init function (which sets struct_size = sizeof and every
 *    default), then set the fields you want. The library reads (or, for stats, writes) only
 *    the first struct_size bytes, so a program built against this header keeps working
 *    with a later library that adds fields at the end; a struct_size of 0 or larger than
 *    this library knows is SHMQ_INVALID.
 *
 * Queues and topics, their options and their guarantees are those of the C++ API: see the
 * README ("API in brief", "Topics", "Guarantees") and include/shmq/queue.hpp, producer.hpp,
 * consumer.hpp, properties.hpp, topic.hpp, which this header follows name for name.
 */
#ifndef SHMQ_SHMQ_H
#define SHMQ_SHMQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------------------------------
 * Status codes and errors
 * ------------------------------------------------------------------------------------- */

typedef enum shmq_status {
  /* shmq::Status, same values. */
  SHMQ_OK = 0,
  SHMQ_FULL = 1,            /* the ring is full (try_ / timed send); DLQ full on reject */
  SHMQ_EMPTY = 2,           /* nothing to receive (try_receive) */
  SHMQ_TIMEOUT = 3,         /* a timed call ran out of time */
  SHMQ_INTERRUPTED = 4,     /* *_interrupt() was called on the handle */
  SHMQ_TOO_LARGE = 5,       /* message larger than the queue's max message size */
  SHMQ_LEASE_LOST = 6,      /* ack/nack/extend of a message no longer held by this consumer */
  SHMQ_INVALID = 7,         /* bad argument: NULL, bad option, bad name, priority too high... */
  SHMQ_CLOSED = 8,          /* the queue or topic was removed (or the group deleted) */
  SHMQ_NO_PERSISTER = 9,    /* sync queue, try_send: sent, but no shmqd attached to confirm */
  SHMQ_UNCONFIRMED = 10,    /* sync queue, try_send: sent, the confirmation did not come */
  SHMQ_WRONG_CONSUMER = 11, /* ack/nack/extend of a message another consumer received */
  SHMQ_EVICTED = 12,        /* the handle's member row was taken from it: open a new one */
  SHMQ_DUPLICATE = 13,      /* an id already sent within the queue's deduplication window */
  /* Setup errors: shmq::Errc (invalid_argument is SHMQ_INVALID above). */
  SHMQ_NOT_FOUND = 100, /* the queue, topic or group does not exist */
  SHMQ_ALREADY_EXISTS = 101,
  SHMQ_PERMISSION_DENIED = 102,
  SHMQ_BAD_MAGIC = 103, /* not an shmq segment (or a queue opened as a topic and back) */
  SHMQ_INCOMPATIBLE_VERSION = 104,
  SHMQ_CORRUPT = 105,
  SHMQ_NOT_INITIALIZED = 106,
  SHMQ_NO_SPACE = 107, /* /dev/shm full, or no free member row / group row */
  SHMQ_SYSTEM_ERROR = 108,
  SHMQ_MISMATCH = 109, /* open_or_create: the existing queue's options differ */
  /* Failures of the C layer itself. */
  SHMQ_NO_MEMORY = 200, /* an allocation failed */
  SHMQ_INTERNAL = 201   /* an unexpected C++ exception, caught: see shmq_last_error() */
} shmq_status_t;

/* The status's name ("ok", "timeout", "not_found", ...), a static string; "unknown" for a
 * value that is not a shmq_status_t. Never NULL. */
const char* shmq_status_string(shmq_status_t status);

/* The message of this thread's last call that returns a shmq_status_t: "" if it returned
 * SHMQ_OK (at most 1023 bytes: a longer message is cut). Valid until this thread's next call
 * into this API; never NULL. */
const char* shmq_last_error(void);

/* Wait forever (as a timeout_ms). */
#define SHMQ_FOREVER UINT64_MAX

/* A string that is not NUL-terminated: `size` bytes at `data` (data may be NULL if size is
 * 0). Those returned by message accessors point into the message. */
typedef struct shmq_string {
  const char* data;
  size_t size;
} shmq_string_t;

/* ---------------------------------------------------------------------------------------
 * Queues
 * ------------------------------------------------------------------------------------- */

typedef struct shmq_queue shmq_queue_t;
typedef struct shmq_producer shmq_producer_t;
typedef struct shmq_consumer shmq_consumer_t;
typedef struct shmq_message shmq_message_t;

typedef enum shmq_durability {
  SHMQ_DURABILITY_NONE = 0,  /* memory only */
  SHMQ_DURABILITY_ASYNC = 1, /* logged by shmqd soon after the send */
  SHMQ_DURABILITY_SYNC = 2   /* send returns once the message is on disk (needs shmqd) */
} shmq_durability_t;

/* shmq::QueueOptions; fields and defaults as there. */
typedef struct shmq_queue_options {
  size_t struct_size;
  uint32_t slot_count;           /* power of two, 2 .. 2^24 (1024) */
  uint32_t slot_size;            /* bytes per slot incl. a 64-byte header (256) */
  uint32_t max_message_size;     /* 0 = one slot's payload (0) */
  uint32_t max_members;          /* 1 .. 255 (64) */
  uint32_t mode;                 /* 0600 or 0660 (0600) */
  uint64_t lease_ms;             /* visibility timeout, 0 = none (30000) */
  uint32_t max_deliveries;       /* then dead-lettered, 0 = unlimited (20) */
  uint64_t ttl_ms;               /* 0 = never expire (0) */
  uint64_t backoff_initial_ms;   /* redelivery delay of a plain nack (0) */
  uint64_t backoff_max_ms;       /* (60000) */
  bool dead_letter;              /* to "<name>.dlq" instead of dropping (true) */
  bool heartbeat_liveness;       /* liveness by heartbeat instead of pid (false) */
  uint64_t heartbeat_timeout_ms; /* (5000) */
  uint64_t claim_timeout_ms;     /* (5000) */
  shmq_durability_t durability;  /* (SHMQ_DURABILITY_NONE) */
  const char* data_dir;          /* needed for async and sync; NULL = none (NULL) */
  uint64_t flush_interval_ms;    /* async (5) */
  bool checksum;                 /* XXH3 over every message (false) */
  uint32_t max_priority;         /* 0 = no priorities, up to 31 (0) */
  uint32_t dedup_count;          /* deduplication window in messages, 0 = none (0) */
  uint64_t dedup_time_s;         /* and in seconds, 0 = no time limit (0) */
} shmq_queue_options_t;

/* Sets struct_size and every default. NULL: does nothing. */
void shmq_queue_options_init(shmq_queue_options_t* options);

/* Creates queue `name` (/dev/shm/shmq.<name>); `options` is optional. SHMQ_ALREADY_EXISTS if
 * it exists, SHMQ_INVALID for a bad name or option. *out: a new queue handle. */
shmq_status_t shmq_queue_create(const char* name, const shmq_queue_options_t* options,
                                shmq_queue_t** out);
/* Opens an existing queue (SHMQ_NOT_FOUND if there is none). */
shmq_status_t shmq_queue_open(const char* name, shmq_queue_t** out);
/* Opens the queue, creating it with `options` (optional) if it does not exist; SHMQ_MISMATCH
 * if it exists with other options (the rule: Queue::open_or_create in queue.hpp). */
shmq_status_t shmq_queue_open_or_create(const char* name, const shmq_queue_options_t* options,
                                        shmq_queue_t** out);
/* Removes queue `name` and its dead-letter queue. Processes still attached get SHMQ_CLOSED
 * from their blocking calls. Handles stay valid (and keep their memory mapped). */
shmq_status_t shmq_queue_remove(const char* name);
/* Releases the handle (not the queue). NULL: nothing. */
void shmq_queue_close(shmq_queue_t* queue);

/* The queue's name; valid while the handle lives. NULL for a NULL handle. */
const char* shmq_queue_name(const shmq_queue_t* queue);
/* The queue's options now (geometry and policy). out->struct_size must be set (init).
 * out->data_dir points into the handle: valid while it lives. */
shmq_status_t shmq_queue_get_options(const shmq_queue_t* queue, shmq_queue_options_t* out);

/* Run-time policy (Queue::set_policy): a field is changed only if its has_ flag is true. */
typedef struct shmq_policy_update {
  size_t struct_size;
  bool has_lease;
  uint64_t lease_ms;
  bool has_max_deliveries;
  uint32_t max_deliveries;
  bool has_ttl;
  uint64_t ttl_ms;
  bool has_backoff_initial;
  uint64_t backoff_initial_ms;
  bool has_backoff_max;
  uint64_t backoff_max_ms;
} shmq_policy_update_t;
/* Sets struct_size and clears every has_ flag. NULL: does nothing. */
void shmq_policy_update_init(shmq_policy_update_t* update);
/* Changes the policy for every attached process (shmqctl set). */
shmq_status_t shmq_queue_set_policy(shmq_queue_t* queue, const shmq_policy_update_t* update);

/* shmq::QueueStats, its counters (not the per-member and per-level lists). Approximate while
 * producers and consumers run. */
typedef struct shmq_queue_stats {
  size_t struct_size;
  uint32_t slot_count;
  uint32_t slot_size;
  uint32_t max_message_size;
  uint32_t max_members;
  uint32_t max_priority;
  uint32_t producers;
  uint32_t consumers;
  uint64_t tail;      /* next position producers will claim */
  uint64_t dispatch;  /* next position consumers will look at */
  uint64_t ready;     /* committed, not delivered (incl. requeued) */
  uint64_t in_flight; /* delivered, not acked */
  uint64_t claimed;
  uint64_t free_slots;
  uint64_t sent;
  uint64_t received;
  uint64_t acked;
  uint64_t requeued;
  uint64_t delayed;
  uint64_t next_due_ns;
  uint64_t oldest_unacked_age_ms;
  uint64_t members_reclaimed;
  uint64_t redelivered;
  uint64_t leases_expired;
  uint64_t holes_repaired;
  uint64_t dead_lettered;
  uint64_t expired;
  uint64_t dead_letter_failed;
  uint64_t corrupt;
  uint64_t dedup_duplicates;
  uint64_t dedup_evicted_early;
  uint64_t dedup_voided;
  uint64_t persisted; /* durable queues: positions below are in the log (sync: on disk) */
  bool watchdog_active;
  uint64_t synced; /* durable queues: positions below are on disk */
} shmq_queue_stats_t;
/* Sets struct_size (and zeroes the rest). NULL: does nothing. */
void shmq_queue_stats_init(shmq_queue_stats_t* stats);
/* Fills `out` (its struct_size must be set). Any thread holding the handle, any time. */
shmq_status_t shmq_queue_get_stats(const shmq_queue_t* queue, shmq_queue_stats_t* out);

/* Registers a producer (a member row). *out: a new producer handle. */
shmq_status_t shmq_queue_producer(shmq_queue_t* queue, shmq_producer_t** out);

/* An idempotent producer (Queue::idempotent_producer; the queue needs a deduplication
 * window, else SHMQ_INVALID): its sends with id 0 carry session ids, so that a message sent
 * again under the same sequence number is a duplicate. producer_id 0 starts a new session;
 * a session saved from shmq_producer_session resumes it (after a crash: at the first
 * sequence number not known to be confirmed, resending in order). *out: a new handle. */
shmq_status_t shmq_queue_idempotent_producer(shmq_queue_t* queue, uint32_t producer_id,
                                             uint32_t next_sequence, shmq_producer_t** out);

/* What shmq_queue_repair did (shmq::RepairReport). */
typedef struct shmq_repair_report {
  size_t struct_size;
  bool watchdog_running;      /* a live watchdog is elected: left to it, nothing done */
  uint32_t members_reclaimed; /* rows of dead members freed */
  uint64_t redelivered;       /* messages they held, back in the queue */
  uint64_t holes_repaired;    /* their claims, given back */
} shmq_repair_report_t;
/* Sets struct_size (and zeroes the rest). NULL: does nothing. */
void shmq_repair_report_init(shmq_repair_report_t* report);
/* Reclaims the member rows of dead processes and redelivers what they held, without a row
 * of its own (shmqctl repair); `out` (optional, struct_size set) says what it did. */
shmq_status_t shmq_queue_repair(shmq_queue_t* queue, shmq_repair_report_t* out);

/* shmq::ConsumerOptions. */
typedef struct shmq_consumer_options {
  size_t struct_size;
  /* false (default): data is copied at receive and never changes. true: messages that fit
   * one slot are read in place; check shmq_message_valid() after reading them. */
  bool zero_copy;
} shmq_consumer_options_t;
void shmq_consumer_options_init(shmq_consumer_options_t* options);

/* Registers a consumer; `options` is optional. *out: a new consumer handle. */
shmq_status_t shmq_queue_consumer(shmq_queue_t* queue, const shmq_consumer_options_t* options,
                                  shmq_consumer_t** out);

/* --- producers ------------------------------------------------------------------------ */

/* One header of a message's properties: NUL-terminated key (not empty) and value, each at
 * most 255 bytes. */
typedef struct shmq_header {
  const char* key;
  const char* value;
} shmq_header_t;

/* shmq::Properties to send. NULL or "" strings are "not set". Only read during the call. */
typedef struct shmq_properties {
  size_t struct_size;
  const char* content_type;
  const char* correlation_id;
  const char* reply_to;
  const shmq_header_t* headers; /* header_count entries (NULL if 0) */
  size_t header_count;
} shmq_properties_t;
void shmq_properties_init(shmq_properties_t* properties);

/* shmq::SendOptions. */
typedef struct shmq_send_options {
  size_t struct_size;
  uint64_t id;                         /* kept for deduplication; 0 = generated (2^63 + position) */
  uint32_t priority;                   /* 0 .. the queue's max_priority (SHMQ_INVALID above) */
  uint64_t delay_ms;                   /* not delivered before this from now (0: at once) */
  int64_t not_before_unix_ms;          /* nor before this wall-clock time, unix ms (0: none) */
  const shmq_properties_t* properties; /* optional */
} shmq_send_options_t;
void shmq_send_options_init(shmq_send_options_t* options);

/* Sends a copy of `size` bytes at `data` (data may be NULL when size is 0); `options` is
 * optional. send waits while the ring is full (and, on a sync queue, for the confirmation);
 * try_send returns SHMQ_FULL at once (sync: waits for the confirmation at most 20 ms, then
 * SHMQ_UNCONFIRMED, or SHMQ_NO_PERSISTER); send_for waits at most timeout_ms (SHMQ_TIMEOUT).
 * On a sync queue every status but SHMQ_OK after the message went in means "sent, not
 * confirmed" (see Producer::send). SHMQ_DUPLICATE: the id was sent within the dedup window. */
shmq_status_t shmq_producer_send(shmq_producer_t* producer, const void* data, size_t size,
                                 const shmq_send_options_t* options);
shmq_status_t shmq_producer_try_send(shmq_producer_t* producer, const void* data, size_t size,
                                     const shmq_send_options_t* options);
shmq_status_t shmq_producer_send_for(shmq_producer_t* producer, const void* data, size_t size,
                                     uint64_t timeout_ms, const shmq_send_options_t* options);

/* One message of a batch. */
typedef struct shmq_buffer {
  const void* data;
  size_t size;
} shmq_buffer_t;

/* Sends `count` messages in order, waking consumers once, waiting at most timeout_ms in all
 * (SHMQ_FOREVER: as send). `options` (optional) applies to every message; its id must be 0.
 * *sent (optional: may be NULL) = how many were sent. Returns SHMQ_OK if all were, else why
 * it stopped (a sync batch is confirmed as a batch: 0 sent with SHMQ_TIMEOUT means sent but
 * not confirmed). */
shmq_status_t shmq_producer_send_batch(shmq_producer_t* producer, const shmq_buffer_t* messages,
                                       size_t count, uint64_t timeout_ms,
                                       const shmq_send_options_t* options, size_t* sent);

/* An idempotent producer's session: the producer id and the sequence number its next send
 * with id 0 gets (it moves on after SHMQ_OK or SHMQ_DUPLICATE; after any other status the
 * next send is the retry of the same message). SHMQ_INVALID for a plain producer. */
shmq_status_t shmq_producer_session(const shmq_producer_t* producer, uint32_t* producer_id,
                                    uint32_t* next_sequence);
/* The position of the last message sent (after SHMQ_DUPLICATE: of the original; UINT64_MAX
 * if not known). 0 for a NULL handle. */
uint64_t shmq_producer_last_position(const shmq_producer_t* producer);
/* Makes blocking calls of this producer return SHMQ_INTERRUPTED, now and until
 * shmq_producer_clear_interrupt. Any thread; async-signal-safe. NULL: nothing. */
void shmq_producer_interrupt(shmq_producer_t* producer);
void shmq_producer_clear_interrupt(shmq_producer_t* producer);
/* Unregisters and releases the producer. NULL: nothing. */
void shmq_producer_close(shmq_producer_t* producer);

/* --- messages ------------------------------------------------------------------------- */

/* A message handle, empty; receive calls fill it. Reuse it for many receives. *out: new. */
shmq_status_t shmq_message_new(shmq_message_t** out);
/* Releases the handle. A message still held is not acked: its consumer gives it back when
 * it closes (or the lease expires). NULL: nothing. */
void shmq_message_free(shmq_message_t* message);

/* The payload (without the properties block) and its size. Valid while the message handle
 * holds it: until it is acked, nacked, rejected or the handle freed or received into again
 * (a zero-copy message: check shmq_message_valid after reading). NULL / 0 if empty. */
const void* shmq_message_data(const shmq_message_t* message);
size_t shmq_message_size(const shmq_message_t* message);
uint64_t shmq_message_position(const shmq_message_t* message);
uint64_t shmq_message_id(const shmq_message_t* message);
/* 1 on the first delivery, raised on every redelivery. */
uint32_t shmq_message_delivery_count(const shmq_message_t* message);
bool shmq_message_redelivered(const shmq_message_t* message);
uint32_t shmq_message_priority(const shmq_message_t* message);
/* True while the handle holds its delivery (reads the slot: false once taken back). */
bool shmq_message_held(const shmq_message_t* message);
/* True if the data read is the message received (always, unless zero-copy). */
bool shmq_message_valid(const shmq_message_t* message);

/* A received message's properties. Strings point into the message: valid as its data. */
typedef struct shmq_message_properties {
  size_t struct_size;
  bool present; /* false: sent without properties (all below empty) */
  shmq_string_t content_type;
  shmq_string_t correlation_id;
  shmq_string_t reply_to;
  uint64_t timestamp_ns; /* send time, unix ns */
  size_t header_count;
} shmq_message_properties_t;
void shmq_message_properties_init(shmq_message_properties_t* properties);
/* Fills `out` (struct_size set) from the message (SHMQ_INVALID if it holds none). */
shmq_status_t shmq_message_get_properties(const shmq_message_t* message,
                                          shmq_message_properties_t* out);
/* Header `index` (0 .. header_count - 1, in the order sent); SHMQ_INVALID past the end. */
shmq_status_t shmq_message_header_at(const shmq_message_t* message, size_t index,
                                     shmq_string_t* key, shmq_string_t* value);
/* The value of the first header named `key` (NUL-terminated): SHMQ_OK, or SHMQ_EMPTY if the
 * message has no such header. */
shmq_status_t shmq_message_header(const shmq_message_t* message, const char* key,
                                  shmq_string_t* value);

/* --- consumers ------------------------------------------------------------------------ */

/* Takes the next message into `message`. receive waits until one comes (or SHMQ_CLOSED,
 * SHMQ_INTERRUPTED); try_receive returns SHMQ_EMPTY at once; receive_for waits at most
 * timeout_ms (SHMQ_TIMEOUT). SHMQ_INVALID, and nothing taken, if `message` still holds a
 * delivery: ack, nack or reject it first (a delivery dropped from its handle could be given
 * back only by its lease or the consumer's close). */
shmq_status_t shmq_consumer_receive(shmq_consumer_t* consumer, shmq_message_t* message);
shmq_status_t shmq_consumer_try_receive(shmq_consumer_t* consumer, shmq_message_t* message);
shmq_status_t shmq_consumer_receive_for(shmq_consumer_t* consumer, shmq_message_t* message,
                                        uint64_t timeout_ms);
/* Waits up to timeout_ms for a first message, then takes what is ready, up to `count`, into
 * messages[0 ..]. *received (required) = how many; SHMQ_OK if at least one, else the reason
 * (SHMQ_TIMEOUT, SHMQ_CLOSED...). Every messages[i] must be a handle holding nothing. */
shmq_status_t shmq_consumer_receive_batch(shmq_consumer_t* consumer,
                                          shmq_message_t* const* messages, size_t count,
                                          uint64_t timeout_ms, size_t* received);
/* Releases the message's slot. SHMQ_LEASE_LOST if this consumer no longer holds it,
 * SHMQ_WRONG_CONSUMER if another consumer received it, SHMQ_INVALID if it holds nothing. */
shmq_status_t shmq_consumer_ack(shmq_consumer_t* consumer, shmq_message_t* message);
/* Gives it back, redelivered after the queue's backoff (nack) or after delay_ms (nack_after,
 * 0: at once), its delivery count raised. */
shmq_status_t shmq_consumer_nack(shmq_consumer_t* consumer, shmq_message_t* message);
shmq_status_t shmq_consumer_nack_after(shmq_consumer_t* consumer, shmq_message_t* message,
                                       uint64_t delay_ms);
/* Rejects it to the dead-letter queue (dropped if the queue does not dead-letter). Never
 * blocks: SHMQ_FULL if the DLQ cannot take it now; the message then stays held. */
shmq_status_t shmq_consumer_reject(shmq_consumer_t* consumer, shmq_message_t* message);
/* Pushes the lease of a held message to extension_ms from now. */
shmq_status_t shmq_consumer_extend_lease(shmq_consumer_t* consumer, shmq_message_t* message,
                                         uint64_t extension_ms);
/* Gives back every message this consumer holds; *released (optional) = how many. */
shmq_status_t shmq_consumer_release_all(shmq_consumer_t* consumer, size_t* released);
/* As shmq_producer_interrupt. */
void shmq_consumer_interrupt(shmq_consumer_t* consumer);
void shmq_consumer_clear_interrupt(shmq_consumer_t* consumer);
/* Gives back what it holds, unregisters, releases the handle. NULL: nothing. */
void shmq_consumer_close(shmq_consumer_t* consumer);

/* ---------------------------------------------------------------------------------------
 * Topics: publish/subscribe with subscriber groups
 * ------------------------------------------------------------------------------------- */

typedef struct shmq_topic shmq_topic_t;
typedef struct shmq_publisher shmq_publisher_t;
typedef struct shmq_subscriber shmq_subscriber_t;
typedef struct shmq_delivery shmq_delivery_t;

/* shmq::TopicOptions; fields and defaults as there. */
typedef struct shmq_topic_options {
  size_t struct_size;
  uint32_t slot_count;       /* (1024) */
  uint32_t slot_size;        /* a message takes one slot: at most slot_size - 64 (256) */
  uint32_t max_members;      /* (64) */
  uint32_t max_groups;       /* 1 .. 64 (16) */
  uint32_t mode;             /* (0600) */
  uint32_t history;          /* kept for groups that start at earliest, 0 = ring (0) */
  uint64_t lease_ms;         /* (30000) */
  uint32_t max_deliveries;   /* (20) */
  bool dead_letter;          /* to "<topic>.<group>.dlq" (true) */
  uint64_t claim_timeout_ms; /* (5000) */
  shmq_durability_t durability;
  const char* data_dir;       /* (NULL) */
  uint64_t flush_interval_ms; /* (5) */
  uint64_t retain_bytes;      /* (0: no limit) */
  uint64_t retain_age_s;      /* (0: no limit) */
} shmq_topic_options_t;
/* Sets struct_size and every default. NULL: does nothing. */
void shmq_topic_options_init(shmq_topic_options_t* options);

typedef enum shmq_group_policy {
  SHMQ_GROUP_RELIABLE = 0, /* holds publishers back, never misses a message */
  SHMQ_GROUP_LOSSY = 1     /* never holds them back, skips ahead when a ring behind */
} shmq_group_policy_t;

typedef enum shmq_start_at {
  SHMQ_START_LATEST = 0,   /* the next message published */
  SHMQ_START_EARLIEST = 1, /* the oldest kept (history or retained log) */
  SHMQ_START_POSITION = 2  /* exactly start_position */
} shmq_start_at_t;

typedef enum shmq_stall_action { SHMQ_STALL_HOLD = 0, SHMQ_STALL_DETACH = 1 } shmq_stall_action_t;

/* shmq::GroupOptions. */
typedef struct shmq_group_options {
  size_t struct_size;
  shmq_group_policy_t policy;   /* (SHMQ_GROUP_RELIABLE) */
  shmq_start_at_t start;        /* (SHMQ_START_LATEST) */
  uint64_t start_position;      /* with SHMQ_START_POSITION */
  uint64_t stall_timeout_ms;    /* (0: never stalled) */
  shmq_stall_action_t on_stall; /* (SHMQ_STALL_HOLD) */
} shmq_group_options_t;
/* Sets struct_size and every default. NULL: does nothing. */
void shmq_group_options_init(shmq_group_options_t* options);

/* Creates / opens / removes a topic (the queue name space); as the queue functions. */
shmq_status_t shmq_topic_create(const char* name, const shmq_topic_options_t* options,
                                shmq_topic_t** out);
shmq_status_t shmq_topic_open(const char* name, shmq_topic_t** out);
shmq_status_t shmq_topic_remove(const char* name);
/* True if `name` is a topic (false: a queue, nothing, or NULL). */
bool shmq_topic_is_topic(const char* name);
/* Releases the handle (not the topic). NULL: nothing. */
void shmq_topic_close(shmq_topic_t* topic);
/* The topic's name; valid while the handle lives. NULL for a NULL handle. */
const char* shmq_topic_name(const shmq_topic_t* topic);

/* Creates group `group` (1 .. 64 of [A-Za-z0-9_-]); `options` is optional. */
shmq_status_t shmq_topic_create_group(shmq_topic_t* topic, const char* group,
                                      const shmq_group_options_t* options);
/* Deletes a group: its subscribers' calls return SHMQ_CLOSED. */
shmq_status_t shmq_topic_delete_group(shmq_topic_t* topic, const char* group);

/* shmq::TopicStats counters and shmq::GroupStats. */
typedef struct shmq_topic_stats {
  size_t struct_size;
  uint32_t slot_count;
  uint32_t slot_size;
  uint32_t max_message_size;
  uint32_t max_groups;
  uint32_t history;
  uint32_t publishers;
  uint32_t subscribers;
  uint32_t group_count;
  uint64_t head;
  uint64_t earliest;
  uint64_t persisted;
  uint64_t published;
  uint64_t holes;
} shmq_topic_stats_t;
/* Sets struct_size (and zeroes the rest). NULL: does nothing. */
void shmq_topic_stats_init(shmq_topic_stats_t* stats);
/* Fills `out` (its struct_size must be set); approximate while the topic is in use. */
shmq_status_t shmq_topic_get_stats(const shmq_topic_t* topic, shmq_topic_stats_t* out);

typedef struct shmq_group_stats {
  size_t struct_size;
  char name[65];  /* NUL-terminated */
  char state[16]; /* "active", "stalled", "detached" */
  shmq_group_policy_t policy;
  uint64_t position;
  uint64_t acked;
  uint64_t lag;
  uint64_t in_flight;
  uint64_t requeued;
  uint32_t members;
  uint64_t delivered;
  uint64_t acks;
  uint64_t redelivered;
  uint64_t missed;
  uint64_t dead_lettered;
  uint64_t dropped;
} shmq_group_stats_t;
/* Sets struct_size (and zeroes the rest). NULL: does nothing. */
void shmq_group_stats_init(shmq_group_stats_t* stats);
/* The stats of group `group` (SHMQ_NOT_FOUND if there is none). */
shmq_status_t shmq_topic_group_stats(const shmq_topic_t* topic, const char* group,
                                     shmq_group_stats_t* out);

/* Registers a publisher / a subscriber of group `group` (a member row). *out: a new handle. */
shmq_status_t shmq_topic_publisher(shmq_topic_t* topic, shmq_publisher_t** out);
shmq_status_t shmq_topic_subscriber(shmq_topic_t* topic, const char* group,
                                    shmq_subscriber_t** out);

/* Publishes a copy for every group; `id` 0 = generated. As the producer's send, try_send,
 * send_for (a message larger than one slot's payload is SHMQ_TOO_LARGE). */
shmq_status_t shmq_publisher_send(shmq_publisher_t* publisher, const void* data, size_t size,
                                  uint64_t id);
shmq_status_t shmq_publisher_try_send(shmq_publisher_t* publisher, const void* data, size_t size,
                                      uint64_t id);
shmq_status_t shmq_publisher_send_for(shmq_publisher_t* publisher, const void* data, size_t size,
                                      uint64_t timeout_ms, uint64_t id);
/* The position of the last message this publisher published (0 for a NULL handle). */
uint64_t shmq_publisher_last_position(const shmq_publisher_t* publisher);
/* Makes the blocking call in progress (or the next one that would wait) return
 * SHMQ_INTERRUPTED, once: unlike a queue's, a topic handle's interrupt clears itself when it
 * is reported. Any thread; async-signal-safe. NULL: nothing. */
void shmq_publisher_interrupt(shmq_publisher_t* publisher);
/* Unregisters and releases the publisher. NULL: nothing. */
void shmq_publisher_close(shmq_publisher_t* publisher);

/* A delivery handle, empty; subscriber receives fill it. Reuse it for many receives. */
shmq_status_t shmq_delivery_new(shmq_delivery_t** out);
/* Releases the handle; a delivery it still holds is redelivered when its lease expires. */
void shmq_delivery_free(shmq_delivery_t* delivery);
/* The payload, its size and the delivery's fields, as the message accessors (0 / NULL for a
 * NULL handle). The data is valid while held (until acked, nacked, rejected, or the handle
 * freed): on a reliable group it is the slot itself (zero copy). */
const void* shmq_delivery_data(const shmq_delivery_t* delivery);
size_t shmq_delivery_size(const shmq_delivery_t* delivery);
uint64_t shmq_delivery_position(const shmq_delivery_t* delivery);
uint64_t shmq_delivery_id(const shmq_delivery_t* delivery);
uint32_t shmq_delivery_delivery_count(const shmq_delivery_t* delivery);
bool shmq_delivery_redelivered(const shmq_delivery_t* delivery);
/* Lossy groups: messages skipped just before this one. */
uint64_t shmq_delivery_missed_before(const shmq_delivery_t* delivery);
bool shmq_delivery_held(const shmq_delivery_t* delivery);

/* As the consumer's receive, try_receive, receive_for, ack, reject, extend_lease
 * (SHMQ_INVALID from a receive into a `delivery` that still holds one). */
shmq_status_t shmq_subscriber_receive(shmq_subscriber_t* subscriber, shmq_delivery_t* delivery);
shmq_status_t shmq_subscriber_try_receive(shmq_subscriber_t* subscriber, shmq_delivery_t* delivery);
shmq_status_t shmq_subscriber_receive_for(shmq_subscriber_t* subscriber, shmq_delivery_t* delivery,
                                          uint64_t timeout_ms);
shmq_status_t shmq_subscriber_ack(shmq_subscriber_t* subscriber, shmq_delivery_t* delivery);
/* Back to the group, redelivered after delay_ms (0: at once). */
shmq_status_t shmq_subscriber_nack(shmq_subscriber_t* subscriber, shmq_delivery_t* delivery,
                                   uint64_t delay_ms);
shmq_status_t shmq_subscriber_reject(shmq_subscriber_t* subscriber, shmq_delivery_t* delivery);
shmq_status_t shmq_subscriber_extend_lease(shmq_subscriber_t* subscriber, shmq_delivery_t* delivery,
                                           uint64_t extension_ms);
/* Gives back every delivery it holds; *released (optional) = how many. */
shmq_status_t shmq_subscriber_release_all(shmq_subscriber_t* subscriber, size_t* released);
/* Makes the blocking call in progress (or the next one that would wait) return
 * SHMQ_INTERRUPTED, once: unlike a queue's, a topic handle's interrupt clears itself when it
 * is reported. Any thread; async-signal-safe. NULL: nothing. */
void shmq_subscriber_interrupt(shmq_subscriber_t* subscriber);
/* The group's name; valid while the handle lives. */
const char* shmq_subscriber_group(const shmq_subscriber_t* subscriber);
/* Releases the handle. What it still holds is redelivered to the group when its lease
 * expires (Subscriber's destructor); call shmq_subscriber_release_all first to give it back
 * at once. NULL: nothing. */
void shmq_subscriber_close(shmq_subscriber_t* subscriber);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* SHMQ_SHMQ_H */
