"""Throughput and latency of the payments pipeline against a plain aiokafka loop and quixstreams:
`python bench/pipeline.py [--events N] [--json] [--quix-python PATH]`. A measurement, not a test.

The same backlog of N ``payment.succeeded`` events (N/10 customers of one shop, 10 distinct
orders each, keyed ``<shop_id>:<customer_id>``; alert rules at counts 1..10, so every payment
yields exactly one action) is pre-loaded into one topic set per variant, then drained by:

(a) streamapp: one counting worker (``streamapp worker --role counting``, a real subprocess). Clock
    from its first ``/readyz`` 200 (after table recovery) until N actions are on its actions topic.
    With several workers, from the first ``/readyz`` 200 of any: it drains from then on. The embedded
    broker delays a new group's first rebalance by 3 s (``group.initial.rebalance.delay.ms``, the
    broker's default; the test broker's 0 would hand the first worker every partition and the
    backlog with it), so workers started together share the first generation.
    Then a sinks worker (``--role sinks``) performs those N actions (N alerts in PostgreSQL), clocked
    on its own; the roles are measured apart because on a small machine they compete for cores.
(a2) the same with two counting workers in one consumer group (scale-out).
(b) baseline: an in-process aiokafka loop: consumer group, manual commit (after flushing its
    sends) every 1 s or 1000 messages, the same decode + TypeAdapter, the same pure
    ``apply_payment``/``decide``, counts in a dict. Clock from its first payment (its consumer
    joins its group first, 3 s with the embedded broker's initial rebalance delay).
(c) quixstreams: ``bench/quix_app.py`` in its own process, run by the bench venv's python
    (``make bench-venv``; skipped when there is none): the same decode, ``group_by`` customer
    (a repartition topic), RocksDB state with its changelog, the same ``apply_payment``/``decide``,
    one record per action. Clock from its first payment (it has no /readyz).

The asymmetry: (a) also pays for the table changelog, the shop-config watermark wait, and (in its
sinks worker) writing the alerts to PostgreSQL; (b) does none of that. Both are read by the same
action counter (an aiokafka consumer, no group) running in this process, so in (b) it shares
the baseline's CPU; (c) pays for a re-key hop and the changelog but not for the watermark wait
or PostgreSQL. Then, per variant, a live phase: M payments paced at ``--live-rate`` (default: half
the rate the variant drained the backlog at); latency is the action record's CreateTime minus its
payment record's CreateTime (matched by lineage.event_id). For streamapp a credit rule at 1 order
is switched on first, and ``p99_ledger_ms`` is its ledger rows' time minus their payments'.
CPU per event is the variant's process CPU while it drains the backlog (/proc; streamapp's counting
workers, with every process's in ``cpu_seconds_by_process``, the sinks worker's while it performs the
backlog's actions; the baseline's includes this process's action counter).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiokafka
import asyncpg
import faust
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from pydantic import SecretStr, TypeAdapter

from schemas.actions import Lineage
from schemas.config import OrderCountRule
from schemas.deadletter import DeadLetter
from schemas.events import PaymentFailed, PaymentsEvent, PaymentSucceeded
from streamapp import shop_config
from streamapp.db import upgrade
from streamapp.decode import decode
from streamapp.embedded.kafka import EmbeddedKafka, ensure_kafka_libs
from streamapp.embedded.postgres import EmbeddedPostgres
from streamapp.embedded.process import ChildProcess, free_port
from streamapp.rules.order_count import ShopView, apply_payment, decide
from streamapp.settings import Settings
from streamapp.topics import ACTIONS, DEAD_LETTERS, PAYMENTS, ensure_topics, topic_name

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCH_PYTHON = REPO_ROOT / ".venv-bench" / "bin" / "python"
ORDERS_PER_CUSTOMER = 10
LIVE_EVENTS = 2000
PAYMENT_TYPES = frozenset({"payment.succeeded", "payment.failed"})
_payments = TypeAdapter[PaymentSucceeded | PaymentFailed](PaymentsEvent)


class BenchError(Exception):
    """A bounded wait ran out or a component died; the message says which."""


@dataclass
class Result:
    variant: str
    events: int
    seconds: float
    p50_ms: float
    p99_ms: float
    duplicates: int
    cpu_s: float | None  # the variant's process CPU seconds while draining the backlog
    live_rate: float = 0.0  # payments/s of its live phase
    p99_ledger_ms: float | None = None  # payment to ledger row, for the live phase's credit rule
    cpu_by_process: dict[str, float] | None = None  # CPU seconds of each process while draining
    sinks_per_s: float | None = None  # actions/s the sinks worker performed the backlog's at


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of process ``pid`` (this one if None) so far."""
    if pid is None:
        return time.process_time()
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def payment(shop: str, customer: str, order: int, event_id: str, ts_ms: int) -> tuple[bytes, bytes]:
    """tests/integration/test_worker_crash.py's payment(), with occurred_at = produce time."""
    value = {
        "type": "payment.succeeded",
        "event_id": event_id,
        "shop_id": shop,
        "occurred_at": datetime.fromtimestamp(ts_ms / 1000, UTC).isoformat(),
        "customer": {"customer_id": customer, "name": f"Customer {customer}", "email": f"{customer}@example.com"},
        "order_id": f"{customer}-o{order}",
        "payment_id": uuid.uuid4().hex[:12],
        "amount_cents": 1000,
    }
    return f"{shop}:{customer}".encode(), json.dumps(value).encode()


