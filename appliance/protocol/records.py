"""Records and their framing inside a channel's byte stream.

A record is what a channel carries: for Kafka a full consumer record (topic,
partition, offset, timestamp, key, headers, value), for UDP one datagram.
Every record also carries its position in its *stream* (one Kafka partition,
or the whole channel for UDP) and the position of the record sent before it
in that stream, so the egress can name exactly what is missing after a loss.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from . import _native
from .errors import ProtocolError

# The frame layout is defined once, in _native.c, whose parse_frames decodes a block's
# frames on the egress; decode_frame_body below is its reference (and decodes a frame
# that spans blocks), held equal to it by tests/unit/test_frame_parser.py.
NULL = _native.FRAME_NULL_LENGTH
FRAME_VERSION = _native.FRAME_VERSION

# Flags
DURABLE_POSITIONS = _native.FRAME_FLAG_DURABLE  # positions survive an ingress restart
# A filtered-run marker: no record, but `count` records of the stream up to `offset` that
# the ingress's filter kept back (the value is the u64 count). docs/filters.md.
FILTERED_RUN = _native.FRAME_FLAG_FILTERED_RUN

_LEN = struct.Struct("!I")
# version, flags, record seq, stream seq, partition, offset, prev offset, ts type, timestamp
_FIXED = struct.Struct("!BBQQiqqBq")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_U64 = struct.Struct("!Q")
if _FIXED.size != _native.FRAME_FIXED_SIZE or _LEN.size != _native.FRAME_LEN_SIZE:
    raise ImportError("records.py's frame layout differs from _native.c's")


@dataclass(slots=True)
class Record:
    value: bytes | None
    key: bytes | None = None
    headers: list[tuple[str, bytes | None]] = field(default_factory=list)
    topic: str = ""
    partition: int = 0
    offset: int = 0
    prev_offset: int = -1
    timestamp: int = 0
    timestamp_type: int = 0
    durable: bool = False
    # Filled in by the encoder: per channel, and per stream, counters for this session.
    seq: int = 0
    stream_seq: int = 0
    # A filtered-run marker stands for this many records the ingress's filter kept back
    # (offset = the last of them); 0 for a real record.
    filtered: int = 0


# parse_frames makes Record objects in their slots, append_frame reads them so.
_native.bind_record(Record)


def encode_frame(record: Record) -> bytes:
    """One length-prefixed frame for the channel byte stream."""
    buf = bytearray()
    append_frame(buf, record)
    return bytes(buf)


# Append the record's frame to buf, in one native call (this runs for every record sent;
# the value is copied once, straight into the channel stream). append_frame_reference
# below is the same in Python, held equal to it by tests/unit/test_frame_parser.py.
append_frame = _native.append_frame


def append_frame_reference(buf: bytearray, record: Record) -> None:
    """append_frame in Python: the layout as the reference decoder reads it."""
    topic = record.topic.encode()
    flags = DURABLE_POSITIONS if record.durable else 0
    if record.filtered:
        flags |= FILTERED_RUN
    meta = [
        _FIXED.pack(
            FRAME_VERSION, flags, record.seq,
            record.stream_seq, record.partition, record.offset, record.prev_offset,
            record.timestamp_type, record.timestamp,
        ),
        _U16.pack(len(topic)),
        topic,
    ]
    _put_bytes(meta, record.key)
    meta.append(_U16.pack(len(record.headers)))
    for name, val in record.headers:
        raw = name.encode()
        meta.append(_U16.pack(len(raw)))
        meta.append(raw)
        _put_bytes(meta, val)
    head = b"".join(meta)
    value = _U64.pack(record.filtered) if record.filtered else record.value or b""
    buf += _LEN.pack(len(head) + 4 + len(value))
    buf += head
    buf += _U32.pack(NULL if record.value is None and not record.filtered else len(value))
    buf += value


def _put_bytes(parts: list[bytes], data: bytes | None) -> None:
    if data is None:
        parts.append(_U32.pack(NULL))
    else:
        parts.append(_U32.pack(len(data)))
        parts.append(data)


def decode_frame_body(body: memoryview) -> Record:
    """Decode a frame body (without its length prefix). Raises ProtocolError.

    Straight-line unpack_from calls: this runs once per record delivered."""
    end = len(body)
    try:
        (version, flags, seq, stream_seq, partition, offset, prev_offset, ts_type,
         timestamp) = _FIXED.unpack_from(body)
        if version != FRAME_VERSION:
            raise ProtocolError(f"unknown frame version {version}")
        pos = _FIXED.size
        topic, pos = _name(body, pos)
        key, pos = _opt_bytes(body, pos)
        count = _U16.unpack_from(body, pos)[0]
        pos += 2
        headers = []
        for _ in range(count):
            name, pos = _name(body, pos)
            val, pos = _opt_bytes(body, pos)
            headers.append((name, val))
        value, pos = _opt_bytes(body, pos)
    except struct.error:
        raise ProtocolError("frame field runs past the end of the frame") from None
    except UnicodeDecodeError:
        raise ProtocolError("frame has a topic or header name that is not UTF-8") from None
    if pos != end:
        raise ProtocolError("frame has trailing bytes")
    if flags & FILTERED_RUN:
        if value is None or len(value) != 8:
            raise ProtocolError("filtered-run marker without its count")
        return Record(value=None, topic=topic, partition=partition, offset=offset,
                      prev_offset=prev_offset, timestamp=timestamp, timestamp_type=ts_type,
                      durable=bool(flags & DURABLE_POSITIONS), seq=seq,
                      stream_seq=stream_seq, filtered=_U64.unpack(value)[0] or 1)
    return Record(value=value, key=key, headers=headers, topic=topic, partition=partition,
                  offset=offset, prev_offset=prev_offset, timestamp=timestamp,
                  timestamp_type=ts_type, durable=bool(flags & DURABLE_POSITIONS),
                  seq=seq, stream_seq=stream_seq)


def _name(body: memoryview, pos: int) -> tuple[str, int]:
    n = _U16.unpack_from(body, pos)[0]
    pos += 2
    if pos + n > len(body):
        raise ProtocolError("frame field runs past the end of the frame")
    return str(body[pos:pos + n], "utf-8"), pos + n


def _opt_bytes(body: memoryview, pos: int) -> tuple[bytes | None, int]:
    n = _U32.unpack_from(body, pos)[0]
    pos += 4
    if n == NULL:
        return None, pos
    if pos + n > len(body):
        raise ProtocolError("frame field runs past the end of the frame")
    return bytes(body[pos:pos + n]), pos + n


FRAME_LEN_SIZE = _LEN.size
