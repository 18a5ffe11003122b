"""The fault-injection harness of the reliability suite: a driver, a nemesis and a verifier.

Modelled on how Apache Kafka tests its own exactly-once guarantee: the **driver** produces
known input (payments, job events, invoices, leads, and poison interleaved) while the
**nemesis** kills, stops, adds and removes workers and breaks the providers; then
everything is healed, the pipeline drains, and the **verifier** recomputes from the input
alone which effects must exist and compares them with what PostgreSQL, the SMTP server,
Twilio's contract server and Stripe's mock actually saw.

Everything is real: Apache Kafka, a PostgreSQL server of this world's own (so that it can
be restarted), an SMTP server (aiosmtpd), Prism serving Twilio's contract and stripe-mock,
each provider behind a fault proxy; workers are ``faust worker`` processes.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import re
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer
from pydantic import SecretStr

from schemas.config import CatalogToggle, ShopAdmin, ShopProfile, SmsConnection, StripeConnection
from streamapp.connections import stripe_account, twilio_account
from streamapp.connections.crypto import generate_key
from streamapp.db import upgrade
from streamapp.embedded.postgres import EmbeddedPostgres
from streamapp.rules import automation, order_count
from streamapp.settings import Settings
from streamapp.topics import ACTIONS, ensure_topics, topic_name
from tests.harness.kafka import group_lag
from tests.harness.pipeline import Pipeline, now, own_worker
from tests.harness.services import InThread, Worker, pid_alive
from tests.harness.smtp import Recorder, smtp_server
from tests.harness.stripe import RATE_LIMITED, UNAVAILABLE, StripeFaultProxy
from tests.harness.twilio import RATE_LIMITED_BODY, TwilioFaultProxy
from tests.harness.waits import wait_for

ACCOUNT = "AC" + "0123456789abcdef" * 2
TOKEN = "fedcba9876543210" * 2
SENDER = "+15005550006"
STRIPE_KEY = "sk_test_" + "0123456789abcdef" * 2
ADMINS = ("maria", "sam")
#: Credit rules at every count up to this: a customer's count that goes wrong shows as a credit lost.
CREDIT_COUNTS = range(1, 11)
EMAIL_AT = 3
ALERT_AT = 5
#: What a worker may take to come back to zero lag once the faults stop (rebalances, recovery, retries).
DRAIN_BOUND_SECONDS = 180.0
#: A short session timeout, so that a dead or stopped worker's partitions move within seconds.
SESSION_TIMEOUT_SECONDS = 6.0
#: Each attempt to reach a provider gives up after this; the nemesis stalls providers for longer.
PROVIDER_TIMEOUT_SECONDS = 3.0
#: The nemesis never runs more workers than this at once.
MAX_WORKERS = 3


class FaultySmtp(Recorder):
    """The recording SMTP server, with faults: refusing (4xx) or hanging for a while, and mailboxes
    that do not exist (5xx, permanent) for every address that starts with ``bounce``."""

    def __init__(self) -> None:
        super().__init__()
        self.tempfail_until = 0.0
        self.hang_until = 0.0

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        self.rcpt_calls += 1
        if address.startswith("bounce"):
            return "550 5.1.1 mailbox unavailable"
        moment = time.monotonic()
        if moment < self.hang_until:
            await asyncio.sleep(PROVIDER_TIMEOUT_SECONDS + 2)  # the client gives up first
            return "451 4.4.2 timeout"
        if moment < self.tempfail_until:
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    def heal(self) -> None:
        self.tempfail_until = self.hang_until = 0.0


@dataclass
class Tally:
    """What happened during a run: the input, and what the nemesis did to the pipeline."""

    events: int = 0
    redeliveries: int = 0
    poison: int = 0
    kills: int = 0
    starts: int = 0
    graceful_stops: int = 0
    zombies: int = 0
    smtp_faults: int = 0
    twilio_faults: int = 0
    stripe_faults: int = 0
    postgres_restarts: int = 0
    strikes: int = 0

    @property
    def rebalances(self) -> int:
        """Group membership changes the nemesis caused (each one a rebalance)."""
        return self.kills + self.starts + self.graceful_stops + 2 * self.zombies

    def summary(self) -> dict[str, int]:
        return {**self.__dict__, "rebalances": self.rebalances}


@dataclass(frozen=True)
class Sent:
    """One record the driver produced."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes


