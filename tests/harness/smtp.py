"""A real SMTP server for tests (aiosmtpd), recording what it receives."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller

from streamapp.embedded.process import free_port


class Recorder:
    """An aiosmtpd handler that accepts everything and keeps what it received."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.rcpt_calls = 0

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        self.rcpt_calls += 1
        refusal = self.refuse_rcpt()
        if refusal is not None:
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 OK"

    def refuse_rcpt(self) -> str | None:
        return None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(message_from_bytes(envelope.content, policy=policy.default))
        return f"250 2.0.0 Ok: queued as Q{len(self.messages)}"


@contextmanager
def smtp_server(handler: Recorder) -> Iterator[int]:
    """Run ``handler`` behind a real SMTP server on 127.0.0.1; yields the port."""
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield controller.port
    finally:
        controller.stop()
