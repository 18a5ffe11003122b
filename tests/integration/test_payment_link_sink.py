"""The payment-link sink through the official Stripe SDK, against stripe-mock, real PostgreSQL and a real SMTP server.

Every Stripe request goes SDK -> fault proxy -> stripe-mock: stripe-mock judges it against
Stripe's OpenAPI document, the proxy adds what stripe-mock lacks (idempotency keys as Stripe
honours them, 503/429 and permanent refusals) and records what was sent. Every test also
checks that the secret key never reaches a log record or an exception message.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

import asyncpg
import pytest
from pydantic import SecretStr

from schemas.actions import Action, EmailEffect, Lineage, PaymentLinkEffect
from streamapp.connections.crypto import generate_key
from streamapp.connections.stripe_account import (
    StripeCredentials,
    delete_credentials,
    load_credentials,
    save_credentials,
    verify_credentials,
)
from streamapp.embedded.process import free_port
from streamapp.embedded.stripe import EmbeddedStripe, ensure_stripe_mock
from streamapp.errors import ConfigurationError, RetryableError
from streamapp.rules.catalog import BY_KEY, sample_variables
from streamapp.rules.wording import sources
from streamapp.settings import Settings
from streamapp.sinks.payment_link import PaymentLinkSink
from tests.harness.cli import Cli
from tests.harness.sink_contract import SinkContract, SinkDouble
from tests.harness.smtp import Recorder, smtp_server
from tests.harness.stripe import RATE_LIMITED, StripeFaultProxy, stripe_error
from tests.harness.waits import Sleeps, eventually

pytestmark = pytest.mark.integration

SECRET = "sk_test_51StreamappTestKey0123456789abcdef"
LIVE_SECRET = "sk_live_51StreamappLiveKey0123456789abcdef"
KEY = generate_key()
RULE = BY_KEY["payment_link_email"]
TO = "ann@example.com"


def assert_no_secret(text: str) -> None:
    assert SECRET not in text and LIVE_SECRET not in text, "the Stripe key leaked"
    assert "51StreamappTestKey" not in text and "51StreamappLiveKey" not in text, "part of the Stripe key leaked"


def payment_link_action(shop_id: str = "shop-1", **overrides: Any) -> Action:
    variables = {k: v for k, v in sample_variables(RULE).items() if k != "payment_link"}
    values: dict[str, Any] = {
        "to": TO,
        "to_name": "Ann Lee",
        "template_key": RULE.key,
        "amount_cents": 42000,
        "currency": "USD",
        "description": "Invoice INV-2031",
        "success_url": "https://acme.example/invoices/INV-2031",
        "cancel_url": "https://acme.example/invoices/INV-2031",
        "templates": sources(RULE, None),
        "variables": variables,
    }
    values.update(overrides)
    return Action(
        action_id=f"act-{uuid.uuid4().hex[:12]}",
        shop_id=shop_id,
        customer_id="c-42",
        rule_id=RULE.key,
        rule_name=RULE.description,
        trigger="invoice.sent",
        occurred_at=datetime(2026, 11, 23, 22, 0, tzinfo=UTC),
        effect=PaymentLinkEffect(**values),
        lineage=Lineage(event_id="evt-invoice-sent-2031", topic="payments", partition=0, offset=7),
    )


# -- fixtures (move ``stripe_api`` and ``stripe`` to tests/conftest.py) ------------------------------


@pytest.fixture(autouse=True)
def no_key_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Every record of the test, the SDK's own included, at DEBUG. (``caplog.text`` at teardown holds only
    the teardown's records: the setup's and the call's are read by phase.)"""
    caplog.set_level(logging.DEBUG)
    yield
    formatter = logging.Formatter()
    records = [*caplog.get_records("setup"), *caplog.get_records("call")]
    for record in records:
        assert_no_secret(formatter.format(record))


@pytest.fixture
def mailbox() -> Iterator[tuple[Recorder, int]]:
    recorder = Recorder()
    with smtp_server(recorder) as port:
        yield recorder, port


