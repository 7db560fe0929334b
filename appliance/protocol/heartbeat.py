"""Heartbeat bodies: liveness, sender counters, per-stream high-water marks, metrics.

A heartbeat is one authenticated datagram (type HEARTBEAT) whose header block
sequence is the sender's *emitted frontier*: every block below it has been sent.
The body is a list of sections (type u8, length u32, bytes) so later versions can
add sections that older receivers skip.

Streams and metrics can outgrow one datagram; the sender then spreads them over
several heartbeat datagrams ("pages"), each complete in itself.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

from .errors import ProtocolError

SECTION_CORE = 1
SECTION_STREAMS = 2
SECTION_METRICS = 3

_SECTION = struct.Struct("!BI")
_CORE = struct.Struct("!QQIQQQQ")
_STREAM_FIXED = struct.Struct("!HBH")  # channel id, flags, topic length
_STREAM_TAIL = struct.Struct("!iqQ")  # partition, last offset, stream seq
_U16 = struct.Struct("!H")
_METRIC_HEAD = struct.Struct("!BH")  # kind, name length
_F64 = struct.Struct("!d")

KIND_COUNTER = 0
KIND_GAUGE = 1


@dataclass(frozen=True, slots=True)
class StreamMark:
    """The last record of a stream that the sender has fully emitted."""
    channel_id: int
    topic: str
    partition: int
    last_offset: int
    stream_seq: int
    durable: bool = False

    def encoded_size(self) -> int:
        return _STREAM_FIXED.size + len(self.topic.encode()) + _STREAM_TAIL.size


@dataclass(frozen=True, slots=True)
class Metric:
    name: str
    value: float
    kind: int = KIND_GAUGE
    tags: tuple[tuple[str, str], ...] = ()

    def encode(self) -> bytes:
        name = self.name.encode()
        parts = [_METRIC_HEAD.pack(self.kind, len(name)), name, bytes([len(self.tags)])]
        for k, v in self.tags:
            kb, vb = k.encode(), v.encode()
            parts += [_U16.pack(len(kb)), kb, _U16.pack(len(vb)), vb]
        parts.append(_F64.pack(self.value))
        return b"".join(parts)


@dataclass(slots=True)
class Heartbeat:
    sent_at_ms: int
    session_started_ms: int
    interval_ms: int
    packets_sent: int
    bytes_sent: int
    records_sent: int
    blocks_sent: int
    streams: list[StreamMark] = field(default_factory=list)
    metrics: list[Metric] = field(default_factory=list)
    page: int = 0
    pages: int = 1


def _section(kind: int, body: bytes) -> bytes:
    return _SECTION.pack(kind, len(body)) + body


def encode_core(hb: Heartbeat) -> bytes:
    return _section(SECTION_CORE, _CORE.pack(
        hb.sent_at_ms, hb.session_started_ms, hb.interval_ms, hb.packets_sent,
        hb.bytes_sent, hb.records_sent, hb.blocks_sent))


def encode_streams(marks: list[StreamMark], page: int, pages: int) -> bytes:
    parts = [struct.pack("!HHH", page, pages, len(marks))]
    for m in marks:
        topic = m.topic.encode()
        parts += [_STREAM_FIXED.pack(m.channel_id, 1 if m.durable else 0, len(topic)), topic,
                  _STREAM_TAIL.pack(m.partition, m.last_offset, m.stream_seq)]
    return _section(SECTION_STREAMS, b"".join(parts))


def encode_metrics(encoded: list[bytes]) -> bytes:
    return _section(SECTION_METRICS, _U16.pack(len(encoded)) + b"".join(encoded))


SECTION_OVERHEAD = _SECTION.size
STREAMS_OVERHEAD = SECTION_OVERHEAD + 6
METRICS_OVERHEAD = SECTION_OVERHEAD + 2
CORE_SIZE = SECTION_OVERHEAD + _CORE.size


def paginate(hb: Heartbeat, budget: int) -> list[bytes]:
    """Encode hb as one or more bodies of at most budget bytes, each with the core section."""
    core = encode_core(hb)
    room = budget - len(core)
    if room < STREAMS_OVERHEAD + 64:
        raise ValueError(f"heartbeat budget {budget} is too small")
    stream_pages: list[list[StreamMark]] = [[]]
    used = STREAMS_OVERHEAD
    for m in hb.streams:
        size = m.encoded_size()
        if size + STREAMS_OVERHEAD > room:
            continue  # a topic name this long cannot be announced; the gap check still sees it
        if used + size > room:
            stream_pages.append([])
            used = STREAMS_OVERHEAD
        stream_pages[-1].append(m)
        used += size
    bodies = []
    pages = len(stream_pages)
    for i, marks in enumerate(stream_pages):
        bodies.append(bytearray(core + encode_streams(marks, i, pages)))
    # Metrics fill the space left in the pages, then extra pages.
    metric_chunks: list[list[bytes]] = []
    pending: list[bytes] = []
    page_idx = 0
    free = budget - len(bodies[0]) - METRICS_OVERHEAD
    for metric in hb.metrics:
        enc = metric.encode()
        if len(enc) > budget - len(core) - METRICS_OVERHEAD:
            continue
        while len(enc) > free:
            metric_chunks.append(pending)
            pending = []
            page_idx += 1
            if page_idx < len(bodies):
                free = budget - len(bodies[page_idx]) - METRICS_OVERHEAD
            else:
                bodies.append(bytearray(core))
                free = budget - len(core) - METRICS_OVERHEAD
        pending.append(enc)
        free -= len(enc)
    metric_chunks.append(pending)
    for i, chunk in enumerate(metric_chunks):
        if chunk:
            bodies[i] += encode_metrics(chunk)
    return [bytes(b) for b in bodies]


class _Cursor:
    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes, pos: int = 0):
        self.buf, self.pos = buf, pos

    def unpack(self, st: struct.Struct) -> tuple[Any, ...]:
        if self.pos + st.size > len(self.buf):
            raise ProtocolError("heartbeat section truncated")
        v = st.unpack_from(self.buf, self.pos)
        self.pos += st.size
        return v

    def text(self, n: int) -> str:
        if self.pos + n > len(self.buf):
            raise ProtocolError("heartbeat text truncated")
        raw = self.buf[self.pos:self.pos + n]
        self.pos += n
        try:
            return raw.decode()
        except UnicodeDecodeError:
            raise ProtocolError("heartbeat text is not UTF-8") from None


def decode(body: bytes) -> Heartbeat:
    cur = _Cursor(body)
    hb: Heartbeat | None = None
    streams: list[StreamMark] = []
    metrics: list[Metric] = []
    page, pages = 0, 1
    while cur.pos < len(body):
        kind, length = cur.unpack(_SECTION)
        end = cur.pos + length
        if end > len(body):
            raise ProtocolError("heartbeat section runs past the datagram")
        sec = _Cursor(body[cur.pos:end])
        cur.pos = end
        if kind == SECTION_CORE:
            hb = Heartbeat(*sec.unpack(_CORE))
        elif kind == SECTION_STREAMS:
            page, pages, count = sec.unpack(struct.Struct("!HHH"))
            for _ in range(count):
                ch, flags, tlen = sec.unpack(_STREAM_FIXED)
                topic = sec.text(tlen)
                part, last, sseq = sec.unpack(_STREAM_TAIL)
                streams.append(StreamMark(ch, topic, part, last, sseq, bool(flags & 1)))
        elif kind == SECTION_METRICS:
            (count,) = sec.unpack(_U16)
            for _ in range(count):
                mkind, nlen = sec.unpack(_METRIC_HEAD)
                name = sec.text(nlen)
                (ntags,) = sec.unpack(struct.Struct("!B"))
                tags = []
                for _ in range(ntags):
                    k = sec.text(sec.unpack(_U16)[0])
                    v = sec.text(sec.unpack(_U16)[0])
                    tags.append((k, v))
                (value,) = sec.unpack(_F64)
                metrics.append(Metric(name, value, mkind, tuple(tags)))
        # unknown sections are skipped
    if hb is None:
        raise ProtocolError("heartbeat without core section")
    hb.streams, hb.metrics, hb.page, hb.pages = streams, metrics, page, pages
    return hb
