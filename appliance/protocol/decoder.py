"""Receiver side of the link, sans I/O: datagrams in, records and loss reports out.

    dec = LinkDecoder(opener, DecoderSettings())
    for event in dec.feed(datagram, now):   # now: seconds, any monotonic clock
        ...
    for event in dec.tick(now):             # when no datagram is waiting to be fed
        ...

Blocks are resolved strictly in sequence order: a block is delivered once k of its
symbols are in, or declared lost once it trails the newest block by more than
`reorder_window` blocks, or (in tick) once a later block or a heartbeat announcing one
has been known for `loss_timeout` seconds. The timeout is only applied in tick(), which
the shell calls when its socket is drained: a receiver that falls behind must not
declare blocks lost whose datagrams sit unread in its own buffer. Records therefore
leave in the order they were sent.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from . import fec, heartbeat, wire
from .auth import Opener, session_epoch
from .blocks import Reassembler
from .errors import AuthenticationError, ProtocolError
from .heartbeat import Heartbeat, Metric
from .loss import LossReport, StreamTracker
from .records import Record


@dataclass(frozen=True)
class DecoderSettings:
    reorder_window: int = 64  # blocks
    loss_timeout: float = 0.25  # seconds a missing block may trail a later one
    max_record_bytes: int = 512 * 1024 * 1024


# -- events -------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Delivered:
    channel_id: int
    record: Record


@dataclass(frozen=True, slots=True)
class RecordsLost:
    session_id: int
    report: LossReport


@dataclass(frozen=True, slots=True)
class BlocksLost:
    session_id: int
    first_seq: int
    last_seq: int
    channel_id: int | None  # None when no datagram of the block arrived
    received: int  # symbols received (single block only)
    needed: int


@dataclass(frozen=True, slots=True)
class SessionStarted:
    session_id: int
    previous: int | None
    discarded_blocks: int


@dataclass(frozen=True, slots=True)
class HeartbeatReceived:
    session_id: int
    heartbeat: Heartbeat


@dataclass(frozen=True, slots=True)
class Malformed:
    session_id: int
    channel_id: int
    block_seq: int
    reason: str


DROP_REASONS = ("auth", "malformed", "replay", "duplicate")


@dataclass
class DecoderStats:
    packets_received: int = 0
    bytes_received: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))
    late_symbols: int = 0  # symbols of blocks already resolved: normal spare redundancy
    blocks_ok: int = 0
    fec_recovered: int = 0
    blocks_lost: int = 0
    records_delivered: int = 0
    records_lost: int = 0
    records_lost_unknown: int = 0  # loss reports whose count is not known
    duplicates: int = 0
    heartbeats: int = 0


class _Pending:
    __slots__ = ("k", "n", "channel_id", "size", "symbols", "first_seen")

    def __init__(self, k: int, n: int, channel_id: int, size: int, now: float):
        self.k, self.n, self.channel_id, self.size = k, n, channel_id, size
        self.symbols: dict[int, bytes] = {}
        self.first_seen = now


_LOST = object()


class LinkDecoder:
    def __init__(self, opener: Opener, settings: DecoderSettings | None = None,
                 durable_positions: dict | None = None, last_session: int = 0):
        """last_session: the session a previous run of this egress was in. A restarted
        egress takes that session up again, or any later one; older ones are replays."""
        self._opener = opener
        self.settings = settings or DecoderSettings()
        self.stats = DecoderStats()
        self.tracker = StreamTracker(durable_positions)
        self.session_id: int | None = None
        self.last_session = last_session
        self.last_heartbeat: Heartbeat | None = None
        # The sender's metrics of the newest heartbeat, from all its pages (a page
        # carries only part of them), by name and tags.
        self.sender_metrics: dict[tuple, Metric] = {}
        self.last_heartbeat_at: float | None = None
        self._reset_session_state()

    def _reset_session_state(self) -> None:
        self._frontier = 0
        self._pending: dict[int, _Pending] = {}
        self._ready: dict[int, tuple[int, bytes] | object] = {}
        self._highest = -1
        self._announced = 0  # heartbeat: every block below this was sent
        self._announced_at = 0.0  # when _announced last grew
        self._blocked_since: float | None = None
        self._reassemblers: dict[int, Reassembler] = {}
        self._fast: tuple | None = None  # (Aead, key id, session id) of the data seen
        self._tail_checks: deque[tuple[int, Heartbeat]] = deque()
        # Heartbeat replay guard: the newest heartbeat (its sent_at and the packet numbers
        # of its pages) and the highest packet number of the heartbeats before it.
        self._hb_sent_at: int | None = None
        self._hb_pns: set[int] = set()
        self._hb_floor = -1

    # -- public ---------------------------------------------------------------
    def feed(self, datagram: bytes, now: float) -> list:
        return self.feed_many([datagram], now)

    def feed_many(self, datagrams: list[bytes], now: float) -> list:
        """Events from a batch of datagrams (one receive call's worth), in order.

        The receiver's hot loop, a quarter of a million datagrams a second: the data
        datagrams of the current session are opened in one native call for the batch
        and come back gathered by block (Aead.open_data), so the work here is per block,
        not per datagram. Everything else takes the general path, one by one, in its
        place in the batch.
        """
        st = self.stats
        dropped = st.dropped
        st.packets_received += len(datagrams)
        st.bytes_received += sum(map(len, datagrams))
        pending = self._pending
        ready = self._ready
        max_symbols = fec.MAX_SYMBOLS
        events: list = []
        fast = self._fast
        if fast is not None:
            aead, fast_key_id, fast_session = fast
            datagrams = aead.open_data(datagrams, fast_key_id, fast_session)
        for item in datagrams:
            if item.__class__ is tuple:  # (channel, seq, k, n, size, [(index, payload)])
                if self.session_id != fast_session:
                    # The old session's, after a switch earlier in this batch.
                    dropped["replay"] += len(item[5])
                    continue
                channel_id, seq, k, n, size, pairs = item
            else:
                try:
                    h, payload = self._opener.open(item)
                except AuthenticationError:
                    dropped["auth"] += 1
                    continue
                except ProtocolError:
                    dropped["malformed"] += 1
                    continue
                if h.session_id != self.session_id:
                    current = self.last_session if self.session_id is None \
                        else self.session_id
                    if h.session_id != current and \
                            session_epoch(h.session_id) <= session_epoch(current):
                        dropped["replay"] += 1  # an older session: replayed, or a straggler
                        continue
                    # What the old session completed in this batch leaves before it ends.
                    self._advance(now, events, timeouts=False)
                    self._switch_session(h.session_id, events)
                    pending, ready = self._pending, self._ready
                if h.packet_type == wire.TYPE_HEARTBEAT:
                    self._on_heartbeat(h, payload, now, events)
                    self._advance(now, events, timeouts=False)
                    continue
                _, _, key_id, channel_id, session_id, _, seq, idx, k, n = h
                if k == 0 or n < k or idx >= n or n > max_symbols:
                    dropped["malformed"] += 1
                    continue
                if self._fast is None:
                    self._fast = (self._opener.session_aead(key_id, session_id), key_id,
                                  session_id)
                size, pairs = len(payload), ((idx, payload),)
            # Data symbols of one block.
            if seq < self._frontier or seq in ready:
                st.late_symbols += len(pairs)
                continue
            p = pending.get(seq)
            if p is None:
                if seq - self._frontier > 1 << 40:
                    dropped["malformed"] += len(pairs)
                    continue
                p = pending[seq] = _Pending(k, n, channel_id, size, now)
                if seq > self._highest:
                    self._highest = seq
                if self._blocked_since is None and seq > self._frontier:
                    self._blocked_since = now
            elif k != p.k or n != p.n or channel_id != p.channel_id or size != p.size:
                dropped["malformed"] += len(pairs)
                continue
            symbols = p.symbols
            had = len(symbols)
            symbols.update(pairs)
            have = len(symbols)
            dropped["duplicate"] += len(pairs) - (have - had)
            if have < k:
                continue
            # Complete. Symbols past the k-th are spare redundancy, like those that
            # arrive after the block is resolved.
            st.late_symbols += have - k
            del pending[seq]
            if any(i not in symbols for i in range(k)):
                st.fec_recovered += 1
            ready[seq] = (channel_id, fec.decode(symbols, k, n, size), p.first_seen)
        # Only completed blocks or the reorder window can move things without the
        # timeout (tick() applies that): skip the call when neither can.
        if self._frontier in ready or \
                self._highest - self._frontier >= self.settings.reorder_window:
            self._advance(now, events, timeouts=False)
        return events

    def tick(self, now: float) -> list:
        events: list = []
        self._advance(now, events, timeouts=True)
        return events

    def heartbeat_age(self, now: float) -> float | None:
        return None if self.last_heartbeat_at is None else now - self.last_heartbeat_at

    # -- sessions ---------------------------------------------------------------
    def _switch_session(self, session_id: int, events: list) -> None:
        previous = self.session_id
        discarded = len(self._pending) + len(self._ready)
        if previous is not None:
            # Session-scoped streams (UDP) will never be re-sent: what the old session
            # announced and we did not get is lost. Durable streams (Kafka) resume from
            # the new ingress's committed offsets and are checked on their first record.
            for _, hb in self._tail_checks:
                self._report(self.tracker.tail_check(hb.streams, only_session_scoped=True),
                             events)
        self.tracker.new_session()
        self._reset_session_state()
        self.session_id = session_id
        self.last_heartbeat = None
        self.sender_metrics = {}
        events.append(SessionStarted(session_id, previous, discarded))

    # -- packets ----------------------------------------------------------------
    def _on_heartbeat(self, h: wire.Header, payload: bytes, now: float, events: list) -> None:
        try:
            hb = heartbeat.decode(payload)
        except ProtocolError as exc:
            self.stats.dropped["malformed"] += 1
            events.append(Malformed(h.session_id, 0, h.block_seq, str(exc)))
            return
        # A heartbeat seen before (or an older one) must not refresh the link's liveness.
        pn = h.packet_number
        newer = hb.sent_at_ms != self._hb_sent_at
        if pn <= self._hb_floor or pn in self._hb_pns or (
                newer and self._hb_pns and pn < max(self._hb_pns)):
            self.stats.dropped["replay"] += 1
            return
        if newer:
            self._hb_floor = max(self._hb_pns, default=self._hb_floor)
            self._hb_sent_at = hb.sent_at_ms
            self._hb_pns = set()
            self.sender_metrics = {}
        self._hb_pns.add(pn)
        for m in hb.metrics:
            self.sender_metrics[(m.name, m.tags)] = m
        self.stats.heartbeats += 1
        self.last_heartbeat = hb
        self.last_heartbeat_at = now
        if h.block_seq > self._announced:
            self._announced = h.block_seq
            self._announced_at = now
            if self._blocked_since is None and h.block_seq > self._frontier:
                self._blocked_since = now
        self._tail_checks.append((h.block_seq, hb))
        events.append(HeartbeatReceived(h.session_id, hb))

    # -- in-order resolution ------------------------------------------------------
    def _advance(self, now: float, events: list, timeouts: bool) -> None:
        s = self.settings
        while True:
            f = self._frontier
            item = self._ready.pop(f, None)
            if item is not None:
                self._deliver_block(f, item, events)
                self._frontier = f + 1
                self._blocked_since = self._due_since(f + 1, now)
                continue
            if not (self._highest > f or self._announced > f):
                break  # nothing says block f is complete on the sender's side yet
            if self._highest - f >= s.reorder_window or (
                    timeouts and self._blocked_since is not None
                    and now - self._blocked_since >= s.loss_timeout):
                self._lose_blocks(f, events)
                self._blocked_since = self._due_since(self._frontier, now)
                continue
            break
        self._run_tail_checks(events)

    def _due_since(self, f: int, now: float) -> float | None:
        """Since when block f has been known to be overdue (a later block, or a heartbeat)."""
        times = [p.first_seen for seq, p in self._pending.items() if seq > f]
        times += [r[2] for seq, r in self._ready.items() if seq > f]
        if self._announced > f:
            times.append(self._announced_at)  # not `now`: it was announced back then
        return min(times) if times else None

    def _lose_blocks(self, f: int, events: list) -> None:
        p = self._pending.pop(f, None)
        if p is not None:
            events.append(BlocksLost(self.session_id, f, f, p.channel_id, len(p.symbols), p.k))
            self.stats.blocks_lost += 1
            self._frontier = f + 1
            return
        # No datagram of f arrived: lose the whole run of empty blocks up to the next known.
        known = [s for s in (*self._pending, *self._ready) if s > f]
        stop = min(known) if known else max(self._highest + 1, self._announced)
        stop = max(stop, f + 1)
        events.append(BlocksLost(self.session_id, f, stop - 1, None, 0, 0))
        self.stats.blocks_lost += stop - f
        self._frontier = stop

    def _deliver_block(self, seq: int, item, events: list) -> None:
        channel_id, payload, _ = item
        reasm = self._reassemblers.get(channel_id)
        if reasm is None:
            reasm = self._reassemblers[channel_id] = Reassembler(self.settings.max_record_bytes)
        records, error = reasm.feed(seq, payload)
        if error:
            self.stats.dropped["malformed"] += 1
            events.append(Malformed(self.session_id, channel_id, seq, error))
        else:
            self.stats.blocks_ok += 1
        tracker = self.tracker
        for rec in records:
            deliver, report = tracker.accept(channel_id, rec)
            if report:
                self._report([report], events)
            if deliver:
                self.stats.records_delivered += 1
                events.append(Delivered(channel_id, rec))
            else:
                self.stats.duplicates += 1

    def _run_tail_checks(self, events: list) -> None:
        checks = self._tail_checks
        while checks and checks[0][0] <= self._frontier:
            _, hb = checks.popleft()
            self._report(self.tracker.tail_check(hb.streams), events)

    def _report(self, reports: list[LossReport], events: list) -> None:
        for r in reports:
            if r.count is None:
                self.stats.records_lost_unknown += 1
            else:
                self.stats.records_lost += r.count
            events.append(RecordsLost(self.session_id, r))
