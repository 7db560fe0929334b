"""Structure of vector/vector.yaml (and the optional sink files), read with PyYAML.

Vector cannot be installed on the build machines, so this stands in for `vector validate`
on the points that matter for the appliance: the topology is wired, the VRL files exist,
the listening addresses agree with the daemon, and nothing is exposed that should not be.
"""

from __future__ import annotations

import ast
import ipaddress
import re
from pathlib import Path

import pytest

from .support import (
    CHECKOUT_ENV,
    MAIN_CONFIG,
    REPO,
    VECTOR_DIR,
    component_ids,
    env_references,
    interpolate,
    load_vector_config,
    load_yaml_file,
)

# These two MUST match the daemon's defaults in appliance/config.py (DEFAULT_SYSLOG and
# DEFAULT_STATSD: where it sends syslog and StatsD). Written here for now; the lead will
# replace them with an import from appliance.config. test_daemon_defaults_match reads the
# module's source meanwhile, so a drift fails either way.
DAEMON_SYSLOG_ADDRESS = "127.0.0.1:514"
DAEMON_STATSD_ADDRESS = "127.0.0.1:8125"

PROMETHEUS_DEFAULT_PORT = 9598
# Longest scrape interval we expect operators to use; the exporter must keep series far longer.
MAX_SCRAPE_INTERVAL_SECS = 60

OPTIONAL_FILES = sorted((VECTOR_DIR / "optional").glob("*.yaml"))
TEST_FILES = sorted((VECTOR_DIR / "tests").glob("*.yaml"))


@pytest.fixture(scope="module")
def config() -> dict:
    """vector.yaml with the environment of a default install (no DDC_* set)."""
    return load_vector_config([MAIN_CONFIG], env={})


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def _components_of_type(config: dict, kind: str, type_: str) -> dict:
    return {cid: c for cid, c in config[kind].items() if c["type"] == type_}


# --------------------------------------------------------------------------- loading


def test_loads_with_an_empty_environment():
    # Every ${VAR} in vector.yaml has a default, so Vector starts with no /etc/default/vector.
    text = MAIN_CONFIG.read_text(encoding="utf-8")
    missing = [name for name, default in env_references(text) if default is None]
    assert not missing, f"variables without a default: {missing}"
    load_vector_config([MAIN_CONFIG], env={})


@pytest.mark.parametrize("path", [MAIN_CONFIG, *OPTIONAL_FILES, *TEST_FILES], ids=lambda p: p.name)
def test_no_dollar_in_comments(path):
    # Vector interpolates ${VAR} in the raw file text, comments included; a variable named in
    # a comment would be substituted (or fail to load when it is unset).
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.lstrip().startswith("#"):
            assert "$" not in line, f"{path.name}:{lineno}: '$' in a comment"


def test_top_level_keys(config):
    allowed = {
        "data_dir",
        "api",
        "sources",
        "transforms",
        "sinks",
        "tests",
        "enrichment_tables",
        "schema",
        "acknowledgements",
        "timezone",
    }
    assert set(config) <= allowed
    assert config["data_dir"] == "/var/lib/vector"


def test_yaml_format_only():
    # The Vector packages read /etc/vector/vector.yaml; no TOML twin to drift apart.
    assert not list(VECTOR_DIR.glob("*.toml"))


# --------------------------------------------------------------------------- wiring


def test_every_input_names_an_existing_component(config):
    ids = component_ids(config)
    for kind in ("transforms", "sinks"):
        for cid, comp in config[kind].items():
            inputs = comp.get("inputs")
            assert inputs, f"{kind}.{cid} has no inputs"
            for name in inputs:
                assert "*" not in name, f"{kind}.{cid}: no wildcard inputs, name them"
                assert name in ids, f"{kind}.{cid}: input {name!r} does not exist"
                assert name != cid, f"{kind}.{cid} feeds itself"


def test_every_source_and_transform_is_consumed(config):
    consumed = {
        i
        for kind in ("transforms", "sinks")
        for c in config[kind].values()
        for i in c.get("inputs", [])
    }
    for cid in component_ids(config):
        assert cid in consumed, f"{cid} feeds nothing"


def test_component_ids_are_prometheus_and_loki_friendly(config):
    for kind in ("sources", "transforms", "sinks"):
        for cid in config[kind]:
            assert re.fullmatch(r"[a-z][a-z0-9_]*", cid), cid


# --------------------------------------------------------------------------- VRL files


