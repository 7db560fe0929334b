"""The egress's Kafka sink against real brokers: records the destination refuses are
reported lost by range and the egress goes on; a fatal producer error replaces the
producer; partitioning = "key" places keys like the Java client."""

from __future__ import annotations

import tempfile
import threading
import time
import zlib

import pytest
from confluent_kafka import Producer

from appliance.channels.base import ChannelContext
from appliance.channels.kafka import open_sink
from appliance.protocol.records import Record

from .daemons import Daemon, free_udp_port, write_key
from .kafka_helpers import kafka_configs, produce, read_all, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

# Keys and the partition of 6 the Java client puts them on, from
# org.apache.kafka.common.utils.Utils (kafka-clients 4.4.0, in ~/.cache/ddc):
#   jshell --class-path kafka-clients-4.4.0.jar:slf4j-api-*.jar
#   Utils.toPositive(Utils.murmur2(key.getBytes(UTF_8))) % 6
# (murmur2 of "21", "foobar", "abc" and the long key are also the vectors of Kafka's
# own UtilsTest: -973932308, -790332482, 479470107, -58897971.)
JAVA_PARTITION_OF_6 = {
    "k0": 5, "k1": 5, "k2": 3, "k3": 4, "k4": 4, "k5": 0, "k6": 1, "k7": 4, "k8": 2,
    "k9": 2, "order-17": 3, "sensor/42": 3, "a": 4, "abc": 3, "21": 0, "foobar": 0,
    "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": 5, "\u00e9t\u00e9": 1,
}


def _sink_records(sink_options: dict, bootstrap: str) -> None:
    ctx = ChannelContext(1, "keys", tempfile.mkdtemp(prefix="ddc-sink-"), 0)
    ctx.node_name, ctx.stopping = "t", threading.Event()
    sink = open_sink({"bootstrap_servers": bootstrap} | sink_options, ctx)
    for offset, key in enumerate(JAVA_PARTITION_OF_6):
        sink.write(Record(value=b"v", key=key.encode(), topic="keys", partition=0,
                          offset=offset, prev_offset=offset - 1, durable=True))
    sink.close()


@pytest.mark.parametrize("transactions", [False, True], ids=["idempotent", "transactional"])
def test_partitioning_key_places_keys_like_the_java_client(kafka_pair, kafka_topic,
                                                           transactions):
    low = kafka_pair.low
    low.create_topic("low." + kafka_topic, partitions=6)
    _sink_records({"partitioning": "key", "topic_map": {"keys": "low." + kafka_topic},
                   "transactions": transactions, "positions_topic": kafka_topic + ".pos"},
                  low.bootstrap)
    got = {rec[0].decode(): p for (_t, p, _o), rec in
           read_all(low.client_config(), "low." + kafka_topic).items()}
    assert got == JAVA_PARTITION_OF_6
    # librdkafka's own default (CRC32) puts some of these keys elsewhere: "key" is not it
    assert any(zlib.crc32(k.encode()) % 6 != p for k, p in JAVA_PARTITION_OF_6.items())


def _start(tmp_path, pair, topic, sink_extra: str = "", properties: str = ""):
    key = write_key(tmp_path / "link.key")
    port = free_udp_port()
    ingress_cfg, egress_cfg = kafka_configs(tmp_path, key, port, pair.high.bootstrap,
                                            pair.low.bootstrap, topic)
    with open(egress_cfg) as f:
        text = f.read().replace('topic_prefix = "low."', 'topic_prefix = "low."\n' + sink_extra)
    with open(egress_cfg, "w") as f:
        f.write(text + (f"[channel.kafka.properties]\n{properties}\n" if properties else ""))
    egress = Daemon(egress_cfg)
    egress.wait_event("started", 30)
    ingress = Daemon(ingress_cfg)
    ingress.wait_event("started")
    return ingress, egress


def _lost(egress) -> set[tuple[int, int]]:
    return {(ev["partition"], o) for ev in egress.events("records_lost")
            for o in range(ev["first_offset"], ev["last_offset"] + 1)}


def test_refused_records_are_reported_lost_and_the_egress_goes_on(tmp_path, kafka_pair,
                                                                  kafka_topic):
    """A record above the sink's max_record_bytes (refused by produce() itself) and the
    records of a partition the destination lacks (partitioning = "same"): each is
    reported lost by range, everything else is delivered, the egress keeps running."""
    kafka_pair.high.create_topic(kafka_topic, partitions=3)
    kafka_pair.low.create_topic("low." + kafka_topic, partitions=2)
    sent = produce(kafka_pair.high.client_config(), kafka_topic, 3, 90, big=(9,))
    big = next(k for k, r in sent.items() if len(r[1] or b"") > 1_000_000)
    ingress, egress = _start(tmp_path, kafka_pair, kafka_topic,
                             "max_record_bytes = 1000000\ndelivery_timeout_ms = 5000")
    refused = {(p, o) for (_t, p, o) in sent if p == 2} | {big[1:]}
    low = kafka_pair.low.client_config()
    try:
        assert wait_for(lambda: _lost(egress) >= refused and
                        len(read_all(low, "low." + kafka_topic, 5)) >= len(sent) - len(refused),
                        90)
        more = produce(kafka_pair.high.client_config(), kafka_topic, 2, 20, start=90)
        assert wait_for(lambda: len(read_all(low, "low." + kafka_topic, 5)) >=
                        len(sent) - len(refused) + len(more), 60)
        assert egress.proc.poll() is None, "the egress died"
    finally:
        ingress.stop()
        egress.stop()
    assert _lost(egress) == refused
    got = read_all(low, "low." + kafka_topic)
    seqs = sorted(int(r[2][0][1]) for r in got.values())
    assert seqs == sorted(int(r[2][0][1]) for k, r in (sent | more).items()
                          if k[1:] not in refused)
    assert not egress.events("thread_died")


