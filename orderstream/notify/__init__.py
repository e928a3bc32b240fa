"""Customer notifications: the sending side of the `notifications` table (see sender.py)."""

from orderstream.notify.errors import Deferred, DeliveryError, NotifyBusy, NotifyIncomplete, Permanent, Unavailable
from orderstream.notify.files import FileTransport, eml_name
from orderstream.notify.sender import DEFAULT_BACKOFF, NotifyReport, Transport, make_transport, send_queued
from orderstream.notify.smtp import SmtpConfig, SmtpTransport

__all__ = [
    "DEFAULT_BACKOFF", "Deferred", "DeliveryError", "FileTransport", "NotifyBusy", "NotifyIncomplete",
    "NotifyReport", "Permanent", "SmtpConfig", "SmtpTransport", "Transport", "Unavailable", "eml_name",
    "make_transport", "send_queued",
]
