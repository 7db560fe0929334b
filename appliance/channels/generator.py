"""Generator channel (ingress): synthetic records, for `ddc bench`, the demo and tests.

Each value is a deterministic function of its sequence number, so a `null` sink with
verify = true can check every byte on the far side without keeping a copy.
"""

from __future__ import annotations

import hashlib
import threading
import time

from ..protocol.records import Record
from .base import ChannelContext, Emit, Source, unknown_keys

ROLES = ("ingress",)


def validate(options: dict, role: str) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    unknown_keys(options, {"count", "size", "rate", "topic", "partitions"}, problems)
    for key, lo, hi, default in (("count", 0, 10**12, 0), ("size", 0, 2**31 - 1, 1024),
                                 ("partitions", 1, 10_000, 1)):
        v = options.get(key, default)
        if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
            problems.append((key, f"must be an integer between {lo} and {hi}, got {v!r}"))
    rate = options.get("rate", 0)
    if not isinstance(rate, int | float) or isinstance(rate, bool) or rate < 0:
        problems.append(("rate", f"must be records/s >= 0 (0: as fast as possible), got {rate!r}"))
    if not isinstance(options.get("topic", "synthetic"), str):
        problems.append(("topic", "must be a string"))
    return problems


def pattern(seq: int, size: int) -> bytes:
    """The value of record seq: a repeated digest, cheap to make and to check."""
    block = hashlib.blake2b(seq.to_bytes(8, "big"), digest_size=64).digest()
    reps = size // 64 + 1
    return (block * reps)[:size]


class GeneratorSource(Source):
    def __init__(self, options: dict, ctx: ChannelContext):
        self.count = options.get("count", 0)
        self.size = options.get("size", 1024)
        self.rate = float(options.get("rate", 0))
        self.topic = options.get("topic", "synthetic")
        self.partitions = options.get("partitions", 1)
        self.emitted = 0
        self.done = threading.Event()

    def run(self, emit: Emit, stop: threading.Event) -> None:
        start = time.monotonic()
        seq = 0
        size, parts = self.size, self.partitions
        # Pre-made values: the benchmark measures the link, not blake2b.
        cache = [pattern(i, size) for i in range(min(self.count or 1024, 1024))]
        batch = 1 if self.rate else 64
        while not stop.is_set() and (self.count == 0 or seq < self.count):
            if self.rate:
                ahead = seq / self.rate - (time.monotonic() - start)
                if ahead > 0:
                    time.sleep(ahead)
            now_ms = int(time.time() * 1000)
            records = []
            for _ in range(batch if not self.count else min(batch, self.count - seq)):
                seq += 1
                records.append(Record(value=cache[(seq - 1) % len(cache)],
                                      key=seq.to_bytes(8, "big"), topic=self.topic,
                                      partition=(seq - 1) % parts,
                                      offset=(seq - 1) // parts + 1, timestamp=now_ms))
            emit(records)
            self.emitted = seq
        self.done.set()


def open_source(options: dict, ctx: ChannelContext) -> GeneratorSource:
    return GeneratorSource(options, ctx)
