"""Stream accounting: which records were lost, named by channel, topic, partition and offsets.

Each record carries its stream position (Kafka offset, or for UDP its sequence in
the session), the position of the record sent before it in the same stream, and a
per-session stream sequence number. From these the egress tells three things apart:

* a gap: the stream sequence jumps, so records sent in this session never arrived;
* a resume gap: the first record after an ingress restart says the one before it was
  at offset P, but the egress delivered only up to L < P (the old ingress handed
  L+1..P to the link and they never crossed);
* a tail loss: a heartbeat says the stream reached sequence S / offset P, and all
  blocks sent before that heartbeat are resolved, yet the egress has seen less.

Durable streams (Kafka) keep their last delivered offset across sessions and drop
repeats at or below it; session-scoped streams (UDP) start again with each session,
and their positions are dense (offset == stream sequence).

Two more reasons come from restarts of the egress itself (docs/reliability.md):

* in_doubt: records handed to a sink that the egress cannot tell were delivered: after
  a kill -9, those between what the sink had confirmed and what was handed over when
  the frontier was last persisted; after a start without any persisted frontier (a
  wiped state directory), the records of a stream before the first one that arrives.
"""

from __future__ import annotations

from dataclasses import dataclass

from .heartbeat import StreamMark
from .records import Record

StreamKey = tuple[int, str, int]  # channel id, topic, partition


@dataclass(frozen=True, slots=True)
class LossReport:
    channel_id: int
    topic: str
    partition: int
    first_offset: int | None  # None: not known (the range starts before anything seen)
    last_offset: int
    count: int | None  # None: offsets may have holes (compaction) so the count is not known
    reason: str

    def describe(self) -> str:
        first = "?" if self.first_offset is None else str(self.first_offset)
        n = "an unknown number of" if self.count is None else str(self.count)
        where = f"topic={self.topic} partition={self.partition} " if self.topic else ""
        return f"{n} records lost ({self.reason}): {where}offsets {first}-{self.last_offset}"


IN_DOUBT = "in_doubt"


@dataclass(frozen=True, slots=True)
class StreamPosition:
    """One stream's accounting as the egress persists it with its block frontier."""
    channel_id: int
    topic: str
    partition: int
    durable: bool
    stream_seq: int  # last stream sequence handed over in the session (0: none yet)
    last_offset: int | None  # highest offset delivered or accounted as lost
    last_seen_offset: int | None  # offset of the record at stream_seq


@dataclass(slots=True)
class _Stream:
    durable: bool
    last_offset: int | None = None  # highest offset delivered or accounted as lost
    stream_seq: int = 0  # last stream sequence seen in this session (0: none yet)
    last_seen_offset: int | None = None  # offset of that record


