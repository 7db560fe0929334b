"""Prometheus alert rules: promtool check + promtool unit tests, and names from the catalogue.

promtool comes from Debian's `prometheus` package (scripts/ci/install-vector-tools.sh).
These tests FAIL when it is missing: alerting is part of the product, not optional.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from .support import (
    PROMETHEUS_DIR,
    catalogue_names,
    component_ids,
    installed_config,
    load_catalogue,
    promql_metric_names,
)

RULES = PROMETHEUS_DIR / "ddc-alerts.yml"
RULE_TESTS = PROMETHEUS_DIR / "ddc-alerts.test.yml"

REQUIRED_ALERTS = {
    "DDCLinkDown",
    "DDCRecordsLost",
    "DDCAuthFailures",
    "DDCConsumerLagGrowing",
    "DDCKernelReceiveDrops",
}


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool not found: run scripts/ci/install-vector-tools.sh "
            "(apt-get install --no-install-recommends prometheus)"
        )
    return path


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_promtool(), *args], capture_output=True, text=True, timeout=120, check=False
    )


def _rules() -> list[dict]:
    data = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in data["groups"] for rule in group["rules"]]


def test_promtool_check_rules():
    proc = _run("check", "rules", str(RULES))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_promtool_rule_unit_tests():
    # promtool resolves rule_files relative to the test file.
    proc = _run("test", "rules", str(RULE_TESTS))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_required_alerts_exist():
    names = {r["alert"] for r in _rules() if "alert" in r}
    assert names >= REQUIRED_ALERTS, REQUIRED_ALERTS - names


def test_every_alert_has_a_unit_test():
    tests = yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))["tests"]
    tested = {t["alertname"] for case in tests for t in case.get("alert_rule_test", [])}
    # ...and one where it actually fires.
    fired = {
        t["alertname"]
        for case in tests
        for t in case.get("alert_rule_test", [])
        if t.get("exp_alerts")
    }
    names = {r["alert"] for r in _rules() if "alert" in r}
    assert names <= tested, names - tested
    assert names <= fired, names - fired


@pytest.mark.parametrize("rule", [r for r in _rules() if "alert" in r], ids=lambda r: r["alert"])
def test_alert_uses_only_catalogue_metrics(rule):
    allowed = catalogue_names() | set(load_catalogue()["vector_internal"])
    names = promql_metric_names(rule["expr"])
    assert names, f"{rule['alert']}: no metric found in {rule['expr']!r}"
    assert names <= allowed, f"{rule['alert']}: unknown metrics {names - allowed}"


@pytest.mark.parametrize("rule", [r for r in _rules() if "alert" in r], ids=lambda r: r["alert"])
def test_alert_has_severity_and_text(rule):
    assert rule["labels"]["severity"] in ("critical", "warning", "info")
    assert rule["annotations"].get("summary")
    assert rule["annotations"].get("description")


def test_link_down_threshold_is_three_heartbeats():
    rule = next(r for r in _rules() if r.get("alert") == "DDCLinkDown")
    assert "ddc_link_heartbeat_age_seconds > 3" in rule["expr"]
    assert rule["for"] == "1m"


def test_consumer_lag_alert_needs_growth_and_size():
    rule = next(r for r in _rules() if r.get("alert") == "DDCConsumerLagGrowing")
    assert "deriv(ddc_kafka_consumer_lag" in rule["expr"]
    assert "ddc_kafka_consumer_lag >" in rule["expr"]
    assert rule["for"] == "10m"


def test_vector_component_ids_in_alerts_exist():
    # vector_component_* series carry component_id = the id in vector.yaml.
    ids = component_ids(installed_config())
    for rule in _rules():
        for cid in re.findall(r'component_id="([^"]+)"', rule["expr"]):
            assert cid in ids, f"{rule.get('alert')}: no component {cid!r} in vector.yaml"
