"""pytest fixtures: pairs of real Kafka brokers ("high" = source side, "low" =
destination side), one pair per Kafka version in tests/kafka/versions.txt.

Use them from tests/conftest.py with ONE of (the first is preferred: pytest then
loads this module once, by name, and every test module shares its brokers):

    pytest_plugins = ["tests.kafka.fixtures"]
    # or: from tests.kafka.fixtures import *  # noqa: F403

``tests.kafka.fixtures`` must be importable, i.e. the repo root on sys.path:
true under ``python -m pytest``, and under plain ``pytest`` while tests/ and
tests/kafka/ have an ``__init__.py`` (rootdir-based insertion); otherwise set
``pythonpath = ["."]`` in [tool.pytest.ini_options]. The ``import *`` form works
too but makes pytest warn that it cannot assert-rewrite the module.

Fixtures
    kafka_version        session, parametrized over versions.txt ("3.9.2", "4.4.0");
                         test ids get "kafka-3.9.2" / "kafka-4.4.0".
    kafka_pair_factory   session; ``factory(version) -> KafkaPair`` starts (once,
                         then cached) and returns a running pair for any version.
    kafka_pair_shared    session, one running KafkaPair per kafka_version; the
                         pair is stopped when pytest moves on to the next version,
                         so at most one pair runs at a time.
    kafka_pair           function; the shared pair, with any broker a previous test
                         left stopped/killed started again first.
    kafka_topic          function; a unique topic name for this test (not created).

Both brokers of a pair have the SCRAM-SHA-512 listener (``sasl_bootstrap``,
user ``ddc`` / password ``ddc-secret``) and the TLS listeners (``tls_bootstrap("SSL" |
"SASL_SSL" | "EXPIRED")``, certificates from tests/kafka/certs.py, ``broker.tls.ca``).
Missing java or jars make the fixtures FAIL (not skip) with the command that installs them.
"""

from __future__ import annotations

import re
import sys
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

try:
    from .broker import KafkaBroker, KafkaSetupError, check_prerequisites, read_versions
    from .certs import make_tls
except ImportError:  # loaded as a top-level module: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.kafka.broker import (  # type: ignore[no-redef]
        KafkaBroker,
        KafkaSetupError,
        check_prerequisites,
        read_versions,
    )
    from tests.kafka.certs import make_tls  # type: ignore[no-redef]

__all__ = [
    "KAFKA_VERSIONS",
    "KafkaPair",
    "KafkaPairFactory",
    "kafka_pair",
    "kafka_pair_factory",
    "kafka_pair_shared",
    "kafka_topic",
    "kafka_version",
]

KAFKA_VERSIONS: list[str] = read_versions()


@dataclass
class KafkaPair:
    """Two independent single-node clusters of one Kafka version."""

    version: str
    high: KafkaBroker  # source side, read by ddc ingress
    low: KafkaBroker  # destination side, written by ddc egress

    @property
    def brokers(self) -> tuple[KafkaBroker, KafkaBroker]:
        return self.high, self.low

    def ensure_running(self) -> None:
        """Start any broker that is not running (keeps its data and ports)."""
        stopped = [b for b in self.brokers if not b.running]
        for b in stopped:
            b.launch()
        for b in stopped:
            b.finish_start()

    def stop(self) -> None:
        for b in self.brokers:
            b.stop()


class KafkaPairFactory:
    """``factory(version)`` -> running KafkaPair, started once and then reused."""

    def __init__(self, base_dir: Path, *, sasl_scram: bool = True) -> None:
        self.base_dir = Path(base_dir)
        self.sasl_scram = sasl_scram
        self._pairs: dict[str, KafkaPair] = {}
        self._lock = threading.Lock()

    def __call__(self, version: str) -> KafkaPair:
        with self._lock:
            pair = self._pairs.get(version)
            if pair is None:
                pair = self._pairs[version] = self._start(version)
            else:
                pair.ensure_running()
            return pair

    def _start(self, version: str) -> KafkaPair:
        problem = None
        try:
            check_prerequisites(version)
        except KafkaSetupError as exc:
            problem = str(exc)
        if problem is not None:  # fail (not skip): CI installs java and the jars
            pytest.fail(f"real Kafka {version} unavailable: {problem}", pytrace=False)
        tls = make_tls(self.base_dir / "tls") if self.sasl_scram else None
        high = KafkaBroker(version, self.base_dir / f"{version}-high", name="high",
                           sasl_scram=self.sasl_scram, tls=tls)
        low = KafkaBroker(version, self.base_dir / f"{version}-low", name="low",
                          sasl_scram=self.sasl_scram, tls=tls)
        pair = KafkaPair(version, high, low)
        try:
            # format both at once (one JVM each), then boot both JVMs
            # concurrently and wait for each
            with ThreadPoolExecutor(2) as pool:
                for fut in [pool.submit(b.format) for b in pair.brokers]:
                    fut.result()
            for b in pair.brokers:
                b.launch()
            for b in pair.brokers:
                b.finish_start()
        except BaseException:
            for b in pair.brokers:
                b.kill()
            raise
        return pair

    def release(self, version: str) -> None:
        """Stop and forget the pair of this version (next call starts a new one)."""
        with self._lock:
            pair = self._pairs.pop(version, None)
        if pair is not None:
            pair.stop()

    def close(self) -> None:
        for version in list(self._pairs):
            self.release(version)


@pytest.fixture(scope="session")
def kafka_pair_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaPairFactory]:
    factory = KafkaPairFactory(tmp_path_factory.mktemp("kafka"))
    yield factory
    factory.close()


@pytest.fixture(scope="session", params=KAFKA_VERSIONS, ids=lambda v: f"kafka-{v}")
def kafka_version(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="session")
def kafka_pair_shared(
    kafka_pair_factory: KafkaPairFactory, kafka_version: str
) -> Iterator[KafkaPair]:
    yield kafka_pair_factory(kafka_version)
    kafka_pair_factory.release(kafka_version)


@pytest.fixture
def kafka_pair(kafka_pair_shared: KafkaPair) -> KafkaPair:
    kafka_pair_shared.ensure_running()
    return kafka_pair_shared


@pytest.fixture
def kafka_topic(request: pytest.FixtureRequest) -> str:
    """A topic name unique to this test run (legal Kafka chars, <= 249)."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", request.node.name)[:150].strip("-")
    return f"t-{base}-{uuid.uuid4().hex[:8]}"
