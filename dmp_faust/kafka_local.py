"""A local single-node Apache Kafka broker for development, demos and tests.

    dmp-faust kafka fetch                                   download the jars once
    dmp-faust kafka start [--port 9092] [--data-dir DIR]    start (idempotent)
    dmp-faust kafka stop [--data-dir DIR]                   controlled shutdown
    dmp-faust kafka status [--data-dir DIR]                 exit 0 running, 1 stopped

The broker is the real thing: Apache Kafka 3.9.1 in KRaft mode (one process
that is both broker and controller), run straight from the official jars on
Maven Central, so neither Docker nor a Kafka download is needed, only ``java``
(17+) and ``mvn``.

Jars. ``ensure_jars`` writes a two-dependency ``pom.xml`` into
``${DMP_KAFKA_CACHE:-~/.cache/dmp-faust}/kafka-3.9.1/`` and lets Maven copy
the runtime closure into ``libs/``. A stamp file is written only after Maven
succeeded, so later starts need no network, and a fetch that was interrupted
is thrown away and redone. A file lock serialises concurrent fetches.

Data directory (default ``${DMP_DATA_DIR:-./var}/kafka``) holds everything of
one broker: ``server.properties`` and ``log4j.properties`` (rewritten at each
start), ``logs/`` (Kafka's partition data, formatted once), ``kafka.log``
(the JVM's output: warnings, plus the start and stop lines) and ``kafka.pid``.
The pid file is the broker's identity: ``status`` and ``stop`` trust it only
while that pid is alive and is a Kafka JVM.

``start`` returns once the broker answers a Kafka Metadata request listing
itself as a live broker, i.e. once clients can create topics and produce.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

KAFKA_VERSION = "3.9.1"
SCALA_VERSION = "2.13"
SLF4J_VERSION = "1.7.36"
HOST = "127.0.0.1"
DEFAULT_PORT = 9092
DEFAULT_HEAP_OPTS = "-Xms128m -Xmx512m"
# A light JVM for a small machine shared with tests: one GC thread, and the C1 compiler
# only, which starts ~20 % faster in ~30 MB less memory. KAFKA_JVM_PERFORMANCE_OPTS overrides.
DEFAULT_JVM_OPTS = "-XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true"
MAIN_CLASS = "kafka.Kafka"
STAMP_NAME = "fetched.stamp"
PID_NAME = "kafka.pid"
LOG_NAME = "kafka.log"
SECURITY_PROTOCOLS = ("SSL", "SASL_PLAINTEXT", "SASL_SSL")  # extra listeners, besides PLAINTEXT

POM = f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.dmp-faust</groupId>
  <artifactId>kafka-local</artifactId>
  <version>{KAFKA_VERSION}</version>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_{SCALA_VERSION}</artifactId>
      <version>{KAFKA_VERSION}</version>
    </dependency>
    <dependency>
      <groupId>org.slf4j</groupId>
      <artifactId>slf4j-reload4j</artifactId>
      <version>{SLF4J_VERSION}</version>
    </dependency>
  </dependencies>
</project>
"""

# Everything at WARN, except the lines that say the server started or stopped.
LOG4J = """log4j.rootLogger=WARN, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.server.KafkaRaftServer=INFO
log4j.logger.kafka.server.BrokerServer=INFO
log4j.logger.kafka.server.ControllerServer=INFO
"""


class KafkaLocalError(RuntimeError):
    """The local broker could not be fetched, started or stopped; the message says why."""


@dataclass(frozen=True)
class BrokerInfo:
    pid: int
    port: int
    data_dir: Path

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"

    def __str__(self) -> str:
        return f"pid {self.pid}, port {self.port}, data {self.data_dir}"


# --- jars -------------------------------------------------------------------


def cache_dir() -> Path:
    root = os.environ.get("DMP_KAFKA_CACHE") or "~/.cache/dmp-faust"
    return Path(root).expanduser() / f"kafka-{KAFKA_VERSION}"


