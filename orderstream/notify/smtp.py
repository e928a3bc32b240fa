"""SMTP transport over the standard library: one connection per run, errors classified.

`SMTP_URL` forms: `smtp://host[:port]` (default 25), `smtps://host[:port]` (implicit TLS,
default 465), optional `user:password@` (percent-encoded), and query options
`starttls=true` (smtp:// only) and `from=<address>` (the envelope and From: sender).
The password lives in a SecretStr and only `SmtpConfig.redacted()` is ever logged.
"""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import parseaddr
from types import TracebackType
from typing import Self
from urllib.parse import parse_qs, unquote, urlsplit

from pydantic import SecretStr

from orderstream.errors import UserError
from orderstream.notify.errors import Deferred, DeliveryError, Permanent, Unavailable
from orderstream.notify.message import DEFAULT_SENDER

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    implicit_tls: bool = False
    starttls: bool = False
    username: str | None = None
    password: SecretStr | None = None
    sender: str = DEFAULT_SENDER
    timeout_s: float = 30.0

    @classmethod
    def parse(cls, url: str) -> SmtpConfig:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise UserError(f"SMTP_URL is not a valid URL: {exc}") from None
        if parts.scheme not in ("smtp", "smtps"):
            raise UserError("SMTP_URL must start with smtp:// or smtps:// (e.g. smtp://127.0.0.1:1025)")
        if not parts.hostname:
            raise UserError("SMTP_URL has no host (e.g. smtp://127.0.0.1:1025)")
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        unknown = set(query) - {"starttls", "from"}
        if unknown:
            raise UserError(f"SMTP_URL has unknown options {sorted(unknown)}; known: starttls, from")
        starttls = query.get("starttls", "false").lower()
        if starttls not in _TRUE | _FALSE:
            raise UserError("SMTP_URL option starttls must be true or false")
        implicit_tls = parts.scheme == "smtps"
        if implicit_tls and starttls in _TRUE:
            raise UserError("SMTP_URL: starttls applies to smtp:// only; smtps:// is already TLS")
        return cls(
            host=parts.hostname,
            port=port or (465 if implicit_tls else 25),
            implicit_tls=implicit_tls,
            starttls=starttls in _TRUE,
            username=unquote(parts.username) if parts.username else None,
            password=SecretStr(unquote(parts.password)) if parts.password is not None else None,
            sender=query.get("from") or DEFAULT_SENDER,
        )

    def redacted(self) -> str:
        user = f"{self.username}:***@" if self.username else ""
        tls = "?starttls=true" if self.starttls else ""
        return f"{'smtps' if self.implicit_tls else 'smtp'}://{user}{self.host}:{self.port}{tls}"


def _by_code(code: int, what: str, text: bytes | str) -> DeliveryError:
    reply = text.decode(errors="replace") if isinstance(text, bytes) else text
    reason = f"{what}: {code} {reply}".strip()
    if code == 421 or code < 400:  # 421: the server is closing the channel
        return Unavailable(reason)
    return Deferred(reason) if code < 500 else Permanent(reason)


def classify(exc: Exception) -> DeliveryError:
    """Map an smtplib/socket error of one send to what the sender should do about it."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        code, text = next(iter(exc.recipients.values()))
        return _by_code(code, "recipient refused", text)
    if isinstance(exc, smtplib.SMTPSenderRefused):
        if exc.smtp_code >= 500:
            # Refused for every message alike: a configuration problem, not this message's.
            raise UserError(
                f"the SMTP server refused the sender {exc.sender!r}: {exc.smtp_code} "
                f"{exc.smtp_error.decode(errors='replace')}; set ?from= in SMTP_URL"
            ) from None
        return _by_code(exc.smtp_code, "sender refused", exc.smtp_error)
    if isinstance(exc, smtplib.SMTPDataError):
        return _by_code(exc.smtp_code, "message refused", exc.smtp_error)
    if isinstance(exc, smtplib.SMTPResponseException):
        return _by_code(exc.smtp_code, "server error", exc.smtp_error)
    if isinstance(exc, (smtplib.SMTPServerDisconnected, OSError)):
        return Unavailable(f"connection lost: {exc.__class__.__name__}: {exc}")
    raise exc


class SmtpTransport:
    """Sends over one connection per run, opened on first use and re-opened after a drop."""

    # Not idempotent: record each accepted message at once so a crash can re-send at most one.
    commit_every = 1

    def __init__(self, config: SmtpConfig) -> None:
        self.config = config
        self.sender = config.sender
        self._smtp: smtplib.SMTP | None = None  # no network I/O until the first send

    def describe(self) -> str:
        return self.config.redacted()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._smtp is None:
            return
        smtp, self._smtp = self._smtp, None
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            smtp.close()

    def _connect(self) -> smtplib.SMTP:
        c = self.config
        context = ssl.create_default_context()
        try:
            if c.implicit_tls:
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(c.host, c.port, timeout=c.timeout_s, context=context)
            else:
                smtp = smtplib.SMTP(c.host, c.port, timeout=c.timeout_s)
            try:
                smtp.ehlo()
                if c.starttls:
                    smtp.starttls(context=context)
                    smtp.ehlo()
                if c.username:
                    smtp.login(c.username, c.password.get_secret_value() if c.password else "")
            except BaseException:
                smtp.close()
                raise
        except smtplib.SMTPAuthenticationError as exc:
            raise UserError(f"SMTP login as {c.username!r} failed at {c.redacted()}: {exc.smtp_code}") from None
        except smtplib.SMTPNotSupportedError as exc:
            raise UserError(f"SMTP server at {c.redacted()} does not support {exc}") from None
        except ssl.SSLCertVerificationError as exc:
            raise UserError(f"TLS certificate of {c.redacted()} not trusted: {exc.verify_message}") from None
        except (smtplib.SMTPException, OSError) as exc:
            raise Unavailable(f"cannot connect to {c.redacted()}: {exc.__class__.__name__}: {exc}") from None
        return smtp

    def send(self, message: EmailMessage) -> bool:
        """Returns once the server accepted the message (250 after DATA)."""
        if self._smtp is None:
            self._smtp = self._connect()
        recipient = str(message["To"].addresses[0].addr_spec)
        try:
            self._smtp.send_message(message, from_addr=parseaddr(self.sender)[1], to_addrs=[recipient])
        except (smtplib.SMTPException, OSError) as exc:
            error = classify(exc)
            if isinstance(error, Unavailable):
                self.close()  # the next attempt starts on a fresh connection
            raise error from None
        return True

    def sync(self) -> None:
        return None
