"""An egress restarted in the middle of a session (issue 12 item 1), real daemons on loopback.

The promise (docs/reliability.md): after SIGTERM the restarted egress resumes exactly;
after kill -9 nothing is delivered twice and nothing delivered is reported lost: records
it cannot tell were delivered are reported by range as "in_doubt", everything else that
did not arrive as lost. Captured datagrams of the session replayed after the restart are
refused either way.
"""

from __future__ import annotations

import collections
import shutil
import signal
import socket
import threading
import time

import pytest

from appliance.tools.relay import LossModel, LossyRelay

from .daemons import (
    Daemon,
    big_receive_buffer,
    free_udp_port,
    node_config,
    payloads,
    send_paced,
    write_key,
)

pytestmark = pytest.mark.slow


class CapturingRelay(LossyRelay):
    """A lossless relay that keeps a copy of every datagram: a replay attacker's capture."""

    def __init__(self, target):
        super().__init__(("127.0.0.1", 0), target, LossModel(seed=1))
        self.captured: list[bytes] = []

    def _send(self, data: bytes) -> None:
        self.captured.append(data)
        super()._send(data)


class CountingCollector:
    """The UDP sink's target, counting every copy of every record (duplicates too)."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        big_receive_buffer(self.sock)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.copies: collections.Counter[int] = collections.Counter()
        self.bodies: dict[int, bytes] = {}

    def drain(self, want: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.copies) < want and time.monotonic() < deadline:
            self._recv()
        end = time.monotonic() + 0.5  # and whatever (duplicates) follows
        while time.monotonic() < end:
            self._recv()

    def _recv(self) -> None:
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return
        seq = int.from_bytes(data[:8], "big")
        self.copies[seq] += 1
        self.bodies[seq] = data


@pytest.fixture
def link(tmp_path):
    key = write_key(tmp_path / "link.key")
    collector = CountingCollector()
    egress_port = free_udp_port()
    egress_cfg = node_config("egress", tmp_path, key, f'bind = "127.0.0.1:{egress_port}"',
                             "udp", f'target = "127.0.0.1:{collector.port}"')
    relay = CapturingRelay(("127.0.0.1", egress_port)).start()
    source_port = free_udp_port()
    ingress_cfg = node_config("ingress", tmp_path, key, f'peer = "127.0.0.1:{relay.address[1]}"',
                              "udp", f'listen = "127.0.0.1:{source_port}"')
    daemons: list[Daemon] = []

    def start(cfg: str) -> Daemon:
        # Each run reads a copy of the same config: same state dir, a log file of its own.
        run = f"{cfg[:-5]}-run{len(daemons)}.toml"
        shutil.copyfile(cfg, run)
        d = Daemon(run)
        daemons.append(d)
        d.wait_event("started")
        return d

    egress = start(egress_cfg)
    start(ingress_cfg)
    yield start, egress_cfg, egress, relay, collector, source_port, daemons
    for d in reversed(daemons):
        d.stop(signal.SIGKILL if d.proc.poll() is None else signal.SIGTERM)
    relay.stop()
    collector.sock.close()


def _reports(daemons: list[Daemon]) -> list[dict]:
    return [ev for d in daemons if "egress" in d.log_path for ev in d.events("records_lost")]


def _offsets(reports: list[dict]) -> set[int]:
    out: set[int] = set()
    for ev in reports:
        out.update(range(ev["first_offset"], ev["last_offset"] + 1))
    return out


def _replay(relay: CapturingRelay, datagrams: list[bytes]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i, d in enumerate(datagrams):
            s.sendto(d, relay.target)
            if i % 50 == 49:
                time.sleep(0.005)


def test_sigterm_mid_session_resumes_exactly_and_refuses_replays(link):
    start, egress_cfg, egress, relay, collector, port, daemons = link
    first = payloads(200, seed=1)
    send_paced(port, first)
    collector.drain(200, timeout=15)
    assert len(collector.copies) == 200
    captured = list(relay.captured)
    assert egress.stop(signal.SIGTERM) == 0
    egress = start(egress_cfg)
    _replay(relay, captured)  # the whole session so far, once more
    second = {k: k.to_bytes(8, "big") + b"y" * 300 for k in range(201, 301)}
    send_paced(port, second)
    collector.drain(300, timeout=15)
    time.sleep(0.6)  # heartbeats: a tail check would report a false loss now
    assert sorted(collector.copies) == list(range(1, 301))
    assert set(collector.copies.values()) == {1}, "a record was delivered twice"
    assert all(collector.bodies[k] == v for k, v in (first | second).items())
    assert _reports(daemons) == []
    assert egress.events("blocks_lost") == []
    assert egress.events("session_started") == []  # the same session, taken up again
    assert egress.wait_event("session_resumed")["block_frontier"] > 0


def test_kill9_mid_session_delivers_nothing_twice_and_reports_by_range(link):
    """Under load: records sent while the egress is down are lost and reported; the ones
    the killed egress may have delivered are reported in doubt; none is a duplicate."""
    start, egress_cfg, egress, relay, collector, port, daemons = link
    items = payloads(3000, seed=9)
    sender = threading.Thread(target=send_paced, args=(port, items),
                              kwargs={"per_batch": 20, "pause": 0.01})
    sender.start()
    time.sleep(1.0)
    egress.stop(signal.SIGKILL)
    captured = list(relay.captured)
    time.sleep(0.3)  # the ingress keeps sending meanwhile: those records are lost
    egress = start(egress_cfg)
    sender.join()
    _replay(relay, captured)
    collector.drain(len(items), timeout=20)
    time.sleep(1.0)  # a heartbeat after the last block: the tail check
    assert set(collector.copies.values()) == {1}, "a record was delivered twice"
    delivered = set(collector.copies)
    reports = _reports(daemons)
    lost = _offsets([r for r in reports if r["reason"] != "in_doubt"])
    doubt = _offsets([r for r in reports if r["reason"] == "in_doubt"])
    assert lost, "records sent while the egress was down must be reported"
    assert not (lost & delivered), "a delivered record was reported lost"
    assert set(items) <= delivered | lost | doubt, "a record vanished silently"
    assert all(collector.bodies[k] == items[k] for k in delivered)
    assert egress.events("session_started") == []
    assert egress.events("session_resumed")


def test_kill9_when_idle_leaves_nothing_in_doubt(link):
    """Killed after the sinks confirmed everything: the frontier on disk says so."""
    start, egress_cfg, egress, relay, collector, port, daemons = link
    send_paced(port, payloads(300, seed=4))
    collector.drain(300, timeout=15)
    time.sleep(0.5)
    egress.stop(signal.SIGKILL)
    egress = start(egress_cfg)
    _replay(relay, list(relay.captured))
    later = {k: k.to_bytes(8, "big") + b"z" * 50 for k in range(301, 351)}
    send_paced(port, later)
    collector.drain(350, timeout=15)
    time.sleep(0.6)
    assert sorted(collector.copies) == list(range(1, 351))
    assert set(collector.copies.values()) == {1}
    assert _reports(daemons) == []
    assert egress.events("session_resumed")


def test_wiped_state_directory_reports_in_doubt_never_lost(link, tmp_path):
    """The egress's state directory is gone after a kill -9: it cannot know what an
    earlier run delivered, so it reports the records before the first one that arrives
    as in doubt, never as lost, and reports no blocks of the session lost."""
    start, egress_cfg, egress, relay, collector, port, daemons = link
    send_paced(port, payloads(200, seed=6))
    collector.drain(200, timeout=15)
    egress.stop(signal.SIGKILL)
    shutil.rmtree(tmp_path / "egress-state")
    egress = start(egress_cfg)
    later = {k: k.to_bytes(8, "big") + b"w" * 80 for k in range(201, 301)}
    send_paced(port, later)
    collector.drain(300, timeout=15)
    time.sleep(0.6)
    assert sorted(collector.copies) == list(range(1, 301))
    reports = egress.events("records_lost")
    assert not (_offsets([r for r in reports if r["reason"] != "in_doubt"])
                & set(collector.copies)), "a delivered record was reported lost"
    assert _offsets(reports) <= set(range(1, 201))
    assert egress.events("blocks_lost") == []
