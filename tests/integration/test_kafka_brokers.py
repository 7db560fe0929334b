"""The real Kafka brokers the suite runs on (tests/kafka): every version in
tests/kafka/versions.txt starts in KRaft mode, carries records byte for byte
(key, value, headers, timestamp, partition) over PLAINTEXT and over
SASL_PLAINTEXT/SCRAM-SHA-512, and keeps its data across a restart.

Brokers start once per session per version (fixtures in tests/kafka/fixtures.py).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:  # plain `pytest` puts tests/integration first, not the root
    sys.path.insert(0, _ROOT)

# Same name as tests/conftest.py should use: pytest loads the plugin once.
pytest_plugins = ["tests.kafka.fixtures"]

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(300)]

N_RECORDS = 100
PARTITIONS = 3


def _records(n: int = N_RECORDS, ts_base: int = 1_700_000_000_000) -> list[dict]:
    """Records with awkward bytes: every byte value, empty and None keys/values,
    repeated and None-valued headers, explicit CreateTime timestamps."""
    out = []
    for i in range(n):
        key = None if i % 17 == 0 else (b"" if i % 13 == 0 else f"key-{i}".encode() + bytes([i]))
        if i % 11 == 0:
            value = None  # tombstone
        elif i % 7 == 0:
            value = b""
        else:
            value = bytes(range(256)) * (i % 5) + i.to_bytes(4, "big") + b"\x00\xff"
        headers = [
            ("i", str(i).encode()),
            ("bin", bytes([i, 0, 255 - i])),
            ("dup", b"first"),
            ("dup", b"second"),
        ]
        if i % 3 == 0:
            headers.append(("none", None))
        out.append(
            {
                "key": key,
                "value": value,
                "headers": headers,
                "timestamp": ts_base + i * 1000 + 7,
                "partition": i % PARTITIONS,
            }
        )
    return out


def _produce(conf: dict, topic: str, records: list[dict]) -> None:
    from confluent_kafka import Producer

    errors = []

    def on_delivery(err, _msg):
        if err is not None:
            errors.append(err)

    p = Producer({**conf, "acks": "all", "enable.idempotence": True, "linger.ms": 5})
    for r in records:
        p.produce(
            topic,
            key=r["key"],
            value=r["value"],
            headers=r["headers"],
            timestamp=r["timestamp"],
            partition=r["partition"],
            on_delivery=on_delivery,
        )
    assert p.flush(30) == 0, "producer did not deliver everything in 30 s"
    assert not errors, errors


def _consume(conf: dict, topic: str, n: int, *, group: str | None = None) -> list:
    """n records from the beginning of every partition (group subscribe or assign)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    c = Consumer(
        {
            **conf,
            "group.id": group or "ddc-test-assign",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
        }
    )
    try:
        if group:
            c.subscribe([topic])
        else:
            c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
        got = []
        deadline = time.monotonic() + 60
        while len(got) < n and time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            got.append(msg)
        assert len(got) == n, f"consumed {len(got)} of {n} records in 60 s"
        # nothing extra
        extra = c.poll(1.0)
        assert extra is None or extra.error() is not None, "more records than produced"
        if group:
            c.commit(asynchronous=False)
        return got
    finally:
        c.close()


def _assert_same(records: list[dict], msgs: list) -> None:
    from confluent_kafka import TIMESTAMP_CREATE_TIME

    by_index = {}
    for m in msgs:
        headers = m.headers()
        assert headers is not None and headers[0][0] == "i"
        by_index[int(headers[0][1])] = m
    assert sorted(by_index) == list(range(len(records)))
    for i, r in enumerate(records):
        m = by_index[i]
        assert m.key() == r["key"], i
        assert m.value() == r["value"], i
        assert m.headers() == r["headers"], i
        assert m.timestamp() == (TIMESTAMP_CREATE_TIME, r["timestamp"]), i
        assert m.partition() == r["partition"], i
    # order within each partition is production order
    for p in range(PARTITIONS):
        idx = [int(m.headers()[0][1]) for m in msgs if m.partition() == p]
        assert idx == sorted(idx), f"partition {p} out of order"