def _remaps(config: dict) -> dict:
    return _components_of_type(config, "transforms", "remap")


def test_remap_files_exist_from_a_checkout():
    cfg = load_vector_config([MAIN_CONFIG], env=CHECKOUT_ENV)
    remaps = _remaps(cfg)
    assert remaps
    for cid, comp in remaps.items():
        assert "file" in comp and "source" not in comp, f"{cid}: VRL lives in a .vrl file"
        assert Path(comp["file"]).is_file(), f"{cid}: {comp['file']} missing"


def test_remap_files_are_installed_next_to_vector_yaml(config):
    # Default (no DDC_VECTOR_DIR): /etc/vector/<name>.vrl, and <name>.vrl is in vector/.
    for cid, comp in _remaps(config).items():
        path = Path(comp["file"])
        assert path.parent == Path("/etc/vector"), f"{cid}: {path}"
        assert (VECTOR_DIR / path.name).is_file(), f"{cid}: vector/{path.name} missing"


def test_every_vrl_file_is_used(config):
    used = {Path(c["file"]).name for c in _remaps(config).values()}
    present = {p.name for p in VECTOR_DIR.glob("*.vrl")}
    assert present == used, f"unused: {present - used}, missing: {used - present}"


def test_remaps_never_drop_events(config):
    for cid, comp in _remaps(config).items():
        assert comp.get("drop_on_error", False) is False, cid
        assert comp.get("drop_on_abort", True) is False, f"{cid}: set drop_on_abort: false"
        assert not comp.get("reroute_dropped", False), cid


# --------------------------------------------------------------------------- sources


def test_daemon_defaults_match():
    # Parsed, not imported: appliance.config pulls in the daemon's runtime dependencies.
    source = (REPO / "appliance" / "config.py").read_text(encoding="utf-8")
    values = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    values[target.id] = node.value.value
    assert values.get("DEFAULT_SYSLOG") == DAEMON_SYSLOG_ADDRESS
    assert values.get("DEFAULT_STATSD") == DAEMON_STATSD_ADDRESS


def test_syslog_source_matches_the_daemon(config):
    syslog = _components_of_type(config, "sources", "syslog")
    assert len(syslog) == 1
    (src,) = syslog.values()
    assert src["mode"] == "udp"
    assert src["address"] == DAEMON_SYSLOG_ADDRESS


def test_statsd_source_matches_the_daemon(config):
    statsd = _components_of_type(config, "sources", "statsd")
    assert len(statsd) == 1
    (src,) = statsd.values()
    assert src["mode"] == "udp"
    assert src["address"] == DAEMON_STATSD_ADDRESS
    assert src.get("sanitize", True) is True


def test_listeners_of_the_daemon_are_loopback_only(config):
    for cid, src in config["sources"].items():
        if "address" in src:
            host, _ = _host_port(src["address"])
            assert ipaddress.ip_address(host).is_loopback, f"{cid} listens on {host}"


def test_api_is_on_loopback(config):
    api = config["api"]
    assert api.get("enabled") is True
    host, port = _host_port(api["address"])
    assert ipaddress.ip_address(host).is_loopback
    assert port == 8686


def test_logs_sources_feed_the_parser(config):
    parser = config["transforms"]["ddc_logs_parse"]
    syslog_id = next(iter(_components_of_type(config, "sources", "syslog")))
    journald_id = next(iter(_components_of_type(config, "sources", "journald")))
    assert set(parser["inputs"]) == {syslog_id, journald_id}
    journald = config["sources"][journald_id]
    assert journald.get("include_units") or journald.get("include_matches"), (
        "journald must be limited to the ddc processes"
    )
    assert "journal" in journald["exclude_matches"]["_TRANSPORT"], (
        "records the daemon writes to journald itself already come through syslog"
    )


# --------------------------------------------------------------------------- sinks


def test_prometheus_exporter(config):
    exporters = _components_of_type(config, "sinks", "prometheus_exporter")
    assert len(exporters) == 1
    (sink,) = exporters.values()
    _, port = _host_port(sink["address"])
    assert port == PROMETHEUS_DEFAULT_PORT
    # Sparse counters must not expire between their increments or scrapes (README.md).
    assert sink["flush_period_secs"] >= 10 * MAX_SCRAPE_INTERVAL_SECS
    assert sink.get("suppress_timestamp") is True
    assert "default_namespace" not in sink and "namespace" not in sink

    statsd_id = next(iter(_components_of_type(config, "sources", "statsd")))
    internal_id = next(iter(_components_of_type(config, "sources", "internal_metrics")))
    assert statsd_id not in sink["inputs"], "StatsD names must go through the rename first"
    assert internal_id in sink["inputs"], "Vector's own metrics are exported too"
    rename = config["transforms"]["ddc_metrics_rename"]
    assert rename["inputs"] == [statsd_id]
    assert "ddc_metrics_rename" in sink["inputs"]


