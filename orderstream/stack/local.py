"""The local KRaft Kafka of one ORDERSTREAM_HOME: one combined node, or three for fault tests.

This module starts (`up`), stops (`down`) and reports (`status`) it; the work is done by
`layout` (its files), `jvm` (the broker processes), `topics` (the pipeline's topics), `faults`
(one node down and back) and `tools` (Kafka's command-line tools). When
`settings.kafka_bootstrap_servers` is set the cluster is external and nothing here starts.
`up(..., secure=True)` starts the single node with SCRAM users and ACLs instead (see `secure`);
the stack's own admin work on such a home runs as its super user.
"""

from __future__ import annotations

from dataclasses import dataclass

from orderstream.errors import UserError
from orderstream.kafka.address import HOST, local_bootstrap
from orderstream.settings import Settings
from orderstream.stack import secure as sec
from orderstream.stack.faults import kill_node, start_node
from orderstream.stack.jars import classpath, java_executable
from orderstream.stack.jvm import format_storage, running_pid, spawn, stop, wait_until_answering
from orderstream.stack.layout import formatted, local_layout, prepare_layout, read_layout
from orderstream.stack.tools import run_kafka_tool
from orderstream.stack.topics import delete_topics, ensure_topics, leader_of, operator, pipeline_topics

# The stack's operations, in one place for callers; each lives in the module named above.
__all__ = [
    "NodeStatus",
    "StackInfo",
    "StackStatus",
    "delete_topics",
    "down",
    "ensure_topics",
    "kill_node",
    "leader_of",
    "pipeline_topics",
    "run_kafka_tool",
    "start_node",
    "status",
    "up",
]


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
    layout = prepare_layout(settings, brokers, secure, running=lambda node_id: _running(settings, node_id))
    to_start = [node for node in layout.nodes if not _running(settings, node.node_id)]
    format_storage(settings, layout, [n for n in to_start if not formatted(settings, n.node_id)], java, cp)
    for node in to_start:
        spawn(settings, node, java, cp)
    wait_until_answering(settings, layout, [n.node_id for n in to_start])
    topics = ensure_topics(settings)
    if secure:
        sec.ensure_acls(operator(settings))
    current = status(settings)
    return StackInfo(
        current.bootstrap_servers, False, current.nodes, secure=current.secure,
        topics=topics, started=tuple(n.node_id for n in to_start),
    )


def status(settings: Settings) -> StackStatus:
    if settings.kafka_bootstrap_servers:
        return StackStatus(settings.kafka_bootstrap_servers, True, ())
    layout = read_layout(settings)
    nodes = () if layout is None else tuple(
        NodeStatus(n.node_id, f"{HOST}:{n.port}", running_pid(settings, n.node_id)) for n in layout.nodes
    )
    return StackStatus(local_bootstrap(settings), False, nodes, secure=layout is not None and layout.secure)


def down(settings: Settings) -> bool:
    """Stop this home's broker(s); True if any was running."""
    layout = local_layout(settings)
    if layout is None:
        return False
    return stop(settings, [n.node_id for n in layout.nodes], hard=False)


def _running(settings: Settings, node_id: int) -> bool:
    return running_pid(settings, node_id) is not None
