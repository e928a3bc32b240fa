"""The embedded default transport: one `.eml` file per message under the mail directory.

A file is written to a temporary name, fsynced and renamed into place, so it either
exists complete or not at all. Its name is derived from the Message-ID alone, so
"is this message delivered?" is simply "does its file exist?": that is what makes this
transport exactly-once across crashes.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from email import policy
from email.message import EmailMessage
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import quote

from orderstream.errors import UserError
from orderstream.notify.errors import Unavailable
from orderstream.notify.message import DEFAULT_SENDER

_MAX_STEM = 180  # stays well under the usual 255-byte name limit


def eml_name(message_id: str) -> str:
    """A filesystem-safe, injective name for a Message-ID: `<ORD-1.sent@x>` -> `ORD-1.sent@x.eml`."""
    stem = quote(message_id.strip().removeprefix("<").removesuffix(">"), safe="@.-_+=")
    if stem.startswith("."):  # never a hidden file, nor `.` / `..`
        stem = "%2E" + stem[1:]
    if len(stem) > _MAX_STEM:
        digest = hashlib.sha256(stem.encode()).hexdigest()[:16]
        stem = f"{stem[:_MAX_STEM - 17]}~{digest}"
    return stem + ".eml"


class FileTransport:
    """Writes messages as `.eml` files; idempotent, so results may be recorded in groups."""

    # A crash before the group is recorded is repaired exactly by the existence check.
    commit_every = 200

    def __init__(self, mail_dir: Path, sender: str = DEFAULT_SENDER) -> None:
        self.mail_dir = mail_dir
        self.sender = sender

    def describe(self) -> str:
        return f".eml files in {self.mail_dir}"

    def __enter__(self) -> Self:
        try:
            self.mail_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create the mail directory {self.mail_dir}: {exc.strerror or exc}") from None
        # Temp files of a crashed run were never renamed, so they were never delivered.
        for stale in self.mail_dir.glob(".*.eml.tmp"):
            stale.unlink(missing_ok=True)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    def path_for(self, message_id: str) -> Path:
        return self.mail_dir / eml_name(message_id)

    def send(self, message: EmailMessage) -> bool:
        """Write the message; False if its file was already in place (delivered earlier)."""
        final = self.path_for(str(message["Message-ID"]))
        if final.exists():
            return False
        try:
            fd, tmp = tempfile.mkstemp(dir=self.mail_dir, prefix=".", suffix=".eml.tmp")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(message.as_bytes(policy=policy.SMTP))
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, final)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:  # disk full, permissions: nothing was delivered
            raise Unavailable(f"cannot write {final.name}: {exc.strerror or exc}") from exc
        return True

    def sync(self) -> None:
        """Make the renames durable before the rows are recorded `sent`."""
        fd = os.open(self.mail_dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
