"""The local KRaft Kafka of one ORDERSTREAM_HOME: one combined node, or three for fault tests.

Everything lives in `$ORDERSTREAM_HOME/kafka/`: `stack.json` (cluster id and ports, chosen once),
`node-<id>/` (server.properties, log4j2.yaml, data, pid file) and `logs/`. When
`settings.kafka_bootstrap_servers` is set the cluster is external and nothing here starts.
`up(..., secure=True)` starts the single node with SCRAM users and ACLs instead (see `secure`);
this module's own admin work on such a home runs as its super user.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from orderstream.errors import BrokerUnavailable, UserError
from orderstream.settings import Settings, dlq_topic
from orderstream.stack import secure as sec
from orderstream.stack.jars import classpath, java_executable

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
MAIN_CLASS = "kafka.Kafka"
STORAGE_TOOL = "kafka.tools.StorageTool"
START_DEADLINE_S = 60.0
STOP_DEADLINE_S = 30.0
ADMIN_TIMEOUT_S = 30.0
LOG_TAIL_LINES = 15
LOG_PATTERN = "[%d] %p %m (%c)%n"
UNREACHABLE = {KafkaError._TRANSPORT, KafkaError._TIMED_OUT, KafkaError._ALL_BROKERS_DOWN}

# Brokers this process started, kept so their exit is reaped and never looks like a live pid.
_children: dict[int, subprocess.Popen] = {}


@dataclass(frozen=True)
class Node:
    node_id: int
    port: int
    controller_port: int


@dataclass(frozen=True)
class Layout:
    cluster_id: str
    nodes: tuple[Node, ...]
    secure: bool = False  # SASL_PLAINTEXT/SCRAM listener and StandardAuthorizer ACLs

    def node(self, node_id: int) -> Node:
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise UserError(f"no Kafka node {node_id} here: node ids are {[n.node_id for n in self.nodes]}")


@dataclass(frozen=True)
class NodeStatus:
    node_id: int
    address: str
    pid: int | None

    @property
    def up(self) -> bool:
        return self.pid is not None


@dataclass(frozen=True)
class StackStatus:
    bootstrap_servers: str | None
    external: bool
    nodes: tuple[NodeStatus, ...]
    secure: bool = False  # a local broker started with --secure: clients need SCRAM credentials

    @property
    def up(self) -> bool:
        """True when every local node runs (an external cluster is not watched from here)."""
        return self.external or (bool(self.nodes) and all(node.up for node in self.nodes))


@dataclass(frozen=True)
class StackInfo(StackStatus):
    topics: tuple[str, ...] = ()
    started: tuple[int, ...] = ()  # node ids this call started


# --- addresses -------------------------------------------------------------------------------


def bootstrap_servers(settings: Settings) -> str:
    """Where clients connect. Reads one small file at most: no network I/O."""
    if settings.kafka_bootstrap_servers:
        return settings.kafka_bootstrap_servers
    local = _local_bootstrap(settings)
    if local is None:
        raise BrokerUnavailable(
            f"no local Kafka in {settings.home} yet: run `orderstream stack up`, or set KAFKA_BOOTSTRAP_SERVERS"
        )
    return local


def _local_bootstrap(settings: Settings) -> str | None:
    layout = _read_layout(settings)
    if layout is not None:
        return ",".join(f"{HOST}:{node.port}" for node in layout.nodes)
    return f"{HOST}:{settings.kafka_port}" if settings.kafka_port else None


# --- lifecycle -------------------------------------------------------------------------------


def up(settings: Settings, brokers: int = 1, secure: bool = False) -> StackInfo:
    """Start the home's broker(s) unless running, then create the pipeline's topics.

    With `secure` the single node takes only SCRAM-SHA-512 logins (see `orderstream.stack.secure`)
    and the pipeline's ACLs are granted for the settings' topics and groups.
    """
    if brokers not in (1, 3):
        raise ValueError(f"brokers must be 1 or 3, not {brokers}")
    if secure and brokers != 1:
        raise ValueError("a secure local Kafka runs a single node")
    if settings.kafka_bootstrap_servers:
        if secure:
            raise UserError(
                "--secure starts a local broker, but KAFKA_BOOTSTRAP_SERVERS names an external cluster: "
                "its security is configured with KAFKA_SECURITY_PROTOCOL and KAFKA_SASL_*"
            )
        topics = ensure_topics(settings)
        return StackInfo(settings.kafka_bootstrap_servers, True, (), topics=topics)
    java = java_executable()
    cp = classpath()
    layout = _prepare_layout(settings, brokers, secure)
    to_start = [node for node in layout.nodes if _running_pid(settings, node.node_id) is None]
    _format_storage(settings, layout, [n for n in to_start if not _formatted(settings, n.node_id)], java, cp)
    for node in to_start:
        _spawn(settings, node, java, cp)
    _wait_until_answering(settings, layout, [n.node_id for n in to_start])
    topics = ensure_topics(settings)
    if secure:
        sec.ensure_acls(_operator(settings))
    current = status(settings)
    return StackInfo(
        current.bootstrap_servers, False, current.nodes, secure=current.secure,
        topics=topics, started=tuple(n.node_id for n in to_start),
    )


def status(settings: Settings) -> StackStatus:
    if settings.kafka_bootstrap_servers:
        return StackStatus(settings.kafka_bootstrap_servers, True, ())
    layout = _read_layout(settings)
    nodes = () if layout is None else tuple(
        NodeStatus(n.node_id, f"{HOST}:{n.port}", _running_pid(settings, n.node_id)) for n in layout.nodes
    )
    return StackStatus(_local_bootstrap(settings), False, nodes, secure=layout is not None and layout.secure)


def down(settings: Settings) -> bool:
    """Stop this home's broker(s); True if any was running."""
    layout = None if settings.kafka_bootstrap_servers else _read_layout(settings)
    if layout is None:
        return False
    return _stop(settings, [n.node_id for n in layout.nodes], hard=False)


