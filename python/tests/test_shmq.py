"""The Python module shmq: queues, messages and their memoryviews, errors, threads (the GIL
released), Ctrl-C in blocking calls, a SIGKILLed consumer process, topics.

Run by ctest (python/CMakeLists.txt) with PYTHONPATH at the module just built. Processes
and threads synchronise through pipes and events, never through sleeps."""
import os
import signal
import subprocess
import sys
import textwrap
import threading

import pytest

import shmq


@pytest.fixture
def name(request):
    """A queue or topic name of this test; removed afterwards (with its dead-letter queues)."""
    n = f"pyt.{os.getpid()}.{request.node.name}".replace("[", "-").replace("]", "")
    yield n
    for extra in ("", ".dlq", ".g.dlq"):
        for remove in (shmq.Topic.remove, shmq.Queue.remove):
            try:
                remove(n + extra)
            except shmq.Error:
                pass


def child(script, *args):
    """A Python process running `script` with this test's module on its path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.dirname(shmq.__file__)
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), *args],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, text=True)


def test_round_trip(name):
    q = shmq.Queue.create(name, slot_count=16, slot_size=128)
    p, c = q.producer(), q.consumer()
    assert p.send(b"one") == 0
    assert p.send("two") == 1  # a str is sent as UTF-8
    assert p.try_send(bytearray(b"three")) == 2
    assert p.send_for(memoryview(b"four"), 1.0, id=44) == 3
    got = []
    for _ in range(4):
        m = c.receive(timeout=5)
        assert m is not None and m.held
        assert m.delivery_count == 1 and not m.redelivered and m.priority == 0
        got.append((m.position, bytes(m.data), m.bytes(), len(m), m.id))
        c.ack(m)
        assert not m.held
    assert [g[1] for g in got] == [b"one", b"two", b"three", b"four"]
    assert [g[0] for g in got] == [0, 1, 2, 3]
    assert all(g[1] == g[2] and g[3] == len(g[1]) for g in got)
    assert got[0][4] == 2**63 and got[3][4] == 44  # generated: 2^63 + position
    assert c.try_receive() is None
    assert c.receive(timeout=0.01) is None
    assert c.receive_for(0.01) is None
    s = q.stats()
    assert (s["sent"], s["acked"], s["ready"], s["in_flight"]) == (4, 4, 0, 0)
    assert s["producers"] == 1 and s["consumers"] == 1
    assert {"producer", "consumer"} <= {m["role"] for m in s["members"]}
    assert q.name == name and q.options()["slot_count"] == 16


def test_properties_priorities_and_delay(name):
    q = shmq.Queue.create(name, max_priority=3)
    p, c = q.producer(), q.consumer()
    props = {"content_type": "application/json", "correlation_id": "42",
             "reply_to": "replies", "headers": [("tenant", "acme"), ("region", "eu")]}
    p.send(b"{}", properties=props, id=7)
    p.send(b"urgent", priority=3)
    p.send(b"later", delay=60)
    with pytest.raises(shmq.InvalidError):
        p.send(b"x", priority=4)
    with pytest.raises(TypeError):
        p.send(b"x", properties={"colour": "red"})
    m = c.receive(timeout=5)
    assert bytes(m.data) == b"urgent" and m.priority == 3
    assert m.properties["present"] is False
    c.ack(m)
    m = c.receive(timeout=5)
    assert bytes(m.data) == b"{}" and m.id == 7
    pr = m.properties
    assert pr["present"] and pr["timestamp_ns"] > 0
    assert (pr["content_type"], pr["correlation_id"], pr["reply_to"]) == \
        ("application/json", "42", "replies")
    assert pr["headers"] == {"tenant": "acme", "region": "eu"}
    c.ack(m)
    assert c.try_receive() is None  # "later" is delayed
    assert q.stats()["delayed"] == 1


def test_nack_reject_extend_and_lease_lost(name):
    q = shmq.Queue.create(name)
    p, c = q.producer(), q.consumer()
    p.send(b"again")
    m = c.receive(timeout=5)
    c.extend(m, 60)
    c.nack(m)
    m = c.receive(timeout=5)
    assert bytes(m.data) == b"again" and m.redelivered and m.delivery_count == 2
    c.nack(m, delay=0)
    m = c.receive(timeout=5)
    assert m.delivery_count == 3
    c.reject(m)
    with pytest.raises(shmq.LeaseLostError) as e:
        c.ack(m)
    assert e.value.status == "lease_lost" and isinstance(e.value, shmq.Error)
    dlq = shmq.Queue.open(name + ".dlq").consumer()
    dead = dlq.receive(timeout=5)
    assert dead.bytes()[32:] == b"again"  # a 32-byte envelope, then the payload
    dlq.ack(dead)
    other = q.consumer()
    p.send(b"theirs")
    m = c.receive(timeout=5)
    with pytest.raises(shmq.WrongConsumerError):
        other.ack(m)
    assert c.release_all() == 1
    m = other.receive(timeout=5)
    assert bytes(m.data) == b"theirs" and m.redelivered
    other.ack(m)


def test_memoryview_is_released_when_the_message_is_acked(name):
    q = shmq.Queue.create(name)
    p, c = q.producer(), q.consumer()
    p.send(b"abcdef")
    m = c.receive(timeout=5)
    view = m.data
    assert view.readonly and view.format == "B" and len(view) == 6
    assert m.data is view  # one view per message while it lives
    with pytest.raises(TypeError):
        view[0] = 1  # read-only
    part = view[2:4]  # a slice is a view of its own
    c.ack(m)
    # The view handed out is released: it raises instead of exposing the bytes.
    with pytest.raises(ValueError):
        view[0]
    with pytest.raises(ValueError):
        bytes(view)
    with pytest.raises(ValueError):
        m.data
    with pytest.raises(ValueError):
        m.bytes()
    with pytest.raises(ValueError):
        m.properties
    # A slice made while held keeps the bytes received alive, even once the message is gone.
    del m, view
    assert bytes(part) == b"cd"
    # The exporter behind a released view hands out nothing.
    p.send(b"ghijkl")
    m = c.receive(timeout=5)
    exporter = m.data.obj
    c.nack(m)
    assert bytes(memoryview(exporter)) == b""


def test_batches(name):
    q = shmq.Queue.create(name, slot_count=8)
    p, c = q.producer(), q.consumer()
    assert p.send_batch([b"a", b"bb", "ccc"]) == 3
    got = []
    while len(got) < 3:
        batch = c.receive_batch(8, timeout=5)
        assert batch
        for m in batch:
            got.append(bytes(m.data))
            c.ack(m)
    assert got == [b"a", b"bb", b"ccc"]
    assert c.receive_batch(8, timeout=0.01) == []
    with pytest.raises(shmq.TimeoutError) as e:
        p.send_batch([b"x"] * 9, timeout=0.05)  # 8 slots
    assert "8 of 9 sent" in str(e.value)


def test_idempotent_producer_and_repair(name):
    q = shmq.Queue.create(name, dedup_count=64)
    assert q.producer().session is None
    p = q.idempotent_producer()
    producer_id, sequence = p.session
    assert producer_id != 0 and sequence == 0
    p.send(b"seq0")
    assert p.session == (producer_id, 1)
    resumed = q.idempotent_producer((producer_id, 0))  # after a crash: resend from 0
    with pytest.raises(shmq.DuplicateError):
        resumed.send(b"seq0")
    resumed.send(b"seq1")
    c = q.consumer()
    got = [c.receive(timeout=5) for _ in range(2)]
    assert [bytes(m.data) for m in got] == [b"seq0", b"seq1"]
    for m in got:
        c.ack(m)
    assert c.try_receive() is None
    report = q.repair()
    assert report["members_reclaimed"] == 0 and report["redelivered"] == 0
    with pytest.raises(shmq.InvalidError):
        shmq.Queue.create(name + "-plain").idempotent_producer()
    shmq.Queue.remove(name + "-plain")


def test_errors(name):
    with pytest.raises(shmq.NotFoundError) as e:
        shmq.Queue.open(name)
    assert name in str(e.value) and e.value.status == "not_found"
    with pytest.raises(shmq.InvalidError):
        shmq.Queue.create(name, slot_count=3)
    with pytest.raises(ValueError):  # InvalidError is a ValueError too
        shmq.Queue.create("bad/name")
    with pytest.raises(TypeError):
        shmq.Queue.create(name, colour="red")
    with pytest.raises(ValueError):
        shmq.Queue.create(name, durability="maybe")
    q = shmq.Queue.create(name, slot_count=2)
    with pytest.raises(shmq.AlreadyExistsError):
        shmq.Queue.create(name, slot_count=2)
    with pytest.raises(shmq.MismatchError):
        shmq.Queue.open_or_create(name, slot_count=4)
    assert shmq.Queue.open_or_create(name, slot_count=2).name == name
    p = q.producer()
    with pytest.raises(shmq.TooLargeError):
        p.send(b"x" * 1000)
    with pytest.raises(TypeError):
        p.send(12)
    p.send(b"1")
    p.send(b"2")
    with pytest.raises(shmq.FullError):
        p.try_send(b"3")
    with pytest.raises(shmq.TimeoutError) as e:
        p.send_for(b"3", 0.02)
    assert isinstance(e.value, TimeoutError)
    q.set_policy(lease=5, max_deliveries=3)
    assert q.options()["lease"] == 5 and q.options()["max_deliveries"] == 3
    c = q.consumer()
    shmq.Queue.remove(name)
    # A removed queue: taken what was left, then closed.
    for _ in range(2):
        c.ack(c.receive(timeout=5))
    with pytest.raises(shmq.ClosedError):
        c.receive(timeout=5)


def test_consumer_thread_blocked_in_receive_while_main_thread_sends(name):
    """The GIL is released while receive waits: the main thread runs and sends."""
    q = shmq.Queue.create(name)
    c = q.consumer()
    waiting = threading.Event()
    got = []

    def consume():
        waiting.set()
        m = c.receive()  # no timeout: only the main thread's send ends it
        got.append(bytes(m.data))
        c.ack(m)

    t = threading.Thread(target=consume)
    t.start()
    waiting.wait()
    q.producer().send(b"from main")
    t.join(60)
    assert not t.is_alive() and got == [b"from main"]


def test_threads_share_one_consumer(name):
    """Calls on one handle from several threads take turns: every message is received once."""
    q = shmq.Queue.create(name, slot_count=256)
    c = q.consumer()
    got = [[], []]

    def consume(mine):
        while (m := c.receive(timeout=5)) is not None:
            mine.append(bytes(m.data))
            c.ack(m)
            if sum(map(len, got)) >= 200:
                return

    threads = [threading.Thread(target=consume, args=(g,)) for g in got]
    for t in threads:
        t.start()
    p = q.producer()
    for i in range(200):
        p.send(b"%d" % i)
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert sorted(got[0] + got[1], key=int) == [b"%d" % i for i in range(200)]
    assert q.stats()["acked"] == 200


def test_browse(name):
    q = shmq.Queue.create(name)
    p, c = q.producer(), q.consumer()
    p.send(b"first")
    p.send(b"second")
    m = c.receive(timeout=5)
    assert [(b["position"], b["data"], b["state"]) for b in q.browse(10)] == \
        [(1, b"second", "ready")]
    assert [b["state"] for b in q.browse(10, include_in_flight=True)] == ["in_flight", "ready"]
    c.ack(m)


def test_interrupt_from_another_thread(name):
    q = shmq.Queue.create(name)
    c = q.consumer()
    raised = []
    waiting = threading.Event()

    def consume():
        waiting.set()
        try:
            c.receive()
        except shmq.InterruptedError as e:
            raised.append(e.status)

    t = threading.Thread(target=consume)
    t.start()
    waiting.wait()
    c.interrupt()
    t.join(60)
    assert not t.is_alive() and raised == ["interrupted"]
    c.clear_interrupt()
    assert c.try_receive() is None


SYS_FUTEX = 202  # x86_64


def wait_in_futex(pid, deadline=30.0):
    """Waits until the main thread of `pid` sleeps in futex() (a blocking shmq call waits in
    one). False if /proc/<pid>/syscall cannot say (another architecture, no access)."""
    import time
    if os.uname().machine != "x86_64":
        return False
    end = time.monotonic() + deadline
    path = f"/proc/{pid}/syscall"
    while time.monotonic() < end:
        try:
            with open(path) as f:
                fields = f.read().split()  # "running", or the syscall number and arguments
        except OSError:
            return False
        if fields and fields[0].isdigit() and int(fields[0]) == SYS_FUTEX:
            return True
        os.sched_yield()
    raise AssertionError(f"process {pid} never waited in futex()")


@pytest.mark.parametrize("call", ["receive", "send"])
def test_ctrl_c_interrupts_a_blocking_call(name, call):
    """A process blocked in receive() (empty queue) or send() (full ring) gets SIGINT: it
    raises KeyboardInterrupt from that call."""
    q = shmq.Queue.create(name, slot_count=2)
    proc = child("""
        import sys, shmq
        q = shmq.Queue.open(sys.argv[1])
        c, p = q.consumer(), q.producer()
        if sys.argv[2] == "send":
            p.send(b"1"); p.send(b"2")  # the ring is full
        try:
            print("ready", flush=True)
            if sys.argv[2] == "send":
                p.send(b"3")  # BLOCKING
            else:
                c.receive()  # BLOCKING
        except KeyboardInterrupt as e:
            tb = e.__traceback__
            while tb.tb_next:
                tb = tb.tb_next
            print("KeyboardInterrupt", tb.tb_lineno, flush=True)
            sys.exit(3)
        sys.exit(4)
        """, name, call)
    try:
        assert proc.stdout.readline().strip() == "ready"
        in_call = wait_in_futex(proc.pid)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 3, err
    word, line = out.split()
    assert word == "KeyboardInterrupt"
    if in_call:  # raised from the blocking call itself
        script = proc.args[2].splitlines()
        assert "BLOCKING" in script[int(line) - 1], (line, script)


def test_sigkilled_consumer_message_is_redelivered(name):
    q = shmq.Queue.create(name)
    q.producer().send(b"precious")
    proc = child("""
        import sys, shmq
        c = shmq.Queue.open(sys.argv[1]).consumer()
        m = c.receive(timeout=30)
        print(bytes(m.data).decode(), flush=True)
        sys.stdin.read()  # holds the message until killed
        """, name)
    try:
        assert proc.stdout.readline().strip() == "precious"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    c = q.consumer()
    m = c.receive(timeout=30)  # taken back from the dead consumer, then delivered
    assert m is not None and bytes(m.data) == b"precious"
    assert m.redelivered and m.delivery_count == 2
    c.ack(m)
    s = q.stats()
    assert (s["acked"], s["in_flight"], s["ready"]) == (1, 0, 0)


def test_topic_groups(name):
    t = shmq.Topic.create(name, slot_count=64, history=16)
    assert shmq.Topic.is_topic(name)
    assert t.create_group("g")["policy"] == "reliable"
    t.create_group("dash", policy="lossy")
    with pytest.raises(shmq.InvalidError):
        t.create_group("bad name")
    with pytest.raises(ValueError):
        t.create_group("x", policy="sometimes")
    pub = t.publisher()
    g, dash = t.subscriber("g"), t.subscriber("dash")
    assert g.group == "g"
    assert [pub.send(b"t%d" % i) for i in range(3)] == [0, 1, 2]
    assert pub.try_send("t3") == 3
    for sub in (g, dash):
        got = []
        while (d := sub.receive(timeout=1)) is not None:
            got.append((d.position, bytes(d.data)))
            sub.ack(d)
        assert got == [(i, b"t%d" % i) for i in range(4)]
    pub.send(b"again")
    d = g.receive(timeout=5)
    view = d.data
    g.extend(d, 30)
    g.nack(d)
    with pytest.raises(ValueError):
        view[0]
    d = g.receive(timeout=5)
    assert d.redelivered and d.delivery_count == 2 and d.missed_before == 0
    g.reject(d)
    stats = {s["name"]: s for s in t.stats()["groups"]}
    assert stats["g"]["dead_lettered"] == 1 and stats["g"]["redelivered"] == 1
    assert t.stats()["head"] == 5
    t.create_group("late", start="earliest")
    late = t.subscriber("late")
    assert late.try_receive().position == 0
    assert late.release_all() == 1
    t.delete_group("dash")
    with pytest.raises(shmq.ClosedError):
        dash.receive(timeout=5)
    assert [x["name"] for x in t.groups()] == ["g", "late"]
