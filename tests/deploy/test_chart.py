"""The Helm chart deploy/helm/ddc: lint, what `helm template` renders, and the schema.

The chart is checked against ddc itself, not against a copy of its rules: every rendered
node config must pass `ddc check-config`, and the schema's keys and bounds must be the
ones appliance/config.py accepts (so values.schema.json cannot drift from the daemon)."""

from __future__ import annotations

import json
import re

import pytest
import tomlkit

from appliance.channels import CHANNEL_TYPES
from appliance.cli import main as ddc_main
from appliance.config import ConfigError, loads

from .support import (
    CHART,
    EXAMPLES,
    container,
    find,
    helm,
    node_config_text,
    pod_spec,
    render,
    value_args,
    volume_at,
)

SCHEMA = json.loads((CHART / "values.schema.json").read_text())
VALUE_FILES = [None, *EXAMPLES]
IDS = ["defaults", *(f"examples/{p.name}" for p in EXAMPLES)]


def _files(f):
    return [] if f is None else ["-f", str(f)]


@pytest.mark.parametrize("values", VALUE_FILES, ids=IDS)
def test_lint_strict(values):
    out = helm("lint", "--strict", str(CHART), *_files(values), check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 chart(s) failed" in out.stdout


@pytest.mark.parametrize("values", VALUE_FILES, ids=IDS)
def test_rendered_node_config_passes_check_config(values, tmp_path, capsys):
    objects = render("ddc-test", *_files(values))
    path = tmp_path / "ddc.toml"
    path.write_text(node_config_text(objects))
    # --no-files: the key is written by the init container; everything else is checked.
    assert ddc_main(["check-config", "--no-files", str(path)]) == 0, capsys.readouterr().err
    role = find(objects, "Deployment")["metadata"]["labels"]["app.kubernetes.io/component"]
    assert f"({role}," in capsys.readouterr().out


def test_integers_stay_integers_and_odd_keys_are_quoted(tmp_path):
    # YAML numbers reach templates as float64: Helm's toToml would write "mtu = 1500.0",
    # which ddc refuses for an integer key. Dotted librdkafka keys must be quoted.
    text = node_config_text(render("ddc-test", "-f", str(CHART / "examples/ingress.yaml")))
    assert "\nmtu = 1500\n" in text and "\nrate_mbit = 900\n" in text
    assert '"fetch.message.max.bytes" = 16777216' in text
    assert 'topic_pattern = "^audit\\\\..*"' in text  # the regex survives TOML escaping
    doc = tomlkit.parse(text).unwrap()
    assert doc["channel"][1]["kafka"]["properties"] == {"fetch.message.max.bytes": 16777216}
    assert doc["metrics"]["interval"] == 1 and isinstance(doc["link"]["mtu"], int)
    half = node_config_text(render("ddc-test", "--set-json", "metrics.interval=0.5"))
    assert "\ninterval = 0.5\n" in half


def test_filters_and_compression_render_to_a_config_ddc_compiles(tmp_path):
    """Filter rules (an array of tables with a nested match table) and the compression
    keys pass the schema and come out as the TOML ddc reads (docs/filters.md)."""
    channel = {"id": 1, "name": "logs", "type": "udp", "udp": {"listen": "127.0.0.1:5514"},
               "filter_default": "deny",
               "filter": [{"name": "no-debug", "action": "deny",
                           "match": {"value_json_field": "level", "value_json_equals": "debug"}},
                          {"action": "allow", "match": {"topic_regex": ".*", "max_size": 65536}}]}
    objects = render("ddc-test", *value_args({
        "role": "ingress", "channels": [channel],
        "link": {"bind": "0.0.0.0:0", "peer": "192.0.2.2:4789", "compression": "zstd",
                 "compression_level": 5, "compression_max_block_bytes": 1048576}},
        tmp=tmp_path))
    cfg = loads(node_config_text(objects), "x.toml", check_files=False)
    assert (cfg.link.compression_level, cfg.link.compression_max_block_bytes) == (5, 1048576)
    assert cfg.channels[0].filter.rule_names() == ["no-debug", "default"]
    bad = dict(channel, filter=[{"action": "drop", "match": {"topic": "x"}}])
    out = helm("template", "ddc-test", str(CHART), *value_args({"channels": [bad]},
                                                               tmp=tmp_path), check=False)
    assert out.returncode != 0 and "/channels/0/filter/0/action" in out.stderr


def test_link_key_comes_from_a_secret_never_a_configmap(tmp_path):
    key = "ab" * 32  # what a key looks like: it must appear in no rendered object
    objects = render("ddc-test", *value_args({"linkKey": {
        "existingSecret": "link-keys", "secretKey": "current",
        "acceptKeys": [{"id": 0, "secretKey": "previous"}]}}, tmp=tmp_path))
    assert not any(o["kind"] == "Secret" for o in objects)
    assert key not in json.dumps(objects)
    spec = pod_spec(objects)
    init = container(spec, "check-config", init=True)
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in init["env"]}
    assert env == {"DDC_LINK_KEY": {"name": "link-keys", "key": "current"},
                   "DDC_ACCEPT_KEY_0": {"name": "link-keys", "key": "previous"}}
    # The daemon and the sidecar never see the Secret; they see the files the init
    # container wrote (mode 0600: umask 077) into a memory-backed volume.
    for c in spec["containers"]:
        assert "env" not in c or not any("valueFrom" in e for e in c["env"]), c["name"]
    keys, mount = volume_at(spec, "ddc", "/run/ddc-keys")
    assert keys["emptyDir"]["medium"] == "Memory" and mount["readOnly"] is True
    script = init["args"][0]
    assert "umask 077" in script.splitlines()[0]
    assert "> /run/ddc-keys/link.key" in script and "> /run/ddc-keys/accept-0.key" in script
    doc = tomlkit.parse(node_config_text(objects)).unwrap()
    assert doc["link"]["key_file"] == "/run/ddc-keys/link.key"
    assert doc["link"]["accept_keys"] == [{"id": 0, "file": "/run/ddc-keys/accept-0.key"}]


