"""Fault injection on a home's local Kafka: crash or stop one node, and bring it back."""

from __future__ import annotations

from orderstream.settings import Settings
from orderstream.stack.jars import classpath, java_executable
from orderstream.stack.jvm import running_pid, spawn, stop, wait_until_answering
from orderstream.stack.layout import check_ports, require_layout


def kill_node(settings: Settings, node_id: int, hard: bool = True) -> bool:
    """Stop one node: SIGKILL (a crash) when hard, else a clean SIGTERM shutdown."""
    require_layout(settings).node(node_id)
    return stop(settings, [node_id], hard=hard)


def start_node(settings: Settings, node_id: int) -> int:
    """Start one stopped node of the home's cluster and wait until it has rejoined; its pid."""
    layout = require_layout(settings)
    node = layout.node(node_id)
    pid = running_pid(settings, node_id)
    if pid is None:
        check_ports(settings, [node])
        pid = spawn(settings, node, java_executable(), classpath())
        wait_until_answering(settings, layout, [node_id])
    return pid
