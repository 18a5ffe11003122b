"""Poison input through the real pipeline (issue 7, scenario 3).

Hypothesis draws about two hundred bad messages for the three input topics (``orders``,
``job-status``, ``payments``): bytes that are not UTF-8 or not JSON, tombstones, NaN,
duplicate names, 100,000-deep arrays, integers of 20,000 digits, lone surrogates, values
that are not objects, unknown types, every kind of schema violation the JSON Schemas
name, NUL in text, moments outside UTC's calendar, values of almost 1 MiB and messages of
several MiB (sent compressed: the broker takes them, the worker must refuse them). Between
them go valid events with odd names, unknown fields, wrong keys, amounts past int64, a
1 MiB payment, a job shipped with 15,000 tracking numbers, and invoices due on 9999-12-31.
Everything goes to the real broker in one interleaved stream, and then, once:

- each bad message has exactly one dead letter, with its reason, its topic, partition and
  offset, and its original key and value (of an oversized message: the first 1 MiB);
- each valid event's effect happened exactly once: its credit in ``ledger_entries``, its
  email at the SMTP server (by ``X-Streamapp-Action-Id``), its dashboard alert;
- the worker never crashed an agent, answered ``/readyz`` 200 throughout, and committed
  everything (consumer lag zero), and its metrics count the dead letters by topic and reason.

The strategies live in ``tests/unit/test_poison_decode.py``, which runs them against the
decode path with many more examples.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import threading
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from schemas.config import ShopProfile
from schemas.deadletter import DeadLetter
from streamapp.decode import dead_letter_key
from streamapp.errors import ConfigurationError
from streamapp.rules import automation, order_count
from streamapp.settings import Settings
from streamapp.topics import ACTIONS, DEAD_LETTERS, ensure_topics, topic_name
from tests.harness.kafka import create_topic, group_lag, read_all
from tests.harness.pipeline import Pipeline, now, pipeline_settings
from tests.harness.poison import CONTRACTS, Poison, kept, keys, poison_kinds, unbase64, valid_events
from tests.harness.services import Worker
from tests.harness.settings import settings_env
from tests.harness.smtp import Recorder, smtp_server
from tests.harness.waits import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

T = TypeVar("T")
SHOP = "poison-shop"
#: Bad messages of each small kind, per topic; each megabyte-sized kind gets one per topic.
PER_KIND = 5
SMALL_KINDS = tuple(poison_kinds(CONTRACTS["payments"], large=False))
LARGE_KINDS = ("near_limit", "too_large")


def draw(strategy: st.SearchStrategy[T], n: int) -> list[T]:
    """``n`` examples of ``strategy`` from hypothesis (generation only: nothing here can fail)."""
    found: list[T] = []

    @settings(
        database=None,
        deadline=None,
        max_examples=n,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(example: T) -> None:
        found.append(example)

    collect()
    assert found, f"hypothesis drew nothing from {strategy!r}"
    return found[:n]


@dataclass
class Sent:
    """One message of the stream, what it must cause, and where the broker put it."""

    topic: str
    key: bytes | None
    value: bytes | None
    bad: Poison | None = None  # the reason it must be dead-lettered with
    first: bool = False  # sent before the shuffled rest, in this order
    partition: int = -1
    offset: int = -1

    @property
    def where(self) -> tuple[str, int, int]:
        return self.topic, self.partition, self.offset


@dataclass
class Expected:
    """The effects the valid events must have, each exactly once."""

    credits: set[str]
    emails: set[str]
    alerts: set[str]
    no_emails: set[str]


# -- the stream --------------------------------------------------------------------------------------
def at_now(event: dict[str, Any], moment: datetime) -> dict[str, Any]:
    """``event`` as happening at ``moment``, written in the UTC offset hypothesis drew for it."""
    offset = datetime.fromisoformat(event["occurred_at"]).utcoffset() or timedelta(0)
    return event | {"occurred_at": moment.astimezone(timezone(offset)).isoformat()}


def customer(event: dict[str, Any], n: str) -> dict[str, Any]:
    changed = copy.deepcopy(event)
    changed["customer"] |= {"customer_id": n, "email": f"{n}@example.com"}
    return changed


def valid_stream(line: Pipeline, credit_rule_id: str) -> tuple[list[Sent], Expected]:
    """The valid events, hypothesis-drawn, with the effect each must have."""
    expected = Expected(set(), set(), set(), set())
    sent: list[Sent] = []
    moment = now()
    good_keys = draw(keys(), 40)

    def add(topic: str, event: dict[str, Any]) -> None:
        sent.append(Sent(topic, good_keys[len(sent) % len(good_keys)], json.dumps(event).encode()))

    payments = draw(valid_events(CONTRACTS["payments"], types=("payment.succeeded",), mail_safe=True), 8)
    for i, drawn in enumerate(payments):
        who = f"pay-{i}"
        event = customer(at_now(drawn, moment), who) | {"shop_id": SHOP, "event_id": f"pay-{i}"}
        if i == 0:
            event["notes"] = "n" * 1_000_000  # an unknown field of a megabyte: ignored, the payment counts
        add(line.payments, event)
        expected.credits.add(order_count.action_id(SHOP, credit_rule_id, who, 1))

    orders = draw(valid_events(CONTRACTS["orders"], types=("order.submitted",), mail_safe=True), 6)
    for i, drawn in enumerate(orders):
        event = customer(at_now(drawn, moment), f"ord-{i}") | {"shop_id": SHOP, "event_id": f"ord-{i}"}
        if i == 0:
            event["occurred_at"] = "0001-01-01T00:00:00+00:00"  # the calendar's first moment: fine
        add(line.orders, event)
        expected.emails.add(automation.action_id(SHOP, "order_received_email", event["event_id"]))

    jobs = draw(valid_events(CONTRACTS["job-status"], types=("job.status_changed",), mail_safe=True), 6)
    for i, drawn in enumerate(jobs):
        event = customer(at_now(drawn, moment), f"job-{i}") | {"shop_id": SHOP, "event_id": f"job-{i}"}
        event |= {"to_status": "In Production", "review_url": None, "invoice": None}
        if i == 0:
            event["occurred_at"] = "9999-12-31T23:59:00+00:00"  # its toast expires after the calendar ends
        add(line.job_status, event)
        expected.emails.add(automation.action_id(SHOP, "production_started_email", event["event_id"]))

    tracking = draw(valid_events(CONTRACTS["job-status"], types=("job.tracking_added",), mail_safe=True), 1)[0]
    tracking = customer(at_now(tracking, moment), "trk") | {"shop_id": SHOP, "event_id": "trk-1"}
    tracking["tracking_numbers"] = [f"1Z{n:062d}" for n in range(15_000)]  # valid: no maximum
    add(line.job_status, tracking)
    # A megabyte of tracking numbers renders past the email size limit: no email, an alert says why.
    expected.alerts.add(automation.action_id(SHOP, "tracking_shipped_email.template-error", "trk-1"))
    expected.no_emails.add(automation.action_id(SHOP, "tracking_shipped_email", "trk-1"))

    # Two invoices on one partition of the invoice schedule, the one due on 9999-12-31 first: at
    # the tick, its overdue step would be in year 10000; the other one's reminder must still go out.
    sent_invoice = draw(valid_events(CONTRACTS["payments"], types=("invoice.sent",), mail_safe=True), 1)[0]
    far, overdue = same_schedule_partition(line)
    for invoice_id, due in ((far, date(9999, 12, 31)), (overdue, moment.date() - timedelta(days=10))):
        event = customer(at_now(sent_invoice, moment), f"inv-{invoice_id}") | {
            "shop_id": SHOP,
            "event_id": f"sent-{invoice_id}",
        }
        event["invoice"] = event["invoice"] | {"invoice_id": invoice_id, "due_date": due.isoformat()}
        event["invoice"]["total_due_cents"] = 10**30  # past int64 and past float precision: exact
        sent.append(Sent(line.payments, b"one-partition", json.dumps(event).encode(), first=True))
        expected.emails.add(automation.action_id(SHOP, "invoice_sent_email", event["event_id"]))
    expected.emails.add(automation.action_id(SHOP, "invoice_overdue_email", f"invoice.{overdue}"))
    return sent, expected


def same_schedule_partition(line: Pipeline) -> tuple[str, str]:
    """Two invoice ids whose schedule keys land on one partition of the invoices topic."""
    partitions = list(range(line.settings.topic_partitions))
    by_partition: dict[int, list[str]] = defaultdict(list)
    for n in range(100):
        invoice_id = f"inv-{n}"
        key = f"{SHOP}:{invoice_id}".encode()
        found = by_partition[DefaultPartitioner()(key, partitions, partitions)]
        found.append(invoice_id)
        if len(found) == 2:
            return found[0], found[1]
    raise AssertionError("no two invoice ids share a partition")


def poison_stream(line: Pipeline) -> list[Sent]:
    """The bad messages: PER_KIND of each small kind and one of each large kind, per topic."""
    topics = {"orders": line.orders, "job-status": line.job_status, "payments": line.payments}
    sent: list[Sent] = []
    for name, contract in CONTRACTS.items():
        kinds = poison_kinds(contract)
        for kind in (*SMALL_KINDS, *LARGE_KINDS):
            for bad in draw(kinds[kind], PER_KIND if kind in SMALL_KINDS else 1):
                # The producer needs a key or a value: a keyless tombstone gets an empty key.
                key = b"" if bad.key is None and bad.value is None else bad.key
                sent.append(Sent(topics[name], key, bad.value, Poison(kind, key, bad.value, bad.reason)))
    return sent


async def produce(bootstrap: str, stream: list[Sent]) -> None:
    """Send ``stream`` in order, compressed (so the broker takes messages of several MiB), and
    record where each one landed."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", compression_type="gzip", max_request_size=16 * 2**20, linger_ms=20
    )
    await producer.start()
    try:
        futures = [await producer.send(m.topic, key=m.key, value=m.value) for m in stream]
        for message, future in zip(stream, futures, strict=True):
            metadata = await future
            message.partition, message.offset = metadata.partition, metadata.offset
    finally:
        await producer.stop()