def test_init_container_checks_the_config_the_daemon_runs():
    spec = pod_spec(render())
    init = container(spec, "check-config", init=True)
    daemon = container(spec, "ddc")
    assert init["args"][0].rstrip().endswith("exec ddc check-config /etc/ddc/ddc.toml")
    assert daemon["args"] == ["run", "--config", "/etc/ddc/ddc.toml"]
    assert init["image"] == daemon["image"]
    # Both read the same ConfigMap, read-only.
    mounts = {c["name"]: next(m for m in c["volumeMounts"] if m["mountPath"] == "/etc/ddc")
              for c in (init, daemon)}
    assert len({m["name"] for m in mounts.values()}) == 1
    assert all(m["readOnly"] for m in mounts.values())
    assert volume_at(spec, "ddc", "/etc/ddc")[0]["configMap"]["name"] == "ddc-test-config"
    # The probes read the status file the config names.
    doc = tomlkit.parse(node_config_text(render())).unwrap()
    for probe in ("startupProbe", "livenessProbe"):
        assert daemon[probe]["exec"]["command"] == [
            "ddc", "status", "--file", doc["status_file"], "--check"]


def test_diode_interface_and_host_network_are_options():
    plain = pod_spec(render())
    assert plain["hostNetwork"] is False and "dnsPolicy" not in plain
    assert "ip -o link" not in container(plain, "check-config", init=True)["args"][0]
    spec = pod_spec(render("ddc-test", "--set", "hostNetwork=true",
                           "--set", "diode.interface=eth1"))
    assert spec["hostNetwork"] is True and spec["dnsPolicy"] == "ClusterFirstWithHostNet"
    script = container(spec, "check-config", init=True)["args"][0]
    assert 'ip -o link show dev "eth1"' in script and "diode.interface eth1" in script