def kill_node(settings: Settings, node_id: int, hard: bool = True) -> bool:
    """Stop one node: SIGKILL (a crash) when hard, else a clean SIGTERM shutdown."""
    _require_layout(settings).node(node_id)
    return _stop(settings, [node_id], hard=hard)


def start_node(settings: Settings, node_id: int) -> int:
    """Start one stopped node of the home's cluster and wait until it has rejoined; its pid."""
    layout = _require_layout(settings)
    node = layout.node(node_id)
    pid = _running_pid(settings, node_id)
    if pid is None:
        _check_ports(settings, [node])
        pid = _spawn(settings, node, java_executable(), classpath())
        _wait_until_answering(settings, layout, [node_id])
    return pid


def leader_of(settings: Settings, topic: str, partition: int) -> int:
    """Node id leading the partition (-1 while it has no leader)."""
    metadata = _admin(settings).list_topics(topic, timeout=ADMIN_TIMEOUT_S)
    found = metadata.topics.get(topic)
    if found is None or found.error is not None or partition not in found.partitions:
        raise UserError(f"no partition {topic}[{partition}] on {bootstrap_servers(settings)}")
    return found.partitions[partition].leader


def run_kafka_tool(
    settings: Settings, main_class: str, args: list[str], timeout: float
) -> subprocess.CompletedProcess[str]:
    """Run a Kafka tool (e.g. org.apache.kafka.tools.ProducerPerformance) on the broker's classpath."""
    java = java_executable()
    return subprocess.run(
        [java, f"-Xmx{settings.kafka_heap}", f"-Dlog4j2.configurationFile={_tools_log_config(settings)}",
         "-cp", classpath(), main_class, *args],
        capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
    )


# --- topics ----------------------------------------------------------------------------------


def pipeline_topics(settings: Settings) -> tuple[str, ...]:
    return (
        settings.inventory_topic,
        settings.delivery_topic,
        dlq_topic(settings.inventory_topic),
        dlq_topic(settings.delivery_topic),
    )


def ensure_topics(
    settings: Settings, partitions: int | None = None, replication_factor: int | None = None
) -> tuple[str, ...]:
    """Create the settings' four topics unless they exist, and wait until each partition has a leader.

    The replication factor defaults to the local node count, or the external cluster's default.
    """
    names = pipeline_topics(settings)
    layout = None if settings.kafka_bootstrap_servers else _read_layout(settings)
    rf = replication_factor or (len(layout.nodes) if layout else -1)
    config = {"min.insync.replicas": "2"} if rf >= 3 else {}
    admin = _admin(settings)
    futures = admin.create_topics(
        [NewTopic(name, partitions or settings.topic_partitions, rf, config=config) for name in names],
        operation_timeout=ADMIN_TIMEOUT_S, request_timeout=ADMIN_TIMEOUT_S,
    )
    for name, future in futures.items():
        _result(future, settings, f"create topic {name}", ok=KafkaError.TOPIC_ALREADY_EXISTS)
    _wait_for_leaders(settings, admin, names)
    return names


