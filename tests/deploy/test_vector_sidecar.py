"""The Vector sidecar as the chart renders it: what a Vector deployment expects.

No Vector binary or image can be obtained on the build machines, so the sidecar cannot run
in the `podman kube play` test (tests/deploy/test_kube_play.py runs with
vector.enabled=false). Instead this checks, on the rendered objects, everything Vector
would check or need at start-up: the pipeline in the ConfigMap is vector/vector.yaml minus
exactly what a pod cannot have, with no variable left to interpolate; every input names a
component; every VRL program it names is in the ConfigMap, mounted where the config says,
byte-for-byte the repository's, and compiles with Vector's own VRL compiler (vrl-python);
the sources listen where the ddc config sends; the exporter's port is the container port,
the scrape annotation, the Service's and the ServiceMonitor's; every path Vector writes is
a writable volume under a read-only root; no port needs root."""

from __future__ import annotations

import copy
import posixpath

import pytest
import tomlkit
import yaml

from tests.vector.render import VRL_DIR
from tests.vector.support import (
    MAIN_CONFIG,
    VECTOR_DIR,
    VrlProgram,
    component_ids,
    load_vector_config,
)

from .support import container, find, node_config_text, pod_spec, render

# What the chart removes from vector/vector.yaml for a pod, and why (templates/_vector.tpl).
REMOVED = {"ddc_journald": "no journal in a pod", "ddc_file": "files in a pod die with it",
           "forwarded_syslog_file": "files in a pod die with it",
           "forwarded_syslog": "feeds only forwarded_syslog_file",
           "forwarded_syslog_parse": "feeds only forwarded_syslog_file"}
KIND = {"ddc_journald": "sources", "forwarded_syslog": "sources",
        "forwarded_syslog_parse": "transforms"}


def _rendered(*args: str):
    objects = render("ddc-test", "--set", "serviceMonitor.enabled=true", *args)
    spec = pod_spec(objects)
    vector = container(spec, "vector")
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m for m in vector["volumeMounts"]}
    config_path = vector["args"][vector["args"].index("--config") + 1]
    mount = mounts[posixpath.dirname(config_path)]
    cm = find(objects, "ConfigMap", volumes[mount["name"]]["configMap"]["name"])
    files = cm["data"]
    pipeline = yaml.safe_load(files[posixpath.basename(config_path)])
    return objects, spec, vector, mounts, files, pipeline, posixpath.dirname(config_path)


def test_pipeline_is_the_repositorys_minus_what_a_pod_cannot_have():
    *_, files, pipeline, config_dir = _rendered()
    text = files["vector.yaml"]
    assert "${" not in text and "$" not in text.replace("$$", "")  # nothing to interpolate
    # vector/vector.yaml with the pod's settings (VRL in the config dir, exporter on all
    # addresses)...
    expected = load_vector_config([MAIN_CONFIG])
    expected.pop("tests")
    for comp in expected["transforms"].values():
        if "file" in comp:
            comp["file"] = posixpath.join(config_dir, posixpath.basename(comp["file"]))
    expected["sinks"]["prometheus"]["address"] = "0.0.0.0:9598"
    for kind in ("sources", "transforms", "sinks"):
        for cid in REMOVED:
            expected[kind].pop(cid, None)
        for comp in expected[kind].values():
            if "inputs" in comp:
                comp["inputs"] = [i for i in comp["inputs"] if i not in REMOVED]
    expected["sources"]["ddc_syslog"]["address"] = "127.0.0.1:1514"  # vector.syslogPort
    expected = {k: v for k, v in expected.items() if v}
    # ... is what the sidecar gets.
    assert pipeline == expected
    for cid in REMOVED:
        assert cid in yaml.safe_load(MAIN_CONFIG.read_text())[KIND.get(cid, "sinks")], cid


def test_every_input_names_a_component_and_every_component_is_used():
    *_, pipeline, _ = _rendered()
    ids = component_ids(pipeline)
    used = set()
    for kind in ("transforms", "sinks"):
        for cid, comp in pipeline[kind].items():
            assert comp["inputs"], f"{kind}.{cid} has no inputs"
            for i in comp["inputs"]:
                assert i in ids, f"{kind}.{cid} reads {i}, which does not exist"
                used.add(i)
    assert used == set(ids), f"unused: {set(ids) - used}"


