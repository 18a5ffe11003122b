"""Where a streamapp worker's CPU goes while it drains a payments backlog:
`python bench/profile_worker.py [--events N] [--out DIR]`. A measurement, not a test.

The same backlog as bench/pipeline.py's variant (a) (N payments, alert rules at 1..10, one action
per payment), one counting worker subprocess (``streamapp worker --role counting``); from its
first ``/readyz`` 200 until N actions are out, ``py-spy record --pid`` samples it (idle threads
excluded, so samples are CPU time) into ``DIR/worker.raw`` (collapsed stacks; ``py-spy`` must be on
PATH or beside this python: ``.venv/bin/pip install py-spy``). Then every sample is put in one
bucket (see :func:`bucket`), and the buckets, the worker's CPU seconds per event (from /proc) and
the top leaf functions are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from pipeline import REPO_ROOT, ActionCounter, BenchError, cpu_seconds, http_status, prepare  # bench/ is on sys.path
from pydantic import SecretStr

from streamapp.db import upgrade
from streamapp.embedded.kafka import EmbeddedKafka, ensure_kafka_libs
from streamapp.embedded.postgres import EmbeddedPostgres
from streamapp.embedded.process import ChildProcess, free_port
from streamapp.settings import Settings


def system_seconds(pid: int) -> float:
    """Kernel-mode CPU seconds of ``pid`` so far (socket writes to the broker land here)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[12]) / os.sysconf("SC_CLK_TCK")


FRAME = re.compile(r"^(?P<func>.*) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")
OURS = ("/agents/", "/streamapp/", "/schemas/")


def frames(stack: str) -> list[tuple[str, str]]:
    """(function, file) of each frame, root first."""
    found = []
    for part in stack.split(";"):
        match = FRAME.match(part)
        if match:
            found.append((match["func"], match["file"]))
    return found


def _below(stack: list[tuple[str, str]]) -> str:
    files = " ".join(f for _, f in stack)
    funcs = {f for f, _ in stack}
    for needle, name in (
        ("logging/", "logging"),
        ("pydantic", "pydantic (de)serialization"),
        ("/schemas/", "pydantic (de)serialization"),
        ("faust/tables/", "table get/set + changelog"),
        ("faust/stores/", "table get/set + changelog"),
        ("aiokafka/producer/", "producer send path"),
        ("faust/transport/producer", "producer send path"),
        ("prometheus_client/", "metrics"),
        ("streamapp/decode.py", "decode (strict JSON parse)"),
        ("json/", "decode (strict JSON parse)"),
    ):
        if needle in files:
            return name
    if "send" in funcs or "publish_message" in funcs or "maybe_declare" in funcs:
        return "producer send path"
    if "faust/" in files or "mode/" in files:
        return "Faust per-message machinery"
    if "aiokafka/" in files:
        return "aiokafka fetch/parse"
    return "our glue code"


def bucket(stack: list[tuple[str, str]]) -> str:
    """One sample's bucket: by the deepest frame of our code and what it called, else by library."""
    files = [f for _, f in stack]
    if any("agents/actions.py" in f or "/streamapp/sinks/" in f or "asyncpg/" in f for f in files):
        return "actions agent + PostgreSQL sink"
    ours = [i for i, f in enumerate(files) if any(p in f for p in OURS) and "site-packages" not in f]
    if ours:
        func, file = stack[ours[-1]]
        if "/streamapp/rules/" in file:
            return "decision code (rules)"
        if "shop_config" in file or func == "wait_for_config":
            return "shop-config follower + wait"
        return _below(stack[ours[-1] + 1 :])
    joined = " ".join(files)
    for needle, name in (
        ("aiokafka/consumer/fetcher", "aiokafka fetch/parse"),
        ("aiokafka/record", "aiokafka fetch/parse"),
        ("aiokafka/producer/", "producer send path"),
        ("faust/tables/", "table get/set + changelog"),
        ("faust/stores/", "table get/set + changelog"),
        ("logging/", "logging"),
        ("faust/", "Faust per-message machinery"),
        ("mode/", "Faust per-message machinery"),
        ("aiokafka/", "aiokafka fetch/parse"),
        ("asyncio/", "asyncio event loop"),
    ):
        if needle in joined:
            return name
    return "other"


#: The leaf where the worker hands a Produce request to the broker's socket. Its samples are mostly
#: not CPU: the write wakes the broker, which takes the (shared) CPU while the worker stays runnable
#: in the write, and py-spy counts a runnable thread as active (the worker's kernel CPU is small).
SOCKET_WRITE = "_SelectorSocketTransport.write"


