"""A real ingress and egress (UDP, Kafka through librdkafka mock clusters, generator/null
channels) send StatsD to a socket here: every catalogue metric must be emitted, and nothing
the catalogue does not list. Then the ingress is killed: the egress's heartbeat age and
`ddc status` must show the link down within three heartbeat intervals."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from .daemons import Daemon, free_udp_port, write_key

pytestmark = pytest.mark.slow
CATALOGUE = Path(__file__).resolve().parents[2] / "docs" / "metrics-catalogue.yaml"
HEARTBEAT = 0.3
LINE = re.compile(r"^(?P<name>[A-Za-z0-9_.]+):(?P<value>-?[0-9.e+]+)\|(?P<type>c|g)"
                  r"(?:\|#(?P<tags>.*))?$")


def _mock() -> tuple[AdminClient, str]:
    holder = AdminClient({"test.mock.num.brokers": 1, "log_level": 0})
    b = next(iter(holder.list_topics(timeout=10).brokers.values()))
    return holder, f"{b.host}:{b.port}"


def _config(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_statsd_output_matches_catalogue_and_link_down_is_seen(tmp_path):
    catalogue = yaml.safe_load(CATALOGUE.read_text())
    declared = {m["statsd"]: set(m["tags"]) | set(catalogue["common_tags"])
                for m in catalogue["metrics"]}
    statsd = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    statsd.bind(("127.0.0.1", 0))
    statsd.settimeout(0.2)
    high_holder, high = _mock()
    low_holder, low = _mock()
    p = Producer({"bootstrap.servers": high, "log_level": 0})
    for _ in range(200):
        p.produce("events", value=b"x" * 100, partition=0)
    p.flush(10)

    key = write_key(tmp_path / "link.key")
    link_port, udp_in, udp_out = free_udp_port(), free_udp_port(), free_udp_port()
    common = f"""
[metrics]
statsd = "127.0.0.1:{statsd.getsockname()[1]}"
interval = 0.2
[logging]
syslog = ""
journald = false
"""
    egress_cfg = _config(tmp_path / "egress.toml", f"""role = "egress"
node_name = "cat-egress"
state_dir = "{tmp_path}/egress-state"
status_file = "{tmp_path}/egress-state/status.json"
[link]
bind = "127.0.0.1:{link_port}"
key_file = "{key}"
{common}
[[channel]]
id = 1
name = "syslog"
type = "udp"
[channel.udp]
target = "127.0.0.1:{udp_out}"
[[channel]]
id = 2
name = "events"
type = "kafka"
[channel.kafka]
bootstrap_servers = "{low}"
[channel.kafka.properties]
log_level = 0
[[channel]]
id = 3
name = "synthetic"
type = "null"
[channel.null]
verify = true
size = 500
[[channel.filter]]
name = "huge"
action = "deny"
[channel.filter.match]
min_size = 1000000
""")
    ingress_cfg = _config(tmp_path / "ingress.toml", f"""role = "ingress"
node_name = "cat-ingress"
state_dir = "{tmp_path}/ingress-state"
status_file = "{tmp_path}/ingress-state/status.json"
[link]
peer = "127.0.0.1:{link_port}"
key_file = "{key}"
heartbeat_interval = {HEARTBEAT}
{common}
[[channel]]
id = 1
name = "syslog"
type = "udp"
[channel.udp]
listen = "127.0.0.1:{udp_in}"
[[channel]]
id = 2
name = "events"
type = "kafka"
[channel.kafka]
bootstrap_servers = "{high}"
group_id = "catalogue"
topics = ["events"]
[channel.kafka.properties]
log_level = 0
[[channel]]
id = 3
name = "synthetic"
type = "generator"
[channel.generator]
count = 300
size = 500
rate = 1000
[[channel.filter]]
name = "huge"
action = "deny"
[channel.filter.match]
min_size = 1000000
""")
    egress = Daemon(egress_cfg)
    egress.wait_event("started")
    ingress = Daemon(ingress_cfg)
    ingress.wait_event("started")
    seen: dict[str, set[str]] = {}
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for i in range(50):
                s.sendto(b"<14>syslog line %d" % i, ("127.0.0.1", udp_in))
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            try:
                data = statsd.recv(65536).decode()
            except TimeoutError:
                continue
            for line in data.splitlines():
                m = LINE.match(line)
                assert m, f"not a StatsD line: {line!r}"
                tags = {t.split(":", 1)[0] for t in (m["tags"] or "").split(",") if t}
                seen.setdefault(m["name"], set()).update(tags)
        # The link goes down: kill the ingress, the egress must say so within 3 intervals.
        ingress.stop(signal.SIGKILL)
        killed = time.monotonic()
        down_at = None
        while time.monotonic() - killed < 3 * HEARTBEAT + 2:
            st = json.loads((tmp_path / "egress-state" / "status.json").read_text())
            if not st["link_up"]:
                down_at = time.monotonic() - killed
                break
            time.sleep(0.05)
        status = subprocess.run([sys.executable, "-m", "appliance.cli", "status", "--config",
                                 egress_cfg, "--once", "--json"], capture_output=True,
                                text=True, check=True)
        plain = subprocess.run([sys.executable, "-m", "appliance.cli", "status", "--config",
                                egress_cfg, "--once"], capture_output=True, text=True,
                               check=True)
        ages = []
        t_end = time.monotonic() + 1.0
        while time.monotonic() < t_end:
            try:
                data = statsd.recv(65536).decode()
            except TimeoutError:
                continue
            ages += [float(m["value"]) for m in map(LINE.match, data.splitlines())
                     if m and m["name"] == "ddc.link.heartbeat_age_seconds"]
    finally:
        ingress.stop()
        egress.stop()
        del high_holder, low_holder
    missing = set(declared) - set(seen)
    undocumented = set(seen) - set(declared)
    assert not missing, f"catalogue metrics never emitted: {sorted(missing)}"
    assert not undocumented, f"metrics emitted but not in the catalogue: {sorted(undocumented)}"
    for name, tags in seen.items():
        assert tags <= declared[name], f"{name} has undeclared tags {tags - declared[name]}"
    # Link down within three heartbeat intervals (plus one status rewrite).
    assert down_at is not None and down_at <= 3 * HEARTBEAT + 0.2 + 0.3, down_at
    assert json.loads(status.stdout)["link_up"] is False
    assert "DOWN" in plain.stdout
    assert ages and max(ages) > 3 * HEARTBEAT
