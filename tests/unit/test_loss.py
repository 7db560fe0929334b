"""StreamTracker: which records were lost, named by channel, topic, partition and offsets."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.protocol.heartbeat import StreamMark
from appliance.protocol.loss import LossReport, StreamTracker
from appliance.protocol.records import Record

CH = 3


class Sender:
    """Plays the encoder's part: stream sequence and previous offset per stream."""

    def __init__(self, topic: str = "orders", partition: int = 0, durable: bool = True,
                 resume_prev: int = -1):
        self.topic, self.partition, self.durable = topic, partition, durable
        self.seq = 0
        self.prev = resume_prev

    def rec(self, offset: int) -> Record:
        self.seq += 1
        r = Record(value=b"v%d" % offset, topic=self.topic, partition=self.partition,
                   offset=offset, prev_offset=self.prev, durable=self.durable,
                   stream_seq=self.seq)
        self.prev = offset
        return r

    def mark(self) -> StreamMark:
        return StreamMark(CH, self.topic, self.partition, self.prev, self.seq, self.durable)


def accept_all(tracker: StreamTracker, records) -> tuple[list[int], list[LossReport]]:
    delivered, reports = [], []
    for r in records:
        ok, report = tracker.accept(CH, r)
        if report:
            reports.append(report)
        if ok:
            delivered.append(r.offset)
    return delivered, reports


# -- in-session gaps --------------------------------------------------------------
def test_no_loss_no_report():
    t, s = StreamTracker(), Sender()
    delivered, reports = accept_all(t, [s.rec(o) for o in range(10, 20)])
    assert delivered == list(range(10, 20)) and reports == []
    assert t.tail_check([s.mark()]) == []
    assert t.durable_positions() == {(CH, "orders", 0): 19}


def test_gap_in_session_durable():
    t, s = StreamTracker(), Sender()
    recs = [s.rec(o) for o in (10, 11, 12, 13, 14, 15)]
    delivered, reports = accept_all(t, [recs[0], recs[1], recs[4], recs[5]])
    assert delivered == [10, 11, 14, 15]
    assert reports == [LossReport(CH, "orders", 0, 12, 13, 2, "gap")]


def test_gap_with_compacted_offsets_counts_records_not_offsets():
    """Kafka offsets may have holes: the range spans them, the count is of records."""
    t, s = StreamTracker(), Sender()
    recs = [s.rec(o) for o in (10, 20, 25, 40)]
    _, reports = accept_all(t, [recs[0], recs[3]])
    assert reports == [LossReport(CH, "orders", 0, 11, 25, 2, "gap")]


def test_gap_at_stream_start_has_unknown_first_offset():
    t, s = StreamTracker(), Sender()
    recs = [s.rec(o) for o in (7, 8, 9)]
    _, reports = accept_all(t, [recs[2]])
    assert reports == [LossReport(CH, "orders", 0, None, 8, 2, "gap")]


def test_gap_in_session_scoped_stream():
    t, s = StreamTracker(), Sender(topic="", durable=False)
    recs = [s.rec(o) for o in range(1, 11)]
    delivered, reports = accept_all(t, recs[:3] + recs[7:])
    assert delivered == [1, 2, 3, 8, 9, 10]
    assert reports == [LossReport(CH, "", 0, 4, 7, 4, "gap")]


def test_streams_are_independent():
    t = StreamTracker()
    a, b = Sender(partition=0), Sender(partition=1)
    ra = [a.rec(o) for o in range(5)]
    rb = [b.rec(o) for o in range(100, 105)]
    _, reports = accept_all(t, [ra[0], rb[0], ra[1], rb[3], ra[4], rb[4]])
    assert reports == [LossReport(CH, "orders", 1, 101, 102, 2, "gap"),
                       LossReport(CH, "orders", 0, 2, 3, 2, "gap")]
    # the same topic/partition on another channel is another stream
    ok, report = t.accept(CH + 1, Sender().rec(1000))
    assert ok and report is None


