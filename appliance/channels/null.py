"""Null channel (egress): counts records and drops them; optionally checks generator records.

With verify = true and the generator's size and values, every value is compared with the
one the generator channel made for that sequence number (carried in the key).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..protocol.heartbeat import KIND_COUNTER, Metric
from ..protocol.records import Record
from ..schema import boolean, checked, is_int, option, options_of, parse_options
from .base import ChannelContext, Sink
from .generator import CYCLE, VALUES

ROLES = ("egress",)


@dataclass(frozen=True, kw_only=True)
class Options:
    """[channel.null]. With verify, size and values must be the generator's."""
    values: str = option("pattern", parse=checked(
        lambda v: isinstance(v, str) and v in VALUES,
        lambda v: f"must be the generator's values, one of {', '.join(VALUES)}, got {v!r}"))
    verify: bool = option(False, parse=boolean)
    size: int = option(1024, parse=checked(
        lambda v: is_int(v) and v >= 0,
        lambda v: f"must be the generator's record size in bytes, got {v!r}"))


def validate(options: dict, role: str) -> list[tuple[str, str]]:
    return parse_options(Options, options)[1]


class NullSink(Sink):
    def __init__(self, options: dict, ctx: ChannelContext):
        self.ctx = ctx
        opts = options_of(Options, options)
        self.verify = opts.verify
        self.size = opts.size
        self.make = VALUES[opts.values]
        self.cycle = CYCLE[opts.values]
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
