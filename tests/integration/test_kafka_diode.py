"""Kafka -> ddc ingress -> UDP link -> ddc egress -> Kafka, against real Apache Kafka
brokers (every version in tests/kafka/versions.txt): byte-for-byte fidelity, SASL/SCRAM,
kill -9 of either daemon, broker restarts, and loss on the link."""

from __future__ import annotations

import json
import signal

import pytest

from appliance.tools.relay import LossModel, LossyRelay

from .daemons import Daemon, free_udp_port, write_key
from .kafka_helpers import by_partition, kafka_configs, produce, read_all, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
PARTS = 3


def _topics(pair, topic: str) -> None:
    pair.high.create_topic(topic, partitions=PARTS)
    pair.low.create_topic("low." + topic, partitions=PARTS)


def _start(tmp_path, pair, topic, sasl=False, relay_model=None, link_extra=""):
    key = write_key(tmp_path / "link.key")
    egress_port = free_udp_port()
    relay = None
    peer = None
    if relay_model is not None:
        relay = LossyRelay(("127.0.0.1", 0), ("127.0.0.1", egress_port), relay_model).start()
        peer = relay.address[1]
    high = pair.high.sasl_bootstrap if sasl else pair.high.bootstrap
    low = pair.low.sasl_bootstrap if sasl else pair.low.bootstrap
    ingress_cfg, egress_cfg = kafka_configs(
        tmp_path, key, egress_port, high, low, topic, peer,
        pair.high.sasl_credentials if sasl else None, link_extra)
    egress = Daemon(egress_cfg)
    egress.wait_event("started")
    ingress = Daemon(ingress_cfg)
    ingress.wait_event("started")
    return ingress, egress, relay


def _seq(rec) -> int:
    return int(rec[2][0][1])


def test_records_cross_byte_for_byte(tmp_path, kafka_pair, kafka_topic):
    _topics(kafka_pair, kafka_topic)
    sent = produce(kafka_pair.high.client_config(), kafka_topic, PARTS, 300, big=(17, 150, 299))
    ingress, egress, _ = _start(tmp_path, kafka_pair, kafka_topic)
    low = kafka_pair.low.client_config()
    try:
        assert wait_for(lambda: len(read_all(low, "low." + kafka_topic, 10)) >= len(sent), 120)
    finally:
        ingress.stop()
        egress.stop()
    got = read_all(low, "low." + kafka_topic)
    assert by_partition(got) == by_partition(sent)  # key, value, headers, timestamp, partition
    assert egress.events("records_lost") == []


def test_sasl_scram_sha512_on_both_sides(tmp_path, kafka_pair, kafka_topic):
    _topics(kafka_pair, kafka_topic)
    sent = produce(kafka_pair.high.sasl_client_config(), kafka_topic, PARTS, 60)
    ingress, egress, _ = _start(tmp_path, kafka_pair, kafka_topic, sasl=True)
    low = kafka_pair.low.sasl_client_config()
    try:
        assert wait_for(lambda: len(read_all(low, "low." + kafka_topic, 10)) >= len(sent), 90)
    finally:
        ingress.stop()
        egress.stop()
    assert by_partition(read_all(low, "low." + kafka_topic)) == by_partition(sent)


def test_ingress_kill9_restart_no_duplicates_no_loss(tmp_path, kafka_pair, kafka_topic):
    _topics(kafka_pair, kafka_topic)
    high = kafka_pair.high.client_config()
    low = kafka_pair.low.client_config()
    sent = produce(high, kafka_topic, PARTS, 400)
    ingress, egress, _ = _start(tmp_path, kafka_pair, kafka_topic)
    try:
        assert wait_for(lambda: len(read_all(low, "low." + kafka_topic, 5)) >= 100, 60)
        ingress.stop(signal.SIGKILL)  # mid-stream: some handed-over offsets not committed
        sent |= produce(high, kafka_topic, PARTS, 200, start=400)
        ingress = Daemon(str(tmp_path / "ingress.toml"))
        ingress.wait_event("started")
        assert wait_for(lambda: len(read_all(low, "low." + kafka_topic, 5)) >= len(sent), 120)
    finally:
        ingress.stop()
        egress.stop()
    got = read_all(low, "low." + kafka_topic)
    seqs = [_seq(r) for r in got.values()]
    assert len(seqs) == len(set(seqs)), "duplicates downstream"
    assert by_partition(got) == by_partition(sent)
    assert egress.events("records_lost") == []
    assert len(egress.events("session_started")) == 2