# -- watching the worker -------------------------------------------------------------------------------
class Watch:
    """Polls the worker's process and ``/readyz`` in the background; every answer but 200 is kept."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.problems: list[str] = []
        self.polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="readyz-watch", daemon=True)

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            self.polls += 1
            code = self.worker.process.poll()
            if code is not None:
                self.problems.append(f"worker exited with {code}")
                return
            answer = self.worker.get("/readyz")
            if answer is None or answer[0] != 200:
                self.problems.append(f"/readyz answered {answer!r}")


def dead_letters_total(worker: Worker) -> Counter[tuple[str, str]]:
    """``streamapp_dead_letters_total`` by (topic, reason), from /metrics."""
    with urllib.request.urlopen(worker.base_url + "/metrics", timeout=5) as response:
        text = response.read().decode()
    found: Counter[tuple[str, str]] = Counter()
    for line in text.splitlines():
        if line.startswith("streamapp_dead_letters_total{"):
            labels, _, value = line[len("streamapp_dead_letters_total{") :].rpartition("} ")
            pairs = dict(item.split("=", 1) for item in labels.split(","))
            found[(pairs["topic"].strip('"'), pairs["reason"].strip('"'))] = int(float(value))
    return found


@pytest.fixture
def line(kafka_bootstrap: str, postgres_url: str, tmp_path: Path) -> Iterator[Pipeline]:
    recorder = Recorder()
    with smtp_server(recorder) as smtp_port:
        settings_ = pipeline_settings(
            "poison", kafka_bootstrap, postgres_url, smtp_port, tmp_path / "state", clock="external"
        )
        pipeline = Pipeline(settings_, recorder)
        pipeline.workers.append(Worker("streamapp.app", settings_env(settings_), tmp_path / "worker.log"))
        try:
            yield pipeline
        finally:
            pipeline.workers[0].stop()


def test_poison_is_dead_lettered_with_reason_and_bytes_and_every_valid_event_acts_once(line: Pipeline) -> None:
    worker = line.workers[0]
    line.publish(ShopProfile(shop_id=SHOP, name="Poison & Co.", time_zone="Pacific/Kiritimati", updated_at=now()))
    credit = line.add_rule(SHOP, "Credit at 1", 1, "credit", amount_cents=100)
    good, expected = valid_stream(line, credit.rule_id)
    bad = poison_stream(line)
    rest = [m for m in good if not m.first] + bad
    everything = [m for m in good if m.first] + [rest[i] for i in draw(st.permutations(range(len(rest))), 1)[0]]
    assert Counter(m.bad.kind for m in bad if m.bad) == {
        **dict.fromkeys(SMALL_KINDS, 3 * PER_KIND),
        **dict.fromkeys(LARGE_KINDS, 3),
    }

    worker.wait_ready()
    with Watch(worker) as watch:
        asyncio.run(produce(line.bootstrap, everything))
        line.drain(timeout=60)
        line.tick(datetime.now(UTC))  # the invoice schedule's clock: reminders due now go out
        line.drain(timeout=60)
        wait_effects(line, expected)
        assert watch.polls > 0

    # Each bad message: exactly one dead letter, with its reason, place, key and bytes.
    records = asyncio.run(read_all(line.bootstrap, topic_name(line.settings, DEAD_LETTERS)))
    letters: dict[tuple[str, int, int], list[tuple[bytes | None, DeadLetter]]] = defaultdict(list)
    for record in records:
        assert record.value is not None
        letter = DeadLetter.model_validate_json(record.value)
        letters[(letter.topic, letter.partition, letter.offset)].append((record.key, letter))
    for message in bad:
        assert message.bad is not None
        found = letters.pop(message.where, [])
        assert len(found) == 1, f"{message.bad.kind} at {message.where}: {len(found)} dead letters"
        key, letter = found[0]
        assert (letter.reason, message.bad.kind) == (message.bad.reason, message.bad.kind), letter.detail
        assert (unbase64(letter.key_b64), unbase64(letter.value_b64)) == kept(message.key, message.value)
        assert key == dead_letter_key(message.key)
    assert not letters, f"dead letters of no bad message: {[(w, d.reason) for w, ds in letters.items() for _, d in ds]}"
    assert dead_letters_total(worker) == Counter((m.topic, m.bad.reason) for m in bad if m.bad)

    # Each valid event: its effect exactly once.
    ledger = Counter(r["action_id"] for r in line.sql("SELECT action_id FROM ledger_entries WHERE shop_id = $1", SHOP))
    assert ledger == Counter(expected.credits)
    assert line.smtp is not None
    mails = Counter(str(m["X-Streamapp-Action-Id"]) for m in line.smtp.messages)
    assert {action: mails[action] for action in expected.emails} == dict.fromkeys(expected.emails, 1)
    assert not any(mails[action] for action in expected.no_emails)
    alerts = Counter(r["action_id"] for r in line.sql("SELECT action_id FROM alerts WHERE shop_id = $1", SHOP))
    assert alerts == Counter(expected.alerts)

    # The worker: alive and ready throughout, every agent up, everything committed.
    assert not watch.problems, watch.problems[:5]
    assert worker.process.poll() is None
    answer = worker.get("/readyz")
    assert answer is not None and answer[0] == 200
    line.drain(timeout=30)
    actions = topic_name(line.settings, ACTIONS)
    wait_for(
        lambda: not any(asyncio.run(group_lag(line.bootstrap, line.settings.app_id, [actions])).values()),
        timeout=30,
        what="the worker to commit every action",
        interval=0.25,
    )
    log = worker.process.log_path.read_text(errors="replace")
    assert "Crashed reason=" not in log and "Traceback" not in log, log[-3000:]


def wait_effects(line: Pipeline, expected: Expected) -> None:
    """Wait (bounded) until every expected credit, email and alert is there."""

    def done() -> bool:
        credits = {r["action_id"] for r in line.sql("SELECT action_id FROM ledger_entries WHERE shop_id = $1", SHOP)}
        alerts = {r["action_id"] for r in line.sql("SELECT action_id FROM alerts WHERE shop_id = $1", SHOP)}
        assert line.smtp is not None
        mails = {str(m["X-Streamapp-Action-Id"]) for m in line.smtp.messages}
        return expected.credits <= credits and expected.alerts <= alerts and expected.emails <= mails

    wait_for(done, timeout=60, what="the effects of every valid event", interval=0.25)


def test_a_dead_letters_topic_too_small_for_its_dead_letters_is_refused(
    settings_factory: Callable[..., Settings],
) -> None:
    """A dead letter carries its message in base64: bigger than the message, so bigger than a
    topic with the broker's default limit takes. Such a topic made elsewhere is refused, not used."""
    settings_ = settings_factory()
    name = topic_name(settings_, DEAD_LETTERS)
    asyncio.run(create_topic(settings_.kafka_bootstrap_servers or "", name, settings_.topic_partitions))
    with pytest.raises(ConfigurationError, match=rf"topic {re.escape(name)} has max.message.bytes \d+ but"):
        asyncio.run(ensure_topics(settings_))