@dataclass
class Input:
    """What the driver produced, and what it implies."""

    #: customer -> distinct orders paid, in order
    orders: dict[str, list[str]] = field(default_factory=dict)
    #: (event_id, phone, email) of each tracking event
    tracking: list[tuple[str, str, str]] = field(default_factory=list)
    #: (event_id, email) of each invoice sent
    invoices: list[tuple[str, str]] = field(default_factory=list)
    #: event_id of each lead
    leads: list[str] = field(default_factory=list)
    opted_out: set[str] = field(default_factory=set)
    poison: list[Sent] = field(default_factory=list)


POISON: tuple[tuple[bytes | None, bytes], ...] = (
    (b"shop:c", b"{not json"),
    (b"shop:c", b"\xff\xfe\x00garbage"),
    (b"shop:c", b"[1, 2, 3]"),
    (b"shop:c", json.dumps({"type": "payment.refunded", "event_id": "x"}).encode()),
    (b"shop:c", json.dumps({"type": "payment.succeeded", "event_id": "y", "amount_cents": -5}).encode()),
    (None, b"{}"),
)


class Driver(threading.Thread):
    """Produces the input at about ``rate`` events a second until :meth:`finish`; poison now and then."""

    def __init__(self, world: World, rate: float, seed: int) -> None:
        super().__init__(name="driver", daemon=True)
        self.world = world
        self.rate = rate
        self.rng = random.Random(seed)
        self.input = Input()
        self.error: BaseException | None = None
        self._done = threading.Event()
        self._customers = [f"c{i:03d}" for i in range(40)]
        self._last: dict[str, tuple[bytes, bytes, str]] = {}  # topic -> the last good record, to redeliver
        self._serial = 0

    def finish(self) -> Input:
        self._done.set()
        self.join(120)
        if self.error is not None:
            raise AssertionError(f"the driver failed: {self.error!r}") from self.error
        return self.input

    def run(self) -> None:
        try:
            asyncio.run(self._produce())
        except BaseException as exc:  # noqa: BLE001 - reported by finish()
            self.error = exc

    async def _produce(self) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.world.line.bootstrap, acks="all", linger_ms=5)
        await producer.start()
        try:
            while not self._done.is_set():
                started = time.monotonic()
                await self._one(producer)
                await asyncio.sleep(max(0.0, 1 / self.rate - (time.monotonic() - started)))
        finally:
            await producer.stop()

    async def _send(self, producer: AIOKafkaProducer, topic: str, key: bytes | None, value: bytes) -> Sent:
        meta = await producer.send_and_wait(topic, key=key, value=value)
        return Sent(topic, meta.partition, meta.offset, key, value)

    async def _one(self, producer: AIOKafkaProducer) -> None:
        world, line, tally, rng = self.world, self.world.line, self.world.tally, self.rng
        roll = rng.random()
        if roll < 0.03:
            key, value = rng.choice(POISON)
            topic = rng.choice([line.payments, line.orders, line.job_status])
            self.input.poison.append(await self._send(producer, topic, key, value))
            tally.poison += 1
            return
        if roll < 0.13 and self._last:
            topic, (key, value, _kind) = rng.choice(list(self._last.items()))
            await self._send(producer, topic, key, value)  # the same event again: a redelivery
            tally.redeliveries += 1
            return
        self._serial += 1
        n = self._serial
        customer = rng.choice(self._customers)
        person = {"customer_id": customer, "name": f"Customer {customer}", "email": f"{customer}@example.com"}
        base = {"shop_id": world.shop, "occurred_at": now().isoformat()}
        if roll < 0.65:
            paid = self.input.orders.setdefault(customer, [])
            again = paid and rng.random() < 0.15  # a second payment of the same order: not counted
            order = paid[-1] if again else f"{customer}-o{len(paid) + 1}"
            if not again:
                paid.append(order)
            event = {
                **base,
                "type": "payment.succeeded",
                "event_id": f"pay-{n}",
                "customer": person,
                "order_id": order,
                "payment_id": f"pi-{n}",
                "amount_cents": 1000,
            }
            # One in four mis-keyed (the customer id alone): it takes the re-key hop, the rest are
            # counted where they arrive, so customers' orders reach the table from both source topics.
            topic, key = line.payments, customer if rng.random() < 0.25 else f"{world.shop}:{customer}"
        elif roll < 0.80:
            phone = f"+1555{n:07d}"
            email = f"bounce-{n}@example.com" if n % 11 == 0 else f"{customer}@example.com"
            if n % 13 == 0:
                self.input.opted_out.add(phone)
                world.twilio.opt_out(phone)
            event = {
                **base,
                "type": "job.tracking_added",
                "event_id": f"trk-{n}",
                "customer": {**person, "email": email, "phone": phone},
                "job": {"job_id": f"j-{n}", "job_number": f"J-{n}", "job_name": "500 business cards"},
                "carrier": "UPS",
                "tracking_numbers": [f"1Z{n:016d}"],
                "portal_url": f"https://acme.example/portal/{customer}",
            }
            self.input.tracking.append((event["event_id"], phone, email))
            topic, key = line.job_status, f"{world.shop}:{customer}"
        elif roll < 0.92:
            event = {
                **base,
                "type": "invoice.sent",
                "event_id": f"inv-sent-{n}",
                "customer": person,
                "invoice": {
                    "invoice_id": f"inv-{n}",
                    "invoice_number": f"INV-{n}",
                    "invoice_url": f"https://acme.example/invoices/INV-{n}",
                    "total_due_cents": 1000 + n,
                    "currency": "USD",
                    "due_date": "2027-01-15",
                },
            }
            self.input.invoices.append((event["event_id"], person["email"]))
            topic, key = line.payments, f"{world.shop}:{customer}"
        else:
            lead = f"lead-{n}"
            event = {
                **base,
                "type": "lead.created",
                "event_id": f"lead-evt-{n}",
                "lead": {"lead_id": lead, "name": "Bo Chen", "email": "bo@example.com", "message": "Quote?"},
                "source": "website",
            }
            self.input.leads.append(event["event_id"])
            topic, key = line.orders, f"{world.shop}:{lead}"
        value = json.dumps(event).encode()
        await self._send(producer, topic, key.encode(), value)
        self._last[topic] = (key.encode(), value, event["type"])
        tally.events += 1