def plan(prefix: str, events: int) -> list[tuple[str, int]]:
    """(customer, order) pairs, order-major, 10 orders per customer."""
    customers = [f"{prefix}{i:05d}" for i in range(events // ORDERS_PER_CUSTOMER)]
    return [(c, o) for o in range(1, ORDERS_PER_CUSTOMER + 1) for c in customers]


async def produce(settings: Settings, shop: str, prefix: str, events: int, rate: float | None) -> dict[str, int]:
    """Payments, all at once or at a steady ``rate``/s; event_id -> the record's CreateTime (ms), set here."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers, linger_ms=0 if rate else 20, acks="all"
    )
    await producer.start()
    sent: dict[str, int] = {}
    try:
        futures, started = [], time.monotonic()
        for i, (customer, order) in enumerate(plan(prefix, events)):
            delay = started + i / rate - time.monotonic() if rate else 0.0
            if delay > 0:
                await asyncio.sleep(delay)
            event_id, ts = f"{customer}-e{order}", int(time.time() * 1000)
            sent[event_id] = ts
            key, value = payment(shop, customer, order, event_id, ts)
            futures.append(await producer.send(topic_name(settings, PAYMENTS), value, key=key, timestamp_ms=ts))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return sent


def consumer(settings: Settings, topic: str, group: str | None = None) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )


class ActionCounter:
    """Reads an actions topic from the beginning: action_id -> (event_id, CreateTime ms)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.seen: dict[bytes, tuple[str, int]] = {}
        self.records = 0

    async def run(self) -> None:
        reader = consumer(self.settings, topic_name(self.settings, ACTIONS))
        await reader.start()
        try:
            while True:
                for records in (await reader.getmany(timeout_ms=100)).values():
                    for record in records:
                        self.records += 1
                        event_id = json.loads(record.value)["lineage"]["event_id"]
                        self.seen[record.key] = (event_id, record.timestamp)
        finally:
            await reader.stop()

    async def wait_for(self, count: int, timeout: float, what: str, alive: Callable[[], None]) -> float:
        """Monotonic time at which ``count`` distinct actions had been seen."""
        deadline = time.monotonic() + timeout
        while len(self.seen) < count:
            alive()
            if time.monotonic() > deadline:
                raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}: {len(self.seen)}/{count}")
            await asyncio.sleep(0.01)
        return time.monotonic()

    def latencies(self, sent_ms: dict[str, int]) -> list[float]:
        return [ts - sent_ms[e] for e, ts in self.seen.values() if e in sent_ms]


def summary(
    variant: str,
    events: int,
    seconds: float,
    live: tuple[float, list[float]],
    counter: ActionCounter,
    cpu: float | None,
) -> Result:
    rate, lat = live
    cuts = statistics.quantiles(lat, n=100, method="inclusive")
    duplicates = counter.records - len(counter.seen)
    if duplicates:
        print(f"note: {variant} produced {duplicates} duplicate actions", file=sys.stderr)
    return Result(variant, events, seconds, statistics.median(lat), cuts[98], duplicates, cpu, rate)


async def live_phase(
    settings: Settings,
    shop: str,
    counter: ActionCounter,
    args: argparse.Namespace,
    alive: Callable[[], None],
    drained_per_s: float,
    extra_actions: int = 0,
) -> tuple[float, dict[str, int], list[float]]:
    """After the backlog: paced payments at ``--live-rate``, else at half the backlog's drain rate;
    the rate, the payments' CreateTimes by event id and the latency of each one's action."""
    rate = args.live_rate or drained_per_s / 2
    sent = await produce(settings, shop, "live", LIVE_EVENTS, rate)
    await counter.wait_for(args.events + LIVE_EVENTS + extra_actions, args.timeout, "live actions", alive)
    return rate, sent, counter.latencies(sent)


def http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


async def bench_streamapp(
    settings: Settings, shop: str, args: argparse.Namespace, workdir: Path, counting: int = 1
) -> Result:
    """``counting`` counting workers drain the backlog alone (clock and CPU per event: theirs); then
    one sinks worker (``streamapp worker --role``) performs the backlog's actions (clocked on its own:
    ``sinks_per_s``); then, all of them running, a credit rule (at 1 order) is switched on and the live
    phase runs: every live customer's first payment also yields a credit, whose ledger row's time gives
    ``p99_ledger_ms``. The roles are measured apart because on a small machine they compete for cores."""
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers or "",
        "STREAMAPP_APP_ID": settings.app_id,
        "STREAMAPP_TOPIC_PREFIX": settings.topic_prefix,
        "DATABASE_URL": settings.database_url.get_secret_value() if settings.database_url else "",
        "PYTHONPATH": str(REPO_ROOT),
    }
    counter = ActionCounter(settings)
    reader = asyncio.create_task(counter.run())
    workers: dict[str, tuple[ChildProcess, int]] = {}

    def start(name: str) -> None:
        port = free_port()
        role_env = {
            **env,
            "STREAMAPP_DATA_DIR": str(workdir / f"{settings.app_id}-{name}"),
            "STREAMAPP_WEB_PORT": str(port),
        }
        # As production starts it (`streamapp worker`, log level info): `faust worker -l warn` would keep
        # Faust's spinner, which sets the root logger to DEBUG (every send then builds a log record).
        argv = [sys.executable, "-m", "streamapp", "worker", "--role", name.rstrip("0123456789")]
        log = workdir / f"{settings.app_id}-{name}.log"
        workers[name] = (ChildProcess(name, argv, log_path=log, cwd=REPO_ROOT, env=role_env), port)

    def alive() -> None:
        for worker, _ in workers.values():
            if worker.poll() is not None:
                raise BenchError(f"{worker.name} worker exited with {worker.poll()}:\n{worker.log_tail()}")
        if reader.done():
            reader.result()

    async def ready(names: list[str]) -> tuple[float, dict[str, float]]:
        """Wait until every worker of ``names`` says /readyz 200; the time the first did, and every
        worker's CPU seconds then (the first ready starts draining at once)."""
        deadline = time.monotonic() + args.timeout
        waiting, first = set(names), None
        while waiting:
            for name in sorted(waiting):
                port = workers[name][1]
                if await asyncio.to_thread(http_status, f"http://127.0.0.1:{port}/readyz") == 200:
                    waiting.discard(name)
                    if first is None:
                        first = time.monotonic(), {n: cpu_seconds(workers[n][0].pid) for n in names}
            alive()
            if waiting and time.monotonic() > deadline:
                tails = "\n".join(workers[name][0].log_tail() for name in waiting)
                raise BenchError(f"{', '.join(sorted(waiting))} not ready within {args.timeout:.0f}s:\n{tails}")
            await asyncio.sleep(0.02)
        assert first is not None
        return first

    try:
        names = [f"counting{i + 1}" for i in range(counting)]
        for name in names:
            start(name)
        started, cpu0 = await ready(names)
        if counter.seen:
            print(
                f"note: {len(counter.seen)} actions were already out when every worker said /readyz 200",
                file=sys.stderr,
            )
        ended = await counter.wait_for(args.events, args.timeout, "streamapp backlog actions", alive)
        used = {name: round(cpu_seconds(workers[name][0].pid) - cpu0[name], 2) for name in names}

        start("sinks")
        await ready(["sinks"])
        sinks = workers["sinks"][0]
        sinks_started, sinks_cpu0 = time.monotonic(), cpu_seconds(sinks.pid)
        await wait_rows(settings, "alerts", shop, args.events, args.timeout, alive)
        sinks_seconds = time.monotonic() - sinks_started
        used["sinks"] = round(cpu_seconds(sinks.pid) - sinks_cpu0, 2)

        customers = LIVE_EVENTS // ORDERS_PER_CUSTOMER
        await publish_credit_rule(settings, shop)
        rate, sent, lat = await live_phase(
            settings, shop, counter, args, alive, args.events / (ended - started), extra_actions=customers
        )
        result = summary(
            f"streamapp, {counting} worker{'s' if counting > 1 else ''}",
            args.events,
            ended - started,
            (rate, lat),
            counter,
            sum(v for k, v in used.items() if k != "sinks"),
        )
        result.cpu_by_process = used
        result.sinks_per_s = args.events / sinks_seconds
        result.p99_ledger_ms = await ledger_p99(settings, shop, counter, sent, customers, args.timeout)
        return result
    finally:
        for worker, _ in workers.values():
            worker.stop(timeout=30.0)
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)


