"""Real Apache Kafka brokers (KRaft combined mode) for the test suite.

No Docker here: the broker jars come from Maven Central (``scripts/fetch-kafka.sh
VERSION`` puts them in ``${DDC_CACHE:-~/.cache/ddc}/kafka/VERSION/libs``) and run
on the machine's Java 17 as ``java -cp 'libs/*' kafka.Kafka server.properties``.

This module has no pytest dependency; ``tests/kafka/fixtures.py`` wraps it.

    broker = KafkaBroker("4.4.0", sasl_scram=True)
    broker.start()                      # format storage once, start, wait ready
    broker.create_topic("t", partitions=3)
    Producer(broker.client_config()) / Producer(broker.sasl_client_config())
    broker.restart()                    # SIGTERM + start again, data kept
    broker.stop()

Broker settings (see ``_server_properties``), chosen for a 2-core test box that
runs two brokers next to the code under test:

* ``process.roles=broker,controller``, one node, static quorum
  (``controller.quorum.voters``), which formats the same way on 3.9 and 4.x.
* Listeners on 127.0.0.1 only: ``PLAINTEXT`` (clients and inter-broker),
  ``CONTROLLER`` (PLAINTEXT), and with ``sasl_scram=True`` a third listener
  ``SASL_PLAINTEXT`` with SCRAM-SHA-512 only. The SCRAM user is written into the
  metadata log at format time (``StorageTool format --add-scram``), so it exists
  before the first client connects, on both 3.9 and 4.x.
* Small thread pools (``num.network.threads=2``, ``num.io.threads=2``,
  ``num.recovery.threads.per.data.dir=1``, ``background.threads=2``), heap
  ``-Xmx384m`` by default, G1 with Kafka's own GC flags, C1-only JIT
  (``quick_jit``, see KafkaBroker) for a cheap start.
* Replication factor 1 / min ISR 1 for every internal topic, few partitions for
  ``__consumer_offsets`` / ``__transaction_state`` (fast first group join),
  ``group.initial.rebalance.delay.ms=0``.
* ``auto.create.topics.enable=false`` by default: tests create their topics with
  the partition count they mean (``create_topic``); a producer or egress writing
  to a topic that does not exist gets the error a real deployment would give
  instead of a silently created 1-partition topic. Pass
  ``auto_create_topics=True`` to change it.
* With ``tls`` (a ``tests.kafka.certs.TlsFiles``), three more listeners:
  ``SSL`` (server certificate signed by ``tls.ca``), ``SASL_SSL`` (the same with
  SCRAM-SHA-512; needs ``sasl_scram``) and ``EXPIRED`` (SSL with a certificate that
  expired in 2021), PEM keystores (``ssl.keystore.type=PEM``), no client certificates.
* A ``PROXIED`` PLAINTEXT listener that advertises ``proxy_port`` instead of its own
  port: a client bootstrapped at ``proxied_bootstrap`` reaches the broker only through
  whatever the test runs on ``proxy_port`` (tests/integration/tcp_proxy.py), so a test
  can freeze that client's connections while every other client carries on.
* ``message.max.bytes`` 16 MiB (Kafka's default is ~1 MiB) so tests can carry
  records larger than 1 MB, which the diode must support; clients still need
  their own limits raised to use it.
* ``log.message.timestamp.type=CreateTime`` (Kafka's default, stated so record
  timestamps survive end to end). Note Kafka 4.x rejects (INVALID_RECORD) a
  CreateTime more than 1 h in the future (``log.message.timestamp.after.max.ms``
  defaults to 3600000 since 4.0; 3.9 accepts any): left at Kafka's default.
* ``broker.heartbeat.interval.ms=1000`` / ``broker.session.timeout.ms=5000``
  (defaults 2000 / 9000): a broker killed with SIGKILL and started again cannot
  register until its previous session expires, so this makes ``restart(hard=True)``
  about 4 s faster, and still tolerates a few seconds of stall on a busy box.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
import weakref
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = [
    "KafkaBroker",
    "KafkaBrokerError",
    "KafkaSetupError",
    "VERSIONS_FILE",
    "cache_root",
    "check_prerequisites",
    "find_java",
    "free_port",
    "libs_dir",
    "read_versions",
]

log = logging.getLogger("ddc.tests.kafka")

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
VERSIONS_FILE = HERE / "versions.txt"
FETCH_SCRIPT = REPO_ROOT / "scripts" / "fetch-kafka.sh"
INSTALL_SCRIPT = REPO_ROOT / "scripts" / "ci" / "install-kafka.sh"

READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0


class KafkaSetupError(RuntimeError):
    """Java or the broker jars are missing: the machine is not set up."""


class KafkaBrokerError(RuntimeError):
    """The broker failed to format, start, answer or stop."""


# --------------------------------------------------------------------------- setup


def read_versions(path: Path = VERSIONS_FILE) -> list[str]:
    """Kafka versions from tests/kafka/versions.txt ('#' comments, blank lines ignored)."""
    versions = []
    for line in Path(path).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            versions.append(line)
    return versions


def cache_root() -> Path:
    """``${DDC_CACHE:-~/.cache/ddc}/kafka`` (same rule as scripts/fetch-kafka.sh)."""
    base = os.environ.get("DDC_CACHE") or str(Path.home() / ".cache" / "ddc")
    return Path(base) / "kafka"


def libs_dir(version: str) -> Path:
    return cache_root() / version / "libs"


def find_java() -> str | None:
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        candidate = Path(java_home) / "bin" / "java"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which("java")


def check_prerequisites(version: str) -> tuple[str, Path]:
    """Return ``(java, libs_dir)`` or raise KafkaSetupError saying how to fix it."""
    java = find_java()
    if java is None:
        raise KafkaSetupError(
            "no `java` on PATH (nor $JAVA_HOME/bin/java): the real-Kafka tests need Java 17. "
            f"Run `bash {INSTALL_SCRIPT.relative_to(REPO_ROOT)}` as root "
            "(or apt-get install openjdk-17-jre-headless)."
        )
    libs = libs_dir(version)
    marker = libs.parent / ".complete"
    if not (marker.is_file() and (libs / f"kafka_2.13-{version}.jar").is_file()):
        raise KafkaSetupError(
            f"Apache Kafka {version} jars are not in {libs} (no complete fetch). "
            f"Run `{FETCH_SCRIPT.relative_to(REPO_ROOT)} {version}` "
            f"(or `bash {INSTALL_SCRIPT.relative_to(REPO_ROOT)}` for every version in "
            f"{VERSIONS_FILE.relative_to(REPO_ROOT)})."
        )
    return java, libs


_storage_tool_cache: dict[Path, str] = {}

# Where StorageTool lives, newest layout first. Today both 3.9 and 4.x ship
# kafka.tools.StorageTool in kafka_2.13; the Java port, if it moves there, would
# be org.apache.kafka.tools.StorageTool.
_STORAGE_TOOL_CLASSES = (
    "org.apache.kafka.tools.StorageTool",
    "kafka.tools.StorageTool",
)


def storage_tool_class(libs: Path) -> str:
    """The StorageTool main class found in this libs dir."""
    libs = Path(libs)
    if libs in _storage_tool_cache:
        return _storage_tool_cache[libs]
    wanted = {cls.replace(".", "/") + ".class": cls for cls in _STORAGE_TOOL_CLASSES}
    found = set()
    for jar in sorted(libs.glob("kafka*.jar")):
        try:
            with zipfile.ZipFile(jar) as zf:
                found.update(wanted[n] for n in zf.namelist() if n in wanted)
        except zipfile.BadZipFile:
            continue
    for cls in _STORAGE_TOOL_CLASSES:
        if cls in found:
            _storage_tool_cache[libs] = cls
            return cls
    raise KafkaSetupError(f"no StorageTool class in any kafka*.jar under {libs}")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


def _new_cluster_id() -> str:
    # Kafka's Uuid: 16 random bytes, URL-safe base64 without padding; like
    # Uuid.randomUuid() never one starting with '-' (StorageTool's argument
    # parser would take it for an option).
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - best effort only
        pass


_live: weakref.WeakSet[KafkaBroker] = weakref.WeakSet()


@atexit.register
def _kill_leftovers() -> None:
    for broker in list(_live):
        with contextlib.suppress(Exception):
            broker.kill()


_LOG4J1 = """\
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
log4j.logger.kafka.log.LogCleaner=WARN
log4j.logger.org.apache.zookeeper=WARN
"""

_LOG4J2 = """\
status = warn
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.statechange.name = state.change.logger
logger.statechange.level = WARN
logger.cleaner.name = kafka.log.LogCleaner
logger.cleaner.level = WARN
"""


# --------------------------------------------------------------------------- broker


class KafkaBroker:
    """One single-node KRaft Kafka (broker+controller) on 127.0.0.1.

    ``version``   Kafka version whose jars scripts/fetch-kafka.sh fetched.
    ``work_dir``  its own directory (config, data, ``broker.log``); a fresh temp
                  dir when None. Kept after stop() so logs can be read.
    ``port``, ``controller_port``, ``sasl_port``: free ports picked when None.
    ``sasl_scram``: add a ``SASL_PLAINTEXT`` listener with SCRAM-SHA-512 and the
                  user ``sasl_username``/``sasl_password`` (``ddc``/``ddc-secret``).
    ``tls``       a tests.kafka.certs.TlsFiles: add the SSL, SASL_SSL and EXPIRED listeners.
    ``heap``      JVM -Xmx (default 384m).
    ``extra_properties``: server.properties overrides (win over the defaults).
    ``jvm_options``: extra JVM flags for the broker (after the defaults).
    ``quick_jit``: ``-XX:TieredStopAtLevel=1`` (C1 only). Halves the CPU a broker
                  burns to start (measured here: 7.0 -> 3.1 s CPU for 4.4.0,
                  4.6 -> 2.9 s for 3.9.2) and keeps C2 compiles off the 2 cores
                  the tests share; peak broker throughput is lower, so pass
                  False for benchmarks that measure through the broker.
    """

    SCRAM_MECHANISM = "SCRAM-SHA-512"

    def __init__(
        self,
        version: str,
        work_dir: str | os.PathLike[str] | None = None,
        *,
        name: str = "kafka",
        port: int | None = None,
        controller_port: int | None = None,
        sasl_port: int | None = None,
        sasl_scram: bool = False,
        sasl_username: str = "ddc",
        sasl_password: str = "ddc-secret",
        tls=None,
        heap: str = "384m",
        auto_create_topics: bool = False,
        extra_properties: Mapping[str, object] | None = None,
        jvm_options: Sequence[str] = (),
        quick_jit: bool = True,
    ) -> None:
        self.version = version
        self.name = name
        self.java, self.libs = check_prerequisites(version)
        if work_dir is None:
            work_dir = tempfile.mkdtemp(prefix=f"ddc-{name}-{version}-")
        self.work_dir = Path(work_dir).resolve()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._ports_given = (
            port is not None
            and controller_port is not None
            and (sasl_port is not None or not sasl_scram)
        )
        self.port = port or free_port()
        self.controller_port = controller_port or free_port()
        self.sasl_scram = sasl_scram
        self.sasl_port = (sasl_port or free_port()) if sasl_scram else None
        self.sasl_username = sasl_username
        self.sasl_password = sasl_password
        if tls is not None and not sasl_scram:
            raise ValueError("tls needs sasl_scram (its SASL_SSL listener uses the SCRAM user)")
        self.tls = tls
        self.proxied_port, self.proxy_port = free_port(), free_port()
        self.tls_ports: dict[str, int] = (
            {name: free_port() for name in ("SSL", "SASL_SSL", "EXPIRED")} if tls else {})
        self.heap = heap
        self.auto_create_topics = auto_create_topics
        self.extra_properties = dict(extra_properties or {})
        self.jvm_options = list(jvm_options)
        self.quick_jit = quick_jit
        self.cluster_id = _new_cluster_id()
        self.data_dir = self.work_dir / "data"
        self.config_path = self.work_dir / "server.properties"
        self.log_path = self.work_dir / "broker.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._starts = 0

    # ---------------------------------------------------------------- addresses

    @property
    def bootstrap(self) -> str:
        """PLAINTEXT bootstrap servers, ``127.0.0.1:PORT``."""
        return f"127.0.0.1:{self.port}"

    @property
    def sasl_bootstrap(self) -> str:
        """SASL_PLAINTEXT (SCRAM-SHA-512) bootstrap servers, ``127.0.0.1:PORT``."""
        if not self.sasl_scram:
            raise AttributeError(f"{self!r} was made without sasl_scram=True")
        return f"127.0.0.1:{self.sasl_port}"

    @property
    def proxied_bootstrap(self) -> str:
        """The PROXIED listener as its clients must reach it: through ``proxy_port``."""
        return f"127.0.0.1:{self.proxy_port}"

    def tls_bootstrap(self, listener: str = "SSL") -> str:
        """Bootstrap servers of a TLS listener: "SSL", "SASL_SSL" or "EXPIRED"."""
        if not self.tls:
            raise AttributeError(f"{self!r} was made without tls")
        return f"127.0.0.1:{self.tls_ports[listener]}"

    @property
    def sasl_credentials(self) -> tuple[str, str]:
        return self.sasl_username, self.sasl_password

    def client_config(self, extra: Mapping[str, object] | None = None) -> dict[str, object]:
        """confluent-kafka config for the PLAINTEXT listener, merged with ``extra``."""
        return {"bootstrap.servers": self.bootstrap, **(extra or {})}

    def sasl_client_config(self, extra: Mapping[str, object] | None = None) -> dict[str, object]:
        """confluent-kafka config for the SASL_PLAINTEXT / SCRAM-SHA-512 listener."""
        return {
            "bootstrap.servers": self.sasl_bootstrap,
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanisms": self.SCRAM_MECHANISM,
            "sasl.username": self.sasl_username,
            "sasl.password": self.sasl_password,
            **(extra or {}),
        }

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "stopped"
        return f"<KafkaBroker {self.name} {self.version} {self.bootstrap} {state}>"

    # ---------------------------------------------------------------- config

    def _server_properties(self) -> dict[str, object]:
        listeners = [
            f"PLAINTEXT://127.0.0.1:{self.port}",
            f"CONTROLLER://127.0.0.1:{self.controller_port}",
        ]
        advertised = [f"PLAINTEXT://127.0.0.1:{self.port}"]
        protocol_map = ["CONTROLLER:PLAINTEXT", "PLAINTEXT:PLAINTEXT"]
        if self.sasl_scram:
            listeners.append(f"SASL_PLAINTEXT://127.0.0.1:{self.sasl_port}")
            advertised.append(f"SASL_PLAINTEXT://127.0.0.1:{self.sasl_port}")
            protocol_map.append("SASL_PLAINTEXT:SASL_PLAINTEXT")
        listeners.append(f"PROXIED://127.0.0.1:{self.proxied_port}")
        advertised.append(f"PROXIED://127.0.0.1:{self.proxy_port}")
        protocol_map.append("PROXIED:PLAINTEXT")
        for name, port in self.tls_ports.items():
            listeners.append(f"{name}://127.0.0.1:{port}")
            advertised.append(f"{name}://127.0.0.1:{port}")
            protocol_map.append(f"{name}:{'SSL' if name == 'EXPIRED' else name}")
        props: dict[str, object] = {
            "process.roles": "broker,controller",
            "node.id": 1,
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listeners": ",".join(listeners),
            "advertised.listeners": ",".join(advertised),
            "listener.security.protocol.map": ",".join(protocol_map),
            "log.dirs": str(self.data_dir),
            # small box: two brokers and the code under test share 2 cores
            "num.network.threads": 2,
            "num.io.threads": 2,
            "num.recovery.threads.per.data.dir": 1,
            "background.threads": 2,
            "num.partitions": 1,
            "default.replication.factor": 1,
            "min.insync.replicas": 1,
            "offsets.topic.replication.factor": 1,
            "offsets.topic.num.partitions": 5,
            "transaction.state.log.replication.factor": 1,
            "transaction.state.log.min.isr": 1,
            "transaction.state.log.num.partitions": 5,
            "share.coordinator.state.topic.replication.factor": 1,
            "share.coordinator.state.topic.min.isr": 1,
            "group.initial.rebalance.delay.ms": 0,
            "auto.create.topics.enable": str(self.auto_create_topics).lower(),
            "delete.topic.enable": "true",
            "message.max.bytes": 16 * 1024 * 1024,
            "replica.fetch.max.bytes": 16 * 1024 * 1024,
            "log.message.timestamp.type": "CreateTime",
            "log.segment.bytes": 64 * 1024 * 1024,
            # a broker killed -9 re-registers once its old session expires (default 9 s)
            "broker.heartbeat.interval.ms": 1000,
            "broker.session.timeout.ms": 5000,
        }
        if self.sasl_scram:
            props["sasl.enabled.mechanisms"] = self.SCRAM_MECHANISM
            props["listener.name.sasl_plaintext.sasl.enabled.mechanisms"] = self.SCRAM_MECHANISM
            props["listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config"] = (
                "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            )
        if self.tls:
            for name in self.tls_ports:
                keystore = self.tls.expired_keystore if name == "EXPIRED" else self.tls.keystore
                props[f"listener.name.{name.lower()}.ssl.keystore.type"] = "PEM"
                props[f"listener.name.{name.lower()}.ssl.keystore.location"] = str(keystore)
            props["listener.name.sasl_ssl.sasl.enabled.mechanisms"] = self.SCRAM_MECHANISM
            props["listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config"] = (
                "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            )
        props.update(self.extra_properties)
        return props

    def _write_config(self) -> None:
        lines = [f"# written by tests/kafka/broker.py for Kafka {self.version}"]
        lines += [f"{k}={v}" for k, v in self._server_properties().items()]
        self.config_path.write_text("\n".join(lines) + "\n")
        (self.work_dir / "log4j.properties").write_text(_LOG4J1)
        (self.work_dir / "log4j2.properties").write_text(_LOG4J2)

    def _java_cmd(self, main: str, *args: str, heap: str | None = None) -> list[str]:
        broker = main == "kafka.Kafka"
        return [
            self.java,
            *(["-XX:TieredStopAtLevel=1"] if self.quick_jit or not broker else []),
            "-Xms64m",
            f"-Xmx{heap or self.heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:InitiatingHeapOccupancyPercent=35",
            "-XX:+ExplicitGCInvokesConcurrent",
            "-Djava.awt.headless=true",
            f"-Dkafka.logs.dir={self.work_dir}",
            f"-Dlog4j.configuration=file:{self.work_dir / 'log4j.properties'}",
            f"-Dlog4j2.configurationFile={self.work_dir / 'log4j2.properties'}",
            *(self.jvm_options if broker else ()),
            "-cp",
            f"{self.libs}/*",
            main,
            *args,
        ]

    @property
    def formatted(self) -> bool:
        return (self.data_dir / "meta.properties").is_file()

    def format(self) -> None:
        """Format the KRaft storage (once). Adds the SCRAM user when sasl_scram."""
        self._write_config()
        if self.formatted:
            return
        args = ["format", "-t", self.cluster_id, "-c", str(self.config_path)]
        if self.sasl_scram:
            args += [
                "--add-scram",
                f"{self.SCRAM_MECHANISM}=[name={self.sasl_username},password={self.sasl_password}]",
            ]
        cmd = self._java_cmd(storage_tool_class(self.libs), *args, heap="256m")
        res = subprocess.run(
            cmd,
            cwd=self.work_dir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=120,
            check=False,
        )
        out = res.stdout.decode(errors="replace")
        with open(self.log_path, "a") as f:
            f.write(f"==== {_now()} format ({' '.join(cmd[-len(args) - 1 :])})\n{out}\n")
        if res.returncode != 0 or not self.formatted:
            raise KafkaBrokerError(
                f"{self.name}: Kafka {self.version} StorageTool format failed "
                f"(exit {res.returncode}):\n{out[-4000:]}"
            )

    # ---------------------------------------------------------------- lifecycle

    def launch(self) -> None:
        """Format if needed and start the JVM; do not wait (see wait_ready)."""
        if self.running:
            return
        self.format()
        self._starts += 1
        logf = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            logf.write(f"==== {_now()} start #{self._starts} (Kafka {self.version})\n".encode())
            logf.flush()
            on_main = threading.current_thread() is threading.main_thread()
            self._proc = subprocess.Popen(
                self._java_cmd("kafka.Kafka", str(self.config_path)),
                cwd=self.work_dir,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                # the broker dies with the test process (only safe from the main
                # thread: PDEATHSIG fires when the forking *thread* exits)
                preexec_fn=_die_with_parent if on_main else None,
            )
        finally:
            logf.close()
        _live.add(self)

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Wait until the broker answers AdminClient.list_topics on every listener."""
        deadline = time.monotonic() + timeout
        checks = [("PLAINTEXT", self.port, self.client_config())]
        if self.sasl_scram:
            checks.append(("SASL_PLAINTEXT", self.sasl_port, self.sasl_client_config()))
        last_error: object = "no answer"
        for listener, port, conf in checks:
            while True:
                if self._proc is None or self._proc.poll() is not None:
                    code = None if self._proc is None else self._proc.returncode
                    raise KafkaBrokerError(
                        f"{self.name}: Kafka {self.version} exited (code {code}) before it "
                        f"was ready; {self.log_path} ends with:\n{self.log_tail()}"
                    )
                if time.monotonic() > deadline:
                    raise KafkaBrokerError(
                        f"{self.name}: Kafka {self.version} not ready on {listener} "
                        f"127.0.0.1:{port} after {timeout:.0f} s (last error: {last_error}); "
                        f"{self.log_path} ends with:\n{self.log_tail()}"
                    )
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=1):
                        pass
                    md = self._admin(conf).list_topics(timeout=5)
                    if md.brokers:
                        self._note(f"ready on {listener} 127.0.0.1:{port}")
                        break
                    last_error = "metadata lists no broker yet"
                except Exception as exc:  # noqa: BLE001
                    last_error = exc
                time.sleep(0.25)

    def start(self, timeout: float = READY_TIMEOUT_S) -> KafkaBroker:
        """Format (first time), start and wait until ready. Returns self."""
        self.launch()
        self.finish_start(timeout)
        return self

    def finish_start(self, timeout: float = READY_TIMEOUT_S) -> None:
        """wait_ready() after launch(); on failure the JVM is killed and the error
        raised, except on a first start whose auto-picked port was taken in the
        meantime: then it starts once more on fresh ports."""
        try:
            self.wait_ready(timeout)
            return
        except KafkaBrokerError:
            clash = "Address already in use" in self.log_tail(200)
            if not (clash and not self._ports_given and self._starts == 1):
                self.kill()
                raise
        self.kill()
        self._note("port clash: starting again on fresh ports")
        self.port, self.controller_port = free_port(), free_port()
        if self.sasl_scram:
            self.sasl_port = free_port()
        self.tls_ports = {name: free_port() for name in self.tls_ports}
        self.proxied_port, self.proxy_port = free_port(), free_port()
        self._write_config()
        self.launch()
        try:
            self.wait_ready(timeout)
        except KafkaBrokerError:
            self.kill()
            raise

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM (controlled shutdown) and wait; SIGKILL if it takes over ``timeout``."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
                self._note(f"stopped by SIGTERM in {time.monotonic() - t0:.1f} s")
            except subprocess.TimeoutExpired:
                log.warning("%s: no exit %.0f s after SIGTERM, killing", self.name, timeout)
                proc.kill()
                proc.wait()
                self._note(f"no exit {timeout:.0f} s after SIGTERM: SIGKILLed")
        self._proc = None
        _live.discard(self)

    def kill(self) -> None:
        """SIGKILL, no shutdown: data stays as a crash leaves it."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
            proc.wait()
            self._note("killed by SIGKILL")
        proc.wait()
        self._proc = None
        _live.discard(self)

    def restart(self, *, hard: bool = False, timeout: float = READY_TIMEOUT_S) -> KafkaBroker:
        """Stop (SIGTERM, or SIGKILL when ``hard``) and start again with the same data/ports."""
        if hard:
            self.kill()
        else:
            self.stop()
        return self.start(timeout)

    def __enter__(self) -> KafkaBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _note(self, text: str) -> None:
        with contextlib.suppress(OSError), open(self.log_path, "a") as f:
            f.write(f"==== {_now()} {text}\n")

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log file)"
        return "\n".join(text.splitlines()[-lines:])

    # ---------------------------------------------------------------- admin

    @staticmethod
    def _admin(conf: Mapping[str, object]):
        from confluent_kafka.admin import AdminClient

        # log_level 0: the readiness probe must not spam "connection refused"
        return AdminClient({**conf, "log_level": 0, "socket.timeout.ms": 5000})

    def admin(self, sasl: bool = False):
        """A confluent-kafka AdminClient on the PLAINTEXT (or SASL) listener."""
        from confluent_kafka.admin import AdminClient

        return AdminClient(self.sasl_client_config() if sasl else self.client_config())

    def create_topic(
        self,
        name: str,
        partitions: int = 1,
        *,
        config: Mapping[str, str] | None = None,
        timeout: float = 30.0,
    ) -> None:
        """Create a topic (replication 1) and wait until every partition has a leader."""
        from confluent_kafka.admin import NewTopic

        admin = self.admin()
        new = NewTopic(
            name, num_partitions=partitions, replication_factor=1, config=dict(config or {})
        )
        futures = admin.create_topics([new], operation_timeout=timeout, request_timeout=timeout)
        futures[name].result(timeout)
        deadline = time.monotonic() + timeout
        while True:
            md = admin.list_topics(topic=name, timeout=5)
            t = md.topics.get(name)
            if (
                t is not None
                and t.error is None
                and len(t.partitions) == partitions
                and all(p.leader >= 0 for p in t.partitions.values())
            ):
                return
            if time.monotonic() > deadline:
                raise KafkaBrokerError(
                    f"{self.name}: topic {name} has no partition leaders after {timeout} s"
                )
            time.sleep(0.1)

    def delete_topic(self, name: str, timeout: float = 30.0) -> None:
        futures = self.admin().delete_topics([name], operation_timeout=timeout)
        futures[name].result(timeout)
