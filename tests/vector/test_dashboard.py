"""The Grafana dashboard: valid JSON, sane layout, and queries over catalogue names only."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest

from .support import (
    GRAFANA_DIR,
    catalogue_names,
    component_ids,
    installed_config,
    load_catalogue,
    promql_metric_names,
)

DASHBOARD = GRAFANA_DIR / "ddc-dashboard.json"


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def _panels(dashboard: dict) -> Iterator[dict]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # collapsed rows keep their panels inside


def _exprs(dashboard: dict) -> Iterator[tuple[str, str]]:
    for panel in _panels(dashboard):
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            query = var["query"]
            text = query["query"] if isinstance(query, dict) else query
            # Grafana's label_values(selector, label): the last argument is a label name.
            text = re.sub(r"^(label_values\(.*),\s*[A-Za-z_][A-Za-z0-9_]*\s*\)\s*$", r"\1)", text)
            yield f"${var['name']}", text


def test_dashboard_is_valid_json_with_identity(dashboard):
    assert dashboard["uid"] == "ddc-overview"
    assert dashboard["title"]
    assert isinstance(dashboard["schemaVersion"], int)


def test_panel_ids_unique_and_placed(dashboard):
    ids = [p["id"] for p in _panels(dashboard)]
    assert len(ids) == len(set(ids))
    for panel in _panels(dashboard):
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]


def test_every_query_panel_has_targets(dashboard):
    for panel in _panels(dashboard):
        if panel["type"] != "row":
            assert panel.get("targets"), panel["title"]
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]


def test_queries_use_only_catalogue_metrics(dashboard):
    allowed = catalogue_names() | set(load_catalogue()["vector_internal"])
    for where, expr in _exprs(dashboard):
        names = promql_metric_names(expr)
        assert names <= allowed, f"{where}: unknown metrics {names - allowed} in {expr!r}"


def test_every_panel_query_names_a_metric(dashboard):
    for panel in _panels(dashboard):
        for target in panel.get("targets", []):
            assert promql_metric_names(target["expr"]), (panel["title"], target["expr"])


def test_required_views_are_present(dashboard):
    used = set()
    for _, expr in _exprs(dashboard):
        used |= promql_metric_names(expr)
    required = {
        # throughput
        "ddc_ingress_packets_sent",
        "ddc_ingress_bytes_sent",
        "ddc_egress_packets_received",
        "ddc_egress_bytes_received",
        # loss and FEC
        "ddc_egress_packet_loss",
        "ddc_egress_dropped_packets",
        "ddc_egress_fec_recovered",
        "ddc_egress_records_lost",
        # security, link, Kafka
        "ddc_egress_auth_failures",
        "ddc_link_heartbeat_age_seconds",
        "ddc_kafka_consumer_lag",
    }
    assert required <= used, required - used
    titles = " ".join(p["title"].lower() for p in _panels(dashboard))
    for word in ("throughput", "loss", "fec", "records lost", "auth", "heartbeat", "lag"):
        assert word in titles, word


def test_all_catalogue_metrics_are_shown(dashboard):
    used = set()
    for _, expr in _exprs(dashboard):
        used |= promql_metric_names(expr)
    missing = catalogue_names() - used
    assert not missing, f"catalogue metrics with no panel: {missing}"


def test_vector_component_ids_in_queries_exist(dashboard):
    ids = component_ids(installed_config())
    for where, expr in _exprs(dashboard):
        for cid in re.findall(r'component_id="([^"]+)"', expr):
            assert cid in ids, f"{where}: no component {cid!r} in vector.yaml"
