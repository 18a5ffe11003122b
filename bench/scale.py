"""Restart and recovery of a counting worker whose tables hold N customers and M open invoices:
`python bench/scale.py [--customers N] [--invoices M] [--json]`. A measurement, not a test.

On an embedded broker of its own (changelog sizes on disk are read from its log folder), workers
``streamapp worker --role counting`` (subprocesses, ``STREAMAPP_CLOCK=external``):

1. on empty tables: seconds from spawn to ``/readyz`` 200, RSS (``/proc/<pid>/status``) once ready;
2. the state, written straight onto the changelogs by an aiokafka producer (no worker counts a
   million payments): per customer ``--orders`` markers and the count (the compacted changelog of
   those payments), and ``--invoices`` open invoices due 30 to 120 days ahead (``--due`` of them
   due at each tick of step 6). Keys and values are Faust's json of what the worker writes
   (``apply_payment``'s and ``apply_event``'s values, stamped as ``FencedTable`` stamps them) on the
   partition of the customer's (invoice's) key; step 5 checks that byte for byte. The stamps name
   offsets of input topics the bench never wrote, so nothing is restored after step 5 (the fence
   would take its writes for stale);
3. first start on a fresh data dir ("recovery on a fresh disk"), then SIGTERM and
4. a start on the same data dir ("restart"): seconds to ``/readyz`` 200, CPU seconds, RSS;
5. ``--payments`` payments (a new order of an existing customer each) and ``--check-invoices``
   ``invoice.sent`` through that worker: the changelog records they add (key + value bytes, and the
   growth of the ``.log`` files on the broker), compared with what step 2 writes;
6. tick cost: a tick at base + 12 days (the first after a restore builds the due index over every
   invoice; ``--due`` invoices overdue), then one at base + 15 days (``--due`` more): from producing
   the tick to the last of its ``invoice_overdue_email`` actions on ``actions`` (CreateTime).

Replay rate: changelog records / (ready seconds - the empty start's). Memory per million customers:
(RSS with the state - RSS on empty tables) * 1e6 / N, the invoices' share included.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import murmur2
from faust.serializers import codecs
from pipeline import REPO_ROOT, BenchError, cpu_seconds, http_status, versions  # bench/ is on sys.path

from schemas.events import InvoiceSent
from schemas.internal import Tick
from streamapp import topics
from streamapp.embedded.kafka import EmbeddedKafka, ensure_kafka_libs
from streamapp.embedded.process import ChildProcess, free_port
from streamapp.rules.invoice_schedule import apply_event, invoice_key
from streamapp.rules.order_count import customer_key, order_key
from streamapp.settings import Settings
from streamapp.tables import SOURCES
from streamapp.topics import ACTIONS, INVOICES, INVOICES_CHANGELOG, ORDER_COUNTS_CHANGELOG, PAYMENTS, topic_name

Record = tuple[int, bytes, bytes]  # partition, key, value
UTC_ZONE = ZoneInfo("UTC")  # a shop without a profile: the worker's zone for it
MEMORY = re.compile(r"^(VmRSS|VmHWM):\s+(\d+) kB", re.M)
INDEXED = re.compile(r"invoices: \d+ invoices of \d+ partitions indexed in ([\d.]+) s")


def partition_of(key: str, partitions: int) -> int:
    """The default partitioner's partition of ``key`` (``agents.payments.customer_partition``)."""
    return int(murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def dumps(obj: Any) -> bytes:
    """Faust's json codec: the tables' key and value serializer (their key and value types are None)."""
    return codecs.dumps("json", obj)


def customer(i: int, shops: int) -> tuple[str, str]:
    return f"shop-{i % shops:03d}", f"c{i:07d}"


def order_writes(
    ckey: str, order: str, event_id: str, count: int, topic: str, offset: int
) -> list[tuple[bytes, bytes]]:
    """The marker and the count ``apply_payment`` writes when ``event_id`` counts ``order`` as the
    ``count``-th, stamped with the input's ``topic`` and ``offset``, as changelog key and value."""
    stamp = {SOURCES: {topic: offset}}
    marker = {"event_id": event_id, "count": count, **stamp}
    return [(dumps(order_key(ckey, order)), dumps(marker)), (dumps(ckey), dumps({"count": count, **stamp}))]


def order_counts(customers: int, orders: int, shops: int, topic: str, partitions: int) -> Iterator[Record]:
    """The compacted order-counts changelog of ``orders`` payments per customer (one per order)."""
    offsets = [0] * partitions
    for i in range(customers):
        shop, cust = customer(i, shops)
        ckey = customer_key(shop, cust)
        partition = partition_of(ckey, partitions)
        for n in range(1, orders + 1):
            writes = order_writes(ckey, f"o{n}", f"evt-{cust}-{n}", n, topic, offsets[partition])
            offsets[partition] += 1
            yield partition, *writes[0]
        yield partition, *writes[1]  # the count's latest value: compaction keeps only that one


def payment(shop: str, cust: str, n: int) -> bytes:
    """A ``payment.succeeded`` of the ``n``-th order of customer ``cust``, as its topic carries it."""
    value = {
        "type": "payment.succeeded",
        "event_id": f"evt-{cust}-{n}",
        "shop_id": shop,
        "occurred_at": datetime.now(UTC).isoformat(),
        "customer": {"customer_id": cust, "name": f"Customer {cust}", "email": f"{cust}@example.com"},
        "order_id": f"o{n}",
        "payment_id": f"pay-{cust}-{n}",
        "amount_cents": 1000,
    }
    return json.dumps(value).encode()


def invoice_sent(shop: str, cust: str, invoice_id: str, due: datetime, occurred: datetime) -> dict[str, Any]:
    return {
        "type": "invoice.sent",
        "event_id": f"evt-{invoice_id}",
        "shop_id": shop,
        "occurred_at": occurred.isoformat(),
        "customer": {"customer_id": cust, "name": f"Customer {cust}", "email": f"{cust}@example.com"},
        "invoice": {
            "invoice_id": invoice_id,
            "invoice_number": invoice_id.upper(),
            "invoice_url": f"https://{shop}.example/invoices/{invoice_id}",
            "total_due_cents": 42000,
            "due_date": due.date().isoformat(),
        },
    }


def invoice_write(event: dict[str, Any], partitions: int, topic: str, offset: int) -> Record:
    """The invoices-table write of an ``invoice.sent`` of an invoice not held, stamped with ``offset``."""
    sent = InvoiceSent.model_validate(event)
    key = invoice_key(sent)
    partition = partition_of(key, partitions)
    state = apply_event(None, sent, partition=partition, zone=UTC_ZONE)
    assert state is not None
    return partition, dumps(key), dumps({**state, SOURCES: {topic: offset}})


def invoices(
    count: int, due: int, customers: int, shops: int, base: datetime, topic: str, parts: int
) -> Iterator[Record]:
    offsets = [0] * parts
    for j in range(count):
        shop, cust = customer(j * 7 % customers, shops)
        days = 10 if j < due else 13 if j < 2 * due else 30 + j % 91  # overdue at tick 1, at tick 2, later
        event = invoice_sent(shop, cust, f"inv-{j:07d}", base + timedelta(days=days), base)
        partition = partition_of(f"{shop}:inv-{j:07d}", parts)  # invoice_key's
        yield invoice_write(event, parts, topic, offsets[partition])
        offsets[partition] += 1


async def write_changelog(producer: AIOKafkaProducer, topic: str, records: Iterator[Record]) -> tuple[int, int]:
    """Send ``records`` in batches per partition; how many, and their key + value bytes."""
    batches: dict[int, Any] = {}
    pending: list[Any] = []
    count = size = 0
    for partition, key, value in records:
        count, size = count + 1, size + len(key) + len(value)
        batch = batches.get(partition) or batches.setdefault(partition, producer.create_batch())
        if batch.append(key=key, value=value, timestamp=None) is None:
            pending.append(await producer.send_batch(batch, topic, partition=partition))
            batches[partition] = batch = producer.create_batch()
            batch.append(key=key, value=value, timestamp=None)
        if len(pending) > 64:
            await asyncio.gather(*pending)
            pending.clear()
    for partition, batch in batches.items():
        pending.append(await producer.send_batch(batch, topic, partition=partition))
    await asyncio.gather(*pending)
    return count, size


class Reader:
    """One consumer for the whole run (aiokafka's raises CancelledError when stopped just after starting)."""

    def __init__(self, bootstrap: str, partitions: int) -> None:
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        self.partitions = partitions

    async def end_offsets(self, topic: str) -> dict[int, int]:
        parts = [TopicPartition(topic, p) for p in range(self.partitions)]
        return {tp.partition: off for tp, off in (await self.consumer.end_offsets(parts)).items()}

    async def read_from(self, topic: str, start: dict[int, int]) -> list[Any]:
        """Every record of ``topic`` from offsets ``start`` to its end now."""
        end = await self.end_offsets(topic)
        wanted = {TopicPartition(topic, p): e for p, e in end.items() if e > start.get(p, 0)}
        self.consumer.assign(list(wanted))
        for tp in wanted:
            self.consumer.seek(tp, start.get(tp.partition, 0))
        found: list[Any] = []
        while wanted:
            for tp, records in (await self.consumer.getmany(timeout_ms=500)).items():
                found.extend(r for r in records if r.offset < wanted[tp])
            wanted = {tp: e for tp, e in wanted.items() if await self.consumer.position(tp) < e}
        return found


def log_bytes(kafka: EmbeddedKafka, topic: str) -> int:
    """Bytes of the topic's ``.log`` segments on the broker (index files are preallocated: not counted)."""
    return sum(f.stat().st_size for f in (kafka.workdir / "data").glob(f"{topic}-*/*.log"))


def memory_kib(pid: int) -> dict[str, int]:
    return {
        k: int(v) for k, v in re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    }


class Bench:
    """One app id on the embedded broker, and the workers this bench starts for it."""

    def __init__(self, kafka: EmbeddedKafka, args: argparse.Namespace, workdir: Path) -> None:
        run_id = uuid.uuid4().hex[:8]
        self.kafka, self.args, self.workdir = kafka, args, workdir
        self.settings = Settings(
            app_id=f"scale-{run_id}", topic_prefix=f"scale{run_id}.", kafka_bootstrap_servers=kafka.bootstrap_servers
        )
        self.bootstrap = kafka.bootstrap_servers
        self.topic = {spec.name: topic_name(self.settings, spec) for spec in (PAYMENTS, INVOICES, ACTIONS)}
        self.counts_log = topic_name(self.settings, ORDER_COUNTS_CHANGELOG)
        self.invoices_log = topic_name(self.settings, INVOICES_CHANGELOG)
        self.base = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        self.worker: ChildProcess | None = None
        self.reader = Reader(self.bootstrap, self.settings.topic_partitions)

    async def start(self, name: str, data_dir: str) -> dict[str, Any]:
        """Spawn a counting worker; seconds to ``/readyz`` 200, its RSS then, CPU seconds used to get there."""
        port = free_port()
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "STREAMAPP_APP_ID": self.settings.app_id,
            "STREAMAPP_TOPIC_PREFIX": self.settings.topic_prefix,
            "STREAMAPP_DATA_DIR": str(self.workdir / data_dir),
            "STREAMAPP_WEB_PORT": str(port),
            "STREAMAPP_CLOCK": "external",
            "PYTHONPATH": str(REPO_ROOT),
        }
        argv = [sys.executable, "-m", "streamapp", "worker", "--role", "counting"]
        started = time.monotonic()
        self.worker = worker = ChildProcess(name, argv, log_path=self.workdir / f"{name}.log", cwd=REPO_ROOT, env=env)
        self.log = self.workdir / f"{name}.log"
        while await asyncio.to_thread(http_status, f"http://127.0.0.1:{port}/readyz") != 200:
            if worker.poll() is not None:
                raise BenchError(f"{name} worker exited with {worker.poll()}:\n{worker.log_tail()}")
            if time.monotonic() - started > self.args.ready_timeout:
                raise BenchError(
                    f"{name} worker not ready within {self.args.ready_timeout:.0f}s, RSS {memory_kib(worker.pid)} "
                    f"KiB, CPU {cpu_seconds(worker.pid):.0f}s; log tail:\n{worker.log_tail(60)}"
                )
            await asyncio.sleep(0.1)
        ready = time.monotonic() - started
        cpu = cpu_seconds(worker.pid)
        await asyncio.sleep(2.0)  # settled: what a ready worker holds, not a recovery batch in flight
        mem = memory_kib(worker.pid)
        data = sum(f.stat().st_size for f in (self.workdir / data_dir).rglob("*") if f.is_file())
        print(f"{name}: ready in {ready:.1f}s, CPU {cpu:.1f}s, {mem}, data dir {data} B", file=sys.stderr)
        return {"ready_s": round(ready, 2), "cpu_s": round(cpu, 1), **mem, "data_dir_bytes": data}

    def stop(self) -> float:
        """SIGTERM the worker; seconds until it exited."""
        assert self.worker is not None
        started, _ = time.monotonic(), self.worker.stop(timeout=60.0)
        self.worker = None
        return round(time.monotonic() - started, 2)

    async def build(self) -> dict[str, Any]:
        """The state of step 2, written onto the changelogs."""
        a = self.args
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=50, max_batch_size=512 * 1024)
        await producer.start()
        started = time.monotonic()
        try:
            parts = self.settings.topic_partitions
            counts = order_counts(a.customers, a.orders, a.shops, self.topic["payments"], parts)
            n_counts, b_counts = await write_changelog(producer, self.counts_log, counts)
            inv = invoices(a.invoices, a.due, a.customers, a.shops, self.base, self.topic["invoices"], parts)
            n_inv, b_inv = await write_changelog(producer, self.invoices_log, inv)
        finally:
            await producer.stop()
        took = time.monotonic() - started
        print(f"state: {n_counts} + {n_inv} changelog records written in {took:.1f}s", file=sys.stderr)
        return {
            "seconds": round(took, 1),
            "order_counts_records": n_counts,
            "order_counts_bytes": b_counts,
            "invoices_records": n_inv,
            "invoices_bytes": b_inv,
            "order_counts_log_bytes": log_bytes(self.kafka, self.counts_log),
            "invoices_log_bytes": log_bytes(self.kafka, self.invoices_log),
        }

    async def pay(self) -> dict[str, Any]:
        """Step 5: payments and invoices through the worker, their changelog records sized and checked."""
        a, payments, logs = self.args, self.topic["payments"], (self.counts_log, self.invoices_log)
        before = {t: await self.reader.end_offsets(t) for t in (*logs, self.topic["invoices"])}
        disk0, started = log_bytes(self.kafka, self.counts_log), time.monotonic()
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=5)
        await producer.start()
        expected: dict[bytes, bytes] = {}
        try:
            sent = []
            for k in range(a.payments):
                shop, cust = customer(k * (a.customers // a.payments), a.shops)
                value = payment(shop, cust, a.orders + 1)
                sent.append(
                    (customer_key(shop, cust), await producer.send(payments, value, key=f"{shop}:{cust}".encode()))
                )
            events = {}
            for j in range(a.check_invoices):
                shop, cust = customer(j, a.shops)
                event = invoice_sent(shop, cust, f"live-{j:05d}", self.base + timedelta(days=60), datetime.now(UTC))
                events[event["event_id"]] = event
                await producer.send(payments, json.dumps(event).encode(), key=f"{shop}:{cust}".encode())
            for ckey, future in sent:
                n, cust = a.orders + 1, ckey.split(":")[1]
                expected.update(order_writes(ckey, f"o{n}", f"evt-{cust}-{n}", n, payments, (await future).offset))
        finally:
            await producer.stop()
        deadline = time.monotonic() + a.timeout
        for topic, count in zip(logs, (2 * a.payments, a.check_invoices), strict=True):
            while sum((await self.reader.end_offsets(topic)).values()) - sum(before[topic].values()) < count:
                if time.monotonic() > deadline:
                    raise BenchError(f"{topic} did not grow by {count} within {a.timeout:.0f}s")
                await asyncio.sleep(0.2)
        took = time.monotonic() - started
        for record in await self.reader.read_from(self.topic["invoices"], before[self.topic["invoices"]]):
            routed = json.loads(record.value)  # the re-keyed invoice event: its offset is the stamp
            event = events[routed["event"]["event_id"]]
            _, key, value = invoice_write(event, self.settings.topic_partitions, record.topic, record.offset)
            expected[key] = value
        counted, invoiced = [await self.reader.read_from(t, before[t]) for t in logs]
        mismatched = [
            r
            for r in counted + invoiced
            if expected.get(r.key) != r.value
            or r.headers
            # A marker is on its customer's partition; an invoice on its own key's.
            or r.partition != partition_of(json.loads(r.key).split("/")[0], self.settings.topic_partitions)
        ]
        for r in mismatched[:3]:
            print(
                f"mismatch: {r.key!r} p{r.partition} {r.value!r} {r.headers}, not {expected.get(r.key)!r}",
                file=sys.stderr,
            )
        checked = len(counted) + len(invoiced)
        print(f"format check: {checked - len(mismatched)}/{checked} records byte-identical", file=sys.stderr)
        return {
            "payments": a.payments,
            "seconds": round(took, 2),
            "changelog_records": len(counted),
            "payload_bytes_per_payment": round(sum(len(r.key) + len(r.value) for r in counted) / a.payments, 1),
            "log_bytes_per_payment": round((log_bytes(self.kafka, self.counts_log) - disk0) / a.payments, 1),
            "invoice_payload_bytes": round(sum(len(r.key) + len(r.value) for r in invoiced) / max(len(invoiced), 1), 1),
            "format_checked": checked,
            "format_mismatches": len(mismatched),
        }

    async def tick(self, days: int) -> dict[str, Any]:
        """Step 6: one tick at base + ``days``; seconds until its ``--due`` overdue emails are out."""
        assert self.worker is not None
        start = await self.reader.end_offsets(self.topic["actions"])
        indexed_before = len(INDEXED.findall(self.log.read_text()))
        tick = Tick(tick_id=uuid.uuid4().hex, now=self.base + timedelta(days=days))
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
        await producer.start()
        cpu0, started, produced_ms = cpu_seconds(self.worker.pid), time.monotonic(), time.time() * 1000
        try:
            for partition in range(self.settings.topic_partitions):
                await producer.send_and_wait(
                    self.topic["invoices"], tick.model_dump_json().encode(), partition=partition
                )
        finally:
            await producer.stop()
        fired: list[Any] = []
        while len(fired) < self.args.due:
            if time.monotonic() - started > self.args.timeout:
                raise BenchError(f"tick at +{days}d: {len(fired)}/{self.args.due} actions in {self.args.timeout:.0f}s")
            await asyncio.sleep(0.2)
            records = await self.reader.read_from(self.topic["actions"], start)
            fired = [r for r in records if json.loads(r.value)["lineage"]["event_id"] == tick.tick_id]
        cpu = cpu_seconds(self.worker.pid) - cpu0
        last = max(r.timestamp for r in fired) - produced_ms
        result = {"actions": len(fired), "tick_to_last_action_ms": round(last, 1), "worker_cpu_s": round(cpu, 2)}
        indexed = INDEXED.findall(self.log.read_text())
        if len(indexed) > indexed_before:  # this tick built the index (the first after a restore)
            result["index_build_s"] = float(indexed[-1])
        print(f"tick +{days}d: {result}", file=sys.stderr)
        return result


async def run(kafka: EmbeddedKafka, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    bench = Bench(kafka, args, workdir)
    await topics.ensure_topics(bench.settings)
    await bench.reader.consumer.start()
    report: dict[str, Any] = {"customers": args.customers, "orders": args.orders, "invoices": args.invoices}
    try:
        report["empty"] = await bench.start("empty", "data-empty")
        report["empty"]["stop_s"] = bench.stop()
        report["state"] = await bench.build()
        report["fresh"] = await bench.start("fresh", "data")
        report["fresh"]["stop_s"] = bench.stop()
        report["restart"] = await bench.start("restart", "data")
        report["payments"] = await bench.pay()
        report["tick_first"] = await bench.tick(12)
        report["tick_indexed"] = await bench.tick(15)
    except BenchError as exc:
        report["error"] = str(exc)
        print(f"stopped: {exc}", file=sys.stderr)
    finally:
        if bench.worker is not None:
            bench.stop()
        await bench.reader.consumer.stop()
    return report


def derive(report: dict[str, Any]) -> None:
    """Replay rate and memory per million customers, from the phases that completed."""
    state, empty = report.get("state"), report.get("empty")
    if not (state and empty):
        return
    records = state["order_counts_records"] + state["invoices_records"]
    for phase in ("fresh", "restart"):
        if phase in report:
            spent = report[phase]["ready_s"] - empty["ready_s"]
            report[phase]["records_per_s"] = round(records / spent) if spent > 0 else None
            grown = report[phase]["VmRSS"] - empty["VmRSS"]
            report[phase]["rss_mib_per_million_customers"] = round(grown / 1024 * 1e6 / report["customers"], 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--orders", type=int, default=1, help="paid orders per customer (a marker each)")
    parser.add_argument("--shops", type=int, default=100)
    parser.add_argument("--invoices", type=int, default=200_000, help="open invoices")
    parser.add_argument("--due", type=int, default=50, help="invoices overdue at each of the two ticks")
    parser.add_argument("--payments", type=int, default=2000, help="payments through the worker (step 5)")
    parser.add_argument("--check-invoices", type=int, default=20, help="invoice.sent through the worker (step 5)")
    parser.add_argument("--ready-timeout", type=float, default=900.0, help="bound of a start, seconds")
    parser.add_argument("--timeout", type=float, default=300.0, help="bound of the other waits, seconds")
    parser.add_argument("--json", action="store_true", help="print one JSON object with every figure (table to stderr)")
    args = parser.parse_args()
    if args.invoices < 2 * args.due or args.customers < args.payments:
        parser.error("--invoices must be at least 2 * --due, --customers at least --payments")
    libs = ensure_kafka_libs(Settings().cache_dir)
    kafka = EmbeddedKafka(libs, heap="1g")
    kafka.start()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
            report = asyncio.run(run(kafka, args, Path(tmp)))
    finally:
        kafka.stop()
    derive(report)
    report["versions"] = versions(libs)
    out = sys.stderr if args.json else sys.stdout
    print(report["versions"], file=out)
    columns = ("ready_s", "cpu_s", "VmRSS", "VmHWM", "records_per_s", "rss_mib_per_million_customers")
    labels = ("ready s", "CPU s", "RSS KiB", "peak RSS KiB", "records/s", "MiB/1M cust.")
    print(f"{'start':<8}" + "".join(f"{c:>14}" for c in labels), file=out)
    for phase in ("empty", "fresh", "restart"):
        if phase in report:
            print(f"{phase:<8}" + "".join(f"{report[phase].get(c, '-')!s:>14}" for c in columns), file=out)
    for phase in ("state", "payments", "tick_first", "tick_indexed", "error"):
        if phase in report:
            print(f"{phase}: {report[phase]}", file=out)
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