def ensure_jars() -> Path:
    """Return the directory of Kafka's jars, fetching them with Maven the first time."""
    home = cache_dir()
    libs, stamp = home / "libs", home / STAMP_NAME

    def fetched() -> bool:
        return stamp.is_file() and any(libs.glob(f"kafka_{SCALA_VERSION}-*.jar"))

    if fetched():
        return libs
    home.mkdir(parents=True, exist_ok=True)
    with _locked(home / ".lock"):
        if fetched():  # another process fetched while we waited
            return libs
        stamp.unlink(missing_ok=True)
        shutil.rmtree(libs, ignore_errors=True)  # a half-finished fetch
        _run_maven(home, libs)
        stamp.write_text(f"kafka {KAFKA_VERSION}: {len(list(libs.glob('*.jar')))} jars\n")
    return libs


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run_maven(home: Path, libs: Path) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise KafkaLocalError(
            "Maven ('mvn') is not on PATH; it is needed once to fetch Kafka's jars "
            "(Debian/Ubuntu: apt-get install maven)"
        )
    (home / "pom.xml").write_text(POM)
    print(f"fetching Apache Kafka {KAFKA_VERSION} jars into {libs} ...", file=sys.stderr)
    goal = ["dependency:copy-dependencies", f"-DoutputDirectory={libs}", "-DincludeScope=runtime"]
    command = [mvn, "-q", "-B", "-f", str(home / "pom.xml"), *goal]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        raise KafkaLocalError("mvn took more than 15 minutes fetching Kafka's jars") from None
    if done.returncode != 0 or not any(libs.glob("kafka_*.jar")):
        raise KafkaLocalError(
            f"mvn failed to fetch Kafka's jars (exit {done.returncode}):\n"
            + _tail(done.stdout + done.stderr)
        )


# --- files of a data directory ----------------------------------------------


def default_data_dir() -> Path:
    return Path(os.environ.get("DMP_DATA_DIR") or "./var") / "kafka"


def server_properties(
    port: int,
    controller_port: int,
    data_dir: Path,
    listeners: Mapping[str, int] | None = None,
    properties: Mapping[str, str] | None = None,
) -> str:
    """``server.properties`` of a one-node broker with a PLAINTEXT listener on ``port``.

    ``listeners`` adds listeners named after their security protocol
    (``{"SASL_PLAINTEXT": 9094, "SSL": 9095}``); ``properties`` adds or
    overrides settings (a listener's JAAS config, key stores, ...). The
    PLAINTEXT listener stays: brokers talk to each other over it, and
    ``start`` probes it for readiness.
    """
    extra = dict(listeners or {})
    unknown = sorted(set(extra) - set(SECURITY_PROTOCOLS))
    if unknown:
        raise KafkaLocalError(f"listener names must be one of {SECURITY_PROTOCOLS}: {unknown}")
    served = [f"PLAINTEXT://{HOST}:{port}", *(f"{n}://{HOST}:{p}" for n, p in extra.items())]
    protocols = ["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT", *(f"{n}:{n}" for n in extra)]
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{HOST}:{controller_port}",
        "listeners": ",".join([*served, f"CONTROLLER://{HOST}:{controller_port}"]),
        "advertised.listeners": ",".join(served),
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": ",".join(protocols),
        "log.dirs": str(data_dir / "logs"),
        "num.partitions": "1",
        "auto.create.topics.enable": "true",
        # One node: every internal topic has one replica and few partitions.
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "4",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "4",
        "group.initial.rebalance.delay.ms": "0",
        "num.network.threads": "2",
        "num.io.threads": "4",
        **(properties or {}),
    }
    return "".join(f"{key}={value}\n" for key, value in settings.items())


def _configured_port(data_dir: Path) -> int | None:
    try:
        text = (data_dir / "server.properties").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("advertised.listeners="):
            for listener in line.partition("=")[2].split(","):
                if listener.startswith("PLAINTEXT://"):
                    return int(listener.rsplit(":", 1)[1])
    return None


def _read_pid(data_dir: Path) -> int | None:
    try:
        return int((data_dir / PID_NAME).read_text().strip())
    except (OSError, ValueError):
        return None


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _log_tail(data_dir: Path, since: int = 0) -> str:
    try:
        with (data_dir / LOG_NAME).open("rb") as log:
            log.seek(since)
            return _tail(log.read().decode(errors="replace")) or "(nothing)"
    except OSError:
        return "(no log)"


# --- processes and probes ---------------------------------------------------


def _alive(pid: int) -> bool:
    """True while ``pid`` runs and is a Kafka JVM (not a zombie, not a recycled pid)."""
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:  # our own child, now reaped
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _looks_like_kafka(pid)


