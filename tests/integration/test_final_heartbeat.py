"""The ingress's last word at a stop: the final heartbeat, several times.

For a session the egress refuses (an ingress that lost its state, clock behind) the
egress reads only the heartbeats, so the records sent after the second-to-last one are
named by the last alone; one copy through a lossy link was lost in a 200-fault UDP
chaos run (63 records neither delivered nor reported)."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from appliance.ingress import FINAL_HEARTBEATS
from appliance.protocol.decoder import REFUSED_HEARTBEAT_GAP
from appliance.protocol.wire import TYPE_AT, TYPE_HEARTBEAT, TYPE_MASK

from .daemons import Collector, Daemon, free_udp_port, node_config, write_key

pytestmark = pytest.mark.slow


def test_sigterm_sends_the_final_heartbeat_several_times_apart(tmp_path):
    link = Collector().sock  # the diode's far end: it takes every datagram, answers none
    got: list[tuple[float, bytes]] = []
    done = threading.Event()

    def capture() -> None:
        while not done.is_set():
            try:
                datagram = link.recv(65536)
            except TimeoutError:
                continue
            got.append((time.monotonic(), datagram))  # when it came, not when recv began

    catcher = threading.Thread(target=capture, daemon=True)
    catcher.start()
    source_port = free_udp_port()
    key = write_key(tmp_path / "link.key")
    cfg = node_config("ingress", tmp_path, key, f'peer = "127.0.0.1:{link.getsockname()[1]}"',
                      "udp", f'listen = "127.0.0.1:{source_port}"')
    ingress = Daemon(cfg)
    try:
        ingress.wait_event("started")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for i in range(50):
                s.sendto(b"record %d" % i, ("127.0.0.1", source_port))
        time.sleep(0.5)
        stopped_at = time.monotonic()
        assert ingress.stop() == 0
        time.sleep(0.2)
    finally:
        ingress.stop()
        done.set()
        catcher.join(2)
        link.close()
    last = [t for t, d in got if t >= stopped_at and d[TYPE_AT] & TYPE_MASK == TYPE_HEARTBEAT]
    assert len(last) >= FINAL_HEARTBEATS, f"{len(last)} heartbeats after SIGTERM"
    tail = last[-FINAL_HEARTBEATS:]
    gaps = [b - a for a, b in zip(tail, tail[1:], strict=False)]
    assert min(gaps) > REFUSED_HEARTBEAT_GAP, f"copies too close for the egress: {gaps}"
