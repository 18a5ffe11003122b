"""The SMS sink through the official Twilio SDK, against Twilio's own contract (Prism) and real PostgreSQL.

Every request goes SDK -> fault proxy -> Prism: Prism judges it against Twilio's OpenAPI
document, the proxy plays the faults the real Twilio would (21610, 401, 503) and records
what was sent. Every test also checks that the auth token never reaches a log record or an
exception message.
"""

from __future__ import annotations

import base64
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime

import asyncpg
import pytest
from pydantic import SecretStr

from schemas.actions import Action, EmailEffect, Lineage, SmsEffect
from streamapp.connections.crypto import generate_key
from streamapp.connections.twilio_account import (
    TwilioCredentials,
    delete_credentials,
    load_credentials,
    save_credentials,
    seal_credentials,
    validate_credentials,
    verify_credentials,
)
from streamapp.embedded.process import free_port
from streamapp.errors import ConfigurationError, RetryableError
from streamapp.queries import get_delivery
from streamapp.settings import Settings
from streamapp.sinks.sms import SmsSink
from tests.harness.sink_contract import SinkContract, SinkDouble
from tests.harness.twilio import TwilioFaultProxy
from tests.harness.waits import Sleeps

pytestmark = pytest.mark.integration

ACCOUNT = "AC" + "0123456789abcdef" * 2
TOKEN = "d3adb33fc0ffee00d3adb33fc0ffee00"
SENDER = "+15005550006"
SERVICE = "MG" + "ab" * 16
TO = "+15551230001"
KEY = generate_key()
#: The token as it travels: inside the Basic auth header.
BASIC = base64.b64encode(f"{ACCOUNT}:{TOKEN}".encode()).decode()


def assert_no_secret(text: str) -> None:
    assert TOKEN not in text and BASIC not in text, "the auth token leaked"


def sms_action(shop_id: str = "shop-1", to: str = TO, text: str = "Your order 1042 is ready for pickup.") -> Action:
    return Action(
        action_id=f"act-{uuid.uuid4().hex[:12]}",
        shop_id=shop_id,
        customer_id="cust-1",
        rule_id="order.ready",
        rule_name="Order ready",
        trigger="job.status_changed",
        occurred_at=datetime(2026, 11, 23, 12, 30, tzinfo=UTC),
        effect=SmsEffect(to=to, template_key="order-ready", text=text),
        lineage=Lineage(event_id="evt-1", topic="job-status", partition=0, offset=7),
    )


# -- fixtures (``twilio_api`` and ``twilio`` come from tests/conftest.py) ---------------------------------


@pytest.fixture(autouse=True)
def no_token_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Every record of the test at DEBUG, the SDK's own included. (``caplog.text`` at teardown holds
    only the teardown's records: the setup's and the call's are read by phase.)"""
    caplog.set_level(logging.DEBUG)
    yield
    formatter = logging.Formatter()
    for record in [*caplog.get_records("setup"), *caplog.get_records("call")]:
        assert_no_secret(formatter.format(record))


@pytest.fixture
def settings(twilio: TwilioFaultProxy) -> Settings:
    return Settings(secret_key=SecretStr(KEY), twilio_api_url=twilio.url)


@pytest.fixture
async def sink_factory(pool: asyncpg.Pool, settings: Settings) -> AsyncIterator[Callable[..., SmsSink]]:
    sinks: list[SmsSink] = []

    def make(*, sleeps: Sleeps | None = None, max_attempts: int = 5, using: Settings | None = None) -> SmsSink:
        sink = SmsSink(pool, using or settings, sleep=sleeps or Sleeps(), max_attempts=max_attempts, timeout=10.0)
        sinks.append(sink)
        return sink

    yield make
    for sink in sinks:
        await sink.close()


async def connect(pool: asyncpg.Pool, settings: Settings, shop_id: str = "shop-1", sender: str = SENDER) -> None:
    await save_credentials(pool, settings, shop_id, TwilioCredentials(ACCOUNT, TOKEN, sender))


