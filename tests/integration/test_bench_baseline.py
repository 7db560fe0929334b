"""`ddc bench` on a host without iperf3: an appliance's egress box is offline and has no
iperf3, yet it is where the operator runs `ddc bench --find-safe-rate` to find his safe
rate. The measurement (real daemons on loopback) must reach him with one line saying the
raw-UDP baseline is missing, not be thrown away by an error at the end."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def _bench_without_iperf3(tmp_path, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=str(tmp_path))  # only tmp_path: no iperf3 unless put there
    return subprocess.run(
        [sys.executable, "-m", "appliance.cli", "bench", "--seconds", "1", "--size", "256",
         "--rate-mbit", "100", *extra],
        capture_output=True, text=True, env=env, timeout=120)


def test_without_iperf3_the_figures_are_printed_and_the_missing_baseline_said(tmp_path):
    out = _bench_without_iperf3(tmp_path)
    assert out.returncode == 0, out.stderr
    assert "ddc     goodput" in out.stdout
    assert "CPU per record: ingress" in out.stdout
    notes = [line for line in out.stdout.splitlines() + out.stderr.splitlines()
             if "iperf3" in line and "not installed" in line]
    assert len(notes) == 1, (out.stdout, out.stderr)
    assert "Error" not in out.stderr and "Traceback" not in out.stderr


def test_without_iperf3_json_has_the_figures_and_no_baseline(tmp_path):
    out = _bench_without_iperf3(tmp_path, "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)  # stdout is the JSON alone; the note goes to stderr
    assert data["ddc"]["records_per_s"] > 0
    assert data["iperf3"] is None and data["ratio"] is None
    assert "not installed" in out.stderr


def test_a_failing_iperf3_keeps_the_figures_and_names_its_error(tmp_path):
    # An iperf3 that cannot run (here one that only complains, as iperf3 does when its
    # port is taken): the ddc figures are printed, then one line with iperf3's words.
    fake = tmp_path / "iperf3"
    fake.write_text("#!/bin/sh\necho 'iperf3: error - unable to bind: Address in use' >&2\n"
                    "exit 1\n")
    fake.chmod(0o755)
    out = _bench_without_iperf3(tmp_path)
    assert out.returncode == 1
    assert "ddc     goodput" in out.stdout
    errors = out.stderr.strip().splitlines()
    assert errors == ["ddc: error: the raw-UDP baseline: iperf3 exited 1: "
                      "iperf3: error - unable to bind: Address in use"], out.stderr
