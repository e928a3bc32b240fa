"""Send every queued notification once, surviving crashes without losing or repeating mail.

The protocol of one run (under `run_lock`: concurrent runs queue up, so a `sending` row
found by a run can only have been left by a dead one):

1. Claim a chunk: read the next rows in `queued` or `sending` (the latter left by a
   crashed run), set them `sending` with attempts+1 in one UPDATE, commit.
2. Deliver each message over one transport connection (SMTP: one connection per run).
3. Record outcomes in bulk and commit: accepted -> `sent` + sent_at; permanently refused
   -> `failed` + last_error; refused-for-now after the retries -> back to `queued` +
   last_error. The SMTP transport commits after every accepted message, the file
   transport after every 200 (its directory fsynced first).
4. If the server stays unreachable through the retries, record what is done, put the
   rest of the chunk back to `queued` and raise NotifyIncomplete.

`attempts` counts the runs that tried a row (a row handed back untried is not counted).

Crash guarantee (the process may die at any instant; a DB commit is the point of no return):

* Never lost: a row leaves `queued`/`sending` only in the commit that follows its
  delivery (`sent`) or its permanent refusal (`failed`). Dying earlier leaves it
  `sending`, and the next run delivers it. Every notification is delivered at least once.
* File transport, exactly once: the file name is a function of the Message-ID and the
  file appears complete or not at all (fsync, then rename). A `sending` row whose file
  exists is recorded `sent` without writing again (counted `skipped`).
* SMTP: a row recorded `sent` is never sent again, and at most ONE message per crash can
  reach the server twice: the one in flight, if the process dies after the server has
  taken responsibility for it (end of DATA) and before the UPDATE+COMMIT recording it
  returns, a window of one database round trip. The same holds when the connection
  drops after the final "." of DATA but before the 250 reply: we cannot know whether it
  was accepted, so we send it again. A resend is the same message: same Message-ID, Date
  and body, so receivers that de-duplicate on Message-ID show it once.
* SQLite runs with synchronous=NORMAL: a process crash loses no commit, an OS crash or
  power loss may lose the latest ones; those rows fall back to `sending`/`queued` and
  are repaired the same way (exactly for files, same-Message-ID resend for SMTP).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from types import TracebackType
from typing import Protocol, Self

from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from orderstream import metrics
from orderstream.db.locks import run_lock
from orderstream.db.models import Notification, utcnow
from orderstream.errors import UserError
from orderstream.notify.errors import Deferred, NotifyBusy, NotifyIncomplete, Permanent, Unavailable
from orderstream.notify.files import FileTransport
from orderstream.notify.message import Outgoing, build_message
from orderstream.notify.smtp import SmtpConfig, SmtpTransport
from orderstream.settings import Settings

# Exponential, short: a transient failure that outlasts ~8s is an outage, not a hiccup.
DEFAULT_BACKOFF: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)
CLAIM_CHUNK = 500
PENDING = ("queued", "sending")


class Transport(Protocol):
    commit_every: int  # accepted messages per DB commit; 1 unless sending twice is harmless
    sender: str

    def describe(self) -> str: ...
    def __enter__(self) -> Self: ...
    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...
    def send(self, message: EmailMessage) -> bool:
        """True once delivered now, False if it had been delivered before; raises DeliveryError."""
        ...
    def sync(self) -> None:
        """Make what was delivered so far durable; called before recording it."""
        ...


def make_transport(settings: Settings) -> Transport:
    if settings.smtp_url:
        return SmtpTransport(SmtpConfig.parse(settings.smtp_url))
    return FileTransport(settings.mail_dir)


@dataclass
class NotifyReport:
    sent: int = 0  # delivered in this run (accepted by the server / .eml written)
    failed: int = 0  # refused for good; the row is `failed` with the reason
    retried: int = 0  # messages that needed at least one retry after a transient failure
    skipped: int = 0  # .eml already in place from an interrupted run: recorded, not rewritten
    deferred: int = 0  # still refused-for-now after the retries: back to `queued`
    recovered: int = 0  # rows an interrupted run had left in `sending`
    failures: list[tuple[str, str]] = field(default_factory=list)  # (message_id, reason)


# -- data functions: take a session, never commit ---------------------------------------


def claim(session: Session, after_id: int, n: int) -> tuple[list[Outgoing], int]:
    """Mark the next n pending rows `sending`; returns them and how many were left by a crash."""
    rows = session.execute(
        select(
            Notification.id, Notification.message_id, Notification.recipient, Notification.subject,
            Notification.body, Notification.created_at, Notification.state,
        )
        .where(Notification.state.in_(PENDING), Notification.id > after_id)
        .order_by(Notification.id)
        .limit(n)
    ).all()
    if rows:
        session.execute(
            update(Notification)
            .where(Notification.id.in_([r.id for r in rows]), Notification.state.in_(PENDING))
            .values(state="sending", attempts=Notification.attempts + 1)
            .execution_options(synchronize_session=False)
        )
    notes = [Outgoing(r.id, r.message_id, r.recipient, r.subject, r.body, r.created_at) for r in rows]
    return notes, sum(r.state == "sending" for r in rows)


def record_sent(session: Session, ids: Sequence[int]) -> None:
    if ids:
        session.execute(
            update(Notification)
            .where(Notification.id.in_(ids), Notification.state == "sending")
            .values(state="sent", sent_at=utcnow(), last_error=None)
            .execution_options(synchronize_session=False)
        )


def record_outcomes(session: Session, state: str, outcomes: Sequence[tuple[int, str]]) -> None:
    """`failed` or back to `queued`, each with its own reason: one executemany by primary key."""
    if outcomes:
        session.execute(
            update(Notification).execution_options(synchronize_session=False),
            [{"id": i, "state": state, "last_error": reason[:2000]} for i, reason in outcomes],
        )


def release(session: Session, ids: Sequence[int]) -> None:
    """Give back claimed rows that were never attempted (their claim did not count)."""
    if ids:
        session.execute(
            update(Notification)
            .where(Notification.id.in_(ids), Notification.state == "sending")
            .values(state="queued", attempts=Notification.attempts - 1)
            .execution_options(synchronize_session=False)
        )


# -- the run ------------------------------------------------------------------------------


@dataclass
class _Outcomes:
    sent: list[int] = field(default_factory=list)
    failed: list[tuple[int, str]] = field(default_factory=list)
    deferred: list[tuple[int, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.sent) + len(self.failed) + len(self.deferred)


def _record(sessions: sessionmaker[Session], transport: Transport, done: _Outcomes) -> None:
    if not done:
        return
    transport.sync()
    with sessions.begin() as session:
        record_sent(session, done.sent)
        record_outcomes(session, "failed", done.failed)
        record_outcomes(session, "queued", done.deferred)
    done.sent.clear()
    done.failed.clear()
    done.deferred.clear()


def _hand_back(sessions: sessionmaker[Session], failed: tuple[int, str] | None, untried: list[Outgoing]) -> int:
    """Return rows of a stopped run to `queued`; returns how many are queued now."""
    with sessions.begin() as session:
        if failed:
            record_outcomes(session, "queued", [failed])
        release(session, [n.id for n in untried])
        return session.scalar(select(func.count()).select_from(Notification).where(Notification.state == "queued")) or 0


def _send_with_retries(
    transport: Transport, message: EmailMessage, backoff: Sequence[float],
    sleep: Callable[[float], None], report: NotifyReport,
) -> bool:
    for attempt in range(len(backoff) + 1):
        try:
            return transport.send(message)
        except (Deferred, Unavailable):
            if attempt == len(backoff):
                raise
            if attempt == 0:
                report.retried += 1
            sleep(backoff[attempt])
    raise AssertionError("unreachable")


def _deliver(
    notes: list[Outgoing], transport: Transport, sessions: sessionmaker[Session],
    report: NotifyReport, backoff: Sequence[float], sleep: Callable[[float], None],
) -> None:
    done = _Outcomes()
    for i, note in enumerate(notes):
        try:
            message = build_message(note, transport.sender)
            delivered = _send_with_retries(transport, message, backoff, sleep, report)
        except (Permanent, ValueError) as exc:  # ValueError: e.g. a malformed address
            reason = exc.reason if isinstance(exc, Permanent) else f"invalid message: {exc}"
            done.failed.append((note.id, reason))
            report.failed += 1
            metrics.notifications.labels("failed").inc()
            report.failures.append((note.message_id, reason))
        except Deferred as exc:
            done.deferred.append((note.id, exc.reason))
            report.deferred += 1
            metrics.notifications.labels("deferred").inc()
        except Unavailable as exc:
            # An outage: keep what is done, this row back to `queued`, the rest released.
            _record(sessions, transport, done)
            report.deferred += 1
            metrics.notifications.labels("deferred").inc()
            queued = _hand_back(sessions, failed=(note.id, exc.reason), untried=notes[i + 1:])
            raise NotifyIncomplete(
                f"{transport.describe()} is unavailable ({exc.reason}); sent {report.sent} this run, "
                f"{queued} notifications stay queued for the next run",
                report,
            ) from None
        except UserError:  # a configuration problem: nothing can be sent until it is fixed
            _record(sessions, transport, done)
            _hand_back(sessions, failed=None, untried=notes[i:])
            raise
        else:
            done.sent.append(note.id)
            if delivered:
                report.sent += 1
                metrics.notifications.labels("sent").inc()
            else:
                report.skipped += 1
        if len(done) >= transport.commit_every:
            _record(sessions, transport, done)
    _record(sessions, transport, done)


def send_queued(
    sessions: sessionmaker[Session],
    settings: Settings,
    *,
    limit: int | None = None,
    transport: Transport | None = None,
    backoff: Sequence[float] = DEFAULT_BACKOFF,
    sleep: Callable[[float], None] = time.sleep,
    claim_chunk: int = CLAIM_CHUNK,
    lock_timeout_s: float = 300.0,
) -> NotifyReport:
    """Deliver every `queued` notification (at most `limit`) once; see the module docstring."""
    report = NotifyReport()
    transport = transport if transport is not None else make_transport(settings)
    with sessions() as session:
        bind = session.get_bind()
    engine = bind if isinstance(bind, Engine) else bind.engine
    after_id = 0
    busy = NotifyBusy("another `orderstream notify` run is still sending for this database; try again later")
    with run_lock(engine, "notify", lock_timeout_s, busy), transport:
        while limit is None or limit > 0:
            with sessions.begin() as session:
                notes, recovered = claim(session, after_id, claim_chunk if limit is None else min(claim_chunk, limit))
            if not notes:
                break
            report.recovered += recovered
            after_id = notes[-1].id
            limit = None if limit is None else limit - len(notes)
            _deliver(notes, transport, sessions, report, backoff, sleep)
    return report
