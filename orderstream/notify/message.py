"""The message a notification row becomes: the same bytes on every (re)send."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime

DEFAULT_SENDER = "orderstream <notifications@orderstream.local>"


@dataclass(frozen=True)
class Outgoing:
    """The columns of a claimed `notifications` row that the message is built from."""

    id: int
    message_id: str
    recipient: str
    subject: str
    body: str
    created_at: dt.datetime


def build_message(note: Outgoing, sender: str = DEFAULT_SENDER) -> EmailMessage:
    """Raises ValueError for a row that cannot be a valid message (e.g. a newline in a header)."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = note.recipient
    msg["Subject"] = note.subject
    # Message-ID and Date come from the row, not the clock, so a resend after a crash is
    # the same message and receivers can de-duplicate it.
    msg["Message-ID"] = note.message_id if note.message_id.startswith("<") else f"<{note.message_id}>"
    created = note.created_at if note.created_at.tzinfo else note.created_at.replace(tzinfo=dt.UTC)
    msg["Date"] = format_datetime(created)
    msg.set_content(note.body)
    if not msg["To"].addresses or not all(a.username and a.domain for a in msg["To"].addresses):
        raise ValueError(f"not a deliverable address: {note.recipient!r}")
    return msg
