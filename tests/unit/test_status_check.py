"""`ddc status --check`: the health check of the container image and the Helm chart.

It must fail on a dead or hung daemon (no status file, or one not rewritten for three
metrics intervals), pass on a live one, and say which in one line."""

from __future__ import annotations

import json
import time

import pytest

from appliance.cli import main


def _write(path, age: float, interval: float = 1.0) -> None:
    path.write_text(json.dumps({"role": "egress", "node": "egress-1", "interval": interval,
                                "updated": time.time() - age}))


def test_fresh_status_is_healthy(tmp_path, capsys):
    status = tmp_path / "status.json"
    _write(status, age=0.5)
    assert main(["status", "--file", str(status), "--check"]) == 0
    assert "healthy: egress egress-1" in capsys.readouterr().out


def test_stale_status_is_unhealthy_and_says_how_old(tmp_path, capsys):
    status = tmp_path / "status.json"
    _write(status, age=30)
    assert main(["status", "--file", str(status), "--check"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"{status} was last rewritten 30 s ago" in err and "not running or hung" in err


@pytest.mark.parametrize(("age", "healthy"), [(20, True), (40, False)])
def test_staleness_follows_the_metrics_interval(tmp_path, age, healthy):
    # metrics.interval = 10 s: the file is rewritten every 10 s, stale after 30 s.
    status = tmp_path / "status.json"
    _write(status, age=age, interval=10)
    assert main(["status", "--file", str(status), "--check"]) == (0 if healthy else 1)


def test_missing_status_file_is_unhealthy(tmp_path, capsys):
    assert main(["status", "--file", str(tmp_path / "none.json"), "--check"]) == 1
    assert "no status file at" in capsys.readouterr().err