def delete_topics(settings: Settings) -> None:
    """Delete the settings' four topics; missing ones are fine."""
    admin = _admin(settings)  # referenced until the futures resolve: a collected client cancels them
    futures = admin.delete_topics(
        list(pipeline_topics(settings)), operation_timeout=ADMIN_TIMEOUT_S, request_timeout=ADMIN_TIMEOUT_S
    )
    for name, future in futures.items():
        _result(future, settings, f"delete topic {name}", ok=KafkaError.UNKNOWN_TOPIC_OR_PART)


def _admin(settings: Settings) -> AdminClient:
    # librdkafka's own log goes to Python logging instead of stderr.
    return AdminClient({**_operator(settings).kafka_client_config(), "logger": log})


def _operator(settings: Settings) -> Settings:
    """Who does the stack's admin work: on a local secure broker its super user, else the settings' identity."""
    layout = None if settings.kafka_bootstrap_servers else _read_layout(settings)
    if layout is None or not layout.secure:
        return settings
    return sec.secure_client_settings(settings, sec.ADMIN)


def _result(future: Future[None], settings: Settings, what: str, ok: int) -> None:
    try:
        future.result(timeout=ADMIN_TIMEOUT_S + 5)
    except FutureTimeout:
        raise BrokerUnavailable(f"Kafka at {bootstrap_servers(settings)} did not answer: cannot {what}") from None
    except KafkaException as exc:
        error: KafkaError = exc.args[0]
        if error.code() in UNREACHABLE:
            raise BrokerUnavailable(f"Kafka at {bootstrap_servers(settings)} is unreachable: cannot {what}") from None
        if error.code() != ok:
            raise UserError(f"cannot {what} on {bootstrap_servers(settings)}: {error.str()}") from None


def _wait_for_leaders(settings: Settings, admin: AdminClient, names: tuple[str, ...]) -> None:
    deadline = time.monotonic() + ADMIN_TIMEOUT_S
    while True:
        try:
            topics = admin.list_topics(timeout=5).topics
        except KafkaException:
            topics = {}
        if all(
            name in topics and topics[name].error is None and topics[name].partitions
            and all(p.leader >= 0 for p in topics[name].partitions.values())
            for name in names
        ):
            return
        if time.monotonic() > deadline:
            raise BrokerUnavailable(f"topics {list(names)} got no leaders on {bootstrap_servers(settings)}")
        time.sleep(0.1)


# --- layout and files ------------------------------------------------------------------------


def _kafka_dir(settings: Settings) -> Path:
    return settings.home / "kafka"


def _node_dir(settings: Settings, node_id: int) -> Path:
    return _kafka_dir(settings) / f"node-{node_id}"


def _pid_file(settings: Settings, node_id: int) -> Path:
    return _node_dir(settings, node_id) / "kafka.pid"


def _config_file(settings: Settings, node_id: int) -> Path:
    return _node_dir(settings, node_id) / "server.properties"


def _data_dir(settings: Settings, node_id: int) -> Path:
    return _node_dir(settings, node_id) / "data"


def _log_files(settings: Settings, node_id: int) -> tuple[Path, Path]:
    logs = _kafka_dir(settings) / "logs"
    return logs / f"server-{node_id}.log", logs / f"stdout-{node_id}.log"


def _read_layout(settings: Settings) -> Layout | None:
    try:
        raw = json.loads((_kafka_dir(settings) / "stack.json").read_text())
    except FileNotFoundError:
        return None
    return Layout(raw["cluster_id"], tuple(Node(**node) for node in raw["nodes"]), bool(raw.get("secure", False)))


def _require_layout(settings: Settings) -> Layout:
    layout = None if settings.kafka_bootstrap_servers else _read_layout(settings)
    if layout is None:
        raise UserError(f"no local Kafka in {settings.home}: run `orderstream stack up` first")
    return layout


