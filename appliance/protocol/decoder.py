"""Receiver side of the link, sans I/O: datagrams in, records and loss reports out.

    dec = LinkDecoder(opener, DecoderSettings())
    for event in dec.feed(datagram, now):   # now: seconds, any monotonic clock
        ...
    for event in dec.tick(now):             # when no datagram is waiting to be fed
        ...
    cp = dec.checkpoint()                    # what the egress persists (session.py)
    events = dec.resume(cp, delivered)       # a restarted egress takes its session up

Events are the types in events.py; the per-session state is a session.Session.

Blocks are resolved strictly in sequence order: a block is delivered once k of its
symbols are in, or declared lost once it trails the newest block by more than
`reorder_window` blocks, or (in tick) once a later block or a heartbeat announcing one
has been known for `loss_timeout` seconds. The timeout is only applied in tick(), which
the shell calls when its socket is drained: a receiver that falls behind must not
declare blocks lost whose datagrams sit unread in its own buffer. Records therefore
leave in the order they were sent.

A datagram that is not a data symbol of the current session takes the general path,
which rejects the cheapest way first (docs/protocol.md, "Rejection order"): shape
(length, magic, version, type and mode), then key id, then the session's epoch against
the current one, then a rate-limited key derivation for a session not seen yet, and only
then the tag.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

from . import fec, heartbeat
from ._native import Aead
from .auth import Opener, RateLimit, session_epoch
from .blocks import Reassembler
from .compress import DEFAULT_MAX_BLOCK_BYTES, BlockTooLarge, Decompressor
from .errors import ProtocolError
from .events import (
    BlocksLost,
    Delivered,
    Event,
    HeartbeatReceived,
    Malformed,
    PeerMismatch,
    RecordsLost,
    SessionRefused,
    SessionResumed,
    SessionStarted,
)
from .heartbeat import Heartbeat, Metric, StreamMark
from .loss import LossReport, StreamKey, StreamTracker
from .session import Checkpoint, Pending, Session
from .wire import (
    KEY_ID,
    MAGIC,
    OVERHEAD,
    SESSION_ID,
    TYPE_AT,
    TYPE_DATA,
    TYPE_HEARTBEAT,
    TYPE_MASK,
    VERSION,
    VERSION_AT,
    Header,
)


@dataclass(frozen=True)
class DecoderSettings:
    reorder_window: int = 64  # blocks
    loss_timeout: float = 0.25  # seconds a missing block may trail a later one
    max_record_bytes: int = 512 * 1024 * 1024
    # A compressed block that would expand past this is dropped (counted malformed).
    compression_max_block_bytes: int = DEFAULT_MAX_BLOCK_BYTES


# Why datagrams were dropped (the egress.dropped_packets{reason} counter):
#   auth: the tag did not verify, the key id is unknown, or the link mode differs;
#   malformed: too short, no magic, impossible block geometry, a frame that does not parse;
#   replay: a session older than the current one, or a heartbeat seen before;
#   duplicate: a symbol already held for its block;
#   version: another protocol version (a half-upgraded pair; logged, rate-limited);
#   rate_limited: a session not seen yet: its first datagram, or the key-derivation
#     budget is spent (auth.DERIVE_RATE).
DROP_REASONS = ("auth", "malformed", "replay", "duplicate", "version", "rate_limited")
MAX_BLOCKS_AHEAD = 1 << 40  # a block this far past the frontier is nonsense
NOTICE_INTERVAL = 10.0  # seconds between two log-worthy events of the same kind
PROBE_RATE = 2.0  # tag checks a second of datagrams refused anyway, to name them in a log
HELD_SESSIONS = 16  # sessions whose key is pending, one datagram each kept for later
# A refused session's heartbeats say what its ingress sent; they are read, within these
# bounds, so its records are reported lost by range (REFUSED), not only by session.
REFUSED_SESSIONS = 16  # refused sessions whose announced streams are remembered
REFUSED_HEARTBEAT_GAP = 0.05  # s: at most one heartbeat of one refused session read per gap
REFUSED_HEARTBEAT_RATE = 20.0  # heartbeats of refused sessions read a second, in all
REFUSED = "session_refused"  # the loss reason: the egress refused the records' session

# A block's symbols as open_data gathers them (the general path makes one of a single
# symbol): (channel_id, block_seq, k, n, symbol size, [(symbol index, payload), ...]).
BlockSymbols = tuple[int, int, int, int, int, Sequence[tuple[int, bytes]]]


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
    records_filtered: int = 0  # records the ingress's filter kept back (its run markers)
    records_lost: int = 0
    records_lost_unknown: int = 0  # loss reports whose count is not known
    duplicates: int = 0
    heartbeats: int = 0


@dataclass(slots=True)
class _RefusedSession:
    """Per refused session: the last heartbeat read, and per stream the mark up to which
    its records are reported."""
    read_at: float = float("-inf")
    packet_number: int = -1
    # per stream: (stream_seq, last_offset) of the mark reported up to
    marks: dict[StreamKey, tuple[int, int]] = field(default_factory=dict)

    def announce(self, m: StreamMark, delivered: int | None) -> LossReport | None:
        key = (m.channel_id, m.topic, m.partition)
        prev = self.marks.get(key)
        if prev is not None and m.stream_seq <= prev[0]:
            return None
        self.marks[key] = (m.stream_seq, m.last_offset)
        if prev is not None:
            first, count = prev[1] + 1, m.stream_seq - prev[0]
        elif not m.durable:  # session-scoped: offset n is the session's n-th record
            first, count = m.last_offset - m.stream_seq + 1, m.stream_seq
        else:  # a Kafka partition: where this session started is not announced
            first, count = None, None
        if m.durable and delivered is not None:
            if m.last_offset <= delivered:
                return None  # a re-send of what the egress delivered already
            if first is None or first <= delivered:
                first, count = delivered + 1, None  # offsets may have holes (compaction)
        return LossReport(m.channel_id, m.topic, m.partition, first, m.last_offset, count,
                          REFUSED)


class _Notices:
    """Rate limits for the events that become log lines on bad input: at most one per
    key per NOTICE_INTERVAL, carrying how many datagrams it stands for."""

    def __init__(self, keep: int = 16):
        self._due: OrderedDict[object, tuple[float, int]] = OrderedDict()
        self._keep = keep

    def due(self, key: object, now: float) -> int | None:
        """Count one datagram; the count to report if an event is due now, else None."""
        at, count = self._due.pop(key, (now, 0))
        count += 1
        if now >= at:
            self._due[key] = (now + NOTICE_INTERVAL, 0)
            out: int | None = count
        else:
            self._due[key] = (at, count)
            out = None
        if len(self._due) > self._keep:
            self._due.popitem(last=False)
        return out


class LinkDecoder:
    def __init__(self, opener: Opener, settings: DecoderSettings | None = None,
                 durable_positions: dict[StreamKey, int] | None = None, floor_epoch: int = 0,
                 history_unknown: bool = False) -> None:
        """floor_epoch: sessions whose epoch is not later than this are refused as
        replays (a restarted egress passes the epoch of the session it was in).
        history_unknown: no persisted frontier, so a head gap is in doubt, not lost."""
        self._opener = opener
        self.settings = settings or DecoderSettings()
        self.stats = DecoderStats()
        self.tracker = StreamTracker(durable_positions)
        self._decompressor = Decompressor(self.settings.compression_max_block_bytes)
        self.tracker.history_unknown = history_unknown
        self.session: Session | None = None
        self.floor_epoch = floor_epoch
        # A session the operator accepted (`ddc accept-session`) although its epoch is
        # older: an ingress that lost its state and whose clock is behind.
        self.allowed_session: int | None = None
        self.last_heartbeat: Heartbeat | None = None
        # The sender's metrics of the newest heartbeat, from all its pages (a page
        # carries only part of them), by name and tags.
        self.sender_metrics: dict[tuple[str, tuple[tuple[str, str], ...]], Metric] = {}
        self.last_heartbeat_at: float | None = None
        self._notices = _Notices()
        self._now = 0.0  # of the feed or tick in progress (for notices deep in delivery)
        self._probes = RateLimit(PROBE_RATE, PROBE_RATE)
        self._refused_reads = RateLimit(REFUSED_HEARTBEAT_RATE, REFUSED_HEARTBEAT_RATE)
        self._refused_sessions: OrderedDict[int, _RefusedSession] = OrderedDict()
        # The newest datagram of each of a few sessions whose key was not derived yet
        # (first sighting, or the budget spent): fed again once that session is taken up,
        # so a new session loses nothing to the derivation rules.
        self._held: OrderedDict[tuple[int, int], bytes] = OrderedDict()

    @property
    def session_id(self) -> int | None:
        return None if self.session is None else self.session.id

    # -- public ---------------------------------------------------------------
    def feed(self, datagram: bytes, now: float) -> list[Event]:
        return self.feed_many([datagram], now)

    def feed_many(self, datagrams: list[bytes], now: float) -> list[Event]:
        """Events from a batch of datagrams (one receive call's worth), in order.

        The receiver's hot loop, a quarter of a million datagrams a second: the data
        datagrams of the current session are opened in one native call for the batch
        and come back gathered by block (Aead.open_data), so the work here is one call
        per block, not per datagram; the cheap rejections come back as drop reasons.
        Everything else takes the general path, one by one, in its place in the batch.
        """
        self._now = now
        st = self.stats
        st.packets_received += len(datagrams)
        st.bytes_received += sum(map(len, datagrams))
        events: list[Event] = []
        s = self.session
        if s is None or s.aead is None:  # no session key yet: every datagram is news
            for dg in datagrams:
                self._general(dg, now, events)
        else:
            self._take_opened(s, s.aead.open_data(datagrams, s.key_id, s.id_bytes,
                                                  self._opener.data_type), now, events)
        self._advance_if_due(now, events)
        return events

    def tick(self, now: float) -> list[Event]:
        self._now = now
        events: list[Event] = []
        self._advance(now, events, timeouts=True)
        return events

    def heartbeat_age(self, now: float) -> float | None:
        return None if self.last_heartbeat_at is None else now - self.last_heartbeat_at

    def checkpoint(self) -> Checkpoint | None:
        """The resolved state of the current session (None before the first)."""
        s = self.session
        if s is None:
            return None
        return s.checkpoint(self.tracker.positions(), self.tracker.sessions)

    def resume(self, cp: Checkpoint, delivered: dict[StreamKey, tuple[int | None, int]]
               ) -> list[Event]:
        """Take up a persisted session: `delivered` is what the sinks confirmed, per
        stream (its stream sequence in cp's session or None, and offset); what was
        handed over beyond it is reported in doubt."""
        self.session = Session.resume(cp, self._opener.session_aead(cp.key_id, cp.session_id))
        self.floor_epoch = max(self.floor_epoch, session_epoch(cp.session_id))
        self.tracker.restore(list(cp.streams), cp.sessions)
        events: list[Event] = [SessionResumed(cp.session_id, cp.block_frontier)]
        self._report(self.tracker.doubt(delivered), events)
        return events

    def _take_opened(self, s: Session, items: Sequence[BlockSymbols | str | bytes], now: float,
                     events: list[Event]) -> None:
        """What open_data made of a batch, in order: a block's symbols (one item per block
        and batch: the hot loop), a drop reason, or a datagram for the general path."""
        dropped = self.stats.dropped
        take = self._take_symbols
        for item in items:
            # type(), not isinstance: an exact check, and the one mypy narrows by.
            if type(item) is tuple:
                if self.session is s:
                    take(s, item, now)
                else:  # the old session's, after a switch earlier in this batch
                    dropped["replay"] += len(item[5])
            elif type(item) is str:
                dropped[item] += 1
            else:  # only bytes are left (mypy narrows by type() one way only)
                self._general(cast(bytes, item), now, events)

    # -- the general path, step by step -------------------------------------------
    def _general(self, datagram: bytes, now: float, events: list[Event]) -> None:
        opened = self._open(datagram, now, events)
        if opened is None:
            return
        h, payload = opened
        s = self.session
        held = None
        if s is None or h.session_id != s.id:
            if s is not None:  # what the old session completed in this batch leaves first
                self._advance(now, events, timeouts=False)
            s = self._switch_session(h, events)
            held = self._held.pop((h.key_id, h.session_id), None)
        if not s.placed:
            s.place(h.block_seq, self.settings.reorder_window)
        if h.packet_type == TYPE_HEARTBEAT:
            self._on_heartbeat(s, h, payload, now, events)
            self._advance(now, events, timeouts=False)
        else:
            self._take_symbols(s, (h.channel_id, h.block_seq, h.k, h.n, len(payload),
                                   ((h.symbol_index, payload),)), now)
        if held is not None:
            self.stats.dropped["rate_limited"] -= 1  # not dropped after all
            self._general(held, now, events)

    def _open(self, dg: bytes, now: float, events: list[Event]) -> tuple[Header, bytes] | None:
        """The rejection ladder, cheapest first; (header, payload) of an authentic datagram
        of a session the egress may take, else None (counted)."""
        dropped = self.stats.dropped
        if len(dg) < OVERHEAD or dg[:2] != MAGIC:
            dropped["malformed"] += 1
            return None
        if dg[VERSION_AT] != VERSION:
            dropped["version"] += 1
            self._mismatch("version", str(VERSION), str(dg[VERSION_AT]), now, events)
            return None
        opener = self._opener
        if dg[TYPE_AT] not in opener.type_bytes:
            if dg[TYPE_AT] & TYPE_MASK in (TYPE_DATA, TYPE_HEARTBEAT):
                dropped["auth"] += 1  # the other mode: not the protection configured
                ours = "encrypt" if opener.encrypt else "authenticate"
                self._mismatch("mode", ours, "authenticate" if opener.encrypt else "encrypt",
                               now, events)
            else:
                dropped["malformed"] += 1
            return None
        key_id = int.from_bytes(dg[KEY_ID])
        if not opener.knows(key_id):
            dropped["auth"] += 1
            return None
        session_id = int.from_bytes(dg[SESSION_ID])
        s = self.session
        aead: Aead | None
        if s is not None and session_id == s.id and key_id == s.key_id and s.aead is not None:
            aead = s.aead
        elif not self._admissible(session_id):
            dropped["replay"] += 1
            self._refused(dg, key_id, session_id, now, events)
            return None
        else:
            aead = opener.session_aead(key_id, session_id, now)  # bounded: not verified yet
            if aead is None:
                dropped["rate_limited"] += 1
                held = self._held
                held[(key_id, session_id)] = dg
                held.move_to_end((key_id, session_id))
                if len(held) > HELD_SESSIONS:
                    held.popitem(last=False)
                return None
        opened = aead.open(dg, Header)
        if opened is None:
            dropped["auth"] += 1
            return None
        if isinstance(opened, str):
            dropped[opened] += 1
            return None
        return opened

    def _admissible(self, session_id: int) -> bool:
        s = self.session
        return (session_epoch(session_id) > self.floor_epoch
                or (s is not None and session_id == s.id)
                or session_id == self.allowed_session)

    def _refused(self, dg: bytes, key_id: int, session_id: int, now: float,
                 events: list[Event]) -> None:
        """An older session's datagram, dropped. If a log line for that session is due and
        the probe budget allows, check its tag: only an authentic one is worth a line."""
        if dg[TYPE_AT] & TYPE_MASK == TYPE_HEARTBEAT:
            self._refused_heartbeat(dg, key_id, session_id, now, events)
        notices = self._notices
        count = notices.due(("refused", session_id), now)
        if count is None or not self._probes.allow(now):
            return
        if self._probe(dg, key_id, session_id) is None:  # bounded by the probes
            return
        current = self.session_id
        events.append(SessionRefused(session_id, key_id, current, self.floor_epoch, count))

    def _refused_heartbeat(self, dg: bytes, key_id: int, session_id: int, now: float,
                           events: list[Event]) -> None:
        """What a refused session's ingress announced it sent: every stream's records up
        to its heartbeat's mark are reported lost (REFUSED), each once. Its records are
        not decoded, so those sent after its last heartbeat read here are named only by
        the session_refused line. Bounded: a gap per session, a rate in all, a few
        sessions remembered; a replayed heartbeat (packet number not higher) is ignored."""
        known = self._refused_sessions.get(session_id)
        if known is not None and now - known.read_at < REFUSED_HEARTBEAT_GAP:
            return
        if not self._refused_reads.allow(now):
            return
        opened = self._probe(dg, key_id, session_id)
        if opened is None:
            return
        h, payload = opened
        try:
            hb = heartbeat.decode(payload)
        except ProtocolError:
            return
        if known is None:
            known = self._refused_sessions[session_id] = _RefusedSession()
            if len(self._refused_sessions) > REFUSED_SESSIONS:
                self._refused_sessions.popitem(last=False)
        self._refused_sessions.move_to_end(session_id)
        known.read_at = now
        if h.packet_number <= known.packet_number:
            return
        known.packet_number = h.packet_number
        for m in hb.streams:
            report = known.announce(m, self.tracker.delivered_offset(
                (m.channel_id, m.topic, m.partition)))
            if report is not None:
                events.append(RecordsLost(session_id, report))

    def _probe(self, dg: bytes, key_id: int, session_id: int) -> tuple[Header, bytes] | None:
        """A refused session's datagram opened, if authentic. Derives the key when not
        cached: the callers bound how often."""
        aead = self._opener.session_aead(key_id, session_id)
        opened = None if aead is None else aead.open(dg, Header)
        return None if opened is None or isinstance(opened, str) else opened

    def _mismatch(self, what: str, ours: str, theirs: str, now: float,
                  events: list[Event]) -> None:
        count = self._notices.due(what, now)  # one per kind: forged bytes vary the value
        if count is not None:
            events.append(PeerMismatch(what, ours, theirs, count))

    def _switch_session(self, h: Header, events: list[Event]) -> Session:
        previous = self.session
        tracker = self.tracker
        discarded = 0
        if previous is not None:
            discarded = len(previous.pending) + len(previous.ready)
            # Session-scoped streams (UDP) will never be re-sent: what the old session
            # announced and we did not get is lost. Durable streams (Kafka) resume from
            # the new ingress's committed offsets and are checked on their first record.
            for _, hb in previous.tail_checks:
                self._report(tracker.tail_check(hb.streams, only_session_scoped=True), events)
            tracker.history_unknown = False  # this egress saw the session before
        tracker.new_session()
        s = self.session = Session(h.session_id, h.key_id,
                                   self._opener.session_aead(h.key_id, h.session_id),
                                   placed=not tracker.history_unknown)
        self.floor_epoch = session_epoch(h.session_id)
        if h.session_id == self.allowed_session:
            self.allowed_session = None
        self.last_heartbeat = None
        self.sender_metrics = {}
        events.append(SessionStarted(h.session_id, None if previous is None else previous.id,
                                     discarded))
        return s

    def _on_heartbeat(self, s: Session, h: Header, payload: bytes, now: float,
                      events: list[Event]) -> None:
        try:
            hb = heartbeat.decode(payload)
        except ProtocolError as exc:
            self.stats.dropped["malformed"] += 1
            events.append(Malformed(h.session_id, 0, h.block_seq, str(exc)))
            return
        accepted, newer = s.heartbeats.admit(h.packet_number, hb.sent_at_ms)
        if not accepted:
            self.stats.dropped["replay"] += 1
            return
        if newer:
            self.sender_metrics = {}
        for m in hb.metrics:
            self.sender_metrics[(m.name, m.tags)] = m
        self.stats.heartbeats += 1
        self.last_heartbeat = hb
        self.last_heartbeat_at = now
        if h.block_seq > s.announced:
            s.announced = h.block_seq
            s.announced_at = now
            if s.blocked_since is None and h.block_seq > s.frontier:
                s.blocked_since = now
        s.tail_checks.append((h.block_seq, hb))
        events.append(HeartbeatReceived(h.session_id, hb))

    # -- symbols into blocks: the hot step, one call per block ----------------------
    def _take_symbols(self, s: Session, item: BlockSymbols, now: float) -> None:
        channel_id, seq, k, n, size, pairs = item
        st = self.stats
        if seq < s.frontier or seq in s.ready:
            st.late_symbols += len(pairs)
            return
        pending = s.pending
        p = pending.get(seq)
        if p is None:
            if seq - s.frontier > MAX_BLOCKS_AHEAD:
                st.dropped["malformed"] += len(pairs)
                return
            p = pending[seq] = Pending(k, n, channel_id, size, now)
            if seq > s.highest:
                s.highest = seq
            if s.blocked_since is None and seq > s.frontier:
                s.blocked_since = now
        elif k != p.k or n != p.n or channel_id != p.channel_id or size != p.size:
            st.dropped["malformed"] += len(pairs)
            return
        symbols = p.symbols
        had = len(symbols)
        symbols.update(pairs)
        have = len(symbols)
        st.dropped["duplicate"] += len(pairs) - (have - had)
        if have < k:
            return
        # Complete. Symbols past the k-th are spare redundancy, like those that
        # arrive after the block is resolved.
        st.late_symbols += have - k
        del pending[seq]
        if any(i not in symbols for i in range(k)):
            st.fec_recovered += 1
        s.ready[seq] = (channel_id, fec.decode(symbols, k, n, size), p.first_seen)

    # -- in-order resolution ------------------------------------------------------
    def _advance_if_due(self, now: float, events: list[Event]) -> None:
        """Only completed blocks or the reorder window can move things without the
        timeout (tick() applies that): skip the call when neither can."""
        s = self.session
        if s is not None and (s.frontier in s.ready or
                              s.highest - s.frontier >= self.settings.reorder_window):
            self._advance(now, events, timeouts=False)

    def _advance(self, now: float, events: list[Event], timeouts: bool) -> None:
        s = self.session
        if s is None:
            return
        window, loss_timeout = self.settings.reorder_window, self.settings.loss_timeout
        while True:
            f = s.frontier
            item = s.ready.pop(f, None)
            if item is not None:
                self._deliver_block(s, f, item, events)
                s.frontier = f + 1
                s.blocked_since = self._due_since(s, f + 1)
                continue
            if not (s.highest > f or s.announced > f):
                break  # nothing says block f is complete on the sender's side yet
            if s.highest - f >= window or (
                    timeouts and s.blocked_since is not None
                    and now - s.blocked_since >= loss_timeout):
                self._lose_blocks(s, f, events)
                s.blocked_since = self._due_since(s, s.frontier)
                continue
            break
        self._run_tail_checks(s, events)

    @staticmethod
    def _due_since(s: Session, f: int) -> float | None:
        """Since when block f has been known to be overdue (a later block, or a heartbeat)."""
        times = [p.first_seen for seq, p in s.pending.items() if seq > f]
        times += [r[2] for seq, r in s.ready.items() if seq > f]
        if s.announced > f:
            times.append(s.announced_at)  # not `now`: it was announced back then
        return min(times) if times else None

    def _lose_blocks(self, s: Session, f: int, events: list[Event]) -> None:
        p = s.pending.pop(f, None)
        if p is not None:
            s.frontier = f + 1
            if f >= s.joined_at:
                events.append(BlocksLost(s.id, f, f, p.channel_id, len(p.symbols), p.k))
                self.stats.blocks_lost += 1
            return
        # No datagram of f arrived: lose the whole run of empty blocks up to the next known.
        known = [seq for seq in (*s.pending, *s.ready) if seq > f]
        stop = min(known) if known else max(s.highest + 1, s.announced)
        stop = max(stop, f + 1)
        s.frontier = stop
        first = max(f, s.joined_at)  # below where a mid-session join began: not ours
        if first < stop:
            events.append(BlocksLost(s.id, first, stop - 1, None, 0, 0))
            self.stats.blocks_lost += stop - first

    def _deliver_block(self, s: Session, seq: int, item: tuple[int, bytes, float],
                       events: list[Event]) -> None:
        channel_id, payload, _ = item
        reasm = s.reassemblers.get(channel_id)
        if reasm is None:
            reasm = s.reassemblers[channel_id] = Reassembler(self.settings.max_record_bytes,
                                                             self._decompressor)
        records, error = reasm.feed(seq, payload)
        if error:
            self.stats.dropped["malformed"] += 1
            exc = reasm.last_error
            if isinstance(exc, BlockTooLarge):
                # Every block of such a pair would say so: one line per interval, naming
                # both bounds, not a malformed line per block.
                self._mismatch("compression", str(exc.bound), str(exc.size), self._now, events)
            else:
                events.append(Malformed(s.id, channel_id, seq, error))
        else:
            self.stats.blocks_ok += 1
        if not records:
            return
        outcomes, repeats = self.tracker.accept_many(channel_id, records)
        stats = self.stats
        stats.duplicates += repeats
        for outcome in outcomes:
            if not isinstance(outcome, list):
                self._report([outcome], events)
                continue
            # A filtered-run marker goes to the sink too (in stream order): a durable
            # sink moves its position over the run without writing anything.
            filtered = [rec.filtered for rec in outcome if rec.filtered]
            stats.records_filtered += sum(filtered)
            stats.records_delivered += len(outcome) - len(filtered)
            events.append(Delivered(channel_id, outcome))

    def _run_tail_checks(self, s: Session, events: list[Event]) -> None:
        checks = s.tail_checks
        while checks and checks[0][0] <= s.frontier:
            _, hb = checks.popleft()
            self._report(self.tracker.tail_check(hb.streams), events)

    def _report(self, reports: list[LossReport], events: list[Event]) -> None:
        sid = self.session_id or 0
        for r in reports:
            if r.count is None:
                self.stats.records_lost_unknown += 1
            else:
                self.stats.records_lost += r.count
            events.append(RecordsLost(sid, r))