@pytest.fixture
def settings(stripe: StripeFaultProxy, mailbox: tuple[Recorder, int]) -> Settings:
    return Settings(secret_key=SecretStr(KEY), stripe_api_url=stripe.url, smtp_host="127.0.0.1", smtp_port=mailbox[1])


@pytest.fixture
def sent(mailbox: tuple[Recorder, int]) -> list[EmailMessage]:
    return mailbox[0].messages


@pytest.fixture
async def sink_factory(pool: asyncpg.Pool, settings: Settings) -> AsyncIterator[Callable[..., PaymentLinkSink]]:
    sinks: list[PaymentLinkSink] = []

    def make(
        *, sleeps: Sleeps | None = None, max_attempts: int = 5, using: Settings | None = None, timeout: float = 10.0
    ) -> PaymentLinkSink:
        sink = PaymentLinkSink(
            pool, using or settings, sleep=sleeps or Sleeps(), max_attempts=max_attempts, timeout=timeout
        )
        sinks.append(sink)
        return sink

    yield make
    for sink in sinks:
        await sink.close()


async def connect(pool: asyncpg.Pool, settings: Settings, shop_id: str = "shop-1", secret: str = SECRET) -> None:
    await save_credentials(pool, settings, shop_id, StripeCredentials(secret))


@dataclass(frozen=True)
class Row:
    status: str
    attempts: int
    last_error: str | None
    provider_ref: str | None
    provider_url: str | None
    provider_message_id: str | None
    channel: str
    recipient: str


async def row(pool: asyncpg.Pool, action: Action) -> Row | None:
    found = await pool.fetchrow(
        "SELECT status, attempts, last_error, provider_ref, provider_url, provider_message_id, channel, recipient "
        "FROM deliveries WHERE action_id = $1",
        action.action_id,
    )
    return None if found is None else Row(**dict(found))


def text_of(message: EmailMessage) -> tuple[str, str]:
    """The plain-text and HTML bodies."""
    plain = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    assert plain is not None and html is not None
    return str(plain.get_content()).replace("\r\n", "\n"), str(html.get_content()).replace("\r\n", "\n")


# -- the sink contract (tests/harness/sink_contract.py) ---------------------------------------


class PaymentLinkDouble(SinkDouble):
    """The payment-link sink against stripe-mock behind the fault proxy and a real SMTP server; the shop
    is connected. Its requests are Checkout Session creates; what it performs, the emails sent."""

    channel = "payment_link"
    earlier_error = "stripe: HTTP 503 api_error: earlier"
    requests_per_delivery = 2  # one Checkout Session create, one SMTP send
    transient_error = "api_error"
    permanent_error = ("stripe: HTTP 400 invalid_request_error/amount_too_large",)
    foreign_channel = "email"

    def __init__(
        self, stripe: StripeFaultProxy, sink_factory: Callable[..., PaymentLinkSink], sent: list[EmailMessage]
    ) -> None:
        self.stripe, self.sink_factory, self.sent = stripe, sink_factory, sent

    def action(self) -> Action:
        return payment_link_action()

    def foreign_effect(self) -> EmailEffect:
        return EmailEffect(to=TO, to_name="A", template_key="k", subject="s", text_body="b")

    def sink(self, *, sleeps: Sleeps | None = None, max_attempts: int = 5) -> PaymentLinkSink:
        return self.sink_factory(sleeps=sleeps, max_attempts=max_attempts)

    def fail_transiently(self, count: int) -> None:
        self.stripe.fail_next(count)

    def fail_permanently(self) -> None:
        error = stripe_error(400, "invalid_request_error", "Amount too large", code="amount_too_large")
        self.stripe.refuse_next(1, error)

    def hold(self) -> None:
        self.stripe.hold_session_creates()

    def holding(self) -> bool:
        return self.stripe.holding.is_set()

    def release(self) -> None:
        self.stripe.release()

    def requests(self) -> int:
        return len(self.stripe.session_creates())

    def performed(self) -> int:
        return len(self.sent)


