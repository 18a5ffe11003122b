"""The SMS sink: sends an SMS action through the shop's Twilio account, once per ``action_id`` as far as Twilio allows.

The official ``twilio`` SDK on its asyncio transport
(:class:`~streamapp.connections.twilio_account.ReroutedHttpClient`),
so the worker's event loop is never blocked on Twilio.

The ``deliveries`` row of the action is the record and its row lock the mutex, exactly as in
the email sink (:mod:`streamapp.sinks.email`):

1. One transaction inserts the row (``pending``) if it is missing and locks it with
   ``SELECT ... FOR UPDATE``; a concurrent delivery of the same ``action_id`` waits on it.
2. ``sent``, ``failed`` or ``opted_out``: ``"duplicate"``; Twilio is not contacted.
3. ``pending``, still holding the lock:

   * the recipient opted out of this shop's SMS earlier (``sms_opt_outs``): ``opted_out``,
     outcome ``"failed"``, nothing is sent;
   * the shop has no Twilio connection (it disconnected after the rule fired): ``failed``
     with ``twilio not connected``;
   * otherwise the sink creates the Message, retrying transient failures (no answer,
     timeouts, HTTP 429 and 5xx) up to ``max_attempts`` times with the email sink's backoff.
     Twilio error 21610 (the recipient answered STOP) records the opt-out and marks the row
     ``opted_out``; any other 4xx is ``failed`` with Twilio's status, code and message.

Credentials that cannot be unsealed (STREAMAPP_SECRET_KEY missing, malformed or changed) are
a problem of the worker's configuration, not of the action: the sink raises RetryableError,
so the action waits for the fix instead of being lost.

The window that remains is the email sink's: Twilio accepted the Message but the commit
saying ``sent`` did not happen; the redelivery sends a second SMS. The Messages API takes no
idempotency key, so no design closes it from this side.

Holding the lock costs what it costs in the email sink: a pooled connection and an open
transaction for at most about ``max_attempts * timeout`` plus the backoff. ``attempts`` and
``last_error`` become visible when the transaction commits, also when the attempts are
exhausted: the sink commits the ``pending`` row, then raises RetryableError.
"""

from __future__ import annotations

import asyncio
import logging
from typing import ClassVar

import asyncpg
from twilio.base.exceptions import TwilioRestException

from schemas.actions import Action, SmsEffect
from streamapp.connections.twilio_account import (
    NETWORK_ERRORS,
    ReroutedHttpClient,
    TwilioCredentials,
    describe_error,
    is_transient,
    load_credentials,
    rest_client,
)
from streamapp.errors import ConfigurationError, RetryableError
from streamapp.settings import Settings
from streamapp.sinks.base import Outcome, Sink, effect_of
from streamapp.sinks.email import Sleep, backoff
from streamapp.timeouts import BACKSTOP_SECONDS, awake_for

logger = logging.getLogger(__name__)

#: Twilio's "Attempt to send to unsubscribed recipient": the customer answered STOP.
OPTED_OUT = 21610

_CLAIM = """
INSERT INTO deliveries (action_id, channel, shop_id, customer_id, recipient)
VALUES ($1, 'sms', $2, $3, $4)
ON CONFLICT (action_id) DO NOTHING
"""
_LOCK = "SELECT status FROM deliveries WHERE action_id = $1 FOR UPDATE"
_OPT_OUT_OF = "SELECT action_id, error FROM sms_opt_outs WHERE shop_id = $1 AND phone = $2"
_RECORD_OPT_OUT = """
INSERT INTO sms_opt_outs (shop_id, phone, action_id, error) VALUES ($1, $2, $3, $4)
ON CONFLICT (shop_id, phone) DO NOTHING
"""
# clock_timestamp(), not now(): now() is the start of the transaction, which spans the retries.
_SENT = """
UPDATE deliveries SET status = 'sent', attempts = attempts + 1, provider_message_id = $2,
    last_error = NULL, updated_at = clock_timestamp()
WHERE action_id = $1
"""
_ERROR = """
UPDATE deliveries SET status = $2, attempts = attempts + $3, last_error = $4, updated_at = clock_timestamp()
WHERE action_id = $1
"""