def test_vrl_programs_are_mounted_where_the_config_names_them_and_compile():
    _, spec, vector, mounts, files, pipeline, config_dir = _rendered()
    named = {comp["file"] for comp in pipeline["transforms"].values() if "file" in comp}
    assert named, "the pipeline names no VRL file"
    for path in named:
        assert posixpath.dirname(path) == config_dir and path.endswith(".vrl")
        body = files[posixpath.basename(path)]
        assert body == (VRL_DIR / posixpath.basename(path)).read_text()
        VrlProgram(body, name=path)  # Vector's VRL compiler: raises if it does not compile
    assert mounts[config_dir]["readOnly"] is True


def test_vector_writes_only_to_volumes_and_needs_no_root():
    _, spec, vector, mounts, _, pipeline, _ = _rendered()
    sc = vector["securityContext"]
    assert sc["readOnlyRootFilesystem"] and sc["runAsNonRoot"] and sc["runAsUser"] != 0
    assert sc["capabilities"] == {"drop": ["ALL"]}
    data = mounts[pipeline["data_dir"]]
    assert not data.get("readOnly")
    assert next(v for v in spec["volumes"] if v["name"] == data["name"])["emptyDir"]
    # Without root or capabilities no port below 1024 can be bound (Kubernetes grants no
    # ambient capabilities): every listener is above.
    for kind in ("sources", "sinks"):
        for cid, comp in pipeline[kind].items():
            if "address" in comp:
                assert int(comp["address"].rsplit(":", 1)[1]) >= 1024, f"{kind}.{cid}"
    assert pipeline["api"]["address"].startswith("127.0.0.1:")  # the API stays in the pod


@pytest.mark.parametrize("ports", [{}, {"syslogPort": 1600, "statsdPort": 9125}])
def test_sources_listen_where_ddc_sends(ports):
    sets = [a for k, v in ports.items() for a in ("--set", f"vector.{k}={v}")]
    objects, *_, pipeline, _ = _rendered(*sets)
    doc = tomlkit.parse(node_config_text(objects)).unwrap()
    assert doc["metrics"]["statsd"] == pipeline["sources"]["ddc_statsd"]["address"]
    assert doc["logging"]["syslog"] == pipeline["sources"]["ddc_syslog"]["address"]
    assert pipeline["sources"]["ddc_syslog"]["mode"] == "udp"
    assert pipeline["sources"]["ddc_statsd"]["mode"] == "udp"
    if ports:
        assert doc["logging"]["syslog"] == "127.0.0.1:1600"
        assert doc["metrics"]["statsd"] == "127.0.0.1:9125"


def test_exporter_port_is_exposed_annotated_and_monitored():
    objects, spec, vector, *_, pipeline, _ = _rendered("--set", "vector.prometheusPort=9700")
    port = int(pipeline["sinks"]["prometheus"]["address"].rsplit(":", 1)[1])
    assert port == 9700
    assert vector["ports"] == [{"name": "metrics", "containerPort": port, "protocol": "TCP"}]
    assert vector["livenessProbe"]["tcpSocket"]["port"] == "metrics"
    ann = find(objects, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert (ann["prometheus.io/scrape"], ann["prometheus.io/port"], ann["prometheus.io/path"]) \
        == ("true", str(port), "/metrics")
    svc = find(objects, "Service")
    assert svc["spec"]["ports"] == [{"name": "metrics", "port": port, "targetPort": "metrics",
                                     "protocol": "TCP"}]
    pod_labels = find(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    sm = find(objects, "ServiceMonitor")
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["endpoints"][0]["port"] == "metrics"
    assert sm["spec"]["endpoints"][0]["path"] == "/metrics"


def test_optional_sinks_come_from_vector_optional_with_the_endpoint_filled_in():
    *_, pipeline, _ = _rendered("--set", "vector.sinks.loki.endpoint=http://loki.logging:3100")
    loki = pipeline["sinks"]["ddc_loki"]
    assert loki["endpoint"] == "http://loki.logging:3100"
    optional = yaml.safe_load((VECTOR_DIR / "optional" / "loki.yaml").read_text())
    expected = copy.deepcopy(optional["sinks"]["ddc_loki"])
    expected["endpoint"] = "http://loki.logging:3100"
    assert loki == expected
    assert set(loki["inputs"]) <= set(component_ids(pipeline))
    *_, plain, _ = _rendered()
    assert "ddc_loki" not in plain["sinks"] and "ddc_elasticsearch" not in plain["sinks"]
