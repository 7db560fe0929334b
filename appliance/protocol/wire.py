"""Datagram header layout (see docs/protocol.md for the byte table).

The layout is defined once, as named offsets in _native.c (the hot path reads and
writes headers there); this module takes its constants from the native module and
checks at import that its struct puts every field at the offset C uses.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from . import _native
from .errors import ProtocolError

MAGIC: bytes = _native.MAGIC
VERSION: int = _native.VERSION

TYPE_DATA: int = _native.TYPE_DATA
TYPE_HEARTBEAT: int = _native.TYPE_HEARTBEAT
FLAG_ENCRYPTED: int = _native.FLAG_ENCRYPTED
TYPE_MASK: int = _native.TYPE_MASK

# magic, version, type|flags, key id, channel id, session id (epoch u64 + random u64),
# packet number, block sequence (48 bit, split in high 16 + low 32), symbol index, k, n
_HEADER = struct.Struct("!2sBBHHQQQHIBBB")
HEADER_SIZE: int = _native.HEADER_SIZE
TAG_SIZE: int = _native.TAG_SIZE
SESSION_ID_SIZE: int = _native.SESSION_ID_SIZE
OVERHEAD = HEADER_SIZE + TAG_SIZE
IP_UDP_OVERHEAD = 28  # IPv4 (20) + UDP (8); IPv6 adds 20 more, see max_datagram()
MAX_BLOCK_SEQ = (1 << 8 * _native.BLOCK_SEQ_SIZE) - 1
MIN_MTU = 576
MAX_MTU = 65535

# Slices of the fields the receiver reads before the tag is verified (they pick the key).
VERSION_AT: int = _native.OFFSET_VERSION
TYPE_AT: int = _native.OFFSET_TYPE
KEY_ID = slice(_native.OFFSET_KEY_ID, _native.OFFSET_KEY_ID + 2)
SESSION_ID = slice(_native.OFFSET_SESSION_ID, _native.OFFSET_SESSION_ID + SESSION_ID_SIZE)
SESSION_EPOCH = slice(_native.OFFSET_SESSION_ID, _native.OFFSET_SESSION_ID + 8)


def _check_layout() -> None:
    """The struct above against the C offsets: one definition, checked, not copied."""
    fields = ["2s", "B", "B", "H", "H", "QQ", "Q", "HI", "B", "B", "B"]
    names = ["MAGIC", "VERSION", "TYPE", "KEY_ID", "CHANNEL_ID", "SESSION_ID",
             "PACKET_NUMBER", "BLOCK_SEQ", "SYMBOL_INDEX", "K", "N"]
    at = 0
    for fmt, name in zip(fields, names, strict=True):
        if getattr(_native, f"OFFSET_{name}") != at:
            raise ImportError(f"wire.py and _native.c disagree on the offset of {name}")
        at += struct.calcsize("!" + fmt)
    if at != HEADER_SIZE or _HEADER.size != HEADER_SIZE:
        raise ImportError("wire.py and _native.c disagree on the header size")


_check_layout()


class Header(NamedTuple):
    """A parsed header. A tuple: the receiver makes one per datagram."""
    packet_type: int
    encrypted: bool
    key_id: int
    channel_id: int
    session_id: int
    packet_number: int
    block_seq: int
    symbol_index: int
    k: int
    n: int


def pack_header(packet_type: int, encrypted: bool, key_id: int, channel_id: int,
                session_id: int, packet_number: int, block_seq: int,
                symbol_index: int, k: int, n: int) -> bytes:
    """The header bytes (the native seal_group writes the same for data symbols)."""
    return _HEADER.pack(
        MAGIC, VERSION, packet_type | (FLAG_ENCRYPTED if encrypted else 0), key_id,
        channel_id, session_id >> 64, session_id & 0xFFFF_FFFF_FFFF_FFFF, packet_number,
        block_seq >> 32, block_seq & 0xFFFFFFFF, symbol_index, k, n,
    )


def unpack_header(datagram: bytes | memoryview) -> Header:
    if len(datagram) < HEADER_SIZE:
        raise ProtocolError(f"datagram of {len(datagram)} bytes is shorter than {HEADER_SIZE}")
    (magic, version, type_byte, key_id, channel_id, session_hi, session_lo, packet_number,
     seq_hi, seq_lo, symbol_index, k, n) = _HEADER.unpack_from(datagram)
    if magic != MAGIC:
        raise ProtocolError("bad magic")
    if version != VERSION:
        raise ProtocolError(f"unsupported protocol version {version}")
    packet_type = type_byte & TYPE_MASK
    if packet_type not in (TYPE_DATA, TYPE_HEARTBEAT):
        raise ProtocolError(f"unknown packet type {packet_type}")
    return Header(packet_type, bool(type_byte & FLAG_ENCRYPTED), key_id, channel_id,
                  (session_hi << 64) | session_lo, packet_number, (seq_hi << 32) | seq_lo,
                  symbol_index, k, n)


def session_bytes(session_id: int) -> bytes:
    return session_id.to_bytes(SESSION_ID_SIZE, "big")


def max_datagram(mtu: int, ipv6: bool = False) -> int:
    """Largest UDP payload that crosses a link of this MTU without IP fragmentation."""
    return mtu - IP_UDP_OVERHEAD - (20 if ipv6 else 0)


def symbol_size(mtu: int, ipv6: bool = False) -> int:
    """Bytes of FEC symbol carried by one datagram."""
    return max_datagram(mtu, ipv6) - OVERHEAD
