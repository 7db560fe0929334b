"""What the link decoder tells its shell: one typed union, like h11's _events.py.

Every call into LinkDecoder (feed, feed_many, tick, resume) returns a list of these, in
the order things happened on the link. The shell (appliance/egress.py) hands Delivered
records to sinks and turns the rest into log lines and counters; nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from .heartbeat import Heartbeat
from .loss import LossReport
from .records import Record


@dataclass(frozen=True, slots=True)
class SessionEvent:
    """Something that happened in one link session (the session_id every event but
    Delivered names first; the egress's log lines and loss reports carry it)."""
    session_id: int


@dataclass(frozen=True, slots=True)
class Delivered:
    """Records of one channel, in stream order, ready for its sink: a run of a block's
    records between the losses found in it (one event per record cost the egress more
    than the record's decoding)."""
    channel_id: int
    records: list[Record]


@dataclass(frozen=True, slots=True)
class RecordsLost(SessionEvent):
    """Records that will never be delivered, or (reason "in_doubt") that may have been
    delivered by an earlier run of the egress that stopped without saying so."""
    report: LossReport


@dataclass(frozen=True, slots=True)
class BlocksLost(SessionEvent):
    first_seq: int
    last_seq: int
    channel_id: int | None  # None when no datagram of the block arrived
    received: int  # symbols received (single block only)
    needed: int


@dataclass(frozen=True, slots=True)
class SessionStarted(SessionEvent):
    previous: int | None
    discarded_blocks: int


@dataclass(frozen=True, slots=True)
class SessionResumed(SessionEvent):
    """The egress restarted and took up the session its persisted frontier names."""
    block_frontier: int


@dataclass(frozen=True, slots=True)
class SessionRefused(SessionEvent):
    """An authentic session the egress will not move to: its epoch is not later than the
    current one's (an ingress that lost its state and whose clock is behind, or a replay
    of a captured older session). Rate-limited: at most one per session per interval."""
    key_id: int
    current: int | None  # the session the egress is in (None: only an epoch floor)
    floor_epoch: int
    datagrams: int  # datagrams of this session refused since the last such event


@dataclass(frozen=True, slots=True)
class PeerMismatch:
    """Datagrams the egress cannot take because the pair is set up differently: another
    protocol version (a half-upgraded pair), another link mode, or compressed blocks
    larger than this egress's compression_max_block_bytes. Rate-limited."""
    what: str  # "version", "mode" or "compression" (ours: the bound, theirs: a block's size)
    ours: str
    theirs: str
    datagrams: int  # dropped since the last such event (for "compression": blocks)


@dataclass(frozen=True, slots=True)
class HeartbeatReceived(SessionEvent):
    heartbeat: Heartbeat


@dataclass(frozen=True, slots=True)
class Malformed(SessionEvent):
    channel_id: int
    block_seq: int
    reason: str


Event = Union[Delivered, RecordsLost, BlocksLost, SessionStarted, SessionResumed,  # noqa: UP007
              SessionRefused, PeerMismatch, HeartbeatReceived, Malformed]
