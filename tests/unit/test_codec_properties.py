"""Property tests: records -> LinkEncoder -> lossy, reordering link -> LinkDecoder.

Within the FEC budget of every block, the exact records come out, in order, byte for
byte. Beyond it, every record is either delivered intact or named by exactly one
RecordsLost report, and nothing delivered is ever reported lost.
"""

from __future__ import annotations

import dataclasses
import random
from collections import defaultdict
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.protocol import wire
from appliance.protocol.auth import Opener
from appliance.protocol.decoder import DROP_REASONS, DecoderSettings, LinkDecoder
from appliance.protocol.encoder import LinkEncoder, LinkSettings
from appliance.protocol.events import (
    BlocksLost,
    Delivered,
    Malformed,
    RecordsLost,
    SessionStarted,
)
from appliance.protocol.records import Record

PSK = bytes(range(32))
SESSION = 0x0123456789ABCDEF << 64 | 0xFEDCBA9876543210  # epoch | random
STEP = 1e-5  # seconds between datagrams: about 1 Gbit/s of 1500-byte datagrams


# -- strategies -----------------------------------------------------------------------
def _big_value(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


values = st.one_of(
    st.none(),
    st.just(b""),
    st.binary(max_size=64),
    st.binary(min_size=200, max_size=3000),
    # Large values (some span many blocks) are built from a seed: hypothesis' own
    # buffer cannot hold 300 KB.
    st.builds(_big_value, st.integers(20_000, 300_000), st.integers(0, 2**32)),
)
keys = st.one_of(st.none(), st.binary(max_size=40))
headers = st.lists(
    st.tuples(st.text(max_size=12), st.one_of(st.none(), st.binary(max_size=30))),
    max_size=4,
)
link_settings = st.builds(
    LinkSettings,
    mtu=st.integers(576, 9000),
    block_symbols=st.integers(1, 120),
    redundancy=st.one_of(st.just(0.0), st.floats(0.0, 0.5)),
    min_repair=st.integers(0, 4),
    interleave_depth=st.integers(1, 8),
    encrypt=st.booleans(),
    key_id=st.integers(0, 65535),
    ipv6=st.booleans(),
)


@dataclass(frozen=True)
class StreamSpec:
    channel_id: int
    topic: str
    partition: int
    durable: bool
    first_offset: int


stream_specs = st.lists(
    st.builds(StreamSpec, channel_id=st.integers(1, 3), topic=st.text(max_size=20),
              partition=st.integers(0, 2**31 - 1), durable=st.booleans(),
              first_offset=st.integers(0, 2**40)),
    min_size=1, max_size=5, unique_by=lambda s: (s.channel_id, s.topic, s.partition),
)


@st.composite
def workloads(draw):
    """Records with offsets increasing per stream, and where the shell calls flush()."""
    streams = draw(stream_specs)
    count = draw(st.integers(1, 40))
    nxt = {i: s.first_offset for i, s in enumerate(streams)}
    records = []
    flush_after = set()
    for n in range(count):
        i = draw(st.integers(0, len(streams) - 1))
        s = streams[i]
        if s.durable:
            offset = nxt[i]
            nxt[i] = offset + draw(st.integers(1, 3))  # Kafka offsets may have holes
        else:
            offset = nxt.setdefault(("udp", i), 1)  # session-scoped: dense from 1
            nxt[("udp", i)] = offset + 1
        records.append((s.channel_id, Record(
            value=draw(values), key=draw(keys), headers=draw(headers), topic=s.topic,
            partition=s.partition, offset=offset, timestamp=draw(st.integers(-2**63, 2**63 - 1)),
            timestamp_type=draw(st.integers(0, 2)), durable=s.durable)))
        if draw(st.integers(0, 5)) == 0:
            flush_after.add(n)
    return records, flush_after


# -- helpers --------------------------------------------------------------------------
def encode_all(link: LinkSettings, records, flush_after) -> tuple[list[bytes], list[bytes]]:
    """(data datagrams, final heartbeat datagrams) for the records."""
    enc = LinkEncoder(link, PSK, SESSION)
    data: list[bytes] = []
    for n, (channel_id, rec) in enumerate(records):
        enc.add(channel_id, rec)
        data += enc.take_datagrams()
        if n in flush_after:
            data += enc.flush()
    data += enc.flush()
    assert enc.pending_bytes() == 0
    assert len(enc.take_handed_over()) == len(records)
    limit = wire.max_datagram(link.mtu, link.ipv6)
    assert all(len(d) <= limit for d in data), "a datagram would be IP-fragmented"
    hb = enc.heartbeat(1_000, 1_000)
    assert all(len(d) <= limit for d in hb)
    return data, hb


def by_block(datagrams: list[bytes]) -> dict[int, list[int]]:
    """Block sequence -> indexes (into datagrams) of its symbols, read from the clear header."""
    blocks: dict[int, list[int]] = defaultdict(list)
    for i, d in enumerate(datagrams):
        h = wire.unpack_header(d[:wire.HEADER_SIZE])
        assert h.packet_type == wire.TYPE_DATA
        blocks[h.block_seq].append(i)
    return blocks


def block_shape(datagram: bytes) -> tuple[int, int]:
    h = wire.unpack_header(datagram[:wire.HEADER_SIZE])
    return h.k, h.n


def local_shuffle(items: list, window: int, rng: random.Random) -> list:
    """Reorder so that no item moves more than `window` places."""
    return [x for _, x in sorted(((i + rng.random() * window, x) for i, x in enumerate(items)),
                                 key=lambda t: t[0])]


def run_decoder(link: LinkSettings, datagrams: list[bytes], heartbeats: list[bytes],
                settings: DecoderSettings | None = None) -> tuple[LinkDecoder, list]:
    dec = LinkDecoder(Opener({link.key_id: PSK}, encrypt=link.encrypt),
                      settings or DecoderSettings())
    events: list = []
    now = 0.0
    for d in datagrams:
        events += dec.feed(d, now)
        now += STEP
    for d in heartbeats:
        events += dec.feed(d, now)
    # One tick long after the last heartbeat resolves every block it announced.
    events += dec.tick(now + 1_000.0)
    assert dec.tick(now + 2_000.0) == []
    return dec, events


def per_channel(pairs) -> dict[int, list[Record]]:
    """Order is kept per channel: channels are cut into blocks independently, so a
    flush may put a later record of one channel on the link before an earlier one of
    another."""
    out: dict[int, list[Record]] = defaultdict(list)
    for ch, rec in pairs:
        out[ch].append(rec)
    return dict(out)


def delivered_of(events) -> dict[int, list[Record]]:
    return per_channel((e.channel_id, r) for e in events if isinstance(e, Delivered)
                       for r in e.records)


def assert_same_record(got: Record, want: Record) -> None:
    for name in ("value", "key", "headers", "topic", "partition", "offset", "timestamp",
                 "timestamp_type", "durable", "prev_offset", "seq", "stream_seq"):
        assert getattr(got, name) == getattr(want, name), name
    assert got == want


COMMON = settings(max_examples=60, deadline=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# -- within the budget: everything arrives, exactly ----------------------------------
@COMMON
@given(link=link_settings, work=workloads(), seed=st.integers(0, 2**32),
       window=st.integers(1, 8), drop_share=st.floats(0, 1))
def test_roundtrip_within_fec_budget(link, work, seed, window, drop_share):
    records, flush_after = work
    rng = random.Random(seed)
    data, hb = encode_all(link, records, flush_after)

    keep = []
    dropped = 0
    for _seq, idxs in sorted(by_block(data).items()):
        k, n = block_shape(data[idxs[0]])
        assert len(idxs) == n
        budget = n - k
        lose = set(rng.sample(idxs, min(budget, round(budget * drop_share + rng.random()))))
        dropped += len(lose)
        keep += [i for i in idxs if i not in lose]
    keep.sort()  # send order, minus the lost ones
    link_out = local_shuffle([data[i] for i in keep], window, rng)

    dec, events = run_decoder(link, link_out, hb)

    got = delivered_of(events)
    want = per_channel(records)
    assert sorted(got) == sorted(want)
    for ch, recs in want.items():
        assert len(got[ch]) == len(recs)
        for g, w in zip(got[ch], recs, strict=True):
            assert_same_record(g, w)
    assert not [e for e in events if isinstance(e, RecordsLost | BlocksLost | Malformed)]
    assert dec.stats.dropped == dict.fromkeys(DROP_REASONS, 0)
    assert dec.stats.records_delivered == len(records)
    assert dec.stats.records_lost == dec.stats.records_lost_unknown == 0
    assert dec.stats.blocks_lost == 0
    if dropped == 0 and window == 1:
        # (with reordering a repair symbol may legitimately arrive before a data symbol)
        assert dec.stats.fec_recovered == 0


# -- beyond the budget: delivered intact, or reported exactly once --------------------
def covers(report, offset: int) -> bool:
    lo = report.first_offset
    return (lo is None or lo <= offset) and offset <= report.last_offset


@COMMON
@given(link=link_settings, work=workloads(), seed=st.integers(0, 2**32),
       window=st.integers(1, 8), lose_share=st.floats(0.05, 0.8))
def test_loss_beyond_budget_is_reported_exactly(link, work, seed, window, lose_share):
    records, flush_after = work
    rng = random.Random(seed)
    data, hb = encode_all(link, records, flush_after)

    keep = []
    lost_blocks = set()
    for seq, idxs in sorted(by_block(data).items()):
        k, n = block_shape(data[idxs[0]])
        if rng.random() < lose_share:
            # more than n - k symbols lost: the block cannot be rebuilt
            lose = set(rng.sample(idxs, rng.randint(n - k + 1, n)))
            lost_blocks.add(seq)
        else:
            lose = set(rng.sample(idxs, rng.randint(0, n - k)))
        keep += [i for i in idxs if i not in lose]
    keep.sort()
    link_out = local_shuffle([data[i] for i in keep], window, rng)

    dec, events = run_decoder(link, link_out, hb)

    # Blocks: exactly the unrecoverable ones are declared lost.
    declared = set()
    for e in events:
        if isinstance(e, BlocksLost):
            declared.update(range(e.first_seq, e.last_seq + 1))
    assert declared == lost_blocks

    # Records: delivered ones are intact and, per channel, in send order (a subsequence
    # of what was sent on that channel).
    sent = per_channel(records)
    got = delivered_of(events)
    assert set(got) <= set(sent)
    delivered_ids = set()
    for ch, recs in got.items():
        pos = 0
        for g in recs:
            while pos < len(sent[ch]) and sent[ch][pos].seq != g.seq:
                pos += 1
            assert pos < len(sent[ch]), f"delivered a record out of order: {g!r:.200}"
            assert_same_record(g, sent[ch][pos])
            delivered_ids.add((ch, g.seq))
            pos += 1
    n_sent = len(records)
    n_got = sum(len(v) for v in got.values())
    if not lost_blocks:
        assert n_got == n_sent

    reports = defaultdict(list)
    for e in events:
        if isinstance(e, RecordsLost):
            r = e.report
            assert e.session_id == SESSION
            assert r.count is not None and r.count > 0, r
            reports[(r.channel_id, r.topic, r.partition)].append(r)

    lost_per_stream: dict = defaultdict(int)
    for ch, rec in records:
        stream_reports = reports.get((ch, rec.topic, rec.partition), [])
        hits = [r for r in stream_reports if covers(r, rec.offset)]
        if (ch, rec.seq) in delivered_ids:
            assert not hits, f"delivered record {ch}/{rec.topic}/{rec.partition}@{rec.offset} " \
                             f"is also reported lost: {hits}"
        else:
            assert len(hits) == 1, f"lost record {ch}/{rec.topic}/{rec.partition}@{rec.offset} " \
                                   f"covered by {len(hits)} reports: {stream_reports}"
            lost_per_stream[(ch, rec.topic, rec.partition)] += 1
    for key, rs in reports.items():
        assert sum(r.count for r in rs) == lost_per_stream[key], (key, rs)
    assert dec.stats.records_lost == n_sent - n_got
    assert dec.stats.records_delivered == n_got
    assert dec.stats.dropped["auth"] == dec.stats.dropped["replay"] == 0
    assert dec.stats.dropped["duplicate"] == 0
    assert not [e for e in events if isinstance(e, Malformed)]


# -- resolution timing ------------------------------------------------------------------
def test_one_tick_after_heartbeat_resolves_every_announced_block():
    """Alternating partly-received and wholly-lost blocks at the tail: a single tick a
    loss_timeout after the heartbeat declares them all (not one per extra timeout)."""
    link = LinkSettings(mtu=576, block_symbols=2, redundancy=0.0, min_repair=0,
                        interleave_depth=1, encrypt=False)
    records = [(1, Record(value=bytes([i]) * 900, topic="t", offset=i, durable=True))
               for i in range(8)]
    data, hb = encode_all(link, records, set())
    blocks = by_block(data)
    assert len(blocks) >= 7
    keep = []
    for seq, idxs in sorted(blocks.items()):
        if seq < 2:
            keep += idxs
        elif seq % 2 == 0:
            keep += idxs[:1]  # one of two symbols: cannot be rebuilt
    dec = LinkDecoder(Opener({link.key_id: PSK}, encrypt=link.encrypt),
                      DecoderSettings(loss_timeout=0.25))
    events = []
    for i in sorted(keep):
        events += dec.feed(data[i], 0.0)
    for d in hb:
        events += dec.feed(d, 0.001)
    events += dec.tick(0.3)
    lost = set()
    for e in events:
        if isinstance(e, BlocksLost):
            lost.update(range(e.first_seq, e.last_seq + 1))
    assert lost == set(range(2, len(blocks)))
    assert dec.tick(10.0) == []


# -- ingress restart: no duplicates, nothing silent -------------------------------------
def _restart_records(records, data):
    """Session B after an ingress restart: per durable stream, re-send from a committed
    point (prev_offset = the offset before it, as the Kafka source does) and add one
    new record; session-scoped streams start again from offset 1."""
    by_stream: dict = defaultdict(list)
    for ch, rec in records:
        by_stream[(ch, rec.topic, rec.partition)].append(rec)
    out = []
    for (ch, topic, part), recs in by_stream.items():
        durable = recs[0].durable
        if durable:
            j = data.draw(st.integers(0, len(recs)), label="commit point")
            prev = recs[j - 1].offset if j else -1
            again = [Record(value=r.value, key=r.key, headers=list(r.headers), topic=topic,
                            partition=part, offset=r.offset, timestamp=r.timestamp,
                            timestamp_type=r.timestamp_type, durable=True) for r in recs[j:]]
            again.append(Record(value=b"after restart", topic=topic, partition=part,
                                offset=recs[-1].offset + 1, durable=True))
            again[0].prev_offset = prev
        else:
            again = [Record(value=b"udp-b%d" % i, topic=topic, partition=part, offset=i)
                     for i in range(1, data.draw(st.integers(1, 4), label="udp count") + 1)]
        out += [(ch, r) for r in again]
    return out


def _lossy(data_dgrams, rng, lose_share, window):
    keep = []
    for _seq, idxs in sorted(by_block(data_dgrams).items()):
        k, n = block_shape(data_dgrams[idxs[0]])
        if rng.random() < lose_share:
            lose = set(rng.sample(idxs, rng.randint(n - k + 1, n)))
        else:
            lose = set(rng.sample(idxs, rng.randint(0, n - k)))
        keep += [i for i in idxs if i not in lose]
    keep.sort()
    return local_shuffle([data_dgrams[i] for i in keep], window, rng)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(link=link_settings, work=workloads(), seed=st.integers(0, 2**32),
       window=st.integers(1, 4), lose_share=st.floats(0, 0.6),
       settle=st.booleans(), data=st.data())
def test_ingress_restart_no_duplicates_and_nothing_silent(link, work, seed, window,
                                                          lose_share, settle, data):
    records_a, flush_after = work
    rng = random.Random(seed)
    session_b = SESSION + (1 << 64)  # a later epoch: the ingress restarted
    data_a, hb_a = encode_all(link, records_a, flush_after)
    records_b = _restart_records(records_a, data)
    enc_b = LinkEncoder(link, PSK, session_b)
    data_b = []
    for ch, rec in records_b:
        enc_b.add(ch, rec)
        data_b += enc_b.take_datagrams()
    data_b += enc_b.flush()
    hb_b = enc_b.heartbeat(2_000, 1_000)

    dec = LinkDecoder(Opener({link.key_id: PSK}, encrypt=link.encrypt), DecoderSettings())
    events: list = []
    now = 0.0
    for d in _lossy(data_a, rng, lose_share, window) + hb_a:
        events += dec.feed(d, now)
        now += STEP
    if settle:  # the egress resolved session A before the restart; else B cuts it short
        events += dec.tick(now + 100.0)
        now += 200.0
    for d in _lossy(data_b, rng, lose_share, window):
        events += dec.feed(d, now)
        now += STEP
    for d in hb_b:
        events += dec.feed(d, now)
    events += dec.tick(now + 1_000.0)
    assert dec.stats.dropped["auth"] == dec.stats.dropped["malformed"] == 0

    # What was sent, per stream (durable streams: across both sessions, by offset).
    sent: dict = defaultdict(dict)
    for session, recs in ((SESSION, records_a), (session_b, records_b)):
        for ch, r in recs:
            sid = None if r.durable else session
            sent[(sid, ch, r.topic, r.partition)].setdefault(r.offset, r)
    delivered: dict = defaultdict(list)
    session = None
    reports: dict = defaultdict(list)
    for e in events:
        if isinstance(e, Delivered):
            for r in e.records:
                delivered[(None if r.durable else session, e.channel_id, r.topic,
                           r.partition)].append(r)
        elif isinstance(e, RecordsLost):
            rep = e.report
            durable = (None, rep.channel_id, rep.topic, rep.partition) in sent
            reports[(None if durable else e.session_id, rep.channel_id, rep.topic,
                     rep.partition)].append(rep)
        elif isinstance(e, SessionStarted):
            session = e.session_id

    for key, by_offset in sent.items():
        got = delivered.get(key, [])
        offsets = [r.offset for r in got]
        assert len(offsets) == len(set(offsets)), f"duplicate delivery in {key}: {offsets}"
        for r in got:
            want = by_offset[r.offset]
            assert (r.value, r.key, r.headers, r.timestamp) == \
                   (want.value, want.key, want.headers, want.timestamp)
        rs = reports.get(key, [])
        for offset in by_offset:
            hits = [rep for rep in rs if covers(rep, offset)]
            if offset in offsets:
                assert not hits, f"{key}@{offset} delivered and reported lost: {hits}"
            else:
                assert len(hits) == 1, f"{key}@{offset} lost, covered by {rs}"
        for rep in rs:
            if rep.count is not None:
                inside = [o for o in by_offset if covers(rep, o)]
                assert rep.count == len(inside), (rep, inside)
    assert set(reports) <= set(sent)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(link=link_settings, work=workloads(), level=st.sampled_from([0, 0, 3]),
       cuts=st.lists(st.integers(1, 12), min_size=1, max_size=40))
def test_add_batch_sends_what_add_sends_one_record_at_a_time(link, work, level, cuts):
    """The link thread hands whole source batches to add_batch: the datagrams, the
    records handed over and the numbers each record gets are those of add() called for
    each record in turn, however the records are split into batches (compression on or
    off: its block targets follow the previous cut)."""
    link = dataclasses.replace(link, compression_level=level)
    records, _ = work
    copies = [(ch, dataclasses.replace(rec)) for ch, rec in records]
    one = LinkEncoder(link, PSK, SESSION)
    out_one: list[bytes] = []
    for channel_id, rec in records:
        one.add(channel_id, rec)
        out_one += one.take_datagrams()
    out_one += one.flush()
    batched = LinkEncoder(link, PSK, SESSION)
    out_batched: list[bytes] = []
    i = 0
    sizes = iter(cuts * len(copies))
    while i < len(copies):  # runs of one channel, of the drawn lengths
        channel_id = copies[i][0]
        run = []
        for _ in range(next(sizes)):
            if i == len(copies) or copies[i][0] != channel_id:
                break
            run.append(copies[i][1])
            i += 1
        batched.add_batch(channel_id, run)
        out_batched += batched.take_datagrams()
    out_batched += batched.flush()
    assert out_batched == out_one
    numbers = [(r.seq, r.stream_seq, r.prev_offset) for _, r in records]
    assert [(r.seq, r.stream_seq, r.prev_offset) for _, r in copies] == numbers
    assert ([(h.channel_id, h.record.seq) for h in batched.take_handed_over()] ==
            [(h.channel_id, h.record.seq) for h in one.take_handed_over()])


def test_add_batch_holds_about_a_block_not_the_batch():
    """A source batch of big records is framed and cut a block at a time: the channel
    stream never holds the whole batch over again (1,000 records of 8 KB would be 8 MB
    more in the ingress's memory)."""
    link = LinkSettings()
    enc = LinkEncoder(link, PSK, SESSION)
    records = [Record(value=bytes([i % 251]) * 8192, key=b"%d" % i, topic="t", offset=i,
                      durable=True) for i in range(200)]
    most = 0
    cut = enc._cut

    def watching(channel_id, stream):
        nonlocal most
        most = max(most, len(stream))
        cut(channel_id, stream)
    enc._cut = watching
    enc.add_batch(1, records)
    assert 0 < most < link.block_capacity + 8192 + 200
    assert enc.pending_bytes() < link.block_capacity
