"""The payment-link sink: a Stripe Checkout Session for an invoice, then the email that carries its URL.

The link exists only once Stripe has answered, so this sink renders the email (the effect
carries the chosen templates and every variable but ``payment_link``) and sends it through
SMTP exactly as the email sink does (:func:`streamapp.sinks.email.build_message`, its send and
its judgement of SMTP errors). Stripe is called through the official SDK's async methods
(:mod:`streamapp.connections.stripe_account`).

The ``deliveries`` row of the action (channel ``payment_link``) is the record and its row
lock the mutex, as in the email and SMS sinks:

1. One transaction inserts the row (``pending``) if it is missing and locks it with
   ``SELECT ... FOR UPDATE``; a concurrent delivery of the same ``action_id`` waits on it.
2. ``sent`` or ``failed``: ``"duplicate"``; neither Stripe nor SMTP is contacted.
3. ``pending``, still holding the lock:

   * the templates are rendered once with a stand-in link: wording that cannot render, or
     an effect that is not an email rule of the catalog, is ``failed`` before Stripe is asked;
   * the session: the one an earlier delivery recorded on the row (``provider_ref``,
     ``provider_url``), else a new one from the shop's Stripe account, created with
     ``idempotency_key=action_id``. No connection: ``failed`` with ``stripe not connected``.
     Transient failures (no answer, 409, 429, 5xx) are retried with the email sink's backoff
     up to ``max_attempts`` times; any other Stripe error is ``failed`` with Stripe's status,
     type, code and message in ``last_error``;
   * the session is written to the row, the email rendered with ``payment_link`` = its URL
     and sent, SMTP failures retried and judged as the email sink does.

``attempts`` counts requests to either provider. Exhausted attempts on either leg commit the
``pending`` row (with the session, if it was created) and raise RetryableError: the
redelivery reuses the recorded session and only retries what is left.

Once per action: two deliveries never run at once (the lock), and once the row says ``sent``
or ``failed`` nothing more happens. A crash between Stripe's answer and the commit loses the
row's record of the session; the redelivery asks again with the same idempotency key, and
Stripe answers with the same session (for 24 hours: Stripe forgets keys after that, and a
redelivery later than that creates a second session; the first one is never emailed). The
email keeps the email sink's window: a crash after SMTP accepted it and before the commit
sends a second copy, with the same ``Message-ID``.

A Checkout Session expires (24 hours by default): the emailed link is a pay-now link, not
a permanent one.

Credentials that cannot be unsealed (STREAMAPP_SECRET_KEY missing, malformed or changed) are
a problem of the worker's configuration, not of the action: RetryableError, nothing recorded.

A ``"failed"`` outcome leaves its reason in ``deliveries.last_error``
(``streamapp.queries.get_delivery``), for the caller to dead-letter it.
"""

from __future__ import annotations

import asyncio
import logging
from email.message import EmailMessage
from typing import ClassVar

import aiosmtplib
import asyncpg
import stripe

from schemas.actions import Action, EmailEffect, PaymentLinkEffect
from streamapp.connections.stripe_account import (
    StripeCredentials,
    describe_error,
    is_transient,
    load_credentials,
    new_http_client,
    stripe_client,
)
from streamapp.errors import ConfigurationError, RetryableError
from streamapp.rules.catalog import BY_KEY, PARTS
from streamapp.rules.wording import render_parts
from streamapp.settings import Settings
from streamapp.sinks.base import Outcome, Sink, effect_of
from streamapp.sinks.email import (
    Sleep,
    backoff,
    build_message,
    describe_smtp_error,
    is_permanent_smtp_error,
    send_message,
)
from streamapp.templating import TemplateError

logger = logging.getLogger(__name__)

#: Rendered in place of the session URL to check the wording before Stripe is asked.
_STAND_IN_LINK = "https://checkout.stripe.com/c/pay/cs_test_stand_in"

_CLAIM = """
INSERT INTO deliveries (action_id, channel, shop_id, customer_id, recipient)
VALUES ($1, 'payment_link', $2, $3, $4)
ON CONFLICT (action_id) DO NOTHING
"""
_LOCK = "SELECT status, provider_ref, provider_url FROM deliveries WHERE action_id = $1 FOR UPDATE"
# clock_timestamp(), not now(): now() is the start of the transaction, which spans the retries.
_SESSION = """
UPDATE deliveries SET attempts = attempts + 1, provider_ref = $2, provider_url = $3, last_error = NULL,
    updated_at = clock_timestamp()
WHERE action_id = $1
"""
_SENT = """
UPDATE deliveries SET status = 'sent', attempts = attempts + 1, provider_message_id = $2, last_error = NULL,
    updated_at = clock_timestamp()
WHERE action_id = $1
"""
_ERROR = """
UPDATE deliveries SET status = $2, attempts = attempts + $3, last_error = $4, updated_at = clock_timestamp()
WHERE action_id = $1
"""


