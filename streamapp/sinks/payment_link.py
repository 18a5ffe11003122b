"""The payment-link sink: a Stripe Checkout Session for an invoice, then the email that carries its URL.

The link exists only once Stripe has answered, so this sink renders the email (the effect
carries the chosen templates and every variable but ``payment_link``) and sends it through
SMTP exactly as the email sink does (:func:`streamapp.sinks.email.build_message`, its send and
its judgement of SMTP errors). Stripe is called through the official SDK's async methods
(:mod:`streamapp.connections.stripe_account`).

The record, the row lock, the attempts and the backoff are :mod:`streamapp.sinks.deliveries`'s
(channel ``payment_link``): ``sent`` or ``failed`` is ``"duplicate"`` and neither Stripe nor
SMTP is contacted. A ``pending`` row, holding its lock:

   * the templates are rendered once with a stand-in link: wording that cannot render, or
     an effect that is not an email rule of the catalog, is ``failed`` before Stripe is asked;
   * the session: the one an earlier delivery recorded on the row (``provider_ref``,
     ``provider_url``), else a new one from the shop's Stripe account, created with
     ``idempotency_key=action_id``. No connection: ``failed`` with ``stripe not connected``.
     Transient failures (no answer, 409, 429, 5xx) are retried with the backoff
     up to ``max_attempts`` times; any other Stripe error is ``failed`` with Stripe's status,
     type, code and message in ``last_error``;
   * the session is written to the row, the email rendered with ``payment_link`` = its URL
     and sent, SMTP failures retried and judged as the email sink does.

``attempts`` counts requests to either provider. Exhausted attempts on either leg commit the
``pending`` row (with the session, if it was created) and raise RetryableError: the
redelivery reuses the recorded session and only retries what is left.

Once per action: two deliveries never run at once (the lock), and once the row says ``sent``
or ``failed`` nothing more happens. A crash (or a cancelled delivery: it rolls back) between
Stripe's answer and the commit loses the row's record of the session; the redelivery asks
again with the same idempotency key, and Stripe answers with the same session (for 24 hours:
Stripe forgets keys after that, and a redelivery later than that creates a second session;
the first one is never emailed). The
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

import logging
from typing import ClassVar

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
from streamapp.rules.money import format_money
from streamapp.rules.wording import LINK_PLACEHOLDER, render_parts
from streamapp.sinks.base import Outcome, PreviewContext, effect_of
from streamapp.sinks.deliveries import Delivery, DeliverySink, Verdict
from streamapp.sinks.email import EmailSink, build_message, judge_smtp, send_message
from streamapp.templating import TemplateError

logger = logging.getLogger(__name__)

#: Rendered in place of the session URL to check the wording before Stripe is asked.
_STAND_IN_LINK = "https://checkout.stripe.com/c/pay/cs_test_stand_in"


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


class PaymentLinkSink(DeliverySink[PaymentLinkEffect]):
    """Creates one Stripe Checkout Session per action and emails its URL, idempotent on action_id.

    ``sleep`` waits between attempts (inject a recorder in tests); ``timeout`` bounds each
    request to Stripe and each SMTP operation, in seconds. Call :meth:`close` when done: the
    sink keeps one HTTP connection pool for all shops (each request carries its shop's key).
    """

    channel: ClassVar[str] = "payment_link"
    effect_type = PaymentLinkEffect
    label: ClassVar[str] = "payment link"
    dead_letters_failures: ClassVar[bool] = True

    #: The provider's HTTP client, opened on first use (it needs a running loop).
    _http: stripe.AIOHTTPClient | None = None

    @classmethod
    def preview(cls, action: Action, context: PreviewContext) -> str:
        """The email as the email sink would send it, with a placeholder where the link goes, and a note
        on the link; TemplateError if the wording does not render."""
        # The sink renders it once Stripe has made the Checkout link; the preview shows where it goes.
        effect = effect_of(action, PaymentLinkEffect)
        email = render_email(effect, LINK_PLACEHOLDER)
        amount = format_money(effect.amount_cents, effect.currency)
        note = f"Stripe Checkout link for {amount} ({effect.description}), made when the email is sent"
        return f"{EmailSink.preview(action.model_copy(update={'effect': email}), context)}({note})\n"

    async def close(self) -> None:
        """Close the HTTP connection pool; a later delivery opens a new one."""
        http, self._http = self._http, None
        if http is not None:
            await http.close_async()  # type: ignore[no-untyped-call]  # untyped in the SDK

    async def perform(self, delivery: Delivery, action: Action, effect: PaymentLinkEffect) -> Outcome:
        try:
            render_email(effect, _STAND_IN_LINK)
        except TemplateError as exc:
            return await delivery.fail(f"template: {exc}")
        url = await self._session_url(delivery, action, effect)
        if url is None:
            return "failed"
        try:
            message = build_message(action, render_email(effect, url), sender=self.settings.smtp_from)
        except (TemplateError, ValueError) as exc:  # a header or address that cannot be sent: bad input is data
            problem = "template" if isinstance(exc, TemplateError) else "invalid message"
            return await delivery.fail(f"{problem}: {exc}")
        reply = await delivery.attempt(
            lambda: send_message(self.settings, message, effect.to, timeout=self.timeout),
            lambda exc: judge_smtp(exc, prefix="smtp: "),
            what="emailed",
        )
        return await delivery.sent(reply)

    async def _session_url(self, delivery: Delivery, action: Action, effect: PaymentLinkEffect) -> str | None:
        """The session's URL: recorded by an earlier delivery, else new; None when the row failed."""
        if delivery.provider_url is not None:
            logger.info("payment link %s reuses checkout session %s", action.action_id, delivery.provider_ref)
            return delivery.provider_url
        creds = await self._credentials(delivery.conn, action)
        if creds is None:
            await delivery.fail("stripe not connected")
            return None
        if self._http is None:
            self._http = new_http_client(self.timeout)
        client = stripe_client(self.settings, creds, self._http)
        params = checkout_params(action, effect)

        async def judge(exc: Exception) -> Verdict | None:
            if not isinstance(exc, stripe.StripeError):
                return None
            return Verdict(f"stripe: {describe_error(exc, creds.secret_key)}", final=not is_transient(exc))

        created = await delivery.attempt(
            lambda: client.v1.checkout.sessions.create_async(params, {"idempotency_key": action.action_id}),
            judge,
            what="checkout session created",
        )
        if not created.id or not created.url:  # an embedded-mode session has no hosted page
            await delivery.fail(f"stripe: checkout session {created.id} has no URL", attempts=1)
            return None
        await delivery.progress(str(created.id), str(created.url))
        logger.info("payment link %s: checkout session %s", action.action_id, created.id)
        return str(created.url)

    async def _credentials(self, conn: asyncpg.Connection, action: Action) -> StripeCredentials | None:
        """The shop's key; RetryableError when this worker's key cannot open it (fix the key, not the action)."""
        try:
            return await load_credentials(conn, self.settings, action.shop_id)
        except ConfigurationError as exc:
            raise RetryableError(f"payment link {action.action_id} waits: {exc}") from None
