"""End to end over loopback: real `ddc run` daemons, real UDP, a user-space lossy relay."""

from __future__ import annotations

import time

import pytest

from appliance.observe.status import read_status
from appliance.protocol import wire
from appliance.tools.relay import LossModel, LossyRelay

from .daemons import (
    Collector,
    Daemon,
    free_udp_port,
    node_config,
    payloads,
    running_pair,
    send_paced,
    write_key,
)

pytestmark = pytest.mark.slow


def _pair(tmp_path, loss: LossModel, link_extra: str = ""):
    key = write_key(tmp_path / "link.key")
    collector = Collector()
    egress_port = free_udp_port()
    egress_cfg = node_config("egress", tmp_path, key, f'bind = "127.0.0.1:{egress_port}"\n'
                             + link_extra, "udp", f'target = "127.0.0.1:{collector.port}"')
    relay = LossyRelay(("127.0.0.1", 0), ("127.0.0.1", egress_port), loss).start()
    source_port = free_udp_port()
    ingress_cfg = node_config("ingress", tmp_path, key,
                              f'peer = "127.0.0.1:{relay.address[1]}"\n' + link_extra,
                              "udp", f'listen = "127.0.0.1:{source_port}"')
    egress = Daemon(egress_cfg)
    egress.wait_event("started")
    ingress = Daemon(ingress_cfg)
    ingress.wait_event("started")
    return egress, ingress, relay, collector, source_port


def _lost_offsets(egress: Daemon) -> list[int]:
    out = []
    for ev in egress.events("records_lost"):
        out += range(ev["first_offset"], ev["last_offset"] + 1)
    return out


def test_random_loss_within_fec_budget_delivers_everything(tmp_path):
    """5% random loss, 12% redundancy: every record arrives byte-identical.

    Blocks of 227 data + 28 repair symbols fail at 5% random loss with probability
    about 3e-5 each (binomial tail, docs/protocol.md), so over the ~30 blocks here a
    failure is a real bug, not bad luck.
    """
    link = "fec_redundancy_percent = 12\nblock_symbols = 227\ninterleave_depth = 4"
    egress, ingress, relay, collector, port = _pair(
        tmp_path, LossModel(loss=0.05, seed=11), link)
    try:
        items = payloads(1000)
        send_paced(port, items)
        got = collector.drain(len(items), timeout=20)
    finally:
        ingress.stop()
        egress.stop()
        relay.stop()
    assert relay.dropped > 0.03 * (relay.dropped + relay.forwarded)  # the link really lost
    assert got == items
    assert egress.events("records_lost") == []


def test_loss_beyond_budget_is_reported_exactly(tmp_path):
    """Bursts and 20% loss beat the FEC: each missing record is reported, none extra."""
    egress, ingress, relay, collector, port = _pair(
        tmp_path, LossModel(loss=0.2, burst_start=0.01, burst_length=30, seed=5),
        "fec_redundancy_percent = 10")
    try:
        items = payloads(1500, seed=3)
        send_paced(port, items)
        # The egress names the tail loss once a heartbeat gets through, and a burst of
        # 30 lost datagrams at the end is 30 heartbeats (6 s at 0.2 s): wait until every
        # record is delivered or reported, up to 20 s, then a last look for stragglers.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            got = collector.drain(len(items), timeout=0.5)
            if len(got) + len(_lost_offsets(egress)) >= len(items):
                break
        time.sleep(0.5)
        got = collector.drain(len(items), timeout=0.5)
    finally:
        ingress.stop()
        egress.stop()
        relay.stop()
    for seq, body in got.items():
        assert body == items[seq]
    missing = set(items) - set(got)
    lost = _lost_offsets(egress)
    assert missing, "the link was meant to lose more than FEC can repair"
    assert sorted(lost) == sorted(missing)  # exact: no silent loss, no false report
    counts = sum(ev["count"] for ev in egress.events("records_lost"))
    assert counts == len(missing)


def test_ingress_restart_starts_new_session_without_false_loss(tmp_path):
    egress, ingress, relay, collector, port = _pair(tmp_path, LossModel(seed=1))
    try:
        first = payloads(200, seed=1)
        send_paced(port, first)
        assert len(collector.drain(200, timeout=10)) == 200
        ingress.stop(9)  # kill -9
        ingress = Daemon(str(tmp_path / "ingress.toml"))  # same config, new session
        ingress.wait_event("started")
        second = {k: k.to_bytes(8, "big") + b"x" * 100 for k in range(201, 301)}
        send_paced(port, second)
        got = collector.drain(300, timeout=10)
        time.sleep(0.6)
    finally:
        ingress.stop()
        egress.stop()
        relay.stop()
    assert len(got) == 300
    sessions = egress.events("session_started")
    assert len(sessions) == 2 and sessions[1]["previous"] == sessions[0]["session"]
    assert egress.events("records_lost") == []


def test_forged_datagrams_are_dropped_and_counted(tmp_path):
    import json
    import socket

    egress, ingress, relay, collector, port = _pair(tmp_path, LossModel(seed=1))
    try:
        send_paced(port, payloads(50))
        assert len(collector.drain(50, timeout=10)) == 50
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            egress_port = relay.target[1]
            for i in range(200):
                s.sendto(wire.MAGIC + bytes([wire.VERSION, wire.TYPE_DATA | wire.FLAG_ENCRYPTED])
                         + bytes(60) + i.to_bytes(4, "big"), ("127.0.0.1", egress_port))
                s.sendto(b"garbage" * i, ("127.0.0.1", egress_port))
        time.sleep(0.6)
        status = json.loads((tmp_path / "egress-state" / "status.json").read_text())
    finally:
        ingress.stop()
        egress.stop()
        relay.stop()
    assert status["dropped"]["auth"] >= 200
    assert status["dropped"]["malformed"] >= 199
    assert status["records_delivered"] == 50
    assert egress.proc.returncode == 0


def test_rate_records_bounds_the_records_per_second(tmp_path):
    """link.rate_records paces the ingress by records as well as bytes: an unpaced
    generator of small records, whose bytes are far below rate_mbit, is held to
    rate_records at the egress, and nothing is lost. (An upper bound on what pacing lets
    through: a slow machine only moves fewer.)"""
    rate = 3000
    key = write_key(tmp_path / "link.key")
    port = free_udp_port()
    link = f"rate_mbit = 1000\nrate_records = {rate}\n"
    egress_cfg = node_config("egress", tmp_path, key, f'bind = "127.0.0.1:{port}"\n{link}',
                             "null", "size = 100\nverify = true")
    ingress_cfg = node_config("ingress", tmp_path, key, f'peer = "127.0.0.1:{port}"\n{link}',
                              "generator", "size = 100")
    status = tmp_path / "egress-state" / "status.json"
    with running_pair(egress_cfg, ingress_cfg):
        time.sleep(1.5)  # past the first burst
        first = read_status(status)
        time.sleep(3.0)
        last = read_status(status)
    window = last["updated"] - first["updated"]
    moved = last["records_delivered"] - first["records_delivered"]
    assert window > 2.0
    # the bucket's burst (256 records, or 20 ms at the rate) and one status interval of
    # jitter at each end are all that may exceed the rate
    assert 0 < moved <= rate * (window + 0.4) + 256, (moved, window)
    assert last["records_lost"] == 0