@dataclass
class World:
    """Everything one run needs; build it with :func:`chaos_world`."""

    line: Pipeline
    postgres: EmbeddedPostgres
    smtp: FaultySmtp
    twilio: TwilioFaultProxy
    stripe: StripeFaultProxy
    shop: str
    rules: dict[int, str]  # count -> rule_id of the credit rules
    email_rule: str
    alert_rule: str
    tmp: Path
    tally: Tally = field(default_factory=Tally)
    workers: list[Worker] = field(default_factory=list)
    stopped: set[int] = field(default_factory=set)  # pids under SIGSTOP
    drained_in: float = 0.0  # seconds from the end of the faults to zero lag
    _incarnation: int = 0

    @property
    def settings(self) -> Settings:
        return self.line.settings

    # -- workers ----------------------------------------------------------------------
    def start_worker(self, *, wait: bool = False) -> Worker:
        self._incarnation += 1
        name = f"w{self._incarnation}"
        worker = own_worker(self.settings, self.tmp, name)
        self.workers.append(worker)
        if wait:
            worker.wait_ready()
        return worker

    def live(self) -> list[Worker]:
        return [w for w in self.workers if w.process.poll() is None]

    def kill(self, worker: Worker) -> None:
        worker.stop(signal.SIGKILL)
        self.tally.kills += 1

    def stop_gracefully(self, worker: Worker) -> float:
        """SIGTERM; seconds until the worker exited (it is SIGKILLed after 30 s)."""
        started = time.monotonic()
        worker.stop(signal.SIGTERM, timeout=30)
        self.tally.graceful_stops += 1
        return time.monotonic() - started

    def pause(self, worker: Worker) -> None:
        worker.process.send_signal(signal.SIGSTOP)
        self.stopped.add(worker.process.pid)

    def resume(self, worker: Worker) -> None:
        worker.process.send_signal(signal.SIGCONT)
        self.stopped.discard(worker.process.pid)

    # -- the end of a run -------------------------------------------------------------
    def heal(self, *, workers: int = 2) -> None:
        """Stop every fault, wake stopped workers, make sure ``workers`` are running and ready."""
        self.smtp.heal()
        self.twilio.fail_next(0)
        self.twilio.stall_next(0, 0)
        self.stripe.fail_next(0)
        for worker in self.live():
            if worker.process.pid in self.stopped:
                self.resume(worker)
        while len(self.live()) < workers:
            self.start_worker()
        for worker in self.live():
            worker.wait_ready(timeout=120)

    def drain(self, timeout: float = DRAIN_BOUND_SECONDS) -> float:
        """Wait until the group has committed every message of every topic it consumes, the
        actions topic last (an action's offset is committed only once it was performed); the
        seconds it took. A lag that does not reach zero within ``timeout`` fails the run."""
        started = time.monotonic()
        self.line.drain(timeout=timeout)
        actions = topic_name(self.settings, ACTIONS)
        lags: dict[Any, int] = {}

        def performed() -> bool:
            lags.update(asyncio.run(group_lag(self.line.bootstrap, self.settings.app_id, [actions])))
            return not any(lags.values())

        try:
            wait_for(performed, timeout=timeout, what="every action performed", interval=0.3)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; lag: {lags}\n{self.logs_tail()}") from None
        self.drained_in = time.monotonic() - started
        assert self.drained_in <= timeout, f"lag took {self.drained_in:.0f}s to reach zero, over {timeout:.0f}s"
        return self.drained_in

    def stale_writes_skipped(self) -> int:
        """Zombie writes the fenced tables refused while restoring (see :mod:`streamapp.tables`)."""
        found = 0
        for worker in self.workers:
            text = worker.process.log_path.read_text(errors="replace")
            found += sum(int(m) for m in re.findall(r"skipped (\d+) stale changelog values", text))
        return found

    def logs_tail(self) -> str:
        return "\n".join(f"--- {w.process.log_path.name}\n{w.process.log_tail(15)}" for w in self.workers[-3:])