# -- tail loss ----------------------------------------------------------------------
def test_tail_loss_found_by_heartbeat_mark():
    t, s = StreamTracker(), Sender()
    recs = [s.rec(o) for o in range(50, 56)]
    accept_all(t, recs[:3])
    reports = t.tail_check([s.mark()])
    assert reports == [LossReport(CH, "orders", 0, 53, 55, 3, "tail")]
    # The next heartbeat says the same: nothing is reported twice.
    assert t.tail_check([s.mark()]) == []
    # If the lost records arrive after all (very late), they are repeats, not deliveries.
    ok, report = t.accept(CH, recs[4])
    assert not ok and report is None
    # The stream goes on without a second report.
    ok, report = t.accept(CH, s.rec(56))
    assert ok and report is None


def test_tail_loss_of_a_stream_never_seen():
    t = StreamTracker()
    mark = StreamMark(CH, "t", 2, last_offset=99, stream_seq=4, durable=True)
    assert t.tail_check([mark]) == [LossReport(CH, "t", 2, None, 99, 4, "tail")]
    udp = StreamMark(CH, "", 0, last_offset=4, stream_seq=4, durable=False)
    assert t.tail_check([udp]) == [LossReport(CH, "", 0, 1, 4, 4, "tail")]


def test_tail_check_behind_delivery_is_quiet():
    t, s = StreamTracker(), Sender()
    accept_all(t, [s.rec(o) for o in range(5)])
    old = StreamMark(CH, "orders", 0, last_offset=2, stream_seq=3, durable=True)
    assert t.tail_check([old]) == []
    assert t.tail_check([s.mark()]) == []


def test_tail_check_only_session_scoped_skips_durable():
    t = StreamTracker()
    d = StreamMark(CH, "k", 0, last_offset=9, stream_seq=2, durable=True)
    u = StreamMark(CH, "", 0, last_offset=2, stream_seq=2, durable=False)
    assert t.tail_check([d, u], only_session_scoped=True) == \
        [LossReport(CH, "", 0, 1, 2, 2, "tail")]


# -- sessions ---------------------------------------------------------------------
def test_durable_dedup_after_restart_from_committed_offset():
    """Ingress restarted from an earlier committed offset: the repeats are dropped, silently."""
    t, s = StreamTracker(), Sender()
    accept_all(t, [s.rec(o) for o in range(100, 121)])
    t.new_session()
    s2 = Sender(resume_prev=114)  # committed 115: the new run starts there
    delivered, reports = accept_all(t, [s2.rec(o) for o in range(115, 126)])
    assert delivered == [121, 122, 123, 124, 125]
    assert reports == []
    assert len(range(115, 126)) - len(delivered) == 6  # the repeats, dropped
    assert t.durable_positions() == {(CH, "orders", 0): 125}


def test_durable_dedup_survives_an_egress_restart():
    """Positions saved by the egress feed a new tracker: nothing is delivered twice."""
    t, s = StreamTracker(), Sender()
    accept_all(t, [s.rec(o) for o in range(10)])
    saved = t.durable_positions()
    t2 = StreamTracker(saved)
    s2 = Sender(resume_prev=4)
    delivered, reports = accept_all(t2, [s2.rec(o) for o in range(5, 13)])
    assert delivered == [10, 11, 12] and reports == []
    assert len(range(5, 13)) - len(delivered) == 5  # the repeats, dropped


def test_resume_gap_after_restart():
    """The new session's first record says its predecessor was at 30, the egress had 20."""
    t, s = StreamTracker(), Sender()
    accept_all(t, [s.rec(o) for o in range(11, 21)])
    t.new_session()
    s2 = Sender(resume_prev=30)
    delivered, reports = accept_all(t, [s2.rec(o) for o in range(31, 34)])
    assert delivered == [31, 32, 33]
    assert reports == [LossReport(CH, "orders", 0, 21, 30, None, "resume_gap")]
    assert "an unknown number of records lost (resume_gap)" in reports[0].describe()


def test_resume_gap_when_first_record_of_new_session_is_lost_too():
    t, s = StreamTracker(), Sender()
    accept_all(t, [s.rec(o) for o in range(11, 21)])
    t.new_session()
    s2 = Sender(resume_prev=30)
    recs = [s2.rec(o) for o in range(31, 34)]
    delivered, reports = accept_all(t, recs[1:])
    assert delivered == [32, 33]
    assert reports == [LossReport(CH, "orders", 0, 21, 31, None, "gap")]