def test_egress_kill9_reports_loss_by_range_without_duplicates(tmp_path, kafka_pair,
                                                               kafka_topic):
    _topics(kafka_pair, kafka_topic)
    high = kafka_pair.high.client_config()
    low = kafka_pair.low.client_config()
    sent = produce(high, kafka_topic, PARTS, 300)
    ingress, egress, _ = _start(tmp_path, kafka_pair, kafka_topic)
    try:
        assert wait_for(lambda: len(read_all(low, "low." + kafka_topic, 5)) >= 300, 60)
        # The egress persists confirmed positions within PERSIST_EVERY of the delivery.
        assert wait_for(lambda: _positions(tmp_path, kafka_topic) == [99, 99, 99], 10, 0.05)
        egress.stop(signal.SIGKILL)
        sent |= produce(high, kafka_topic, PARTS, 300, start=300)  # crosses while egress is down
        assert wait_for(lambda: _all_handed_over(tmp_path, 600), 30)
        egress = Daemon(str(tmp_path / "egress.toml"))
        egress.wait_event("started")
        sent |= produce(high, kafka_topic, PARTS, 90, start=600)
        # The last record either arrives or is reported lost (the restarted egress may
        # have caught a block group half sent before it was listening).
        last = next((p, o) for (_t, p, o), r in sent.items() if _seq(r) == 689)
        assert wait_for(lambda: any(_seq(r) == 689 for r in
                                    read_all(low, "low." + kafka_topic, 5).values())
                        or any(ev["partition"] == last[0] and ev["last_offset"] >= last[1]
                               for ev in egress.events("records_lost")), 60)
    finally:
        ingress.stop()
        egress.stop()
    got = read_all(low, "low." + kafka_topic)
    seqs = [_seq(r) for r in got.values()]
    assert len(seqs) == len(set(seqs)), "duplicates downstream"
    delivered = {(p, _seq(r)) for (_t, p, _o), r in got.items()}
    lost = set()
    for ev in egress.events("records_lost"):
        assert ev["topic"] == kafka_topic and ev["first_offset"] is not None
        lost |= {(ev["partition"], o) for o in range(ev["first_offset"], ev["last_offset"] + 1)}
    by_offset = {(p, o): _seq(r) for (_t, p, o), r in sent.items()}
    lost_seqs = {(p, by_offset[(p, o)]) for p, o in lost if (p, o) in by_offset}
    assert lost, "records sent while the egress was down must be reported lost"
    assert not lost_seqs & delivered, "a record reported lost was delivered"
    everything = {(p, _seq(r)) for (_t, p, _o), r in sent.items()}
    assert delivered | lost_seqs == everything, "a record was lost silently"


def _positions(tmp_path, topic: str) -> list[int]:
    """The egress's cached positions of `topic`. The file also holds what the shared
    positions topic in the destination says of other tests' topics (read at start)."""
    try:
        data = json.loads((tmp_path / "egress-state" / "positions.json").read_text())
    except (OSError, ValueError):
        return []
    return sorted(o for _c, t, _p, o in data["streams"] if t == topic)


def _all_handed_over(tmp_path, n: int) -> bool:
    try:
        st = json.loads((tmp_path / "ingress-state" / "status.json").read_text())
    except (OSError, ValueError):
        return False
    return st.get("records_sent", 0) >= n


@pytest.mark.parametrize("side", ["high", "low"])
def test_broker_restart_is_survived(tmp_path, kafka_pair, kafka_topic, side):
    _topics(kafka_pair, kafka_topic)
    high = kafka_pair.high.client_config()
    low = kafka_pair.low.client_config()
    sent = produce(high, kafka_topic, PARTS, 100)
    ingress, egress, _ = _start(tmp_path, kafka_pair, kafka_topic)
    try:
        assert wait_for(lambda: len(read_all(low, "low." + kafka_topic, 5)) >= 100, 60)
        getattr(kafka_pair, side).restart()
        sent |= produce(high, kafka_topic, PARTS, 100, start=100)
        assert wait_for(lambda: len(read_all(low, "low." + kafka_topic, 5)) >= 200, 120)
        assert ingress.proc.poll() is None and egress.proc.poll() is None
    finally:
        ingress.stop()
        egress.stop()
    got = read_all(low, "low." + kafka_topic)
    assert by_partition(got) == by_partition(sent)