async def wait_rows(
    settings: Settings, table: str, shop: str, rows: int, timeout: float, alive: Callable[[], None]
) -> None:
    """Wait until ``table`` (``alerts`` or ``ledger_entries``) holds ``rows`` rows of ``shop``."""
    assert settings.database_url is not None
    conn = await asyncpg.connect(settings.database_url.get_secret_value())
    try:
        deadline = time.monotonic() + timeout
        while (have := await conn.fetchval(f"SELECT count(*) FROM {table} WHERE shop_id = $1", shop)) < rows:
            alive()
            if time.monotonic() > deadline:
                raise BenchError(f"timed out waiting for {rows} rows in {table}: {have}")
            await asyncio.sleep(0.05)
    finally:
        await conn.close()


async def publish_credit_rule(settings: Settings, shop: str) -> None:
    moment = datetime.now(UTC)
    rule = OrderCountRule(
        shop_id=shop,
        rule_id="credit01",
        name="Credit at 1",
        orders=1,
        action="credit",
        amount_cents=500,
        effective_at=moment,
        updated_at=moment,
    )
    await shop_config.publish(settings, rule)


async def ledger_p99(
    settings: Settings, shop: str, counter: ActionCounter, sent: dict[str, int], rows: int, timeout: float
) -> float:
    """p99 of ledger row time (the inserting transaction's start) minus its payment's CreateTime."""
    assert settings.database_url is not None
    conn = await asyncpg.connect(settings.database_url.get_secret_value())
    try:
        deadline = time.monotonic() + timeout
        while True:
            found = await conn.fetch("SELECT action_id, created_at FROM ledger_entries WHERE shop_id = $1", shop)
            if len(found) >= rows:
                break
            if time.monotonic() > deadline:
                raise BenchError(f"timed out waiting for {rows} ledger rows: {len(found)}")
            await asyncio.sleep(0.1)
    finally:
        await conn.close()
    event_of = {action_id.decode(): event_id for action_id, (event_id, _) in counter.seen.items()}
    lat = [row["created_at"].timestamp() * 1000 - sent[event_of[str(row["action_id"])]] for row in found]
    cuts = statistics.quantiles(lat, n=100, method="inclusive")
    print(
        f"ledger rows: {len(lat)}, p50 {cuts[49]:.1f} ms, p90 {cuts[89]:.1f} ms, max {max(lat):.1f} ms",
        file=sys.stderr,
    )
    return cuts[98]


