"""Kafka over TLS, real brokers on both sides: SSL and SASL_SSL (SCRAM-SHA-512) listeners
with certificates the test makes (tests/kafka/certs.py), and the failures an operator
meets first, a wrong CA and an expired broker certificate, each one clear line naming the
channel and the cause, in the log and in `ddc status`. The TLS listeners are on the shared
broker pair: no broker is started for these tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from .daemons import free_udp_port, write_key
from .kafka_helpers import (
    add_to_channel,
    by_partition,
    kafka_configs,
    pair_running,
    produce,
    read_all,
    wait_for,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
PARTS = 3


def _tls_keys(ca, sasl: bool, tmp_path) -> str:
    keys = f'security_protocol = "{"SASL_SSL" if sasl else "SSL"}"\nssl_ca_location = "{ca}"\n'
    if sasl:
        (tmp_path / "kafka.password").write_text("ddc-secret\n")
        keys += ('sasl_mechanism = "SCRAM-SHA-512"\nsasl_username = "ddc"\n'
                 f'sasl_password_file = "{tmp_path}/kafka.password"\n')
    return keys


def _configs(tmp_path, pair, topic, high_listener, low_listener, high_ca, low_ca,
             sasl=False):
    ingress, egress = kafka_configs(tmp_path, write_key(tmp_path / "link.key"),
                                    free_udp_port(), pair.high.tls_bootstrap(high_listener),
                                    pair.low.tls_bootstrap(low_listener), topic)
    add_to_channel(ingress, _tls_keys(high_ca, sasl, tmp_path))
    add_to_channel(egress, _tls_keys(low_ca, sasl, tmp_path))
    return ingress, egress


@pytest.mark.parametrize("protocol", ["SSL", "SASL_SSL"])
def test_records_cross_over_tls_on_both_sides(tmp_path, kafka_pair, kafka_topic, protocol):
    kafka_pair.high.create_topic(kafka_topic, partitions=PARTS)
    kafka_pair.low.create_topic("low." + kafka_topic, partitions=PARTS)
    sent = produce(kafka_pair.high.client_config(), kafka_topic, PARTS, 60)
    ca = kafka_pair.high.tls.ca
    configs = _configs(tmp_path, kafka_pair, kafka_topic, protocol, protocol, ca, ca,
                       sasl=protocol == "SASL_SSL")
    low = kafka_pair.low.client_config()
    with pair_running(*configs) as daemons:
        assert wait_for(lambda: len(read_all(low, "low." + kafka_topic, 5)) >= len(sent), 90)
    assert by_partition(read_all(low, "low." + kafka_topic)) == by_partition(sent)
    for d in daemons:
        assert not d.events("kafka_tls_failed") and not d.events("kafka_auth_failed")


def _status(config: str) -> tuple[dict, str]:
    env = os.environ | {"PYTHONPATH": os.getcwd(), "COLUMNS": "400"}
    cmd = [sys.executable, "-m", "appliance.cli", "status", "--config", config, "--once"]
    text = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60).stdout
    st = json.loads(subprocess.run(cmd + ["--json"], capture_output=True, text=True, env=env,
                                   timeout=60).stdout)
    return st, text


def test_wrong_ca_and_expired_certificate_each_give_one_clear_line(tmp_path, kafka_pair,
                                                                   kafka_topic):
    """The ingress trusts a CA that did not sign its broker's certificate; the egress's
    broker presents a certificate that expired in 2021. librdkafka says "certificate verify
    failed" for both, at every reconnect; each daemon says once what is wrong."""
    tls = kafka_pair.high.tls
    configs = _configs(tmp_path, kafka_pair, kafka_topic, "SSL", "EXPIRED", tls.other_ca,
                       tls.ca)
    with pair_running(*configs) as (ingress, egress):
        bad_ca = ingress.wait_event("kafka_tls_failed", 30)
        expired = egress.wait_event("kafka_tls_failed", 30)
        assert wait_for(lambda: all("problem" in _status(c)[0]["channels"]["test"]
                                    for c in configs), 10)
        statuses = {"ingress": _status(configs[0]), "egress": _status(configs[1])}
    assert bad_ca["msg"].startswith("channel test: TLS handshake with broker 127.0.0.1:")
    assert f"not signed by a CA in ssl_ca_location {tls.other_ca}" in bad_ca["msg"]
    assert expired["msg"].startswith("channel test: TLS handshake with broker 127.0.0.1:")
    assert "the broker's certificate has expired" in expired["msg"]
    for d, ev in ((ingress, bad_ca), (egress, expired)):
        lines = [e for e in d.events() if "certif" in e.get("msg", "")]
        assert lines == [ev], "one line, not one per reconnect attempt"
    for role, ev in (("ingress", bad_ca), ("egress", expired)):
        st, text = statuses[role]
        assert st["channels"]["test"]["problem"] == ev["cause"]
        assert ev["cause"] in " ".join(text.split()), f"`ddc status` of the {role}:\n{text}"
