"""The chaos checker: pure. A History of what was sent, what arrived, what the egress
reported lost and how the daemons ended; a Verdict with exact counts and the
evidence of every violation.

A stream is what the product numbers densely: a source partition ((topic, partition)
for Kafka) or one UDP stream (channel, ingress session), whose offsets are
the datagram's number in that session. Per stream, every record sent must be

* delivered exactly once and byte-identical, or
* inside a range the egress reported lost (records_lost: first_offset..last_offset;
  a first_offset of null means "from before anything seen", so such a report covers
  the undelivered offsets up to last_offset, is counted apart, and is false when
  every record up to last_offset was delivered), or
* (UDP only, a session whose ingress was killed -9) past the highest offset the link
  ever showed of that session, and sent within TAIL_WINDOW seconds before the kill:
  what a killed UDP source had read but not yet sent cannot be replayed nor known by
  the egress. Counted apart, never silently. A session the link never showed anything
  of excuses nothing (the ingress sends a heartbeat and blocks within milliseconds).

Violations: a copy beyond the first (duplicate), a delivered record that differs
from what was sent (corrupt), a delivered record nobody sent (foreign), a reported
offset that was delivered or never sent (false report), a record neither delivered
nor reported (silent loss), a daemon that exited when the schedule did not end it
(unscheduled exit), a SIGTERM that did not end a daemon with status 0 within
STOP_LIMIT seconds (bad stop), and anything that makes the run inconclusive
(harness problem: the collector's own socket dropped datagrams, say).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

STOP_LIMIT = 5.0  # seconds a daemon has to exit 0 after SIGTERM (issue 12's bar)
# What a UDP ingress killed -9 can hold unsent: its source-to-link queue and a block
# not yet cut (5 ms flush) on a loaded 2-core box; heartbeats every 0.2 s announce the rest.
TAIL_WINDOW = 2.0


@dataclass(frozen=True)
class Sent:
    rid: object  # the harness's own id of the record (carried inside it)
    digest: bytes  # of everything that must arrive unchanged
    at: float  # seconds into the run it was sent


@dataclass(frozen=True)
class LossReport:
    stream: tuple
    first: int | None
    last: int
    line: str  # the log line (evidence)
    run: str = ""  # which daemon run logged it ("egress#3")


@dataclass(frozen=True)
class Exit:
    role: str
    run: int
    rc: int | None
    at: float
    scheduled: bool
    stop_seconds: float | None = None  # after a SIGTERM: how long the exit took
    evidence: str = ""  # last error line of its log

    @property
    def bad_stop(self) -> bool:
        return self.stop_seconds is not None and (self.rc != 0 or
                                                  self.stop_seconds > STOP_LIMIT)


@dataclass
class History:
    sent: dict[tuple, dict[int, Sent]] = field(default_factory=dict)  # stream -> offset -> Sent
    delivered: dict[object, list[bytes]] = field(default_factory=dict)  # rid -> copies' digests
    foreign: list[str] = field(default_factory=list)  # delivered records nobody sent
    reports: list[LossReport] = field(default_factory=list)
    killed_udp_sessions: dict[tuple, float] = field(default_factory=dict)  # stream -> kill time
    exits: list[Exit] = field(default_factory=list)
    faults: list[tuple[float, str, str]] = field(default_factory=list)  # (at, kind, what)
    harness_problems: list[str] = field(default_factory=list)


@dataclass
class Violation:
    kind: str
    stream: tuple | None
    offsets: list[tuple[int, int]]  # ranges
    detail: str

    def __str__(self) -> str:
        where = "" if self.stream is None else f"stream {self.stream} "
        spans = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in self.offsets[:8])
        if len(self.offsets) > 8:
            spans += f" (+{len(self.offsets) - 8} more ranges)"
        if spans:
            spans = f"offsets {spans}: "
        return f"{self.kind}: {where}{spans}{self.detail}"


@dataclass
class Verdict:
    counts: dict[str, int]
    violations: list[Violation]
    faults_by_kind: Counter

    @property
    def ok(self) -> bool:
        return not self.violations

    def table(self) -> str:
        c = self.counts
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.faults_by_kind.items()))
        rows = [
            ("faults injected", sum(self.faults_by_kind.values()), kinds),
            ("records sent", c["sent"], f"in {c['streams']} streams"),
            ("delivered", c["delivered"], "exactly once, byte-identical"),
            ("reported lost", c["reported"],
             f"in {c['reports']} reports, {c['unknown_start_reports']} with unknown start"),
            ("died in killed ingress", c["died_in_ingress"],
             "UDP: read by an ingress killed -9, never sent (no replay)"),
            ("duplicates", c["duplicates"], "extra copies delivered"),
            ("corrupt", c["corrupt"], "delivered, not byte-identical"),
            ("foreign", c["foreign"], "delivered, never sent"),
            ("false reports", c["false_reports"], "reported lost, yet delivered or never sent"),
            ("silent losses", c["silent_losses"], "neither delivered nor reported"),
            ("unscheduled exits", c["unscheduled_exits"], "a daemon ended by no fault"),
            ("bad stops", c["bad_stops"], f"SIGTERM: not exit 0 within {STOP_LIMIT:g} s"),
            ("harness problems", c["harness_problems"], "run inconclusive"),
        ]
        return "\n".join(f"  {name:<24}{n:>9}  {note}" for name, n, note in rows)

    def report(self, limit: int = 12) -> str:
        out = [self.table(), "", "RESULT: " + ("PASS" if self.ok else
                                               f"FAIL ({len(self.violations)} violations)")]
        for v in self.violations[:limit]:
            out.append("  - " + str(v))
        if len(self.violations) > limit:
            out.append(f"  ... {len(self.violations) - limit} more (result.json)")
        return "\n".join(out)


def ranges(offsets) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for o in sorted(offsets):
        if out and o == out[-1][1] + 1:
            out[-1][1] = o
        else:
            out.append([o, o])
    return [(a, b) for a, b in out]


def _near_fault(h: History, at: float) -> str:
    """Where `at` falls in the fault timeline (what the evidence most likely points at)."""
    before = [(t, d) for t, _kind, d in h.faults if t <= at]
    after = [(t, d) for t, _kind, d in h.faults if t > at]
    where = [f"after {before[-1][1]} ({before[-1][0]:.1f} s)" if before else
             "before any fault"]
    if after:
        where.append(f"before {after[0][1]} ({after[0][0]:.1f} s)")
    return f"sent at {at:.1f} s, " + ", ".join(where)


def _about_records(h: History, kind: str, stream: tuple, sent: dict, offsets,
                   what: str) -> Violation:
    first = sent[min(offsets)]
    return Violation(kind, stream, ranges(offsets), f"{what}; first {_near_fault(h, first.at)}")


def check(h: History) -> Verdict:
    counts = Counter()
    violations: list[Violation] = []
    reports_by_stream: dict[tuple, list[LossReport]] = {}
    for r in h.reports:
        reports_by_stream.setdefault(r.stream, []).append(r)
    counts["reports"] = len(h.reports)
    counts["unknown_start_reports"] = sum(r.first is None for r in h.reports)

    for stream in sorted(set(h.sent) | set(reports_by_stream), key=repr):
        sent = h.sent.get(stream, {})
        counts["streams"] += bool(sent)
        counts["sent"] += len(sent)
        copies = {o: h.delivered.get(s.rid, []) for o, s in sent.items()}
        delivered = {o for o, c in copies.items() if c}
        dup = {o: len(c) - 1 for o, c in copies.items() if len(c) > 1}
        bad = {o for o, c in copies.items() if any(d != sent[o].digest for d in c)}
        counts["delivered"] += len(delivered - bad)
        counts["duplicates"] += sum(dup.values())
        counts["corrupt"] += len(bad)
        if dup:
            violations.append(_about_records(h, "duplicate", stream, sent, dup,
                                             f"{sum(dup.values())} extra copies"))
        if bad:
            violations.append(_about_records(h, "corrupt", stream, sent, bad,
                                             f"{len(bad)} records"))

        covered: set[int] = set()
        for r in reports_by_stream.get(stream, []):
            lo = min(sent, default=0) if r.first is None else r.first
            span = set(range(lo, r.last + 1))
            if r.first is not None:
                invented, false = span - set(sent), span & delivered
            else:  # "some up to last": false if last was never sent or nothing is missing
                invented = {r.last} - set(sent)
                false = set() if span - delivered else {r.last}
            if invented or false:
                what = []
                if false:
                    what.append(f"{len(false)} of them delivered")
                if invented:
                    what.append(f"{len(invented)} never sent")
                counts["false_reports"] += len(false | invented)
                violations.append(Violation("false report", stream, ranges(false | invented),
                                            f"{' and '.join(what)}; {r.run} logged: {r.line}"))
            covered |= span - delivered
        counts["reported"] += len(covered & set(sent))

        missing = set(sent) - delivered - covered
        if stream in h.killed_udp_sessions and missing:
            top = max(delivered | {r.last for r in reports_by_stream.get(stream, [])},
                      default=0)
            killed = h.killed_udp_sessions[stream]
            died = {o for o in missing if top and o > top and
                    sent[o].at >= killed - TAIL_WINDOW}
            counts["died_in_ingress"] += len(died)
            missing -= died
        counts["silent_losses"] += len(missing)
        if missing:
            violations.append(_about_records(h, "silent loss", stream, sent, missing,
                                             f"{len(missing)} records"))

    counts["foreign"] = len(h.foreign)
    for f in h.foreign[:3]:
        violations.append(Violation("foreign", None, [], f))
    for e in h.exits:
        if not e.scheduled:
            counts["unscheduled_exits"] += 1
            violations.append(Violation("unscheduled exit", None, [],
                                        f"{e.role}#{e.run} exit {e.rc} at {e.at:.1f} s: "
                                        f"{e.evidence}"))
        elif e.bad_stop:
            counts["bad_stops"] += 1
            violations.append(Violation("bad stop", None, [],
                                        f"{e.role}#{e.run} after SIGTERM: exit {e.rc} in "
                                        f"{e.stop_seconds:.1f} s: {e.evidence}"))
    counts["harness_problems"] = len(h.harness_problems)
    for p in h.harness_problems:
        violations.append(Violation("harness problem", None, [], p))
    for key in ("sent", "delivered", "reported", "died_in_ingress", "duplicates", "corrupt",
                "false_reports", "silent_losses", "unscheduled_exits", "bad_stops", "streams"):
        counts.setdefault(key, 0)
    faults = Counter(kind for _t, kind, _d in h.faults)
    return Verdict(dict(counts), violations, faults)