async def baseline_loop(settings: Settings, view: ShopView, started: list[float]) -> None:
    """Consume payments, count distinct orders per customer in a dict, send the decided actions."""
    payments = consumer(settings, topic_name(settings, PAYMENTS), group=f"{settings.app_id}-baseline")
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, linger_ms=5, acks="all")
    actions, dead = topic_name(settings, ACTIONS), topic_name(settings, DEAD_LETTERS)
    counts: dict[str, dict[str, Any]] = {}
    await producer.start()
    await payments.start()
    uncommitted, last_commit = 0, time.monotonic()
    try:
        while True:
            fetched = await payments.getmany(timeout_ms=100, max_records=1000)
            if fetched and not started:
                started.append(time.monotonic())  # clocked from its first payment, as quixstreams is
            for records in fetched.values():
                for r in records:
                    uncommitted += 1
                    await handle(r, view, counts, producer, actions, dead)
            if uncommitted and (uncommitted >= 1000 or time.monotonic() - last_commit >= 1.0):
                await producer.flush()  # at-least-once: never commit past an unsent action
                await payments.commit()
                uncommitted, last_commit = 0, time.monotonic()
    finally:
        await payments.stop()
        await producer.stop()


async def handle(
    r: ConsumerRecord[bytes, bytes],
    view: ShopView,
    counts: dict[str, dict[str, Any]],
    producer: AIOKafkaProducer,
    actions: str,
    dead: str,
) -> None:
    """The baseline's per-event work: decode, count, decide, send."""
    where: dict[str, Any] = {"topic": r.topic, "partition": r.partition, "offset": r.offset}
    event = decode(_payments, PAYMENT_TYPES, key=r.key, value=r.value, **where)
    if isinstance(event, DeadLetter):
        await producer.send(dead, event.model_dump_json().encode(), key=r.key)
        return
    if not isinstance(event, PaymentSucceeded):
        return
    counted = apply_payment(counts.get, event)
    counts.update(counted.writes)
    if counted.count is None:
        return
    for action in decide(event, counted.count, view, Lineage(event_id=event.event_id, **where)):
        await producer.send(actions, action.model_dump_json().encode(), key=action.action_id.encode())