class _Exhausted(Exception):
    """Every attempt of one leg failed transiently: commit the counters, then raise RetryableError."""


def checkout_params(action: Action, effect: PaymentLinkEffect) -> stripe.params.checkout.SessionCreateParams:
    """The Checkout Session of ``effect``: one line, its amount and currency, paid by card or whatever
    the account's Checkout settings offer. The metadata lets a payment be traced to its action."""
    metadata = {"action_id": action.action_id, "shop_id": action.shop_id}
    return {
        "mode": "payment",
        "line_items": [
            {
                "price_data": {
                    "currency": effect.currency.lower(),
                    "unit_amount": effect.amount_cents,
                    "product_data": {"name": effect.description},
                },
                "quantity": 1,
            }
        ],
        "customer_email": effect.to,
        "success_url": effect.success_url,
        "cancel_url": effect.cancel_url,
        "metadata": metadata,
        "payment_intent_data": {"metadata": metadata},
    }


def render_email(effect: PaymentLinkEffect, payment_link: str) -> EmailEffect:
    """The email of ``effect`` with ``payment_link``, rendered in the sandbox as the catalog renders.

    TemplateError if ``effect.template_key`` is not an email rule of the catalog, a part is
    missing, or a part does not render.
    """
    rule = BY_KEY.get(effect.template_key)
    if rule is None or rule.channel != "email":
        raise TemplateError(f"{effect.template_key}: not an email rule of the catalog")
    missing = [part for part in PARTS["email"] if part not in effect.templates]
    if missing:
        raise TemplateError(f"{rule.key}: the effect has no template for {', '.join(missing)}")
    templates = {part: effect.templates[part] for part in PARTS["email"]}
    parts = render_parts(rule, templates, {**effect.variables, "payment_link": payment_link})
    return EmailEffect(
        to=effect.to,
        to_name=effect.to_name,
        template_key=effect.template_key,
        subject=parts["subject"],
        text_body=parts["body.txt"],
        html_body=parts["body.html"],
    )