def _looks_like_kafka(pid: int) -> bool:
    proc = Path(f"/proc/{pid}")
    if not Path("/proc/self").exists():
        return True  # no /proc (macOS): trust the pid
    try:
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        command = (proc / "cmdline").read_bytes()
    except (OSError, IndexError):
        return False
    if state in ("Z", "X"):  # exited; a zombie nobody has reaped yet
        return False
    # The command line reads empty while the process is still inside execve().
    return not command or MAIN_CLASS.encode() in command.split(b"\0")


def _port_open(port: int, timeout: float = 1.0) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout):
        return True
    return False


def _live_brokers(port: int, timeout: float = 2.0) -> int:
    """Number of live brokers in a Metadata (v0) answer; 0 when the broker does not answer."""
    client_id = b"dmp-faust"
    request = struct.pack(">hhih", 3, 0, 1, len(client_id)) + client_id + struct.pack(">i", 0)
    try:
        with socket.create_connection((HOST, port), timeout) as conn:
            conn.sendall(struct.pack(">i", len(request)) + request)
            head = _recv_exactly(conn, 12)  # size, correlation id, broker count
    except OSError:
        return 0
    _, correlation, brokers = struct.unpack(">iii", head)
    return brokers if correlation == 1 else 0


def _recv_exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionError("connection closed")
        data += chunk
    return data


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    # It may have turned into a zombie between _alive's reap and its /proc read:
    # reap it now if it is our child, so the pid is really gone.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
    return True


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    _wait_gone(pid, 10)


# --- the API ------------------------------------------------------------------


def status(data_dir: Path) -> BrokerInfo | None:
    """The broker whose pid file is in ``data_dir``, if it is alive; else None."""
    data_dir = Path(data_dir).resolve()
    pid, port = _read_pid(data_dir), _configured_port(data_dir)
    if pid is None or port is None or not _alive(pid):
        return None
    return BrokerInfo(pid=pid, port=port, data_dir=data_dir)


def start(
    port: int,
    data_dir: Path,
    controller_port: int | None = None,
    timeout: float = 90,
    *,
    listeners: Mapping[str, int] | None = None,
    properties: Mapping[str, str] | None = None,
) -> BrokerInfo:
    """Start a broker on ``port`` keeping its state in ``data_dir``; return once it is ready.

    Idempotent: a broker already running from ``data_dir`` on ``port`` is waited for
    (it may still be starting) and returned. Raises ``KafkaLocalError`` on failure,
    after killing a broker that did not become ready within ``timeout`` seconds.
    ``listeners`` and ``properties`` add listeners and settings (see
    :func:`server_properties`); without them the broker is PLAINTEXT only.
    """
    data_dir = Path(data_dir).resolve()
    controller_port = port + 1 if controller_port is None else controller_port
    running = status(data_dir)
    if running is not None:
        if running.port != port:
            raise KafkaLocalError(f"a broker from {data_dir} already runs on port {running.port}")
        return _wait_ready(running, timeout, log_offset=0)
    for taken in (port, controller_port, *(listeners or {}).values()):
        if _port_open(taken):
            raise KafkaLocalError(f"port {taken} on {HOST} is already in use by another process")
    libs = ensure_jars()
    config = server_properties(port, controller_port, data_dir, listeners, properties)
    _prepare(data_dir, libs, config)
    log_offset = _log_size(data_dir)
    pid = _launch(data_dir, libs)
    return _wait_ready(BrokerInfo(pid=pid, port=port, data_dir=data_dir), timeout, log_offset)


def stop(data_dir: Path, timeout: float = 30) -> bool:
    """Stop the broker of ``data_dir`` (SIGTERM, then SIGKILL after ``timeout`` s).

    Returns False when no broker was running.
    """
    data_dir = Path(data_dir).resolve()
    running = status(data_dir)
    if running is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(running.pid, signal.SIGTERM)
        if not _wait_gone(running.pid, timeout):
            _kill(running.pid)
    (data_dir / PID_NAME).unlink(missing_ok=True)
    return running is not None


def _prepare(data_dir: Path, libs: Path, config: str) -> None:
    """Write the configuration files and format the storage the first time."""
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "server.properties").write_text(config)
    (data_dir / "log4j.properties").write_text(LOG4J)
    if (data_dir / "logs" / "meta.properties").exists():
        return
    command = _java(libs, data_dir, "kafka.tools.StorageTool", "format", "-t", new_cluster_id())
    done = subprocess.run(
        [*command, "-c", str(data_dir / "server.properties")],
        capture_output=True,
        text=True,
        cwd=data_dir,
        timeout=120,
    )
    if done.returncode != 0:
        raise KafkaLocalError(
            "formatting the Kafka storage failed:\n" + _tail(done.stdout + done.stderr)
        )


