"""The email sink: sends an email action through SMTP, once per ``action_id`` as far as SMTP allows.

aiosmtplib because it is the maintained asyncio SMTP client (STARTTLS, AUTH, SMTPUTF8).

The record, the row lock, the attempts and the backoff are :mod:`streamapp.sinks.deliveries`'s:
``sent`` or ``failed`` is ``"duplicate"`` and the SMTP server is not contacted; a ``pending``
row is sent holding its lock, transient failures (connection refused, timeout, disconnect,
SMTP 4xx) retried up to ``max_attempts`` times, a 5xx refusal of the recipient or content
``failed``. A message whose header or address cannot be encoded is ``failed`` before SMTP
is asked. A cancelled attempt is recorded as :data:`~streamapp.sinks.deliveries.INTERRUPTED`
and committed (the server may have seen it); a ``sent`` row keeps the ``last_error`` of the
attempts before it.

The one remaining window: the SMTP server accepted the message, but the commit saying
``sent`` did not happen (crash, lost database connection). The transaction rolls back, the
row is still ``pending`` and the redelivery sends a second copy. No design can close this
window with a server that is not part of the transaction; the copy carries the same
``Message-ID: <action_id@streamapp>`` so that receivers and providers can drop it.
"""

from __future__ import annotations

import logging
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate
from typing import ClassVar

import aiosmtplib

from schemas.actions import Action, EmailEffect
from streamapp.settings import Settings
from streamapp.sinks.base import Outcome, PreviewContext, effect_of
from streamapp.sinks.deliveries import INTERRUPTED, Delivery, DeliverySink, Verdict
from streamapp.timeouts import BACKSTOP_SECONDS, awake_for

# INTERRUPTED: what a cancelled attempt records (kept importable from here for its readers).
__all__ = [
    "INTERRUPTED",
    "EmailSink",
    "build_message",
    "describe_smtp_error",
    "is_permanent_smtp_error",
    "judge_smtp",
    "send_message",
]

logger = logging.getLogger(__name__)


def describe_smtp_error(exc: Exception) -> str:
    """The SMTP code and message of a failure, for ``last_error`` (never a credential)."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        return "; ".join(f"{refused.code} {refused.message}" for refused in exc.recipients)
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return f"{exc.code} {exc.message}"
    return f"{type(exc).__name__}: {exc}"


def is_permanent_smtp_error(exc: Exception) -> bool:
    """Whether retrying cannot help this message.

    Only a 5xx refusal of this message's recipient or content is permanent. A refused
    login, sender or greeting is a problem of the server or of our settings: marking the
    email failed would lose it, while a retry after the fix still sends it.
    """
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        return all(refused.code >= 500 for refused in exc.recipients)
    if isinstance(exc, aiosmtplib.SMTPDataError):
        return exc.code >= 500
    # A non-ASCII address on a server without SMTPUTF8 will never go through that server.
    return isinstance(exc, aiosmtplib.SMTPNotSupported) and "SMTPUTF8" in exc.message


class EmailSink(DeliverySink[EmailEffect]):
    """Sends rendered emails via SMTP, idempotent on action_id through ``deliveries``.

    ``sleep`` waits between attempts (inject a recorder in tests); ``timeout`` bounds each
    SMTP network operation, in seconds.
    """

    channel: ClassVar[str] = "email"
    effect_type = EmailEffect
    label: ClassVar[str] = "email"
    keeps_interrupted_attempts: ClassVar[bool] = True
    sent_clears_error: ClassVar[bool] = False

    async def perform(self, delivery: Delivery, action: Action, effect: EmailEffect) -> Outcome:
        try:
            message = self.build_message(action, effect)
        except ValueError as exc:  # a header or address that cannot be sent: bad input is data
            return await delivery.fail(f"invalid message: {exc}")
        reply = await delivery.attempt(lambda: self._send(message, effect.to), judge_smtp)
        return await delivery.sent(reply)

    @classmethod
    def preview(cls, action: Action, context: PreviewContext) -> str:
        """The message's headers, then each MIME part."""
        message = build_message(action, effect_of(action, EmailEffect), sender=context.email_sender)
        lines = [f"{name}: {message[name]}" for name in ("From", "To", "Subject", "Message-ID")]
        for part in message.iter_parts():
            lines += ["", f"----- {part.get_content_type()} -----", str(part.get_content()).rstrip("\n")]
        return "\n".join(lines) + "\n"

    def build_message(self, action: Action, effect: EmailEffect) -> EmailMessage:
        """The MIME message of ``effect``; a ValueError if a header or address cannot be encoded."""
        return build_message(action, effect, sender=self.settings.smtp_from)

    async def _send(self, message: EmailMessage, recipient: str) -> str:
        return await send_message(self.settings, message, recipient, timeout=self.timeout)


async def judge_smtp(exc: Exception, prefix: str = "") -> Verdict | None:
    """An SMTP failure: final when retrying cannot help (:func:`is_permanent_smtp_error`);
    None for anything but SMTP's and the network's errors."""
    if not isinstance(exc, aiosmtplib.SMTPException | OSError):
        return None
    return Verdict(prefix + describe_smtp_error(exc), final=is_permanent_smtp_error(exc))


async def send_message(settings: Settings, message: EmailMessage, recipient: str, *, timeout: float) -> str:
    """Send ``message`` to its one recipient through the configured SMTP server; the server's reply
    to DATA (it often names its queue id). Raises what aiosmtplib raises (see :func:`describe_smtp_error`)."""
    password = settings.smtp_password.get_secret_value() if settings.smtp_password is not None else None
    # One recipient: a refusal raises SMTPRecipientsRefused, so there are no partial refusals.
    # awake_for, not aiosmtplib's timeout: a reply that came while the worker was frozen is read,
    # not mistaken for silence (which would send the email again).
    _refusals, reply = await awake_for(
        timeout,
        aiosmtplib.send(
            message,
            sender=settings.smtp_from,
            recipients=[recipient],
            hostname=settings.smtp_host,
            port=settings.smtp_port,
            username=settings.smtp_username,
            password=password,
            timeout=BACKSTOP_SECONDS,
        ),
    )
    return reply


def build_message(action: Action, effect: EmailEffect, *, sender: str) -> EmailMessage:
    """The MIME message the sink sends for ``effect`` (``streamapp preview`` shows the same).

    A ValueError if a header or address cannot be encoded.
    """
    message = EmailMessage()
    message["From"] = sender
    message["To"] = Address(display_name=effect.to_name, addr_spec=effect.to)
    message["Subject"] = effect.subject
    message["Date"] = formatdate(usegmt=True)
    # Deterministic, so a copy sent again after a crash can be recognised by the receiver.
    message["Message-ID"] = f"<{action.action_id}@streamapp>"
    message["X-Streamapp-Action-Id"] = action.action_id
    message.set_content(effect.text_body)
    if effect.html_body is not None:
        message.add_alternative(effect.html_body, subtype="html")
    return message
