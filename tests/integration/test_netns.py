"""End to end between two network namespaces joined by a veth pair, with real kernel
packet loss from nftables (`numgen random`) on the egress side's interface.

Needs root (CI runs as root and scripts/test.sh installs nftables and iproute2).
Addresses are from TEST-NET-1 and exist only inside the namespaces this test makes.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import threading
import time

import pytest

from .daemons import Daemon, big_receive_buffer, node_config, payloads, write_key

pytestmark = [pytest.mark.netns, pytest.mark.slow]
if os.geteuid() != 0:
    pytestmark.append(pytest.mark.skip(reason="network namespaces need root; "
                                              "scripts/test.sh runs as root"))

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def sh(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


def in_netns(ns: str, fn):
    """Run fn in a thread that has entered netns ns; sockets it makes stay in ns."""
    box: dict = {}

    def run() -> None:
        fd = os.open(f"/var/run/netns/{ns}", os.O_RDONLY)
        try:
            if _libc.setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns failed")
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            box["error"] = exc
        finally:
            os.close(fd)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


@pytest.fixture
def diode_namespaces():
    for tool in ("ip", "nft"):
        assert shutil.which(tool), f"{tool} is missing: scripts/test.sh installs it"
    tag = str(os.getpid())[-5:]
    high, low = f"ddc-hi-{tag}", f"ddc-lo-{tag}"
    sh("ip", "netns", "add", high)
    sh("ip", "netns", "add", low)
    try:
        sh("ip", "link", "add", f"vh{tag}", "netns", high, "type", "veth",
           "peer", "name", f"vl{tag}", "netns", low)
        sides = ((high, f"vh{tag}", "192.0.2.1/24"), (low, f"vl{tag}", "192.0.2.2/24"))
        for ns, dev, addr in sides:
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "addr", "add", addr, "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "mtu", "1500", "up")
        yield high, low
    finally:
        sh("ip", "netns", "del", high)
        sh("ip", "netns", "del", low)


def add_random_drop(ns: str, percent: int, port: int) -> None:
    rules = f"""
table inet ddc_loss {{
  chain input {{
    type filter hook input priority 0; policy accept;
    udp dport {port} numgen random mod 100 < {percent} counter drop
  }}
}}
"""
    subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=rules, text=True,
                   check=True)


def dropped_by_nft(ns: str) -> int:
    out = json.loads(sh("ip", "netns", "exec", ns, "nft", "-j", "list", "table", "inet",
                        "ddc_loss"))
    for item in out["nftables"]:
        rule = item.get("rule")
        if rule:
            for expr in rule["expr"]:
                if "counter" in expr:
                    return expr["counter"]["packets"]
    return 0


def test_kernel_random_loss_between_namespaces_is_repaired(tmp_path, diode_namespaces):
    import socket

    high, low = diode_namespaces
    link_port, source_port = 4789, 5514
    add_random_drop(low, 5, link_port)
    collector = in_netns(low, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    big_receive_buffer(collector)
    collector.bind(("127.0.0.1", 6000))
    collector.settimeout(0.2)
    sender = in_netns(high, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))

    key = write_key(tmp_path / "link.key")
    link = "fec_redundancy_percent = 12\nblock_symbols = 227"
    egress = Daemon(node_config("egress", tmp_path, key, f'bind = "192.0.2.2:{link_port}"\n'
                                + link, "udp", 'target = "127.0.0.1:6000"'),
                    prefix=["ip", "netns", "exec", low])
    egress.wait_event("started")
    # veth hands GSO batches over whole, so nftables would drop 40 datagrams at a time;
    # a physical diode NIC segments them on the wire. Plain sends make the drops per datagram.
    ingress = Daemon(node_config("ingress", tmp_path, key, f'peer = "192.0.2.2:{link_port}"\n'
                                 + link, "udp", f'listen = "127.0.0.1:{source_port}"',
                                 extra="[tuning]\ngso = false"),
                     prefix=["ip", "netns", "exec", high])
    ingress.wait_event("started")
    items = payloads(1000, seed=21)
    got: dict[int, bytes] = {}
    try:
        for i, (_, body) in enumerate(sorted(items.items()), 1):
            sender.sendto(body, ("127.0.0.1", source_port))
            if i % 40 == 0:
                time.sleep(0.01)
        deadline = time.monotonic() + 20
        while len(got) < len(items) and time.monotonic() < deadline:
            try:
                data = collector.recv(65536)
            except TimeoutError:
                continue
            got[int.from_bytes(data[:8], "big")] = data
        drops = dropped_by_nft(low)
    finally:
        ingress.stop()
        egress.stop()
        collector.close()
        sender.close()
    assert drops > 100, f"nftables dropped only {drops} datagrams"
    assert got == items
    assert egress.events("records_lost") == []
    assert egress.events("session_started")
