"""The decoder's explicit state for one ingress session, like h11's _state.py.

A Session holds every per-session field the decoder used to keep loose: the block
frontier, the blocks in flight, the heartbeat replay guard, the per-channel frame
reassembly and the session key. Its resolved part, a Checkpoint (the frontier, the
replay guard and the stream accounting at that frontier), is exactly what the egress
persists and what a restarted egress resumes from (docs/reliability.md): everything
below the frontier was delivered or accounted for, so a resumed egress refuses it as a
replay and reports nothing of it lost. Blocks in flight are deliberately not persisted:
a kill -9 loses them as it loses the datagrams in the socket buffer, and the stream
accounting reports what they carried.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from ._native import Aead
from .blocks import Reassembler
from .heartbeat import Heartbeat
from .loss import StreamPosition
from .wire import session_bytes


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """What the egress persists of its session (docs/protocol.md, state files)."""
    session_id: int
    key_id: int
    block_frontier: int  # every block below was delivered or declared lost
    heartbeat_floor: int  # highest packet number of a heartbeat accepted
    heartbeat_sent_at: int | None  # send time of the newest heartbeat accepted
    sessions: int  # sessions the stream accounting has seen
    streams: tuple[StreamPosition, ...]


class Pending:
    """A block some of whose symbols arrived."""
    __slots__ = ("k", "n", "channel_id", "size", "symbols", "first_seen")

    def __init__(self, k: int, n: int, channel_id: int, size: int, now: float):
        self.k, self.n, self.channel_id, self.size = k, n, channel_id, size
        self.symbols: dict[int, bytes] = {}
        self.first_seen = now


class HeartbeatGuard:
    """Refuses a heartbeat seen before, or older than the newest: only a fresh heartbeat
    may refresh the link's liveness. Keeps the newest heartbeat (its send time and the
    packet numbers of its pages) and the highest packet number of those before it."""
    __slots__ = ("sent_at", "pages", "floor")

    def __init__(self, floor: int = -1, sent_at: int | None = None):
        self.sent_at = sent_at
        self.pages: set[int] = set()
        self.floor = floor

    def admit(self, packet_number: int, sent_at_ms: int) -> tuple[bool, bool]:
        """(accepted, a newer heartbeat than the last)."""
        newer = sent_at_ms != self.sent_at
        pages = self.pages
        if packet_number <= self.floor or packet_number in pages or (
                newer and pages and packet_number < max(pages)):
            return False, False
        if newer:
            self.floor = max(pages, default=self.floor)
            self.sent_at = sent_at_ms
            self.pages = pages = set()
        pages.add(packet_number)
        return True, newer

    def highest(self) -> int:
        return max(self.pages, default=self.floor)


class Session:
    __slots__ = ("id", "key_id", "aead", "id_bytes", "frontier", "joined_at", "placed",
                 "pending", "ready", "highest", "announced", "announced_at",
                 "blocked_since", "reassemblers", "tail_checks", "heartbeats")

    def __init__(self, session_id: int, key_id: int, aead: Aead | None, frontier: int = 0,
                 placed: bool = True):
        self.id = session_id
        self.key_id = key_id
        self.aead = aead  # the session key: the fast path opens data with it
        self.id_bytes = session_bytes(session_id)
        self.frontier = frontier  # the next block to resolve, in sequence order
        # A session joined in the middle (no persisted frontier to say where this
        # egress was): the frontier is placed at the first block seen, and nothing below
        # that block is reported lost: this egress cannot know it was not delivered.
        self.placed = placed
        self.joined_at = 0
        self.pending: dict[int, Pending] = {}
        self.ready: dict[int, tuple[int, bytes, float]] = {}  # seq: (channel, data, seen)
        self.highest = frontier - 1  # highest block seen
        self.announced = 0  # heartbeat: every block below this was sent
        self.announced_at = 0.0  # when `announced` last grew
        self.blocked_since: float | None = None  # since when `frontier` is overdue
        self.reassemblers: dict[int, Reassembler] = {}
        self.tail_checks: deque[tuple[int, Heartbeat]] = deque()
        self.heartbeats = HeartbeatGuard()

    def place(self, block_seq: int, window: int) -> None:
        """Joining mid-session: start a reorder window below the first block seen, so
        blocks that overtook each other still count, and report nothing below it."""
        self.placed = True
        self.joined_at = block_seq
        self.frontier = max(0, block_seq - window)
        self.highest = max(self.highest, self.frontier - 1)

    def checkpoint(self, streams: list[StreamPosition], sessions: int) -> Checkpoint:
        g = self.heartbeats
        return Checkpoint(self.id, self.key_id, self.frontier, g.highest(), g.sent_at,
                          sessions, tuple(streams))

    @classmethod
    def resume(cls, cp: Checkpoint, aead: Aead | None) -> Session:
        s = cls(cp.session_id, cp.key_id, aead, cp.block_frontier)
        s.heartbeats = HeartbeatGuard(cp.heartbeat_floor, cp.heartbeat_sent_at)
        return s
