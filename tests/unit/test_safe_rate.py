"""ddc bench --find-safe-rate's search (appliance.tools.bench.find_safe_rate), on stand-in
measurements: the real runs are the benchmark's, this is the one function's logic."""

from __future__ import annotations

from appliance.tools import bench


def fake_egress(limit: float, calls: list):
    """An egress that takes in `limit` records/s when flooded, but loses records whenever
    it is sent more than 80% of that (its socket overflows in bursts)."""
    def measure(*args, rate_records: float = 0.0, **kwargs):
        calls.append(rate_records)
        sent = rate_records or 2 * limit
        over = sent > 0.8 * limit
        return {"records_per_s": min(sent, limit), "records_lost": int(over) * 100,
                "kernel_drops": int(over) * 10, "mismatches": 0}
    return measure


def test_steps_down_to_the_first_lossless_rate(monkeypatch):
    calls: list = []
    monkeypatch.setattr(bench, "measure_ddc", fake_egress(100_000, calls))
    safe, unpaced, tries = bench.find_safe_rate(1, 256, 5, 1500, "encrypt", 0, "pattern",
                                                "none", say=lambda line: None)
    assert calls[0] == 0.0  # unpaced first
    assert calls[1] == int(100_000 * bench.SAFE_START)  # just under what it absorbed
    assert safe == calls[-1] and safe <= 80_000
    assert len(calls) > 2 and all(r > 80_000 for r in calls[1:-1])  # earlier tries lost
    assert bench.lossless(tries[-1][1]) and not bench.lossless(unpaced)


def test_unpaced_lossless_needs_no_search(monkeypatch):
    calls: list = []

    def measure(*args, rate_records: float = 0.0, **kwargs):
        calls.append(rate_records)
        return {"records_per_s": 5000.0, "records_lost": 0, "kernel_drops": 0,
                "mismatches": 0}
    monkeypatch.setattr(bench, "measure_ddc", measure)
    safe, _, tries = bench.find_safe_rate(1, 256, 5, 1500, "encrypt", 0, "pattern", "none",
                                          say=lambda line: None)
    assert (safe, tries, calls) == (None, [], [0.0])


def test_gives_up_after_its_tries(monkeypatch):
    calls: list = []
    monkeypatch.setattr(bench, "measure_ddc", fake_egress(1, calls))
    safe, _, tries = bench.find_safe_rate(1, 256, 5, 1500, "encrypt", 0, "pattern", "none",
                                          say=lambda line: None)
    assert safe is None and len(tries) == bench.SAFE_TRIES
