"""`ddc status`: a live terminal view of one node, read from its status file.

The status file (status_file in the config, rewritten every metrics interval) is the
only input: no Vector, no network. `--once --json` prints it for scripts, with
`stale` added when the file has not been rewritten for three metrics intervals (at
least STALE_AFTER seconds): the daemon is dead or hung. `--check` turns that into an exit
code for health checks (the container image's HEALTHCHECK, the Helm chart's probes).
"""

from __future__ import annotations

import json
import sys
import time

from ..observe.status import read_status

STALE_AFTER = 5.0  # seconds without a rewrite: the daemon is not running


def load(path: str) -> dict:
    st = read_status(path)
    st["age"] = time.time() - st.get("updated", 0)
    st["stale"] = st["age"] > max(STALE_AFTER, 3 * st.get("interval", 0))
    return st


def check(path: str) -> int:
    """Health check: 0 and one line when the daemon rewrites its status file, else 1."""
    st = load(path)
    if st["stale"]:
        print(f"ddc: unhealthy: {path} was last rewritten {st['age']:.0f} s ago: the "
              f"{st.get('role', 'daemon')} is not running or hung", file=sys.stderr)
        return 1
    print(f"ddc: healthy: {st.get('role')} {st.get('node')}, status {st['age']:.1f} s old")
    return 0


def _rate(prev: dict | None, cur: dict, key: str) -> float | None:
    if not prev or key not in cur or key not in prev:
        return None
    dt = cur["updated"] - prev["updated"]
    return (cur[key] - prev[key]) / dt if dt > 0 else None


def render(st: dict, prev: dict | None = None):
    from rich.markup import escape
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
        ch = dict(ch)
        tx, owners = ch.pop("transactions", None), ch.pop("partitions", None)
        problem = ch.pop("problem", None)
        t.add_row(f"channel {name}", ", ".join(f"{k} {v}" for k, v in ch.items()))
        if problem:  # its own row: the operator reads it whole, not wrapped into counters
            t.add_row("  problem", f"[red]{escape(problem)}[/red]")
        if tx:
            fenced = " [red]FENCED: stopped[/red]" if tx["fenced"] else ""
            t.add_row("  transactions", f"{tx['committed']} committed, {tx['aborted']} aborted, "
                      f"{tx['producer_restarts']} producer restarts, "
                      f"{tx['duplicates_dropped']} duplicates dropped "
                      f"({tx['transactional_id']}){fenced}")
        by_owner: dict[str, list[str]] = {}
        for p in owners or []:
            by_owner.setdefault(p["owner"], []).append(f"{p['topic']}[{p['partition']}]"
                                                       f"@{p['position']}")
        for owner, places in sorted(by_owner.items()):
            mine = " (this egress)" if owner == st.get("node") else ""
            t.add_row(f"  pair {owner}{mine}", ", ".join(places))
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