def summarise(raw: Path, events: int, cpu: float, top: int) -> str:
    """The buckets' shares of all samples (on CPU or runnable), and an estimate of CPU per event that
    leaves the socket-write samples out and spreads the measured CPU over the rest."""
    buckets: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    total = writes = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n, parsed = int(count), frames(stack)
        total += n
        if parsed and parsed[-1][0] == SOCKET_WRITE:
            writes += n
            buckets["producer socket write (mostly waiting for the CPU)"] += n
            continue
        buckets[bucket(parsed)] += n
        if parsed:
            func, file = parsed[-1]
            leaves[f"{func} ({file.split('site-packages/')[-1].replace(str(REPO_ROOT) + '/', '')})"] += n
    us_per_event = cpu / events * 1e6
    rest = total - writes
    lines = [
        f"worker CPU {cpu:.2f} s for {events} events: {us_per_event:.0f} us/event; {total} samples, "
        f"{writes / total:.1%} of them in {SOCKET_WRITE}",
        "",
        "| bucket | share of samples | share without socket writes | CPU us/event (estimate) |",
        "| --- | --- | --- | --- |",
    ]
    for name, n in buckets.most_common():
        if name.startswith("producer socket write"):
            lines.append(f"| {name} | {n / total:.1%} | - | - |")
        else:
            lines.append(f"| {name} | {n / total:.1%} | {n / rest:.1%} | {us_per_event * n / rest:.0f} |")
    lines += ["", f"top {top} leaf functions (self time) but the socket write, share of the rest:", ""]
    lines += [f"- {n / rest:.1%} {name}" for name, n in leaves.most_common(top)]
    return "\n".join(lines)


async def profile(bootstrap: str, database_url: str, args: argparse.Namespace, workdir: Path) -> str:
    run_id = uuid.uuid4().hex[:8]
    shop = f"shop-{run_id}"
    settings = Settings(
        app_id=f"prof-{run_id}",
        topic_prefix=f"prof{run_id}.",
        kafka_bootstrap_servers=bootstrap,
        database_url=SecretStr(database_url),
    )
    await prepare(settings, shop, args.events)
    port = free_port()
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "STREAMAPP_APP_ID": settings.app_id,
        "STREAMAPP_TOPIC_PREFIX": settings.topic_prefix,
        "STREAMAPP_DATA_DIR": str(workdir / "worker-data"),
        "STREAMAPP_WEB_PORT": str(port),
        "DATABASE_URL": database_url,
        "PYTHONPATH": str(REPO_ROOT),
    }
    counter = ActionCounter(settings)
    reader = asyncio.create_task(counter.run())
    # The counting worker alone, started as production starts it (no sinks: nothing reads actions).
    argv = [sys.executable, "-m", "streamapp", "worker", "--role", "counting"]
    worker = ChildProcess("worker", argv, log_path=workdir / "worker.log", cwd=REPO_ROOT, env=env)
    spy: subprocess.Popen[bytes] | None = None

    def alive() -> None:
        if worker.poll() is not None:
            raise BenchError(f"worker exited with {worker.poll()}:\n{worker.log_tail()}")
        if spy is not None and spy.poll() is not None:
            raise BenchError(f"py-spy exited with {spy.poll()}")

    try:
        deadline = time.monotonic() + args.timeout
        while await asyncio.to_thread(http_status, f"http://127.0.0.1:{port}/readyz") != 200:
            alive()
            if time.monotonic() > deadline:
                raise BenchError(f"worker not ready within {args.timeout:.0f}s:\n{worker.log_tail()}")
            await asyncio.sleep(0.05)
        raw = args.out / "worker.raw"
        record = ["record", "--pid", str(worker.pid), "--format", "raw", "--rate", str(args.rate)]
        spy = subprocess.Popen(
            [args.py_spy, *record, "--output", str(raw), "--nonblocking"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        cpu0, sys0, started = cpu_seconds(worker.pid), system_seconds(worker.pid), time.monotonic()
        await counter.wait_for(args.events, args.timeout, "backlog actions", alive)
        cpu, seconds = cpu_seconds(worker.pid) - cpu0, time.monotonic() - started
        kernel = system_seconds(worker.pid) - sys0
        spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        spy.wait(timeout=60)
        head = f"drained {args.events} payments in {seconds:.1f} s ({args.events / seconds:.0f} events/s); "
        head += f"{kernel:.2f} s of the worker's CPU in the kernel"
        return head + "\n" + summarise(raw, args.events, cpu, args.top)
    finally:
        if spy is not None and spy.poll() is None:
            spy.kill()
        worker.stop(timeout=30.0)
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=10000, help="backlog size, a multiple of 10")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / ".streamapp" / "profile", help="where worker.raw goes")
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=25, help="how many leaf functions to list")
    parser.add_argument("--timeout", type=float, default=600.0, help="bound of every wait, in seconds")
    parser.add_argument("--summarise", type=Path, help="only summarise this raw file (with --cpu, --events)")
    parser.add_argument("--cpu", type=float, default=0.0, help="with --summarise: the worker's CPU seconds")
    args = parser.parse_args()
    args.py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if args.summarise:
        print(summarise(args.summarise, args.events, args.cpu, args.top))
        return
    if not Path(args.py_spy).exists():
        parser.error(f"py-spy is not on PATH nor at {args.py_spy}: `{sys.executable} -m pip install py-spy`")
    args.out.mkdir(parents=True, exist_ok=True)
    env = Settings()
    kafka, postgres = None, None
    try:
        bootstrap = env.kafka_bootstrap_servers
        if not bootstrap:
            kafka = EmbeddedKafka(ensure_kafka_libs(env.cache_dir))
            kafka.start()
            bootstrap = kafka.bootstrap_servers
        postgres = EmbeddedPostgres(env.postgres_bin_dir)
        postgres.start()
        upgrade(postgres.url())
        with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
            print(asyncio.run(profile(bootstrap, postgres.url(), args, Path(tmp))))
    finally:
        if postgres is not None:
            postgres.stop()
        if kafka is not None:
            kafka.stop()


if __name__ == "__main__":
    main()
