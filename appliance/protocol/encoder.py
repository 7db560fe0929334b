"""Sender side of the link, sans I/O: records in, authenticated datagrams out.

    enc = LinkEncoder(settings, psk, session_id)
    enc.add(channel_id, record)        # frames the record into its channel stream
    enc.add_batch(channel_id, records) # the same for each, in order
    datagrams = enc.take_datagrams()   # full interleave groups, ready to send
    datagrams += enc.flush()           # on the shell's flush timer: partial blocks too
    datagrams += enc.heartbeat(now_ms) # on the heartbeat timer
    done = enc.take_handed_over()      # [HandedOver(channel_id, record)]: every byte sent

Blocks are sent interleaved across `interleave_depth` blocks, so a burst of B lost
datagrams costs each block at most ceil(B / depth) symbols. A full group is
FEC-encoded and sealed in one native call (Sealer.seal_group).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from . import compress, fec, heartbeat, wire
from .auth import Sealer
from .blocks import BLOCK_HEADER_SIZE, RETRY_AFTER, ChannelStream
from .heartbeat import Heartbeat, Metric, StreamMark
from .records import Record


@dataclass(frozen=True)
class LinkSettings:
    mtu: int = 1500
    block_symbols: int = 64  # k for a full block
    redundancy: float = 0.12  # repair symbols per data symbol
    min_repair: int = 2  # repair symbols for small (flushed) blocks
    interleave_depth: int = 4
    encrypt: bool = True
    key_id: int = 1
    ipv6: bool = False
    link_id: str = ""  # goes into the key derivation: the same on both sides of a link
    compression_level: int = 0  # zstd level for block chunks; 0: no compression
    # A compressed block holds at most this many bytes of the stream (the egress refuses
    # blocks that would expand past its own bound).
    compression_max_block_bytes: int = compress.DEFAULT_MAX_BLOCK_BYTES

    @property
    def symbol_size(self) -> int:
        return wire.symbol_size(self.mtu, self.ipv6)

    @property
    def block_capacity(self) -> int:
        return self.block_symbols * self.symbol_size - BLOCK_HEADER_SIZE


class HandedOver(NamedTuple):
    """A record whose every byte is now in datagrams on the link."""
    channel_id: int
    record: Record


@dataclass(slots=True)
class _Block:
    seq: int
    channel_id: int
    k: int
    n: int  # k data + n - k repair symbols
    data: bytes  # the k data symbols end to end
    records: list[Record]


class LinkEncoder:
    def __init__(self, settings: LinkSettings, psk: bytes, session_id: int,
                 session_started_ms: int = 0):
        if settings.block_symbols + fec.repair_count(settings.block_symbols,
                                                     settings.redundancy) > fec.MAX_SYMBOLS:
            raise ValueError("block_symbols plus repair symbols exceed 255")
        self.settings = settings
        self.session_id = session_id
        self.session_started_ms = session_started_ms
        self._sealer = Sealer(psk, settings.key_id, session_id, settings.encrypt,
                              settings.link_id)
        self._streams: dict[int, ChannelStream] = {}
        self._group: list[_Block] = []
        self._ready: list[bytes] = []
        self._handed_over: list[HandedOver] = []
        self._next_block = 0
        self._packet_number = 0
        self._record_seq: dict[int, int] = {}
        self._stream_state: dict[tuple[int, str, int], tuple[int, int]] = {}  # seq, offset
        self.marks: dict[tuple[int, str, int], StreamMark] = {}
        self.packets_sent = 0
        self.bytes_sent = 0
        self.records_sent = 0
        self.blocks_sent = 0
        # Compression: stream bytes cut into blocks, and what their chunks became.
        self._compressor = (compress.Compressor(settings.compression_level)
                            if settings.compression_level else None)
        self.stream_bytes = 0
        self.chunk_bytes = 0
        self.blocks_compressed = 0

    # -- records in ---------------------------------------------------------
    def add(self, channel_id: int, record: Record) -> None:
        self.add_batch(channel_id, (record,))

    def add_batch(self, channel_id: int, records: Sequence[Record]) -> None:
        """add() each of the records, in order: the same blocks and datagrams, the
        per-record bookkeeping in one loop (the link thread hands whole source batches).
        A block is cut as soon as its bytes are framed, as add() does: the stream holds
        about a block, not a batch (a batch of 8 KB records is 8 MB)."""
        seq = self._record_seq.get(channel_id, 0)
        state = self._stream_state
        for record in records:
            key = (channel_id, record.topic, record.partition)
            seq += 1
            prev = state.get(key)
            if prev is None:
                stream_seq = 1
            else:
                stream_seq = prev[0] + 1
                record.prev_offset = prev[1]
            record.seq = seq
            record.stream_seq = stream_seq
            state[key] = (stream_seq, record.offset)
        self._record_seq[channel_id] = seq
        stream = self._streams.get(channel_id)
        if stream is None:
            stream = self._streams[channel_id] = ChannelStream()
            stream.target = self._target(4.0)
        i, n = 0, len(records)
        while i < n:
            i = stream.extend(records, i, stream.target)
            while len(stream) >= stream.target:
                self._cut(channel_id, stream)

    def _target(self, ratio: float) -> int:
        """Stream bytes to gather for one block: its capacity, or with compression what
        is expected to compress into it (bounded by compression_max_block_bytes)."""
        cap = self.settings.block_capacity
        if self._compressor is None:
            return cap
        # Never past the bound, even when one block holds more (jumbo MTU, many symbols):
        # the egress refuses a compressed block that expands past its bound.
        return min(max(cap, int(cap * ratio * 0.95)), self.settings.compression_max_block_bytes)

    @property
    def compression_ratio(self) -> float:
        """Stream bytes per chunk byte since start (1.0 without compression)."""
        return self.stream_bytes / self.chunk_bytes if self.chunk_bytes else 1.0

    @property
    def blocks_cut(self) -> int:
        """Blocks cut so far (full or flushed): the shell restarts its flush timer on one."""
        return self._next_block

    def pending_bytes(self) -> int:
        return sum(len(s) for s in self._streams.values())

    # -- datagrams out ------------------------------------------------------
    def take_datagrams(self) -> list[bytes]:
        out, self._ready = self._ready, []
        return out

    def flush(self) -> list[bytes]:
        """Cut every channel's partial block and send what is grouped (latency bound)."""
        for channel_id, stream in self._streams.items():
            while len(stream):
                self._cut(channel_id, stream)
        self._emit_group()
        return self.take_datagrams()

    def take_handed_over(self) -> list[HandedOver]:
        out, self._handed_over = self._handed_over, []
        return out

    def stream_marks(self) -> list[StreamMark]:
        """The high-water marks, copied in one step: other threads (status) read them
        while the link thread adds streams."""
        return list(self.marks.values())

    @property
    def emitted_frontier(self) -> int:
        """Every block below this sequence number has been turned into datagrams."""
        return self._group[0].seq if self._group else self._next_block

    def heartbeat(self, now_ms: int, interval_ms: int,
                  metrics: list[Metric] | None = None) -> list[bytes]:
        hb = Heartbeat(
            sent_at_ms=now_ms, session_started_ms=self.session_started_ms,
            interval_ms=interval_ms, packets_sent=self.packets_sent,
            bytes_sent=self.bytes_sent, records_sent=self.records_sent,
            blocks_sent=self.blocks_sent, streams=self.stream_marks(),
            metrics=metrics or [],
        )
        frontier = self.emitted_frontier
        out = []
        for body in heartbeat.paginate(hb, self.settings.symbol_size):
            out.append(self._seal(wire.TYPE_HEARTBEAT, 0, frontier, 0, 0, 0, body))
        return out

    # -- internals ----------------------------------------------------------
    def _cut(self, channel_id: int, stream: ChannelStream) -> None:
        cap = self.settings.block_capacity
        comp = self._compressor
        if comp is not None and stream.skip_tries:
            stream.skip_tries -= 1
            comp = None
        payload, k, done = stream.cut(stream.target if comp else cap,
                                      self.settings.symbol_size, comp, cap)
        self.stream_bytes += stream.taken
        self.chunk_bytes += stream.chunk_size
        if comp is not None:
            if stream.chunk_size < stream.taken:
                self.blocks_compressed += 1
                stream.target = self._target(stream.taken / stream.chunk_size)
            else:  # incompressible: try again in a while
                stream.skip_tries = RETRY_AFTER
                stream.target = cap
        elif self._compressor is not None and not stream.skip_tries:
            stream.target = self._target(4.0)
        seq = self._next_block
        self._next_block += 1
        stream.last_block = seq
        n = k + min(self._repair(k), fec.MAX_SYMBOLS - k)
        self._group.append(_Block(seq, channel_id, k, n, payload, done))
        if len(self._group) >= self.settings.interleave_depth:
            self._emit_group()

    def _repair(self, k: int) -> int:
        """Repair symbols for a block of k data symbols.

        A full block gets ceil(k * redundancy). A short block (a latency flush) gets as
        many as a full block would, up to one per data symbol: with few symbols the
        binomial tail is fat, so the same ratio would fail far more often, and short
        blocks only happen when the link has room to spare.
        """
        red = self.settings.redundancy
        full = fec.repair_count(self.settings.block_symbols, red)
        if k >= self.settings.block_symbols or red <= 0:
            return fec.repair_count(k, red)
        return max(fec.repair_count(k, red, self.settings.min_repair), min(full, k))

    def _emit_group(self) -> None:
        group, self._group = self._group, []
        if not group:
            return
        sealed = self._sealer.seal_group(
            [(b.channel_id, b.seq, b.k, b.n, b.data) for b in group],
            self._packet_number, self.settings.symbol_size)
        self._packet_number += len(sealed)
        self._ready += sealed
        self.packets_sent += len(sealed)
        self.bytes_sent += len(sealed) * (wire.OVERHEAD + self.settings.symbol_size)
        handed = self._handed_over
        for b in group:
            self.blocks_sent += 1
            self.records_sent += len(b.records)
            last: dict[tuple[str, int], Record] = {}
            for rec in b.records:
                last[(rec.topic, rec.partition)] = rec
                handed.append(HandedOver(b.channel_id, rec))
            for (topic, part), rec in last.items():
                self.marks[(b.channel_id, topic, part)] = StreamMark(
                    b.channel_id, topic, part, rec.offset, rec.stream_seq, rec.durable)

    def _seal(self, ptype: int, channel_id: int, block_seq: int, index: int, k: int, n: int,
              payload: bytes | memoryview) -> bytes:
        pn = self._packet_number
        self._packet_number = pn + 1
        header = wire.pack_header(ptype, self.settings.encrypt, self.settings.key_id,
                                  channel_id, self.session_id, pn, block_seq, index, k, n)
        datagram = self._sealer.seal(header, payload)
        self.packets_sent += 1
        self.bytes_sent += len(datagram)
        return datagram
