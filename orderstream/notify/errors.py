"""How a delivery attempt can fail, and what the sender does about each kind."""

from __future__ import annotations

from typing import TYPE_CHECKING

from orderstream.errors import UserError

if TYPE_CHECKING:
    from orderstream.notify.sender import NotifyReport


class DeliveryError(Exception):
    """One attempt to deliver one message failed; `reason` is safe to store and log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Permanent(DeliveryError):
    """This message will never be accepted (e.g. 550 on RCPT): its row becomes `failed`."""


class Deferred(DeliveryError):
    """This message was refused for now (4xx) on a live connection: retry it, then defer it."""


class Unavailable(DeliveryError):
    """The server is unreachable or dropped us: reconnect and retry, then stop the run."""


class NotifyIncomplete(UserError):
    """The run stopped early; unsent notifications stay queued for the next run."""

    def __init__(self, message: str, report: NotifyReport) -> None:
        super().__init__(message)
        self.report = report


class NotifyBusy(UserError):
    """Another notify run holds the lock for this database."""