async def bench_baseline(settings: Settings, shop: str, args: argparse.Namespace) -> Result:
    view = (await shop_config.load(settings)).view(shop)
    counter = ActionCounter(settings)
    reader = asyncio.create_task(counter.run())
    started: list[float] = []
    cpu0 = cpu_seconds()
    loop = asyncio.create_task(baseline_loop(settings, view, started))

    def alive() -> None:
        for task in (reader, loop):
            if task.done():
                task.result()
                raise BenchError("a baseline task stopped")

    try:
        ended = await counter.wait_for(args.events, args.timeout, "baseline backlog actions", alive)
        cpu = cpu_seconds() - cpu0  # this process: the loop and the action counter together
        rate, _, lat = await live_phase(settings, shop, counter, args, alive, args.events / (ended - started[0]))
        return summary("aiokafka baseline", args.events, ended - started[0], (rate, lat), counter, cpu)
    finally:
        for task in (loop, reader):
            task.cancel()
        await asyncio.gather(loop, reader, return_exceptions=True)


async def bench_quix(settings: Settings, shop: str, args: argparse.Namespace, workdir: Path) -> Result:
    """bench/quix_app.py in its own process; clock from its first payment until N actions are out."""
    ready = workdir / "quix-started"
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers or "",
        "STREAMAPP_APP_ID": settings.app_id,
        "STREAMAPP_TOPIC_PREFIX": settings.topic_prefix,
        "PYTHONPATH": str(REPO_ROOT),
    }
    counter = ActionCounter(settings)
    reader = asyncio.create_task(counter.run())
    argv = [str(args.quix_python), str(REPO_ROOT / "bench" / "quix_app.py"), "--shop", shop]
    argv += ["--state-dir", str(workdir / "quix-state"), "--ready-file", str(ready)]
    app = ChildProcess("quix", argv, log_path=workdir / "quix.log", cwd=REPO_ROOT, env=env)

    def alive() -> None:
        if app.poll() is not None:
            raise BenchError(f"quix app exited with {app.poll()}:\n{app.log_tail()}")
        if reader.done():
            reader.result()

    try:
        deadline = time.monotonic() + args.timeout
        while not ready.exists():
            alive()
            if time.monotonic() > deadline:
                raise BenchError(f"quix app got no payment within {args.timeout:.0f}s:\n{app.log_tail()}")
            await asyncio.sleep(0.01)
        started, cpu0 = time.monotonic(), cpu_seconds(app.pid)
        ended = await counter.wait_for(args.events, args.timeout, "quix backlog actions", alive)
        cpu = cpu_seconds(app.pid) - cpu0
        rate, _, lat = await live_phase(settings, shop, counter, args, alive, args.events / (ended - started))
        return summary("quixstreams app", args.events, ended - started, (rate, lat), counter, cpu)
    finally:
        app.stop(timeout=30.0)
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)


