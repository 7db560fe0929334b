"""Cutting a channel's frame stream into blocks, and putting it back together.

Block payload (before FEC), all big-endian:

    0   4  chunk length L; top bit set (COMPRESSED): the chunk is a zstd frame of the
           chunk (protocol v3), the frame offset then points into the decompressed chunk
    4   4  first frame offset inside the chunk (NO_FRAME if none starts in it)
    8   8  sequence of the previous block of the same channel (NO_BLOCK for the first)
    16  L  chunk: a slice of the channel's stream of length-prefixed frames
    ...    zero padding up to k * symbol size

The previous-block pointer tells the egress whether this block continues the
frame it was assembling, or whether a block in between was lost and it must
resynchronise at the first frame offset.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Sequence

from ._native import parse_frames
from .compress import Compressor, Decompressor
from .errors import ProtocolError
from .records import FRAME_LEN_SIZE, Record, append_frame, decode_frame_body

_BLOCK_HEADER = struct.Struct("!IIQ")
BLOCK_HEADER_SIZE = _BLOCK_HEADER.size
NO_FRAME = 0xFFFFFFFF
NO_BLOCK = 0xFFFFFFFFFFFFFFFF
COMPRESSED = 0x80000000  # in the chunk length: the chunk is compressed
_LEN = struct.Struct("!I")
# After a block that did not shrink, this many blocks of the channel go as they are before
# compression is tried again (incompressible data costs one try in this many).
RETRY_AFTER = 16


def pack_block(chunk: bytes | memoryview, first_frame: int, prev_block: int, size: int,
               compressed: bool = False) -> bytes:
    head = _BLOCK_HEADER.pack(len(chunk) | (COMPRESSED if compressed else 0), first_frame,
                              prev_block)
    return b"".join((head, chunk, bytes(size - BLOCK_HEADER_SIZE - len(chunk))))


def unpack_block(payload: bytes, decompressor: Decompressor | None = None
                 ) -> tuple[memoryview, int, int]:
    if len(payload) < BLOCK_HEADER_SIZE:
        raise ProtocolError("block shorter than its header")
    length, first_frame, prev_block = _BLOCK_HEADER.unpack_from(payload)
    compressed = length & COMPRESSED
    length &= ~COMPRESSED
    if BLOCK_HEADER_SIZE + length > len(payload):
        raise ProtocolError(f"block chunk length {length} exceeds the block")
    view = memoryview(payload)[BLOCK_HEADER_SIZE:BLOCK_HEADER_SIZE + length]
    if compressed:
        if decompressor is None:
            raise ProtocolError("compressed block, but compression is not configured")
        view = memoryview(decompressor.decompress(view))
        length = len(view)
    if first_frame != NO_FRAME and first_frame >= length:
        raise ProtocolError(f"first frame offset {first_frame} outside the chunk")
    return view, first_frame, prev_block


class ChannelStream:
    """Sender side: one channel's frame stream, cut into block-sized chunks."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._base = 0  # stream position of _buf[0]
        # (start, end, record) of each frame in the stream, not yet ended by a cut: a plain
        # tuple per record, this runs for every record sent.
        self._frames: deque[tuple[int, int, Record]] = deque()
        self.last_block = NO_BLOCK
        self.target = 0  # raw bytes to gather before a cut (the encoder sets it)
        self.skip_tries = 0  # blocks to send as they are before trying compression again
        self.taken = self.chunk_size = 0  # of the last cut: stream bytes, chunk bytes

    def __len__(self) -> int:
        return len(self._buf)

    def extend(self, records: Sequence[Record], first: int = 0, until: int | None = None
               ) -> int:
        """Frame records[first:] onto the end of the stream, in order, stopping once the
        stream holds `until` bytes or more (None: all of them). Returns the index of the
        first record not framed: the encoder cuts a block before framing more, so the
        stream never holds much more than a block of a batch of big records."""
        buf, frames, base = self._buf, self._frames, self._base
        i, n = first, len(records)
        while i < n:
            record = records[i]
            i += 1
            start = base + len(buf)
            append_frame(buf, record)
            frames.append((start, base + len(buf), record))
            if until is not None and len(buf) >= until:
                break
        return i

    def cut(self, max_len: int, symbol_size: int, compressor: Compressor | None = None, cap: int = 0
            ) -> tuple[bytes, int, list[Record]]:
        """Take up to max_len bytes as the next block of this channel: (block payload
        padded to whole symbols, its k, the records that end in it); `taken` and
        `chunk_size` say how many bytes of the stream it took and what they became.

        With a compressor, the chunk goes compressed if that saves symbols and fits `cap`
        (the block's capacity; max_len may be more): else fewer bytes are tried, and a
        chunk of at most cap bytes that would take as many symbols goes as it is. The chunk is
        copied once, straight into the payload: this runs for every block."""
        n = min(max_len, len(self._buf))
        with memoryview(self._buf) as view:
            comp = None
            while compressor is not None:
                comp = compressor.compress(view[:n])
                if n > cap and len(comp) <= cap:
                    break  # more of the stream in one block
                if n <= cap:
                    if -(-(BLOCK_HEADER_SIZE + len(comp)) // symbol_size) < \
                            -(-(BLOCK_HEADER_SIZE + n) // symbol_size):
                        break  # fewer symbols
                    comp = None  # saves no symbol: as it is
                    break
                n = max(cap, int(n * cap / len(comp) * 0.95))
            lo, hi = self._base, self._base + n
            first = NO_FRAME
            for start, _, _ in self._frames:
                if start >= lo:
                    if start < hi:
                        first = start - lo
                    break
            body = view[:n] if comp is None else comp
            k = -(-(BLOCK_HEADER_SIZE + len(body)) // symbol_size)
            payload = pack_block(body, first, self.last_block, k * symbol_size,
                                 comp is not None)
            self.taken, self.chunk_size = n, len(body)
            del body
        del self._buf[:n]
        self._base = hi
        done = []
        frames = self._frames
        while frames and frames[0][1] <= hi:
            done.append(frames.popleft()[2])
        return payload, k, done


class Reassembler:
    """Receiver side: rebuilds one channel's frames from its blocks, in block order."""

    def __init__(self, max_frame: int, decompressor: Decompressor | None = None):
        self._pending: bytearray | None = None  # bytes of a frame in progress
        self._last_block: int | None = None
        self.max_frame = max_frame
        self.decompressor = decompressor
        self.last_error: ProtocolError | None = None  # of the last feed() that had one

    def feed(self, block_seq: int, payload: bytes) -> tuple[list[Record], str | None]:
        """Records completed by this block, and an error text if part of it was malformed.

        After an error the rest of the block is skipped and the next block resynchronises
        at its first frame; the stream accounting then reports what went missing.
        """
        out: list[Record] = []
        try:
            self._feed(block_seq, payload, out)
        except ProtocolError as exc:
            self._pending = None
            self.last_error = exc
            return out, str(exc)
        return out, None

    def _feed(self, block_seq: int, payload: bytes, out: list[Record]) -> None:
        chunk, first_frame, prev_block = unpack_block(payload, self.decompressor)
        contiguous = (
            (self._last_block is None and prev_block == NO_BLOCK)
            or (self._last_block is not None and prev_block == self._last_block)
        )
        self._last_block = block_seq
        pos = 0
        end = len(chunk)
        if contiguous and self._pending:
            pos = self._continue_pending(self._pending, chunk, out)
            if self._pending is not None:
                return  # the whole chunk belonged to one large frame
            if first_frame != NO_FRAME and pos != first_frame:
                raise ProtocolError(f"frame ends at {pos} but the block says {first_frame}")
        elif not contiguous or self._pending is None:
            # Lost a block of this channel (or joined mid-stream): restart at a frame start.
            self._pending = None
            if first_frame == NO_FRAME:
                return
            pos = first_frame
        # The block's whole frames in one native call (records.decode_frame_body is its
        # reference, tests/unit/test_frame_parser.py holds them equal): per record, the
        # Python loop cost the egress more than all the rest of its link path.
        frames, pos, error = parse_frames(chunk, pos, self.max_frame)
        out.extend(frames)
        if error is not None:
            self._pending = None
            raise ProtocolError(error)
        self._pending = bytearray(chunk[pos:end])

    def _continue_pending(self, pending: bytearray, chunk: memoryview, out: list[Record]
                          ) -> int:
        pos = 0
        end = len(chunk)
        if len(pending) < FRAME_LEN_SIZE:
            pos = min(FRAME_LEN_SIZE - len(pending), end)
            pending += chunk[:pos]
            if len(pending) < FRAME_LEN_SIZE:
                return pos
        need = FRAME_LEN_SIZE + self._frame_len(pending, 0) - len(pending)
        take = min(need, end - pos)
        pending += chunk[pos:pos + take]
        pos += take
        if take == need:
            self._pending = None
            out.append(decode_frame_body(memoryview(pending)[FRAME_LEN_SIZE:]))
        return pos

    def _frame_len(self, buf: bytes | bytearray | memoryview, pos: int) -> int:
        flen: int = _LEN.unpack_from(buf, pos)[0]
        if flen > self.max_frame:
            self._pending = None
            raise ProtocolError(f"frame of {flen} bytes exceeds max_record_bytes {self.max_frame}")
        return flen
