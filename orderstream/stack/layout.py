"""The files of a home's local Kafka: its layout (cluster id, nodes, ports) and each node's
rendered configuration.

Everything lives in `$ORDERSTREAM_HOME/kafka/`: `stack.json` (the layout, chosen once and read by
clients through `orderstream.kafka.address`), `node-<id>/` (server.properties, log4j2.yaml, data,
pid file) and `logs/`.
"""

from __future__ import annotations

import base64
import json
import shutil
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from orderstream.errors import UserError
from orderstream.kafka.address import HOST, layout_file, read_layout_file
from orderstream.processes import free_ports, port_is_free
from orderstream.settings import Settings
from orderstream.stack import secure as sec

LOG_PATTERN = "[%d] %p %m (%c)%n"


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


# --- paths -----------------------------------------------------------------------------------


def kafka_dir(settings: Settings) -> Path:
    return settings.home / "kafka"


def node_dir(settings: Settings, node_id: int) -> Path:
    return kafka_dir(settings) / f"node-{node_id}"


def pid_file(settings: Settings, node_id: int) -> Path:
    return node_dir(settings, node_id) / "kafka.pid"


def config_file(settings: Settings, node_id: int) -> Path:
    return node_dir(settings, node_id) / "server.properties"


def data_dir(settings: Settings, node_id: int) -> Path:
    return node_dir(settings, node_id) / "data"


def log_files(settings: Settings, node_id: int) -> tuple[Path, Path]:
    """The node's own log and its JVM's stdout."""
    logs = kafka_dir(settings) / "logs"
    return logs / f"server-{node_id}.log", logs / f"stdout-{node_id}.log"


def formatted(settings: Settings, node_id: int) -> bool:
    return (data_dir(settings, node_id) / "meta.properties").exists()


# --- the layout ------------------------------------------------------------------------------


def read_layout(settings: Settings) -> Layout | None:
    raw = read_layout_file(settings)
    if raw is None:
        return None
    return Layout(raw["cluster_id"], tuple(Node(**node) for node in raw["nodes"]), bool(raw.get("secure", False)))


def local_layout(settings: Settings) -> Layout | None:
    """The home's layout, or None when the cluster is external or the home has none yet."""
    return None if settings.kafka_bootstrap_servers else read_layout(settings)


def require_layout(settings: Settings) -> Layout:
    layout = local_layout(settings)
    if layout is None:
        raise UserError(f"no local Kafka in {settings.home}: run `orderstream stack up` first")
    return layout


def prepare_layout(settings: Settings, brokers: int, secure: bool, running: Callable[[int], bool]) -> Layout:
    """The layout to run, with its files written: remembered ports, or new ones on first use.

    `running(node_id)` tells whether a node of the home runs now.
    """
    layout = read_layout(settings)
    any_running = layout is not None and any(running(n.node_id) for n in layout.nodes)
    if layout is not None and (len(layout.nodes) != brokers or layout.secure != secure):
        if any_running:
            shape, wanted = f"{len(layout.nodes)} node(s)", f"{brokers}"
            if layout.secure != secure:
                shape += " with --secure" if layout.secure else " in plaintext"
                wanted += " with --secure" if secure else " in plaintext"
            raise UserError(
                f"the local Kafka in {settings.home} runs {shape}, not {wanted}: run `orderstream stack down` first"
            )
        shutil.rmtree(kafka_dir(settings))  # another cluster shape or security: start from empty data
        layout = None
    if layout is None:
        layout = replace(_new_layout(settings, brokers), secure=secure)
    elif settings.kafka_port and settings.kafka_port != layout.nodes[0].port:
        if any_running:
            raise UserError(
                f"the local Kafka in {settings.home} listens on {layout.nodes[0].port}, not "
                f"KAFKA_PORT={settings.kafka_port}: run `orderstream stack down` first"
            )
        layout = replace(layout, nodes=(replace(layout.nodes[0], port=settings.kafka_port), *layout.nodes[1:]))
    # Check before writing anything, so a refused port is not remembered.
    check_ports(settings, [n for n in layout.nodes if not running(n.node_id)])
    if layout.secure:  # before the config files, which hold the admin password
        sec.ensure_credentials(settings, may_create=not formatted(settings, layout.nodes[0].node_id))
    _write_files(settings, layout)
    return layout


def _new_layout(settings: Settings, brokers: int) -> Layout:
    wanted = 2 * brokers - (1 if settings.kafka_port else 0)
    ports = free_ports(wanted, HOST, exclude={settings.kafka_port})
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


def check_ports(settings: Settings, nodes: list[Node]) -> None:
    """UserError unless every port of the nodes can be bound (as the JVM binds: reusing the address)."""
    for node in nodes:
        for port in (node.port, node.controller_port):
            if not port_is_free(HOST, port):
                fix = (
                    "set KAFKA_PORT to a free port"
                    if node.node_id == 1 and port == node.port
                    else f"free it, or delete {kafka_dir(settings)} to choose new ports"
                )
                raise UserError(f"port {port} on {HOST} is taken, the local Kafka needs it: {fix}")


# --- rendered files --------------------------------------------------------------------------


def _write_files(settings: Settings, layout: Layout) -> None:
    (kafka_dir(settings) / "logs").mkdir(parents=True, exist_ok=True)
    for node in layout.nodes:
        node_dir(settings, node.node_id).mkdir(exist_ok=True)
        if layout.secure:  # the broker's own SCRAM password is in it
            sec.write_private(config_file(settings, node.node_id), _server_properties(settings, layout, node))
        else:
            config_file(settings, node.node_id).write_text(_server_properties(settings, layout, node))
        (node_dir(settings, node.node_id) / "log4j2.yaml").write_text(_log4j2_yaml(log_files(settings, node.node_id)[0]))
    target = layout_file(settings)
    temp = target.with_name(target.name + ".tmp")
    remembered: dict[str, object] = {"cluster_id": layout.cluster_id, "nodes": [asdict(n) for n in layout.nodes]}
    if layout.secure:
        remembered["secure"] = True
    temp.write_text(json.dumps(remembered, indent=2))
    temp.replace(target)  # readers never see a half-written file


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
        "log.dirs": data_dir(settings, node.node_id),
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


def tools_log_config(settings: Settings) -> Path:
    """The log4j2 configuration of Kafka's command-line tools (written on each use)."""
    path = kafka_dir(settings) / "tools-log4j2.yaml"
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
