"""What sources and sinks share."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ..protocol.heartbeat import Metric
from ..protocol.records import Record

Emit = Callable[[list[Record]], None]  # a batch of records, in order
# close() of a source or sink gives up once CLOSE_STALL seconds pass without progress (its
# servers unreachable), and returns within CLOSE_LIMIT seconds in any case.
CLOSE_STALL = 1.5
CLOSE_LIMIT = 30.0


@dataclass
class ChannelContext:
    """What a channel gets from its node: its name and a way to report events."""
    channel_id: int
    name: str
    state_dir: str
    socket_buffer_bytes: int
    log_event: Callable[..., None] = field(default=lambda *a, **k: None)
    # report_loss(topic, partition, first_offset, last_offset, count, reason, **fields): a
    # sink that could not deliver records says so here (log line + records_lost counter).
    report_loss: Callable[..., None] = field(default=lambda *a, **k: None)
    node_name: str = "ddc"  # names the node's clients to servers (Kafka client.id)
    # Set when the node stops: a sink retrying against a dead destination gives up.
    stopping: threading.Event = field(default_factory=threading.Event)


# Exit status of a daemon stopped because another instance took its place (a second
# egress with the same Kafka transactional.id). Not 1: systemd must not restart it
# (RestartPreventExitStatus=), or the two would fence each other in turn.
EXIT_FENCED = 3


class ChannelFatal(Exception):
    """A channel cannot go on and the node must stop, with this line and exit code
    (no traceback: it is not a bug)."""
    exit_code = 1
    event = "channel_stopped"


class Source:
    def run(self, emit: Emit, stop: threading.Event) -> None:
        raise NotImplementedError

    def handed_over(self, records: Iterable[Record]) -> None:
        """Records whose every byte is now in datagrams on the link."""

    def metrics(self) -> list[Metric]:
        return []

    def problem(self) -> str | None:
        """Why the channel cannot work right now (e.g. its TLS handshake fails), for the
        node's status; None when it works."""
        return None

    def close(self) -> None:
        """Called once run() returned (or its thread was given up on). Returns within
        CLOSE_STALL seconds when its servers do not answer: SIGTERM ends the daemon in 5 s."""


class Sink:
    def write(self, record: Record) -> None:
        raise NotImplementedError

    def write_batch(self, records: list[Record]) -> None:
        """write() each record, in order. A sink may do the per-call work once for the
        batch (the transactional Kafka sink polls its producer once)."""
        for record in records:
            self.write(record)

    def skip(self, record: Record) -> None:
        """A record a filter kept back (or the ingress's marker for a run of them, offset =
        the run's last): not written, but a durable sink counts its position as delivered,
        so that nothing reports it lost and a resend drops it as a repeat."""

    def poll(self) -> None:
        """Called between records and when idle (delivery callbacks, timers)."""

    def metrics(self) -> list[Metric]:
        return []

    def delivered_positions(self) -> dict[tuple[str, int], int] | None:
        """Durable sinks: per source (topic, partition), the offset up to which every
        record is confirmed delivered. None for sinks without durable positions."""
        return None

    def problem(self) -> str | None:
        """As Source.problem."""
        return None

    def initial_positions(self) -> dict[tuple[str, int], int]:
        """Sinks that keep positions in the destination: what it holds at start, per
        source (topic, partition) (the egress's own positions file is then a cache)."""
        return {}

    def defer_loss(self, report) -> bool:
        """A sink that shares its destination with other egresses (diode pairs) takes a
        loss the link found, checks it against what the others delivered, and reports
        what is still missing itself. False: the egress reports it as it is."""
        return False

    def status(self) -> dict:
        """Extra fields for this channel in the node's status file."""
        return {}

    def close(self) -> None:
        """Deliver what is pending while deliveries progress (CLOSE_STALL, CLOSE_LIMIT);
        report by range what could not be delivered (ChannelContext.report_loss), never drop
        it silently."""


def run_bounded(calls: dict[str, Callable[[], None]], timeout: float) -> list[str]:
    """Run each call in a daemon thread of its own and wait for all of them up to `timeout`
    seconds in total; return the names of those still running. For client libraries whose
    close has no timeout (librdkafka's consumer close waits for a group coordinator): a call
    still running when the daemon exits ends with the process."""
    import time

    threads = []
    for name, call in calls.items():
        t = threading.Thread(target=call, name=f"close:{name}", daemon=True)
        t.start()
        threads.append((name, t))
    deadline = time.monotonic() + timeout
    for _, t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    return [name for name, t in threads if t.is_alive()]