@contextmanager
def chaos_world(kafka_bootstrap: str, twilio_api: str, stripe_api: str, tmp: Path, name: str) -> Iterator[World]:
    """A world of its own: PostgreSQL, SMTP, Twilio and Stripe (behind fault proxies), topics, one shop."""
    smtp = FaultySmtp()
    # Durable: with synchronous_commit off, a crash forgets commits it acknowledged, and credits
    # are lost (this suite found that; streamapp.db.durability_warnings now logs it at start).
    postgres = EmbeddedPostgres(durable=True)
    with (
        postgres,
        smtp_server(smtp) as smtp_port,
        InThread(TwilioFaultProxy(twilio_api, hold_timeout=30)) as twilio,
        InThread(StripeFaultProxy(stripe_api, hold_timeout=30)) as stripe,
    ):
        run = uuid.uuid4().hex[:8]
        database_url = postgres.create_database(f"chaos_{run}")
        upgrade(database_url)
        settings = Settings(
            app_id=f"{name}-{run}",
            topic_prefix=f"{name}{run}.",
            kafka_bootstrap_servers=kafka_bootstrap,
            database_url=SecretStr(database_url),
            data_dir=tmp / "state",
            commit_interval_seconds=0.5,
            session_timeout_seconds=SESSION_TIMEOUT_SECONDS,
            provider_timeout_seconds=PROVIDER_TIMEOUT_SECONDS,
            smtp_host="127.0.0.1",
            smtp_port=smtp_port,
            secret_key=SecretStr(generate_key()),
            twilio_api_url=twilio.url,
            stripe_api_url=stripe.url,
            clock="external",
        )
        asyncio.run(ensure_topics(settings))
        line = Pipeline(settings)
        shop = f"shop-{run}"
        world = World(
            line=line,
            postgres=postgres,
            smtp=smtp,
            twilio=twilio,
            stripe=stripe,
            shop=shop,
            rules={},
            email_rule="",
            alert_rule="",
            tmp=tmp,
        )
        _configure_shop(world)
        try:
            yield world
        finally:
            for worker in world.workers:
                if worker.process.pid in world.stopped:
                    world.resume(worker)
                worker.stop(signal.SIGKILL)