class TestPaymentLinkSinkContract(SinkContract):
    @pytest.fixture
    async def double(
        self,
        pool: asyncpg.Pool,
        settings: Settings,
        stripe: StripeFaultProxy,
        sink_factory: Callable[..., PaymentLinkSink],
        sent: list[EmailMessage],
    ) -> SinkDouble:
        await connect(pool, settings)
        return PaymentLinkDouble(stripe, sink_factory, sent)


# -- the happy path ------------------------------------------------------------------------------


async def test_one_checkout_session_is_created_through_the_sdk_and_its_url_is_emailed(
    pool: asyncpg.Pool,
    settings: Settings,
    stripe: StripeFaultProxy,
    sink_factory: Callable[..., PaymentLinkSink],
    sent: list[EmailMessage],
) -> None:
    await connect(pool, settings)
    sink = sink_factory()
    action = payment_link_action()

    assert await sink.deliver(action) == "applied"
    assert await sink.deliver(action) == "duplicate"

    [create] = stripe.session_creates()
    assert (create.upstream_status, create.status, create.replayed) == (200, 200, False)  # stripe-mock accepted it
    assert create.idempotency_key == action.action_id
    assert create.key_suffix == SECRET[-4:]
    assert dict(create.form) == {
        "mode": "payment",
        "line_items[0][price_data][currency]": "usd",
        "line_items[0][price_data][unit_amount]": "42000",
        "line_items[0][price_data][product_data][name]": "Invoice INV-2031",
        "line_items[0][quantity]": "1",
        "customer_email": TO,
        "success_url": "https://acme.example/invoices/INV-2031",
        "cancel_url": "https://acme.example/invoices/INV-2031",
        "metadata[action_id]": action.action_id,
        "metadata[shop_id]": "shop-1",
        "payment_intent_data[metadata][action_id]": action.action_id,
        "payment_intent_data[metadata][shop_id]": "shop-1",
    }
    record = await row(pool, action)
    assert record is not None
    assert (record.channel, record.status, record.attempts, record.recipient, record.last_error) == (
        "payment_link",
        "sent",
        2,  # one Checkout Session create, one SMTP send
        TO,
        None,
    )
    assert record.provider_ref is not None and record.provider_ref.startswith("cs_test_")
    assert record.provider_url is not None and record.provider_url.startswith("https://checkout.stripe.com/")
    assert record.provider_message_id == "2.0.0 Ok: queued as Q1"

    [message] = sent
    assert message["To"] == f"Ann Lee <{TO}>"
    assert message["Subject"] == "Pay invoice INV-2031 online"
    assert message["Message-ID"] == f"<{action.action_id}@streamapp>"
    plain, html = text_of(message)
    assert f"Pay $420.00 now:\n{record.provider_url}\n" in plain
    assert f'<a href="{record.provider_url}">Pay $420.00 now</a>' in html
    assert "https://acme.example/invoices/INV-2031" in plain


async def test_the_shops_own_wording_is_rendered_with_the_link(
    pool: asyncpg.Pool, settings: Settings, sink_factory: Callable[..., PaymentLinkSink], sent: list[EmailMessage]
) -> None:
    await connect(pool, settings)
    templates = {**sources(RULE, None), "subject": "{{ shop_name }}: {{ total_due }} for {{ invoice_number }}"}
    templates["body.txt"] = "Pay here: {{ payment_link }} (O'Brien & Sons)"
    action = payment_link_action(templates=templates)

    assert await sink_factory().deliver(action) == "applied"

    record = await row(pool, action)
    assert record is not None and record.provider_url is not None
    [message] = sent
    assert message["Subject"] == "Acme Print Co.: $420.00 for INV-2031"
    assert text_of(message)[0].strip() == f"Pay here: {record.provider_url} (O'Brien & Sons)"


