"""The egress's batched receive (link/_recvmmsg.c) on a real loopback socket: every
datagram once, in order, whatever mix of sizes breaks the kernel's GRO runs."""

from __future__ import annotations

import random
import socket

from appliance.config import parse_address
from appliance.link.sockets import LinkReceiver


def test_many_datagrams_per_call_in_order_with_and_without_gro():
    rng = random.Random(5)
    for gro in (True, False):
        rx = LinkReceiver(parse_address("127.0.0.1:0", True), 8 << 20, gro,
                          lambda *a, **k: None)
        sent = []
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            for i in range(2000):
                # runs of one size (GRO coalesces them) broken by odd sizes and empties
                size = 1400 if i % 7 else rng.choice([0, 1, 57, 999, 1472])
                d = i.to_bytes(4, "big") + bytes(max(0, size - 4)) if size else b""
                tx.sendto(d, rx.address)
                sent.append(d)
        got, calls = [], 0
        while len(got) < len(sent) and calls < 5000:
            got += rx.receive(wait=True)
            calls += 1
        rx.close()
        assert got == sent, f"gro={gro}"
        assert calls < len(sent) / 4  # many datagrams per call, not one
        assert rx.kernel_drops == 0
