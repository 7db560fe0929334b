"""`ddc status`: staleness from the node's own report interval, loss since start next to
the last interval's, and what an ingress's sources dropped."""

from __future__ import annotations

import io
import json
import time

from rich.console import Console

from appliance.tools import status_view


def _write(tmp_path, **status) -> str:
    path = tmp_path / "status.json"
    path.write_text(json.dumps(status))
    return str(path)


def _text(st: dict) -> str:
    out = io.StringIO()
    Console(file=out, width=200, color_system=None).print(status_view.render(st))
    return out.getvalue()


def test_staleness_follows_the_report_interval(tmp_path):
    now = time.time()
    slow = _write(tmp_path, role="egress", updated=now - 20, interval=10.0)
    assert status_view.load(slow)["stale"] is False  # 2 intervals: fine
    slow = _write(tmp_path, role="egress", updated=now - 35, interval=10.0)
    assert status_view.load(slow)["stale"] is True  # 3.5 intervals
    fast = _write(tmp_path, role="egress", updated=now - 6, interval=0.5)
    assert status_view.load(fast)["stale"] is True


def test_egress_shows_loss_since_start_beside_the_last_interval():
    st = {"role": "egress", "node": "e1", "stale": False, "link_up": True,
          "heartbeat_age": 0.4, "packet_loss": 0.0, "packet_loss_since_start": 0.0481,
          "kernel_drops": 3878, "blocks_lost": 16}
    text = _text(st)
    assert "0.00% last heartbeat interval" in text
    assert "4.81% since start" in text


def test_ingress_shows_what_its_sources_dropped():
    st = {"role": "ingress", "node": "i1", "stale": False,
          "source_drops": {"syslog": 76040, "events": 0}}
    text = _text(st)
    assert "syslog 76040" in text and "events 0" in text


def test_a_channel_problem_is_one_whole_line_however_many_counters_the_sink_has():
    """The problem (a TLS or SASL cause, a destination not ready) is what the operator
    looks for: on its own row, not wrapped into the channel's counters."""
    problem = ("TLS handshake with broker 127.0.0.1:35013 failed: the broker's certificate "
               "has expired (certificate has expired) [x]")
    sink = {f"kafka.counter_{i}": i for i in range(12)}
    st = {"role": "egress", "node": "e1", "stale": False,
          "channels": {"test": {"queue_depth": 0, "sink": sink, "problem": problem}}}
    lines = _text(st).splitlines()
    assert any(problem in line for line in lines), "\n".join(lines)