# -- the sink contract (tests/harness/sink_contract.py) ---------------------------------------


class SmsDouble(SinkDouble):
    """The SMS sink against Twilio's contract (Prism) behind the fault proxy; the shop is connected."""

    channel = "sms"
    earlier_error = "HTTP 503 code 20503: earlier"
    transient_error = "20503"
    permanent_error = ("HTTP 401 code 20003: Unable to create record: Authenticate",)
    foreign_channel = "email"

    def __init__(self, twilio: TwilioFaultProxy, sink_factory: Callable[..., SmsSink]) -> None:
        self.twilio, self.sink_factory = twilio, sink_factory

    def action(self) -> Action:
        return sms_action()

    def foreign_effect(self) -> EmailEffect:
        return EmailEffect(to="a@example.com", to_name="A", template_key="k", subject="s", text_body="b")

    def sink(self, *, sleeps: Sleeps | None = None, max_attempts: int = 5) -> SmsSink:
        return self.sink_factory(sleeps=sleeps, max_attempts=max_attempts)

    def fail_transiently(self, count: int) -> None:
        self.twilio.fail_next(count)

    def fail_permanently(self) -> None:
        self.twilio.refuse_account(ACCOUNT)

    def hold(self) -> None:
        self.twilio.hold_message_creates()

    def holding(self) -> bool:
        return self.twilio.holding.is_set()

    def release(self) -> None:
        self.twilio.release()

    def requests(self) -> int:
        return len(self.twilio.message_creates())

    def performed(self) -> int:
        return len(self.twilio.sent(TO))


class TestSmsSinkContract(SinkContract):
    @pytest.fixture
    async def double(
        self, pool: asyncpg.Pool, settings: Settings, twilio: TwilioFaultProxy, sink_factory: Callable[..., SmsSink]
    ) -> SinkDouble:
        await connect(pool, settings)
        return SmsDouble(twilio, sink_factory)


# -- sending ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sender", "sender_field"), [(SENDER, "From"), (SERVICE, "MessagingServiceSid")], ids=["number", "service"]
)
async def test_an_sms_is_sent_once_through_the_sdk_and_twilio_accepts_it(
    pool: asyncpg.Pool,
    settings: Settings,
    twilio: TwilioFaultProxy,
    sink_factory: Callable[..., SmsSink],
    sender: str,
    sender_field: str,
) -> None:
    await connect(pool, settings, sender=sender)
    sink = sink_factory()
    action = sms_action()

    assert await sink.deliver(action) == "applied"
    assert await sink.deliver(action) == "duplicate"

    [create] = twilio.message_creates()
    assert (create.prism_status, create.status, create.account_sid) == (201, 201, ACCOUNT)
    assert create.path == f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json"
    assert dict(create.form) == {"To": TO, sender_field: sender, "Body": "Your order 1042 is ready for pickup."}
    delivery = await get_delivery(pool, action.action_id)
    assert delivery is not None
    assert (delivery.channel, delivery.status, delivery.attempts, delivery.recipient, delivery.last_error) == (
        "sms",
        "sent",
        1,
        TO,
        None,
    )
    assert delivery.provider_message_id == "SM" + "a" * 32  # the SID in Twilio's example answer


async def test_transient_503s_are_retried_with_backoff(
    pool: asyncpg.Pool, settings: Settings, twilio: TwilioFaultProxy, sink_factory: Callable[..., SmsSink]
) -> None:
    await connect(pool, settings)
    twilio.fail_next(2)
    sleeps = Sleeps()
    action = sms_action()

    assert await sink_factory(sleeps=sleeps).deliver(action) == "applied"

    assert sleeps.delays == [0.5, 1.0]
    assert [(c.prism_status, c.status) for c in twilio.message_creates()] == [(201, 503), (201, 503), (201, 201)]
    assert len(twilio.sent(TO)) == 1
    delivery = await get_delivery(pool, action.action_id)
    assert delivery is not None and (delivery.status, delivery.attempts, delivery.last_error) == ("sent", 3, None)


