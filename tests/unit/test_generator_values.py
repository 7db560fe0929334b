"""The generator's `values` (the benchmarks' corpora): deterministic, checked by a null
sink with the same setting, and a bad setting named by its key."""

from __future__ import annotations

import json
import threading

import pytest
import zstandard

from appliance.channels import generator, null
from appliance.channels.base import ChannelContext


def _run(values: str, count: int, size: int = 300) -> list:
    src = generator.open_source({"count": count, "size": size, "values": values},
                                ChannelContext(1, "g", "/tmp", 0))
    out = []
    src.run(out.extend, threading.Event())
    return out


@pytest.mark.parametrize("values", sorted(generator.VALUES))
def test_a_null_sink_with_the_same_values_verifies_every_record(values):
    records = _run(values, 300)
    assert len(records) == 300
    good = null.open_sink({"verify": True, "size": 300, "values": values},
                          ChannelContext(1, "n", "/tmp", 0))
    other = "random" if values != "random" else "pattern"
    bad = null.open_sink({"verify": True, "size": 300, "values": other},
                         ChannelContext(1, "n", "/tmp", 0))
    for rec in records:
        good.write(rec)
        bad.write(rec)
    assert (good.mismatches, bad.mismatches) == (0, 300)


def test_json_logs_are_distinct_json_records_that_compress():
    values = [generator.json_log(i) for i in range(generator.CYCLE["json-logs"])]
    assert len(set(values)) == len(values)
    assert all(600 < len(v) < 800 and isinstance(json.loads(v), dict) for v in values)
    blob = b"".join(values[:1000])
    assert len(blob) / len(zstandard.ZstdCompressor(level=3).compress(blob)) > 4
    rnd = b"".join(generator.random_value(i, 1024) for i in range(100))
    assert len(zstandard.ZstdCompressor(level=3).compress(rnd)) >= len(rnd)


def test_an_unknown_values_kind_is_named():
    assert ("values", "must be one of pattern, json-logs, random, got 'csv'") in \
        generator.validate({"values": "csv"}, "ingress")
    assert [k for k, _ in null.validate({"values": "csv"}, "egress")] == ["values"]
