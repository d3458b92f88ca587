#include <shmq/shmq.h>
#include <stdio.h>

int main(void) {
  // One shared-memory segment per queue: /dev/shm/shmq.example-c. Geometry is fixed at create.
  shmq_queue_options_t options;
  shmq_queue_options_init(&options);  // every default; then set what you need
  options.slot_count = 1024;
  options.slot_size = 256;
  shmq_queue_t* queue = NULL;
  if (shmq_queue_open_or_create("example-c", &options, &queue) != SHMQ_OK) {
    fprintf(stderr, "shmq: %s\n", shmq_last_error());
    return 1;
  }
  // Usually in different processes; each registers a row in the queue's member table.
  shmq_producer_t* producer = NULL;
  shmq_consumer_t* consumer = NULL;
  shmq_message_t* m = NULL;  // a message handle, reused for every receive
  if (shmq_queue_producer(queue, &producer) != SHMQ_OK ||
      shmq_queue_consumer(queue, NULL, &consumer) != SHMQ_OK || shmq_message_new(&m) != SHMQ_OK) {
    fprintf(stderr, "shmq: %s\n", shmq_last_error());
    return 1;
  }

  // Properties travel with each message: a content type, a header.
  const shmq_header_t headers[] = {{"tenant", "acme"}};
  shmq_properties_t properties;
  shmq_properties_init(&properties);
  properties.content_type = "text/plain";
  properties.headers = headers;
  properties.header_count = 1;
  shmq_send_options_t send;
  shmq_send_options_init(&send);
  send.properties = &properties;
  for (int i = 0; i < 3; ++i) {
    char text[32];
    const int n = snprintf(text, sizeof text, "hello %d", i);
    if (shmq_producer_send(producer, text, (size_t)n, &send) != SHMQ_OK) return 1;
  }

  while (shmq_consumer_receive_for(consumer, m, 100) == SHMQ_OK) {
    shmq_string_t tenant = {"-", 1};
    (void)shmq_message_header(m, "tenant", &tenant);  // points into the message
    printf("%.*s (position %llu, delivery %u, tenant %.*s)\n", (int)shmq_message_size(m),
           (const char*)shmq_message_data(m), (unsigned long long)shmq_message_position(m),
           shmq_message_delivery_count(m), (int)tenant.size, tenant.data);
    if (shmq_consumer_ack(consumer, m) != SHMQ_OK) return 1;  // releases the slot
  }
  shmq_message_free(m);
  shmq_consumer_close(consumer);
  shmq_producer_close(producer);
  shmq_queue_close(queue);
  (void)shmq_queue_remove("example-c");
  return 0;
}