# -- once per action -------------------------------------------------------------------------------


async def test_a_lost_answer_is_asked_again_with_the_same_key_and_stripe_replays_the_session(
    pool: asyncpg.Pool,
    settings: Settings,
    stripe: StripeFaultProxy,
    sink_factory: Callable[..., PaymentLinkSink],
    sent: list[EmailMessage],
) -> None:
    """The crash window: Stripe created the session, the worker died before committing it."""
    await connect(pool, settings)
    action = payment_link_action()
    stripe.hold_session_creates(after_upstream=True)

    first = asyncio.create_task(sink_factory().deliver(action))
    await eventually(stripe.holding.is_set, what="Stripe to create the session")
    first.cancel()  # the worker dies with Stripe's answer on the wire
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(first, 10)
    stripe.release()
    assert await row(pool, action) is None  # rolled back: nothing recorded the session

    assert await sink_factory().deliver(action) == "applied"

    creates = stripe.session_creates()
    assert [c.idempotency_key for c in creates] == [action.action_id, action.action_id]
    assert [c.replayed for c in creates] == [False, True]
    assert len(stripe.sessions_created()) == 1 and len(sent) == 1


async def test_a_redelivery_after_a_failed_email_reuses_the_recorded_session(
    pool: asyncpg.Pool,
    settings: Settings,
    stripe: StripeFaultProxy,
    sink_factory: Callable[..., PaymentLinkSink],
    sent: list[EmailMessage],
) -> None:
    await connect(pool, settings)
    no_smtp = settings.model_copy(update={"smtp_port": free_port()})
    sleeps = Sleeps()
    action = payment_link_action()

    with pytest.raises(RetryableError, match="smtp: SMTPConnectError") as raised:
        await sink_factory(sleeps=sleeps, max_attempts=2, using=no_smtp).deliver(action)

    assert_no_secret(str(raised.value))
    assert sleeps.delays == [0.5]
    record = await row(pool, action)
    assert record is not None and (record.status, record.attempts) == ("pending", 3)
    assert record.provider_ref is not None and record.provider_url is not None
    assert record.last_error is not None and record.last_error.startswith("smtp: SMTPConnectError")

    assert await sink_factory().deliver(action) == "applied"

    assert len(stripe.session_creates()) == 1  # not asked again
    [message] = sent
    assert record.provider_url in text_of(message)[0]
    after = await row(pool, action)
    assert after is not None and (after.status, after.attempts, after.provider_ref) == ("sent", 4, record.provider_ref)


# -- Stripe's errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "status"), [(None, 503), (RATE_LIMITED, 429)], ids=["unavailable-503", "rate-limited-429"]
)
async def test_transient_stripe_errors_are_retried_with_backoff_and_the_same_key(
    pool: asyncpg.Pool,
    settings: Settings,
    stripe: StripeFaultProxy,
    sink_factory: Callable[..., PaymentLinkSink],
    sent: list[EmailMessage],
    answer: tuple[int, dict[str, Any]] | None,
    status: int,
) -> None:
    await connect(pool, settings)
    stripe.fail_next(2, *([answer] if answer else []))
    sleeps = Sleeps()
    action = payment_link_action()

    assert await sink_factory(sleeps=sleeps).deliver(action) == "applied"

    assert sleeps.delays == [0.5, 1.0]
    creates = stripe.session_creates()
    assert [(c.upstream_status, c.status) for c in creates] == [(200, status), (200, status), (200, 200)]
    assert {c.idempotency_key for c in creates} == {action.action_id}
    assert len(sent) == 1
    record = await row(pool, action)
    assert record is not None and (record.status, record.attempts, record.last_error) == ("sent", 4, None)


