"""A bound on what one thread has handed to another and the other not yet taken.

Counted in records and in bytes, because a batch may hold one record or a thousand
and a record may be 100 bytes or 5 MB: a queue bounded in batches bounds neither.
A producer over the bound waits (back-pressure into Kafka's consumer or the UDP
socket's buffer); one batch is always let through, so a single record larger than
the byte bound still moves. A waiting producer is woken once the consumer has drained
half the bound, not on every batch taken: a wake-up per batch costs the consumer a
thread switch each time, which at link rates is most of its time.
"""

from __future__ import annotations

import threading


def batch_bytes(records) -> int:
    """What a batch counts against the byte bound: its values and keys."""
    return sum(len(r.value or b"") + len(r.key or b"") for r in records)


class Budget:
    def __init__(self, max_records: int, max_bytes: int):
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.records = 0
        self.bytes = 0
        self._waiting = 0
        self._cond = threading.Condition()

    def acquire(self, records: int, nbytes: int, stop: threading.Event) -> bool:
        """Wait until the batch fits (or nothing is outstanding); False if stopped first."""
        with self._cond:
            while (self.records and (self.records + records > self.max_records
                                     or self.bytes + nbytes > self.max_bytes)):
                if stop.is_set():
                    return False
                self._waiting += 1
                self._cond.wait(0.1)
                self._waiting -= 1
            self.records += records
            self.bytes += nbytes
            return True

    def release(self, records: int, nbytes: int) -> None:
        with self._cond:
            self.records -= records
            self.bytes -= nbytes
            if self._waiting and (self.records * 2 <= self.max_records
                                  and self.bytes * 2 <= self.max_bytes):
                self._cond.notify_all()
