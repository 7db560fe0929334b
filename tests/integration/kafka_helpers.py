"""Producing to and reading back from the test brokers, and ddc configs for Kafka channels."""

from __future__ import annotations

import contextlib
import random
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

from .daemons import Daemon, node_config


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


def add_to_channel(config: str, keys: str = "", properties: str = "") -> None:
    """Add `[channel.kafka]` keys and librdkafka properties (TOML lines) to a config file
    kafka_configs wrote (its properties table, if any, comes last)."""
    with open(config) as f:
        text = f.read()
    table = "[channel.kafka.properties]\n"
    if table in text:
        text = text.replace(table, keys + table) + properties
    else:
        text += keys + (table + properties if properties else "")
    with open(config, "w") as f:
        f.write(text)


@contextlib.contextmanager
def pair_running(ingress_cfg: str, egress_cfg: str):
    """The egress (listening first), then the ingress; both stopped on the way out, also
    when the test fails. Yields (ingress, egress)."""
    started: list[Daemon] = []
    try:
        for cfg in (egress_cfg, ingress_cfg):
            started.append(Daemon(cfg))
            started[-1].wait_event("started")
        yield started[1], started[0]
    finally:
        for d in reversed(started):
            d.stop()


def assert_exactly_once(conf: dict, topic: str, n: int) -> dict:
    """Records numbered 0..n-1 (produce()'s "seq" header) are in `topic`, each once."""
    got = read_all(conf, topic)
    seqs = sorted(int(rec[2][0][1]) for rec in got.values())
    assert seqs == list(range(n)), f"lost or duplicated: {len(seqs)} records, " \
        f"{len(set(seqs))} distinct, expected 0..{n - 1}"
    return got