class SmsSink(Sink):
    """Sends rendered SMS through each shop's Twilio account, idempotent on action_id through ``deliveries``.

    ``sleep`` waits between attempts (inject a recorder in tests); ``timeout`` bounds each
    request to Twilio, in seconds. Call :meth:`close` when done: the sink keeps one HTTP
    connection pool for all shops (each request carries its shop's credentials).
    """

    channel: ClassVar[str] = "sms"

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
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self._pool = pool
        self._settings = settings
        self._sleep = sleep
        self._max_attempts = max_attempts
        self._timeout = timeout
        self._http: ReroutedHttpClient | None = None  # opened on first use: it needs a running loop

    async def close(self) -> None:
        """Close the HTTP connection pool; a later delivery opens a new one."""
        http, self._http = self._http, None
        if http is not None:
            await http.close()

    async def deliver(self, action: Action) -> Outcome:
        effect = effect_of(action, SmsEffect)
        action_id = action.action_id
        exhausted: str | None = None
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(_CLAIM, action_id, action.shop_id, action.customer_id, effect.to)
            status = await conn.fetchval(_LOCK, action_id)
            if status != "pending":
                logger.info("sms %s already %s", action_id, status)
                return "duplicate"
            opt_out = await conn.fetchrow(_OPT_OUT_OF, action.shop_id, effect.to)
            if opt_out is not None:
                error = (
                    f"recipient opted out of shop {action.shop_id}'s SMS (recorded by action {opt_out['action_id']})"
                )
                await conn.execute(_ERROR, action_id, "opted_out", 0, error)
                logger.info("sms %s not sent: recipient opted out of shop %s", action_id, action.shop_id)
                return "failed"
            creds = await self._credentials(conn, action)
            if creds is None:
                await conn.execute(_ERROR, action_id, "failed", 0, "twilio not connected")
                logger.warning("sms %s failed: shop %s has no Twilio connection", action_id, action.shop_id)
                return "failed"
            for attempt in range(1, self._max_attempts + 1):
                try:
                    sid = await self._send(creds, effect)
                except TwilioRestException as exc:
                    error = describe_error(exc)
                    if exc.code == OPTED_OUT:
                        await conn.execute(_RECORD_OPT_OUT, action.shop_id, effect.to, action_id, error)
                        await conn.execute(_ERROR, action_id, "opted_out", 1, error)
                        logger.info("sms %s: recipient opted out of shop %s (%s)", action_id, action.shop_id, error)
                        return "failed"
                    if not is_transient(exc):
                        await conn.execute(_ERROR, action_id, "failed", 1, error)
                        logger.warning("sms %s failed permanently: %s", action_id, error)
                        return "failed"
                except NETWORK_ERRORS as exc:
                    error = f"{type(exc).__name__}: {exc}"
                else:
                    await conn.execute(_SENT, action_id, sid)
                    logger.info("sms %s sent on attempt %d as %s", action_id, attempt, sid)
                    return "applied"
                await conn.execute(_ERROR, action_id, "pending", 1, error)
                logger.info("sms %s attempt %d failed: %s", action_id, attempt, error)
                if attempt == self._max_attempts:
                    exhausted = error
                    break  # commit the counters, then raise outside the transaction
                await self._sleep(backoff(attempt))
        raise RetryableError(f"sms {action_id} not sent after {self._max_attempts} attempts: {exhausted}")

    async def _credentials(self, conn: asyncpg.Connection, action: Action) -> TwilioCredentials | None:
        """The shop's connection; RetryableError when this worker's key cannot open it (fix the key, not the action)."""
        try:
            return await load_credentials(conn, self._settings, action.shop_id)
        except ConfigurationError as exc:
            raise RetryableError(f"sms {action.action_id} waits: {exc}") from None

    async def _send(self, creds: TwilioCredentials, effect: SmsEffect) -> str:
        """Create the Message; its SID. TwilioRestException or a network error when Twilio did not accept it."""
        if self._http is None:
            self._http = ReroutedHttpClient(self._settings.twilio_api_url, timeout=BACKSTOP_SECONDS)
        sender = {"messaging_service_sid": creds.sender} if creds.uses_messaging_service else {"from_": creds.sender}
        # awake_for, not the HTTP client's timeout: an answer that came while the worker was frozen
        # is read, not mistaken for silence (which would text the customer again).
        create = rest_client(creds, self._http).messages.create_async(to=effect.to, body=effect.text, **sender)
        message = await awake_for(self._timeout, create)
        return str(message.sid)