def test_fatal_producer_error_replaces_the_producer(tmp_path, kafka_pair, kafka_topic):
    """The idempotent producer with enable.gapless.guarantee turns the broker refusing a
    record (5 MB, above the topic's max.message.bytes) into a fatal error: the egress
    starts a new producer, says so, and every record is delivered once or reported lost
    (in this mode the records queued behind the refused one share its fate)."""
    kafka_pair.high.create_topic(kafka_topic, partitions=3)
    kafka_pair.low.create_topic("low." + kafka_topic, partitions=3,
                                config={"max.message.bytes": "3000000"})
    sent = produce(kafka_pair.high.client_config(), kafka_topic, 3, 60, big=(9,))
    ingress, egress = _start(tmp_path, kafka_pair, kafka_topic, "transactions = false",
                             '"enable.gapless.guarantee" = true')
    low = kafka_pair.low.client_config()
    try:
        assert wait_for(lambda: egress.events("producer_restarted"), 60)
        more = produce(kafka_pair.high.client_config(), kafka_topic, 3, 30, start=60)
        sent |= more
        assert wait_for(lambda: len(read_all(low, "low." + kafka_topic, 5)) + len(_lost(egress))
                        >= len(sent), 60)
        assert egress.proc.poll() is None, "the egress died"
    finally:
        ingress.stop()
        egress.stop()
    got = read_all(low, "low." + kafka_topic)
    seqs = [int(r[2][0][1]) for r in got.values()]
    assert len(seqs) == len(set(seqs)), "duplicates"
    delivered = {int(r[2][0][1]) for r in got.values()}
    by_offset = {(p, o): int(r[2][0][1]) for (_t, p, o), r in sent.items()}
    lost = {by_offset[k] for k in _lost(egress)}
    assert 9 in lost
    assert not lost & delivered, "a record reported lost was delivered"
    assert delivered | lost == {int(r[2][0][1]) for r in sent.values()}
    assert set(range(60, 90)) <= delivered, "records after the restart are delivered"


def test_a_record_the_broker_refuses_at_delivery_is_reported_lost_alone(tmp_path, kafka_pair,
                                                                        kafka_topic):
    """A record produce() accepts but the destination's broker refuses (a timestamp older
    than its topic allows: INVALID_TIMESTAMP, in the delivery report) among records it
    takes, all produced by the transactional sink's inline run, which asks for no
    delivery report: the commit fails, the transaction is produced again (by a new
    producer) with reports until the culprit is known, and only it is reported lost;
    each other record is delivered once."""
    kafka_pair.high.create_topic(kafka_topic, partitions=1)
    kafka_pair.low.create_topic("low." + kafka_topic, partitions=1,
                                config={"message.timestamp.before.max.ms": "3600000"})
    now = int(time.time() * 1000) - 60_000
    old = now - 2 * 24 * 3600 * 1000  # two days before: the destination refuses it
    p = Producer(kafka_pair.high.client_config() | {"linger.ms": 50})
    for i in range(200):
        p.produce(kafka_topic, value=b"v%d" % i, key=b"k%d" % i, partition=0,
                  headers=[("seq", str(i).encode())], timestamp=old if i == 150 else now + i)
    assert p.flush(30) == 0
    ingress, egress = _start(tmp_path, kafka_pair, kafka_topic, "delivery_timeout_ms = 5000")
    low = kafka_pair.low.client_config()
    try:
        assert wait_for(lambda: _lost(egress) and
                        len(read_all(low, "low." + kafka_topic, 5)) >= 199, 90)
        assert egress.proc.poll() is None, "the egress died"
    finally:
        ingress.stop()
        egress.stop()
    assert _lost(egress) == {(0, 150)}
    got = read_all(low, "low." + kafka_topic)
    seqs = sorted(int(r[2][0][1]) for r in got.values())
    assert seqs == [i for i in range(200) if i != 150]
    # (librdkafka makes this refusal fatal to a transactional producer: it is replaced)
    assert egress.events("transaction_aborted") or egress.events("producer_restarted"), \
        "the refusal came at the commit, not from produce()"
