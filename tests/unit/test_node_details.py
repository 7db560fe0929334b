"""Small things of issue 12 item 8: the ingress status under a busy link thread, and the
systemd unit's capabilities and comments against what the code and the sysctl file do."""

from __future__ import annotations

import re
import threading
from pathlib import Path

from appliance.config import load
from appliance.ingress import IngressNode
from appliance.protocol.heartbeat import StreamMark

from ..integration.daemons import free_udp_port, node_config, write_key

ROOT = Path(__file__).resolve().parents[2]
# The ddc role installs the unit (roles are self-contained: their files mirror target paths).
UNIT = ROOT / "ansible" / "roles" / "ddc" / "files" / "etc" / "systemd" / "system" / "ddc@.service"


class _InsertingNames(dict):
    """Channel names whose lookup lets the link thread add a stream meanwhile (what a
    thread switch in the middle of status() does on a busy ingress)."""

    def __init__(self, names, marks):
        super().__init__(names)
        self.marks = marks

    def __getitem__(self, key):
        n = len(self.marks)
        self.marks[(1, "t", n)] = StreamMark(1, "t", n, 0, 1)
        return super().__getitem__(key)


def test_ingress_status_while_the_link_thread_adds_streams(tmp_path):
    key = write_key(tmp_path / "link.key")
    cfg = load(node_config("ingress", tmp_path, key, f'peer = "127.0.0.1:{free_udp_port()}"',
                           "udp", f'listen = "127.0.0.1:{free_udp_port()}"'))
    node = IngressNode(cfg)
    try:
        marks = node.encoder.marks
        marks[(1, "t", 0)] = StreamMark(1, "t", 0, 5, 1)
        node.channel_names = _InsertingNames(node.channel_names, marks)
        status = node.status()  # RuntimeError: dictionary changed size during iteration
    finally:
        node.close()
    assert status["channels"] == {"test": {"last_offset": 5}}


def _setting(unit: str, name: str) -> list[str]:
    return [m.group(1).strip() for m in re.finditer(rf"^{name}=(.*)$", unit, re.M)]


def test_the_unit_grants_no_capability_the_sysctl_file_makes_unnecessary():
    """CAP_NET_ADMIN was for SO_RCVBUFFORCE past net.core.rmem_max; the sysctl file the
    role installs raises the maxima to the daemon's default buffer, so plain SO_RCVBUF is
    enough and the unit needs no capability at all."""
    unit = UNIT.read_text()
    sysctl_defaults = (ROOT / "ansible" / "roles" / "kernel_tuning" / "defaults"
                       / "main.yml").read_text()
    limits = dict(re.findall(r"^kernel_tuning_net_([rw]mem_max): (\d+)$", sysctl_defaults, re.M))
    default = 32 * 1024 * 1024  # config.py: tuning.socket_buffer_bytes
    assert int(limits["rmem_max"]) >= default
    assert int(limits["wmem_max"]) >= default
    assert _setting(unit, "AmbientCapabilities") in ([], [""])
    assert _setting(unit, "CapabilityBoundingSet") == [""]
    assert "CAP_NET_ADMIN" not in "".join(line for line in unit.splitlines()
                                          if not line.startswith("#"))


def test_the_unit_comment_gives_the_key_mode_the_daemon_demands(tmp_path):
    """The config check refuses a key file readable by others (chmod 600)."""
    unit = UNIT.read_text()
    config = (ROOT / "appliance" / "config.py").read_text()
    assert "run chmod 600" in config
    modes = re.findall(r"keys? [^\n]*?\b(0[0-7]{3})\b", unit)
    assert modes and set(modes) == {"0600"}, modes


def test_a_node_names_its_threads_for_top_and_ps(tmp_path):
    """A thread the node spawns carries its name in the kernel (top -H, ps -L, and the
    benchmarks' CPU per thread read it from /proc), not the process's name."""
    key = write_key(tmp_path / "link.key")
    cfg = load(node_config("ingress", tmp_path, key, f'peer = "127.0.0.1:{free_udp_port()}"',
                           "udp", f'listen = "127.0.0.1:{free_udp_port()}"'))
    node = IngressNode(cfg)
    seen: list[str] = []
    try:
        def read_own_name() -> None:
            tid = threading.get_native_id()
            seen.append(Path(f"/proc/self/task/{tid}/comm").read_text().strip())
        node.spawn("sink:a-very-long-channel-name", read_own_name).join(5)
    finally:
        node.close()
    assert seen == ["sink:a-very-lon"]  # the kernel keeps 15 bytes
