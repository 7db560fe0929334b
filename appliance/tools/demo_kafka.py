"""`ddc demo` (default): Kafka -> ingress -> lossy link -> egress -> Kafka, no services needed.

Each side's "Kafka" is librdkafka's built-in mock cluster (`test.mock.num.brokers`),
held open by this process; the ingress consumes from the high-side cluster with a real
consumer group and the egress produces to the low-side cluster with an idempotent
producer, renaming topics with a prefix. Afterwards every record on the low side is
compared with what was produced on the high side (key, value, headers, timestamp,
partition), and the records reported lost must be exactly the ones missing.
"""

from __future__ import annotations

import os
import random
import sys
import time
from typing import cast

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from ..config import loads
from ..egress import EgressNode
from ..ingress import IngressNode
from ..protocol.events import RecordsLost
from .demo_common import DemoProgress, Outage, demo_config, prepare
from .relay import LossyRelay

TOPICS = {"orders": 3, "telemetry": 2}
PREFIX = "replica."


def mock_cluster() -> tuple[AdminClient, str]:
    """Start a librdkafka mock cluster; return its holder (keep it alive) and bootstrap."""
    holder = AdminClient({"test.mock.num.brokers": 1, "log_level": 0})
    broker = next(iter(holder.list_topics(timeout=10).brokers.values()))
    return holder, f"{broker.host}:{broker.port}"


def _create_topics(bootstrap: str, topics: dict[str, int]) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    for fut in admin.create_topics([NewTopic(t, n, 1) for t, n in topics.items()]).values():
        try:
            fut.result(10)
        except Exception:  # noqa: BLE001 - the mock may auto-create; producing will tell
            pass


