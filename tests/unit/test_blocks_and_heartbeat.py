"""Block chunking and reassembly, heartbeat pagination, and token-bucket pacing."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.link.pacing import TokenBucket
from appliance.protocol import heartbeat, wire
from appliance.protocol.blocks import (
    BLOCK_HEADER_SIZE,
    NO_BLOCK,
    NO_FRAME,
    ChannelStream,
    Reassembler,
    pack_block,
    unpack_block,
)
from appliance.protocol.errors import ProtocolError
from appliance.protocol.heartbeat import Heartbeat, Metric, StreamMark
from appliance.protocol.records import FRAME_LEN_SIZE, Record, encode_frame

MAX_FRAME = 1 << 20


def rec(i: int, size: int) -> Record:
    return Record(value=bytes([i % 251]) * size, key=b"k%d" % i, headers=[("i", b"%d" % i)],
                  topic="blocks", offset=i, seq=i + 1, stream_seq=i + 1, durable=True)


def cut_blocks(records: list[Record], cuts: list[int]) -> tuple[list[bytes], list[list[Record]]]:
    """Append the records, cut chunks of the given lengths, then the rest.

    Returns the block payloads (as the encoder packs them) and, per block, the records
    ChannelStream.cut said end in it."""
    cs = ChannelStream()
    for r in records:
        cs.extend([r])
    blocks, done = [], []
    for n in [*cuts, len(cs)]:
        if n <= 0 or not len(cs):
            continue
        size = BLOCK_HEADER_SIZE + min(n, len(cs))
        payload, k, ended = cs.cut(n, 7)
        assert len(payload) == k * 7 and k == -(-size // 7)  # padded to whole symbols
        blocks.append(payload)
        cs.last_block = len(blocks) - 1
        done.append(ended)
    assert len(cs) == 0
    return blocks, done


def reassemble(blocks: list[bytes], skip: set[int] = frozenset()) -> list[Record]:
    ra = Reassembler(MAX_FRAME)
    out = []
    for seq, payload in enumerate(blocks):
        if seq in skip:
            continue
        got, error = ra.feed(seq, payload)
        assert error is None, error
        out += got
    return out


def key(r: Record) -> tuple:
    return (r.offset, r.value, r.key, r.headers, r.stream_seq)


# -- ChannelStream / Reassembler ---------------------------------------------------------
def test_block_pack_roundtrip_and_bounds():
    payload = pack_block(b"abc", 1, 41, 64)
    assert len(payload) == 64
    chunk, first, prev = unpack_block(payload)
    assert (bytes(chunk), first, prev) == (b"abc", 1, 41)
    with pytest.raises(ProtocolError):
        unpack_block(payload[:BLOCK_HEADER_SIZE - 1])
    with pytest.raises(ProtocolError):
        unpack_block(pack_block(b"abc", 3, NO_BLOCK, 64))  # first frame past the chunk
    with pytest.raises(ProtocolError):
        unpack_block(pack_block(b"abc", 0, NO_BLOCK, 64)[:BLOCK_HEADER_SIZE + 2])


def test_split_at_every_offset_of_two_frames():
    """One cut at every byte of two frames, including inside both length prefixes."""
    records = [rec(0, 40), rec(1, 25), rec(2, 3)]
    la, lb = (len(encode_frame(r)) for r in records[:2])
    for c in range(1, la + lb + 1):
        blocks, done = cut_blocks(records, [c])
        got = reassemble(blocks)
        assert [key(r) for r in got] == [key(r) for r in records], c
        # ChannelStream names the block in which each record's last byte went out
        first_done = [r.offset for r in done[0]]
        assert first_done == ([0, 1] if c >= la + lb else [0] if c >= la else []), c


def test_split_every_pair_of_offsets_in_the_length_prefix_region():
    """Two cuts close together: a length prefix split over three blocks."""
    records = [rec(0, 10), rec(1, 10), rec(2, 10)]
    la = len(encode_frame(records[0]))
    for c1 in range(la - 2, la + FRAME_LEN_SIZE + 1):
        for c2 in range(1, FRAME_LEN_SIZE + 3):
            blocks, _ = cut_blocks(records, [c1, c2])
            assert [key(r) for r in reassemble(blocks)] == [key(r) for r in records], (c1, c2)


def test_one_byte_blocks():
    records = [rec(i, i) for i in range(4)]
    total = sum(len(encode_frame(r)) for r in records)
    blocks, done = cut_blocks(records, [1] * total)
    assert len(blocks) == total
    assert [key(r) for r in reassemble(blocks)] == [key(r) for r in records]
    assert sum(len(d) for d in done) == len(records)


def test_large_frame_spanning_many_blocks():
    records = [rec(0, 5), rec(1, 50_000), rec(2, 5)]
    blocks, done = cut_blocks(records, [1000] * 60)
    assert len(blocks) > 50
    assert [key(r) for r in reassemble(blocks)] == [key(r) for r in records]
    # blocks entirely inside the large frame carry no frame start
    assert sum(1 for b in blocks if unpack_block(b)[1] == NO_FRAME) > 40


def _expected_after_loss(records, blocks, lost: int) -> list[Record]:
    """Records wholly before the lost block, and those starting after it."""
    lo = sum(len(unpack_block(b)[0]) for b in blocks[:lost])
    hi = lo + len(unpack_block(blocks[lost])[0])
    out, pos = [], 0
    for r in records:
        end = pos + len(encode_frame(r))
        if end <= lo or pos >= hi:
            out.append(r)
        pos = end
    return out


@settings(max_examples=150, deadline=None)
@given(sizes=st.lists(st.integers(0, 3000), min_size=1, max_size=25),
       cap=st.integers(1, 2500), lost=st.data())
def test_lost_middle_block_resyncs_at_first_frame(sizes, cap, lost):
    records = [rec(i, s) for i, s in enumerate(sizes)]
    total = sum(len(encode_frame(r)) for r in records)
    blocks, _ = cut_blocks(records, [cap] * (total // cap + 1))
    # every record whole, in order, with no loss
    assert [key(r) for r in reassemble(blocks)] == [key(r) for r in records]
    if len(blocks) < 3:
        return
    drop = lost.draw(st.integers(1, len(blocks) - 2))
    got = reassemble(blocks, {drop})
    assert [key(r) for r in got] == [key(r) for r in _expected_after_loss(records, blocks, drop)]


def test_loss_of_first_block_joins_mid_stream():
    records = [rec(i, 30) for i in range(10)]
    blocks, _ = cut_blocks(records, [100] * 10)
    got = reassemble(blocks, {0})
    assert [key(r) for r in got] == [key(r) for r in _expected_after_loss(records, blocks, 0)]


def test_reassembler_rejects_oversized_frame_and_recovers():
    ra = Reassembler(max_frame=100)
    big = rec(0, 500)
    small = [rec(1, 5), rec(2, 5)]
    cs = ChannelStream()
    for r in [big, *small]:
        cs.extend([r])
    payload, _, _ = cs.cut(10_000, 16)
    out, error = ra.feed(0, payload)
    assert out == [] and "exceeds max_record_bytes" in error
    # the next block resynchronises at its first frame
    cs2 = ChannelStream()
    for r in small:
        cs2.extend([r])
    cs2.last_block = 0
    payload, _, _ = cs2.cut(10_000, 16)
    out, error = ra.feed(1, payload)
    assert error is None
    # contiguous with block 0 but nothing pending: restarts at the first frame
    assert [r.offset for r in out] == [1, 2]


def test_reassembler_reports_inconsistent_first_frame():
    records = [rec(0, 40), rec(1, 40)]
    la = len(encode_frame(records[0]))
    stream = b"".join(encode_frame(r) for r in records)
    c0, c1 = stream[:la - 10], stream[la - 10:]
    ra = Reassembler(MAX_FRAME)
    assert ra.feed(0, pack_block(c0, 0, NO_BLOCK, len(c0) + 16)) == ([], None)
    out, error = ra.feed(1, pack_block(c1, 3, 0, len(c1) + 16))  # the truth is 10
    assert error and "block says 3" in error


# -- heartbeat pagination ------------------------------------------------------------
def _heartbeat(n_streams: int, n_metrics: int, seed: int) -> Heartbeat:
    rng = random.Random(seed)
    alphabet = "abcxyzäöü日本-_.λ"
    streams = [StreamMark(rng.randint(1, 65535),
                          "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 120))),
                          rng.randint(0, 2**31 - 1), rng.randint(-1, 2**62),
                          rng.randint(0, 2**63), rng.random() < 0.5)
               for _ in range(n_streams)]
    metrics = [Metric(f"m.{i}." + "n" * rng.randint(0, 60), rng.uniform(-1e9, 1e9),
                      rng.choice([heartbeat.KIND_COUNTER, heartbeat.KIND_GAUGE]),
                      tuple((f"t{j}", "v" * rng.randint(0, 30))
                            for j in range(rng.randint(0, 4))))
               for i in range(n_metrics)]
    return Heartbeat(sent_at_ms=123, session_started_ms=100, interval_ms=1000,
                     packets_sent=10, bytes_sent=20, records_sent=30, blocks_sent=40,
                     streams=streams, metrics=metrics)


@pytest.mark.parametrize("mtu", [576, 1500, 9000])
@pytest.mark.parametrize("n_streams, n_metrics", [(0, 0), (1, 0), (0, 1), (300, 0),
                                                  (0, 300), (700, 400), (3, 250)])
def test_paginate_fits_and_loses_nothing(mtu, n_streams, n_metrics):
    hb = _heartbeat(n_streams, n_metrics, seed=mtu + n_streams + n_metrics)
    budget = wire.symbol_size(mtu)
    bodies = heartbeat.paginate(hb, budget)
    assert bodies and all(len(b) <= budget for b in bodies)
    decoded = [heartbeat.decode(b) for b in bodies]
    for d in decoded:
        assert (d.sent_at_ms, d.session_started_ms, d.interval_ms, d.packets_sent,
                d.bytes_sent, d.records_sent, d.blocks_sent) == (123, 100, 1000, 10, 20, 30, 40)
    assert [m for d in decoded for m in d.streams] == hb.streams
    assert [m for d in decoded for m in d.metrics] == hb.metrics
    stream_pages = [d for d in decoded if d.streams]
    if stream_pages:
        assert {d.pages for d in stream_pages} == {len(stream_pages)}
        assert [d.page for d in stream_pages] == list(range(len(stream_pages)))


def test_paginate_fills_pages_before_adding_more():
    hb = _heartbeat(300, 0, seed=1)
    budget = wire.symbol_size(1500)
    bodies = heartbeat.paginate(hb, budget)
    sizes = [m.encoded_size() for m in hb.streams]
    # every page but the last could not have taken the next stream
    idx = 0
    for body in bodies[:-1]:
        idx += len(heartbeat.decode(body).streams)
        assert len(body) + sizes[idx] > budget


def test_paginate_skips_what_can_never_fit():
    huge_topic = StreamMark(1, "t" * 2000, 0, 5, 5, True)
    ok = StreamMark(1, "fine", 0, 5, 5, True)
    huge_metric = Metric("x" * 2000, 1.0)
    hb = Heartbeat(1, 1, 1, 1, 1, 1, 1, streams=[huge_topic, ok], metrics=[huge_metric,
                                                                           Metric("y", 2.0)])
    bodies = heartbeat.paginate(hb, wire.symbol_size(1500))
    decoded = [heartbeat.decode(b) for b in bodies]
    assert [m for d in decoded for m in d.streams] == [ok]
    assert [m for d in decoded for m in d.metrics] == [Metric("y", 2.0)]


def test_paginate_refuses_a_tiny_budget():
    with pytest.raises(ValueError):
        heartbeat.paginate(_heartbeat(1, 1, 0), 60)


@settings(max_examples=100, deadline=None)
@given(streams=st.lists(st.builds(StreamMark, st.integers(0, 65535), st.text(max_size=80),
                                  st.integers(-2**31, 2**31 - 1), st.integers(-2**63, 2**63 - 1),
                                  st.integers(0, 2**64 - 1), st.booleans()), max_size=60),
       metrics=st.lists(st.builds(Metric, st.text(max_size=40),
                                  st.floats(allow_nan=False),
                                  st.sampled_from([0, 1]),
                                  st.lists(st.tuples(st.text(max_size=10), st.text(max_size=10)),
                                           max_size=3).map(tuple)), max_size=60),
       mtu=st.integers(576, 9000))
def test_paginate_property(streams, metrics, mtu):
    hb = Heartbeat(1, 2, 3, 4, 5, 6, 7, streams=streams, metrics=metrics)
    budget = wire.symbol_size(mtu)
    bodies = heartbeat.paginate(hb, budget)
    assert all(len(b) <= budget for b in bodies)
    decoded = [heartbeat.decode(b) for b in bodies]
    assert [m for d in decoded for m in d.streams] == streams
    assert [m for d in decoded for m in d.metrics] == metrics


def test_heartbeat_decode_skips_unknown_sections_and_rejects_truncation():
    hb = _heartbeat(3, 3, seed=9)
    body = heartbeat.paginate(hb, 1400)[0]
    extended = body + heartbeat._section(99, b"future stuff")
    assert heartbeat.decode(extended).streams == hb.streams
    for cut in range(len(body)):
        # a prefix either still parses (it ends between sections) or raises ProtocolError
        try:
            got = heartbeat.decode(body[:cut])
        except ProtocolError:
            continue
        assert got.sent_at_ms == hb.sent_at_ms
    with pytest.raises(ProtocolError):
        heartbeat.decode(b"")
    with pytest.raises(ProtocolError):
        heartbeat.decode(heartbeat.encode_streams([], 0, 1))  # no core section


# -- pacing ------------------------------------------------------------------------------
def test_token_bucket_unpaced():
    tb = TokenBucket(0, 1500, now=0.0)
    assert all(tb.delay(9000, 0.0) == 0.0 for _ in range(100))


def test_token_bucket_burst_then_rate():
    tb = TokenBucket(8_000, 1500, now=0.0)  # 1000 bytes/s
    assert tb.delay(1500, 0.0) == 0.0  # the burst is free
    assert tb.delay(500, 0.0) == pytest.approx(0.5)  # 500 bytes of debt at 1000 B/s
    assert tb.delay(0, 0.5) == 0.0  # paid off after sleeping
    assert tb.delay(250, 0.75) == 0.0  # 250 bytes refilled in 0.25 s
    assert tb.delay(1, 0.75) == pytest.approx(0.001)


def test_token_bucket_refill_is_capped_at_burst():
    tb = TokenBucket(8_000, 1500, now=0.0)
    tb.delay(1500, 0.0)
    assert tb.delay(1500, 100.0) == 0.0  # a long idle period refills only the burst
    assert tb.delay(1000, 100.0) == pytest.approx(1.0)


def test_token_bucket_sustained_rate():
    """A sender that sleeps what it is told converges on the configured rate."""
    rate_bits = 80_000_000  # 10 MB/s
    tb = TokenBucket(rate_bits, 64 * 1500, now=0.0)
    now = 0.0
    sent = 0
    for _ in range(1000):
        now += tb.delay(64 * 1472, now)
        sent += 64 * 1472
    expected = (sent - 64 * 1500) / (rate_bits / 8)
    assert now == pytest.approx(expected, rel=1e-9)


def test_token_bucket_batch_larger_than_burst():
    tb = TokenBucket(8_000, 100, now=0.0)
    assert tb.delay(1100, 0.0) == pytest.approx(1.0)
    assert tb.delay(0, 1.0) == 0.0


def test_token_bucket_counting_records():
    """The records/s bucket (link.rate_records) counts units, not bits."""
    tb = TokenBucket.counting(1000, 256, now=0.0)  # 1000 records/s, 256 free
    assert tb.delay(256, 0.0) == 0.0
    assert tb.delay(1000, 0.0) == pytest.approx(1.0)
    assert tb.delay(0, 1.0) == 0.0
    assert TokenBucket.counting(0, 256, now=0.0).delay(10**9, 0.0) == 0.0  # unpaced
