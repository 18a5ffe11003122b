"""The SMS sink: sends an SMS action through the shop's Twilio account, once per ``action_id`` as far as Twilio allows.

The official ``twilio`` SDK on its asyncio transport
(:class:`~streamapp.connections.twilio_account.ReroutedHttpClient`),
so the worker's event loop is never blocked on Twilio.

The record, the row lock, the attempts and the backoff are :mod:`streamapp.sinks.deliveries`'s:
``sent``, ``failed`` or ``opted_out`` is ``"duplicate"`` and Twilio is not contacted. A
``pending`` row, holding its lock:

* the recipient opted out of this shop's SMS earlier (``sms_opt_outs``): ``opted_out``,
  outcome ``"failed"``, nothing is sent;
* the shop has no Twilio connection (it disconnected after the rule fired): ``failed``
  with ``twilio not connected``;
* otherwise the sink creates the Message, retrying transient failures (no answer,
  timeouts, HTTP 429 and 5xx) up to ``max_attempts`` times. Twilio error 21610 (the
  recipient answered STOP) records the opt-out and marks the row ``opted_out``; any other
  4xx is ``failed`` with Twilio's status, code and message.

A cancelled delivery rolls back, as a crash would: its attempts are not recorded.

Credentials that cannot be unsealed (STREAMAPP_SECRET_KEY missing, malformed or changed) are
a problem of the worker's configuration, not of the action: the sink raises RetryableError,
so the action waits for the fix instead of being lost.

The window that remains is the email sink's: Twilio accepted the Message but the commit
saying ``sent`` did not happen; the redelivery sends a second SMS. The Messages API takes no
idempotency key, so no design closes it from this side.
"""

from __future__ import annotations

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
from streamapp.sinks.base import Outcome, PreviewContext, effect_of
from streamapp.sinks.deliveries import Delivery, DeliverySink, Verdict
from streamapp.timeouts import BACKSTOP_SECONDS, awake_for

logger = logging.getLogger(__name__)

#: Twilio's "Attempt to send to unsubscribed recipient": the customer answered STOP.
OPTED_OUT = 21610

_OPT_OUT_OF = "SELECT action_id, error FROM sms_opt_outs WHERE shop_id = $1 AND phone = $2"
_RECORD_OPT_OUT = """
INSERT INTO sms_opt_outs (shop_id, phone, action_id, error) VALUES ($1, $2, $3, $4)
ON CONFLICT (shop_id, phone) DO NOTHING
"""


class SmsSink(DeliverySink[SmsEffect]):
    """Sends rendered SMS through each shop's Twilio account, idempotent on action_id through ``deliveries``.

    ``sleep`` waits between attempts (inject a recorder in tests); ``timeout`` bounds each
    request to Twilio, in seconds. Call :meth:`close` when done: the sink keeps one HTTP
    connection pool for all shops (each request carries its shop's credentials).
    """

    channel: ClassVar[str] = "sms"
    effect_type = SmsEffect
    label: ClassVar[str] = "sms"

    #: The provider's HTTP client, opened on first use (it needs a running loop).
    _http: ReroutedHttpClient | None = None

    @classmethod
    def preview(cls, action: Action, context: PreviewContext) -> str:
        """The recipient, the shop's sender, and the text with its length in characters and segments."""
        effect = effect_of(action, SmsEffect)
        segments = -(-len(effect.text) // (160 if effect.text.isascii() else 70))
        return (
            f"To: {effect.to}\nFrom: {context.sms_sender or 'the shop Twilio sender'}\n"
            f"Text ({len(effect.text)} characters, {segments} segment{'s' if segments != 1 else ''}):\n"
            f"{effect.text}\n"
        )

    async def close(self) -> None:
        """Close the HTTP connection pool; a later delivery opens a new one."""
        http, self._http = self._http, None
        if http is not None:
            await http.close()

    async def perform(self, delivery: Delivery, action: Action, effect: SmsEffect) -> Outcome:
        opt_out = await delivery.conn.fetchrow(_OPT_OUT_OF, action.shop_id, effect.to)
        if opt_out is not None:
            error = f"recipient opted out of shop {action.shop_id}'s SMS (recorded by action {opt_out['action_id']})"
            return await delivery.fail(error, status="opted_out")
        creds = await self._credentials(delivery.conn, action)
        if creds is None:
            return await delivery.fail("twilio not connected")

        async def judge(exc: Exception) -> Verdict | None:
            if isinstance(exc, NETWORK_ERRORS):
                return Verdict(f"{type(exc).__name__}: {exc}")
            if not isinstance(exc, TwilioRestException):
                return None
            error = describe_error(exc)
            if exc.code == OPTED_OUT:
                await delivery.conn.execute(_RECORD_OPT_OUT, action.shop_id, effect.to, action.action_id, error)
                return Verdict(error, final=True, status="opted_out")
            return Verdict(error, final=not is_transient(exc))

        sid = await delivery.attempt(lambda: self._send(creds, effect), judge)
        return await delivery.sent(sid)

    async def _credentials(self, conn: asyncpg.Connection, action: Action) -> TwilioCredentials | None:
        """The shop's connection; RetryableError when this worker's key cannot open it (fix the key, not the action)."""
        try:
            return await load_credentials(conn, self.settings, action.shop_id)
        except ConfigurationError as exc:
            raise RetryableError(f"sms {action.action_id} waits: {exc}") from None

    async def _send(self, creds: TwilioCredentials, effect: SmsEffect) -> str:
        """Create the Message; its SID. TwilioRestException or a network error when Twilio did not accept it."""
        if self._http is None:
            self._http = ReroutedHttpClient(self.settings.twilio_api_url, timeout=BACKSTOP_SECONDS)
        sender = {"messaging_service_sid": creds.sender} if creds.uses_messaging_service else {"from_": creds.sender}
        # awake_for, not the HTTP client's timeout: an answer that came while the worker was frozen
        # is read, not mistaken for silence (which would text the customer again).
        create = rest_client(creds, self._http).messages.create_async(to=effect.to, body=effect.text, **sender)
        message = await awake_for(self.timeout, create)
        return str(message.sid)
