"""StatsD metrics (through the statsd package) with DogStatsD tags, which Vector's statsd
source turns into Prometheus labels. Names are catalogued in docs/metrics.md."""

from __future__ import annotations

import statsd


def statsd_number(value: float) -> str:
    """The exact decimal text of a value: integers as integers (a lag of 12345678, not
    1.23457e+07 as %g would round it), other floats as the shortest text that reads back as
    the same double. Vector's statsd source parses either with Rust's f64 parser."""
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        return str(int(value))
    return repr(float(value))


class TaggedStatsClient(statsd.StatsClient):
    """statsd.StatsClient whose lines can carry |#key:value tags."""

    def __init__(self, host: str, port: int, prefix: str, base_tags: dict[str, str]):
        super().__init__(host, port, prefix=prefix or None)
        self._base = ",".join(f"{k}:{v}" for k, v in base_tags.items())

    def _tags(self, tags: dict[str, str] | None) -> str:
        extra = ",".join(f"{k}:{v}" for k, v in (tags or {}).items())
        joined = ",".join(t for t in (self._base, extra) if t)
        return f"|#{joined}" if joined else ""

    def count(self, name: str, value: float, tags: dict[str, str] | None = None) -> None:
        # Zero increments too: a counter exists in Prometheus from start-up, so the first
        # loss is an increase() from 0 rather than a new series alerts cannot see.
        self._send_stat(name, f"{statsd_number(int(value))}|c{self._tags(tags)}", 1)

    def set_gauge(self, name: str, value: float, tags: dict[str, str] | None = None) -> None:
        # A negative value would be read as a delta by StatsD; gauges here are >= 0.
        self._send_stat(name, f"{statsd_number(max(value, 0))}|g{self._tags(tags)}", 1)


class NullStats:
    def count(self, name: str, value: float, tags: dict[str, str] | None = None) -> None:
        pass

    def set_gauge(self, name: str, value: float, tags: dict[str, str] | None = None) -> None:
        pass


class CounterDeltas:
    """Turns cumulative counters into the increments StatsD counters want."""

    def __init__(self) -> None:
        self._last: dict[tuple, float] = {}

    def delta(self, key: tuple, total: float) -> float:
        prev = self._last.get(key, 0)
        self._last[key] = total
        return total - prev if total >= prev else total