async def test_exhausted_attempts_raise_retryable_and_a_redelivery_sends(
    pool: asyncpg.Pool, settings: Settings, twilio: TwilioFaultProxy, sink_factory: Callable[..., SmsSink]
) -> None:
    await connect(pool, settings)
    twilio.fail_next(3)
    sleeps = Sleeps()
    action = sms_action()

    with pytest.raises(RetryableError, match="20503") as raised:
        await sink_factory(sleeps=sleeps, max_attempts=3).deliver(action)

    assert_no_secret(str(raised.value))
    assert sleeps.delays == [0.5, 1.0] and twilio.sent() == []
    delivery = await get_delivery(pool, action.action_id)
    assert delivery is not None and (delivery.status, delivery.attempts) == ("pending", 3)
    assert delivery.last_error == "HTTP 503 code 20503: Unable to create record: Service Unavailable"

    assert await sink_factory(sleeps=sleeps).deliver(action) == "applied"
    assert len(twilio.sent(TO)) == 1
    delivery = await get_delivery(pool, action.action_id)
    assert delivery is not None and (delivery.status, delivery.attempts) == ("sent", 4)


async def test_unreachable_twilio_raises_retryable(pool: asyncpg.Pool, sink_factory: Callable[..., SmsSink]) -> None:
    nowhere = Settings(secret_key=SecretStr(KEY), twilio_api_url=f"http://127.0.0.1:{free_port()}")
    await connect(pool, nowhere)
    sleeps = Sleeps()
    action = sms_action()

    with pytest.raises(RetryableError, match="ClientConnectorError") as raised:
        await sink_factory(sleeps=sleeps, max_attempts=2, using=nowhere).deliver(action)

    assert_no_secret(str(raised.value))
    assert sleeps.delays == [0.5]
    delivery = await get_delivery(pool, action.action_id)
    assert delivery is not None and (delivery.status, delivery.attempts) == ("pending", 2)


# -- opt-outs and permanent failures -------------------------------------------------------


async def test_an_opted_out_recipient_is_recorded_never_retried_and_never_texted_again(
    pool: asyncpg.Pool, settings: Settings, twilio: TwilioFaultProxy, sink_factory: Callable[..., SmsSink]
) -> None:
    await connect(pool, settings)
    await connect(pool, settings, shop_id="shop-2")
    twilio.opt_out(TO)
    sleeps = Sleeps()
    sink = sink_factory(sleeps=sleeps)
    first, later = sms_action(), sms_action()

    assert await sink.deliver(first) == "failed"

    assert sleeps.delays == []
    [attempt] = twilio.message_creates(TO)
    assert (attempt.prism_status, attempt.status) == (201, 400)  # a valid request, refused by "Twilio"
    error = "HTTP 400 code 21610: Unable to create record: Attempt to send to unsubscribed recipient"
    delivery = await get_delivery(pool, first.action_id)
    assert delivery is not None and (delivery.status, delivery.attempts, delivery.last_error) == ("opted_out", 1, error)
    opt_outs = await pool.fetch("SELECT shop_id, phone, action_id, error FROM sms_opt_outs")
    assert [tuple(row) for row in opt_outs] == [("shop-1", TO, first.action_id, error)]

    assert await sink.deliver(first) == "duplicate"
    assert await sink.deliver(later) == "failed"
    assert len(twilio.message_creates()) == 1  # neither the redelivery nor the later action reached Twilio
    delivery = await get_delivery(pool, later.action_id)
    assert delivery is not None and (delivery.status, delivery.attempts) == ("opted_out", 0)
    assert delivery.last_error is not None and first.action_id in delivery.last_error

    # The record is per shop: another shop's SMS to the number still asks Twilio, which decides (here: refuses too).
    other_shop = sms_action(shop_id="shop-2")
    assert await sink.deliver(other_shop) == "failed"
    assert len(twilio.message_creates(TO)) == 2
    assert await pool.fetchval("SELECT count(*) FROM sms_opt_outs WHERE phone = $1", TO) == 2