def test_link_loss_within_budget_and_beyond(tmp_path, kafka_pair, kafka_topic):
    """5% random loss with 227+28 blocks: all delivered. Then a burst storm: exactly the
    lost offsets are reported, and nothing reported lost was delivered."""
    _topics(kafka_pair, kafka_topic)
    high = kafka_pair.high.client_config()
    low = kafka_pair.low.client_config()
    model = LossModel(loss=0.05, seed=3)
    sent = produce(high, kafka_topic, PARTS, 400)
    ingress, egress, relay = _start(tmp_path, kafka_pair, kafka_topic, relay_model=model,
                                    link_extra="block_symbols = 227\nrate_mbit = 200")
    try:
        assert wait_for(lambda: len(read_all(low, "low." + kafka_topic, 5)) >= 400, 90)
        assert egress.events("records_lost") == []
        model.set(loss=0.1, burst_start=0.01, burst_length=30)
        sent |= produce(high, kafka_topic, PARTS, 400, start=400)
        assert wait_for(lambda: _all_handed_over(tmp_path, 800), 60)
        model.set()
        sent |= produce(high, kafka_topic, PARTS, 30, start=800)  # clean records after
        assert wait_for(lambda: any(_seq(r) == 829 for r in
                                    read_all(low, "low." + kafka_topic, 5).values()), 60)
    finally:
        ingress.stop()
        egress.stop()
        relay.stop()
    got = read_all(low, "low." + kafka_topic)
    delivered = {(p, _seq(r)) for (_t, p, _o), r in got.items()}
    by_offset = {(p, o): _seq(r) for (_t, p, o), r in sent.items()}
    lost = set()
    for ev in egress.events("records_lost"):
        lost |= {(ev["partition"], by_offset[(ev["partition"], o)])
                 for o in range(ev["first_offset"], ev["last_offset"] + 1)}
    everything = {(p, _seq(r)) for (_t, p, _o), r in sent.items()}
    assert lost, "the storm was meant to beat the FEC"
    assert not lost & delivered
    assert delivered | lost == everything


def test_undeliverable_records_are_reported_lost_and_egress_keeps_its_place(
        tmp_path, kafka_pair, kafka_topic):
    """The low side lacks the destination topic (and does not auto-create): after
    librdkafka's delivery timeout every record is reported lost by range, and once the
    topic exists the egress goes on delivering."""
    kafka_pair.high.create_topic(kafka_topic, partitions=PARTS)
    high = kafka_pair.high.client_config()
    low = kafka_pair.low.client_config()
    sent = produce(high, kafka_topic, PARTS, 30)
    key = write_key(tmp_path / "link.key")
    egress_port = free_udp_port()
    ingress_cfg, egress_cfg = kafka_configs(tmp_path, key, egress_port,
                                            kafka_pair.high.bootstrap,
                                            kafka_pair.low.bootstrap, kafka_topic)
    with open(egress_cfg) as f:
        text = f.read()
    with open(egress_cfg, "w") as f:  # fail fast instead of librdkafka's 5 minutes
        f.write(text.replace('topic_prefix = "low."',
                             'topic_prefix = "low."\ndelivery_timeout_ms = 3000'))
    egress = Daemon(egress_cfg)
    egress.wait_event("started")
    ingress = Daemon(ingress_cfg)
    ingress.wait_event("started")
    try:
        assert wait_for(lambda: sum(ev["count"] for ev in egress.events("records_lost"))
                        >= len(sent), 60)
        kafka_pair.low.create_topic("low." + kafka_topic, partitions=PARTS)
        more = produce(high, kafka_topic, PARTS, 30, start=30)
        assert wait_for(lambda: len(read_all(low, "low." + kafka_topic, 5)) >= len(more), 90)
    finally:
        ingress.stop()
        egress.stop()
    lost = {(ev["partition"], o) for ev in egress.events("records_lost")
            for o in range(ev["first_offset"], ev["last_offset"] + 1)}
    assert lost == {(p, o) for (_t, p, o) in sent}
    assert all("delivery failed" in ev["reason"] for ev in egress.events("records_lost"))
    assert by_partition(read_all(low, "low." + kafka_topic)) == by_partition(more)