def _configure_shop(world: World) -> None:
    line, shop, moment = world.line, world.shop, now()
    line.publish(ShopProfile(shop_id=shop, name="Acme Print Co.", time_zone="America/Chicago", updated_at=moment))
    for admin in ADMINS:
        line.publish(
            ShopAdmin(shop_id=shop, admin_id=admin, name=admin, email=f"{admin}@acme.example", updated_at=moment)
        )
    line.add_template(shop, "three", "Three orders!", "<p>Thanks {{ customer_name }}</p>")
    world.rules = {
        n: line.add_rule(shop, f"Credit at {n}", n, "credit", amount_cents=100 * n).rule_id for n in CREDIT_COUNTS
    }
    world.email_rule = line.add_rule(shop, "Email at 3", EMAIL_AT, "email", template_key="three").rule_id
    world.alert_rule = line.add_rule(shop, "Alert at 5", ALERT_AT, "alert").rule_id

    async def connect() -> None:
        conn = await asyncpg.connect(line.database_url)
        try:
            await twilio_account.save_credentials(
                conn, line.settings, shop, twilio_account.TwilioCredentials(ACCOUNT, TOKEN, SENDER)
            )
            await stripe_account.save_credentials(
                conn, line.settings, shop, stripe_account.StripeCredentials(STRIPE_KEY)
            )
        finally:
            await conn.close()

    asyncio.run(connect())
    line.publish(SmsConnection(shop_id=shop, sender_hint="+1500•••0006", updated_at=moment))
    line.publish(StripeConnection(shop_id=shop, account_hint="acct_test (test mode)", updated_at=moment))
    for rule in ("tracking_shipped_sms", "payment_link_email"):
        line.publish(CatalogToggle(shop_id=shop, rule=rule, enabled=True, updated_at=moment))
    time.sleep(0.01)  # events occur strictly after the toggles


# -- the nemesis --------------------------------------------------------------------------
NEMESES = ("kill", "add", "remove", "zombie", "smtp", "twilio", "stripe", "postgres")


