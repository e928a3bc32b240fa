"""The notification flow against a real SMTP server on loopback (aiosmtpd) and the .eml
fallback, on SQLite and PostgreSQL: once-only delivery, refusals, retries, crashes."""

from __future__ import annotations

import datetime as dt
import logging
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from types import TracebackType
from typing import Self

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from sqlalchemy import insert, select

from flows.notify import notify_customers
from orderstream.db.engine import make_engine, session_factory
from orderstream.db.models import Notification
from orderstream.errors import UserError
from orderstream.notify import (
    DEFAULT_BACKOFF,
    FileTransport,
    NotifyIncomplete,
    SmtpConfig,
    SmtpTransport,
    Transport,
    eml_name,
    make_transport,
    send_queued,
)
from orderstream.runtime import settings_in_environment
from orderstream.settings import Settings

pytestmark = pytest.mark.integration

FAST = (0.001, 0.002, 0.004)  # exponential too, but fast enough for tests
PASSWORD = "s3cr3t/pa55"


# -- a real SMTP server on loopback --------------------------------------------------------


class Recorder:
    """aiosmtpd handler: records accepted messages; can refuse or fail on request."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.raw: list[bytes] = []
        self.connections = 0  # counted by EHLO, which every smtplib connection sends first
        self.refuse: set[str] = set()  # RCPT TO these -> 550
        self.fail_data = 0  # the next K DATA commands -> 451
        self.drop_before_accept = 0  # the next K DATA: connection reset, message not kept
        self.drop_after_accept = 0  # the next K DATA: message kept, then reset before the reply

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        self.connections += 1
        session.host_name = hostname
        return responses

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refuse:
            return f"550 5.1.1 <{address}>: mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.fail_data:
            self.fail_data -= 1
            return "451 4.3.0 try again later"
        if self.drop_before_accept:
            self.drop_before_accept -= 1
            server.transport.abort()
            return "250 never seen"
        self.raw.append(envelope.original_content)
        self.messages.append(message_from_bytes(envelope.original_content, policy=policy.default))
        if self.drop_after_accept:
            self.drop_after_accept -= 1
            server.transport.abort()
        return "250 OK queued"

    def ids(self) -> list[str]:
        return [str(m["Message-ID"]) for m in self.messages]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, **kwargs: object) -> tuple[Controller, Recorder]:
    handler = Recorder()
    controller = Controller(handler, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    return controller, handler


@pytest.fixture
def smtp() -> Iterator[tuple[Recorder, str]]:
    port = free_port()
    controller, handler = start_server(port)
    try:
        yield handler, f"smtp://127.0.0.1:{port}"
    finally:
        controller.stop()


# -- data ----------------------------------------------------------------------------------


def mail_settings(tmp_path: Path, db_url: str, smtp_url: str | None = None) -> Settings:
    return Settings(orderstream_home=tmp_path / "home", database_url=db_url, smtp_url=smtp_url)


def queue(db_url: str, n: int, *, start: int = 1, recipients: dict[int, str] | None = None) -> list[str]:
    """Queue n notifications the way the delivery consumer does; returns their Message-IDs."""
    recipients = recipients or {}
    rows = [
        {
            "order_id": f"ORD-{i}",
            "to_status": "scheduled",
            "event_id": f"ev-{i}",
            "recipient": recipients.get(i, f"customer{i}@example.com"),
            "subject": f"Your order ORD-{i} is scheduled",
            "body": f"Hello,\nyour order ORD-{i} will arrive on 2026-12-0{i % 7 + 1}.\n",
            "message_id": f"<ORD-{i}.scheduled@orderstream>",
            "state": "queued",
            "attempts": 0,
            "created_at": dt.datetime(2026, 11, 25, 10, i % 60, tzinfo=dt.UTC),
        }
        for i in range(start, start + n)
    ]
    with session_factory(make_engine(db_url)).begin() as session:
        session.execute(insert(Notification), rows)
    return [r["message_id"] for r in rows]


def rows(db_url: str) -> dict[str, Notification]:
    with session_factory(make_engine(db_url))() as session:
        return {n.message_id: n for n in session.scalars(select(Notification))}


def states(db_url: str) -> Counter[str]:
    return Counter(n.state for n in rows(db_url).values())


def run(settings: Settings, transport: Transport | None = None, **kwargs: object):
    sessions = session_factory(make_engine(settings.db_url))
    return send_queued(sessions, settings, transport=transport, backoff=FAST, **kwargs)


class CrashAfter:
    """Wraps a transport and dies on message number k+1, before or after delivering it."""

    def __init__(self, inner: Transport, k: int, *, after_delivery: bool) -> None:
        self.inner, self.k, self.after_delivery = inner, k, after_delivery
        self.commit_every, self.sender = inner.commit_every, inner.sender

    def describe(self) -> str:
        return self.inner.describe()

    def __enter__(self) -> Self:
        self.inner.__enter__()
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.inner.__exit__(t, e, tb)

    def send(self, message: EmailMessage) -> bool:
        if self.k == 0:
            if self.after_delivery:
                self.inner.send(message)
            raise SystemExit("simulated crash")  # not an Exception: nothing may catch it
        self.k -= 1
        return self.inner.send(message)

    def sync(self) -> None:
        self.inner.sync()


# -- SMTP ----------------------------------------------------------------------------------


def test_smtp_delivers_every_queued_notification_once(tmp_path, db_url, smtp) -> None:
    server, url = smtp
    expected = queue(db_url, 25)
    settings = mail_settings(tmp_path, db_url, url)

    report = run(settings)

    assert (report.sent, report.failed, report.retried, report.skipped, report.deferred) == (25, 0, 0, 0, 0)
    assert sorted(server.ids()) == sorted(expected)
    assert server.connections == 1  # one connection for the whole run
    first = next(m for m in server.messages if m["Message-ID"] == "<ORD-1.scheduled@orderstream>")
    assert (first["To"], first["Subject"]) == ("customer1@example.com", "Your order ORD-1 is scheduled")
    assert "ORD-1 will arrive" in first.get_content()
    stored = rows(db_url)
    assert {n.state for n in stored.values()} == {"sent"}
    assert all(n.attempts == 1 and n.sent_at is not None and n.last_error is None for n in stored.values())

    again = run(settings)
    assert (again.sent, again.failed, again.recovered) == (0, 0, 0)
    assert len(server.messages) == 25
    assert server.connections == 1  # nothing to send: no connection at all


def test_limit_sends_at_most_that_many(tmp_path, db_url, smtp) -> None:
    server, url = smtp
    queue(db_url, 10)
    settings = mail_settings(tmp_path, db_url, url)
    assert run(settings, limit=4).sent == 4
    assert states(db_url) == {"sent": 4, "queued": 6}
    assert run(settings).sent == 6
    assert len(set(server.ids())) == len(server.ids()) == 10


def test_refused_recipient_is_failed_with_reason_and_the_rest_are_sent(tmp_path, db_url, smtp) -> None:
    server, url = smtp
    server.refuse.add("gone@example.com")
    queue(db_url, 6, recipients={3: "gone@example.com", 5: "not an address"})
    settings = mail_settings(tmp_path, db_url, url)

    report = run(settings)

    assert (report.sent, report.failed, report.retried) == (4, 2, 0)
    stored = rows(db_url)
    refused, invalid = stored["<ORD-3.scheduled@orderstream>"], stored["<ORD-5.scheduled@orderstream>"]
    assert refused.state == "failed" and "550" in refused.last_error and "mailbox unavailable" in refused.last_error
    assert invalid.state == "failed" and invalid.last_error.startswith("invalid message")
    assert dict(report.failures).keys() == {refused.message_id, invalid.message_id}
    assert sorted(server.ids()) == sorted(m for m, n in stored.items() if n.state == "sent")
    assert states(db_url) == {"sent": 4, "failed": 2}
    assert run(settings).sent == 0 and len(server.messages) == 4  # failed rows are not retried


@pytest.mark.parametrize("failure", ["451", "connection reset"])
def test_transient_failures_are_retried_with_backoff_then_succeed(tmp_path, db_url, smtp, failure) -> None:
    server, url = smtp
    if failure == "451":
        server.fail_data = 2
    else:
        server.drop_before_accept = 2
    expected = queue(db_url, 5)
    slept: list[float] = []

    report = run(mail_settings(tmp_path, db_url, url), sleep=slept.append)

    assert slept == list(FAST[:2])  # exponential: the first two delays, in order
    assert (report.sent, report.retried, report.failed, report.deferred) == (5, 1, 0, 0)
    assert sorted(server.ids()) == sorted(expected)  # each exactly once
    assert server.connections == (1 if failure == "451" else 3)  # a reset means a reconnect
    assert states(db_url) == {"sent": 5}


def test_refused_for_now_beyond_the_retries_is_deferred_and_the_run_goes_on(tmp_path, db_url, smtp) -> None:
    server, url = smtp
    server.fail_data = len(FAST) + 1  # the first message is refused on every try
    queue(db_url, 3)
    settings = mail_settings(tmp_path, db_url, url)

    report = run(settings, sleep=lambda _s: None)

    assert (report.sent, report.deferred, report.retried) == (2, 1, 1)
    first = rows(db_url)["<ORD-1.scheduled@orderstream>"]
    assert (first.state, first.attempts) == ("queued", 1) and "451" in first.last_error
    assert run(settings).sent == 1  # the next run delivers it
    assert sorted(server.ids()) == sorted(rows(db_url))


@pytest.mark.fault
def test_server_down_stops_the_run_and_loses_nothing(tmp_path, db_url) -> None:
    port = free_port()  # nobody listens here yet
    expected = queue(db_url, 4)
    settings = mail_settings(tmp_path, db_url, f"smtp://127.0.0.1:{port}")
    slept: list[float] = []

    with pytest.raises(NotifyIncomplete, match="4 notifications stay queued") as raised:
        run(settings, sleep=slept.append)

    assert slept == list(FAST) and raised.value.report.sent == 0
    stored = rows(db_url)
    assert states(db_url) == {"queued": 4}
    assert [stored[m].attempts for m in expected] == [1, 0, 0, 0]  # only the first was tried
    assert "cannot connect" in stored[expected[0]].last_error

    controller, server = start_server(port)
    try:
        assert run(settings).sent == 4
        assert sorted(server.ids()) == sorted(expected)
    finally:
        controller.stop()


@pytest.mark.fault
def test_crash_mid_run_smtp_never_resends_a_row_recorded_sent(tmp_path, db_url, smtp) -> None:
    server, url = smtp
    expected = queue(db_url, 10)
    settings = mail_settings(tmp_path, db_url, url)
    transport = SmtpTransport(SmtpConfig.parse(url))

    with pytest.raises(SystemExit):
        run(settings, CrashAfter(transport, 4, after_delivery=False))
    recorded = {m for m, n in rows(db_url).items() if n.state == "sent"}
    assert recorded == set(expected[:4])  # SMTP records each accepted message at once
    assert states(db_url) == {"sent": 4, "sending": 6}

    report = run(settings)

    assert (report.sent, report.recovered) == (6, 6)
    assert Counter(server.ids()) == Counter(expected)  # every message exactly once in total
    assert not recorded & set(server.ids()[4:])
    assert states(db_url) == {"sent": 10}


@pytest.mark.fault
def test_crash_between_server_accept_and_commit_resends_only_that_message_with_its_message_id(
    tmp_path, db_url, smtp
) -> None:
    """The documented residual window: at most one duplicate per crash, same Message-ID, same bytes."""
    server, url = smtp
    expected = queue(db_url, 6)
    settings = mail_settings(tmp_path, db_url, url)

    with pytest.raises(SystemExit):
        run(settings, CrashAfter(SmtpTransport(SmtpConfig.parse(url)), 2, after_delivery=True))
    assert run(settings).sent == 4

    counts = Counter(server.ids())
    assert set(counts) == set(expected)
    assert [m for m, c in counts.items() if c > 1] == [expected[2]]
    assert counts[expected[2]] == 2
    copies = [raw for raw, m in zip(server.raw, server.ids()) if m == expected[2]]
    assert copies[0] == copies[1]  # identical bytes: receivers can drop the duplicate


@pytest.mark.fault
def test_connection_reset_after_accept_resends_with_the_same_message_id(tmp_path, db_url, smtp) -> None:
    server, url = smtp
    server.drop_after_accept = 1
    expected = queue(db_url, 3)

    report = run(mail_settings(tmp_path, db_url, url), sleep=lambda _s: None)

    assert (report.sent, report.retried) == (3, 1)
    assert Counter(server.ids()) == Counter({expected[0]: 2, expected[1]: 1, expected[2]: 1})
    assert states(db_url) == {"sent": 3}


def test_concurrent_runs_send_each_message_once(tmp_path, db_url, smtp) -> None:
    server, url = smtp
    expected = queue(db_url, 40)
    settings = mail_settings(tmp_path, db_url, url)
    reports: list = []
    errors: list[BaseException] = []

    def one_run() -> None:
        try:
            reports.append(run(settings))
        except BaseException as exc:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=one_run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and len(reports) == 3
    assert sum(r.sent for r in reports) == 40
    assert Counter(server.ids()) == Counter(expected)


def test_smtp_login_works_and_the_password_is_never_logged(tmp_path, db_url, caplog) -> None:
    logins: list[tuple[str, str]] = []

    def authenticator(server, session, envelope, mechanism, auth_data) -> AuthResult:
        logins.append((auth_data.login.decode(), auth_data.password.decode()))
        return AuthResult(success=auth_data.password.decode() == PASSWORD, handled=False)

    port = free_port()
    controller, server = start_server(port, authenticator=authenticator, auth_require_tls=False)
    try:
        url = f"smtp://shop%40example.com:{PASSWORD.replace('/', '%2F')}@127.0.0.1:{port}"
        settings = mail_settings(tmp_path, db_url, url)
        expected = queue(db_url, 2)
        with caplog.at_level(logging.DEBUG), settings_in_environment(settings):
            report = notify_customers.fn()
        assert report.sent == 2 and sorted(server.ids()) == sorted(expected)
        assert logins == [("shop@example.com", PASSWORD)]
        ours = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("mail.log"))
        assert PASSWORD not in ours and "pa55" not in ours
        assert "smtp://shop@example.com:***@127.0.0.1" in ours
        assert PASSWORD not in repr(make_transport(settings).config)

        wrong = mail_settings(tmp_path, db_url, url.replace("s3cr3t", "wrong"))
        queue(db_url, 1, start=99)
        with pytest.raises(UserError, match="login") as raised:
            run(wrong)
        assert "wrong" not in str(raised.value)
        assert rows(db_url)["<ORD-99.scheduled@orderstream>"].state == "queued"
    finally:
        controller.stop()


# -- .eml files ----------------------------------------------------------------------------


def eml_files(settings: Settings) -> dict[str, int]:
    """File name -> inode: a rewritten file gets a new inode (it is renamed into place)."""
    return {p.name: p.stat().st_ino for p in settings.mail_dir.glob("*.eml")}


def test_file_transport_writes_one_eml_per_notification(tmp_path, db_url) -> None:
    expected = queue(db_url, 12)
    settings = mail_settings(tmp_path, db_url)
    assert isinstance(make_transport(settings), FileTransport)  # the default without SMTP_URL

    report = run(settings)

    assert (report.sent, report.skipped, report.failed) == (12, 0, 0)
    files = eml_files(settings)
    assert sorted(files) == sorted(eml_name(m) for m in expected)
    parsed = message_from_bytes((settings.mail_dir / eml_name(expected[0])).read_bytes(), policy=policy.default)
    assert (parsed["Message-ID"], parsed["To"]) == (expected[0], "customer1@example.com")
    assert not list(settings.mail_dir.glob(".*"))  # no temp files left
    assert states(db_url) == {"sent": 12}

    again = run(settings)
    assert (again.sent, again.skipped) == (0, 0)
    assert eml_files(settings) == files


def test_notify_flow_run_completes_and_returns_its_report(tmp_path, db_url) -> None:
    expected = queue(db_url, 3)
    settings = mail_settings(tmp_path, db_url)

    with settings_in_environment(settings):
        state = notify_customers(return_state=True)
        assert state.is_completed()
        assert state.result().sent == 3
        assert sorted(eml_files(settings)) == sorted(eml_name(m) for m in expected)
        assert notify_customers().sent == 0


@pytest.mark.fault
@pytest.mark.parametrize("after_delivery", [False, True], ids=["before-write", "after-rename"])
def test_crash_mid_run_file_transport_writes_each_file_exactly_once(tmp_path, db_url, after_delivery) -> None:
    expected = queue(db_url, 9)
    settings = mail_settings(tmp_path, db_url)
    k = 5

    with pytest.raises(SystemExit):
        run(settings, CrashAfter(FileTransport(settings.mail_dir), k, after_delivery=after_delivery))
    written = eml_files(settings)
    assert len(written) == k + after_delivery
    assert states(db_url) == {"sending": 9}  # the group of files was not recorded yet

    report = run(settings)

    assert (report.recovered, report.skipped, report.sent) == (9, len(written), 9 - len(written))
    final = eml_files(settings)
    assert sorted(final) == sorted(eml_name(m) for m in expected)
    assert {name: final[name] for name in written} == written  # none rewritten
    assert states(db_url) == {"sent": 9}


def test_unwritable_mail_dir_stops_the_run_and_loses_nothing(tmp_path, db_url) -> None:
    queue(db_url, 3)
    settings = mail_settings(tmp_path, db_url)
    settings.home.mkdir(parents=True)
    settings.mail_dir.write_text("a file where the directory should be")

    with pytest.raises(UserError, match="cannot create the mail directory"):
        run(settings)
    assert states(db_url) == {"queued": 3}


# -- pure logic ----------------------------------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize(
    ("url", "host", "port", "tls", "starttls", "user"),
    [
        ("smtp://127.0.0.1:1025", "127.0.0.1", 1025, False, False, None),
        ("smtp://mail.example.com", "mail.example.com", 25, False, False, None),
        ("smtps://u:pw-123@mail.example.com", "mail.example.com", 465, True, False, "u"),
        ("smtp://a%40b.c:x%3Ay@h:587?starttls=true", "h", 587, False, True, "a@b.c"),
    ],
)
def test_smtp_url_forms(url, host, port, tls, starttls, user) -> None:
    config = SmtpConfig.parse(url)
    assert (config.host, config.port, config.implicit_tls, config.starttls, config.username) == (
        host, port, tls, starttls, user,
    )
    if config.password:
        assert config.password.get_secret_value() not in config.redacted() + repr(config)


@pytest.mark.unit
@pytest.mark.parametrize(
    "url", ["http://h", "smtp://", "smtp://h?tls=1", "smtps://h?starttls=true", "smtp://h?starttls=maybe", "smtp://h:x"]
)
def test_bad_smtp_urls_are_user_errors(url) -> None:
    with pytest.raises(UserError):
        SmtpConfig.parse(url)


@pytest.mark.unit
def test_eml_names_are_safe_and_distinct() -> None:
    assert eml_name("<ORD-1.scheduled@orderstream>") == "ORD-1.scheduled@orderstream.eml"
    hostile = ["<../../etc/passwd>", "<a/b@x>", "<a_b@x>", "<.hidden@x>", "<a%2Fb@x>", "<" + "x" * 400 + "@y>"]
    names = [eml_name(m) for m in hostile]
    assert len(set(names)) == len(names)
    assert all("/" not in n and not n.startswith(".") and len(n) < 255 for n in names)


@pytest.mark.unit
def test_default_backoff_is_exponential_and_bounded() -> None:
    assert all(b == 2 * a for a, b in zip(DEFAULT_BACKOFF, DEFAULT_BACKOFF[1:]))
    assert sum(DEFAULT_BACKOFF) < 10
