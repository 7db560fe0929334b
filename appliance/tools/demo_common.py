"""What both demos (`ddc demo`, `ddc demo --udp`) share: the scratch dir and key, the
node configs, the lossy link with its one outage, the progress bar."""

from __future__ import annotations

import logging
import os
import tempfile
import time
from typing import TYPE_CHECKING

from ..observe.log import JsonFormatter
from .relay import LossModel
from .scratch import link_key, node_config

if TYPE_CHECKING:  # rich is imported only when the bar is shown
    from rich.progress import Progress, TaskID


def demo_config(role: str, key: str, link: str, channel: str, state: str,
                channel_type: str = "udp", extra: str = "") -> str:
    """A demo node's config: loopback, 12% FEC, fast heartbeats, no Vector. extra: tables
    after the channel's (e.g. [channel.kafka.properties])."""
    return node_config(role, key, "fec_redundancy_percent = 12\ninterleave_depth = 4\n"
                       f"heartbeat_interval = 0.2\n{link}", channel_type, f"{channel}\n{extra}",
                       name=f"demo-{role}", state_dir=f"{state}/{role}",
                       channel_name=f"demo-{channel_type}")


def prepare() -> tuple[str, str, str]:
    """A scratch dir, the nodes' JSON log lines in a file there, and a fresh link key."""
    tmp = tempfile.mkdtemp(prefix="ddc-demo-")
    log_path = os.path.join(tmp, "demo.log")
    handler = logging.FileHandler(log_path)
    handler.setFormatter(JsonFormatter("demo", "demo"))
    logger = logging.getLogger("ddc")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return tmp, log_path, link_key(tmp)


class Outage(LossModel):
    """The demo's link: random and burst loss, plus one total outage mid-run."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.outage_until = 0.0

    def drop(self) -> bool:
        lost = super().drop()
        return lost or time.monotonic() < self.outage_until


class DemoProgress:
    """The demo's progress bar (rich), one task at a time; nothing at all when quiet (asked
    for, or stdout is not a terminal, so a piped summary stays plain)."""

    def __init__(self, out, quiet: bool, console=None):
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        if not quiet:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            self._bar = Progress(TextColumn("  {task.description:<9}"), BarColumn(),
                                 MofNCompleteColumn(), console=console or Console(file=out))
            self._bar.start()

    def show(self, description: str, done: int, total: int) -> None:
        if self._bar is None:
            return
        if self._task is None or self._bar.tasks[self._task].description != description:
            if self._task is not None:
                self._bar.update(self._task, visible=False)
            self._task = self._bar.add_task(description, total=total)
        self._bar.update(self._task, completed=min(done, total), total=total)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
