"""Structure of the Vector configuration the vector role renders (and of vector/vector.yaml,
its checkout rendering), read with PyYAML.

Vector cannot be installed on the build machines, so this stands in for `vector validate`
on the points that matter for the appliance: the topology is wired, the VRL files exist,
the listening addresses agree with the daemon, and nothing is exposed that should not be.
"""

from __future__ import annotations

import ast
import ipaddress
import json
import re
import tomllib
from pathlib import Path

import pytest
import yaml

from .render import (
    CHECKOUT_CONFIG,
    VRL_DIR,
    render,
    render_checkout,
    render_optional,
    role_variables,
)
from .support import (
    REPO,
    VECTOR_DIR,
    component_ids,
    installed_config,
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

TEST_FILES = sorted((VECTOR_DIR / "tests").glob("*.yaml"))
# Every optional part of the template switched on.
ALL_OPTIONAL = {
    "vector_loki_endpoint": "http://loki.example:3100",
    "vector_elasticsearch_endpoint": "https://es.example:9200",
}


@pytest.fixture(scope="module")
def config() -> dict:
    """/etc/vector/vector.yaml as the vector role writes it with its defaults."""
    return installed_config()


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def _components_of_type(config: dict, kind: str, type_: str) -> dict:
    return {cid: c for cid, c in config[kind].items() if c["type"] == type_}


# --------------------------------------------------------------------------- loading


@pytest.mark.parametrize(
    "text",
    [render(), render(ALL_OPTIONAL), render_checkout()],
    ids=["defaults", "all-optional", "checkout"],
)
def test_rendered_config_takes_nothing_from_the_environment(text):
    # Vector >= 0.57 leaves ${VAR} uninterpolated unless told otherwise (the file would not
    # load: "invalid socket address syntax"); older ones interpolate the raw text, comments
    # included. With no dollar sign at all, every Vector reads the same file.
    for lineno, line in enumerate(text.splitlines(), 1):
        assert "$" not in line, f"line {lineno}: {line.strip()}"
    assert "{{" not in text, "unrendered Jinja, or a Vector template"


@pytest.mark.parametrize("path", TEST_FILES, ids=lambda p: p.name)
def test_no_dollar_in_vector_test_files(path):
    # `vector test` loads these as configuration files too.
    assert "$" not in path.read_text(encoding="utf-8"), path.name


def test_checkout_config_is_the_rendered_template():
    assert CHECKOUT_CONFIG.read_text(encoding="utf-8") == render_checkout(), (
        "vector/vector.yaml is out of date: run python -m tests.vector.render"
    )


def test_the_charts_optional_sinks_are_the_rendered_template():
    for path, text in render_optional().items():
        assert path.read_text(encoding="utf-8") == text, (
            f"{path.relative_to(REPO)} is out of date: run python -m tests.vector.render"
        )


def test_checkout_config_differs_only_in_where_the_vrl_is():
    installed = installed_config()
    checkout = load_vector_config([CHECKOUT_CONFIG])
    for comp in checkout["transforms"].values():
        if "file" in comp:
            comp["file"] = f"/etc/vector/{Path(comp['file']).name}"
    checkout.pop("tests")
    assert {k: v for k, v in checkout.items() if v != {}} == {
        k: v for k, v in installed.items() if v != {}
    }


def test_role_pins_a_tested_vector_version():
    version = role_variables()["vector_version"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", version), f"vector_version {version!r} is not pinned"
    readme = (VECTOR_DIR / "README.md").read_text(encoding="utf-8")
    assert f"The role installs Vector **{version}**" in readme, "vector/README.md: Vector versions"


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
    remaps = _remaps(load_vector_config([CHECKOUT_CONFIG]))
    assert remaps
    for cid, comp in remaps.items():
        assert "file" in comp and "source" not in comp, f"{cid}: VRL lives in a .vrl file"
        assert not Path(comp["file"]).is_absolute(), f"{cid}: relative to the repository root"
        assert (REPO / comp["file"]).is_file(), f"{cid}: {comp['file']} missing"


def test_remap_files_are_installed_next_to_vector_yaml(config):
    # /etc/vector/<name>.vrl, and the role installs <name>.vrl from its files/.
    installed = set(role_variables()["vector_vrl_programs"])
    for cid, comp in _remaps(config).items():
        path = Path(comp["file"])
        assert path.parent == Path("/etc/vector"), f"{cid}: {path}"
        assert (VRL_DIR / path.name).is_file(), f"{cid}: role file {path.name} missing"
        assert path.name in installed, f"{cid}: the role does not install {path.name}"


def test_every_vrl_file_is_used(config):
    used = {Path(c["file"]).name for c in _remaps(config).values()}
    present = {p.name for p in VRL_DIR.glob("*.vrl")}
    assert present == used, f"unused: {present - used}, missing: {used - present}"
    assert set(role_variables()["vector_vrl_programs"]) == present


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


def test_ddc_role_sends_where_the_vector_role_listens():
    ddc = yaml.safe_load((REPO / "ansible/roles/ddc/defaults/main.yml").read_text())
    vector = role_variables()
    assert ddc["ddc_logging"]["syslog"] == vector["vector_syslog_address"]
    assert ddc["ddc_metrics"]["statsd"] == vector["vector_statsd_address"]


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


def test_addresses_and_directories_are_role_variables():
    cfg = installed_config(
        vector_prometheus_address="10.1.2.3:9100",
        vector_log_dir="/srv/ddc-logs",
        vector_config_dir="/opt/vector",
        vector_syslog_address="127.0.0.1:1514",
    )
    assert cfg["sinks"]["prometheus"]["address"] == "10.1.2.3:9100"
    assert cfg["sinks"]["ddc_file"]["path"].startswith("/srv/ddc-logs/")
    assert cfg["transforms"]["ddc_logs_parse"]["file"] == "/opt/vector/ddc_logs.vrl"
    assert cfg["sources"]["ddc_syslog"]["address"] == "127.0.0.1:1514"


def test_ipv6_addresses_render_as_strings():
    cfg = installed_config(vector_prometheus_address="[::]:9598")
    assert cfg["sinks"]["prometheus"]["address"] == "[::]:9598"


def test_file_sink_rotates_daily(config):
    files = _components_of_type(config, "sinks", "file")
    assert set(files) == {"ddc_file", "forwarded_syslog_file"}
    sink = files["ddc_file"]
    path = sink["path"]
    assert path.startswith("/var/log/ddc/")
    assert "%Y-%m-%d" in Path(path).name, "one file per day, named by date"
    assert sink["encoding"]["codec"] == "json"
    assert sink["inputs"] == ["ddc_logs_parse"], "the file gets every parsed line"


def _downstream(config: dict, cid: str) -> set[str]:
    """Every transform and sink fed by `cid`, directly or through others."""
    found, todo = set(), [cid]
    while todo:
        current = todo.pop()
        for kind in ("transforms", "sinks"):
            for other, comp in config[kind].items():
                if current in comp.get("inputs", []) and other not in found:
                    found.add(other)
                    todo.append(other)
    return found


def test_forwarded_syslog_has_its_own_destination(config):
    src = config["sources"]["forwarded_syslog"]
    # A socket source parses nothing: no datagram is rejected before the VRL runs (the
    # syslog source drops what is not RFC 5424/3164), and none is cut (UDP's maximum).
    assert src["type"] == "socket" and src["mode"] == "udp"
    assert "decoding" not in src and "framing" not in src, "bytes: one event per datagram"
    assert src["max_length"] >= 65535
    # Its own transform and file only: not the daemon's log file, not the console.
    downstream = _downstream(config, "forwarded_syslog")
    assert downstream == {"forwarded_syslog_parse", "forwarded_syslog_file"}
    file_sink = config["sinks"]["forwarded_syslog_file"]
    assert file_sink["path"] != config["sinks"]["ddc_file"]["path"]
    assert Path(file_sink["path"]).parent == Path(config["sinks"]["ddc_file"]["path"]).parent, (
        "the same directory, so the same tmpfiles.d age applies"
    )


def test_forwarded_syslog_can_be_switched_off():
    cfg = installed_config(vector_forwarded_syslog_address="")
    assert "forwarded_syslog" not in cfg["sources"]
    assert "forwarded_syslog_parse" not in cfg["transforms"]
    assert "forwarded_syslog_file" not in cfg["sinks"]


def test_example_egress_forwards_syslog_to_its_own_destination():
    example = tomllib.loads((REPO / "examples" / "egress.toml").read_text(encoding="utf-8"))
    targets = [c["udp"]["target"] for c in example["channel"] if c["type"] == "udp"]
    variables = role_variables()
    assert variables["vector_forwarded_syslog_address"] in targets
    assert example["logging"]["syslog"] not in targets, (
        "forwarded syslog must not go into the daemon's own syslog source"
    )
    assert variables["vector_syslog_address"] not in targets


def test_console_sink_writes_json_to_stdout(config):
    consoles = _components_of_type(config, "sinks", "console")
    assert len(consoles) == 1
    (sink,) = consoles.values()
    assert sink.get("target", "stdout") == "stdout"
    assert sink["encoding"]["codec"] == "json"


def test_no_network_log_sink_in_the_default_config(config):
    remote = {"loki", "elasticsearch", "http", "socket", "vector", "kafka", "splunk_hec_logs"}
    for cid, sink in config["sinks"].items():
        assert sink["type"] not in remote, f"{cid}: remote sinks only when their variable is set"


# --------------------------------------------------------------------------- optional sinks


def test_remote_sinks_are_off_by_default(config):
    assert not {"ddc_loki", "ddc_elasticsearch"} & set(config["sinks"])


def test_remote_sinks_from_role_variables():
    cfg = installed_config(**ALL_OPTIONAL)
    loki, es = cfg["sinks"]["ddc_loki"], cfg["sinks"]["ddc_elasticsearch"]
    assert loki["type"] == "loki" and loki["endpoint"] == ALL_OPTIONAL["vector_loki_endpoint"]
    assert es["type"] == "elasticsearch"
    assert es["endpoints"] == [ALL_OPTIONAL["vector_elasticsearch_endpoint"]]
    # Static labels: Vector >= 0.57 rejects an unprefixed event-field label template.
    assert loki["labels"] == {"app": "ddc", "host": "ddc-test-host"}
    assert "{{" not in json.dumps(cfg), "no Vector template left for confinement to reject"
    ids = component_ids(cfg)
    for cid in ("ddc_loki", "ddc_elasticsearch"):
        sink = cfg["sinks"][cid]
        assert sink["inputs"] == ["ddc_logs_parse"] and set(sink["inputs"]) <= set(ids)
        # A remote outage must never back-pressure the local pipeline.
        assert sink["buffer"]["when_full"] == "drop_newest", f"{cid}: buffer.when_full"
        assert sink["healthcheck"]["enabled"] is False, f"{cid}: offline hosts validate"


# --------------------------------------------------------------------------- unit tests


@pytest.mark.parametrize("path", TEST_FILES, ids=lambda p: p.name)
def test_vector_unit_test_files_name_real_components(path, config):
    data = load_yaml_file(path)
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