def test_resume_of_a_stream_that_never_delivered_anything():
    """Session A handed offsets 0..4 to the link and none arrived (nor its heartbeat);
    session B resumes after 4. Those five must not vanish silently."""
    t = StreamTracker()
    t.new_session()  # session A: nothing of the stream arrives
    t.new_session()  # session B
    s2 = Sender(resume_prev=4)
    delivered, reports = accept_all(t, [s2.rec(o) for o in range(5, 8)])
    assert delivered == [5, 6, 7]
    assert reports == [LossReport(CH, "orders", 0, None, 4, None, "resume_gap")]


def test_fresh_consumer_without_committed_offset_is_quiet():
    t = StreamTracker()
    t.new_session()
    delivered, reports = accept_all(t, [Sender().rec(o) for o in (0,)])
    assert delivered == [0] and reports == []


def test_head_loss_count_known_only_within_the_first_session():
    # first session seen: the stream's first records lost, their number is known
    t = StreamTracker()
    t.new_session()
    s = Sender()
    recs = [s.rec(o) for o in range(3)]
    _, reports = accept_all(t, recs[2:])
    assert reports == [LossReport(CH, "orders", 0, None, 1, 2, "gap")]
    # after an earlier session, records of that session may be in the range as well
    t = StreamTracker()
    t.new_session()
    t.new_session()
    s = Sender(resume_prev=9)
    recs = [s.rec(o) for o in range(10, 13)]
    _, reports = accept_all(t, recs[2:])
    assert reports == [LossReport(CH, "orders", 0, None, 11, None, "gap")]
    mark = StreamMark(CH, "other", 0, last_offset=20, stream_seq=2, durable=True)
    assert t.tail_check([mark]) == [LossReport(CH, "other", 0, None, 20, None, "tail")]


def test_restart_exactly_where_delivery_stopped_is_quiet():
    t, s = StreamTracker(), Sender()
    accept_all(t, [s.rec(o) for o in range(11, 21)])
    t.new_session()
    s2 = Sender(resume_prev=20)
    delivered, reports = accept_all(t, [s2.rec(o) for o in range(21, 24)])
    assert delivered == [21, 22, 23] and reports == []


def test_durable_tail_loss_then_restart_resends_nothing_twice():
    t, s = StreamTracker(), Sender()
    recs = [s.rec(o) for o in range(10)]
    accept_all(t, recs[:6])
    assert t.tail_check([s.mark()]) == [LossReport(CH, "orders", 0, 6, 9, 4, "tail")]
    t.new_session()
    s2 = Sender(resume_prev=5)  # the old run had committed only up to 5
    delivered, reports = accept_all(t, [s2.rec(o) for o in range(6, 12)])
    # 6..9 were already reported lost: re-sent copies are not delivered after the report
    assert delivered == [10, 11] and reports == []


def test_session_scoped_stream_restarts_with_new_session():
    t, s = StreamTracker(), Sender(topic="", durable=False)
    accept_all(t, [s.rec(o) for o in range(1, 6)])
    t.new_session()
    assert t.durable_positions() == {}
    s2 = Sender(topic="", durable=False)
    delivered, reports = accept_all(t, [s2.rec(o) for o in range(1, 4)])
    assert delivered == [1, 2, 3] and reports == []
    assert len(delivered) == 3  # nothing dropped as a repeat


def test_session_scoped_stream_loss_at_start_of_new_session():
    t, s = StreamTracker(), Sender(topic="", durable=False)
    accept_all(t, [s.rec(o) for o in range(1, 6)])
    t.new_session()
    s2 = Sender(topic="", durable=False)
    recs = [s2.rec(o) for o in range(1, 5)]
    delivered, reports = accept_all(t, recs[2:])
    assert delivered == [3, 4]
    assert reports == [LossReport(CH, "", 0, 1, 2, 2, "gap")]


