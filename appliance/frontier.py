"""The egress's write-ahead of its session frontier (docs/reliability.md).

A UDP sendto and a file write cannot be made atomic, so the egress promises this: no
record reaches a sink before the session frontier that covers it is on disk. Then,
after a kill -9, a restarted egress knows every block that might have been delivered
(it refuses them as replays: nothing twice) and, per stream, the range between what the
sinks had confirmed and what was handed to them (reported "in_doubt", by range);
everything past that range never left, and the stream accounting reports it as lost
like any other loss. After SIGTERM the last write follows the last delivery: exact.

Threads: the link thread hands batches to the sink queues under a generation number
and posts a snapshot (Checkpoint) after it; the writer thread here writes the newest
snapshot; a sink thread writes a batch once a snapshot of its generation is on disk.
While records flow, the writer writes at most once per `interval` (a group commit: one
write covers every batch handed meanwhile, so a record waits at most about one interval
and one fsync, and an SD card sees at most 1000 / interval_ms writes a second); once the
link is idle, it writes once more when the sinks have confirmed what they were given
(SETTLE_AFTER), so that a kill -9 of an idle egress leaves nothing in doubt, and then not
at all.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from .protocol.session import Checkpoint
from .state import Delivered, Log, save_egress_session

FAILURE_LOG_INTERVAL = 10.0  # seconds between two log lines about failing writes
SETTLE_AFTER = 0.1  # seconds without a snapshot before confirmations alone are written


class FrontierWriter:
    def __init__(self, state_dir: str, log: Log, delivered: Delivered,
                 confirmed: Callable[[Delivered], Delivered] = dict, interval: float = 0.02):
        self.state_dir = state_dir
        self.log = log
        self.interval = interval
        self._written_at = float("-inf")
        # Per stream, what a sink without positions of its own holds for sure: (session,
        # stream sequence, offset) of the last record it wrote. Sink threads update it;
        # every write records confirmed(delivered): the shell adds what durable sinks
        # confirm themselves (a Kafka write is not yet a delivery).
        self.delivered: Delivered = dict(delivered)
        self._confirmed = confirmed
        self.handed_gen = 0  # link thread: the newest generation handed to the sinks
        self.posted_gen = 0  # link thread: the newest generation posted for writing
        self.persisted_gen = 0  # writer: the newest generation on disk
        self._posted: tuple[int, int, Checkpoint | None] | None = None
        self._next_post = 0.0  # link thread: no new snapshot before this (monotonic s)
        self._writer_waiting = False  # the writer waits for a snapshot: post at once
        self._last: tuple[int, Checkpoint | None] | None = None  # the newest written
        self._written: Delivered | None = None  # the confirmations it recorded
        self._cond = threading.Condition()
        self._closed = False
        self._failed_at: float | None = None

    # -- link thread ------------------------------------------------------------------
    def hand(self) -> int:
        """A new generation for the batches (and session changes) handed over now."""
        self.handed_gen += 1
        return self.handed_gen

    def wants_post(self, now: float) -> bool:
        """Post a snapshot? When something new was handed and the writer waits for one,
        else at most twice per interval (a snapshot and a wake-up per receive batch cost
        the link thread more than the batch). The link thread asks after every hand-over
        and before and after each wait for datagrams, so nothing handed waits for more
        traffic: a record waits about an interval, the link's receive timeout and a
        write."""
        if self.handed_gen <= self.posted_gen:
            return False
        return self._writer_waiting or now >= self._next_post

    def post(self, floor_epoch: int, cp: Checkpoint | None, now: float) -> None:
        self._next_post = now + self.interval / 2
        with self._cond:
            self.posted_gen = self.handed_gen
            self._posted = (self.handed_gen, floor_epoch, cp)
            if self._writer_waiting:
                self._cond.notify_all()

    # -- sink threads -------------------------------------------------------------------
    def wait_covered(self, gen: int) -> None:
        """Block until generation gen is on disk (or the writer gave up: closed)."""
        if self.persisted_gen >= gen:
            return
        with self._cond:
            while self.persisted_gen < gen and not self._closed:
                self._cond.wait(0.5)

    # -- the writer thread ------------------------------------------------------------------
    def run(self, link_done: threading.Event) -> None:
        while True:
            with self._cond:
                if self._posted is None:
                    if link_done.is_set():
                        return
                    self._writer_waiting = True
                    self._cond.wait(SETTLE_AFTER)
                    self._writer_waiting = False
                pending = self._posted is not None
            if not pending:
                self._settle()  # (outside the lock: a sink or the link never waits on it)
                continue
            gap = self.interval - (time.monotonic() - self._written_at)
            if gap > 0 and not link_done.is_set():
                time.sleep(gap)  # let more batches join this write
            with self._cond:
                posted, self._posted = self._posted, None
            if posted is None:
                continue
            gen, floor, cp = posted
            self.write(floor, cp)
            with self._cond:
                self.persisted_gen = max(self.persisted_gen, gen)
                self._cond.notify_all()

    def _settle(self) -> None:
        """Idle: record the sinks' newer confirmations under the last snapshot."""
        if self._last is not None and self._confirmed(self.delivered) != self._written:
            self.write(*self._last)

    def write(self, floor: int, cp: Checkpoint | None) -> None:
        """One write (also called directly at start and at the end of a clean stop). A
        failing disk does not stop deliveries: they go on, without the crash promise,
        and a line says so every FAILURE_LOG_INTERVAL."""
        confirmed = self._confirmed(self.delivered)
        self._last, self._written = (floor, cp), confirmed
        self._written_at = time.monotonic()
        try:
            save_egress_session(self.state_dir, floor, cp, confirmed)
        except OSError as exc:
            now = time.monotonic()
            if self._failed_at is None or now - self._failed_at >= FAILURE_LOG_INTERVAL:
                self._failed_at = now
                self.log("error", "state_write_failed",
                         f"cannot write the session frontier to {self.state_dir}: "
                         f"{exc.strerror}; deliveries go on, but a crash now may deliver "
                         "records twice or report them lost", path=self.state_dir)
            return
        if self._failed_at is not None:
            self._failed_at = None
            self.log("info", "state_write_recovered",
                     f"the session frontier is written to {self.state_dir} again")

    def close(self) -> None:
        """Release every waiting sink (the stop path writes what is left itself)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
