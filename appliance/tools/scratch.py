"""Scratch nodes on loopback for the tools and the tests: free ports, link keys, configs.

The demo, the benchmark and tests/integration/daemons.py all build throw-away node
configs; this is their one generator, so a config key renamed in config.py is renamed
here once.
"""

from __future__ import annotations

import os
import socket
import time

from ..link.sockets import set_buffer
from ..node import write_key_file


def free_udp_port(host: str = "127.0.0.1") -> int:
    """A UDP port free on host just now (the kernel's pick; another process may take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def big_receive_buffer(sock: socket.socket, size: int = 64 * 1024 * 1024) -> None:
    """An egress's UDP sink re-emits a whole block's records at once: a socket taking them
    must hold the burst, past net.core.rmem_max (forced, as root; no warning if capped)."""
    set_buffer(sock, True, size, lambda *a, **k: None)


class Collector:
    """Receives datagrams on a UDP port (an egress's UDP sink target), keyed by their first
    8 bytes: the sequence number the demo and the tests put there."""

    def __init__(self, host: str = "127.0.0.1", timeout: float = 0.1):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        big_receive_buffer(self.sock)
        self.sock.bind((host, 0))
        self.sock.settimeout(timeout)
        self.port = self.sock.getsockname()[1]
        self.got: dict[int, bytes] = {}

    def receive(self) -> None:
        """Take one datagram, or return after the timeout."""
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return
        self.got[int.from_bytes(data[:8], "big")] = data

    def drain(self, want: int, timeout: float) -> dict[int, bytes]:
        deadline = time.monotonic() + timeout
        while len(self.got) < want and time.monotonic() < deadline:
            self.receive()
        return self.got


def link_key(directory: str | os.PathLike, name: str = "link.key") -> str:
    """A new random link key written to directory/name (mode 0600); its path."""
    path = os.path.join(str(directory), name)
    write_key_file(path)
    return path


def node_config(role: str, key: str, link: str, channel_type: str, channel: str, *,
                name: str, state_dir: str, metrics: str = "", extra: str = "",
                channel_name: str = "test", channel_extra: str = "") -> str:
    """A node config's text: one channel (id 1), no statsd, no syslog, no journald.

    link, metrics: lines of those tables (key_file comes from key); extra: top-level
    tables (e.g. [tuning]); channel_extra: keys of the [[channel]] table itself (e.g.
    filter_default); channel: the lines of its [channel.<type>] table, and any sub-tables
    after them."""
    return f"""role = "{role}"
node_name = "{name}"
state_dir = "{state_dir}"
status_file = "{state_dir}/status.json"
[link]
key_file = "{key}"
{link}
[metrics]
statsd = ""
{metrics}
[logging]
syslog = ""
journald = false
{extra}
[[channel]]
id = 1
name = "{channel_name}"
type = "{channel_type}"
{channel_extra}
[channel.{channel_type}]
{channel}
"""


def write_config(path: str | os.PathLike, text: str) -> str:
    """Write a config file (mode 0644: the daemons' user reads it); its path."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return str(path)
