import shmq

# One shared-memory segment per queue: /dev/shm/shmq.example-py. Options are the C++
# QueueOptions as keyword arguments, durations in seconds.
queue = shmq.Queue.open_or_create("example-py", slot_count=1024, slot_size=256)
# Usually in different processes; each registers a row in the queue's member table.
producer = queue.producer()
consumer = queue.consumer()

for i in range(3):
    producer.send(f"hello {i}".encode(),
                  properties={"content_type": "text/plain", "headers": {"tenant": "acme"}})

# receive() releases the GIL while it waits, and Ctrl-C interrupts it (KeyboardInterrupt).
while (m := consumer.receive(timeout=0.1)) is not None:  # None: nothing for 100 ms
    text = bytes(m.data).decode()  # m.data: a memoryview of the message, valid while held
    print(f"{text} (position {m.position}, delivery {m.delivery_count}, "
          f"tenant {m.properties['headers']['tenant']})")
    consumer.ack(m)  # releases the slot; m.data is released with it

# A nacked message comes back, marked redelivered.
producer.send(b"retry me")
m = consumer.receive()
consumer.nack(m)
m = consumer.receive()
print(f"{m.bytes().decode()}: delivery {m.delivery_count}, redelivered {m.redelivered}")
consumer.ack(m)

# Errors are shmq.Error subclasses; .status names the status.
try:
    shmq.Queue.open("no-such-queue")
except shmq.NotFoundError as e:
    print(f"{e.status}: {e}")
print(queue.stats()["acked"], "acked")
shmq.Queue.remove("example-py")
