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
from dataclasses import dataclass

from ..protocol.records import Record
from ..schema import checked, int_between, one_of, option, options_of, parse_options
from .base import ChannelContext, Emit, Source

ROLES = ("ingress",)


def validate(options: dict, role: str) -> list[tuple[str, str]]:
    return parse_options(Options, options)[1]


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


@dataclass(frozen=True, kw_only=True)
class Options:
    """[channel.generator]."""
    values: str = option("pattern", parse=one_of(VALUES))
    count: int = option(0, parse=int_between(0, 10**12))  # records in all; 0: no end
    size: int = option(1024, parse=int_between(0, 2**31 - 1))  # bytes per value
    partitions: int = option(1, parse=int_between(1, 10_000))
    rate: float = option(0.0, parse=checked(
        lambda v: isinstance(v, int | float) and not isinstance(v, bool) and v >= 0,
        lambda v: f"must be records/s >= 0 (0: as fast as possible), got {v!r}", float))
    topic: str = option("synthetic", parse=checked(lambda v: isinstance(v, str),
                                                    "must be a string"))


class GeneratorSource(Source):
    def __init__(self, options: dict, ctx: ChannelContext):
        opts = options_of(Options, options)
        self.count = opts.count
        self.size = opts.size
        self.rate = opts.rate
        self.topic = opts.topic
        self.partitions = opts.partitions
        self.make = VALUES[opts.values]
        self.cycle = CYCLE[opts.values]
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
