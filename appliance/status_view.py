"""`ddc status`: a live terminal view of one node, read from its status file.

The status file (status_file in the config, rewritten every metrics interval) is the
only input: no Vector, no network. `--once --json` prints it for scripts, with
`stale` added when the file has not been rewritten for three of the node's own report
intervals (`report_interval` in the file; the daemon is dead or hung).
"""

from __future__ import annotations

import json
import time

from .observe.status import read_status

STALE_INTERVALS = 3  # report intervals without a rewrite: the daemon is not running
STALE_FLOOR = 2.0  # seconds: short intervals still get room for a busy machine's jitter
DEFAULT_INTERVAL = 1.0  # [metrics] interval's default, for a file that does not say


def load(path: str, now: float | None = None) -> dict:
    st = read_status(path)
    interval = st.get("report_interval") or DEFAULT_INTERVAL
    age = (time.time() if now is None else now) - st.get("updated", 0)
    st["stale"] = age > max(STALE_INTERVALS * interval, STALE_FLOOR)
    return st


def _rate(prev: dict | None, cur: dict, key: str) -> float | None:
    if not prev or key not in cur or key not in prev:
        return None
    dt = cur["updated"] - prev["updated"]
    return (cur[key] - prev[key]) / dt if dt > 0 else None


def render(st: dict, prev: dict | None = None):
    from rich.table import Table

    t = Table(title=f"ddc {st.get('role')} {st.get('node')}", show_header=False,
              title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    if st["stale"]:
        t.add_row("daemon", "[red]not running (status file is stale)[/red]")
    t.add_row("session", str(st.get("session")))
    if st.get("role") == "egress":
        up = st.get("link_up") and not st["stale"]
        age = st.get("heartbeat_age")
        t.add_row("link", "[green]up[/green]" if up else "[red]DOWN[/red]")
        t.add_row("heartbeat age", "never" if age is None else f"{age:.1f} s")
        rate = _rate(prev, st, "bytes_received")
        t.add_row("in", f"{st.get('records_delivered', 0)} records"
                  + (f", {rate / 1e6:.2f} MB/s" if rate is not None else ""))
        t.add_row("packet loss", f"{st.get('packet_loss', 0):.2%} last heartbeat interval, "
                  f"{st.get('packet_loss_since_start', 0):.2%} since start")
        t.add_row("FEC repaired", f"{st.get('fec_recovered', 0)} blocks")
        t.add_row("lost", f"{st.get('records_lost', 0)} records, "
                  f"{st.get('blocks_lost', 0)} blocks")
        drops = st.get("dropped", {})
        t.add_row("dropped", ", ".join(f"{k} {v}" for k, v in drops.items()))
        t.add_row("kernel drops", str(st.get("kernel_drops", 0)))
        for loss in st.get("recent_losses", [])[-5:]:
            where = f"{loss['topic']}[{loss['partition']}] " if loss.get("topic") else ""
            t.add_row("  recent loss", f"{loss['channel']}: {where}offsets "
                      f"{loss['first_offset'] if loss['first_offset'] is not None else '?'}-"
                      f"{loss['last_offset']} ({loss['reason']})")
        ingress = st.get("ingress") or {}
        for m in ingress.get("metrics", []):
            if m["name"] == "kafka.consumer_lag":
                tags = m["tags"]
                t.add_row("  ingress lag", f"{tags.get('topic')}[{tags.get('partition')}] "
                          f"{int(m['value'])}")
    else:
        rate = _rate(prev, st, "bytes_sent")
        t.add_row("peer", str(st.get("peer")))
        t.add_row("out", f"{st.get('records_sent', 0)} records, {st.get('packets_sent', 0)} "
                  "datagrams" + (f", {rate / 1e6:.2f} MB/s" if rate is not None else ""))
        t.add_row("queue", str(st.get("queue_depth", 0)))
        t.add_row("send errors", str(st.get("send_errors", 0)))
        drops = st.get("source_drops") or {}
        t.add_row("source drops", ", ".join(
            f"[red]{name} {n}[/red]" if n else f"{name} 0" for name, n in drops.items()) or "-")
    for name, ch in (st.get("channels") or {}).items():
        t.add_row(f"channel {name}", ", ".join(f"{k} {v}" for k, v in ch.items()))
    return t


def run(path: str, once: bool, as_json: bool, interval: float = 1.0) -> int:
    st = load(path)
    if as_json:
        print(json.dumps(st, indent=2))
        return 0
    from rich.console import Console
    from rich.live import Live

    console = Console()
    if once:
        console.print(render(st))
        return 0
    prev = None
    with Live(render(st), console=console, refresh_per_second=2) as live:
        try:
            while True:
                time.sleep(interval)
                prev, st = st, load(path)
                live.update(render(st, prev))
        except KeyboardInterrupt:
            return 0
