"""Producing to and reading back from the test brokers, and ddc configs for Kafka channels."""

from __future__ import annotations

import random
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

from .daemons import node_config


def produce(conf: dict, topic: str, partitions: int, n: int, start: int = 0,
            big: tuple[int, ...] = (), seed: int = 1) -> dict[tuple[str, int, int], tuple]:
    """n records numbered start.. with keys, headers (one null), past timestamps;
    indexes in `big` get 5 MB values. Returns {(topic, partition, offset): record}."""
    rng = random.Random(seed * 1_000_003 + start)
    out: dict = {}
    p = Producer(conf | {"message.max.bytes": 16 * 1024 * 1024, "linger.ms": 5})
    now = int(time.time() * 1000) - 60_000  # Kafka 4 rejects timestamps an hour ahead

    def cb(rec):
        def on_delivery(err, msg):
            assert err is None, err
            out[(msg.topic(), msg.partition(), msg.offset())] = rec
        return on_delivery

    for i in range(start, start + n):
        size = 5 * 1024 * 1024 if i in big else rng.choice([0, 10, 500, 3000, 40_000])
        value = rng.randbytes(size) if size else None
        key = f"k{i}".encode() if i % 7 else None
        headers = [("seq", str(i).encode()), ("nil", None)]
        rec = (key, value, headers, now + i)
        p.produce(topic, value=value, key=key, headers=headers, partition=i % partitions,
                  timestamp=now + i, on_delivery=cb(rec))
        p.poll(0)
    assert p.flush(60) == 0
    return out


def read_all(conf: dict, topic: str, timeout: float = 60) -> dict[tuple[str, int, int], tuple]:
    c = Consumer(conf | {"group.id": f"check-{time.time_ns()}", "enable.auto.commit": False,
                         "enable.partition.eof": True})
    meta = c.list_topics(topic, timeout=10)
    parts = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.topics[topic].partitions]
    c.assign(parts)
    out: dict = {}
    at_end: set = set()
    deadline = time.monotonic() + timeout
    while len(at_end) < len(parts) and time.monotonic() < deadline:
        for m in c.consume(500, 0.2):
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    at_end.add(m.partition())
                continue
            out[(m.topic(), m.partition(), m.offset())] = (
                m.key(), m.value(), m.headers() or [], m.timestamp()[1])
    c.close()
    return out


def by_partition(records: dict) -> dict[int, list]:
    out: dict[int, list] = {}
    for (_t, p, _o), rec in sorted(records.items()):
        out.setdefault(p, []).append(rec)
    return out


def wait_for(predicate, timeout: float, every: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return predicate()


def kafka_configs(tmp, key: str, egress_port: int, high: str, low: str, topic: str,
                  link_peer_port: int | None = None, sasl: tuple[str, str] | None = None,
                  link_extra: str = "") -> tuple[str, str]:
    auth = ""
    if sasl:
        auth = (f'security_protocol = "SASL_PLAINTEXT"\nsasl_mechanism = "SCRAM-SHA-512"\n'
                f'sasl_username = "{sasl[0]}"\nsasl_password_file = "{tmp}/kafka.password"\n')
        with open(f"{tmp}/kafka.password", "w") as f:
            f.write(sasl[1] + "\n")
    egress = node_config("egress", tmp, key, f'bind = "127.0.0.1:{egress_port}"\n' + link_extra,
                         "kafka", f'bootstrap_servers = "{low}"\ntopic_prefix = "low."\n' + auth)
    ingress = node_config(
        "ingress", tmp, key, f'peer = "127.0.0.1:{link_peer_port or egress_port}"\n' + link_extra,
        "kafka", f'bootstrap_servers = "{high}"\ngroup_id = "ddc-test"\ntopics = ["{topic}"]\n'
        + auth + '[channel.kafka.properties]\n"auto.commit.interval.ms" = 200\n')
    return ingress, egress
