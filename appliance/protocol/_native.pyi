# Types of the native module (_native.c) for mypy, which cannot read a C extension.
# Kept next to the C source: a change of a signature there changes this file too.
from collections.abc import Sequence
from typing import Any, TypeVar

from _typeshed import ReadableBuffer

_H = TypeVar("_H", bound=tuple[object, ...])

# The wire layout, defined once in _native.c (wire.py takes it from here).
MAGIC: bytes
VERSION: int
HEADER_SIZE: int
TAG_SIZE: int
SESSION_ID_SIZE: int
BLOCK_SEQ_SIZE: int
MAX_SYMBOLS: int
TYPE_DATA: int
TYPE_HEARTBEAT: int
TYPE_MASK: int
FLAG_ENCRYPTED: int
OFFSET_MAGIC: int
OFFSET_VERSION: int
OFFSET_TYPE: int
OFFSET_KEY_ID: int
OFFSET_CHANNEL_ID: int
OFFSET_SESSION_ID: int
OFFSET_PACKET_NUMBER: int
OFFSET_BLOCK_SEQ: int
OFFSET_SYMBOL_INDEX: int
OFFSET_K: int
OFFSET_N: int
SIMD: str
# The record frame layout (records.py takes it from here).
FRAME_VERSION: int
FRAME_FLAG_DURABLE: int
FRAME_FLAG_FILTERED_RUN: int
FRAME_NULL_LENGTH: int
FRAME_LEN_SIZE: int
FRAME_FIXED_SIZE: int

def append_frame(buf: bytearray, record: object, /) -> None: ...
def bind_record(cls: type, /) -> None: ...
# (records of the class bind_record bound: records.Record)
def parse_frames(chunk: ReadableBuffer, pos: int, max_frame: int, /
                 ) -> tuple[list[Any], int, str | None]: ...

# What open_data gathers of one block: (channel_id, block_seq, k, n, symbol size,
# [(symbol index, payload), ...]).
BlockSymbols = tuple[int, int, int, int, int, list[tuple[int, bytes]]]

class Aead:
    def __init__(self, key: ReadableBuffer) -> None: ...
    def seal(self, header: ReadableBuffer, payload: ReadableBuffer) -> bytes: ...
    def open(self, datagram: ReadableBuffer, header_type: type[_H]
             ) -> tuple[_H, bytes] | str | None: ...
    def seal_group(self, blocks: Sequence[tuple[int, int, int, int, ReadableBuffer]],
                   type_byte: int, key_id: int, session_id: ReadableBuffer,
                   packet_number: int, symbol_size: int) -> list[bytes]: ...
    # Per item: a block's symbols, a drop reason ("auth", "malformed"), or the datagram
    # itself, for the general path.
    def open_data(self, datagrams: list[bytes], key_id: int, session_id: ReadableBuffer,
                  type_byte: int) -> list[BlockSymbols | str | bytes]: ...

def rs_encode(data: ReadableBuffer, k: int, n: int) -> bytes: ...
def rs_decode(symbols: dict[int, bytes], k: int, n: int, size: int) -> bytes: ...
def gf_mul(a: int, b: int) -> int: ...
