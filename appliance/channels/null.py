"""Null channel (egress): counts records and drops them; optionally checks generator records.

With verify = true and the generator's size and values, every value is compared with the
one the generator channel made for that sequence number (carried in the key).
"""

from __future__ import annotations

from ..protocol.heartbeat import KIND_COUNTER, Metric
from ..protocol.records import Record
from .base import ChannelContext, Sink, unknown_keys
from .generator import CYCLE, VALUES

ROLES = ("egress",)


def validate(options: dict, role: str) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    unknown_keys(options, {"verify", "size", "values"}, problems)
    if options.get("values", "pattern") not in VALUES:
        problems.append(("values", f"must be the generator's values, one of "
                                   f"{', '.join(VALUES)}, got {options.get('values')!r}"))
    if not isinstance(options.get("verify", False), bool):
        problems.append(("verify", "must be true or false"))
    size = options.get("size", 1024)
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        problems.append(("size", f"must be the generator's record size in bytes, got {size!r}"))
    return problems


class NullSink(Sink):
    def __init__(self, options: dict, ctx: ChannelContext):
        self.ctx = ctx
        self.verify = options.get("verify", False)
        self.size = options.get("size", 1024)
        self.make = VALUES[options.get("values", "pattern")]
        self.cycle = CYCLE[options.get("values", "pattern")]
        self.records = 0
        self.bytes = 0
        self.mismatches = 0
        self._patterns: dict[int, bytes] = {}

    def write(self, record: Record) -> None:
        self.records += 1
        value = record.value or b""
        self.bytes += len(value)
        if self.verify:
            seq = int.from_bytes(record.key or b"\0", "big")
            idx = (seq - 1) % self.cycle
            want = self._patterns.get(idx)
            if want is None:
                want = self._patterns[idx] = self.make(idx, self.size)
            if value != want:
                self.mismatches += 1
                self.ctx.log_event("error", "record_mismatch",
                                   f"channel {self.ctx.name}: record {seq} differs from what "
                                   "the generator sent", seq=seq)

    def metrics(self) -> list[Metric]:
        tags = (("channel", self.ctx.name),)
        return [Metric("null.records", self.records, KIND_COUNTER, tags),
                Metric("null.bytes", self.bytes, KIND_COUNTER, tags),
                Metric("null.mismatches", self.mismatches, KIND_COUNTER, tags)]


def open_sink(options: dict, ctx: ChannelContext) -> NullSink:
    return NullSink(options, ctx)