def _prepare_layout(settings: Settings, brokers: int, secure: bool = False) -> Layout:
    """The layout to run, with its files written: remembered ports, or new ones on first use."""
    layout = _read_layout(settings)
    running = layout is not None and any(_running_pid(settings, n.node_id) for n in layout.nodes)
    if layout is not None and (len(layout.nodes) != brokers or layout.secure != secure):
        if running:
            shape, wanted = f"{len(layout.nodes)} node(s)", f"{brokers}"
            if layout.secure != secure:
                shape += " with --secure" if layout.secure else " in plaintext"
                wanted += " with --secure" if secure else " in plaintext"
            raise UserError(
                f"the local Kafka in {settings.home} runs {shape}, not {wanted}: run `orderstream stack down` first"
            )
        shutil.rmtree(_kafka_dir(settings))  # another cluster shape or security: start from empty data
        layout = None
    if layout is None:
        layout = replace(_new_layout(settings, brokers), secure=secure)
    elif settings.kafka_port and settings.kafka_port != layout.nodes[0].port:
        if running:
            raise UserError(
                f"the local Kafka in {settings.home} listens on {layout.nodes[0].port}, not "
                f"KAFKA_PORT={settings.kafka_port}: run `orderstream stack down` first"
            )
        layout = replace(layout, nodes=(replace(layout.nodes[0], port=settings.kafka_port), *layout.nodes[1:]))
    # Check before writing anything, so a refused port is not remembered.
    _check_ports(settings, [n for n in layout.nodes if _running_pid(settings, n.node_id) is None])
    if layout.secure:  # before the config files, which hold the admin password
        sec.ensure_credentials(settings, may_create=not _formatted(settings, layout.nodes[0].node_id))
    _write_files(settings, layout)
    return layout


def _new_layout(settings: Settings, brokers: int) -> Layout:
    wanted = 2 * brokers - (1 if settings.kafka_port else 0)
    ports = _free_ports(wanted, exclude={settings.kafka_port})
    if settings.kafka_port:
        ports.insert(0, settings.kafka_port)
    nodes = tuple(Node(i + 1, ports[2 * i], ports[2 * i + 1]) for i in range(brokers))
    return Layout(_new_cluster_id(), nodes)


def _new_cluster_id() -> str:
    # Kafka's Uuid text form: url-safe base64 of 16 random bytes; it avoids a leading '-'.
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def _free_ports(count: int, exclude: set[int]) -> list[int]:
    sockets: list[socket.socket] = []
    try:
        while len(sockets) < count:  # hold each socket open so no port is handed out twice
            sock = socket.socket()
            sock.bind((HOST, 0))
            if sock.getsockname()[1] in exclude:
                sock.close()
                continue
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _check_ports(settings: Settings, nodes: list[Node]) -> None:
    for node in nodes:
        for port in (node.port, node.controller_port):
            with socket.socket() as sock:
                # Like the JVM, reuse the address, so a socket in TIME_WAIT does not count as taken.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind((HOST, port))
                except OSError:
                    fix = (
                        "set KAFKA_PORT to a free port"
                        if node.node_id == 1 and port == node.port
                        else f"free it, or delete {_kafka_dir(settings)} to choose new ports"
                    )
                    raise UserError(f"port {port} on {HOST} is taken, the local Kafka needs it: {fix}") from None


def _write_files(settings: Settings, layout: Layout) -> None:
    kafka_dir = _kafka_dir(settings)
    (kafka_dir / "logs").mkdir(parents=True, exist_ok=True)
    for node in layout.nodes:
        _node_dir(settings, node.node_id).mkdir(exist_ok=True)
        if layout.secure:  # the broker's own SCRAM password is in it
            sec.write_private(_config_file(settings, node.node_id), _server_properties(settings, layout, node))
        else:
            _config_file(settings, node.node_id).write_text(_server_properties(settings, layout, node))
        (_node_dir(settings, node.node_id) / "log4j2.yaml").write_text(
            _log4j2_yaml(_log_files(settings, node.node_id)[0])
        )
    temp = kafka_dir / "stack.json.tmp"
    remembered: dict[str, object] = {"cluster_id": layout.cluster_id, "nodes": [asdict(n) for n in layout.nodes]}
    if layout.secure:
        remembered["secure"] = True
    temp.write_text(json.dumps(remembered, indent=2))
    temp.replace(kafka_dir / "stack.json")  # readers never see a half-written file


