"""Drives the real streamapp worker: publish shop config, produce events, drain, read results."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer

from schemas.actions import Action
from schemas.config import EmailTemplate, OrderCountRule, Record
from schemas.deadletter import DeadLetter
from schemas.internal import Tick
from streamapp import shop_config
from streamapp.db import upgrade
from streamapp.settings import Settings
from streamapp.topics import (
    ACTIONS,
    DEAD_LETTERS,
    INVOICES,
    JOB_STATUS,
    ORDERS,
    PAYMENTS,
    PAYMENTS_BY_CUSTOMER,
    ensure_topics,
    topic_name,
)
from tests.harness.kafka import group_lag, produce, read_all
from tests.harness.services import Worker, new_database
from tests.harness.settings import isolated_settings, settings_env
from tests.harness.smtp import Recorder
from tests.harness.waits import wait_for


def pipeline_settings(
    name: str, kafka_bootstrap: str, postgres_url: str, smtp_port: int, data_dir: Path, **overrides: Any
) -> Settings:
    """Settings of one pipeline test: its own app id, topics (created) and migrated database; fast commits."""
    database_url = new_database(postgres_url)
    upgrade(database_url)
    values: dict[str, Any] = {
        "database_url": database_url,
        "commit_interval_seconds": 0.5,
        "smtp_host": "127.0.0.1",
        "smtp_port": smtp_port,
        **overrides,
    }
    settings = isolated_settings(name, kafka_bootstrap, data_dir, **values)
    asyncio.run(ensure_topics(settings))
    return settings


def own_worker(settings: Settings, folder: Path, name: str) -> Worker:
    """A worker of ``settings``' app with its own data dir ``folder/name`` (as a second host would have)
    and log ``folder/name.log``; started, not waited for."""
    env = {**settings_env(settings), "STREAMAPP_DATA_DIR": str(folder / name)}
    return Worker("streamapp.app", env, folder / f"{name}.log")


def now() -> datetime:
    return datetime.now(UTC)


class Pipeline:
    """One running worker (or several) of ``settings``' app, and ways to talk to it."""

    def __init__(self, settings: Settings, smtp: Recorder | None = None) -> None:
        self.settings = settings
        self.smtp = smtp
        self.bootstrap = settings.kafka_bootstrap_servers or ""
        self.payments = topic_name(settings, PAYMENTS)
        self.orders = topic_name(settings, ORDERS)
        self.job_status = topic_name(settings, JOB_STATUS)
        self.internal = topic_name(settings, PAYMENTS_BY_CUSTOMER)
        self.invoices = topic_name(settings, INVOICES)
        self.workers: list[Worker] = []

    # -- shop configuration ---------------------------------------------------------------
    def publish(self, record: Record) -> None:
        asyncio.run(shop_config.publish(self.settings, record))

    def add_rule(self, shop: str, name: str, orders: int, action: str, **fields: Any) -> OrderCountRule:
        moment = now()
        rule = OrderCountRule(
            shop_id=shop,
            rule_id=uuid.uuid4().hex[:12],
            name=name,
            orders=orders,
            action=action,  # type: ignore[arg-type]
            effective_at=moment,
            updated_at=moment,
            **fields,
        )
        self.publish(rule)
        return rule

    def switch(self, rule: OrderCountRule, enabled: bool) -> OrderCountRule:
        moment = now()
        changed = rule.model_copy(
            update={"enabled": enabled, "updated_at": moment, **({"effective_at": moment} if enabled else {})}
        )
        self.publish(changed)
        return changed

    def add_template(self, shop: str, key: str, subject: str, body: str) -> None:
        self.publish(EmailTemplate(shop_id=shop, key=key, subject=subject, body=body, updated_at=now()))

    # -- events ---------------------------------------------------------------------------
    def pay(
        self,
        shop: str,
        customer: str,
        order: str,
        *,
        event_id: str | None = None,
        occurred_at: datetime | None = None,
        name: str = "Ann Lee",
        key: bytes | None = None,
    ) -> str:
        event_id = event_id or uuid.uuid4().hex
        value = {
            "type": "payment.succeeded",
            "event_id": event_id,
            "shop_id": shop,
            "occurred_at": (occurred_at or now()).isoformat(),
            "customer": {"customer_id": customer, "name": name, "email": f"{customer}@example.com"},
            "order_id": order,
            "payment_id": f"pay-{uuid.uuid4().hex[:8]}",
            "amount_cents": 1999,
        }
        self.send_raw(key if key is not None else f"{shop}:{customer}".encode(), json.dumps(value).encode())
        return event_id

    def send_raw(self, key: bytes | None, value: bytes | None, topic: str | None = None) -> None:
        asyncio.run(produce(self.bootstrap, topic or self.payments, [(key, value)]))  # type: ignore[list-item]

    def send_event(self, event: dict[str, Any]) -> None:
        """Produce ``event`` to the topic of its type, keyed as the contract says."""
        topic = {"order": self.orders, "reorder": self.orders, "lead": self.orders, "job": self.job_status}.get(
            event["type"].split(".")[0], self.job_status if event["type"].startswith("artwork.") else self.payments
        )
        who = event["customer"]["customer_id"] if "customer" in event else event["lead"]["lead_id"]
        self.send_raw(f"{event['shop_id']}:{who}".encode(), json.dumps(event).encode(), topic)

    def tick(self, now: datetime, tick_id: str | None = None) -> str:
        """The controlled clock: tell every partition of the invoices topic that it is ``now``."""
        tick = Tick(tick_id=tick_id or uuid.uuid4().hex, now=now)
        value = tick.model_dump_json().encode()

        async def send() -> None:
            producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
            await producer.start()
            try:
                for partition in range(self.settings.topic_partitions):
                    await producer.send_and_wait(self.invoices, value=value, partition=partition)
            finally:
                await producer.stop()

        asyncio.run(send())
        return tick.tick_id

    def drain(self, timeout: float = 60.0) -> None:
        """Wait until the worker has committed every input event, then every re-keyed payment.

        A worker commits only after flushing what it sent, so once both are committed
        every action those events produce is on the actions topic.
        """
        group = self.settings.app_id
        for topic in (self.orders, self.job_status, self.payments, self.internal, self.invoices):
            lags: dict[Any, int] = {}

            def committed_all(t: str = topic, lags: dict[Any, int] = lags) -> bool:
                lags.update(asyncio.run(group_lag(self.bootstrap, group, [t])))
                return not any(lags.values())

            try:
                wait_for(committed_all, timeout=timeout, what=f"group {group} to commit all of {topic}", interval=0.2)
            except AssertionError as exc:
                behind = {f"{tp.topic}[{tp.partition}]": lag for tp, lag in lags.items() if lag}
                raise AssertionError(f"{exc}; uncommitted per partition: {behind}") from None

    # -- results --------------------------------------------------------------------------
    def actions(self, shop: str) -> list[Action]:
        records = asyncio.run(read_all(self.bootstrap, topic_name(self.settings, ACTIONS)))
        actions = [Action.model_validate_json(r.value) for r in records if r.value is not None]
        return [a for a in actions if a.shop_id == shop]

    def dead_letters(self) -> list[DeadLetter]:
        records = asyncio.run(read_all(self.bootstrap, topic_name(self.settings, DEAD_LETTERS)))
        return [DeadLetter.model_validate_json(r.value) for r in records if r.value is not None]

    # -- effects in PostgreSQL ------------------------------------------------------------
    def sql(self, query: str, *args: Any) -> list[asyncpg.Record]:
        async def run() -> list[asyncpg.Record]:
            conn = await asyncpg.connect(self.database_url)
            try:
                return list(await conn.fetch(query, *args))
            finally:
                await conn.close()

        return asyncio.run(run())

    @property
    def database_url(self) -> str:
        assert self.settings.database_url is not None
        return self.settings.database_url.get_secret_value()

    def wait_effects(
        self, shop: str, *, credits: int = 0, alerts: int = 0, emails: int = 0, timeout: float = 60.0
    ) -> None:
        """Wait until ``shop`` has at least these many ledger entries, alerts and sent emails."""

        def counts() -> tuple[int, int, int]:
            row = self.sql(
                "SELECT (SELECT count(*) FROM ledger_entries WHERE shop_id = $1),"
                " (SELECT count(*) FROM alerts WHERE shop_id = $1),"
                " (SELECT count(*) FROM deliveries WHERE shop_id = $1 AND status <> 'pending')",
                shop,
            )[0]
            return int(row[0]), int(row[1]), int(row[2])

        wait_for(
            lambda: all(have >= want for have, want in zip(counts(), (credits, alerts, emails), strict=True)),
            timeout=timeout,
            what=f"effects of {shop}",
            interval=0.2,
        )
