"""Datagram header layout (see docs/protocol.md for the byte table)."""

from __future__ import annotations

import struct
from typing import NamedTuple

from .errors import ProtocolError

MAGIC = b"\xdd\xc1"
VERSION = 1

TYPE_DATA = 1
TYPE_HEARTBEAT = 2
FLAG_ENCRYPTED = 0x80
TYPE_MASK = 0x0F

# magic, version, type|flags, key id, channel id, session id, packet number,
# block sequence (48 bit, split in high 16 + low 32), symbol index, k, n
_HEADER = struct.Struct("!2sBBHHQQHIBBB")
HEADER_SIZE = _HEADER.size  # 33
TAG_SIZE = 16
OVERHEAD = HEADER_SIZE + TAG_SIZE
IP_UDP_OVERHEAD = 28  # IPv4 (20) + UDP (8); IPv6 adds 20 more, see max_datagram()
MAX_BLOCK_SEQ = (1 << 48) - 1
MIN_MTU = 576
MAX_MTU = 65535


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

    def pack(self) -> bytes:
        type_byte = self.packet_type | (FLAG_ENCRYPTED if self.encrypted else 0)
        return _HEADER.pack(
            MAGIC, VERSION, type_byte, self.key_id, self.channel_id, self.session_id,
            self.packet_number, self.block_seq >> 32, self.block_seq & 0xFFFFFFFF,
            self.symbol_index, self.k, self.n,
        )


def pack_header(packet_type: int, encrypted: bool, key_id: int, channel_id: int,
                session_id: int, packet_number: int, block_seq: int,
                symbol_index: int, k: int, n: int) -> bytes:
    """Fast path for the sender: the same bytes as Header(...).pack()."""
    return _HEADER.pack(
        MAGIC, VERSION, packet_type | (FLAG_ENCRYPTED if encrypted else 0), key_id,
        channel_id, session_id, packet_number, block_seq >> 32, block_seq & 0xFFFFFFFF,
        symbol_index, k, n,
    )


def unpack_header(datagram: bytes | memoryview) -> Header:
    if len(datagram) < HEADER_SIZE:
        raise ProtocolError(f"datagram of {len(datagram)} bytes is shorter than {HEADER_SIZE}")
    (magic, version, type_byte, key_id, channel_id, session_id, packet_number,
     seq_hi, seq_lo, symbol_index, k, n) = _HEADER.unpack_from(datagram)
    if magic != MAGIC:
        raise ProtocolError("bad magic")
    if version != VERSION:
        raise ProtocolError(f"unsupported protocol version {version}")
    packet_type = type_byte & TYPE_MASK
    if packet_type not in (TYPE_DATA, TYPE_HEARTBEAT):
        raise ProtocolError(f"unknown packet type {packet_type}")
    return Header(packet_type, bool(type_byte & FLAG_ENCRYPTED), key_id, channel_id,
                  session_id, packet_number, (seq_hi << 32) | seq_lo, symbol_index, k, n)


def max_datagram(mtu: int, ipv6: bool = False) -> int:
    """Largest UDP payload that crosses a link of this MTU without IP fragmentation."""
    return mtu - IP_UDP_OVERHEAD - (20 if ipv6 else 0)


def symbol_size(mtu: int, ipv6: bool = False) -> int:
    """Bytes of FEC symbol carried by one datagram."""
    return max_datagram(mtu, ipv6) - OVERHEAD