async def prepare(settings: Settings, shop: str, events: int) -> None:
    """Topics, the 10 alert rules, then the backlog (rules first: they fire only for later payments)."""
    await ensure_topics(settings)
    moment = datetime.now(UTC)
    for n in range(1, ORDERS_PER_CUSTOMER + 1):
        rule = OrderCountRule(
            shop_id=shop,
            rule_id=f"alert{n:02d}",
            name=f"Alert at {n}",
            orders=n,
            action="alert",
            effective_at=moment,
            updated_at=moment,
        )
        await shop_config.publish(settings, rule)
    await produce(settings, shop, "c", events, None)


#: Variant -> how it runs: (a) and (a2) are streamapp with one and two counting workers.
VARIANTS = ("streamapp", "streamapp_2", "baseline", "quix")


async def run(bootstrap: str, database_url: str, args: argparse.Namespace, workdir: Path) -> dict[str, Result]:
    run_id = uuid.uuid4().hex[:8]
    # A shop per variant: action ids name the shop, and the variants share one database.
    shops = {name: f"shop-{run_id}-{name}" for name in VARIANTS}
    variants = {
        name: Settings(
            app_id=f"bench-{run_id}-{name}",
            topic_prefix=f"bench{run_id}{name}.",
            kafka_bootstrap_servers=bootstrap,
            database_url=SecretStr(database_url),
        )
        for name in VARIANTS
        if name != "quix" or args.quix_python
    }
    for name, settings in variants.items():
        t0 = time.monotonic()
        await prepare(settings, shops[name], args.events)
        took = time.monotonic() - t0
        print(f"pre-loaded {args.events} payments into {settings.topic_prefix}payments in {took:.1f}s", file=sys.stderr)
    results = {
        "streamapp": await bench_streamapp(variants["streamapp"], shops["streamapp"], args, workdir),
        "streamapp_2": await bench_streamapp(variants["streamapp_2"], shops["streamapp_2"], args, workdir, counting=2),
        "baseline": await bench_baseline(variants["baseline"], shops["baseline"], args),
    }
    if "quix" in variants:
        results["quix"] = await bench_quix(variants["quix"], shops["quix"], args, workdir)
    return results


def versions(libs: Path | None) -> str:
    kafka = "external broker"
    if libs is not None:
        jar = next(libs.glob("kafka_2.13-*.jar"), None)
        kafka = f"{libs.name} ({jar.stem if jar else '?'})"
    cpus = len(os.sched_getaffinity(0))
    return f"kafka {kafka}, faust {faust.__version__}, aiokafka {aiokafka.__version__}, nproc {cpus}"


