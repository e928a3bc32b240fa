"""The broker JVMs of a home's local Kafka: formatting storage, starting nodes, telling which
run, waiting until they answer, and stopping them."""

from __future__ import annotations

import logging
import os
import signal
import subprocess

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from orderstream.errors import UserError
from orderstream.kafka.address import HOST, bootstrap_servers
from orderstream.processes import accepts, cmdline, log_tail, wait_until
from orderstream.settings import Settings
from orderstream.stack import secure as sec
from orderstream.stack.layout import Layout, Node, config_file, log_files, node_dir, pid_file, tools_log_config
from orderstream.stack.topics import admin

log = logging.getLogger(__name__)

MAIN_CLASS = "kafka.Kafka"
STORAGE_TOOL = "kafka.tools.StorageTool"
START_DEADLINE_S = 60.0
STOP_DEADLINE_S = 30.0
LOG_TAIL_LINES = 15

# Brokers this process started, kept so their exit is reaped and never looks like a live pid.
_children: dict[int, subprocess.Popen] = {}


def format_storage(settings: Settings, layout: Layout, nodes: list[Node], java: str, cp: str) -> None:
    tools_log = tools_log_config(settings)
    standalone = ["--standalone"] if len(layout.nodes) == 1 else []
    passwords: list[str] = []
    formats = {}
    for node in nodes:
        tool = [STORAGE_TOOL, "format", "-t", layout.cluster_id, "-c", str(config_file(settings, node.node_id)),
                *standalone]
        if layout.secure:
            credentials = sec.load_credentials(settings)
            passwords = [password.get_secret_value() for password in credentials.values()]
            # Passwords go through a private java @argfile, not argv, which every local user can read.
            argfile = node_dir(settings, node.node_id) / "format.args"
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
            (node_dir(settings, node.node_id) / "format.args").unlink(missing_ok=True)


def _argfile_line(arg: str) -> str:
    """One argument of a java @argfile: quoted, with backslashes and quotes escaped."""
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"\n'


def spawn(settings: Settings, node: Node, java: str, cp: str) -> int:
    _, stdout_log = log_files(settings, node.node_id)
    with open(stdout_log, "ab") as out:
        # A new session so the broker outlives the command (and its Ctrl-C) that started it.
        proc = subprocess.Popen(
            [java, f"-Xmx{settings.kafka_heap}",
             f"-Dlog4j2.configurationFile={node_dir(settings, node.node_id) / 'log4j2.yaml'}",
             "-cp", cp, MAIN_CLASS, str(config_file(settings, node.node_id))],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            cwd=node_dir(settings, node.node_id), start_new_session=True,
        )
    _children[proc.pid] = proc
    pid_file(settings, node.node_id).write_text(f"{proc.pid}\n")
    log.info("started Kafka node %d (pid %d) on %s:%d", node.node_id, proc.pid, HOST, node.port)
    return proc.pid


def running_pid(settings: Settings, node_id: int) -> int | None:
    """The pid of this home's node if it runs: the pid file names a live kafka.Kafka on our config."""
    try:
        pid = int(pid_file(settings, node_id).read_text())
    except (FileNotFoundError, ValueError):
        return None
    child = _children.get(pid)
    if child is not None:  # our own: ask it directly (its cmdline can be blank just after exec)
        if child.poll() is None:
            return pid
        del _children[pid]
        return None
    argv = cmdline(pid)
    if MAIN_CLASS in argv and str(config_file(settings, node_id)) in argv:
        return pid
    return None


def stop(settings: Settings, node_ids: list[int], hard: bool) -> bool:
    """Stop the nodes (SIGKILL when hard, else SIGTERM and SIGKILL after a deadline); True if any ran."""
    pids = {node_id: pid for node_id in node_ids if (pid := running_pid(settings, node_id))}

    def all_stopped() -> bool:
        return not any(running_pid(settings, node_id) for node_id in pids)

    for pid in pids.values():
        os.kill(pid, signal.SIGKILL if hard else signal.SIGTERM)
    if not wait_until(all_stopped, STOP_DEADLINE_S, interval=0.1):
        for node_id, pid in pids.items():
            if running_pid(settings, node_id):
                log.warning(
                    "Kafka node %d (pid %d) ignored SIGTERM for %.0f s: killing it", node_id, pid, STOP_DEADLINE_S
                )
                os.kill(pid, signal.SIGKILL)
        wait_until(all_stopped, 10, interval=0.05)
    for node_id in node_ids:
        pid_file(settings, node_id).unlink(missing_ok=True)
    return bool(pids)


def wait_until_answering(settings: Settings, layout: Layout, started: list[int]) -> None:
    """Wait until every running node (the started ones included) is registered with the cluster;
    fail fast if a started one dies.

    Nodes that are down are not waited for: with 2 of 3 down, the first one brought back
    restores the quorum and registers on its own, before the other is started.
    """
    expected = {
        node.node_id for node in layout.nodes
        if node.node_id in started or running_pid(settings, node.node_id) is not None
    }
    client: AdminClient | None = None

    def answering() -> bool:
        nonlocal client
        for node_id in started:
            if running_pid(settings, node_id) is None:
                raise UserError(
                    f"Kafka node {node_id} exited while starting; last log lines:\n{_log_tail(settings, node_id)}"
                )
        # Connect only once the port is open, to keep librdkafka's refused-connection noise down.
        if not all(accepts(HOST, node.port) for node in layout.nodes if node.node_id in started):
            return False
        client = client or admin(settings)
        try:
            return expected <= set(client.list_topics(timeout=2).brokers)
        except KafkaException:
            return False

    if not wait_until(answering, START_DEADLINE_S, interval=0.2):
        raise UserError(
            f"Kafka at {bootstrap_servers(settings)} did not answer within {START_DEADLINE_S:.0f} s; "
            f"last log lines:\n{_log_tail(settings, started[0] if started else 1)}"
        )


def _log_tail(settings: Settings, node_id: int) -> str:
    lines: list[str] = []
    for path in reversed(log_files(settings, node_id)):  # JVM output first: it has fatal JVM errors
        lines += log_tail(path, LOG_TAIL_LINES)  # the last lines of both are among the last of each
    return "\n".join(lines[-LOG_TAIL_LINES:]) or "(no log output)"
