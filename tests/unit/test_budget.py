import threading
import time

from appliance.budget import Budget


def test_one_batch_always_passes_even_over_the_byte_bound():
    b = Budget(max_records=10, max_bytes=100)
    assert b.acquire(1, 5_000_000, threading.Event())  # a 5 MB record still moves
    assert (b.records, b.bytes) == (1, 5_000_000)


def test_a_producer_over_the_bound_waits_for_a_release():
    b = Budget(max_records=10, max_bytes=1000)
    stop = threading.Event()
    b.acquire(8, 100, stop)
    passed = threading.Event()

    def producer():
        b.acquire(5, 100, stop)  # 13 records > 10: must wait
        passed.set()

    t = threading.Thread(target=producer)
    t.start()
    time.sleep(0.2)
    assert not passed.is_set()
    b.release(8, 100)
    t.join(2)
    assert passed.is_set()
    assert (b.records, b.bytes) == (5, 100)


def test_bytes_bound_alone_holds_a_producer_back():
    b = Budget(max_records=1000, max_bytes=1000)
    stop = threading.Event()
    b.acquire(1, 900, stop)
    stop.set()
    assert b.acquire(1, 200, stop) is False  # over the byte bound, and stopping
    assert (b.records, b.bytes) == (1, 900)