def _read_all(bootstrap: str, topics: list[str]) -> dict[tuple[str, int, int], tuple]:
    """Every record of the topics, read from the beginning of each partition."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "demo-check",
                         "log_level": 0, "enable.auto.commit": False,
                         "enable.partition.eof": True})
    meta = consumer.list_topics(timeout=10)
    parts = [TopicPartition(t, p, OFFSET_BEGINNING) for t in topics if t in meta.topics
             for p in meta.topics[t].partitions]
    consumer.assign(parts)
    out: dict[tuple[str, int, int], tuple] = {}
    at_end: set[tuple[str, int]] = set()
    deadline = time.monotonic() + 30
    while len(at_end) < len(parts) and time.monotonic() < deadline:
        for m in consumer.consume(500, 0.2):
            # A consumed message, and a partition's end, always name where they are (the
            # stubs' Optional is for messages made by hand).
            topic, partition = cast(str, m.topic()), cast(int, m.partition())
            err = m.error()
            if err:
                if err.code() == KafkaError._PARTITION_EOF:
                    at_end.add((topic, partition))
                continue
            out[(topic, partition, cast(int, m.offset()))] = (
                m.key(), m.value(), m.headers() or [], m.timestamp()[1])
    consumer.close()
    return out


def run_kafka_demo(records: int = 2000, loss: float = 0.03, burst: float = 0.002,
                   outage: bool = True, seed: int = 1, quiet: bool = False) -> int:
    out = sys.stdout
    quiet = quiet or not out.isatty()
    tmp, log_path, key = prepare()

    high_holder, high = mock_cluster()
    low_holder, low = mock_cluster()
    _create_topics(high, TOPICS)
    _create_topics(low, {PREFIX + t: n for t, n in TOPICS.items()})

    # The high side's records: keys, headers (one null), timestamps, sizes up to 250 KB.
    rng = random.Random(seed)
    producer = Producer({"bootstrap.servers": high, "log_level": 0,
                         "message.max.bytes": 8 * 1024 * 1024})
    sent: dict[tuple[str, int, int], tuple] = {}

    def delivered(expect: tuple):
        # The reference is what was handed to produce(): a delivery report's message does
        # not carry the headers and timestamp back.
        def on_delivery(err, msg) -> None:
            if err is None:
                sent[(msg.topic(), msg.partition(), msg.offset())] = expect
        return on_delivery

    # Up to 250 KB: records span several FEC blocks. (librdkafka's mock broker stalls on
    # records of a few MB; the tests move 5 MB records through real Apache Kafka.)
    sizes = [0, 40, 300, 1200, 5000, 20000, 250_000]
    weights = [2, 20, 30, 25, 15, 7, 1]
    base_ts = int(time.time() * 1000) - 3_600_000
    for i in range(records):
        topic = "orders" if i % 3 else "telemetry"
        size = rng.choices(sizes, weights)[0]
        value = rng.randbytes(size) if size else None
        rkey = f"key-{i % 97}".encode() if i % 10 else None
        headers: list[tuple[str, str | bytes | None]] = [("trace", f"{i:08x}".encode()),
                                                          ("empty", None)]
        producer.produce(topic, value=value, key=rkey, headers=headers,
                         partition=i % TOPICS[topic], timestamp=base_ts + i,
                         on_delivery=delivered((rkey, value, headers, base_ts + i)))
        producer.poll(0)
    producer.flush(30)
    # The reference is what the high side holds (the mock broker keeps about 5 MB per
    # partition and silently trims beyond that, so sizes here stay well under it).
    held = _read_all(high, list(TOPICS))
    sent = {k: v for k, v in sent.items() if k in held}

    quiet_kafka = "[channel.kafka.properties]\nlog_level = 0"
    egress_cfg = loads(demo_config("egress", key, 'bind = "127.0.0.1:0"',
                                   f'bootstrap_servers = "{low}"\ntopic_prefix = "{PREFIX}"\n'
                                   'max_record_bytes = 8388608', tmp, "kafka", quiet_kafka),
                       "demo-egress.toml")
    egress = EgressNode(egress_cfg)
    model = Outage(loss=loss, burst_start=burst, burst_length=6, reorder=0.01, seed=seed)
    relay = LossyRelay(("127.0.0.1", 0), egress.address[:2], model).start()
    ingress_cfg = loads(demo_config(
        "ingress", key, f'peer = "127.0.0.1:{relay.address[1]}"\nrate_mbit = 100',
        f'bootstrap_servers = "{high}"\ngroup_id = "ddc-demo"\n'
        f'topics = {list(TOPICS)!r}'.replace("'", '"'), tmp, "kafka", quiet_kafka),
        "demo-ingress.toml")
    ingress = IngressNode(ingress_cfg)
    reports: list = []
    egress.listeners.append(lambda ev: reports.append(ev.report)
                            if isinstance(ev, RecordsLost) else None)
    total_bytes = sum(len(v[1] or b"") for v in sent.values())
    print(f"ddc demo: Kafka ({len(sent)} records, {total_bytes / 1e6:.1f} MB in "
          f"{', '.join(f'{t}[{n}]' for t, n in TOPICS.items())}) -> ingress -> lossy link "
          f"({loss:.0%} random loss, bursts{', one 30 ms outage' if outage else ''}) -> "
          f"egress -> Kafka ({PREFIX}*)", file=out)
    print("  both Kafka clusters are librdkafka mock clusters in this process; link: MTU 1500, "
          "12% FEC, interleave 4, AES-256-GCM, paced at 100 Mbit/s", file=out)
    started = time.monotonic()
    egress.start()
    ingress.start()

    sink = next(iter(egress.sinks.values()))
    outage_done = not outage
    progress = DemoProgress(out, quiet)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(0.1)
        if not outage_done and ingress.encoder.records_sent >= len(sent) // 2:
            model.outage_until = time.monotonic() + 0.03
            outage_done = True
        done = sink.delivered + sink.failed + sum(r.count or 0 for r in reports)
        progress.show("moving", done, len(sent))
        if done >= len(sent):
            break
    elapsed = time.monotonic() - started
    progress.close()
    ingress.stop()
    egress.stop()
    relay.stop()
    received = _read_all(low, [PREFIX + t for t in TOPICS])
    del high_holder, low_holder

    # Match low-side records to high-side ones: same partition, same order per partition.
    by_src: dict[tuple[str, int], list] = {}
    for (t, p, o), v in sorted(sent.items()):
        by_src.setdefault((t, p), []).append((o, v))
    lost_keys: set[tuple[str, int, int]] = set()
    for r in reports:
        # No first offset: the stream's first records were lost and the egress never
        # saw where it began; here the demo knows (its partitions start at offset 0).
        first = 0 if r.first_offset is None else r.first_offset
        lost_keys.update((r.topic, r.partition, o) for o in range(first, r.last_offset + 1))
    expected = {k: v for k, v in sent.items() if k not in lost_keys}
    got_by_part: dict[tuple[str, int], list] = {}
    for (t, p, _offset), v in sorted(received.items()):
        got_by_part.setdefault((t[len(PREFIX):], p), []).append(v)
    corrupt = 0
    mismatched_partitions = []
    for (t, p), items in by_src.items():
        want = [v for o, v in items if (t, p, o) in expected]
        got = got_by_part.get((t, p), [])
        if got != want:
            if os.environ.get("DDC_DEBUG"):
                for a, b in zip(got, want, strict=False):
                    if a != b:
                        print("got ", a[0], (a[1] or b"")[:20], a[2], a[3], "\nwant", b[0],
                              (b[1] or b"")[:20], b[2], b[3], file=sys.stderr)
                        break
            mismatched_partitions.append(f"{t}[{p}]")
            corrupt += sum(1 for a, b in zip(got, want, strict=False) if a != b)
    silent = len(sent) - len(received) - len(lost_keys & set(sent))
    if os.environ.get("DDC_DEBUG"):
        sink = next(iter(egress.sinks.values()))
        print("debug: decoder delivered", egress.decoder.stats.records_delivered, "dups",
              egress.decoder.stats.duplicates, "sink produced", sink.produced, "delivered",
              sink.delivered, "failed", sink.failed, "unknown-count reports",
              [r for r in reports if r.first_offset is None], file=sys.stderr)
        got_src = {(t[len(PREFIX):], p, v[2][0][1]) for (t, p, o), v in received.items()}
        silent_keys = sorted(k for k, v in sent.items()
                             if k not in lost_keys and (k[0], k[1], v[2][0][1]) not in got_src)
        print("debug: silent", silent_keys[:50], file=sys.stderr)
    stats = egress.decoder.stats
    print(f"  sent             {len(sent)} records, {total_bytes / 1e6:.1f} MB", file=out)
    print(f"  link             {relay.forwarded + relay.dropped} datagrams, {relay.dropped} "
          f"dropped ({relay.dropped / max(1, relay.forwarded + relay.dropped):.1%})", file=out)
    print(f"  repaired by FEC  {stats.fec_recovered} blocks ({stats.blocks_lost} beyond repair)",
          file=out)
    print(f"  delivered        {len(received)} records to {PREFIX}*, key/value/headers/"
          f"timestamp/partition identical: {'yes' if not mismatched_partitions else 'NO'}",
          file=out)
    print(f"  lost (reported)  {sum(r.count or 0 for r in reports)} records", file=out)
    for r in reports:
        print(f"    - {r.describe()}", file=out)
    print(f"  lost silently    {max(silent, 0)}", file=out)
    moved = sum(len(v[1] or b"") for v in received.values())
    print(f"  goodput          {moved / elapsed / 1e6:.2f} MB/s over {elapsed:.1f} s "
          "(a demo, not a benchmark: see `ddc bench`)", file=out)
    print(f"  logs             {log_path}", file=out)
    ok = not mismatched_partitions and silent == 0 and len(received) == len(expected)
    print("  result           " + ("OK: every record delivered intact or reported lost by "
                                    "range" if ok else f"FAILED {mismatched_partitions}"),
          file=out)
    return 0 if ok else 1