class StreamTracker:
    def __init__(self, durable_positions: dict[StreamKey, int] | None = None):
        self._streams: dict[StreamKey, _Stream] = {}
        for key, offset in (durable_positions or {}).items():
            self._streams[key] = _Stream(durable=True, last_offset=offset)
        self.sessions = 0  # sessions seen (new_session calls)
        # Set by an egress that starts without a persisted frontier (its state directory
        # was wiped): an earlier run may have delivered what precedes the first record of
        # a stream in the first session, so a head gap is in doubt, not lost.
        self.history_unknown = False

    def positions(self) -> list[StreamPosition]:
        return [StreamPosition(c, t, p, s.durable, s.stream_seq, s.last_offset,
                               s.last_seen_offset)
                for (c, t, p), s in self._streams.items()]

    def restore(self, positions: list[StreamPosition], sessions: int) -> None:
        """Take up the accounting persisted with a frontier; a durable position known from
        the sink (positions.json) that is further along wins (no duplicates)."""
        for p in positions:
            key = (p.channel_id, p.topic, p.partition)
            known = self._streams.get(key)
            last = p.last_offset
            if known is not None and known.last_offset is not None and \
                    (last is None or known.last_offset > last):
                last = known.last_offset
            self._streams[key] = _Stream(p.durable, last, p.stream_seq, p.last_seen_offset)
        self.sessions = sessions
        self.history_unknown = False

    def doubt(self, delivered: dict[StreamKey, tuple[int | None, int]]) -> list[LossReport]:
        """Records handed over in this session beyond what the sinks confirmed delivered:
        `delivered` maps a stream to (its stream sequence in this session, or None when
        the confirmation is from another session or has none; the offset)."""
        reports = []
        for key, st in self._streams.items():
            if st.stream_seq == 0 or st.last_seen_offset is None:
                continue  # nothing of this stream handed over in the session
            seq, offset = delivered.get(key, (None, None))
            if offset is not None and offset >= st.last_seen_offset:
                continue
            ch, topic, part = key
            last = st.last_seen_offset
            first: int | None
            count: int | None
            if not st.durable:  # dense: offset n is the session's n-th record
                start = last - st.stream_seq + 1 if offset is None else offset + 1
                first, count = start, last - start + 1
            else:
                first = None if offset is None else offset + 1
                count = st.stream_seq - seq if seq is not None else \
                    (st.stream_seq if offset is None else None)
            reports.append(LossReport(ch, topic, part, first, last, count, IN_DOUBT))
        return reports

    def delivered_offset(self, key: StreamKey) -> int | None:
        """A durable stream's highest offset delivered or accounted for; None if none."""
        st = self._streams.get(key)
        return None if st is None or not st.durable else st.last_offset

    def durable_positions(self) -> dict[StreamKey, int]:
        return {k: s.last_offset for k, s in self._streams.items()
                if s.durable and s.last_offset is not None}

    def new_session(self) -> None:
        """Forget per-session counters; session-scoped streams start over."""
        self.sessions += 1
        for key in [k for k, s in self._streams.items() if not s.durable]:
            del self._streams[key]
        for s in self._streams.values():
            s.stream_seq = 0
            s.last_seen_offset = None

    def accept(self, channel_id: int, rec: Record) -> tuple[bool, LossReport | None]:
        """Account for one record in stream order: (deliver it?, loss found before it)."""
        key = (channel_id, rec.topic, rec.partition)
        st = self._streams.get(key)
        if st is None:
            st = self._streams[key] = _Stream(durable=rec.durable)
        report = self._gap(key, st, rec.stream_seq, rec.prev_offset, "gap")
        st.stream_seq = rec.stream_seq
        st.last_seen_offset = rec.offset
        if st.durable and st.last_offset is not None and rec.offset <= st.last_offset:
            return False, report
        st.last_offset = rec.offset
        return True, report

    def accept_many(self, channel_id: int, records: list[Record]
                    ) -> tuple[list[list[Record] | LossReport], int]:
        """accept() for each record of a block, in order: the runs of records to deliver
        with the loss found before a record between them, and how many were repeats.

        A record that continues its stream (the next stream sequence, after what was
        delivered) is taken here without accept()'s calls; any other goes to accept():
        the egress runs this for every record."""
        out: list[list[Record] | LossReport] = []
        run: list[Record] = []
        repeats = 0
        streams = self._streams
        key: StreamKey | None = None
        st: _Stream | None = None
        for rec in records:
            k = (channel_id, rec.topic, rec.partition)
            if k != key:
                key, st = k, streams.get(k)
            if st is not None and rec.stream_seq == st.stream_seq + 1:
                last = st.last_offset
                if not st.durable:
                    st.stream_seq = rec.stream_seq
                    st.last_seen_offset = rec.offset
                    st.last_offset = rec.offset
                    run.append(rec)
                    continue
                if last is not None and rec.prev_offset <= last:  # no gap (see _gap)
                    st.stream_seq = rec.stream_seq
                    st.last_seen_offset = rec.offset
                    if rec.offset <= last:
                        repeats += 1
                    else:
                        st.last_offset = rec.offset
                        run.append(rec)
                    continue
            deliver, report = self.accept(channel_id, rec)
            st = streams[k]  # (accept() creates a new stream's state)
            if report is not None:
                if run:
                    out.append(run)
                    run = []
                out.append(report)
            if deliver:
                run.append(rec)
            else:
                repeats += 1
        if run:
            out.append(run)
        return out, repeats

    def tail_check(self, marks: list[StreamMark], only_session_scoped: bool = False
                   ) -> list[LossReport]:
        """Compare heartbeat high-water marks with what arrived (all earlier blocks resolved)."""
        reports = []
        for m in marks:
            if only_session_scoped and m.durable:
                continue
            key = (m.channel_id, m.topic, m.partition)
            st = self._streams.get(key)
            if st is None:
                st = self._streams[key] = _Stream(durable=m.durable)
            if m.stream_seq <= st.stream_seq:
                continue
            report = self._gap(key, st, m.stream_seq + 1, m.last_offset, "tail")
            if report:
                reports.append(report)
            st.stream_seq = m.stream_seq
            st.last_seen_offset = m.last_offset
            if st.last_offset is None or m.last_offset > st.last_offset:
                st.last_offset = m.last_offset
        return reports

    def _gap(self, key: StreamKey, st: _Stream, next_seq: int, prev_offset: int,
             reason: str) -> LossReport | None:
        """Records between what the stream has seen and the one at next_seq (whose
        predecessor sits at prev_offset) are lost, if any."""
        missing = next_seq - st.stream_seq - 1
        ch, topic, part = key
        if self.history_unknown and st.stream_seq == 0 and st.last_offset is None:
            reason = IN_DOUBT  # before the first record of a stream, after a stateless start
        if not st.durable:
            if missing <= 0:
                return None
            return LossReport(ch, topic, part, prev_offset - missing + 1, prev_offset,
                              missing, reason)
        last = st.last_offset
        if last is not None and prev_offset <= last:
            return None  # everything up to prev_offset was delivered before (repeats)
        if missing <= 0 and prev_offset < 0:
            return None  # the sender knows of nothing before this record
        # (missing <= 0 with nothing delivered yet: an earlier session handed records up
        # to prev_offset to the link and none arrived; that is a resume gap too.)
        if missing > 0 and ((st.stream_seq > 0 and st.last_seen_offset == last)
                            or (last is None and self.sessions <= 1)):
            # The whole range lies in this session and nothing in it was a repeat. (Once
            # an earlier session was seen, a stream with nothing delivered may have lost
            # records of that session too: then the count is not known.)
            count = missing
        else:
            count = None
        if missing <= 0 and reason != IN_DOUBT:
            reason = "resume_gap"
        first = None if last is None else last + 1
        return LossReport(ch, topic, part, first, prev_offset, count, reason)
