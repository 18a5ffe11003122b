"""The email sink: sends an email action through SMTP, once per ``action_id`` as far as SMTP allows.

aiosmtplib because it is the maintained asyncio SMTP client (STARTTLS, AUTH, SMTPUTF8).

The ``deliveries`` row of the action is the record, and its row lock the mutex:

1. One transaction inserts the row (``pending``) if it is missing and locks it with
   ``SELECT ... FOR UPDATE``. A concurrent delivery of the same ``action_id`` blocks on
   that row (its uncommitted insert or its lock) until the first transaction ends, then
   reads the status it left.
2. ``sent`` or ``failed``: ``"duplicate"``; the SMTP server is not contacted.
3. ``pending``: still holding the lock, the sink sends, retrying transient failures
   (connection refused, timeout, disconnect, SMTP 4xx) up to ``max_attempts`` times
   with exponential backoff, then writes the result and commits.

Guaranteed: two deliveries never send at the same time, and once the row says ``sent``
or ``failed`` nothing is ever sent again for that ``action_id``.

The one remaining window: the SMTP server accepted the message, but the commit saying
``sent`` did not happen (crash, lost database connection). The transaction rolls back, the
row is still ``pending`` and the redelivery sends a second copy. No design can close this
window with a server that is not part of the transaction; the copy carries the same
``Message-ID: <action_id@streamapp>`` so that receivers and providers can drop it.

Costs of holding the lock: a pooled connection, an open transaction and the row lock are
held while talking to SMTP, backoff sleeps included, at most about
``max_attempts * timeout`` plus the backoff; a concurrent duplicate waits that long.
``attempts`` and ``last_error`` are written in the same transaction, so they become visible
when it commits: also when the attempts are exhausted, where the sink commits the
``pending`` row with its ``last_error`` and then raises RetryableError. A crash mid-loop
loses only those counters. A cancelled delivery (a stopping worker hands its action back)
keeps them: an attempt or backoff that is cancelled records :data:`INTERRUPTED` (the attempt
counts: the server may have seen it), commits, and then re-raises the cancellation.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate
from typing import ClassVar

import aiosmtplib
import asyncpg

from schemas.actions import Action, EmailEffect
from streamapp.errors import RetryableError
from streamapp.settings import Settings
from streamapp.sinks.base import Outcome, Sink, effect_of
from streamapp.timeouts import BACKSTOP_SECONDS, awake_for

logger = logging.getLogger(__name__)

#: The backoff: 0.5 s before the second attempt, doubling, never more than 30 s.
FIRST_DELAY = 0.5
MAX_DELAY = 30.0

_CLAIM = """
INSERT INTO deliveries (action_id, channel, shop_id, customer_id, recipient)
VALUES ($1, 'email', $2, $3, $4)
ON CONFLICT (action_id) DO NOTHING
"""
_LOCK = "SELECT status FROM deliveries WHERE action_id = $1 FOR UPDATE"
# clock_timestamp(), not now(): now() is the start of the transaction, which spans the retries.
_SENT = """
UPDATE deliveries SET status = 'sent', attempts = attempts + 1, provider_message_id = $2,
    updated_at = clock_timestamp()
WHERE action_id = $1
"""
_ERROR = """
UPDATE deliveries SET status = $2, attempts = attempts + $3, last_error = $4, updated_at = clock_timestamp()
WHERE action_id = $1
"""

Sleep = Callable[[float], Awaitable[None]]

#: ``last_error`` of an attempt cut short because the worker stopped (see the module docstring).
INTERRUPTED = "interrupted: the worker stopped during this attempt"


def backoff(attempt: int) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
    return min(FIRST_DELAY * 2.0 ** (attempt - 1), MAX_DELAY)


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


class EmailSink(Sink):
    """Sends rendered emails via SMTP, idempotent on action_id through ``deliveries``.

    ``sleep`` waits between attempts (inject a recorder in tests); ``timeout`` bounds each
    SMTP network operation, in seconds.
    """

    channel: ClassVar[str] = "email"

    def __init__(
        self,
        pool: asyncpg.Pool,
        settings: Settings,
        *,
        sleep: Sleep = asyncio.sleep,
        max_attempts: int = 5,
        timeout: float = 30.0,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._pool = pool
        self._settings = settings
        self._sleep = sleep
        self._max_attempts = max_attempts
        self._timeout = timeout

    async def deliver(self, action: Action) -> Outcome:
        effect = effect_of(action, EmailEffect)
        exhausted: str | None = None
        cancelled: asyncio.CancelledError | None = None
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(_CLAIM, action.action_id, action.shop_id, action.customer_id, effect.to)
            status = await conn.fetchval(_LOCK, action.action_id)
            if status != "pending":
                logger.info("email %s already %s", action.action_id, status)
                return "duplicate"
            try:
                message = self.build_message(action, effect)
            except ValueError as exc:  # a header or address that cannot be sent: bad input is data
                await conn.execute(_ERROR, action.action_id, "failed", 0, f"invalid message: {exc}")
                logger.warning("email %s failed: invalid message: %s", action.action_id, exc)
                return "failed"
            for attempt in range(1, self._max_attempts + 1):
                try:
                    reply = await self._send(message, effect.to)
                except asyncio.CancelledError as exc:
                    await conn.execute(_ERROR, action.action_id, "pending", 1, INTERRUPTED)
                    cancelled = exc
                    break  # commit the counters, then re-raise outside the transaction
                except (aiosmtplib.SMTPException, OSError) as exc:
                    error = describe_smtp_error(exc)
                    if is_permanent_smtp_error(exc):
                        await conn.execute(_ERROR, action.action_id, "failed", 1, error)
                        logger.warning("email %s failed permanently: %s", action.action_id, error)
                        return "failed"
                    await conn.execute(_ERROR, action.action_id, "pending", 1, error)
                    logger.info("email %s attempt %d failed: %s", action.action_id, attempt, error)
                    if attempt == self._max_attempts:
                        exhausted = error
                        break  # commit the counters, then raise outside the transaction
                    try:
                        await self._sleep(backoff(attempt))
                    except asyncio.CancelledError as cancel:
                        cancelled = cancel
                        break
                else:
                    await conn.execute(_SENT, action.action_id, reply)
                    logger.info("email %s sent on attempt %d", action.action_id, attempt)
                    return "applied"
        if cancelled is not None:
            logger.info("email %s: delivery cancelled, attempts so far recorded", action.action_id)
            raise cancelled
        raise RetryableError(f"email {action.action_id} not sent after {self._max_attempts} attempts: {exhausted}")

    def build_message(self, action: Action, effect: EmailEffect) -> EmailMessage:
        """The MIME message of ``effect``; a ValueError if a header or address cannot be encoded."""
        return build_message(action, effect, sender=self._settings.smtp_from)

    async def _send(self, message: EmailMessage, recipient: str) -> str:
        return await send_message(self._settings, message, recipient, timeout=self._timeout)


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
