"""What a node counts, declared once per node (IngressNode.COUNTERS, EgressNode.COUNTERS).

A row names the StatsD metric, says how to read it from the node, whether it is a counter
or a gauge, under which key the status file shows it, and what it means. The node's
metrics(), its status() and the generated tables of docs/metrics.md all read the same
rows: the names were once written three times (metrics(), status(), the doc), and only
the slow integration test noticed when they drifted apart.

Regenerate docs/metrics.md's tables after changing a row:

    python -m appliance.tools.metrics_doc          (--check: only say whether it is stale)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..protocol.heartbeat import Metric


@dataclass(frozen=True)
class Counter:
    name: str  # StatsD name after the "ddc." prefix
    kind: int  # KIND_COUNTER or KIND_GAUGE
    # node -> the value; with labels, a dict per label ({channel: {rule: n}} for two).
    get: Callable[[Any], Any]
    # The status file's key: top level, or under channels.<name> when the first label is
    # "channel". None: StatsD only (the status file shows it another way).
    status: str | None
    help: str
    labels: tuple[str, ...] = ()  # one series per value, tagged so
    alert: str = "-"
    # The egress re-emits it from the ingress's heartbeats (the heartbeat's field has the
    # status key's name), tagged via="diode".
    via: bool = False
    shown: Callable[[Any], Any] | None = None  # the status file's form, when not the value


def relayed(rows: tuple[Counter, ...]) -> list[tuple[Counter, str]]:
    """The rows the egress re-emits from the ingress's heartbeats, each with the
    heartbeat field (its status key) that carries the value."""
    out = []
    for c in rows:
        if c.via:
            assert c.status is not None, f"{c.name}: a relayed counter needs its status key"
            out.append((c, c.status))
    return out


def _series(value: Any, depth: int) -> list[tuple[tuple[str, ...], Any]]:
    """A (nested) per-label dict as (label values, value) pairs."""
    if depth == 0:
        return [((), value)]
    return [((key,) + rest, v) for key, inner in list(value.items())
            for rest, v in _series(inner, depth - 1)]


def metrics(rows: tuple[Counter, ...], node) -> list[Metric]:
    out = []
    for c in rows:
        for keys, value in _series(c.get(node), len(c.labels)):
            out.append(Metric(c.name, value, c.kind, tuple(zip(c.labels, keys, strict=True))))
    return out


def status(rows: tuple[Counter, ...], node, channels: dict[str, dict]) -> dict:
    """The rows' status keys: the top-level ones returned, per-channel ones set in
    channels (channel name -> that channel's status)."""
    out: dict = {}
    for c in rows:
        if c.status is None:
            continue
        value = c.get(node)
        if c.labels[:1] == ("channel",):
            for name, v in value.items():
                channels.setdefault(name, {})[c.status] = v
        else:
            out[c.status] = value if c.shown is None else c.shown(value)
    return out
