"""Helpers to run real `ddc run` daemons in tests and read their JSON log lines."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time

from appliance.node import write_key_file
from appliance.tools import scratch

# Collector, big_receive_buffer, free_udp_port: the tests import them from here, beside
# the daemons they serve.
from appliance.tools.scratch import Collector as Collector
from appliance.tools.scratch import big_receive_buffer as big_receive_buffer
from appliance.tools.scratch import free_udp_port as free_udp_port
from appliance.tools.scratch import write_config


def write_key(path) -> str:
    write_key_file(path)
    return str(path)


def node_config(role: str, tmp, key: str, link: str, channel_type: str, channel: str,
                extra: str = "", channel_extra: str = "") -> str:
    """The test node's config file tmp/<role>.toml (fast heartbeats and metrics); its path.
    channel_extra: keys of the [[channel]] table itself (e.g. filter_default)."""
    text = scratch.node_config(role, key, f"heartbeat_interval = 0.2\n{link}", channel_type,
                               channel, name=f"test-{role}", state_dir=f"{tmp}/{role}-state",
                               metrics="interval = 0.2", extra=extra,
                               channel_extra=channel_extra)
    return write_config(os.path.join(str(tmp), f"{role}.toml"), text)


STOP_GRACE = 10.0  # seconds a daemon has to exit after a signal before it is SIGKILLed

_running: list[Daemon] = []  # started and not yet stopped: stop_leftover_daemons()


def stop_leftover_daemons() -> None:
    """Stop every daemon a test started and did not stop (it failed, or timed out,
    before its own `finally`): SIGTERM, SIGKILL after STOP_GRACE. tests/conftest.py
    calls it after every test."""
    while _running:
        daemon = _running[-1]
        try:
            daemon.stop()
        except AssertionError:
            pass  # it needed SIGKILL; the test that leaked it has failed already


class Daemon:
    """A `ddc run` subprocess whose JSON log lines (stderr) are collected. It is in
    _running until stop() (which always ends it, SIGKILL after a grace period)."""

    def __init__(self, config: str, prefix: list[str] | None = None):
        self.log_path = config + ".log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            (prefix or []) + [sys.executable, "-m", "appliance.cli", "run", "--config", config,
                              "--log-stderr"],
            stdout=subprocess.DEVNULL, stderr=self._log,
            env=os.environ | {"PYTHONPATH": os.getcwd()})
        _running.append(self)

    def events(self, name: str | None = None) -> list[dict]:
        out = []
        with open(self.log_path, "rb") as f:
            for line in f:
                try:
                    ev = json.loads(line)
                except ValueError:
                    continue
                if name is None or ev.get("event") == name:
                    out.append(ev)
        return out

    def wait_event(self, name: str, timeout: float = 10) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            evs = self.events(name)
            if evs:
                return evs[0]
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        with open(self.log_path) as f:
            raise AssertionError(f"no {name!r} event; log:\n" + f.read()[-3000:])

    def stop(self, sig=signal.SIGTERM, grace: float = STOP_GRACE) -> int:
        """Send sig and wait for the exit code. A daemon still running `grace` seconds
        later is SIGKILLed, and the call fails: a daemon must end on SIGTERM."""
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(sig)
            try:
                return self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"{self.log_path[:-4]}: no exit {grace:.0f} s after "
                                     f"signal {sig}; killed with SIGKILL") from None
        finally:
            self._log.close()
            if self in _running:
                _running.remove(self)


@contextlib.contextmanager
def running_pair(egress_cfg: str, ingress_cfg: str):
    """An egress, then an ingress, each up once it logged "started"; both stopped on the
    way out, also when the test fails."""
    egress = Daemon(egress_cfg)
    ingress = None
    try:
        egress.wait_event("started")
        ingress = Daemon(ingress_cfg)
        ingress.wait_event("started")
        yield egress, ingress
    finally:
        if ingress is not None:
            ingress.stop()
        egress.stop()


def payloads(n: int, seed: int = 7) -> dict[int, bytes]:
    import random

    rng = random.Random(seed)
    sizes = [16, 300, 1400, 3000, 9000, 40000]
    return {i: i.to_bytes(8, "big") + rng.randbytes(rng.choice(sizes)) for i in range(1, n + 1)}


def send_paced(port: int, items: dict[int, bytes], host: str = "127.0.0.1",
               per_batch: int = 40, pause: float = 0.01) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i, (_, body) in enumerate(sorted(items.items()), 1):
            s.sendto(body, (host, port))
            if i % per_batch == 0:
                time.sleep(pause)