class PaymentLinkSink(Sink):
    """Creates one Stripe Checkout Session per action and emails its URL, idempotent on action_id.

    ``sleep`` waits between attempts (inject a recorder in tests); ``timeout`` bounds each
    request to Stripe and each SMTP operation, in seconds. Call :meth:`close` when done: the
    sink keeps one HTTP connection pool for all shops (each request carries its shop's key).
    """

    channel: ClassVar[str] = "payment_link"

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
        self._http: stripe.AIOHTTPClient | None = None  # opened on first use: it needs a running loop

    async def close(self) -> None:
        """Close the HTTP connection pool; a later delivery opens a new one."""
        http, self._http = self._http, None
        if http is not None:
            await http.close_async()  # type: ignore[no-untyped-call]  # untyped in the SDK

    async def deliver(self, action: Action) -> Outcome:
        effect = effect_of(action, PaymentLinkEffect)
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(_CLAIM, action.action_id, action.shop_id, action.customer_id, effect.to)
            try:
                return await self._deliver_locked(conn, action, effect)
            except _Exhausted as exc:
                exhausted = str(exc)  # leaving the block normally commits the counters
        raise RetryableError(
            f"payment link {action.action_id} not done after {self._max_attempts} attempts: {exhausted}"
        )

    async def _deliver_locked(self, conn: asyncpg.Connection, action: Action, effect: PaymentLinkEffect) -> Outcome:
        """Everything after the claim, holding the row lock; _Exhausted when a leg ran out of attempts."""
        action_id = action.action_id
        row = await conn.fetchrow(_LOCK, action_id)
        if row["status"] != "pending":
            logger.info("payment link %s already %s", action_id, row["status"])
            return "duplicate"
        try:
            render_email(effect, _STAND_IN_LINK)
        except TemplateError as exc:
            return await self._fail(conn, action_id, 0, f"template: {exc}")
        session = await self._session(conn, action, effect, row)
        if session is None:
            return "failed"
        try:
            message = build_message(action, render_email(effect, session[1]), sender=self._settings.smtp_from)
        except (TemplateError, ValueError) as exc:  # a header or address that cannot be sent: bad input is data
            problem = "template" if isinstance(exc, TemplateError) else "invalid message"
            return await self._fail(conn, action_id, 0, f"{problem}: {exc}")
        return await self._send_email(conn, action_id, message, effect.to)

    async def _session(
        self, conn: asyncpg.Connection, action: Action, effect: PaymentLinkEffect, row: asyncpg.Record
    ) -> tuple[str, str] | None:
        """The session's id and URL: recorded by an earlier delivery, else new; None when the row failed."""
        if row["provider_url"] is not None:
            logger.info("payment link %s reuses checkout session %s", action.action_id, row["provider_ref"])
            return str(row["provider_ref"]), str(row["provider_url"])
        creds = await self._credentials(conn, action)
        if creds is None:
            await self._fail(conn, action.action_id, 0, "stripe not connected")
            return None
        return await self._create_session(conn, action, effect, creds)

    async def _fail(self, conn: asyncpg.Connection, action_id: str, attempts: int, error: str) -> Outcome:
        await conn.execute(_ERROR, action_id, "failed", attempts, error)
        logger.warning("payment link %s failed: %s", action_id, error)
        return "failed"

    async def _credentials(self, conn: asyncpg.Connection, action: Action) -> StripeCredentials | None:
        """The shop's key; RetryableError when this worker's key cannot open it (fix the key, not the action)."""
        try:
            return await load_credentials(conn, self._settings, action.shop_id)
        except ConfigurationError as exc:
            raise RetryableError(f"payment link {action.action_id} waits: {exc}") from None

    async def _create_session(
        self, conn: asyncpg.Connection, action: Action, effect: PaymentLinkEffect, creds: StripeCredentials
    ) -> tuple[str, str] | None:
        """The new session's id and URL, written to the row; None when Stripe refused it (row ``failed``)."""
        action_id = action.action_id
        if self._http is None:
            self._http = new_http_client(self._timeout)
        client = stripe_client(self._settings, creds, self._http)
        params = checkout_params(action, effect)
        for attempt in range(1, self._max_attempts + 1):
            try:
                created = await client.v1.checkout.sessions.create_async(params, {"idempotency_key": action_id})
            except stripe.StripeError as exc:
                error = f"stripe: {describe_error(exc, creds.secret_key)}"
                if not is_transient(exc):
                    await self._fail(conn, action_id, 1, error)
                    return None
            else:
                if not created.id or not created.url:  # an embedded-mode session has no hosted page
                    await self._fail(conn, action_id, 1, f"stripe: checkout session {created.id} has no URL")
                    return None
                await conn.execute(_SESSION, action_id, created.id, created.url)
                logger.info(
                    "payment link %s: checkout session %s created on attempt %d", action_id, created.id, attempt
                )
                return str(created.id), str(created.url)
            await self._retry_later(conn, action_id, attempt, error)
        raise AssertionError("unreachable: the last attempt raises _Exhausted")

    async def _send_email(self, conn: asyncpg.Connection, action_id: str, message: EmailMessage, to: str) -> Outcome:
        """Send through SMTP with the email sink's send and its judgement of errors."""
        for attempt in range(1, self._max_attempts + 1):
            try:
                reply = await send_message(self._settings, message, to, timeout=self._timeout)
            except (aiosmtplib.SMTPException, OSError) as exc:
                error = f"smtp: {describe_smtp_error(exc)}"
                if is_permanent_smtp_error(exc):
                    return await self._fail(conn, action_id, 1, error)
            else:
                await conn.execute(_SENT, action_id, reply)
                logger.info("payment link %s emailed on attempt %d", action_id, attempt)
                return "applied"
            await self._retry_later(conn, action_id, attempt, error)
        raise AssertionError("unreachable: the last attempt raises _Exhausted")

    async def _retry_later(self, conn: asyncpg.Connection, action_id: str, attempt: int, error: str) -> None:
        """Record a transient failure; wait the backoff, or raise _Exhausted after the last attempt."""
        await conn.execute(_ERROR, action_id, "pending", 1, error)
        logger.info("payment link %s attempt %d failed: %s", action_id, attempt, error)
        if attempt == self._max_attempts:
            raise _Exhausted(error)
        await self._sleep(backoff(attempt))