def _roundtrip(conf: dict, broker, topic: str, *, group: str | None = None) -> None:
    broker.create_topic(topic, PARTITIONS)
    records = _records()
    _produce(conf, topic, records)
    _assert_same(records, _consume(conf, topic, len(records), group=group))


@pytest.mark.parametrize("side", ["high", "low"])
def test_roundtrip_plaintext(kafka_pair, kafka_topic, side):
    broker = getattr(kafka_pair, side)
    assert broker.version == kafka_pair.version
    _roundtrip(broker.client_config(), broker, kafka_topic, group=f"g-{kafka_topic}")


@pytest.mark.parametrize("side", ["high", "low"])
def test_roundtrip_sasl_scram_sha512(kafka_pair, kafka_topic, side):
    broker = getattr(kafka_pair, side)
    assert broker.sasl_bootstrap != broker.bootstrap
    assert broker.sasl_credentials == ("ddc", "ddc-secret")
    _roundtrip(broker.sasl_client_config(), broker, kafka_topic, group=f"g-{kafka_topic}")


def test_sasl_wrong_password_is_refused(kafka_pair):
    from confluent_kafka import KafkaError, Producer

    broker = kafka_pair.high
    seen = []
    p = Producer(
        broker.sasl_client_config(
            {"sasl.password": "wrong", "error_cb": seen.append, "log_level": 0}
        )
    )
    deadline = time.monotonic() + 20
    while not seen and time.monotonic() < deadline:
        p.poll(0.2)
    assert seen, "no error reported for a wrong SCRAM password"
    assert seen[0].code() == KafkaError._AUTHENTICATION, seen[0]


def test_topics_are_not_auto_created(kafka_pair, kafka_topic):
    md = kafka_pair.high.admin().list_topics(timeout=10)
    assert kafka_topic not in md.topics
    from confluent_kafka import KafkaError, Producer

    errors = []
    p = Producer({**kafka_pair.high.client_config(), "message.timeout.ms": 3000})
    p.produce(kafka_topic, b"x", on_delivery=lambda err, _m: errors.append(err))
    p.flush(10)
    assert errors and errors[0] is not None
    assert errors[0].code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._MSG_TIMED_OUT)
    assert kafka_topic not in kafka_pair.high.admin().list_topics(timeout=10).topics


def test_records_larger_than_1mb(kafka_pair, kafka_topic):
    broker = kafka_pair.low
    broker.create_topic(kafka_topic, 1)
    big = bytes(range(256)) * (3 * 4096 + 1)  # ~3 MiB
    rec = {
        "key": b"big",
        "value": big,
        "headers": [("i", b"0")],
        "timestamp": 1_700_000_000_123,
        "partition": 0,
    }
    conf = broker.client_config({"message.max.bytes": 8 * 1024 * 1024})
    _produce(conf, kafka_topic, [rec])
    (m,) = _consume(broker.client_config(), kafka_topic, 1)
    assert m.value() == big


@pytest.mark.parametrize("hard", [False, True], ids=["sigterm", "sigkill"])
def test_restart_keeps_data(kafka_pair, kafka_topic, hard):
    broker = kafka_pair.high
    before = _records(N_RECORDS)
    broker.create_topic(kafka_topic, PARTITIONS)
    _produce(broker.client_config(), kafka_topic, before)
    old_pid, port = broker.pid, broker.bootstrap

    t0 = time.monotonic()
    broker.restart(hard=hard)
    took = time.monotonic() - t0
    assert broker.running and broker.pid != old_pid and broker.bootstrap == port
    print(f"restart(hard={hard}) of Kafka {broker.version}: {took:.1f} s")

    # in the past: Kafka 4.x rejects CreateTime more than 1 h in the future
    # (log.message.timestamp.after.max.ms defaults to 3600000 since 4.0)
    after = _records(N_RECORDS, ts_base=1_600_000_000_000)
    for j, r in enumerate(after):
        r["headers"][0] = ("i", str(N_RECORDS + j).encode())
    _produce(broker.client_config(), kafka_topic, after)
    _assert_same(before + after, _consume(broker.client_config(), kafka_topic, 2 * N_RECORDS))
    # and the SCRAM user survived too
    _consume(broker.sasl_client_config(), kafka_topic, 2 * N_RECORDS)