async def test_exhausted_attempts_raise_retryable_and_a_redelivery_completes(
    pool: asyncpg.Pool,
    settings: Settings,
    stripe: StripeFaultProxy,
    sink_factory: Callable[..., PaymentLinkSink],
    sent: list[EmailMessage],
) -> None:
    await connect(pool, settings)
    stripe.fail_next(3)
    sleeps = Sleeps()
    action = payment_link_action()

    with pytest.raises(RetryableError, match="api_error") as raised:
        await sink_factory(sleeps=sleeps, max_attempts=3).deliver(action)

    assert_no_secret(str(raised.value))
    assert sleeps.delays == [0.5, 1.0] and sent == []
    record = await row(pool, action)
    assert record is not None and (record.status, record.attempts, record.provider_ref) == ("pending", 3, None)
    assert record.last_error == "stripe: HTTP 503 api_error: Stripe is temporarily unavailable."

    assert await sink_factory(sleeps=sleeps).deliver(action) == "applied"
    assert len(stripe.sessions_created()) == 1 and len(sent) == 1
    record = await row(pool, action)
    assert record is not None and (record.status, record.attempts) == ("sent", 5)


async def test_unreachable_stripe_raises_retryable(
    pool: asyncpg.Pool, settings: Settings, sink_factory: Callable[..., PaymentLinkSink]
) -> None:
    nowhere = settings.model_copy(update={"stripe_api_url": f"http://127.0.0.1:{free_port()}"})
    await connect(pool, nowhere)
    sleeps = Sleeps()
    action = payment_link_action()

    with pytest.raises(RetryableError, match="no answer from Stripe: ClientConnectorError") as raised:
        await sink_factory(sleeps=sleeps, max_attempts=2, using=nowhere).deliver(action)

    assert_no_secret(str(raised.value))
    assert sleeps.delays == [0.5]
    record = await row(pool, action)
    assert record is not None and (record.status, record.attempts) == ("pending", 2)


async def test_a_permanent_stripe_error_fails_the_action_with_stripes_reason(
    pool: asyncpg.Pool,
    settings: Settings,
    stripe: StripeFaultProxy,
    sink_factory: Callable[..., PaymentLinkSink],
    sent: list[EmailMessage],
) -> None:
    await connect(pool, settings)
    stripe.refuse_next(
        1,
        stripe_error(
            400,
            "invalid_request_error",
            "Amount must be no more than $999,999.99",
            code="amount_too_large",
            param="line_items[0][price_data][unit_amount]",
        ),
    )
    sleeps = Sleeps()
    sink = sink_factory(sleeps=sleeps)
    action = payment_link_action()

    assert await sink.deliver(action) == "failed"

    assert sleeps.delays == [] and sent == []
    record = await row(pool, action)
    assert record is not None and (record.status, record.attempts, record.provider_ref) == ("failed", 1, None)
    assert record.last_error == (
        "stripe: HTTP 400 invalid_request_error/amount_too_large (param line_items[0][price_data][unit_amount]): "
        "Amount must be no more than $999,999.99"
    )
    assert await sink.deliver(action) == "duplicate"
    assert len(stripe.session_creates()) == 1


async def test_a_key_stripe_refuses_fails_the_action_and_its_echo_is_masked(
    pool: asyncpg.Pool,
    settings: Settings,
    stripe: StripeFaultProxy,
    sink_factory: Callable[..., PaymentLinkSink],
    sent: list[EmailMessage],
) -> None:
    # stripe-mock takes test-mode keys only, and its 401 quotes the Authorization header: key included.
    await connect(pool, settings, secret=LIVE_SECRET)
    action = payment_link_action()

    assert await sink_factory().deliver(action) == "failed"

    [create] = stripe.session_creates()
    assert (create.upstream_status, create.status) == (401, 401)
    record = await row(pool, action)
    assert record is not None and (record.status, record.attempts) == ("failed", 1)
    assert record.last_error is not None
    assert record.last_error.startswith("stripe: HTTP 401 invalid_request_error: Please authenticate")
    assert "Bearer sk_live_•••cdef" in record.last_error
    assert_no_secret(record.last_error)
    assert sent == []


