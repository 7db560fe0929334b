"""Packaging facts the roles must keep in step with: the librdkafka minimum and the
confluent-kafka the daemon accepts; every controller .deb checked against a sha256."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ROLES = REPO / "ansible" / "roles"


def test_librdkafka_minimum_is_what_confluent_kafka_needs():
    # confluent-kafka X.Y refuses a librdkafka older than X.Y.0 (MIN_RD_KAFKA_VERSION in
    # src/confluent_kafka/src/confluent_kafka.h, e.g. 0x020f00ff for v2.15.0).
    with open(REPO / "pyproject.toml", "rb") as f:
        deps = tomllib.load(f)["project"]["dependencies"]
    (spec,) = [d for d in deps if d.startswith("confluent-kafka")]
    major, minor = re.fullmatch(r"confluent-kafka>=(\d+)\.(\d+)(?:\.\d+)?", spec).groups()
    defaults = yaml.safe_load((ROLES / "librdkafka/defaults/main.yml").read_text())
    assert defaults["librdkafka_min_version"] == f"{major}.{minor}.0"


@pytest.mark.parametrize(("role", "tasks"), [("vector", "install_deb.yml"),
                                             ("librdkafka", "main.yml")])
def test_controller_debs_are_checked_against_sha256(role, tasks):
    text = (ROLES / role / "tasks" / tasks).read_text()
    install = text.index("apt:\n        deb:" if role == "librdkafka" else "apt:\n    deb:")
    check = text.index(f"{role}_deb_sha256[")
    assert "checksum_algorithm: sha256" in text[:install]
    assert check < install, "the sum is checked before the .deb is installed"
    defaults = yaml.safe_load((ROLES / role / "defaults/main.yml").read_text())
    assert defaults[f"{role}_deb_sha256"] == {}, "no sum, no install"
