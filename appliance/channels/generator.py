"""Generator channel (ingress): synthetic records, for `ddc bench`, the demo and tests.

Each value is a deterministic function of its sequence number, so a `null` sink with
verify = true can check every byte on the far side without keeping a copy. `values`
picks the function: "pattern" (default; a repeated digest), "json-logs" (structured log
records, for compression) or "random" (incompressible).
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time

from ..protocol.records import Record
from .base import ChannelContext, Emit, Source, unknown_keys

ROLES = ("ingress",)


def validate(options: dict, role: str) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    unknown_keys(options, {"count", "size", "rate", "topic", "partitions", "values"}, problems)
    if options.get("values", "pattern") not in VALUES:
        problems.append(("values", f"must be one of {', '.join(VALUES)}, got "
                                   f"{options.get('values')!r}"))
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


_LEVELS = ("info",) * 6 + ("warning", "error", "debug", "debug")
_SERVICES = ("orders", "billing", "auth", "gateway", "inventory", "search")
_MESSAGES = ("request handled", "cache miss, loading from the database",
             "upstream timeout, retrying", "user logged in", "payment accepted",
             "connection pool exhausted, waiting", "order shipped")
_PATHS = ("/api/v1/orders", "/api/v1/users/me", "/healthz", "/api/v1/search",
          "/api/v1/cart/items")


def json_log(seq: int, size: int = 0) -> bytes:
    """A structured JSON log record as services ship them (Kubernetes metadata, a trace
    id, an HTTP request), 500-700 bytes, deterministic from seq: the corpus of the
    compression benchmark (benchmarks/compression_bench.py). size is not used."""
    rng = random.Random(seq)
    service = rng.choice(_SERVICES)
    pod = f"{service}-{rng.choice(('7d9f8b6c5d', '5b8c7d9e4f'))}-{rng.randrange(10**4):04d}"
    return json.dumps({
        "@timestamp": f"2026-12-02T09:{seq // 60000 % 60:02d}:{seq // 1000 % 60:02d}."
                      f"{seq % 1000:03d}Z",
        "level": rng.choice(_LEVELS), "logger": f"com.example.{service}.RequestHandler",
        "message": rng.choice(_MESSAGES), "service": service, "version": "2.14.3",
        "trace_id": f"{rng.getrandbits(128):032x}", "span_id": f"{rng.getrandbits(64):016x}",
        "http": {"method": rng.choice(("GET", "GET", "POST", "PUT")),
                 "path": rng.choice(_PATHS), "status": rng.choice((200, 200, 200, 201, 404,
                                                                   500, 503)),
                 "duration_ms": rng.randrange(1, 2000), "bytes_out": rng.randrange(10**5),
                 "user_agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36"},
        "client": {"ip": f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}",
                   "user_id": rng.randrange(10**6)},
        "kubernetes": {"namespace": "production", "pod": pod,
                       "node": f"worker-{rng.randrange(12):02d}.plant-a.example",
                       "container": service,
                       "labels": {"app": service, "team": "platform", "tier": "backend"}},
    }).encode()


def random_value(seq: int, size: int) -> bytes:
    """size bytes that do not compress (deterministic from seq)."""
    return hashlib.shake_256(seq.to_bytes(8, "big")).digest(size)


# The kinds of value a generator makes (a null sink with verify = true checks the same).
VALUES = {"pattern": pattern, "json-logs": json_log, "random": random_value}
# Records before the values repeat (they are made up front). For JSON logs more than the
# largest compressed block holds (compression_max_block_bytes, 4 MiB: 8192 records are
# 5.7 MB), so no block compresses better for holding a value twice.
CYCLE = {"pattern": 1024, "json-logs": 8192, "random": 1024}


class GeneratorSource(Source):
    def __init__(self, options: dict, ctx: ChannelContext):
        self.count = options.get("count", 0)
        self.size = options.get("size", 1024)
        self.rate = float(options.get("rate", 0))
        self.topic = options.get("topic", "synthetic")
        self.partitions = options.get("partitions", 1)
        self.make = VALUES[options.get("values", "pattern")]
        self.cycle = CYCLE[options.get("values", "pattern")]
        self.emitted = 0
        self.done = threading.Event()

    def run(self, emit: Emit, stop: threading.Event) -> None:
        start = time.monotonic()
        seq = 0
        size, parts = self.size, self.partitions
        # Pre-made values: the benchmark measures the link, not blake2b.
        cache = [self.make(i, size) for i in range(min(self.count or self.cycle, self.cycle))]
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
