"""Content filters on a Kafka channel, against real brokers: rules on both sides, the
consumer's offsets advance over filtered records (a filtered tail included), nothing
filtered is reported lost, and after both daemons restart the filtered tail is neither
a resume gap nor delivered."""

from __future__ import annotations

import json
import re

import pytest
from confluent_kafka import Consumer, TopicPartition

from .daemons import Daemon, free_udp_port, write_key
from .kafka_helpers import add_to_channel, kafka_configs, produce, read_all, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
PARTS = 3
N = 240

INGRESS_RULES = """
[[channel.filter]]
name = "every-fifth"
action = "deny"
[channel.filter.match]
header = "seq"
header_regex = "[05]$"
[[channel.filter]]
name = "tail"
action = "deny"
[channel.filter.match]
partition = [0, 1, 2]
header = "seq"
header_regex = "^23[0-9]$"
"""
EGRESS_RULES = """
[[channel.filter]]
name = "keep-small"
action = "allow"
[channel.filter.match]
max_size = 3000
[[channel.filter]]
name = "big-keyless"
action = "deny"
[channel.filter.match]
key_regex = "^k[0-9]*[13]$"
"""


def _seq(rec) -> int:
    return int(rec[2][0][1])


def _ingress_denies(seq: int) -> bool:
    return bool(re.search("[05]$", str(seq))) or 230 <= seq <= 239


def _egress_denies(rec) -> bool:
    key, value = rec[0], rec[1]
    return len(value or b"") > 3000 and key is not None and \
        re.search(b"^k[0-9]*[13]$", key) is not None


def _committed(conf: dict, topic: str) -> list[int]:
    c = Consumer(conf | {"group.id": "ddc-test"})
    try:
        return [tp.offset for tp in c.committed(
            [TopicPartition(topic, p) for p in range(PARTS)], timeout=10)]
    finally:
        c.close()


def _add(path: str, rules: str, default: str) -> None:
    with open(path) as f:
        text = f.read()
    text = text.replace('type = "kafka"\n', f'type = "kafka"\nfilter_default = "{default}"\n')
    with open(path, "w") as f:
        f.write(text + rules)


def _compress(path: str) -> None:
    with open(path) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(text.replace("[link]\n", '[link]\ncompression = "zstd"\n', 1))


# The transactional sink (positions in the destination) with blocks as they are, and the
# idempotent one (positions in state_dir: KafkaSink.skip) with zstd on the link.
@pytest.mark.parametrize("variant", ["transactions", "idempotent-zstd"])
def test_kafka_filters_advance_offsets_and_report_nothing_lost(tmp_path, kafka_pair,
                                                                kafka_topic, variant):
    kafka_pair.high.create_topic(kafka_topic, partitions=PARTS)
    kafka_pair.low.create_topic("low." + kafka_topic, partitions=PARTS)
    high, low = kafka_pair.high.client_config(), kafka_pair.low.client_config()
    sent = produce(high, kafka_topic, PARTS, N)
    key = write_key(tmp_path / "link.key")
    ingress_cfg, egress_cfg = kafka_configs(tmp_path, key, free_udp_port(),
                                            kafka_pair.high.bootstrap, kafka_pair.low.bootstrap,
                                            kafka_topic)
    if variant == "idempotent-zstd":
        add_to_channel(egress_cfg, keys="transactions = false\n")
        _compress(ingress_cfg)
    _add(ingress_cfg, INGRESS_RULES, "allow")
    _add(egress_cfg, EGRESS_RULES, "allow")

    def wanted(records):
        return sorted(_seq(r) for r in records.values()
                      if not _ingress_denies(_seq(r)) and not _egress_denies(r))

    want = wanted(sent)
    ends = {}
    for (_t, p, off) in sent:
        ends[p] = max(ends.get(p, -1), off + 1)
    egress = Daemon(egress_cfg)
    egress.wait_event("started")
    ingress = Daemon(ingress_cfg)
    try:
        ingress.wait_event("started")
        lowtopic = "low." + kafka_topic
        assert wait_for(lambda: len(read_all(low, lowtopic, 5)) >= len(want), 90)
        # The filtered tail (seq 230-239 end every partition) does not hold the offsets
        # back: the group commits up to the end of each partition.
        assert wait_for(lambda: _committed(high, kafka_topic) == [ends[p] for p in
                                                                    range(PARTS)], 30)
        # Both restart: the filtered tail is then neither a resume gap nor delivered.
        ingress.stop()
        egress.stop()
        lost_first = egress.events("records_lost")  # (the next run writes a new log)
        egress = Daemon(egress_cfg)
        egress.wait_event("started")
        ingress = Daemon(ingress_cfg)
        ingress.wait_event("started")
        more = produce(high, kafka_topic, PARTS, 30, start=N)
        want_all = sorted(want + wanted(more))
        assert wait_for(lambda: len(read_all(low, lowtopic, 5)) >= len(want_all), 90)
        by_ingress = sum(1 for r in more.values() if _ingress_denies(_seq(r)))
        by_egress = sum(1 for r in more.values()
                        if not _ingress_denies(_seq(r)) and _egress_denies(r))

        def counted() -> bool:
            # The status file is rewritten every metrics interval, and a marker may be in
            # a later block than the last record written: wait for the counts to arrive.
            ch = json.loads((tmp_path / "egress-state" / "status.json").read_text()
                            )["channels"]["test"]
            return ch["records_filtered_by_ingress"] >= by_ingress and \
                ch["records_filtered"].get("big-keyless", 0) >= by_egress
        wait_for(counted, 15, every=0.2)
        status = json.loads((tmp_path / "egress-state" / "status.json").read_text())
        st_in = json.loads((tmp_path / "ingress-state" / "status.json").read_text())
    finally:
        ingress.stop()
        egress.stop()
    got = sorted(_seq(r) for r in read_all(low, "low." + kafka_topic).values())
    assert got == want_all  # no duplicates, nothing filtered, nothing missing
    assert lost_first == []
    assert egress.events("records_lost") == []
    # The values are random bytes: only the frames' headers may shrink, and whether a
    # block saves a whole symbol depends on how the flushes cut it. Never more, though,
    # and without compression exactly as many.
    before, after = st_in["bytes_before_compression"], st_in["bytes_after_compression"]
    assert after <= before if variant == "idempotent-zstd" else after == before
    ch = status["channels"]["test"]
    assert ch["records_filtered"]["big-keyless"] == by_egress
    assert ch["records_filtered_by_ingress"] == by_ingress