def strike(world: World, kind: str, rng: random.Random, *, max_workers: int = MAX_WORKERS) -> str:
    """Do one thing of ``kind`` to the world; what was done, for the log."""
    tally, live = world.tally, world.live()
    if kind in ("remove", "zombie") and len(live) < 2:
        kind = "add"  # they need a second worker to take the partitions over
    elif kind == "add" and len(live) >= max_workers:
        kind = "remove"
    if kind == "kill" and live:
        victim = rng.choice(live)
        world.kill(victim)
        world.start_worker()
        tally.starts += 1
        return f"SIGKILL {victim.process.pid}, started a replacement"
    if kind == "add" and len(live) < max_workers:
        world.start_worker()
        tally.starts += 1
        return "started a worker"
    if kind == "remove" and len(live) > 1:
        victim = rng.choice(live)
        took = world.stop_gracefully(victim)
        return f"SIGTERM {victim.process.pid}: exited after {took:.1f}s"
    if kind == "zombie" and len(live) > 1:
        victim = rng.choice(live)
        world.pause(victim)
        time.sleep(SESSION_TIMEOUT_SECONDS + 4)  # past the session timeout: its partitions move
        world.resume(victim)
        tally.zombies += 1
        return f"SIGSTOP {victim.process.pid} for {SESSION_TIMEOUT_SECONDS + 4:.0f}s, then SIGCONT"
    if kind == "smtp":
        tally.smtp_faults += 1
        if rng.random() < 0.5:
            world.smtp.tempfail_until = time.monotonic() + 3
            return "SMTP answers 451 for 3s"
        world.smtp.hang_until = time.monotonic() + 4
        return "SMTP hangs for 4s"
    if kind == "twilio":
        tally.twilio_faults += 1
        choice = rng.randrange(3)
        if choice == 0:
            world.twilio.fail_next(3)
            return "Twilio answers 503 three times"
        if choice == 1:
            world.twilio.fail_next(3, RATE_LIMITED_BODY)
            return "Twilio answers 429 three times"
        world.twilio.stall_next(1, PROVIDER_TIMEOUT_SECONDS + 2)
        return "Twilio stalls past the timeout once"
    if kind == "stripe":
        tally.stripe_faults += 1
        world.stripe.fail_next(2, rng.choice([UNAVAILABLE, RATE_LIMITED]))
        return "Stripe answers 503/429 twice"
    if kind == "postgres":
        world.postgres.restart(down_seconds=2)
        tally.postgres_restarts += 1
        return "PostgreSQL crashed (SIGQUIT), down 2s, restarted"
    return f"{kind}: nothing to do"


def run_chaos(
    world: World,
    *,
    seconds: float,
    nemeses: tuple[str, ...],
    every: float,
    seed: int,
    rate: float = 25.0,
    workers: int = 2,
    in_turn: bool = False,
) -> Input:
    """Drive load for ``seconds`` while striking with ``nemeses`` (at random, or ``in_turn``) every
    ``every`` seconds; heal and drain; returns the input for the verifier."""
    rng = random.Random(seed)
    for _ in range(workers):
        world.start_worker()
    for worker in world.live():
        worker.wait_ready()
    driver = Driver(world, rate, seed)
    driver.start()
    deadline = time.monotonic() + seconds
    log = world.tmp / "nemesis.log"
    with log.open("a") as out:
        while time.monotonic() < deadline:
            time.sleep(every * (0.5 + rng.random()))
            if not nemeses:
                continue
            kind = nemeses[world.tally.strikes % len(nemeses)] if in_turn else rng.choice(nemeses)
            world.tally.strikes += 1
            out.write(f"{time.monotonic():.1f} {strike(world, kind, rng)}\n")
            out.flush()
    given = driver.finish()
    world.heal(workers=workers)
    world.drain()
    return given


# -- the verifier -------------------------------------------------------------------------
@dataclass
class Verdict:
    """The verifier's findings; a run passes when ``problems`` is empty."""

    expected_actions: int = 0
    duplicates: int = 0  # effects applied twice (ledger, alerts, notifications, sessions, rows)
    lost: int = 0  # expected effects that never happened
    provider_copies: int = 0  # messages a provider accepted twice (the documented crash window)
    problems: list[str] = field(default_factory=list)

    def check(self, ok: bool, problem: str) -> None:
        if not ok:
            self.problems.append(problem)