def _server_properties(settings: Settings, layout: Layout, node: Node) -> str:
    rf = len(layout.nodes)
    min_isr = 1 if rf == 1 else 2
    props: dict[str, object] = {
        "process.roles": "broker,controller",
        "node.id": node.node_id,
        "listeners": f"PLAINTEXT://{HOST}:{node.port},CONTROLLER://{HOST}:{node.controller_port}",
        "advertised.listeners": f"PLAINTEXT://{HOST}:{node.port},CONTROLLER://{HOST}:{node.controller_port}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": "PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "log.dirs": _data_dir(settings, node.node_id),
        # Topics are created on purpose (up / ensure_topics), as on a production cluster.
        "auto.create.topics.enable": "false",
        "default.replication.factor": rf,
        "min.insync.replicas": min_isr,
        "offsets.topic.replication.factor": rf,
        "transaction.state.log.replication.factor": rf,
        "transaction.state.log.min.isr": min_isr,
        "share.coordinator.state.topic.replication.factor": rf,
        "share.coordinator.state.topic.min.isr": min_isr,
        "group.initial.rebalance.delay.ms": 0,
    }
    if rf == 1:
        # A dynamic quorum of one, formatted with --standalone (Kafka refuses static voters with it).
        props["controller.quorum.bootstrap.servers"] = f"{HOST}:{node.controller_port}"
    else:
        props["controller.quorum.voters"] = ",".join(f"{n.node_id}@{HOST}:{n.controller_port}" for n in layout.nodes)
        # Fence a dead broker within seconds (default 9 s) so failover tests stay quick.
        props["broker.heartbeat.interval.ms"] = 500
        props["broker.session.timeout.ms"] = 3000
    if layout.secure:
        admin_password = sec.load_credentials(settings)[sec.ADMIN]
        props.update(sec.broker_properties(HOST, node.port, node.controller_port, admin_password))
    return "".join(f"{key}={value}\n" for key, value in props.items())


def _tools_log_config(settings: Settings) -> Path:
    path = _kafka_dir(settings) / "tools-log4j2.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_log4j2_yaml(None))
    return path


def _log4j2_yaml(log_file: Path | None) -> str:
    """Broker logs go to a rolling file; tools (log_file None) log warnings to stderr."""
    if log_file is None:
        appender = f"""    Console:
      name: Out
      target: SYSTEM_ERR
      PatternLayout:
        pattern: "{LOG_PATTERN}"
"""
    else:
        appender = f"""    RollingFile:
      name: Out
      fileName: {json.dumps(str(log_file))}
      filePattern: {json.dumps(str(log_file) + ".%i")}
      PatternLayout:
        pattern: "{LOG_PATTERN}"
      SizeBasedTriggeringPolicy:
        size: 10MB
      DefaultRolloverStrategy:
        max: 3
"""
    return f"""Configuration:
  Appenders:
{appender}  Loggers:
    Root:
      level: {"WARN" if log_file is None else "INFO"}
      AppenderRef:
        ref: Out
"""


# --- processes -------------------------------------------------------------------------------


def _formatted(settings: Settings, node_id: int) -> bool:
    return (_data_dir(settings, node_id) / "meta.properties").exists()


