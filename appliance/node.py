"""What the ingress and egress daemons share: threads, metrics loop, sd_notify, status."""

from __future__ import annotations

import os
import signal
import threading
import time
import traceback
from collections.abc import Callable

from .channels.base import CLOSE_LIMIT, ChannelContext, ChannelFatal, run_bounded
from .config import Config
from .link.cpu import name_current_thread
from .observe import log as obs_log
from .observe.metrics import CounterDeltas, NullStats, TaggedStatsClient
from .observe.notify import notify, watchdog_interval
from .observe.status import write_status
from .protocol.auth import KEY_SIZE, format_key, parse_key
from .protocol.heartbeat import KIND_COUNTER, Metric

# SIGTERM -> exit: threads see stop_event within a tenth of a second; one stuck in a client
# library call is given up on after JOIN_BUDGET (it dies with the process), then channels
# close in parallel, each within CLOSE_STALL of its last progress (channels/base.py).
JOIN_BUDGET = 1.5


def read_key(path: str) -> bytes:
    with open(path) as f:
        return parse_key(f.read())


def write_key_file(path: str | os.PathLike) -> None:
    """Write a new random link key to path, mode 0600 (replacing any file there): the
    one writer of key files, for `ddc keygen` and the tools' and tests' scratch keys."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # a replaced file keeps its old mode otherwise (keygen --force)
    with os.fdopen(fd, "w") as f:
        f.write(format_key(os.urandom(KEY_SIZE)))


class Node:
    role = "node"

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.stop_event = threading.Event()
        self.log = obs_log.EventLogger(f"ddc.{self.role}")
        self.threads: list[threading.Thread] = []
        self.listeners: list[Callable[[object], None]] = []  # in-process observers (demo)
        self.failed: str | None = None
        self.exit_code = 1  # when failed
        self.stats: TaggedStatsClient | NullStats
        if cfg.metrics.statsd is not None:
            self.stats = TaggedStatsClient(cfg.metrics.statsd.host, cfg.metrics.statsd.port,
                                           cfg.metrics.prefix,
                                           {"node": cfg.node_name, "role": cfg.role})
        else:
            self.stats = NullStats()
        self.deltas = CounterDeltas()
        self.started_at = time.time()

    # -- lifecycle ---------------------------------------------------------------
    def start(self) -> Node:
        raise NotImplementedError

    def spawn(self, name: str, target: Callable[[], None]) -> threading.Thread:
        def guarded() -> None:
            name_current_thread(name)
            try:
                target()
            except ChannelFatal as exc:  # a channel that must stop (e.g. fenced): one line
                self.failed, self.exit_code = str(exc), exc.exit_code
                self.log("critical", exc.event, self.failed, thread=name,
                         exit_code=exc.exit_code)
                self.stop_event.set()
            except Exception as exc:  # a dead hot thread must stop the daemon, loudly
                self.failed = f"thread {name} died: {exc!r}"
                self.log("critical", "thread_died", self.failed,
                         thread=name, traceback=traceback.format_exc())
                self.stop_event.set()

        t = threading.Thread(target=guarded, name=name, daemon=True)
        self.threads.append(t)
        t.start()
        return t

    def stop(self) -> None:
        self.stop_event.set()
        deadline = time.monotonic() + JOIN_BUDGET
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        busy = [t.name for t in self.threads if t.is_alive()]
        if busy:
            self.log("warning", "threads_busy_at_stop",
                     f"{', '.join(busy)} still busy {JOIN_BUDGET:g} s after the stop request: "
                     "closing without them", threads=busy)
        if run_bounded({self.role: self.close}, CLOSE_LIMIT + 1):  # backstop: see base.py
            self.log("error", "close_timeout", f"{self.role} did not close within "
                     f"{CLOSE_LIMIT + 1:g} s: exiting without it")

    def close(self) -> None:
        """Close the channels (in parallel, run_bounded: each within CLOSE_STALL of its last
        progress), then the link."""

    def close_channels(self, closers: dict[str, Callable[[], None]]) -> None:
        stuck = run_bounded(closers, CLOSE_LIMIT)
        if stuck:
            self.log("error", "close_timeout", f"channel {', '.join(stuck)} did not close "
                     f"within {CLOSE_LIMIT:g} s: exiting without it", channels=stuck)

    def channel_context(self, ch) -> ChannelContext:
        return ChannelContext(ch.id, ch.name, self.cfg.state_dir,
                              self.cfg.tuning.socket_buffer_bytes, self.log,
                              node_name=self.cfg.node_name, stopping=self.stop_event)

    def run_forever(self) -> int:
        """The daemon's main thread: metrics, status, watchdog; returns the exit code."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop_event.set())
        self.start()
        notify("READY=1\nSTATUS=" + self.status_line())
        self.log("info", "started", f"{self.role} {self.cfg.node_name} started",
                 config=self.cfg.path)
        wd = watchdog_interval()
        interval = self.cfg.metrics.interval
        next_report = time.monotonic()
        while not self.stop_event.wait(min(interval, wd or interval)):
            if self.failed is None and wd is not None and all(t.is_alive() for t in self.threads
                                                               if t.name.startswith("hot:")):
                notify("WATCHDOG=1")
            now = time.monotonic()
            if now >= next_report:
                next_report = now + interval
                self.report()
                notify("STATUS=" + self.status_line())
        notify("STOPPING=1")
        self.stop()
        self.report()
        self.log("info", "stopped", f"{self.role} {self.cfg.node_name} stopped",
                 reason=self.failed or "signal")
        return self.exit_code if self.failed else 0

    # -- reporting ------------------------------------------------------------------
    def report(self) -> None:
        for m in self.metrics():
            tags = dict(m.tags)
            if m.kind == KIND_COUNTER:
                self.stats.count(m.name, self.deltas.delta((m.name, m.tags), m.value), tags)
            else:
                self.stats.set_gauge(m.name, m.value, tags)
        write_status(self.cfg.status_file, self.status())

    def metrics(self) -> list[Metric]:
        return []

    def status(self) -> dict:
        return {"role": self.role, "node": self.cfg.node_name, "pid_started": self.started_at,
                "updated": time.time(), "interval": self.cfg.metrics.interval}

    def status_line(self) -> str:
        return self.role

    def emit_event(self, event: object) -> None:
        for listener in self.listeners:
            listener(event)