def test_prometheus_address_is_configurable():
    text = MAIN_CONFIG.read_text(encoding="utf-8")
    refs = dict(env_references(text))
    assert refs.get("DDC_PROMETHEUS_ADDRESS") == f"0.0.0.0:{PROMETHEUS_DEFAULT_PORT}"
    cfg = load_vector_config([MAIN_CONFIG], env={"DDC_PROMETHEUS_ADDRESS": "10.1.2.3:9100"})
    assert cfg["sinks"]["prometheus"]["address"] == "10.1.2.3:9100"


def test_file_sink_rotates_daily(config):
    files = _components_of_type(config, "sinks", "file")
    assert len(files) == 1
    (sink,) = files.values()
    path = sink["path"]
    assert path.startswith("/var/log/ddc/")
    assert "%Y-%m-%d" in Path(path).name, "one file per day, named by date"
    assert sink["encoding"]["codec"] == "json"
    assert sink["inputs"] == ["ddc_logs_parse"], "the file gets every parsed line"


def test_console_sink_writes_json_to_stdout(config):
    consoles = _components_of_type(config, "sinks", "console")
    assert len(consoles) == 1
    (sink,) = consoles.values()
    assert sink.get("target", "stdout") == "stdout"
    assert sink["encoding"]["codec"] == "json"


def test_no_network_log_sink_in_the_default_config(config):
    remote = {"loki", "elasticsearch", "http", "socket", "vector", "kafka", "splunk_hec_logs"}
    for cid, sink in config["sinks"].items():
        assert sink["type"] not in remote, f"{cid}: remote sinks belong in vector/optional/"


# --------------------------------------------------------------------------- optional sinks


def test_optional_sink_files_exist():
    assert {p.name for p in OPTIONAL_FILES} >= {"loki.yaml", "elasticsearch.yaml"}


@pytest.mark.parametrize("path", OPTIONAL_FILES, ids=lambda p: p.name)
def test_optional_file_merges_into_the_main_config(path):
    refs = env_references(path.read_text(encoding="utf-8"))
    env = {name: "http://example.invalid:1" for name, default in refs if default is None}
    assert all(name.startswith("DDC_") for name in env), "only DDC_* settings"
    data = load_yaml_file(path, env)
    assert set(data) == {"sinks"}, "optional files only add sinks"

    merged = load_vector_config([MAIN_CONFIG, path], env=env)  # no duplicate ids
    ids = component_ids(merged)
    for cid, sink in data["sinks"].items():
        for name in sink["inputs"]:
            assert name in ids, f"{cid}: input {name!r} does not exist"
        # A remote outage must never back-pressure the local pipeline.
        buffer = sink.get("buffer") or {}
        assert buffer.get("when_full") == "drop_newest", f"{cid}: buffer.when_full"


def test_optional_files_need_their_endpoint():
    # Without the endpoint variable the file must not load silently with an empty URL.
    for path in OPTIONAL_FILES:
        refs = env_references(path.read_text(encoding="utf-8"))
        assert any(default is None for _, default in refs), path.name
        with pytest.raises(KeyError):
            interpolate(path.read_text(encoding="utf-8"), {})


# --------------------------------------------------------------------------- unit tests


@pytest.mark.parametrize("path", TEST_FILES, ids=lambda p: p.name)
def test_vector_unit_test_files_name_real_components(path, config):
    data = load_yaml_file(path, env={})
    assert set(data) == {"tests"} and data["tests"]
    transforms = set(config["transforms"])
    for test in data["tests"]:
        assert test.get("name"), path.name
        for inp in test["inputs"]:
            assert inp["insert_at"] in transforms, (test["name"], inp["insert_at"])
            assert inp["type"] in ("log", "metric", "raw", "vrl")
        for out in test.get("outputs", []):
            assert out["extract_from"] in transforms, (test["name"], out["extract_from"])
            assert out["conditions"], test["name"]
        for cid in test.get("no_outputs_from", []):
            assert cid in transforms, (test["name"], cid)
        assert test.get("outputs") or test.get("no_outputs_from"), test["name"]
