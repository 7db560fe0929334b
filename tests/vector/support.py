"""Helpers shared by the tests of the Vector pipeline, alert rules and dashboard.

Vector itself cannot be installed on the build machines, so these helpers stand in for the
parts of it the tests need:

* ``installed_config`` / ``load_vector_config``: the configuration the vector role renders
  (tests/vector/render.py), and Vector's merging of several files into one topology;
* ``VrlProgram``: a ``.vrl`` file compiled and run by vrl-python, which wraps the ``vrl``
  crate, i.e. Vector's own VRL compiler and runtime;
* ``prometheus_name``: how Vector's prometheus_exporter names a metric
  (``encode_namespace(namespace, '_', name)`` in src/sinks/prometheus/collector.rs);
* ``statsd_sanitize``: what Vector's statsd source does to a StatsD key (``sanitize_key`` in
  src/sources/statsd/parser.rs);
* ``promql_metric_names``: the metric names a PromQL expression refers to.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from .render import CHECKOUT_CONFIG, render

REPO = Path(__file__).resolve().parents[2]
VECTOR_DIR = REPO / "vector"
SAMPLES_DIR = Path(__file__).resolve().parent / "samples"
PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
GRAFANA_DIR = REPO / "deploy" / "grafana"

# vector/vector.yaml: the role's template rendered for a checkout (tests/vector/render.py).
MAIN_CONFIG = CHECKOUT_CONFIG
CATALOGUE_FILE = REPO / "docs" / "metrics-catalogue.yaml"

LEVELS = ("debug", "info", "warning", "error", "critical")
PROMETHEUS_NAME_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
PROMETHEUS_LABEL_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


# --------------------------------------------------------------------------- Vector config

def load_yaml_file(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{path}: top level is not a mapping"
    return data


def installed_config(**overrides: Any) -> dict[str, Any]:
    """/etc/vector/vector.yaml as the vector role writes it (its defaults plus overrides)."""
    data = yaml.safe_load(render(overrides))
    assert isinstance(data, dict), "the rendered configuration is not a mapping"
    return data


COMPONENT_KINDS = ("sources", "transforms", "sinks", "enrichment_tables")


def load_vector_config(paths: Iterable[Path]) -> dict[str, Any]:
    """Merge several Vector config files the way `vector --config a --config b` does.

    Components live in one namespace per kind; an id defined twice is an error. `tests`
    lists are concatenated; other top-level keys must agree.
    """
    merged: dict[str, Any] = {kind: {} for kind in COMPONENT_KINDS}
    merged["tests"] = []
    for path in paths:
        data = load_yaml_file(path)
        for key, value in data.items():
            if key in COMPONENT_KINDS:
                for cid, comp in (value or {}).items():
                    assert cid not in merged[key], f"{path}: {key}.{cid} defined twice"
                    merged[key][cid] = comp
            elif key == "tests":
                merged["tests"].extend(value or [])
            else:
                assert key not in merged or merged[key] == value, f"{path}: conflicting {key}"
                merged[key] = value
    return merged


def component_ids(config: Mapping[str, Any]) -> dict[str, str]:
    """id -> kind for every source and transform (what `inputs` may name)."""
    ids = {}
    for kind in ("sources", "transforms"):
        for cid in config.get(kind) or {}:
            ids[cid] = kind
    return ids


def vrl_source_of(transform: Mapping[str, Any]) -> str:
    """The VRL program text of a remap transform (from `source`, or `file` relative to the
    repository root, where `vector test` runs from a checkout)."""
    if "source" in transform:
        return transform["source"]
    return (REPO / transform["file"]).read_text(encoding="utf-8")


def condition_source(condition: Any) -> str:
    """VRL text of a filter condition (string shorthand or {type: vrl, source: ...})."""
    if isinstance(condition, str):
        return condition
    assert condition.get("type", "vrl") == "vrl", f"unsupported condition {condition!r}"
    return condition["source"]


# --------------------------------------------------------------------------- VRL


class VrlProgram:
    """A VRL program compiled by Vector's VRL compiler (through vrl-python)."""

    def __init__(self, source: str, name: str = "<vrl>"):
        from vrl_python import VRLRuntime

        self.name = name
        self.source = source
        diagnostic = VRLRuntime.check_syntax(source)
        if diagnostic is not None:
            raise AssertionError(f"{name} does not compile:\n{diagnostic.formatted_message}")
        self._runtime = VRLRuntime()  # UTC, like Vector's default `timezone`

    @classmethod
    def from_file(cls, path: Path) -> VrlProgram:
        return cls(path.read_text(encoding="utf-8"), name=str(path))

    def run(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """Run on a copy of `event`; return the event as the program leaves it."""
        return self._runtime.execute(self.source, copy.deepcopy(dict(event))).processed_event

    def result(self, event: Mapping[str, Any]) -> Any:
        """Run on a copy of `event`; return the value of the last expression."""
        return self._runtime.execute(self.source, copy.deepcopy(dict(event))).runtime_result


def vrl_timestamp(value: str) -> datetime:
    """A VRL timestamp as vrl-python hands it back ("2026-11-26 10:41:07.123 UTC")."""
    assert isinstance(value, str) and value.endswith(" UTC"), value
    text = value[: -len(" UTC")]
    fmt = "%Y-%m-%d %H:%M:%S.%f" if "." in text else "%Y-%m-%d %H:%M:%S"
    if "." in text:  # %f takes at most 6 digits; VRL prints up to 9
        head, frac = text.split(".")
        text = f"{head}.{frac[:6]}"
    return datetime.strptime(text, fmt).replace(tzinfo=UTC)


def get_path(event: Mapping[str, Any], dotted: str) -> Any:
    """event["a"]["b"] for "a.b"; raises KeyError when a step is missing."""
    node: Any = event
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise KeyError(dotted)
        node = node[part]
    return node


def has_path(event: Mapping[str, Any], dotted: str) -> bool:
    try:
        get_path(event, dotted)
    except KeyError:
        return False
    return True


# --------------------------------------------------------------------------- samples


def read_jsonl(path: Path) -> list[Any]:
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip() and not line.lstrip().startswith("//"):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:  # pragma: no cover - a broken sample file
                raise AssertionError(f"{path}:{lineno}: {exc}") from exc
    return rows


# An event as Vector's syslog source emits it for one RFC 5424 datagram from the daemon
# (legacy log namespace; timestamps are strings here because vrl-python takes only JSON types).
SYSLOG_EVENT = {
    "source_type": "syslog",
    "appname": "ddc",
    "procid": 4242,
    "facility": "daemon",
    "severity": "info",
    "hostname": "egress-1",
    "host": "egress-1",
    "source_ip": "127.0.0.1",
    "version": 1,
    "timestamp": "2026-11-26T10:41:07.200Z",
}

# An event as Vector's journald source emits it for one line a ddc unit wrote to stderr.
JOURNALD_EVENT = {
    "source_type": "journald",
    "host": "egress-1",
    "_SYSTEMD_UNIT": "ddc@egress.service",
    "SYSLOG_IDENTIFIER": "ddc",
    "_PID": "4242",
    "PRIORITY": "6",
    "_TRANSPORT": "stdout",
    "timestamp": "2026-11-26T10:41:07.200Z",
}

BASES = {"syslog": SYSLOG_EVENT, "journald": JOURNALD_EVENT}


def make_event(base: str | None, overrides: Mapping[str, Any]) -> dict[str, Any]:
    event = copy.deepcopy(BASES[base]) if base else {}
    for key, value in overrides.items():
        if value is None:
            event.pop(key, None)
        else:
            event[key] = value
    return event


# --------------------------------------------------------------------------- metrics


def load_catalogue() -> dict[str, Any]:
    return yaml.safe_load(CATALOGUE_FILE.read_text(encoding="utf-8"))


def catalogue_names() -> set[str]:
    cat = load_catalogue()
    return {m["prometheus"] for m in cat["metrics"]}


def statsd_sanitize(key: str) -> str:
    """Vector's statsd source key sanitising (`sanitize: true`, the default)."""
    key = key.replace("/", "-")
    key = re.sub(r"\s+", "_", key)
    return re.sub(r"[^a-zA-Z_\-0-9.]", "", key)


def prometheus_name(metric: Mapping[str, Any]) -> str:
    """The name prometheus_exporter writes: `<namespace>_<name>`, or `<name>` alone."""
    namespace = metric.get("namespace")
    return f"{namespace}_{metric['name']}" if namespace else metric["name"]


# --------------------------------------------------------------------------- PromQL

_PROMQL_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
    "bool",
    "and",
    "or",
    "unless",
    "atan2",
    "inf",
    "nan",
    "start",
    "end",
    # aggregation operators, which may come before `by (...)` instead of their `(`
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
}


def promql_metric_names(expr: str) -> set[str]:
    """Metric names an expression selects (identifiers that are not functions, keywords or
    label names). Grafana/Prometheus template variables are ignored."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)  # strings
    s = re.sub(r"\$\{[^}]*\}|\$[A-Za-z_][A-Za-z0-9_]*", "0", s)  # $__rate_interval, ${x}
    s = re.sub(r"\{[^}]*\}", "", s)  # label matchers
    s = re.sub(r"\[[^\]]*\]", "", s)  # ranges and subqueries
    s = re.sub(
        r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r"\1", s
    )  # label lists
    names = set()
    for m in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(\s*\()?", s):
        ident, call = m.group(1), m.group(2)
        if call or ident.lower() in _PROMQL_KEYWORDS:
            continue
        names.add(ident)
    return names
