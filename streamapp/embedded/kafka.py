"""A single-node Apache Kafka (KRaft) broker run from jars resolved by Maven.

``tools/kafka/pom.xml`` names the Kafka version; :func:`ensure_kafka_libs` copies
its runtime jars into ``<cache_dir>/kafka-<pom digest>/`` once, and
:class:`EmbeddedKafka` formats a fresh storage folder and runs ``kafka.Kafka``.
"""

from __future__ import annotations

import asyncio
import base64
import fcntl
import hashlib
import logging
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient

from streamapp.embedded.process import ChildProcess, EmbeddedService, free_port, port_open
from streamapp.errors import ConfigurationError, ServiceStartError

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
KAFKA_POM = REPO_ROOT / "tools" / "kafka" / "pom.xml"

_LOG4J2 = """\
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
logger.kafka.name = kafka
logger.kafka.level = WARN
logger.apache.name = org.apache.kafka
logger.apache.level = WARN
logger.started.name = kafka.server.KafkaRaftServer
logger.started.level = INFO
# Fencing and unfencing of the broker by its own controller (a starved JVM misses its session):
# the one thing that takes every partition's leader away from a single-node broker.
logger.controller.name = org.apache.kafka.controller
logger.controller.level = INFO
logger.lifecycle.name = kafka.server.BrokerLifecycleManager
logger.lifecycle.level = INFO
"""


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise ConfigurationError(
            f"'{tool}' is not on PATH; the embedded Kafka broker needs Java 17+ and Maven "
            "(or set KAFKA_BOOTSTRAP_SERVERS to use an existing broker)"
        )
    return path


def ensure_kafka_libs(cache_dir: Path, pom: Path = KAFKA_POM) -> Path:
    """The folder of Kafka's runtime jars, resolving them with Maven on first use.

    Safe to call from several processes at once (a file lock serialises them).
    Raises ServiceStartError with Maven's output when resolution fails.
    """
    if not pom.is_file():
        raise ConfigurationError(f"Kafka pom not found at {pom}; run streamapp from its repository")
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()[:12]
    libs = cache_dir / f"kafka-{digest}"
    marker = libs / ".complete"
    if marker.exists():
        return libs
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / ".kafka.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists():
            return libs
        mvn = _require("mvn")
        staging = Path(tempfile.mkdtemp(prefix="kafka-libs-", dir=cache_dir))
        logger.info("Resolving Kafka jars from %s into %s", pom, libs)
        done = subprocess.run(  # noqa: S603
            [
                mvn,
                "-q",
                "-B",
                "-f",
                str(pom),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={staging}",
                "-DincludeScope=runtime",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0 or not any(staging.glob("kafka_2.13-*.jar")):
            shutil.rmtree(staging, ignore_errors=True)
            tail = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
            raise ServiceStartError(f"Maven could not resolve Kafka's jars (exit {done.returncode}):\n{tail}")
        shutil.rmtree(libs, ignore_errors=True)
        staging.rename(libs)
        marker.touch()
    return libs


def server_properties(data_dir: Path, broker_port: int, controller_port: int) -> dict[str, str]:
    """Broker settings for one combined broker+controller: test-friendly, loopback only."""
    return {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{broker_port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{broker_port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(data_dir),
        # Topics are created explicitly with their contract (partitions, compaction);
        # a typo in a topic name must fail loudly, not create a stray topic.
        "auto.create.topics.enable": "false",
        "num.partitions": "1",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        # A throwaway broker: let the log cleaner compact changelogs quickly.
        "log.cleaner.min.compaction.lag.ms": "0",
    }


def _write_properties(path: Path, props: dict[str, str]) -> None:
    path.write_text("".join(f"{key}={value}\n" for key, value in props.items()))


def new_cluster_id() -> str:
    """A random KRaft cluster id: 16 bytes, URL-safe base64, no padding.

    Like Kafka's ``Uuid.randomUuid()``, never one that starts with '-': the
    storage tool's argument parser would read it as an option.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


async def _metadata_round_trip(bootstrap: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    await admin.start()
    try:
        cluster = await admin.describe_cluster()
        return len(cluster["brokers"])
    finally:
        await admin.close()


class EmbeddedKafka(EmbeddedService):
    """One Kafka broker on 127.0.0.1, in a temporary folder removed on stop.

    Use as a context manager, or call :meth:`start` and :meth:`stop`. The JVM is
    SIGKILLed by the kernel if the starting process dies first.
    """

    stop_signal = signal.SIGTERM
    stop_timeout = 15.0

    def __init__(
        self, libs: Path, *, heap: str = "512m", keep_dir: bool = False, overrides: dict[str, str] | None = None
    ) -> None:
        self.libs = libs
        #: Broker settings that replace :func:`server_properties`' (a benchmark's, say).
        self.overrides = overrides or {}
        self.heap = heap
        self.keep_dir = keep_dir
        self.workdir = Path(tempfile.mkdtemp(prefix="streamapp-kafka-"))
        self.broker_port = free_port()
        self.controller_port = free_port()
        self.bootstrap_servers = f"127.0.0.1:{self.broker_port}"
        self._proc: ChildProcess | None = None

    def _java(self, main: str, *args: str) -> list[str]:
        return [
            _require("java"),
            "-Xms128m",
            f"-Xmx{self.heap}",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.properties'}",
            "-cp",
            f"{self.libs}/*",
            main,
            *args,
        ]

    def start(self, timeout: float = 90.0) -> None:
        """Format storage, start the broker and wait for a metadata round trip."""
        started = time.monotonic()
        config = self.workdir / "server.properties"
        properties = server_properties(self.workdir / "data", self.broker_port, self.controller_port)
        _write_properties(config, {**properties, **self.overrides})
        (self.workdir / "log4j2.properties").write_text(_LOG4J2)
        cluster_id = new_cluster_id()
        fmt = subprocess.run(  # noqa: S603
            self._java("kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(config)),
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )
        if fmt.returncode != 0:
            raise ServiceStartError(f"kafka-storage format failed:\n{fmt.stdout}{fmt.stderr}")
        self._proc = ChildProcess(
            "kafka", self._java("kafka.Kafka", str(config)), log_path=self.workdir / "kafka.log", cwd=self.workdir
        )
        deadline = started + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            code = self._proc.poll()
            if code is not None:
                raise ServiceStartError(f"Kafka exited with code {code} during start-up:\n{self._proc.log_tail()}")
            try:
                if not port_open(self.broker_port):
                    time.sleep(0.1)
                    continue
                asyncio.run(_metadata_round_trip(self.bootstrap_servers))
            except Exception as exc:  # noqa: BLE001 - any failure means "not up yet"
                last_error = exc
                time.sleep(0.2)
                continue
            logger.info("Kafka up on %s in %.1fs", self.bootstrap_servers, time.monotonic() - started)
            return
        self.stop()
        raise ServiceStartError(
            f"Kafka did not answer a metadata request within {timeout:.0f}s ({last_error!r}):\n"
            f"{self._proc.log_tail() if self._proc else ''}"
        )
