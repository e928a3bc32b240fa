"""SCRAM users and ACLs of the local broker started by `orderstream stack up --secure`.

The secure broker has one SASL_PLAINTEXT listener (SCRAM-SHA-512) for every client and the broker
itself, a plaintext controller listener on loopback, and Kafka's `StandardAuthorizer` denying
whatever no ACL allows. Four principals exist from the moment storage is formatted:

- `admin`: super user; the broker's own inter-broker identity and the one that creates topics
  and ACLs;
- `producer`: writes the two order topics (and may use idempotence);
- `inventory-consumer`, `delivery-consumer`: read their topic in their group and write its DLQ.

Their random passwords live in `$ORDERSTREAM_HOME/kafka/credentials.json` (mode 0600) and are
never logged; `secure_client_settings` hands a role's clients its principal.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    ResourcePatternType,
    ResourceType,
)
from pydantic import SecretStr

from orderstream.errors import BrokerUnavailable, UserError
from orderstream.kafka import clients
from orderstream.kafka.address import bootstrap_servers
from orderstream.processes import wait_until
from orderstream.settings import Settings, dlq_topic

ADMIN = "admin"
PRODUCER = "producer"
CONSUMER_PRINCIPALS = {"inventory": "inventory-consumer", "delivery": "delivery-consumer"}
PRINCIPALS = (ADMIN, PRODUCER, *CONSUMER_PRINCIPALS.values())

MECHANISM = "SCRAM-SHA-512"
LISTENER = "SASL_PLAINTEXT"
AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
CLUSTER = "kafka-cluster"  # the name of Kafka's one CLUSTER resource
PASSWORD_BYTES = 32
ACL_TIMEOUT_S = 30.0
UNREACHABLE = {KafkaError._TRANSPORT, KafkaError._TIMED_OUT, KafkaError._ALL_BROKERS_DOWN}


# --- credentials -----------------------------------------------------------------------------


def credentials_path(settings: Settings) -> Path:
    return settings.home / "kafka" / "credentials.json"


def load_credentials(settings: Settings) -> dict[str, SecretStr]:
    """Principal -> password of the home's secure broker."""
    path = credentials_path(settings)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(
            f"no Kafka credentials in {path}: start the broker with `orderstream stack up --secure`"
        ) from None
    users = raw.get("users", {}) if raw.get("mechanism") == MECHANISM else {}
    missing = [name for name in PRINCIPALS if not users.get(name)]
    if missing:
        raise UserError(
            f"{path} lacks {MECHANISM} passwords for {', '.join(missing)}: delete {path.parent} to start afresh"
        )
    return {name: SecretStr(users[name]) for name in PRINCIPALS}


