"""Exactly once into the destination Kafka, against real brokers (both versions):
positions that outlive the egress's disk, zombie fencing, a destination broker restart
in the middle of a transaction, and N diode pairs sharing one consumer group."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import threading
import time

import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient

from appliance.channels.base import EXIT_FENCED
from appliance.tools.relay import LossModel, LossyRelay

from .daemons import Daemon, big_receive_buffer, free_udp_port, write_key
from .kafka_helpers import kafka_configs, produce, read_all, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
PARTS = 3


def _seq(rec) -> int:
    return int(rec[2][0][1])


def _configs(tmp, pair, topic, key, port, peer=None, name="", egress_extra="",
             ingress_props="", link=""):
    """An ingress/egress config pair in tmp; name makes node names (pairs) distinct."""
    tmp.mkdir(parents=True, exist_ok=True)
    ingress, egress = kafka_configs(tmp, key, port, pair.high.bootstrap, pair.low.bootstrap,
                                    topic, peer, link_extra=link)
    for path, extra in ((ingress, ingress_props), (egress, egress_extra)):
        with open(path) as f:
            text = f.read().replace('node_name = "test-', f'node_name = "{name}test-')
        if path == egress:
            text = text.replace('topic_prefix = "low."', 'topic_prefix = "low."\n' + extra)
        else:
            text += extra
        with open(path, "w") as f:
            f.write(text)
    return ingress, egress


def _check_exactly_once(sent: dict, got: dict, egresses) -> tuple[set, set]:
    """Every source record delivered once, or inside a range some egress reported; no
    reported range holds a delivered record. Returns (delivered, lost) seqs."""
    seqs = [_seq(r) for r in got.values()]
    assert len(seqs) == len(set(seqs)), \
        f"{len(seqs) - len(set(seqs))} duplicates downstream"
    delivered = set(seqs)
    by_offset = {(p, o): _seq(r) for (_t, p, o), r in sent.items()}
    lost = set()
    for eg in egresses:
        for ev in eg.events("records_lost"):
            first = ev["first_offset"] if ev["first_offset"] is not None else 0  # "?-N"
            lost |= {by_offset[(ev["partition"], o)]
                     for o in range(first, ev["last_offset"] + 1)
                     if (ev["partition"], o) in by_offset}
    assert not lost & delivered, f"reported lost but delivered: {sorted(lost & delivered)}"
    missing = {_seq(r) for r in sent.values()} - delivered - lost
    assert not missing, f"lost silently: {sorted(missing)}"
    return delivered, lost


def _positions(conf: dict, topic: str = "ddc-positions") -> dict[tuple[str, int], tuple]:
    """What the positions topic holds (read_committed; the format docs/delivery.md
    gives): (topic, partition) -> (offset, owner), the highest offset per key."""
    out: dict = {}
    for (_t, _p, _o), (key, value, _h, _ts) in sorted(read_all(conf, topic).items()):
        _channel, t, p = json.loads(key)
        if value is not None:
            body = json.loads(value)
            if body["offset"] >= out.get((t, p), (-1,))[0]:
                out[(t, p)] = (body["offset"], body["owner"])
    return out


def _stop_all(*daemons) -> None:
    """SIGTERM each, all of them even when one had to be killed (Daemon.stop then
    fails); the first such failure is raised at the end."""
    failed = None
    for d in daemons:
        if d is None:
            continue
        try:
            d.stop()
        except AssertionError as exc:
            failed = failed or exc
    if failed is not None:
        raise failed


def _status(tmp, role="egress") -> dict:
    try:
        return json.loads((tmp / f"{role}-state" / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def test_egress_kill9_with_its_state_wiped_delivers_nothing_twice(tmp_path, kafka_pair,
                                                                   kafka_topic):
    """The egress is killed and its state directory removed, and the ingress starts
    again from offset 0 (restored from an older state): the positions come back from
    the destination cluster, so nothing is delivered twice and nothing is lost."""
    kafka_pair.high.create_topic(kafka_topic, partitions=PARTS)
    kafka_pair.low.create_topic("low." + kafka_topic, partitions=PARTS)
    high, low = kafka_pair.high.client_config(), kafka_pair.low.client_config()
    sent = produce(high, kafka_topic, PARTS, 300)
    key = write_key(tmp_path / "link.key")
    ingress_cfg, egress_cfg = _configs(tmp_path, kafka_pair, kafka_topic, key, free_udp_port())
    egress = Daemon(egress_cfg)
    egress.wait_event("started", 30)
    ingress = Daemon(ingress_cfg)
    ingress.wait_event("started")
    try:
        assert wait_for(lambda: len(read_all(low, "low." + kafka_topic, 5)) >= 300, 60)
        egress.stop(signal.SIGKILL)
        shutil.rmtree(tmp_path / "egress-state")
        ingress.stop()
        admin = AdminClient(high)
        admin.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(
            "ddc-test", [TopicPartition(kafka_topic, p, 0) for p in range(PARTS)])]
        )["ddc-test"].result(30)
        egress = Daemon(egress_cfg)
        egress.wait_event("started", 30)
        ingress = Daemon(ingress_cfg)
        ingress.wait_event("started")
        sent |= produce(high, kafka_topic, PARTS, 60, start=300)
        # (the decoder drops the repeats at or below the positions read at start)
        assert wait_for(lambda: len(read_all(low, "low." + kafka_topic, 5)) >= 360 and
                        _status(tmp_path).get("duplicates", 0) >= 300, 90)
    finally:
        _stop_all(ingress, egress)
    delivered, lost = _check_exactly_once(sent, read_all(low, "low." + kafka_topic), [egress])
    assert lost == set() and len(delivered) == 360


class _Logged:
    """The records_lost events an earlier run of a daemon logged."""

    def __init__(self, lost: list[dict]):
        self.lost = lost

    def events(self, name: str) -> list[dict]:
        assert name == "records_lost"
        return self.lost


@pytest.mark.parametrize("wipe", [False, True], ids=["kill9", "kill9-and-state-wiped"])
def test_egress_kill9_within_the_takeover_grace_still_reports_the_gap(tmp_path, kafka_pair,
                                                                     kafka_topic, wipe):
    """The link loses a run of records; the transactional sink holds that loss for its
    takeover grace (another pair may have delivered it) while it commits the records
    after the gap. The egress is killed within the grace (and its state directory
    removed): the restarted one resumes past the gap, so only the pending losses the
    position records carry can still report it. Found by the 200-fault Kafka chaos run
    (281 silent losses)."""
    kafka_pair.high.create_topic(kafka_topic, partitions=PARTS)
    kafka_pair.low.create_topic("low." + kafka_topic, partitions=PARTS)
    high, low = kafka_pair.high.client_config(), kafka_pair.low.client_config()
    egress_port = free_udp_port()
    relay = LossyRelay(("127.0.0.1", 0), ("127.0.0.1", egress_port), LossModel(seed=1)).start()
    key = write_key(tmp_path / "link.key")
    ingress_cfg, egress_cfg = _configs(tmp_path, kafka_pair, kafka_topic, key, egress_port,
                                       peer=relay.address[1],
                                       egress_extra="takeover_grace_ms = 20000\n")
    ingress = egress = None
    try:
        egress = Daemon(egress_cfg)
        egress.wait_event("started", 30)
        ingress = Daemon(ingress_cfg)
        ingress.wait_event("started")
        sent = produce(high, kafka_topic, PARTS, 150)
        assert wait_for(lambda: len(read_all(low, "low." + kafka_topic, 5)) >= 150, 60)
        relay.model.set(loss=1.0)  # the link loses everything for a while
        sent |= produce(high, kafka_topic, PARTS, 60, start=150)
        assert wait_for(lambda: _status(tmp_path, "ingress").get("records_sent", 0) >= 210, 30)
        time.sleep(1.0)  # (the link's last datagrams of those records too)
        relay.model.set()
        sent |= produce(high, kafka_topic, PARTS, 60, start=210)
        # The records after the gap are committed, the gap not reported yet (grace).
        assert wait_for(lambda: len(read_all(low, "low." + kafka_topic, 5)) >= 210, 60)
        assert not egress.events("records_lost"), "the grace should hold the report"
        egress.stop(signal.SIGKILL)
        if wipe:
            shutil.rmtree(tmp_path / "egress-state")
        egress = Daemon(egress_cfg)
        egress.wait_event("started", 30)
        sent |= produce(high, kafka_topic, PARTS, 30, start=270)
        assert wait_for(lambda: len(read_all(low, "low." + kafka_topic, 5)) >= 240 and
                        len(egress.events("records_lost")) > 0, 60)
        reported = egress.events("records_lost")  # (the next run writes the same log)
        # Reported once: the position records no longer hold it as pending, so a third
        # run (killed again, no records meanwhile) does not report it once more.
        time.sleep(1.0)
        egress.stop(signal.SIGKILL)
        egress = Daemon(egress_cfg)
        egress.wait_event("started", 30)
        time.sleep(5.0)
        again = egress.events("records_lost")
    finally:
        _stop_all(ingress, egress)
        relay.stop()
    delivered, lost = _check_exactly_once(sent, read_all(low, "low." + kafka_topic),
                                          [_Logged(reported)])
    assert lost, "the link lost records: they must be reported"
    assert again == [], f"reported again by the next run: {again}"


class _Tee:
    """Copies every datagram to several ports (two egresses on one diode's receiving
    network, e.g. a replacement box started while the old one still runs)."""

    def __init__(self, targets: list[int]):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        big_receive_buffer(self.sock)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.targets = targets
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            for port in self.targets:
                out.sendto(data, ("127.0.0.1", port))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def test_a_second_egress_with_the_same_transactional_id_fences_the_first(
        tmp_path, kafka_pair, kafka_topic):
    kafka_pair.high.create_topic(kafka_topic, partitions=PARTS)
    kafka_pair.low.create_topic("low." + kafka_topic, partitions=PARTS)
    high, low = kafka_pair.high.client_config(), kafka_pair.low.client_config()
    key = write_key(tmp_path / "link.key")
    port1, port2 = free_udp_port(), free_udp_port()
    tee = _Tee([port1, port2])
    same = 'transactional_id = "ddc-site-pair-1"'
    paced = "rate_mbit = 100"  # what a Python tee forwards without dropping
    ingress_cfg, egress1_cfg = _configs(tmp_path / "one", kafka_pair, kafka_topic, key, port1,
                                        tee.port, "one-", same, link=paced)
    _, egress2_cfg = _configs(tmp_path / "two", kafka_pair, kafka_topic, key, port2,
                              tee.port, "two-", same, link=paced)
    sent = produce(high, kafka_topic, PARTS, 150)
    egress1 = Daemon(egress1_cfg)
    egress1.wait_event("started", 30)
    ingress = Daemon(ingress_cfg)
    ingress.wait_event("started")
    egress2 = None
    try:
        assert wait_for(lambda: len(read_all(low, "low." + kafka_topic, 5)) >= 150, 60)
        stop_load = threading.Event()

        def load(start=150):  # records keep coming while the second egress starts
            while not stop_load.is_set() and start < 600:
                sent.update(produce(high, kafka_topic, PARTS, 15, start=start))
                start += 15
                time.sleep(0.05)
        loader = threading.Thread(target=load)
        loader.start()
        time.sleep(1)
        egress2 = Daemon(egress2_cfg)
        egress2.wait_event("started", 30)
        fenced = egress1.wait_event("producer_fenced", 30)
        assert egress1.proc.wait(10) == EXIT_FENCED
        assert "fenced" in fenced["msg"] and "ddc-site-pair-1" in fenced["msg"]
        stop_load.set()
        loader.join()
        assert wait_for(lambda: any(_seq(r) == max(_seq(s) for s in sent.values()) for r in
                                    read_all(low, "low." + kafka_topic, 5).values()), 60)
        assert egress2.proc.poll() is None
    finally:
        _stop_all(ingress, egress1, egress2)
        tee.stop()
    assert not egress1.events("thread_died")
    _check_exactly_once(sent, read_all(low, "low." + kafka_topic), [egress1, egress2])


def test_destination_restart_mid_transaction_commits_or_aborts_whole(tmp_path, kafka_pair,
                                                                      kafka_topic):
    """The destination broker (also the transaction coordinator) restarts under load:
    each transaction commits or aborts whole, aborted records are produced again, and
    the positions topic agrees with the records (read_committed)."""
    kafka_pair.high.create_topic(kafka_topic, partitions=PARTS)
    kafka_pair.low.create_topic("low." + kafka_topic, partitions=PARTS)
    high, low = kafka_pair.high.client_config(), kafka_pair.low.client_config()
    key = write_key(tmp_path / "link.key")
    ingress_cfg, egress_cfg = _configs(tmp_path, kafka_pair, kafka_topic, key, free_udp_port())
    egress = Daemon(egress_cfg)
    egress.wait_event("started", 30)
    ingress = Daemon(ingress_cfg)
    ingress.wait_event("started")
    sent: dict = {}
    stop_load = threading.Event()

    def load(start=0):
        while not stop_load.is_set():
            sent.update(produce(high, kafka_topic, PARTS, 15, start=start))
            start += 15
            time.sleep(0.05)
    loader = threading.Thread(target=load)
    loader.start()
    try:
        assert wait_for(lambda: len(read_all(low, "low." + kafka_topic, 5)) >= 100, 60)
        kafka_pair.low.restart()
        time.sleep(2)
        stop_load.set()
        loader.join()
        last = max(_seq(r) for r in sent.values())
        assert wait_for(lambda: any(_seq(r) == last for r in
                                    read_all(low, "low." + kafka_topic, 5).values()), 90)
        assert egress.proc.poll() is None
        tx = _status(tmp_path)["channels"]["test"]["transactions"]
    finally:
        stop_load.set()
        _stop_all(ingress, egress)
    got = read_all(low, "low." + kafka_topic)
    delivered, lost = _check_exactly_once(sent, got, [egress])
    assert tx["committed"] > 0 and not tx["fenced"]
    # one transaction: the committed position of each partition is its last record
    top = {}
    for (_t, p, o), r in sent.items():
        if _seq(r) in delivered | lost:
            top[p] = max(top.get(p, -1), o)
    positions = _positions(low)
    assert {p: off for (t, p), (off, _owner) in positions.items() if t == kafka_topic} == top


def test_n_diode_pairs_share_one_consumer_group(tmp_path, kafka_pair, kafka_topic):
    """Three pairs (ingress + egress each, one consumer group) over a 12-partition topic
    under continuous load; kill -9 one ingress, then one egress (restarted), then add a
    fourth pair: every record is in the destination exactly once, or inside a range an
    egress reported, and no reported range holds a delivered record."""
    parts = 12
    kafka_pair.high.create_topic(kafka_topic, partitions=parts)
    kafka_pair.low.create_topic("low." + kafka_topic, partitions=parts)
    high, low = kafka_pair.high.client_config(), kafka_pair.low.client_config()
    key = write_key(tmp_path / "link.key")
    # a killed ingress leaves the group within 6 s, not the default 45
    props = ('"session.timeout.ms" = 6000\n"heartbeat.interval.ms" = 500\n')
    pairs = []

    def start_pair(i: int) -> tuple[Daemon, Daemon]:
        ingress_cfg, egress_cfg = _configs(tmp_path / f"pair{i}", kafka_pair, kafka_topic,
                                           key, free_udp_port(), name=f"pair{i}-",
                                           ingress_props=props)
        egress = Daemon(egress_cfg)
        egress.wait_event("started", 30)
        ingress = Daemon(ingress_cfg)
        ingress.wait_event("started")
        pairs.append([ingress, egress, egress_cfg])
        return ingress, egress

    sent: dict = {}
    stop_load = threading.Event()

    def load(start=0):
        while not stop_load.is_set():
            sent.update(produce(high, kafka_topic, parts, 24, start=start))
            start += 24
            time.sleep(0.05)
    loader = threading.Thread(target=load)
    gone = []
    try:
        for i in range(3):
            start_pair(i)
        loader.start()
        assert wait_for(lambda: len(read_all(low, "low." + kafka_topic, 5)) >= 300, 60)
        pairs[0][0].stop(signal.SIGKILL)  # its partitions move to the others
        time.sleep(8)
        pairs[1][1].stop(signal.SIGKILL)  # records on its link meanwhile: reported lost
        gone.append(pairs[1][1])
        time.sleep(1)
        again = pairs[1][2].replace(".toml", "-again.toml")  # a log file of its own
        shutil.copy(pairs[1][2], again)
        pairs[1][1] = Daemon(again)
        pairs[1][1].wait_event("started", 30)
        time.sleep(3)
        start_pair(3)
        time.sleep(8)
        stop_load.set()
        loader.join()
        last = max(_seq(r) for r in sent.values())
        assert wait_for(lambda: any(_seq(r) == last for r in
                                    read_all(low, "low." + kafka_topic, 5).values()), 60)
        owners = {owner for (t, _p), (_o, owner) in _positions(low).items() if t == kafka_topic}
        assert "pair3-test-egress" in owners, "the fourth pair took no partition"
    finally:
        stop_load.set()
        if loader.is_alive():
            loader.join()
        _stop_all(*[d for ingress, egress, _ in pairs for d in (ingress, egress)])
    _check_exactly_once(sent, read_all(low, "low." + kafka_topic),
                        [egress for _i, egress, _c in pairs] + gone)
