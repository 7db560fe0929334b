"""What a node's status file (and so `ddc status`) says after real traffic: the egress's
packet loss since start beside the last interval's, and the ingress's source drops."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

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


def _status(path, until, timeout=30.0) -> dict:
    deadline = time.monotonic() + timeout
    st: dict = {}
    while time.monotonic() < deadline:
        try:
            with open(path) as f:
                st = json.load(f)
        except (OSError, ValueError):
            st = {}
        if st and until(st):
            return st
        time.sleep(0.1)
    raise AssertionError(f"status never matched: {st}")


def _ddc_status(path) -> str:
    return subprocess.run([sys.executable, "-m", "appliance.cli", "status", "--file", str(path),
                           "--once"], capture_output=True, text=True, check=True,
                          env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"}).stdout


def test_egress_reports_loss_since_start_after_a_lossy_transfer(tmp_path):
    key = write_key(tmp_path / "link.key")
    collector = Collector()
    egress_port = free_udp_port()
    egress_cfg = node_config("egress", tmp_path, key, f'bind = "127.0.0.1:{egress_port}"',
                             "udp", f'target = "127.0.0.1:{collector.port}"')
    relay = LossyRelay(("127.0.0.1", 0), ("127.0.0.1", egress_port),
                       LossModel(loss=0.05, seed=3)).start()
    source_port = free_udp_port()
    ingress_cfg = node_config("ingress", tmp_path, key, f'peer = "127.0.0.1:{relay.address[1]}"',
                              "udp", f'listen = "127.0.0.1:{source_port}"')
    status_file = tmp_path / "egress-state" / "status.json"
    try:
        with running_pair(egress_cfg, ingress_cfg):
            send_paced(source_port, payloads(600))
            collector.drain(600, timeout=20)
            # Traffic over, heartbeats only: the last interval shows (almost) nothing lost.
            time.sleep(1.0)
            st = _status(status_file, lambda s: s.get("packet_loss_since_start", 0) > 0)
            share = relay.dropped / (relay.dropped + relay.forwarded)
    finally:
        relay.stop()
    assert share > 0.03
    assert abs(st["packet_loss_since_start"] - share) < 0.02, (st, share)
    shown = re.search(r"(\d+\.\d\d)% since start", _ddc_status(status_file))
    assert shown and abs(float(shown.group(1)) / 100 - share) < 0.02, shown


def test_ingress_status_shows_what_its_source_dropped(tmp_path):
    key = write_key(tmp_path / "link.key")
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # the link's far end, unread
    sink.bind(("127.0.0.1", 0))
    source_port = free_udp_port()
    cfg = node_config("ingress", tmp_path, key, f'peer = "127.0.0.1:{sink.getsockname()[1]}"',
                      "udp", f'listen = "127.0.0.1:{source_port}"',
                      extra="[tuning]\nsocket_buffer_bytes = 262144")  # a small listen buffer
    ingress = Daemon(cfg)
    try:
        ingress.wait_event("started")
        # A stopped daemon reads nothing: the listen socket's buffer overflows.
        ingress.proc.send_signal(signal.SIGSTOP)
        sent = 0
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for _ in range(3000):
                s.sendto(b"x" * 1000, ("127.0.0.1", source_port))
            sent = 3000
            ingress.proc.send_signal(signal.SIGCONT)
            # The kernel reports a socket's drops (SO_RXQ_OVFL) with the next datagram it
            # queues, not with those queued before the overflow: keep a trickle coming.
            status_file = tmp_path / "ingress-state" / "status.json"
            deadline = time.monotonic() + 30
            st: dict = {}
            while time.monotonic() < deadline:
                s.sendto(b"y" * 100, ("127.0.0.1", source_port))
                sent += 1
                time.sleep(0.2)
                try:
                    st = json.loads(status_file.read_text())
                except (OSError, ValueError):
                    continue
                if st.get("source_drops", {}).get("test", 0) > 0:
                    break
        # Everything sent was either read (records_sent) or dropped, and the status says so.
        st = _status(status_file, lambda s: s["source_drops"]["test"] + s["records_sent"] == sent)
        shown = _ddc_status(status_file)
    finally:
        ingress.proc.send_signal(signal.SIGCONT)
        ingress.stop()
        sink.close()
    drops = st["source_drops"]["test"]
    assert 0 < drops < 3000
    assert f"test {drops}" in shown