async def test_a_disconnected_shop_fails_without_calling_stripe(
    pool: asyncpg.Pool,
    settings: Settings,
    stripe: StripeFaultProxy,
    sink_factory: Callable[..., PaymentLinkSink],
    sent: list[EmailMessage],
) -> None:
    await connect(pool, settings)
    assert await delete_credentials(pool, "shop-1") is True
    assert await delete_credentials(pool, "shop-1") is False
    action = payment_link_action()

    assert await sink_factory().deliver(action) == "failed"

    assert stripe.exchanges == [] and sent == []
    record = await row(pool, action)
    assert record is not None
    assert (record.status, record.attempts, record.last_error) == ("failed", 0, "stripe not connected")


async def test_wording_that_does_not_render_fails_before_stripe_is_asked(
    pool: asyncpg.Pool,
    settings: Settings,
    stripe: StripeFaultProxy,
    sink_factory: Callable[..., PaymentLinkSink],
    sent: list[EmailMessage],
) -> None:
    await connect(pool, settings)
    broken = payment_link_action(templates={**sources(RULE, None), "subject": "Pay {{ amount_in_words }}"})
    incomplete = payment_link_action(templates={"subject": "Pay {{ payment_link }}"})
    sink = sink_factory()

    assert await sink.deliver(broken) == "failed"
    assert await sink.deliver(incomplete) == "failed"

    assert stripe.exchanges == [] and sent == []
    record = await row(pool, broken)
    assert record is not None and record.status == "failed"
    assert (
        record.last_error
        == "template: payment_link_email/subject (line 1): unknown variable: 'amount_in_words' is undefined"
    )
    record = await row(pool, incomplete)
    assert record is not None
    assert record.last_error == "template: payment_link_email: the effect has no template for body.html, body.txt"


async def test_a_worker_whose_key_cannot_open_the_credentials_waits_instead_of_failing(
    pool: asyncpg.Pool, settings: Settings, stripe: StripeFaultProxy, sink_factory: Callable[..., PaymentLinkSink]
) -> None:
    await connect(pool, settings)
    action = payment_link_action()
    for key in (generate_key(), None):  # another key; no key at all
        other = settings.model_copy(update={"secret_key": SecretStr(key) if key else None})
        with pytest.raises(RetryableError, match="STREAMAPP_SECRET_KEY") as raised:
            await sink_factory(using=other).deliver(action)
        assert_no_secret(str(raised.value))
    assert stripe.exchanges == []
    assert await row(pool, action) is None  # rolled back: nothing recorded against the action

    assert await sink_factory().deliver(action) == "applied"


# -- credentials ------------------------------------------------------------------------------------


async def test_the_key_is_sealed_at_rest_and_bound_to_its_shop(pool: asyncpg.Pool, settings: Settings) -> None:
    creds = StripeCredentials(SECRET)
    await save_credentials(pool, settings, "shop-1", creds)

    sealed = bytes(await pool.fetchval("SELECT sealed FROM stripe_credentials WHERE shop_id = 'shop-1'"))
    assert SECRET.encode() not in sealed and b"51StreamappTestKey" not in sealed
    assert await load_credentials(pool, settings, "shop-1") == creds
    assert await load_credentials(pool, settings, "shop-3") is None

    other = StripeCredentials(SECRET.replace("abcdef", "fedcba"))
    await save_credentials(pool, settings, "shop-1", other)
    assert await load_credentials(pool, settings, "shop-1") == other
    assert await pool.fetchval("SELECT count(*) FROM stripe_credentials") == 1

    await pool.execute(
        "INSERT INTO stripe_credentials (shop_id, sealed) SELECT 'shop-2', sealed FROM stripe_credentials"
    )
    with pytest.raises(ConfigurationError, match="belongs to another shop") as raised:
        await load_credentials(pool, settings, "shop-2")
    assert_no_secret(str(raised.value))


