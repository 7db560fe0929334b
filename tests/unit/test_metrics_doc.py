"""docs/metrics.md's tables of the nodes' own metrics are generated from IngressNode.COUNTERS
and EgressNode.COUNTERS (the rows metrics() and status() read): the doc must be what the
tables generate, and the machine-readable catalogue must say the same of each."""

from __future__ import annotations

from pathlib import Path

import yaml

from appliance.egress import EgressNode
from appliance.ingress import IngressNode
from appliance.protocol.heartbeat import KIND_COUNTER
from appliance.tools import metrics_doc

CATALOGUE = Path(__file__).resolve().parents[2] / "docs" / "metrics-catalogue.yaml"
ROWS = IngressNode.COUNTERS + EgressNode.COUNTERS


def test_the_doc_section_is_what_the_tables_generate():
    section = metrics_doc.section(metrics_doc.DOC.read_text())
    assert section is not None, f"{metrics_doc.DOC} lost its generated-section markers"
    assert section == metrics_doc.generated(), \
        f"docs/metrics.md is stale: run `{metrics_doc.REGENERATE}` and commit the result"


def test_the_catalogue_says_what_the_tables_say():
    catalogue = {m["statsd"]: m for m in yaml.safe_load(CATALOGUE.read_text())["metrics"]}
    for c in ROWS:
        entry = catalogue.get(f"ddc.{c.name}")
        assert entry is not None, f"ddc.{c.name} is not in {CATALOGUE.name}"
        assert entry["type"] == ("counter" if c.kind == KIND_COUNTER else "gauge"), c.name
        assert set(entry["tags"]) == set(c.labels) | ({"via"} if c.via else set()), c.name
        # The catalogue's text is plain: the doc's `code` marks are not in it.
        assert entry["help"] == c.help.replace("`", ""), c.name
        assert entry.get("alert", "-") == c.alert, c.name
    node_names = {f"ddc.{c.name}" for c in ROWS}
    for name in catalogue:
        if name.startswith(("ddc.ingress.", "ddc.egress.", "ddc.link.")):
            assert name in node_names, f"{name} is catalogued but no node's COUNTERS has it"


def test_names_and_status_keys_are_unique():
    for rows in (IngressNode.COUNTERS, EgressNode.COUNTERS):
        names = [c.name for c in rows]
        keys = [(c.labels[:1] == ("channel",), c.status) for c in rows if c.status]
        assert len(set(names)) == len(names)
        assert len(set(keys)) == len(keys)
