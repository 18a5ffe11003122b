"""A local SMTP server that keeps every message as an ``.eml`` file (Mailpit's job, without Docker)."""

from __future__ import annotations

import logging
import re
import threading
from email import message_from_bytes, policy
from pathlib import Path
from types import TracebackType
from typing import Any

from aiosmtpd.controller import Controller

from streamapp.embedded.process import free_port

logger = logging.getLogger(__name__)


class _Keeper:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.count = 0
        self._lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.content, policy=policy.default)
        with self._lock:
            self.count += 1
            number = self.count
        slug = re.sub(r"[^A-Za-z0-9]+", "-", str(message.get("Subject", "")))[:60].strip("-")
        path = self.folder / f"{number:04d}-{slug or 'no-subject'}.eml"
        path.write_bytes(envelope.content)
        logger.info("mail to %s: %s (%s)", ", ".join(envelope.rcpt_tos), message.get("Subject"), path.name)
        return f"250 2.0.0 Ok: kept as {path.name}"


class EmbeddedMailbox:
    """SMTP on 127.0.0.1 and a free port; every accepted message lands in ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self._keeper = _Keeper(folder)
        self._controller = Controller(self._keeper, hostname="127.0.0.1", port=self.port)

    @property
    def received(self) -> int:
        return self._keeper.count

    def __enter__(self) -> EmbeddedMailbox:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._controller.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._controller.stop()
