"""The chart's manifests, run for real: `helm template` for an ingress and an egress
release, `podman kube play` of both with the image deploy/container/build.sh makes, records
crossing from a UDP source to a UDP sink, and from a real Kafka topic to another (a real
Apache Kafka broker on the node, tests/kafka/broker.py), the egress status file showing
them delivered, then `podman kube down` (also when the test fails) and nothing left behind.

Both pods use the chart's hostNetwork option, the way a diode deployment runs (link.bind
on the node's diode NIC): here the node's loopback stands in for the diode.

The Vector sidecar runs with vector.enabled=false: no Vector image can be built or pulled
on this machine (no Vector binary can be obtained). tests/deploy/test_vector_sidecar.py
checks its manifest and ConfigMap against what a Vector deployment expects instead.

Two things differ from a Kubernetes cluster, both podman 4.3 (Debian 12) limitations:
  * kube play ignores kind: Secret and panics on secret volumes; the chart takes the link
    key through secretKeyRef in the init container, which podman resolves from a podman
    secret holding the Secret's data as JSON: the test creates that secret;
  * podman < 4.6 gives init containers the pod's restart policy (containers/podman#16343),
    so a Deployment's (Always) restarts `ddc check-config` for ever and the daemon never
    starts: on such a podman the test plays the pod template with restartPolicy OnFailure.
And podman 4.3's kube down leaves the volumes it made for ConfigMaps and claims (named
after them): the test removes those by name.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from appliance.tools.scratch import free_udp_port
from tests.kafka.broker import KafkaBroker, read_versions

from .support import CHART, helm

pytestmark = pytest.mark.slow

PREFIX = "ddc-kube-"  # every pod, container, volume and secret of this test
SECRET = f"{PREFIX}link-key"
RECORDS = 300


def _podman(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    out = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    if check and out.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} failed ({out.returncode}):\n"
                             f"{out.stdout}\n{out.stderr}")
    return out


def _podman_version() -> tuple[int, ...]:
    text = _podman("version", "--format", "{{.Client.Version}}").stdout.strip()
    return tuple(int(p) for p in text.split("-")[0].split(".")[:2])


def _leftovers() -> dict[str, list[str]]:
    def names(*args: str) -> list[str]:
        out = _podman(*args, check=False).stdout.split()
        return [n for n in out if n.startswith(PREFIX)]
    return {"containers": names("ps", "-a", "--format", "{{.Names}}"),
            "pods": names("pod", "ps", "--format", "{{.Name}}"),
            "volumes": names("volume", "ls", "--format", "{{.Name}}"),
            "secrets": names("secret", "ls", "--format", "{{.Name}}")}


class KubePlay:
    """Plays rendered releases; `down()` removes everything they made, in any state."""

    def __init__(self, tmp: Path, image: str):
        self.tmp, self.image = tmp, image
        self.played: list[Path] = []
        self.volumes: list[str] = []
        self.patch_restart = _podman_version() < (4, 6)

    def secret(self, key_hex: str) -> None:
        data = {"link.key": base64.b64encode(key_hex.encode() + b"\n").decode()}
        path = self.tmp / "secret.json"
        path.write_text(json.dumps(data))
        _podman("secret", "create", SECRET, str(path))

    def render(self, release: str, values: dict) -> list[dict]:
        repo, tag = self.image.rsplit(":", 1)
        base = {"image": {"repository": repo, "tag": tag, "pullPolicy": "Never"},
                "hostNetwork": True, "vector": {"enabled": False},
                "linkKey": {"existingSecret": SECRET},
                "resources": {"requests": {"cpu": "1", "memory": "512Mi"},
                              "limits": {"cpu": "1", "memory": "512Mi"}},
                "metrics": {"interval": 0.5}}
        vfile = self.tmp / f"{release}.values.yaml"
        vfile.write_text(yaml.safe_dump(base) + yaml.safe_dump(values))
        out = helm("template", release, str(CHART), "-f", str(vfile))
        return [d for d in yaml.safe_load_all(out.stdout) if d]

    def play(self, release: str, objects: list[dict], restart: str | None = None) -> str:
        for o in objects:
            if o["kind"] in ("ConfigMap", "PersistentVolumeClaim"):
                self.volumes.append(o["metadata"]["name"])
            if o["kind"] == "Deployment" and (restart or self.patch_restart):
                o["spec"]["template"]["spec"]["restartPolicy"] = restart or "OnFailure"
        path = self.tmp / f"{release}.yaml"
        path.write_text(yaml.safe_dump_all(objects))
        self.played.append(path)
        _podman("kube", "play", str(path), timeout=180)
        return f"{release}-pod-0-ddc"  # Deployment NAME -> pod NAME-pod-0 -> NAME-pod-0-ddc

    def down(self) -> None:
        for path in reversed(self.played):
            _podman("kube", "down", str(path), check=False)
        self.played.clear()
        for v in self.volumes:
            _podman("volume", "rm", "-f", v, check=False)
        _podman("secret", "rm", SECRET, check=False)


@pytest.fixture
def kube(tmp_path, ddc_image):
    stale = _leftovers()
    assert not any(stale.values()), f"left over from an earlier run: {stale}"
    k = KubePlay(tmp_path, ddc_image)
    try:
        yield k
    finally:
        k.down()


def status(container: str) -> dict:
    out = _podman("exec", container, "ddc", "status", "--once", "--json",
                  "--file", "/run/ddc/status.json")
    return json.loads(out.stdout)


def wait_healthy(container: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        out = _podman("healthcheck", "run", container, check=False)
        if out.returncode == 0:
            return
        last = out.stdout + out.stderr
        time.sleep(0.5)
    logs = _podman("logs", container, check=False)
    raise AssertionError(f"{container} not healthy after {timeout} s: {last}\n"
                         f"{logs.stdout[-3000:]}{logs.stderr[-3000:]}")


def test_ingress_and_egress_pods_carry_records_across(kube):
    link_port, source_port, sink_port = (free_udp_port() for _ in range(3))
    kube.secret(os.urandom(32).hex())
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    # The egress delivers in bursts; a default-sized buffer overflows on a busy machine
    # (the kernel caps this at rmem_max: 300 short datagrams need well under 1 MiB).
    sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sink.bind(("127.0.0.1", sink_port))
    sink.settimeout(0.5)
    src = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        egress = kube.play(f"{PREFIX}egress", kube.render(f"{PREFIX}egress", {
            "role": "egress", "persistence": {"enabled": True},
            "link": {"bind": f"127.0.0.1:{link_port}"},
            "channels": [{"id": 1, "name": "dgrams", "type": "udp",
                          "udp": {"target": f"127.0.0.1:{sink_port}"}}]}))
        ingress = kube.play(f"{PREFIX}ingress", kube.render(f"{PREFIX}ingress", {
            "role": "ingress", "diode": {"interface": "lo"},
            "link": {"bind": "127.0.0.1:0", "peer": f"127.0.0.1:{link_port}",
                     "heartbeat_interval": 0.2},
            "channels": [{"id": 1, "name": "dgrams", "type": "udp",
                          "udp": {"listen": f"127.0.0.1:{source_port}"}}]}))
        wait_healthy(egress)
        wait_healthy(ingress)

        sent = [f"record-{i:05d}".encode() for i in range(RECORDS)]
        for i, payload in enumerate(sent):
            src.sendto(payload, ("127.0.0.1", source_port))
            if i % 50 == 49:
                time.sleep(0.01)  # the ingress's UDP source has a bounded socket buffer
        got: list[bytes] = []
        deadline = time.monotonic() + 60
        while len(got) < RECORDS and time.monotonic() < deadline:
            try:
                got.append(sink.recv(65536))
            except TimeoutError:
                pass
        assert sorted(got) == sent, (f"{len(got)} of {RECORDS} records arrived; egress: "
                                     f"{status(egress)}; ingress: {status(ingress)}")

        # The egress's status file says the same (it is rewritten every 0.5 s).
        deadline = time.monotonic() + 10
        while (st := status(egress))["records_delivered"] < RECORDS and \
                time.monotonic() < deadline:
            time.sleep(0.5)
        assert st["records_delivered"] == RECORDS and st["records_lost"] == 0, st
        assert st["link_up"] is True and st["channels"]["dgrams"]["records_lost"] == 0
        # the ingress rewrites its own status file on its own interval: it may not
        # have caught up with what the egress already delivered
        deadline = time.monotonic() + 30
        while (sent_st := status(ingress))["records_sent"] < RECORDS and \
                time.monotonic() < deadline:
            time.sleep(0.5)
        assert sent_st["records_sent"] == RECORDS, sent_st

        # The pods run as the chart says: ddc user, read-only root, no capabilities.
        for name in (egress, ingress):
            info = json.loads(_podman("inspect", name).stdout)[0]
            assert info["Config"]["User"] == "10001:10001" or \
                info["Config"]["User"] == "10001", info["Config"]["User"]
            assert info["HostConfig"]["ReadonlyRootfs"] is True
            assert not info["EffectiveCaps"], info["EffectiveCaps"]
            assert info["HostConfig"]["NetworkMode"] == "host"
    finally:
        sink.close()
        src.close()
        kube.down()
    assert not any((left := _leftovers()).values()), f"left behind: {left}"


def test_a_config_check_config_refuses_never_starts_the_daemon(kube):
    # Schema-valid, but ddc refuses it (two channels with one id): the init container
    # says so in one line and the daemon container never runs. (restartPolicy Never: the
    # refused check runs once; Kubernetes would retry it with a back-off, to no avail.)
    kube.secret(os.urandom(32).hex())
    objects = kube.render(f"{PREFIX}bad", {
        "role": "egress", "link": {"bind": f"127.0.0.1:{free_udp_port()}"},
        "channels": [{"id": 7, "name": "a", "type": "null"},
                     {"id": 7, "name": "b", "type": "null"}]})
    with pytest.raises(AssertionError) as err:
        kube.play(f"{PREFIX}bad", objects, restart="Never")
    # 78: EX_CONFIG, what ddc exits with on a config it refuses (the unit's
    # RestartPreventExitStatus=78 does not restart it either)
    assert "init container" in str(err.value) and "exited with code 78" in str(err.value)
    logs = _podman("logs", f"{PREFIX}bad-pod-0-check-config")
    assert logs.stderr.strip().splitlines() == [
        "/etc/ddc/ddc.toml:14: channel[1].id: channel id 7 is already used by channel[0]"]
    daemon = _podman("ps", "-a", "--filter", f"name={PREFIX}bad-pod-0-ddc",
                     "--format", "{{.Status}}").stdout
    assert "Up" not in daemon


@pytest.fixture
def kafka_broker(tmp_path):
    """One real broker (the newest version the suite tests) for both sides: the source
    topic and the destination topic are different topics of it, which is all the pods
    can tell apart from two clusters. Stopped also when the test fails."""
    broker = KafkaBroker(read_versions()[-1], tmp_path / "kafka", name="kube-kafka")
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()


def test_kafka_records_cross_between_pods_exactly_once(kafka_broker, kube):
    from confluent_kafka import Consumer, Producer

    link_port = free_udp_port()
    kube.secret(os.urandom(32).hex())
    kafka_broker.create_topic("orders", partitions=3)
    kafka_broker.create_topic("high.orders", partitions=3)
    bootstrap = kafka_broker.bootstrap
    egress = kube.play(f"{PREFIX}kegress", kube.render(f"{PREFIX}kegress", {
        "role": "egress", "link": {"bind": f"127.0.0.1:{link_port}"},
        "channels": [{"id": 2, "name": "events", "type": "kafka",
                      "kafka": {"bootstrap_servers": bootstrap, "topic_prefix": "high.",
                                "partitioning": "same", "transactions": True,
                                "positions_topic": f"{PREFIX}positions"}}]}))
    ingress = kube.play(f"{PREFIX}kingress", kube.render(f"{PREFIX}kingress", {
        "role": "ingress", "diode": {"interface": "lo"},
        "link": {"bind": "127.0.0.1:0", "peer": f"127.0.0.1:{link_port}",
                 "heartbeat_interval": 0.2},
        "channels": [{"id": 2, "name": "events", "type": "kafka",
                      "kafka": {"bootstrap_servers": bootstrap, "group_id": "ddc-kube",
                                "topics": ["orders"], "auto_offset_reset": "earliest"}}]}))
    wait_healthy(egress)
    wait_healthy(ingress)

    producer = Producer(kafka_broker.client_config({"enable.idempotence": True}))
    sent = {}
    for i in range(RECORDS):
        key, value = f"k{i % 7}".encode(), os.urandom(8) + f"order-{i:05d}".encode()
        producer.produce("orders", value, key=key, partition=i % 3,
                         headers=[("seq", str(i).encode())])
        sent[(i % 3, value)] = (key, [("seq", str(i).encode())])
    assert producer.flush(30) == 0

    consumer = Consumer(kafka_broker.client_config({
        "group.id": f"{PREFIX}check", "auto.offset.reset": "earliest",
        "isolation.level": "read_committed", "enable.auto.commit": False}))
    consumer.subscribe(["high.orders"])
    got: dict = {}
    duplicates = 0
    try:
        deadline = time.monotonic() + 90
        while len(got) < RECORDS and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            k = (msg.partition(), msg.value())
            duplicates += k in got
            got[k] = (msg.key(), msg.headers())
    finally:
        consumer.close()
    assert len(got) == RECORDS and duplicates == 0, (
        f"{len(got)} of {RECORDS} records arrived ({duplicates} duplicates); "
        f"egress: {status(egress)}; ingress: {status(ingress)}")
    assert got == sent  # same partition, value, key and headers

    deadline = time.monotonic() + 15
    while (st := status(egress))["records_delivered"] < RECORDS and \
            time.monotonic() < deadline:
        time.sleep(0.5)
    assert st["records_delivered"] == RECORDS and st["records_lost"] == 0, st
    assert st["channels"]["events"]["records_lost"] == 0, st
    kube.down()
    assert not any((left := _leftovers()).values()), f"left behind: {left}"
