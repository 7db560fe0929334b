"""Content filters and compression end to end: real `ddc run` daemons over loopback UDP
(and, in test_kafka_filters.py, real Kafka brokers)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from .daemons import Collector, Daemon, free_udp_port, node_config, send_paced, write_key

pytestmark = pytest.mark.slow

INGRESS_RULES = """
[[channel.filter]]
name = "no-secrets"
action = "deny"
[channel.filter.match]
value_contains = "secret"
[[channel.filter]]
name = "big"
action = "deny"
[channel.filter.match]
min_size = 2000
"""
# The egress denies by default: it writes JSON of level info and the plain records; the
# rest (JSON of another level) falls to the default rule.
EGRESS_RULES = """
[[channel.filter]]
name = "keep-json-info"
action = "allow"
[channel.filter.match]
value_json_field = "level"
value_json_equals = "info"
[[channel.filter]]
name = "keep-plain"
action = "allow"
[channel.filter.match]
value_regex = "plain$"
"""


def _status(path: Path) -> dict:
    return json.loads(path.read_text())


def _items(n: int) -> tuple[dict[int, bytes], set[int], set[int]]:
    """Datagrams (keyed as the Collector keys them: by their first 8 bytes), and which
    of them each side must filter (the last ones are filtered by the ingress: a tail
    only the heartbeat announces)."""
    items, by_ingress, by_egress = {}, set(), set()
    for i in range(1, n + 1):
        head = i.to_bytes(8, "big")
        if i % 5 == 0 or i > n - 10:
            value, side = head + b"a secret", by_ingress
        elif i % 7 == 0:
            value, side = head + b"x" * 3000, by_ingress
        elif i % 3 == 0:  # JSON: {"":"NNN", ...}, the egress keeps level info only
            level = "info" if i % 2 else "debug"
            value = f'{{"":"{i:03d}", "level": "{level}"}}'.encode()
            side = by_egress if level != "info" else set()
        else:
            value, side = head + b"plain", set()
        n_key = int.from_bytes(value[:8], "big")
        items[n_key] = value
        side.add(n_key)
    return items, by_ingress, by_egress


@pytest.mark.parametrize("compression", ["none", "zstd"])
def test_filters_on_both_sides_of_a_udp_channel(tmp_path, compression):
    key = write_key(tmp_path / "link.key")
    collector = Collector()
    egress_port, source_port = free_udp_port(), free_udp_port()
    egress_cfg = node_config("egress", tmp_path, key, f'bind = "127.0.0.1:{egress_port}"',
                             "udp", f'target = "127.0.0.1:{collector.port}"\n' + EGRESS_RULES,
                             channel_extra='filter_default = "deny"')
    ingress_cfg = node_config(
        "ingress", tmp_path, key,
        f'peer = "127.0.0.1:{egress_port}"\ncompression = "{compression}"', "udp",
        f'listen = "127.0.0.1:{source_port}"\n' + INGRESS_RULES)
    items, by_ingress, by_egress = _items(600)
    egress = Daemon(egress_cfg)
    egress.wait_event("started")
    ingress = Daemon(ingress_cfg)
    try:
        ingress.wait_event("started")
        send_paced(source_port, items)
        want = {i: v for i, v in items.items() if i not in by_ingress | by_egress}
        got = collector.drain(len(want), timeout=20)
        time.sleep(1.0)  # heartbeats: a tail loss would be reported by now
        collector.drain(len(items), timeout=0.3)
        st_in = _status(tmp_path / "ingress-state" / "status.json")
        st_out = _status(tmp_path / "egress-state" / "status.json")
    finally:
        ingress.stop()
        egress.stop()
    assert got == want
    assert egress.events("records_lost") == []
    ch_in, ch_out = st_in["channels"]["test"], st_out["channels"]["test"]
    assert ch_in["records_filtered"] == {
        "no-secrets": sum(1 for i in by_ingress if b"secret" in items[i]),
        "big": sum(1 for i in by_ingress if b"secret" not in items[i])}
    assert ch_out["records_filtered_by_ingress"] == len(by_ingress)
    assert ch_out["records_filtered"] == {"default": len(by_egress)}
    assert st_out["records_delivered"] == len(items) - len(by_ingress)
    before, after = st_in["bytes_before_compression"], st_in["bytes_after_compression"]
    if compression == "zstd":  # the blocks crossed compressed, and the ratio says so
        assert after < before and st_in["compression_ratio"] == round(before / after, 3)
    else:
        assert after == before and st_in["compression_ratio"] == 1.0
    line = ingress.events("records_filtered")[0]
    assert line["channel"] == "test" and "offset" in line and "a secret" not in json.dumps(line)
    assert egress.events("records_filtered")


def test_an_egress_with_a_smaller_compression_bound_refuses_clearly(tmp_path):
    """Set up differently: the ingress may cut compressed blocks of up to 4 MiB, the egress
    takes 64 KiB. The egress drops them (counted malformed), says why in a peer_mismatch
    line naming both sizes (one per interval, not one per block), and reports the
    records lost by range: refused clearly, never silently."""
    key = write_key(tmp_path / "link.key")
    collector = Collector()
    egress_port, source_port = free_udp_port(), free_udp_port()
    egress_cfg = node_config(
        "egress", tmp_path, key,
        f'bind = "127.0.0.1:{egress_port}"\ncompression_max_block_bytes = 65536', "udp",
        f'target = "127.0.0.1:{collector.port}"')
    # A long flush interval: the blocks fill to what compresses into one (far over 64 KiB).
    ingress_cfg = node_config(
        "ingress", tmp_path, key,
        f'peer = "127.0.0.1:{egress_port}"\ncompression = "zstd"\nflush_interval_ms = 2000',
        "udp", f'listen = "127.0.0.1:{source_port}"')
    items = {i: i.to_bytes(8, "big") + b'{"level": "info", "msg": "request handled"}' * 20
             for i in range(1, 3001)}
    egress = Daemon(egress_cfg)
    egress.wait_event("started")
    ingress = Daemon(ingress_cfg)
    try:
        ingress.wait_event("started")
        send_paced(source_port, items, per_batch=500)
        mismatch = egress.wait_event("peer_mismatch", timeout=15)
        time.sleep(1.5)  # heartbeats: every block announced is resolved by now
        st_out = _status(tmp_path / "egress-state" / "status.json")
    finally:
        ingress.stop()
        egress.stop()
    assert mismatch["what"] == "compression" and mismatch["ours"] == "65536"
    assert int(mismatch["theirs"]) > 65536
    assert "compression_max_block_bytes" in mismatch["msg"]
    assert len(egress.events("peer_mismatch")) == 1  # within one interval: one line
    assert not egress.events("malformed")
    assert st_out["dropped"]["malformed"] >= 1
    lost = sum(e["count"] for e in egress.events("records_lost"))
    assert lost > 0 and lost + len(collector.drain(len(items), timeout=0.5)) == len(items)
