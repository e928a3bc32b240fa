"""Where the brokers are: the settings' external cluster, or the local stack of the home.

The local stack (`orderstream.stack`) publishes its nodes' ports in `$ORDERSTREAM_HOME/kafka/stack.json`
when it first starts; clients read them from there. One small file read, never network I/O.
"""

from __future__ import annotations

import json
from pathlib import Path

from orderstream.errors import BrokerUnavailable
from orderstream.settings import Settings

HOST = "127.0.0.1"


def layout_file(settings: Settings) -> Path:
    """The local stack's layout: cluster id, each node's ports, and whether it is secure."""
    return settings.home / "kafka" / "stack.json"


def read_layout_file(settings: Settings) -> dict | None:
    try:
        return json.loads(layout_file(settings).read_text())
    except FileNotFoundError:
        return None


def local_bootstrap(settings: Settings) -> str | None:
    """The local nodes' addresses, or None before the home's stack was first started."""
    layout = read_layout_file(settings)
    if layout is not None:
        return ",".join(f"{HOST}:{node['port']}" for node in layout["nodes"])
    return f"{HOST}:{settings.kafka_port}" if settings.kafka_port else None


def bootstrap_servers(settings: Settings) -> str:
    """Where clients connect: KAFKA_BOOTSTRAP_SERVERS, else the home's local stack."""
    if settings.kafka_bootstrap_servers:
        return settings.kafka_bootstrap_servers
    local = local_bootstrap(settings)
    if local is None:
        raise BrokerUnavailable(
            f"no local Kafka in {settings.home} yet: run `orderstream stack up`, or set KAFKA_BOOTSTRAP_SERVERS"
        )
    return local