def verify(world: World, given: Input) -> Verdict:
    """Recompute from the input what must have happened, exactly once, and compare."""
    line, shop, verdict = world.line, world.shop, Verdict()

    credits = {
        order_count.action_id(shop, world.rules[n], customer, n): (customer, 100 * n)
        for customer, orders in given.orders.items()
        for n in CREDIT_COUNTS
        if len(orders) >= n
    }
    alerts = {
        order_count.action_id(shop, world.alert_rule, c, ALERT_AT) for c, o in given.orders.items() if len(o) >= 5
    }
    emails = {
        order_count.action_id(shop, world.email_rule, c, EMAIL_AT): f"{c}@example.com"
        for c, o in given.orders.items()
        if len(o) >= EMAIL_AT
    }
    emails |= {automation.action_id(shop, "tracking_shipped_email", e): to for e, _phone, to in given.tracking}
    emails |= {automation.action_id(shop, "invoice_sent_email", e): to for e, to in given.invoices}
    links = {automation.action_id(shop, "payment_link_email", e): to for e, to in given.invoices}
    texts = {automation.action_id(shop, "tracking_shipped_sms", e): phone for e, phone, _to in given.tracking}
    notices = {automation.action_id(shop, "lead_new_notification", e) for e in given.leads}
    bounced = {a for a, to in emails.items() if to.startswith("bounce")}
    opted_out = {a for a, phone in texts.items() if phone in given.opted_out}
    expected = set(credits) | alerts | set(emails) | set(links) | set(texts) | notices
    verdict.expected_actions = len(expected)

    # Every action decided is one we expect, and every one we expect was decided.
    published = Counter(a.action_id for a in line.actions(shop))
    verdict.check(set(published) == expected, f"actions topic: unexpected {sorted(set(published) - expected)[:5]}")
    missing = expected - set(published)
    verdict.lost += len(missing)
    verdict.check(not missing, f"never decided: {len(missing)} actions, e.g. {sorted(missing)[:5]}")

    ledger = line.sql("SELECT action_id, customer_id, amount_cents FROM ledger_entries WHERE shop_id = $1", shop)
    have = {r["action_id"]: (r["customer_id"], r["amount_cents"]) for r in ledger}
    verdict.duplicates += len(ledger) - len(have)
    verdict.lost += len(set(credits) - set(have))
    verdict.check(
        have == credits,
        f"ledger: missing {sorted(set(credits) - set(have))[:5]}, extra {sorted(set(have) - set(credits))[:5]}",
    )
    balances = Counter[str]()
    for customer, cents in have.values():
        balances[customer] += cents
    want = Counter[str]()
    for customer, cents in credits.values():
        want[customer] += cents
    verdict.check(balances == want, f"balances differ: {sorted((balances - want) | (want - balances))[:5]}")

    rows = line.sql("SELECT action_id FROM alerts WHERE shop_id = $1", shop)
    verdict.duplicates += len(rows) - len({r["action_id"] for r in rows})
    verdict.lost += len(alerts - {r["action_id"] for r in rows})
    verdict.check({r["action_id"] for r in rows} == alerts, "alerts differ")

    notes = line.sql("SELECT action_id, admin_id FROM notifications WHERE shop_id = $1", shop)
    per_notice = Counter(r["action_id"] for r in notes)
    verdict.duplicates += sum(max(0, n - len(ADMINS)) for n in per_notice.values())
    verdict.lost += len(notices - set(per_notice))
    verdict.check(per_notice == dict.fromkeys(notices, len(ADMINS)), "notifications differ: one per admin per lead")

    deliveries = {
        r["action_id"]: r
        for r in line.sql(
            "SELECT action_id, channel, status, attempts, last_error, provider_ref FROM deliveries WHERE shop_id = $1",
            shop,
        )
    }
    truth = {a: "failed" if a in bounced else "sent" for a in emails}
    truth |= dict.fromkeys(links, "sent")
    truth |= {a: "opted_out" if a in opted_out else "sent" for a in texts}
    told = {a: row["status"] for a, row in deliveries.items()}
    wrong = {a: (told.get(a), s) for a, s in truth.items() if told.get(a) != s}
    verdict.lost += sum(1 for a in wrong if a not in told)
    verdict.check(not wrong and set(told) == set(truth), f"delivery records (have, want): {list(wrong.items())[:5]}")
    for a in bounced:
        error = deliveries[a]["last_error"] if a in deliveries else None
        verdict.check(error is not None and error.startswith("550"), f"bounce {a} recorded as {error!r}")

    # What the providers saw: each message once; a second copy only in the SIGKILL window.
    received = Counter(m["X-Streamapp-Action-Id"] for m in world.smtp.messages)
    link_emails = {a for a in received if a not in emails}
    sent_emails = {a for a in emails if a not in bounced}
    verdict.lost += len(sent_emails - set(received))
    verdict.check(
        set(received) - link_emails == sent_emails, f"SMTP: missing {sorted(sent_emails - set(received))[:5]}"
    )
    verdict.check(len(link_emails) == len(links), f"SMTP: {len(link_emails)} payment-link emails, want {len(links)}")
    verdict.check(
        all(m["Message-ID"] == f"<{m['X-Streamapp-Action-Id']}@streamapp>" for m in world.smtp.messages),
        "a copy without the action's Message-ID",
    )
    texted = Counter(e.form["To"] for e in world.twilio.sent())
    should_text = {phone for a, phone in texts.items() if a not in opted_out}
    verdict.lost += len(should_text - set(texted))
    verdict.check(set(texted) == should_text, f"Twilio: missing {sorted(should_text - set(texted))[:5]}")
    sessions = Counter(e.idempotency_key for e in world.stripe.sessions_created())
    verdict.duplicates += sum(n - 1 for n in sessions.values())
    verdict.lost += len(set(links) - set(sessions))
    verdict.check(set(sessions) == set(links), "Stripe: one Checkout Session per payment link")
    verdict.provider_copies = sum(n - 1 for n in received.values()) + sum(n - 1 for n in texted.values())

    # Poison: each one in the dead-letter topic, with its reason and its original bytes.
    letters = {(d.topic, d.partition, d.offset): d for d in line.dead_letters()}
    for sent in given.poison:
        letter = letters.get((sent.topic, sent.partition, sent.offset))
        verdict.check(
            letter is not None and letter.value_b64 == base64.b64encode(sent.value).decode(),
            f"poison at {sent.topic}[{sent.partition}]@{sent.offset} not dead-lettered with its bytes",
        )
    good = [k for k in letters if k not in {(s.topic, s.partition, s.offset) for s in given.poison}]
    verdict.check(not good, f"valid events dead-lettered: {good[:5]}")
    verdict.check(verdict.duplicates == 0, f"{verdict.duplicates} duplicate effects")
    return verdict


def assert_sound(world: World, given: Input, verdict: Verdict) -> None:
    """Fail with everything the verifier found, the tally and the nemesis log."""
    nemesis = world.tmp / "nemesis.log"
    log = nemesis.read_text() if nemesis.exists() else ""
    assert not verdict.problems, (
        f"{verdict.problems}\ntally: {world.tally.summary()}\nnemesis:\n{log}\n{world.logs_tail()}"
    )
    # A provider copy comes only from a crash between the provider's "accepted" and our commit:
    # at most one per SIGKILLed worker, and per worker for a PostgreSQL crash (each worker has one
    # action in flight).
    assert verdict.provider_copies <= crash_windows(world), (
        f"{verdict.provider_copies} provider copies after {crash_windows(world)} crash windows\nnemesis:\n{log}"
    )


def crash_windows(world: World) -> int:
    """How many actions a crash could have caught between a provider's answer and our commit."""
    return world.tally.kills + MAX_WORKERS * world.tally.postgres_restarts


def no_orphans(world: World) -> None:
    """After the run, no worker of this world is left."""
    alive = [w.process.pid for w in world.workers if pid_alive(w.process.pid)]
    assert not alive, f"workers still running: {alive}"