async def test_a_request_that_breaks_twilios_contract_fails_with_its_reason(
    pool: asyncpg.Pool, settings: Settings, twilio: TwilioFaultProxy, sink_factory: Callable[..., SmsSink]
) -> None:
    # Credentials that got past validation (an older, looser version wrote them): Twilio's contract is the judge.
    malformed = TwilioCredentials(ACCOUNT, TOKEN, "MG" + "z" * 32)
    await pool.execute(
        "INSERT INTO sms_credentials (shop_id, sealed) VALUES ('shop-1', $1)",
        seal_credentials(settings, "shop-1", malformed),
    )
    sleeps = Sleeps()
    sink = sink_factory(sleeps=sleeps)
    action = sms_action()

    assert await sink.deliver(action) == "failed"

    assert sleeps.delays == []
    [create] = twilio.message_creates()
    assert (create.prism_status, create.status) == (422, 422)
    delivery = await get_delivery(pool, action.action_id)
    assert delivery is not None and (delivery.status, delivery.attempts) == ("failed", 1)
    assert delivery.last_error is not None
    assert delivery.last_error.startswith("HTTP 422: Unable to create record: Invalid request")
    assert 'Request body property MessagingServiceSid must match pattern "^MG[0-9a-fA-F]{32}$"' in delivery.last_error
    assert await sink.deliver(action) == "duplicate"
    assert len(twilio.message_creates()) == 1


async def test_refused_credentials_fail_the_sms_with_twilios_code(
    pool: asyncpg.Pool, settings: Settings, twilio: TwilioFaultProxy, sink_factory: Callable[..., SmsSink]
) -> None:
    await connect(pool, settings)
    twilio.refuse_account(ACCOUNT)
    sleeps = Sleeps()
    action = sms_action()

    assert await sink_factory(sleeps=sleeps).deliver(action) == "failed"

    assert sleeps.delays == [] and len(twilio.message_creates()) == 1
    delivery = await get_delivery(pool, action.action_id)
    assert delivery is not None and (delivery.status, delivery.attempts) == ("failed", 1)
    assert delivery.last_error == "HTTP 401 code 20003: Unable to create record: Authenticate"


async def test_a_disconnected_shop_fails_the_sms_without_calling_twilio(
    pool: asyncpg.Pool, settings: Settings, twilio: TwilioFaultProxy, sink_factory: Callable[..., SmsSink]
) -> None:
    await connect(pool, settings)
    assert await delete_credentials(pool, "shop-1") is True
    assert await delete_credentials(pool, "shop-1") is False
    action = sms_action()

    assert await sink_factory().deliver(action) == "failed"

    assert twilio.exchanges == []
    delivery = await get_delivery(pool, action.action_id)
    assert delivery is not None
    assert (delivery.status, delivery.attempts, delivery.last_error) == ("failed", 0, "twilio not connected")


# -- credentials at rest -------------------------------------------------------------------


async def test_credentials_are_sealed_at_rest_and_bound_to_their_shop(pool: asyncpg.Pool, settings: Settings) -> None:
    creds = TwilioCredentials(ACCOUNT, TOKEN, SENDER)
    await save_credentials(pool, settings, "shop-1", creds)

    sealed = bytes(await pool.fetchval("SELECT sealed FROM sms_credentials WHERE shop_id = 'shop-1'"))
    for clear in (TOKEN, ACCOUNT, SENDER):
        assert clear.encode() not in sealed
    assert await load_credentials(pool, settings, "shop-1") == creds
    assert await load_credentials(pool, settings, "shop-3") is None

    # Saving again replaces the connection.
    service = TwilioCredentials(ACCOUNT, TOKEN, SERVICE)
    await save_credentials(pool, settings, "shop-1", service)
    assert await load_credentials(pool, settings, "shop-1") == service
    assert await pool.fetchval("SELECT count(*) FROM sms_credentials") == 1

    # A sealed value copied onto another shop's row does not send from this shop's account.
    await pool.execute("INSERT INTO sms_credentials (shop_id, sealed) SELECT 'shop-2', sealed FROM sms_credentials")
    with pytest.raises(ConfigurationError, match="belong to another shop") as raised:
        await load_credentials(pool, settings, "shop-2")
    assert_no_secret(str(raised.value))