def test_security_context_follows_the_systemd_unit():
    spec = pod_spec(render())
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"] == {"runAsNonRoot": True,
                                       "seccompProfile": {"type": "RuntimeDefault"}}
    for c in [container(spec, "check-config", init=True), *spec["containers"]]:
        sc = c["securityContext"]
        assert sc["runAsNonRoot"] and sc["runAsUser"] != 0, c["name"]
        assert sc["readOnlyRootFilesystem"] is True, c["name"]
        assert sc["allowPrivilegeEscalation"] is False and sc["privileged"] is False, c["name"]
        assert sc["capabilities"] == {"drop": ["ALL"]}, c["name"]
    assert container(spec, "ddc")["securityContext"]["runAsUser"] == 10001  # the image's ddc user
    # Every path the daemon writes is a volume: state, status, /tmp (PrivateTmp=).
    mounts = {m["mountPath"] for m in container(spec, "ddc")["volumeMounts"]
              if not m.get("readOnly")}
    assert mounts == {"/var/lib/ddc", "/run/ddc", "/tmp"}


def test_resources_default_to_guaranteed_whole_cpus():
    res = container(pod_spec(render()), "ddc")["resources"]
    assert res["requests"] == res["limits"]
    assert re.fullmatch(r"[1-9][0-9]*", str(res["limits"]["cpu"]))


def test_persistence_makes_a_claim_that_outlives_the_release():
    assert not [o for o in render() if o["kind"] == "PersistentVolumeClaim"]
    objects = render("ddc-test", "--set", "persistence.enabled=true")
    pvc = find(objects, "PersistentVolumeClaim")
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    state, _ = volume_at(pod_spec(objects), "ddc", "/var/lib/ddc")
    assert state["persistentVolumeClaim"] == {"claimName": pvc["metadata"]["name"]}
    existing = render("ddc-test", "--set", "persistence.enabled=true",
                      "--set", "persistence.existingClaim=mine")
    assert not [o for o in existing if o["kind"] == "PersistentVolumeClaim"]
    state, _ = volume_at(pod_spec(existing), "ddc", "/var/lib/ddc")
    assert state["persistentVolumeClaim"]["claimName"] == "mine"


