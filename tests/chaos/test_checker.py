"""The chaos checker can fail: synthetic histories with each violation it must catch."""

from __future__ import annotations

from tests.chaos.check import Exit, History, LossReport, Sent, check
from tests.chaos.schedule import KINDS, make_schedule

P0 = ("t", 0)
P1 = ("t", 1)


def _history() -> History:
    """Two partitions of 10 records each, all delivered once, intact."""
    h = History()
    for stream in (P0, P1):
        h.sent[stream] = {o: Sent((stream, o), b"d%d" % o, float(o)) for o in range(10)}
        for o in range(10):
            h.delivered[(stream, o)] = [b"d%d" % o]
    h.faults = [(2.5, "kill_egress", "#1 kill_egress")]
    return h


def test_a_clean_history_passes():
    v = check(_history())
    assert v.ok, v.report()
    assert v.counts["sent"] == v.counts["delivered"] == 20


def test_duplicate_false_report_and_silent_loss_each_fail():
    h = _history()
    h.delivered[(P0, 3)].append(b"d3")  # a duplicate
    del h.delivered[(P0, 7)]  # reported below: fine
    h.reports.append(LossReport(P0, 6, 7, "2 records lost: offsets 6-7", "egress#2"))  # 6: false
    del h.delivered[(P1, 4)]  # silent loss
    v = check(h)
    assert not v.ok
    c = v.counts
    assert (c["duplicates"], c["false_reports"], c["silent_losses"], c["reported"]) == \
        (1, 1, 1, 1)
    kinds = sorted(x.kind for x in v.violations)
    assert kinds == ["duplicate", "false report", "silent loss"]
    silent = next(x for x in v.violations if x.kind == "silent loss")
    assert silent.stream == P1 and silent.offsets == [(4, 4)]
    assert "sent at 4.0 s, after #1 kill_egress (2.5 s)" in silent.detail
    assert "FAIL (3 violations)" in v.report()


def test_corrupt_foreign_invented_range_exits_and_stops_fail():
    h = _history()
    h.delivered[(P0, 1)] = [b"changed"]
    h.foreign.append("low.t/0@55: no chaos-id header")
    h.reports.append(LossReport(P1, 12, 13, "offsets 12-13", "egress#1"))  # never sent
    h.exits += [Exit("egress", 1, 1, 3.0, scheduled=False, evidence="thread died"),
                Exit("ingress", 1, 0, 4.0, scheduled=True, stop_seconds=7.5),
                Exit("ingress", 2, -9, 5.0, scheduled=True)]
    h.harness_problems.append("collector dropped 3 datagrams")
    v = check(h)
    c = v.counts
    assert (c["corrupt"], c["foreign"], c["false_reports"], c["unscheduled_exits"],
            c["bad_stops"], c["harness_problems"]) == (1, 1, 2, 1, 1, 1)
    assert len(v.violations) == 6


def test_unknown_start_report_covers_only_up_to_its_last_offset():
    h = _history()
    for o in (0, 1, 2, 8):
        del h.delivered[(P0, o)]
    h.reports.append(LossReport(P0, None, 2, "offsets ?-2", "egress#1"))
    v = check(h)
    assert v.counts["reported"] == 3 and v.counts["unknown_start_reports"] == 1
    assert [(x.kind, x.offsets) for x in v.violations] == [("silent loss", [(8, 8)])]


def test_unknown_start_report_of_nothing_missing_is_false():
    h = _history()
    h.reports.append(LossReport(P1, None, 5, "offsets ?-5 (resume_gap)", "egress#4"))
    v = check(h)
    assert [(x.kind, x.offsets) for x in v.violations] == [("false report", [(5, 5)])]


def test_a_killed_udp_session_excuses_only_its_unseen_recent_tail():
    h = _history()  # record o was sent at o seconds
    for o in (5, 7, 8, 9):
        del h.delivered[(P0, o)]
    h.killed_udp_sessions[P0] = 10.0
    v = check(h)  # 8-9: after the last thing seen (6), sent in the 2 s before the kill
    assert v.counts["died_in_ingress"] == 2  # 7: 3 s before it, 5: a gap
    assert [(x.kind, x.offsets) for x in v.violations] == [("silent loss", [(5, 5), (7, 7)])]


def test_a_killed_udp_session_the_link_never_showed_excuses_nothing():
    h = _history()
    for o in range(10):
        del h.delivered[(P1, o)]
    h.killed_udp_sessions[P1] = 9.5
    v = check(h)
    assert v.counts["died_in_ingress"] == 0 and v.counts["silent_losses"] == 10


def test_schedule_is_seeded_and_covers_every_kind():
    a = make_schedule("kafka", 20, 7)
    assert a == make_schedule("kafka", 20, 7) != make_schedule("kafka", 20, 8)
    assert {f.kind for f in a} == set(KINDS["kafka"])
    assert {f.kind for f in make_schedule("udp", 9, 1)} == set(KINDS["udp"])