def ensure_credentials(settings: Settings, may_create: bool) -> dict[str, SecretStr]:
    """The home's credentials; new random ones only if `may_create` (storage not yet formatted)."""
    path = credentials_path(settings)
    if path.exists() or not may_create:
        if not path.exists():
            raise UserError(
                f"the secure Kafka storage in {path.parent} is formatted but {path.name} is gone, so no "
                f"client can log in: delete {path.parent} to start afresh"
            )
        return load_credentials(settings)
    users = {name: secrets.token_urlsafe(PASSWORD_BYTES) for name in PRINCIPALS}
    write_private(path, json.dumps({"mechanism": MECHANISM, "users": users}, indent=2) + "\n")
    return {name: SecretStr(password) for name, password in users.items()}


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, atomically (readers never see half of it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(path.name + ".tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # also when the temp file was left over with other bits
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    temp.replace(path)


def secure_client_settings(settings: Settings, principal: str) -> Settings:
    """A copy of `settings` whose clients log in to the home's secure broker as `principal`."""
    if principal not in PRINCIPALS:
        raise UserError(f"no Kafka principal {principal!r}: principals are {', '.join(PRINCIPALS)}")
    password = load_credentials(settings)[principal]
    return settings.model_copy(update={
        "kafka_security_protocol": LISTENER,
        "kafka_sasl_mechanism": MECHANISM,
        "kafka_sasl_username": principal,
        "kafka_sasl_password": password,
    })


# --- broker configuration --------------------------------------------------------------------


def broker_properties(host: str, port: int, controller_port: int, admin_password: SecretStr) -> dict[str, object]:
    """server.properties entries of a secure combined node (they replace the plaintext listeners)."""
    jaas = (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="{ADMIN}" password="{admin_password.get_secret_value()}";'
    )
    listeners = f"{LISTENER}://{host}:{port},CONTROLLER://{host}:{controller_port}"
    return {
        "listeners": listeners,
        "advertised.listeners": listeners,
        "listener.security.protocol.map": f"{LISTENER}:{LISTENER},CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": LISTENER,
        "sasl.enabled.mechanisms": MECHANISM,
        "sasl.mechanism.inter.broker.protocol": MECHANISM,
        f"listener.name.{LISTENER.lower()}.{MECHANISM.lower()}.sasl.jaas.config": jaas,
        "authorizer.class.name": AUTHORIZER,
        "allow.everyone.if.no.acl.found": "false",
        # The controller listener is plaintext on loopback, so the node's own broker-to-controller
        # requests arrive as ANONYMOUS; no client is ever told of that listener.
        "super.users": f"User:{ADMIN};User:ANONYMOUS",
    }


def scram_format_args(credentials: dict[str, SecretStr]) -> list[str]:
    """`kafka-storage format` arguments creating every principal's SCRAM credential."""
    args: list[str] = []
    for name in PRINCIPALS:
        args += ["--add-scram", f"{MECHANISM}=[name={name},password={credentials[name].get_secret_value()}]"]
    return args


# --- ACLs ------------------------------------------------------------------------------------


def pipeline_acls(settings: Settings) -> list[AclBinding]:
    """What each principal may do with the settings' topics and groups; everything else is denied."""

    def allow(resource: ResourceType, name: str, principal: str, operation: AclOperation) -> AclBinding:
        return AclBinding(
            resource, name, ResourcePatternType.LITERAL, f"User:{principal}", "*", operation, AclPermissionType.ALLOW
        )

    acls = [allow(ResourceType.BROKER, CLUSTER, PRODUCER, AclOperation.IDEMPOTENT_WRITE)]
    for topic in settings.topics.values():
        acls += [allow(ResourceType.TOPIC, topic, PRODUCER, op) for op in (AclOperation.WRITE, AclOperation.DESCRIBE)]
    for role, principal in CONSUMER_PRINCIPALS.items():
        topic, group = settings.topics[role], settings.groups[role]
        acls += [
            allow(ResourceType.TOPIC, topic, principal, AclOperation.READ),
            allow(ResourceType.TOPIC, topic, principal, AclOperation.DESCRIBE),
            allow(ResourceType.GROUP, group, principal, AclOperation.READ),
            allow(ResourceType.TOPIC, dlq_topic(topic), principal, AclOperation.WRITE),
            allow(ResourceType.TOPIC, dlq_topic(topic), principal, AclOperation.DESCRIBE),
        ]
    return acls


def ensure_acls(admin_settings: Settings) -> list[AclBinding]:
    """Create the pipeline's ACLs for the settings' topics and groups (existing ones are kept) and
    wait until the broker enforces them. `admin_settings` must log in as a principal allowed to
    alter ACLs: for the local secure broker, `secure_client_settings(settings, ADMIN)`."""
    wanted = pipeline_acls(admin_settings)
    admin = clients.admin_client(admin_settings)
    for binding, future in admin.create_acls(wanted, request_timeout=ACL_TIMEOUT_S).items():
        try:
            future.result(timeout=ACL_TIMEOUT_S + 5)
        except (KafkaException, TimeoutError) as exc:  # the broker's answer, or the future's own timeout
            _raise_acl_error(admin_settings, f"create ACL {binding}", exc)
    # None matches any name, principal and host (documented); the stubs inherit AclBinding's `str`.
    everything = AclBindingFilter(
        ResourceType.ANY, None, ResourcePatternType.ANY, None, None, AclOperation.ANY, AclPermissionType.ANY  # type: ignore[arg-type]
    )
    present: set[AclBinding] = set()

    def enforced() -> bool:
        nonlocal present
        # The broker answers DescribeAcls from the authorizer's own view: once they show, they hold.
        try:
            present = set(admin.describe_acls(everything, request_timeout=10).result(timeout=15))
        except KafkaException:
            present = set()
        return present >= set(wanted)

    if not wait_until(enforced, ACL_TIMEOUT_S, interval=0.1):
        raise BrokerUnavailable(
            f"Kafka at {bootstrap_servers(admin_settings)} did not show "
            f"{len(set(wanted) - present)} new ACL(s) within {ACL_TIMEOUT_S:.0f} s"
        )
    return wanted


def _raise_acl_error(settings: Settings, what: str, exc: Exception) -> None:
    where = bootstrap_servers(settings)
    error = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
    if not isinstance(error, KafkaError) or error.code() in UNREACHABLE:
        raise BrokerUnavailable(f"Kafka at {where} did not answer: cannot {what}") from None
    raise UserError(f"cannot {what} on {where} as {settings.kafka_sasl_username}: {error.str()}") from None