def new_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding.

    Like Kafka's own ``Uuid.randomUuid``, never one starting with '-', which the
    storage tool's argument parser would take for an option.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _java(libs: Path, data_dir: Path, main_class: str, *args: str) -> list[str]:
    java_home = os.environ.get("JAVA_HOME")
    java = str(Path(java_home, "bin", "java")) if java_home else shutil.which("java")
    if java is None:
        raise KafkaLocalError("Kafka needs Java 17 or newer: set JAVA_HOME or put 'java' on PATH")
    heap = os.environ.get("KAFKA_HEAP_OPTS") or DEFAULT_HEAP_OPTS
    tuning = os.environ.get("KAFKA_JVM_PERFORMANCE_OPTS") or DEFAULT_JVM_OPTS
    log4j = f"-Dlog4j.configuration=file:{data_dir / 'log4j.properties'}"
    classpath = str(libs / "*")
    return [java, *heap.split(), *tuning.split(), log4j, "-cp", classpath, main_class, *args]


def _launch(data_dir: Path, libs: Path) -> int:
    command = _java(libs, data_dir, MAIN_CLASS, str(data_dir / "server.properties"))
    with (data_dir / LOG_NAME).open("ab") as log:
        process = subprocess.Popen(
            command,
            cwd=data_dir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    (data_dir / PID_NAME).write_text(f"{process.pid}\n")
    return process.pid


def _log_size(data_dir: Path) -> int:
    try:
        return (data_dir / LOG_NAME).stat().st_size
    except OSError:
        return 0


def _wait_ready(broker: BrokerInfo, timeout: float, log_offset: int) -> BrokerInfo:
    deadline = time.monotonic() + timeout
    while _live_brokers(broker.port) < 1:
        if not _alive(broker.pid):
            (broker.data_dir / PID_NAME).unlink(missing_ok=True)
            raise KafkaLocalError(
                f"the broker exited while starting; {LOG_NAME} ends:\n"
                + _log_tail(broker.data_dir, log_offset)
            )
        if time.monotonic() > deadline:
            _kill(broker.pid)
            (broker.data_dir / PID_NAME).unlink(missing_ok=True)
            raise KafkaLocalError(
                f"the broker was not ready after {timeout:g} s and was killed; {LOG_NAME} ends:\n"
                + _log_tail(broker.data_dir, log_offset)
            )
        time.sleep(0.2)
    return broker


# --- the command line ---------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dmp-faust kafka", description="A local single-node Kafka broker (KRaft)."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("fetch", help="download Kafka's jars (once; cached)")
    start_cmd = commands.add_parser("start", help="start the broker and wait until it is ready")
    start_cmd.add_argument("--port", type=int, default=DEFAULT_PORT, help="default 9092")
    start_cmd.add_argument("--controller-port", type=int, help="default: port + 1")
    start_cmd.add_argument("--timeout", type=float, default=90.0, help="seconds (default 90)")
    stop_cmd = commands.add_parser("stop", help="stop the broker (controlled shutdown)")
    stop_cmd.add_argument("--timeout", type=float, default=30.0, help="seconds (default 30)")
    status_cmd = commands.add_parser("status", help="exit 0 when running, 1 when stopped")
    for command in (start_cmd, stop_cmd, status_cmd):
        command.add_argument(
            "--data-dir",
            type=Path,
            default=default_data_dir(),
            help="the broker's state (default: $DMP_DATA_DIR/kafka, i.e. ./var/kafka)",
        )
    return parser


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except KafkaLocalError as error:
        print(f"dmp-faust kafka {args.command}: {error}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    if args.command == "fetch":
        print(f"Kafka {KAFKA_VERSION} jars in {ensure_jars()}")
        return 0
    if args.command == "status":
        running = status(args.data_dir)
        print(f"running ({running})" if running else "stopped")
        return 0 if running else 1
    if args.command == "stop":
        stopped = stop(args.data_dir, args.timeout)
        print("stopped" if stopped else f"no broker was running from {args.data_dir}")
        return 0
    already = status(args.data_dir)
    began = time.monotonic()
    broker = start(args.port, args.data_dir, args.controller_port, args.timeout)
    state = "already running" if already else f"started in {time.monotonic() - began:.1f} s"
    print(f"kafka {state} ({broker}); bootstrap {broker.bootstrap}")
    return 0