async def test_a_worker_whose_key_cannot_open_the_credentials_waits_instead_of_failing(
    pool: asyncpg.Pool, settings: Settings, twilio: TwilioFaultProxy, sink_factory: Callable[..., SmsSink]
) -> None:
    await connect(pool, settings)
    action = sms_action()
    for key in (generate_key(), None):  # another key; no key at all
        other = Settings(secret_key=SecretStr(key) if key else None, twilio_api_url=twilio.url)
        with pytest.raises(RetryableError, match="STREAMAPP_SECRET_KEY") as raised:
            await sink_factory(using=other).deliver(action)
        assert_no_secret(str(raised.value))
    assert twilio.exchanges == []
    assert await get_delivery(pool, action.action_id) is None  # rolled back: nothing recorded against the action

    assert await sink_factory().deliver(action) == "applied"  # with the right key, the same action goes out


async def test_verify_credentials_asks_twilio(pool: asyncpg.Pool, settings: Settings, twilio: TwilioFaultProxy) -> None:
    creds = TwilioCredentials(ACCOUNT, TOKEN, SENDER)
    await verify_credentials(settings, creds)
    [fetch] = twilio.exchanges
    assert (fetch.method, fetch.path, fetch.account_sid, fetch.prism_status) == (
        "GET",
        f"/2010-04-01/Accounts/{ACCOUNT}.json",
        ACCOUNT,
        200,
    )

    twilio.fail_next(1)
    with pytest.raises(RetryableError, match="503") as retry:
        await verify_credentials(settings, creds)
    twilio.refuse_account(ACCOUNT)
    with pytest.raises(ConfigurationError, match="Twilio refused the credentials") as refused:
        await verify_credentials(settings, creds)
    nowhere = Settings(secret_key=SecretStr(KEY), twilio_api_url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(RetryableError, match="unreachable") as unreachable:
        await verify_credentials(nowhere, creds)
    for raised in (retry, refused, unreachable):
        assert_no_secret(str(raised.value))


@pytest.mark.parametrize(
    ("account_sid", "auth_token", "sender", "field"),
    [
        ("AC123", TOKEN, SENDER, "account SID"),
        ("XX" + "0" * 32, TOKEN, SENDER, "account SID"),
        (ACCOUNT, TOKEN[:-1] + "g", SENDER, "auth token"),
        (ACCOUNT, TOKEN + "00", SENDER, "auth token"),
        (ACCOUNT, TOKEN, "5551234", "sender"),
        (ACCOUNT, TOKEN, "+0551234567", "sender"),
        (ACCOUNT, TOKEN, "MG123", "messaging service SID"),
    ],
)
async def test_malformed_credentials_are_refused_naming_the_field_never_the_token(
    pool: asyncpg.Pool, settings: Settings, account_sid: str, auth_token: str, sender: str, field: str
) -> None:
    creds = TwilioCredentials(account_sid, auth_token, sender)
    with pytest.raises(ConfigurationError, match=field) as raised:
        validate_credentials(creds)
    assert auth_token not in str(raised.value) and TOKEN[:-1] not in str(raised.value)
    with pytest.raises(ConfigurationError, match=field):
        await save_credentials(pool, settings, "shop-1", creds)
    assert await pool.fetchval("SELECT count(*) FROM sms_credentials") == 0


def test_credentials_never_show_their_token() -> None:
    creds = TwilioCredentials(ACCOUNT, TOKEN, SENDER)
    validate_credentials(creds)
    for shown in (repr(creds), str(creds), f"{creds}", f"{creds!r}"):
        assert TOKEN not in shown and ACCOUNT in shown
    logging.getLogger(__name__).info("connected %s", creds)
