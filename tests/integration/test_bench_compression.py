"""The compression benchmark's measurement (appliance.tools.bench.measure_ddc with the
generator's JSON log corpus and link.compression = "zstd") between real daemons: every
record verified on the far side, nothing lost, and the ratio it reports is the
ingress's. Figures are not asserted (docs/performance.md): only that it measures."""

from __future__ import annotations

import pytest

from appliance.tools.bench import measure_ddc

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("compression", ["none", "zstd"])
def test_json_logs_cross_verified_with_and_without_zstd(compression):
    r = measure_ddc(1.5, 0, 5.0, 1500, "encrypt", 100.0, "json-logs", compression)
    assert r["records_per_s"] > 0 and r["mismatches"] == 0 and r["records_lost"] == 0
    if compression == "zstd":
        assert r["compression_ratio"] > 3  # JSON logs: about 7.7 at level 3
    else:
        assert r["compression_ratio"] == 1.0