def figures(results: dict[str, Result], args: argparse.Namespace, libs: Path | None) -> dict[str, Any]:
    """Every figure of the run as one JSON object."""
    rate = {name: r.events / r.seconds for name, r in results.items()}
    variants: dict[str, dict[str, Any]] = {
        name: {
            "events_per_s": round(rate[name], 1),
            "seconds": round(r.seconds, 3),
            "live_rate": round(r.live_rate, 1),
            "p50_action_ms": round(r.p50_ms, 1),
            "p99_action_ms": round(r.p99_ms, 1),
            "duplicate_actions": r.duplicates,
            # CPU per event while draining: streamapp's counting workers; the baseline's includes this
            # process's action counter.
            "cpu_us_per_event": round(r.cpu_s / r.events * 1e6) if r.cpu_s is not None else None,
        }
        for name, r in results.items()
    }
    for name in ("streamapp", "streamapp_2"):
        variants[name]["p99_ledger_ms"] = results[name].p99_ledger_ms
        variants[name]["cpu_seconds_by_process"] = results[name].cpu_by_process
        sinks = results[name].sinks_per_s
        variants[name]["sinks_actions_per_s"] = round(sinks, 1) if sinks is not None else None
    quix = rate.get("quix")
    return {
        "events": args.events,
        "live_events": LIVE_EVENTS,
        "versions": versions(libs),
        "variants": variants,
        "ratio_to_baseline": round(rate["streamapp"] / rate["baseline"], 3),
        "ratio_to_quix": round(rate["streamapp"] / quix, 3) if quix else None,
        "two_workers_to_one": round(rate["streamapp_2"] / rate["streamapp"], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=20000, help="backlog size, a multiple of 10")
    parser.add_argument(
        "--live-rate", type=float, help="payments/s in the live phase (default: half the variant's drain rate)"
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="bound of every wait, in seconds")
    parser.add_argument("--json", action="store_true", help="print one JSON object with every figure (table to stderr)")
    parser.add_argument(
        "--quix-python",
        type=Path,
        default=BENCH_PYTHON if BENCH_PYTHON.exists() else None,
        help="python with quixstreams for variant (c) (default: .venv-bench's, from `make bench-venv`; "
        "without one, (c) is skipped)",
    )
    args = parser.parse_args()
    if args.events < ORDERS_PER_CUSTOMER or args.events % ORDERS_PER_CUSTOMER:
        parser.error("--events must be a positive multiple of 10")
    if args.quix_python is None:
        print("note: no .venv-bench (make bench-venv): the quixstreams variant is skipped", file=sys.stderr)
    env = Settings()
    libs, kafka, postgres = None, None, None
    try:
        bootstrap = env.kafka_bootstrap_servers
        if not bootstrap:
            libs = ensure_kafka_libs(env.cache_dir)
            # Workers started together share the group's first generation (see the module docstring).
            kafka = EmbeddedKafka(libs, overrides={"group.initial.rebalance.delay.ms": "3000"})
            kafka.start()
            bootstrap = kafka.bootstrap_servers
        postgres = EmbeddedPostgres(env.postgres_bin_dir)
        postgres.start()
        upgrade(postgres.url())
        with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
            results = asyncio.run(run(bootstrap, postgres.url(), args, Path(tmp)))
    finally:
        if postgres is not None:
            postgres.stop()
        if kafka is not None:
            kafka.stop()
    out = sys.stderr if args.json else sys.stdout
    print(versions(libs), file=out)
    print(
        f"{'variant':<22} {'events':>7} {'seconds':>8} {'events/s':>9} {'CPU us/ev':>10} {'live /s':>8} "
        f"{'live p50 ms':>12} {'live p99 ms':>12} {'ledger p99 ms':>14}",
        file=out,
    )
    for r in results.values():
        ledger = f"{r.p99_ledger_ms:.1f}" if r.p99_ledger_ms is not None else "-"
        print(
            f"{r.variant:<22} {r.events:>7} {r.seconds:>8.2f} {r.events / r.seconds:>9.0f} "
            f"{(r.cpu_s or 0) / r.events * 1e6:>10.0f} {r.live_rate:>8.0f} {r.p50_ms:>12.1f} {r.p99_ms:>12.1f} "
            f"{ledger:>14}",
            file=out,
        )
    for r in results.values():
        if r.cpu_by_process:
            print(
                f"{r.variant}: CPU seconds while draining, by process: {r.cpu_by_process}; "
                f"the sinks worker performed the backlog's actions at {r.sinks_per_s:.0f}/s",
                file=out,
            )
        if r.events / r.seconds < r.live_rate:
            print(f"note: {r.variant} drains slower than its live rate: its live latency is queueing", file=out)
    report = figures(results, args, libs)
    print(f"ratio streamapp/baseline events/s: {report['ratio_to_baseline']}", file=out)
    print(f"ratio streamapp/quixstreams events/s: {report['ratio_to_quix']}", file=out)
    print(f"ratio two streamapp workers/one events/s: {report['two_workers_to_one']}", file=out)
    print(
        "asymmetry: streamapp re-keys only mis-keyed payments (none here), writes the table changelog, waits "
        "for the shop-config watermark, and its sinks worker inserts alerts into PostgreSQL; the baseline does "
        "none of that; quixstreams re-keys every payment (group_by) and writes its changelog but reads the "
        f"configuration once and writes no database. Live phase: {LIVE_EVENTS} payments.",
        file=out,
    )
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
