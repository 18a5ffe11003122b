"""Sinks against the real PostgreSQL and a real SMTP server: idempotent on action_id, honest on failure."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from aiosmtpd.controller import Controller

from schemas.actions import Action, AlertEffect, CreditEffect, EmailEffect, Lineage
from streamapp.db import durability_warnings
from streamapp.embedded.process import free_port
from streamapp.errors import RetryableError
from streamapp.queries import get_delivery, ledger_balance, list_alerts
from streamapp.settings import Settings
from streamapp.sinks import AlertSink, EmailSink, LedgerSink
from streamapp.sinks.deliveries import backoff
from tests.harness.sink_contract import SinkContract, SinkDouble
from tests.harness.smtp import Recorder
from tests.harness.waits import Sleeps

pytestmark = pytest.mark.integration

OCCURRED_AT = datetime(2026, 11, 23, 12, 30, tzinfo=UTC)


def make_action(effect: EmailEffect | CreditEffect | AlertEffect, customer_id: str = "cust-1") -> Action:
    return Action(
        action_id=f"act-{uuid.uuid4().hex[:12]}",
        shop_id="shop-1",
        customer_id=customer_id,
        rule_id="rule-10",
        rule_name="Tenth order",
        trigger="order_count",
        order_count=10,
        occurred_at=OCCURRED_AT,
        effect=effect,
        lineage=Lineage(event_id="evt-1", topic="orders", partition=0, offset=41),
    )


def email_action(**overrides: Any) -> Action:
    values: dict[str, Any] = {
        "to": "ada@example.com",
        "to_name": "Ada Lovelace",
        "template_key": "tenth-order",
        "subject": "Your 10th order",
        "text_body": "Thank you, Ada.",
        "html_body": "<p>Thank you, <b>Ada</b>.</p>",
    }
    values.update(overrides)
    return make_action(EmailEffect(**values))


class Scripted(Recorder):
    """Refuses the next recipients it is told to, and holds every DATA while ``gate`` is closed (bounded)."""

    def __init__(self) -> None:
        super().__init__()
        self.refusals: list[str] = []
        self.in_data = threading.Event()
        self.gate = threading.Event()
        self.gate.set()

    def refuse_rcpt(self) -> str | None:
        return self.refusals.pop(0) if self.refusals else None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.in_data.set()
        await asyncio.get_running_loop().run_in_executor(None, self.gate.wait, 10)
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def smtp_factory() -> Iterator[Callable[..., int]]:
    """Starts a real SMTP server on 127.0.0.1 with a handler; returns its port. Stopped at teardown."""
    started: list[Controller] = []

    def start(handler: Recorder, port: int | None = None) -> int:
        controller = Controller(handler, hostname="127.0.0.1", port=port or free_port(), ready_timeout=10)
        controller.start()
        started.append(controller)
        return int(controller.port)

    yield start
    for controller in started:
        controller.stop()


def email_sink(pool: asyncpg.Pool, port: int, sleeps: Sleeps | None = None, max_attempts: int = 5) -> EmailSink:
    settings = Settings(smtp_host="127.0.0.1", smtp_port=port, smtp_from="shop@streamapp.test")
    return EmailSink(pool, settings, sleep=sleeps or Sleeps(), max_attempts=max_attempts, timeout=5.0)


class EmailDouble(SinkDouble):
    """The email sink against a real SMTP server (aiosmtpd)."""

    channel = "email"
    earlier_error = "451 earlier"
    transient_error = "451"
    permanent_error = ("550", "No such user")
    foreign_channel = "alert"

    def __init__(self, pool: asyncpg.Pool, server: Scripted, port: int) -> None:
        self.pool, self.server, self.port = pool, server, port

    def action(self) -> Action:
        return email_action()

    def foreign_effect(self) -> AlertEffect:
        return AlertEffect(text="not an email")

    def sink(self, *, sleeps: Sleeps | None = None, max_attempts: int = 5) -> EmailSink:
        return email_sink(self.pool, self.port, sleeps, max_attempts)

    def fail_transiently(self, count: int) -> None:
        self.server.refusals += ["451 4.3.0 Try again later"] * count

    def fail_permanently(self) -> None:
        self.server.refusals.append("550 5.1.1 No such user")

    def hold(self) -> None:
        self.server.gate.clear()

    def holding(self) -> bool:
        return self.server.in_data.is_set()

    def release(self) -> None:
        self.server.gate.set()

    def requests(self) -> int:
        return self.server.rcpt_calls

    def performed(self) -> int:
        return len(self.server.messages)


class TestEmailSinkContract(SinkContract):
    @pytest.fixture
    def double(self, pool: asyncpg.Pool, smtp_factory: Callable[..., int]) -> SinkDouble:
        server = Scripted()
        return EmailDouble(pool, server, smtp_factory(server))


async def test_credit_delivered_twice_is_one_ledger_entry(pool: asyncpg.Pool) -> None:
    sink = LedgerSink(pool)
    credit = make_action(CreditEffect(amount_cents=2000, currency="EUR", reason="10th order"))
    other = make_action(CreditEffect(amount_cents=500, currency="EUR", reason="5th order"))

    assert await sink.deliver(credit) == "applied"
    assert await sink.deliver(credit) == "duplicate"
    assert await sink.deliver(other) == "applied"

    row = await pool.fetchrow("SELECT count(*), min(reason) FROM ledger_entries WHERE action_id = $1", credit.action_id)
    assert tuple(row) == (1, "10th order")
    assert await ledger_balance(pool, "shop-1", "cust-1") == 2500
    assert await ledger_balance(pool, "shop-1", "nobody") == 0


async def test_alert_delivered_twice_is_one_alert(pool: asyncpg.Pool) -> None:
    sink = AlertSink(pool)
    alert = make_action(AlertEffect(text="Ada placed her 10th order"))

    assert await sink.deliver(alert) == "applied"
    assert await sink.deliver(alert) == "duplicate"

    async with pool.acquire() as conn:
        alerts = await list_alerts(conn, "shop-1")
    assert [(a.action_id, a.rule_id, a.text, a.occurred_at, a.read_at) for a in alerts] == [
        (alert.action_id, "rule-10", "Ada placed her 10th order", OCCURRED_AT, None)
    ]
    assert await list_alerts(pool, "shop-2") == []


async def test_a_run_of_credits_is_one_statement_each_applied_once(pool: asyncpg.Pool) -> None:
    sink = LedgerSink(pool)
    done = make_action(CreditEffect(amount_cents=100, currency="EUR", reason="done before"), customer_id="cust-run")
    fresh = [
        make_action(CreditEffect(amount_cents=1000 * n, currency="EUR", reason=f"run {n}"), customer_id="cust-run")
        for n in (1, 2)
    ]
    assert await sink.deliver(done) == "applied"

    # Redelivered inside one batch (twice), and one already in the ledger: applied once, at its first place.
    outcomes = await sink.deliver_many([fresh[0], done, fresh[1], fresh[0]])

    assert outcomes == ["applied", "duplicate", "applied", "duplicate"]
    assert await ledger_balance(pool, "shop-1", "cust-run") == 3100
    assert await sink.deliver_many(fresh) == ["duplicate", "duplicate"]


async def test_a_run_of_alerts_is_one_statement_each_shown_once(pool: asyncpg.Pool) -> None:
    sink = AlertSink(pool)
    alerts = [make_action(AlertEffect(text=f"alert {n}"), customer_id="cust-alerts") for n in range(3)]

    assert await sink.deliver_many([alerts[0], alerts[1], alerts[0]]) == ["applied", "applied", "duplicate"]
    assert await sink.deliver_many(alerts) == ["duplicate", "duplicate", "applied"]

    async with pool.acquire() as conn:
        shown = {a.action_id: (a.text, a.occurred_at) for a in await list_alerts(conn, "shop-1")}
    assert {action.action_id for action in alerts} <= set(shown)
    assert shown[alerts[2].action_id] == ("alert 2", OCCURRED_AT)


async def test_a_sink_refuses_another_channel(pool: asyncpg.Pool) -> None:
    with pytest.raises(ValueError, match="alert"):
        await LedgerSink(pool).deliver(make_action(AlertEffect(text="not money")))


async def test_email_delivered_twice_is_sent_once(pool: asyncpg.Pool, smtp_factory: Callable[..., int]) -> None:
    server = Recorder()
    sink = email_sink(pool, smtp_factory(server))
    action = email_action()

    assert await sink.deliver(action) == "applied"
    assert await sink.deliver(action) == "duplicate"

    assert len(server.messages) == 1 and server.rcpt_calls == 1
    message = server.messages[0]
    assert message["To"] == "Ada Lovelace <ada@example.com>"
    assert message["From"] == "shop@streamapp.test"
    assert message["Subject"] == "Your 10th order"
    assert message["Message-ID"] == f"<{action.action_id}@streamapp>"
    assert message["X-Streamapp-Action-Id"] == action.action_id
    plain, html = message.get_body(("plain",)), message.get_body(("html",))
    assert plain is not None and plain.get_content().strip() == "Thank you, Ada."
    assert html is not None and html.get_content().strip() == "<p>Thank you, <b>Ada</b>.</p>"

    delivery = await get_delivery(pool, action.action_id)
    assert delivery is not None
    assert (delivery.channel, delivery.status, delivery.attempts, delivery.recipient, delivery.last_error) == (
        "email",
        "sent",
        1,
        "ada@example.com",
        None,
    )
    assert delivery.provider_message_id is not None and "Q1" in delivery.provider_message_id
    assert await get_delivery(pool, "never-delivered") is None


async def test_unsendable_header_is_a_failed_delivery_not_a_crash(
    pool: asyncpg.Pool, smtp_factory: Callable[..., int]
) -> None:
    server = Recorder()
    action = email_action(subject="Hello\r\nBcc: everyone@example.com")

    assert await email_sink(pool, smtp_factory(server)).deliver(action) == "failed"

    assert server.rcpt_calls == 0
    delivery = await get_delivery(pool, action.action_id)
    assert delivery is not None and delivery.status == "failed"
    assert delivery.last_error is not None and delivery.last_error.startswith("invalid message")


async def test_unreachable_server_raises_retryable_and_a_redelivery_sends(
    pool: asyncpg.Pool, smtp_factory: Callable[..., int]
) -> None:
    port = free_port()  # nobody listens here yet
    sleeps = Sleeps()
    action = email_action()

    with pytest.raises(RetryableError):
        await email_sink(pool, port, sleeps, max_attempts=2).deliver(action)

    assert sleeps.delays == [0.5]
    delivery = await get_delivery(pool, action.action_id)
    assert delivery is not None and (delivery.status, delivery.attempts) == ("pending", 2)
    assert delivery.last_error

    server = Recorder()
    smtp_factory(server, port)
    assert await email_sink(pool, port, sleeps).deliver(action) == "applied"
    assert len(server.messages) == 1
    delivery = await get_delivery(pool, action.action_id)
    assert delivery is not None and (delivery.status, delivery.attempts) == ("sent", 3)


def test_backoff_doubles_from_half_a_second_up_to_30s() -> None:
    assert [backoff(attempt) for attempt in range(1, 9)] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


async def test_durability_warnings_name_what_a_postgres_crash_would_lose(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        fsync_off = await conn.fetchval("SHOW fsync") == "off"
        await conn.execute("SET synchronous_commit = off")
        warnings = await durability_warnings(conn)
        assert warnings[0] == (
            "synchronous_commit is off: a PostgreSQL crash can lose credits and delivery records it "
            "acknowledged; effects may then be lost or sent twice"
        )
        await conn.execute("SET synchronous_commit = on")
        assert [w.split()[0] for w in await durability_warnings(conn)] == (["fsync"] if fsync_off else [])
    finally:
        await conn.close()