def _format_storage(settings: Settings, layout: Layout, nodes: list[Node], java: str, cp: str) -> None:
    tools_log = _tools_log_config(settings)
    standalone = ["--standalone"] if len(layout.nodes) == 1 else []
    passwords: list[str] = []
    formats = {}
    for node in nodes:
        tool = [STORAGE_TOOL, "format", "-t", layout.cluster_id, "-c", str(_config_file(settings, node.node_id)),
                *standalone]
        if layout.secure:
            credentials = sec.load_credentials(settings)
            passwords = [password.get_secret_value() for password in credentials.values()]
            # Passwords go through a private java @argfile, not argv, which every local user can read.
            argfile = _node_dir(settings, node.node_id) / "format.args"
            args = [*tool, *sec.scram_format_args(credentials)]
            sec.write_private(argfile, "".join(_argfile_line(arg) for arg in args))
            tool = [f"@{argfile}"]
        formats[node.node_id] = subprocess.Popen(
            [java, f"-Dlog4j2.configurationFile={tools_log}", "-cp", cp, *tool],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
    try:
        for node_id, proc in formats.items():  # run side by side: each is a JVM start
            output, _ = proc.communicate(timeout=START_DEADLINE_S)
            if proc.returncode != 0:
                for password in passwords:  # never echo a password the tool may quote back
                    output = output.replace(password, "***")
                raise UserError(f"formatting Kafka storage of node {node_id} failed: {output.strip()[-500:]}")
    finally:
        for node in nodes:
            (_node_dir(settings, node.node_id) / "format.args").unlink(missing_ok=True)


def _argfile_line(arg: str) -> str:
    """One argument of a java @argfile: quoted, with backslashes and quotes escaped."""
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"\n'


def _spawn(settings: Settings, node: Node, java: str, cp: str) -> int:
    _, stdout_log = _log_files(settings, node.node_id)
    with open(stdout_log, "ab") as out:
        # A new session so the broker outlives the command (and its Ctrl-C) that started it.
        proc = subprocess.Popen(
            [java, f"-Xmx{settings.kafka_heap}",
             f"-Dlog4j2.configurationFile={_node_dir(settings, node.node_id) / 'log4j2.yaml'}",
             "-cp", cp, MAIN_CLASS, str(_config_file(settings, node.node_id))],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            cwd=_node_dir(settings, node.node_id), start_new_session=True,
        )
    _children[proc.pid] = proc
    _pid_file(settings, node.node_id).write_text(f"{proc.pid}\n")
    log.info("started Kafka node %d (pid %d) on %s:%d", node.node_id, proc.pid, HOST, node.port)
    return proc.pid


def _running_pid(settings: Settings, node_id: int) -> int | None:
    """The pid of this home's node if it runs: the pid file names a live kafka.Kafka on our config."""
    try:
        pid = int(_pid_file(settings, node_id).read_text())
    except (FileNotFoundError, ValueError):
        return None
    child = _children.get(pid)
    if child is not None:  # our own: ask it directly (its cmdline can be blank just after exec)
        if child.poll() is None:
            return pid
        del _children[pid]
        return None
    cmdline = _cmdline(pid)
    if MAIN_CLASS in cmdline and str(_config_file(settings, node_id)) in cmdline:
        return pid
    return None


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except FileNotFoundError:
        if Path("/proc/self").exists():
            return []
    except OSError:
        return []
    # No procfs (macOS): ask ps.
    ps = subprocess.run(["ps", "-ww", "-o", "args=", "-p", str(pid)], capture_output=True, text=True)
    return ps.stdout.split()


def _stop(settings: Settings, node_ids: list[int], hard: bool) -> bool:
    pids = {node_id: pid for node_id in node_ids if (pid := _running_pid(settings, node_id))}
    for pid in pids.values():
        os.kill(pid, signal.SIGKILL if hard else signal.SIGTERM)
    deadline = time.monotonic() + STOP_DEADLINE_S
    while any(_running_pid(settings, node_id) for node_id in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    for node_id, pid in pids.items():
        if _running_pid(settings, node_id):
            log.warning("Kafka node %d (pid %d) ignored SIGTERM for %.0f s: killing it", node_id, pid, STOP_DEADLINE_S)
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(_running_pid(settings, node_id) for node_id in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    for node_id in node_ids:
        _pid_file(settings, node_id).unlink(missing_ok=True)
    return bool(pids)


def _wait_until_answering(settings: Settings, layout: Layout, started: list[int]) -> None:
    """Wait until every running node (the started ones included) is registered with the cluster;
    fail fast if a started one dies.

    Nodes that are down are not waited for: with 2 of 3 down, the first one brought back
    restores the quorum and registers on its own, before the other is started.
    """
    deadline = time.monotonic() + START_DEADLINE_S
    expected = {
        node.node_id for node in layout.nodes
        if node.node_id in started or _running_pid(settings, node.node_id) is not None
    }
    admin = None
    while True:
        for node_id in started:
            if _running_pid(settings, node_id) is None:
                raise UserError(
                    f"Kafka node {node_id} exited while starting; last log lines:\n{_log_tail(settings, node_id)}"
                )
        # Connect only once the port is open, to keep librdkafka's refused-connection noise down.
        if all(_accepts(node.port) for node in layout.nodes if node.node_id in started):
            admin = admin or _admin(settings)
            try:
                if expected <= set(admin.list_topics(timeout=2).brokers):
                    return
            except KafkaException:
                pass
        if time.monotonic() > deadline:
            raise UserError(
                f"Kafka at {bootstrap_servers(settings)} did not answer within {START_DEADLINE_S:.0f} s; "
                f"last log lines:\n{_log_tail(settings, started[0] if started else 1)}"
            )
        time.sleep(0.2)


def _accepts(port: int) -> bool:
    try:
        socket.create_connection((HOST, port), timeout=0.5).close()
        return True
    except OSError:
        return False


def _log_tail(settings: Settings, node_id: int) -> str:
    lines: list[str] = []
    for path in reversed(_log_files(settings, node_id)):  # JVM output first: it has fatal JVM errors
        with contextlib.suppress(FileNotFoundError):
            lines += path.read_text(errors="replace").splitlines()
    return "\n".join(lines[-LOG_TAIL_LINES:]) or "(no log output)"