def test_without_the_sidecar_nothing_points_at_vector():
    objects = render("ddc-test", "--set", "vector.enabled=false")
    assert [c["name"] for c in pod_spec(objects)["containers"]] == ["ddc"]
    assert {o["kind"] for o in objects} == {"ConfigMap", "Deployment"}
    annotations = find(objects, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert not any(k.startswith("prometheus.io/") for k in annotations)
    doc = tomlkit.parse(node_config_text(objects)).unwrap()
    assert doc["metrics"]["statsd"] == "" and doc["logging"]["syslog"] == ""


def test_service_is_for_channel_listeners_only():
    objects = render("ddc-test", "-f", str(CHART / "examples/ingress.yaml"))
    svc = find(objects, "Service", "ddc-test")
    assert svc["spec"]["ports"] == [{"name": "syslog", "port": 5514, "targetPort": 5514,
                                     "protocol": "UDP"}]


# -- the schema ------------------------------------------------------------------------
REFUSALS = [
    # (--set ..., what the error must name)
    (["link.mtu=70000"], "/link/mtu"),
    (["link.mtu=100"], "/link/mtu"),
    (["role=middle"], "/role"),
    (["link.peer=192.0.2.9:4789"], "/link/peer"),  # the default role is egress: it never sends
    (["role=ingress"], "missing property 'peer'"),
    (["link.key_file=/etc/ddc/link.key"], "'key_file' not allowed"),  # the chart's key
    (["link.block_symbols=0"], "/link/block_symbols"),
    (["link.mode=plain"], "/link/mode"),
    (["tuning.socket_buffer_bytes=1024"], "/tuning/socket_buffer_bytes"),
    (["channels=null"], "missing property 'channels'"),
    (["channels[0].id=0"], "/channels/0/id"),
    (["channels[0].type=tcp"], "/channels/0/type"),
    (["metrics.interval=0"], "/metrics/interval"),
    (["logging.level=verbose"], "/logging/level"),
    (["vector.syslogPort=514"], "/vector/syslogPort"),
    (["linkKey.existingSecret="], "/linkKey/existingSecret"),
    (["hostNetwrk=true"], "'hostNetwrk' not allowed"),
]


@pytest.mark.parametrize(("sets", "names"), REFUSALS, ids=[s[0][0] for s in REFUSALS])
def test_bad_values_fail_naming_the_key(sets, names):
    out = helm("template", "ddc-test", str(CHART), *value_args(None, sets=sets), check=False)
    assert out.returncode != 0, f"{sets} was accepted"
    assert "values don't meet the specifications of the schema" in out.stderr
    assert names in out.stderr, out.stderr


def _known_keys(table: str) -> set[str]:
    """The keys ddc accepts in a table, from its own unknown-key message."""
    doc = {"role": "egress", "link": {"bind": "0.0.0.0:1", "key_file": "/k"},
           "channel": [{"id": 1, "name": "a", "type": "null"}]}
    doc.setdefault(table, {})["not_a_key"] = 1
    with pytest.raises(ConfigError) as err:
        loads(tomlkit.dumps(doc), "x.toml", check_files=False)
    m = re.search(r"known: ([^)]*)\)", str(err.value))
    return set(m.group(1).split(", "))


# Keys the chart sets itself (so the values must not): see templates/_helpers.tpl.
CHART_OWNED = {"link": {"key_file", "accept_keys"}, "metrics": {"statsd"},
               "logging": {"syslog", "journald", "stderr"}, "tuning": set()}


@pytest.mark.parametrize("table", sorted(CHART_OWNED))
def test_schema_knows_exactly_the_keys_ddc_knows(table):
    assert set(SCHEMA["properties"][table]["properties"]) == _known_keys(table) - CHART_OWNED[table]


def test_schema_channel_types_are_ddcs():
    item = SCHEMA["properties"]["channels"]["items"]
    assert set(item["properties"]["type"]["enum"]) == set(CHANNEL_TYPES)


def _bounded_keys():
    for table in ("link", "tuning", "metrics"):
        for key, spec in SCHEMA["properties"][table]["properties"].items():
            if "minimum" in spec or "maximum" in spec:
                yield table, key, spec


# Other keys a value at a bound needs so that only the key under test decides.
COMPANIONS = {
    ("link", "block_symbols"): {"fec_redundancy_percent": 0},
    ("link", "fec_redundancy_percent"): {"block_symbols": 1},
    ("link", "interleave_depth"): {"reorder_window_blocks": 200},
    ("link", "reorder_window_blocks"): {"interleave_depth": 1},
}


def _config_with(table: str, key: str, value) -> str:
    doc = {"role": "ingress",
           "link": {"bind": "0.0.0.0:0", "peer": "192.0.2.2:4789", "key_file": "/k"},
           "channel": [{"id": 1, "name": "a", "type": "udp", "udp": {"listen": "127.0.0.1:9"}}]}
    doc.setdefault(table, {}).update(COMPANIONS.get((table, key), {}))
    doc[table][key] = value
    return tomlkit.dumps(doc)


@pytest.mark.parametrize(("table", "key", "spec"), list(_bounded_keys()),
                         ids=[f"{t}.{k}" for t, k, _ in _bounded_keys()])
def test_schema_bounds_are_ddcs(table, key, spec):
    integer = spec["type"] == "integer"
    step = 1 if integer else 1e-6
    for bound, outside in (("minimum", -step), ("maximum", step)):
        if bound not in spec:
            continue
        value = spec[bound]
        loads(_config_with(table, key, value), "x.toml", check_files=False)  # accepted
        with pytest.raises(ConfigError) as err:
            loads(_config_with(table, key, value + outside), "x.toml", check_files=False)
        assert f"{table}.{key}:" in str(err.value), str(err.value)
