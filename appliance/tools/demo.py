"""`ddc demo`: a real ingress and egress on loopback joined by a lossy link.

Records go in as UDP datagrams to the ingress's UDP channel, cross an authenticated,
FEC-protected link through a user-space relay that drops datagrams at random, in
bursts, and (once) for a whole 80 ms outage, and come out of the egress's UDP channel.
The demo then checks every delivered record byte for byte against what it sent, and
checks that the records the egress reported lost are exactly the ones missing.
"""

from __future__ import annotations

import hashlib
import random
import socket
import sys
import threading
import time

from ..config import loads
from ..egress import EgressNode
from ..ingress import IngressNode
from ..protocol.events import RecordsLost
from .demo_common import DemoProgress, Outage, demo_config, prepare
from .relay import LossyRelay
from .scratch import Collector, free_udp_port


def run_demo(records: int = 3000, loss: float = 0.03, burst: float = 0.002,
             outage: bool = True, seed: int = 1, quiet: bool = False) -> int:
    out = sys.stdout
    quiet = quiet or not out.isatty()
    # The nodes' JSON log lines go to a file; the summary below says what matters.
    tmp, log_path, key = prepare()

    collector = Collector(timeout=0.2)
    egress_cfg = loads(demo_config(
        "egress", key, 'bind = "127.0.0.1:0"',
        f'target = "127.0.0.1:{collector.port}"', tmp), "demo-egress.toml")
    egress = EgressNode(egress_cfg)
    model = Outage(loss=loss, burst_start=burst, burst_length=6, reorder=0.01, seed=seed)
    relay = LossyRelay(("127.0.0.1", 0), egress.address[:2], model).start()
    ingress_port = free_udp_port()
    ingress_cfg = loads(demo_config(
        "ingress", key, f'peer = "127.0.0.1:{relay.address[1]}"\nflush_interval_ms = 5',
        f'listen = "127.0.0.1:{ingress_port}"', tmp), "demo-ingress.toml")
    ingress = IngressNode(ingress_cfg)

    reports: list = []
    egress.listeners.append(lambda ev: reports.append(ev.report)
                            if isinstance(ev, RecordsLost) else None)
    received = collector.got

    def collect() -> None:
        while not stop.is_set():
            collector.receive()

    stop = threading.Event()
    collector_thread = threading.Thread(target=collect, daemon=True)
    collector_thread.start()
    egress.start()
    ingress.start()
    print(f"ddc demo: ingress -> lossy link ({loss:.0%} random loss, bursts, "
          f"{'one 30 ms outage' if outage else 'no outage'}) -> egress, on loopback", file=out)
    print(f"  link: MTU 1500, 12% FEC repair symbols, interleave depth 4, AES-256-GCM, "
          f"session {ingress.session_id:032x}", file=out)

    rng = random.Random(seed)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    digests: dict[int, str] = {}
    sizes = [64, 200, 512, 1400, 4000, 9000, 30000, 60000]
    started = time.monotonic()
    total_bytes = 0
    progress = DemoProgress(out, quiet)
    for seq in range(1, records + 1):
        size = rng.choice(sizes)
        body = seq.to_bytes(8, "big") + rng.randbytes(size - 8)
        digests[seq] = hashlib.sha256(body).hexdigest()
        total_bytes += len(body)
        sender.sendto(body, ("127.0.0.1", ingress_port))
        if outage and seq == records // 2:
            model.outage_until = time.monotonic() + 0.03
        if seq % 50 == 0:
            time.sleep(0.01)  # a steady stream, well inside the ingress socket buffer
            progress.show("sending", seq, records)
    # Wait until every record is delivered or reported lost (heartbeats catch the tail).
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        lost_count = sum(r.count or 0 for r in reports)
        done = len(received) + lost_count
        progress.show("arriving", done, records)
        if done >= records:
            break
        time.sleep(0.1)
    elapsed = time.monotonic() - started
    time.sleep(0.3)
    stop.set()
    ingress.stop()
    egress.stop()
    relay.stop()
    collector_thread.join(1)
    progress.close()

    stats = egress.decoder.stats
    corrupt = [s for s, body in received.items()
               if hashlib.sha256(body).hexdigest() != digests.get(s)]
    missing = set(range(1, records + 1)) - set(received)
    reported: set[int] = set()
    for r in reports:
        reported.update(range(r.first_offset, r.last_offset + 1))
    silent = missing - reported
    false_reports = reported - missing
    delivered_bytes = sum(len(b) for b in received.values())
    print(f"  sent             {records} records, {total_bytes / 1e6:.1f} MB", file=out)
    print(f"  link             {relay.forwarded + relay.dropped} datagrams, "
          f"{relay.dropped} dropped by the lossy link "
          f"({relay.dropped / max(1, relay.forwarded + relay.dropped):.1%})", file=out)
    print(f"  repaired by FEC  {stats.fec_recovered} blocks "
          f"({stats.blocks_ok} blocks delivered, {stats.blocks_lost} beyond repair)", file=out)
    print(f"  delivered        {len(received)} records, byte-identical: "
          f"{len(received) - len(corrupt)}, corrupt: {len(corrupt)}", file=out)
    print(f"  lost (reported)  {sum(r.count or 0 for r in reports)} records", file=out)
    for r in reports:
        print(f"    - channel demo: {r.describe()}", file=out)
    print(f"  lost silently    {len(silent)}"
          + (f" (records {sorted(silent)[:10]})" if silent else ""), file=out)
    if false_reports:
        print(f"  reported lost but delivered: {sorted(false_reports)[:10]}", file=out)
    print(f"  goodput          {delivered_bytes / elapsed / 1e6:.2f} MB/s over {elapsed:.1f} s "
          "(paced by this demo's sender, not a benchmark: see `ddc bench`)", file=out)
    print(f"  logs             {log_path}", file=out)
    ok = not corrupt and not silent and not false_reports
    print("  result           " + ("OK: every record delivered intact or reported lost "
                                    "by range" if ok else "FAILED"), file=out)
    return 0 if ok else 1