def test_new_session_keeps_durable_and_forgets_session_counters():
    t = StreamTracker()
    d, u = Sender(topic="k"), Sender(topic="", durable=False)
    accept_all(t, [d.rec(5), u.rec(1), d.rec(6), u.rec(2)])
    t.new_session()
    assert t.durable_positions() == {(CH, "k", 0): 6}
    # a heartbeat of the new session, before any record: its stream_seq counts from 1
    d2 = Sender(topic="k", resume_prev=6)
    d2.rec(7)
    d2.rec(8)
    assert t.tail_check([d2.mark()]) == [LossReport(CH, "k", 0, 7, 8, None, "tail")]


# -- describe ---------------------------------------------------------------------
@pytest.mark.parametrize("report, text", [
    (LossReport(1, "orders", 2, 11, 12, 2, "gap"),
     "2 records lost (gap): topic=orders partition=2 offsets 11-12"),
    (LossReport(1, "orders", 0, None, 8, 3, "tail"),
     "3 records lost (tail): topic=orders partition=0 offsets ?-8"),
    (LossReport(1, "orders", 0, 21, 30, None, "resume_gap"),
     "an unknown number of records lost (resume_gap): topic=orders partition=0 offsets 21-30"),
    (LossReport(4, "", 0, 4, 7, 4, "gap"),
     "4 records lost (gap): offsets 4-7"),
    (LossReport(1, "Zählerstände", 0, 1, 1, 1, "gap"),
     "1 records lost (gap): topic=Zählerstände partition=0 offsets 1-1"),
])
def test_describe(report, text):
    assert report.describe() == text
    assert "\n" not in report.describe()


# -- accept_many: accept() for each record of a block, in one call -----------------------
_streams = st.sampled_from([("orders", 0, True), ("orders", 1, True), ("udp", 0, False)])
_steps = st.lists(st.tuples(_streams, st.integers(-1, 3), st.integers(0, 4),
                            st.booleans()), max_size=60)


def _records_of(steps, first_prev: int) -> list[Record]:
    """Records as a lossy, repeating link delivers them: per stream the sequence jumps
    by `skip` (0: a repeat of the last), the offset by `hole`; `restart` begins a stream
    over (an ingress restarted from an older committed offset). Each stream's first
    record follows offset first_prev (-1: the sender knows of nothing before it)."""
    state: dict = {}
    out = []
    for (topic, part, durable), skip, hole, restart in steps:
        seq, prev, offset = state.get((topic, part), (0, first_prev, first_prev + 1))
        if restart:
            offset = max(0, offset - hole - 1)
        seq += max(skip, 0)
        offset += hole if durable else max(skip, 0)
        out.append(Record(value=b"v", topic=topic, partition=part, offset=offset,
                          prev_offset=prev, durable=durable, stream_seq=seq))
        state[(topic, part)] = (seq, offset, offset + 1)
    return out


def _tracker(known, history_unknown, sessions) -> StreamTracker:
    t = StreamTracker({(CH, "orders", 0): known} if known is not None else None)
    t.history_unknown = history_unknown
    for _ in range(sessions):
        t.new_session()
    return t


@settings(max_examples=300, deadline=None)
@given(steps=_steps, cut=st.integers(0, 60), first_prev=st.integers(-1, 8),
       known=st.none() | st.integers(-1, 5), history_unknown=st.booleans(),
       sessions=st.integers(0, 2))
def test_accept_many_is_accept_record_by_record(steps, cut, first_prev, known,
                                                history_unknown, sessions):
    records = _records_of(steps, first_prev)
    one, many = (_tracker(known, history_unknown, sessions) for _ in range(2))
    want: list = []
    repeats = 0
    for r in records:
        ok, report = one.accept(CH, r)
        if report:
            want.append(report)
        if ok:
            want.append(r)
        else:
            repeats += 1
    got: list = []
    got_repeats = 0
    for block in (records[:cut], records[cut:]):
        outcomes, n = many.accept_many(CH, block)
        got_repeats += n
        for item in outcomes:
            assert item != []
            got += item if isinstance(item, list) else [item]
    assert got == want
    assert got_repeats == repeats
    assert many._streams == one._streams  # the same state for the records after these
    assert many.tail_check([]) == one.tail_check([])
    assert many.doubt({}) == one.doubt({})
