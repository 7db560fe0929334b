"""Kafka clients under faults, with real brokers and real daemons: SIGTERM with every
broker dead, and a consumer that stops making progress."""

from __future__ import annotations

import json
import signal
import time

import pytest

from .daemons import Daemon, free_udp_port, write_key
from .kafka_helpers import kafka_configs, produce, read_all, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
PARTS = 3
STOP_WITHIN_S = 5.0


def _records_sent(tmp_path) -> int:
    try:
        st = json.loads((tmp_path / "ingress-state" / "status.json").read_text())
    except (OSError, ValueError):
        return 0
    return st.get("records_sent", 0)


def test_sigterm_with_every_broker_down_exits_0_within_5s(tmp_path, kafka_pair, kafka_topic):
    """Both brokers SIGKILLed, records still in the egress's producer: SIGTERM ends each
    daemon within 5 s with exit code 0, and the egress reports the records it could not
    deliver by range instead of dropping them silently."""
    kafka_pair.high.create_topic(kafka_topic, partitions=PARTS)
    kafka_pair.low.create_topic("low." + kafka_topic, partitions=PARTS)
    high = kafka_pair.high.client_config()
    low = kafka_pair.low.client_config()
    first = produce(high, kafka_topic, PARTS, 30)
    ingress_cfg, egress_cfg = kafka_configs(tmp_path, write_key(tmp_path / "link.key"),
                                            free_udp_port(), kafka_pair.high.bootstrap,
                                            kafka_pair.low.bootstrap, kafka_topic)
    egress = Daemon(egress_cfg)
    ingress = None
    try:
        egress.wait_event("started")
        ingress = Daemon(ingress_cfg)
        ingress.wait_event("started")
        assert wait_for(lambda: len(read_all(low, "low." + kafka_topic, 5)) >= len(first), 90)
        kafka_pair.low.kill()
        stranded = produce(high, kafka_topic, PARTS, 30, start=30)
        # on the link, so in the egress's producer queue with no broker to take them
        assert wait_for(lambda: _records_sent(tmp_path) >= 60, 30, 0.1)
        kafka_pair.high.kill()
        time.sleep(1)  # both clients now see their only broker gone
        took = {}
        t0 = time.monotonic()
        for d in (ingress, egress):
            d.proc.send_signal(signal.SIGTERM)
        for name, d in (("ingress", ingress), ("egress", egress)):
            try:
                rc = d.proc.wait(max(0.1, STOP_WITHIN_S - (time.monotonic() - t0)))
            except Exception:  # noqa: BLE001 - reported below with the figures
                rc = None
            took[name] = (rc, round(time.monotonic() - t0, 2))
    finally:
        for d in (ingress, egress):
            if d is not None:
                d.stop(signal.SIGKILL)
    assert took == {"ingress": (0, took["ingress"][1]), "egress": (0, took["egress"][1])}, (
        f"(exit code, seconds after SIGTERM): {took}")
    lost = {(ev["partition"], o) for ev in egress.events("records_lost")
            for o in range(ev["first_offset"], ev["last_offset"] + 1)}
    assert lost == {(p, o) for (_t, p, o) in stranded}, "undelivered records not reported"


def _seq(rec) -> int:
    return int(rec[2][0][1])


def test_fenced_consumer_is_replaced_and_nothing_is_lost_or_duplicated(tmp_path, kafka_pair,
                                                                       kafka_topic):
    """Static membership: another consumer with the ingress's group.instance.id fences it,
    a fatal error that ends a librdkafka consumer for good. The ingress says so in one line,
    replaces its consumer, and every record arrives once."""
    from confluent_kafka import Consumer

    kafka_pair.high.create_topic(kafka_topic, partitions=PARTS)
    kafka_pair.low.create_topic("low." + kafka_topic, partitions=PARTS)
    high = kafka_pair.high.client_config()
    low = kafka_pair.low.client_config()
    sent = produce(high, kafka_topic, PARTS, 30)
    ingress_cfg, egress_cfg = kafka_configs(tmp_path, write_key(tmp_path / "link.key"),
                                            free_udp_port(), kafka_pair.high.bootstrap,
                                            kafka_pair.low.bootstrap, kafka_topic)
    instance = f"ddc-static-{kafka_topic[-8:]}"
    with open(ingress_cfg, "a") as f:  # the properties table is the file's last
        f.write(f'"group.instance.id" = "{instance}"\n')
    egress = Daemon(egress_cfg)
    ingress = rogue = None
    try:
        egress.wait_event("started")
        ingress = Daemon(ingress_cfg)
        ingress.wait_event("started")
        assert wait_for(lambda: len(read_all(low, "low." + kafka_topic, 5)) >= len(sent), 90)
        rogue = Consumer(high | {"group.id": "ddc-test", "group.instance.id": instance,
                                 "session.timeout.ms": 6000})
        rogue.subscribe([kafka_topic])
        deadline = time.monotonic() + 60
        while not rogue.assignment() and time.monotonic() < deadline:
            rogue.poll(0.2)
        rogue.close()  # a static member does not leave: its instance id stays in the group
        ingress.wait_event("kafka_fatal", 30)
        sent |= produce(high, kafka_topic, PARTS, 30, start=30)
        assert wait_for(lambda: len(read_all(low, "low." + kafka_topic, 5)) >= len(sent), 90)
        assert ingress.proc.poll() is None
    finally:
        for d in (ingress, egress):
            if d is not None:
                d.stop()
    got = read_all(low, "low." + kafka_topic)
    seqs = sorted(_seq(r) for r in got.values())
    assert seqs == list(range(60)), "lost or duplicated downstream"
    assert ingress.events("consumer_recreated")
    assert egress.events("records_lost") == []
