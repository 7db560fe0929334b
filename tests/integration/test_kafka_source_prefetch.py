"""The Kafka source against a real broker, with a backlog larger than its prefetch bound
(`queued_max_kbytes`): it must keep fetching while the link drains what it fetched.

librdkafka stops fetching a partition whose local queue is over the bound and looks again
only after `fetch.queue.backoff.ms`, 1000 ms by default (librdkafka#2879). ddc bounds the
queue (16 MiB by default) to bound its memory, and drains it far faster than a second:
with the default the source stood idle most of each second, about 16 MB a second at
best (1 KB records end to end: 22,000-29,000 records/s with half the CPU idle). Here the
bound is 1 MiB and the backlog 20 MB: a stall is a gap of about a second between two
batches the source emits, and there must be none."""

from __future__ import annotations

import tempfile
import threading
import time

import pytest
from confluent_kafka import Producer

from appliance.channels.base import ChannelContext
from appliance.channels.kafka import KafkaSource, SourceOptions
from appliance.schema import options_of

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

PARTS = 3
N = 20_000
SIZE = 1024
STALL_S = 0.8  # librdkafka's backoff is 1 s; a drained 1 MiB queue refills in milliseconds


def _fill(broker, topic: str) -> None:
    broker.create_topic(topic, partitions=PARTS)
    p = Producer(broker.client_config() | {"linger.ms": 20, "batch.size": 1_000_000})
    value = bytes(range(256)) * (SIZE // 256)
    for i in range(N):
        while True:
            try:
                p.produce(topic, value, b"%08d" % i, i % PARTS)
                break
            except BufferError:
                p.poll(0.05)
    assert p.flush(60) == 0


def test_a_backlog_over_the_prefetch_bound_flows_without_a_stall(kafka_pair, kafka_topic):
    broker = kafka_pair.high
    _fill(broker, kafka_topic)
    ctx = ChannelContext(1, "orders", tempfile.mkdtemp(prefix="ddc-prefetch-"), 1 << 20)
    src = KafkaSource(options_of(SourceOptions, {
        "bootstrap_servers": broker.bootstrap, "group_id": f"g-{kafka_topic}",
        "topics": [kafka_topic], "queued_max_kbytes": 1024}), ctx)
    emitted: list[tuple[float, int]] = []
    done = threading.Event()

    def emit(batch) -> None:
        emitted.append((time.monotonic(), len(batch)))
        if sum(n for _, n in emitted) >= N:
            done.set()

    stop = threading.Event()
    th = threading.Thread(target=src.run, args=(emit, stop), daemon=True)
    th.start()
    try:
        assert done.wait(120), f"{sum(n for _, n in emitted)} of {N} records consumed"
    finally:
        stop.set()
        th.join(10)
        src.close()
    times = [t for t, _ in emitted]
    gaps = [round(b - a, 2) for a, b in zip(times, times[1:], strict=False)]
    stalls = [g for g in gaps if g >= STALL_S]
    assert not stalls, (f"the source stood idle {len(stalls)} times ({stalls} s) with "
                        f"records left to fetch; {times[-1] - times[0]:.1f} s for {N}")
