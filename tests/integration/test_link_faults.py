"""Faults around the link, with real `ddc run` daemons (issue 12 items 5, 6 and 8): torn
state files, an ingress whose clock is behind, a pair set up differently, records of a
channel the egress does not know."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from appliance.protocol import wire

from .daemons import Collector, Daemon, free_udp_port, node_config, payloads, send_paced, write_key

pytestmark = pytest.mark.slow


@pytest.fixture
def pair(tmp_path):
    """start(ingress_link=, egress_link=, ingress_channel_id=) -> (egress, ingress, ...)."""
    started: list[Daemon] = []

    def start(ingress_link: str = "", egress_link: str = "", ingress_channel_id: int = 1,
              before=None):
        key = write_key(tmp_path / "link.key")
        collector = Collector()
        egress_port = free_udp_port()
        egress_cfg = node_config("egress", tmp_path, key,
                                 f'bind = "127.0.0.1:{egress_port}"\n{egress_link}', "udp",
                                 f'target = "127.0.0.1:{collector.port}"')
        source_port = free_udp_port()
        ingress_cfg = node_config("ingress", tmp_path, key,
                                  f'peer = "127.0.0.1:{egress_port}"\n{ingress_link}', "udp",
                                  f'listen = "127.0.0.1:{source_port}"')
        if ingress_channel_id != 1:
            path = Path(ingress_cfg)
            text = path.read_text()
            path.write_text(text.replace("\nid = 1\n", f"\nid = {ingress_channel_id}\n"))
        if before:
            before(tmp_path)
        daemons = []
        for cfg in (egress_cfg, ingress_cfg):
            d = Daemon(cfg)
            started.append(d)
            daemons.append(d)
            d.wait_event("started")
        return daemons[0], daemons[1], collector, source_port, egress_port, egress_cfg

    yield start
    for d in started:
        d.stop()


def test_torn_and_corrupt_state_files_do_not_block_start(pair):
    """Each file is moved aside with one line naming it and what the daemon does instead;
    the link works."""
    def tear(tmp):
        for role, name, text in (("egress", "session.json", '{"format": 2, "floor_ep'),
                                 ("egress", "positions.json", '{"streams": [[1, "t", 0'),
                                 ("ingress", "session.json", "\x00\x00\x00")):
            os.makedirs(tmp / f"{role}-state", exist_ok=True)
            (tmp / f"{role}-state" / name).write_text(text)

    egress, ingress, collector, port, _, _ = pair(before=tear)
    items = payloads(50, seed=2)
    send_paced(port, items)
    assert collector.drain(50, timeout=15) == items
    lines = egress.events("state_file_corrupt") + ingress.events("state_file_corrupt")
    assert sorted(os.path.basename(ev["path"]) for ev in lines) == \
        ["positions.json", "session.json", "session.json"]
    for ev in lines:
        assert ev["path"] in ev["msg"] and os.path.exists(ev["moved_to"])
    assert "resume point of every durable stream is reported as unknown" in \
        [ev for ev in lines if ev["path"].endswith("positions.json")][0]["msg"]


def test_an_ingress_whose_clock_is_behind_is_named_and_accepted_on_request(pair, tmp_path):
    """The ingress lost its state and its clock is an hour behind the session the egress
    was in: refused (a replay looks the same), but named, and `ddc accept-session` lets
    exactly that session in."""
    hour_ahead = int((time.time() + 3600) * 1000)

    def egress_was_ahead(tmp):
        os.makedirs(tmp / "egress-state", exist_ok=True)  # a protocol v1 file, as upgraded
        (tmp / "egress-state" / "session.json").write_text(
            json.dumps({"session": hour_ahead << 16}))

    egress, ingress, collector, port, _, egress_cfg = pair(before=egress_was_ahead)
    session = ingress.wait_event("session_started")["session"]
    send_paced(port, payloads(20))
    refused = egress.wait_event("session_refused")
    assert refused["session"] == session and "ddc accept-session" in refused["msg"]
    assert collector.drain(20, timeout=1) == {}
    out = subprocess.run([sys.executable, "-m", "appliance.cli", "accept-session", "--config",
                          egress_cfg, session], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    egress.wait_event("session_accepted", timeout=15)
    items = {k: k.to_bytes(8, "big") + b"late" for k in range(21, 41)}
    send_paced(port, items)
    assert collector.drain(40, timeout=15).keys() >= items.keys()
    assert not os.path.exists(tmp_path / "egress-state" / "accept-session.json")


def test_a_pair_in_different_modes_is_named_and_nothing_crosses(pair):
    """An egress set to encrypt takes no cleartext datagrams (the ingress authenticates
    only), and says so once; a datagram of another protocol version is named too."""
    egress, ingress, collector, port, egress_port, _ = pair(ingress_link='mode = "authenticate"')
    send_paced(port, payloads(20))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(bytes([0xDD, 0xC1, 1, 0x81]) + bytes(100), ("127.0.0.1", egress_port))
    mode = egress.wait_event("peer_mismatch")
    assert (mode["what"], mode["ours"], mode["theirs"]) == ("mode", "encrypt", "authenticate")
    deadline = time.monotonic() + 10
    while len(egress.events("peer_mismatch")) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    version = egress.events("peer_mismatch")[1]
    theirs = (version["what"], version["ours"], version["theirs"])
    assert theirs == ("version", str(wire.VERSION), "1")
    assert "protocol version 1" in version["msg"]
    assert collector.drain(20, timeout=1) == {}


def test_records_of_a_channel_the_egress_does_not_know_are_reported_by_range(pair):
    egress, ingress, collector, port, _, _ = pair(ingress_channel_id=7)
    send_paced(port, payloads(30))
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        lost = egress.events("records_lost")
        if sum(ev["count"] for ev in lost) >= 30:
            break
        time.sleep(0.1)
    assert {(ev["channel_id"], ev["reason"]) for ev in lost} == {(7, "unrouted")}
    covered = sorted(o for ev in lost for o in range(ev["first_offset"], ev["last_offset"] + 1))
    assert covered == list(range(1, 31))
    assert egress.events("unrouted_channel")