async def test_verify_credentials_asks_stripe(settings: Settings, stripe: StripeFaultProxy) -> None:
    account = await verify_credentials(settings, StripeCredentials(SECRET))

    assert account.account_id is not None and account.account_id.startswith("acct_")
    assert (account.livemode, account.hint) == (False, f"{account.account_id} (test mode)")
    assert [(e.method, e.path, e.upstream_status, e.key_suffix) for e in stripe.exchanges] == [
        ("GET", "/v1/checkout/sessions", 200, SECRET[-4:]),
        ("GET", "/v1/account", 200, SECRET[-4:]),
    ]

    stripe.fail_next(1)
    with pytest.raises(RetryableError, match="503") as retry:
        await verify_credentials(settings, StripeCredentials(SECRET))
    with pytest.raises(ConfigurationError, match="Stripe refused the key") as refused:
        await verify_credentials(settings, StripeCredentials(LIVE_SECRET))
    nowhere = settings.model_copy(update={"stripe_api_url": f"http://127.0.0.1:{free_port()}"})
    with pytest.raises(RetryableError, match="no answer from Stripe") as unreachable:
        await verify_credentials(nowhere, StripeCredentials(SECRET))
    for raised in (retry, refused, unreachable):
        assert_no_secret(str(raised.value))


# -- the command line ---------------------------------------------------------------------------------


def test_stripe_connect_status_disconnect(cli: Cli, stripe_api: str) -> None:
    """Through the real entry point (its one-line errors and exit codes), in a fresh process each time."""
    env = {**cli.env, "STREAMAPP_STRIPE_API_URL": stripe_api, "STREAMAPP_SECRET_KEY": KEY, "STRIPE_SECRET_KEY": SECRET}

    def run(*args: str, **extra: str) -> str:
        cli.env = {**env, **extra}
        return cli.ok(*args)

    def refused(*args: str, **extra: str) -> str:
        cli.env = {**env, **extra}
        return cli.refused(*args)

    assert (
        run("stripe", "status", "--shop", "shop-1")
        == "shop shop-1 is not connected to Stripe\npayment links: none yet\n"
    )
    assert "publishable key" in refused(
        "stripe", "connect", "--shop", "shop-1", STRIPE_SECRET_KEY="pk_test_123456789012"
    )
    live = refused("stripe", "connect", "--shop", "shop-1", STRIPE_SECRET_KEY=LIVE_SECRET)
    assert "Stripe refused the key" in live
    assert_no_secret(live)

    connected = run("stripe", "connect", "--shop", "shop-1")
    assert connected.startswith("shop shop-1 is connected to Stripe account acct_")
    assert connected.endswith(" (test mode)\n")
    hint = connected.removeprefix("shop shop-1 is connected to Stripe account ").strip()
    status = run("stripe", "status", "--shop", "shop-1")
    assert status.startswith("shop shop-1 is connected to Stripe since ")
    assert status.endswith(f": account {hint}\npayment links: none yet\n")

    assert (
        run("stripe", "disconnect", "--shop", "shop-1")
        == "shop shop-1 is disconnected from Stripe; its key is deleted\n"
    )
    assert (
        run("stripe", "disconnect", "--shop", "shop-1") == "shop shop-1 is not connected to Stripe; nothing changed\n"
    )
    for output in (connected, status):
        assert_no_secret(output)


# -- the embedded stripe-mock ------------------------------------------------------------------------


def test_stripe_mock_instances_run_side_by_side_on_loopback_and_stop(base_settings: Settings) -> None:
    """stripe-mock would open HTTPS on [::]:12112 too; a second instance would then fail to start."""
    binary = ensure_stripe_mock(base_settings.cache_dir)
    with EmbeddedStripe(binary) as first, EmbeddedStripe(binary) as second:
        assert first.url != second.url and first.url.startswith("http://127.0.0.1:")
        assert first.start_seconds is not None and second.start_seconds is not None
        proc = first.process
        assert proc is not None and proc.poll() is None
    assert proc.poll() is not None and not first.workdir.exists()
