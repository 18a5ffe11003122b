"""The faust workarounds: each fetch gets a snapshot of the active partitions (fix 3); recovery calls hold
their stream resumes until they return, each its own, dropped when a new rebalance began (fix 2); the seek
to committed offsets also moves never-committed stream partitions to their start (fix 4); a recovery pass
outlived by a rebalance starts over instead of seeking to offsets it never built (fix 5). And the guard:
``apply()`` refuses versions and signatures the fixes were not verified with."""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import re
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.consumer.fetcher import OffsetResetStrategy
from aiokafka.consumer.subscription_state import Assignment
from aiokafka.errors import IllegalStateError
from faust.tables.recovery import RebalanceAgain, Recovery
from faust.transport.consumer import Consumer, ThreadDelegateConsumer
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.types import TP

from streamapp import faust_fixes, faust_guard
from streamapp.errors import ConfigurationError, UnverifiedDependencyError
from streamapp.factory import create_app
from streamapp.settings import Settings

ACTIONS_0 = TP("actions", 0)
CHANGELOG_0 = TP("app-order-counts-changelog", 0)


class _Thread:
    """Stands in for the consumer thread; ``while_waiting`` runs as the main loop would meanwhile."""

    def __init__(self, while_waiting: Any = None) -> None:
        self.calls: list[Any] = []
        self.while_waiting = while_waiting

    async def getmany(self, active_partitions: Any, timeout: float) -> dict[Any, Any]:
        if self.while_waiting is not None:
            self.while_waiting()
        self.calls.append(active_partitions)
        return {}


def _getmany(thread: _Thread, active: Any) -> Any:
    faust_fixes.apply()
    consumer = SimpleNamespace(_thread=thread)
    return asyncio.run(ThreadDelegateConsumer._getmany(consumer, active, 1.0))  # type: ignore[arg-type]


def test_a_fetch_keeps_the_partitions_active_when_it_was_issued() -> None:
    live = {CHANGELOG_0}
    thread = _Thread(while_waiting=live.clear)  # recovery ends: the changelog is paused mid-fetch
    _getmany(thread, live)
    assert thread.calls == [frozenset({CHANGELOG_0})]
    assert thread.calls[0] is not live  # an empty live set would mean "every partition" to aiokafka


def test_no_active_partition_fetches_nothing() -> None:
    thread = _Thread()
    assert _getmany(thread, set()) == {}
    assert thread.calls == []


def test_a_client_only_app_still_fetches_every_partition() -> None:
    thread = _Thread()
    _getmany(thread, None)
    assert thread.calls == [None]


def test_apply_is_idempotent() -> None:
    faust_fixes.apply()
    patched = ThreadDelegateConsumer._getmany
    faust_fixes.apply()
    assert ThreadDelegateConsumer._getmany is patched


class _Consumer:
    """Records what was resumed, in order."""

    def __init__(self) -> None:
        self.resumed: list[set[str]] = []
        self.log: list[str] = []

    def resume_partitions(self, tps: Any) -> None:
        self.resumed.append(set(tps))
        self.log.append(f"resume {sorted(tps)}")


def _recovery(consumer: _Consumer, app: Any = None) -> Any:
    return SimpleNamespace(app=app or SimpleNamespace(consumer=consumer, consumer_generation_id=6))


async def _recovery_call(consumer: _Consumer, tps: set[str], started: asyncio.Event, go_on: asyncio.Event) -> None:
    """Stands in for on_recovery_completed: resume the stream partitions, then seek them."""
    consumer.resume_partitions(tps)
    started.set()
    await go_on.wait()
    consumer.log.append(f"seek {sorted(tps)}")


def _held(call: Any) -> Any:
    return faust_fixes.hold_stream_resumes(call)


async def test_a_stream_resume_waits_until_the_recovery_call_returned() -> None:
    consumer = _Consumer()
    started, go_on = asyncio.Event(), asyncio.Event()
    go_on.set()
    await _held(lambda self, *a: _recovery_call(consumer, {"payments-0"}, started, go_on))(_recovery(consumer))
    assert consumer.log == ["seek ['payments-0']", "resume ['payments-0']"]


async def test_overlapping_recovery_calls_do_not_release_each_others_resumes() -> None:
    # A zombie wakes with the old generation's call still running when the new one starts.
    consumer = _Consumer()
    old_started, old_go = asyncio.Event(), asyncio.Event()
    new_started, new_go = asyncio.Event(), asyncio.Event()
    old = asyncio.ensure_future(
        _held(lambda self: _recovery_call(consumer, {"old-0"}, old_started, old_go))(_recovery(consumer))
    )
    await old_started.wait()
    new = asyncio.ensure_future(
        _held(lambda self: _recovery_call(consumer, {"new-0"}, new_started, new_go))(_recovery(consumer))
    )
    await new_started.wait()
    old_go.set()
    await old
    assert consumer.resumed == [{"old-0"}], "the new call's resume must wait for its own seek"
    new_go.set()
    await new
    assert consumer.log == ["seek ['old-0']", "resume ['old-0']", "seek ['new-0']", "resume ['new-0']"]


async def test_a_cancelled_recovery_call_drops_what_it_held() -> None:
    consumer = _Consumer()
    started, go_on = asyncio.Event(), asyncio.Event()
    call = asyncio.ensure_future(
        _held(lambda self: _recovery_call(consumer, {"payments-0"}, started, go_on))(_recovery(consumer))
    )
    await started.wait()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert consumer.resumed == [], "resumed without its seek"
    consumer.resume_partitions({"x"})  # outside a recovery call: straight through
    assert consumer.resumed == [{"x"}]


async def test_a_recovery_call_that_ends_after_a_new_rebalance_drops_its_resumes() -> None:
    consumer = _Consumer()
    app = SimpleNamespace(consumer=consumer, consumer_generation_id=6)
    started, go_on = asyncio.Event(), asyncio.Event()
    call = asyncio.ensure_future(
        _held(lambda self: _recovery_call(consumer, {"payments-0"}, started, go_on))(_recovery(consumer, app))
    )
    await started.wait()
    app.consumer_generation_id = 8  # the zombie rejoined; generation 8 paused its partitions
    go_on.set()
    await call
    assert consumer.resumed == [], "generation 6's resume would fetch before generation 8's seek"


class _SeekingThread:
    """Stands in for the consumer thread's seeks; ``committed`` is what the group committed."""

    def __init__(self, committed: dict[Any, int | None], revoked: bool = False) -> None:
        self.committed = committed
        self.revoked = revoked
        self.to_beginning: list[Any] = []

    async def seek_to_committed(self) -> dict[Any, int | None]:
        return self.committed

    async def seek_to_beginning(self, *partitions: Any) -> None:
        if self.revoked:
            raise IllegalStateError(f"Partitions {set(partitions)} are not assigned")
        self.to_beginning.extend(partitions)


def _seek(thread: _SeekingThread) -> Any:
    faust_fixes.apply()
    changelogs = {CHANGELOG_0.topic}
    consumer = SimpleNamespace(_thread=thread, _is_changelog_tp=lambda tp: tp.topic in changelogs)
    return asyncio.run(ThreadDelegateConsumer.seek_to_committed(consumer))  # type: ignore[arg-type]


def test_never_committed_stream_partitions_are_sought_to_their_start() -> None:
    payments_0, payments_1, payments_2 = (TopicPartition("payments", p) for p in range(3))
    changelog = TopicPartition(CHANGELOG_0.topic, 0)
    committed = {payments_0: None, payments_1: 0, payments_2: 17, changelog: None}
    thread = _SeekingThread(committed)
    assert _seek(thread) == committed  # what Faust's perform_seek reads its offsets from
    assert thread.to_beginning == [payments_0, payments_1]  # aiokafka leaves these where they were


def test_a_partition_revoked_before_its_seek_is_left_to_the_next_rebalance() -> None:
    thread = _SeekingThread({TopicPartition("payments", 0): None}, revoked=True)
    assert _seek(thread) == {TopicPartition("payments", 0): None}


class _SeekWaiter:
    def __init__(self) -> None:
        self.sought: list[dict[Any, int]] = []

    async def seek_wait(self, partitions: dict[Any, int]) -> None:
        self.sought.append(dict(partitions))


def _seek_offsets(offsets: Counter[Any]) -> _SeekWaiter:
    faust_fixes.apply()
    consumer = _SeekWaiter()
    asyncio.run(Recovery._seek_offsets(SimpleNamespace(), consumer, set(offsets), offsets, "standby"))  # type: ignore[arg-type]
    return consumer


def test_a_recovery_pass_seeks_to_the_offsets_it_built() -> None:
    assert _seek_offsets(Counter({CHANGELOG_0: 41, ACTIONS_0: -1})).sought == [{CHANGELOG_0: 41, ACTIONS_0: 0}]


def test_a_recovery_pass_outlived_by_a_rebalance_starts_over_instead_of_crashing() -> None:
    # The new rebalance registered CHANGELOG_0 (offset None until its own pass builds it).
    with pytest.raises(RebalanceAgain):
        _seek_offsets(Counter({CHANGELOG_0: None, ACTIONS_0: 7}))  # type: ignore[dict-item]


def test_the_verified_versions_are_the_pins_of_constraints() -> None:
    # Bumping a pin means verifying the workarounds again against the new version, then this table.
    constraints = (Path(__file__).parents[2] / "constraints.txt").read_text()
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)$", constraints, re.MULTILINE))
    assert {package: pins.get(package) for package in faust_guard.VERIFIED_VERSIONS} == faust_guard.VERIFIED_VERSIONS


@pytest.fixture
def faust_0_15_4(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make faust-streaming 0.15.4 look installed, and mode-streaming absent."""
    installed = importlib.metadata.version

    def version(package: str) -> str:
        if package == "mode-streaming":
            raise importlib.metadata.PackageNotFoundError(package)
        return "0.15.4" if package == "faust-streaming" else installed(package)

    monkeypatch.setattr(importlib.metadata, "version", version)


@pytest.mark.usefixtures("faust_0_15_4")
def test_apply_refuses_versions_the_fixes_were_not_verified_with() -> None:
    with pytest.raises(UnverifiedDependencyError) as refused:
        faust_fixes.apply()
    message = str(refused.value)
    assert "faust-streaming 0.15.4 installed, 0.15.3 tested" in message
    assert "mode-streaming (not installed) installed, 0.7.1 tested" in message
    assert "aiokafka" not in message
    assert "STREAMAPP_ALLOW_UNVERIFIED_FAUST=1" in message
    assert "\n" not in message
    assert isinstance(refused.value, ConfigurationError)  # the CLI prints it as one line and exits 2


@pytest.mark.usefixtures("faust_0_15_4")
def test_the_override_warns_of_each_mismatch_and_applies_the_fixes(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger=faust_fixes.__name__):
        faust_fixes.apply(allow_unverified=True)
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "faust-streaming 0.15.4 installed, 0.15.3 tested" in warnings[0]
    assert "mode-streaming (not installed) installed, 0.7.1 tested" in warnings[1]
    assert all("NOT verified" in warning and "STREAMAPP_ALLOW_UNVERIFIED_FAUST" in warning for warning in warnings)
    assert hasattr(Consumer.on_partitions_assigned, "__wrapped__")


@pytest.mark.usefixtures("faust_0_15_4")
def test_the_app_factory_reads_the_override_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("STREAMAPP_ALLOW_UNVERIFIED_FAUST", raising=False)
    settings = Settings(data_dir=tmp_path)
    with pytest.raises(UnverifiedDependencyError, match=re.escape("faust-streaming 0.15.4 installed")):
        create_app(settings, autodiscover=False)
    monkeypatch.setenv("STREAMAPP_ALLOW_UNVERIFIED_FAUST", "1")
    settings = Settings(data_dir=tmp_path)
    assert settings.allow_unverified_faust
    create_app(settings, autodiscover=False)


async def _seek_offsets_with_a_deadline(
    self: Any, consumer: Any, tps: Any, offsets: Any, title: str, *, deadline: float
) -> None:
    """A changed ``Recovery._seek_offsets``: one more parameter."""


def _seek_to_committed_not_async(self: Any) -> Any:
    """A changed ``ThreadDelegateConsumer.seek_to_committed``: no longer a coroutine function."""


@pytest.mark.parametrize("allow_unverified", [False, True])
@pytest.mark.parametrize(
    ("owner", "name", "changed", "expected", "installed"),
    [
        (
            Recovery,
            "_seek_offsets",
            _seek_offsets_with_a_deadline,
            "async (self, consumer, tps, offsets, title)",
            "async (self, consumer, tps, offsets, title, *, deadline)",
        ),
        (ThreadDelegateConsumer, "seek_to_committed", _seek_to_committed_not_async, "async (self)", "(self)"),
    ],
)
def test_a_method_whose_signature_changed_is_refused_even_with_the_override(
    monkeypatch: pytest.MonkeyPatch,
    allow_unverified: bool,
    owner: type,
    name: str,
    changed: Any,
    expected: str,
    installed: str,
) -> None:
    monkeypatch.setattr(owner, name, changed)
    with pytest.raises(UnverifiedDependencyError) as refused:
        faust_fixes.apply(allow_unverified=allow_unverified)
    where = f"{owner.__module__}.{owner.__qualname__}.{name}"
    assert str(refused.value).endswith(f"it wraps {where} {expected}, and the installed one is {installed}")
    assert getattr(owner, name) is changed  # not wrapped


class _LivelockThread:
    """What ``AIOKafkaConsumerThread.verify_event_path`` reads, around one partition's aiokafka state."""

    def __init__(self, state: Any) -> None:
        assignment = SimpleNamespace(state_value=lambda tp: state)
        subscriptions = SimpleNamespace(subscription=SimpleNamespace(assignment=assignment))
        self._consumer = SimpleNamespace(_fetcher=SimpleNamespace(_subscriptions=subscriptions))
        app = SimpleNamespace(monitor=object(), topics=SimpleNamespace(acks_enabled_for=lambda topic: True))
        self.consumer = SimpleNamespace(app=app)
        self.time_started = 0.0
        self.tp_stream_timeout_secs = 300.0
        self.checked: list[Any] = []

    def _ensure_consumer(self) -> Any:
        return self._consumer

    def _verify_aiokafka_event_path(self, now: float, tp: Any) -> bool:
        self.checked.append(tp)
        return False


def _awaiting_reset() -> Any:  # needs a running loop: aiokafka makes futures
    """A partition's aiokafka state as a seek to its beginning leaves it until the fetcher looks it up."""
    tp = TopicPartition("payments", 0)
    state = Assignment([tp]).state_value(tp)
    state.await_reset(OffsetResetStrategy.EARLIEST)
    return state


async def test_the_livelock_check_skips_a_partition_awaiting_its_offset_reset() -> None:
    """Upstream, aiokafka's ``position`` asserts and the worker crashed with AssertionError (fix 7)."""
    faust_fixes.apply()
    patched = AIOKafkaConsumerThread.verify_event_path
    with pytest.raises(AssertionError):
        patched.__wrapped__(_LivelockThread(_awaiting_reset()), 0.0, TP("payments", 0))  # type: ignore[attr-defined]
    thread = _LivelockThread(_awaiting_reset())
    assert patched(thread, 0.0, TP("payments", 0)) is None
    assert thread.checked == []


async def test_the_livelock_check_still_checks_a_partition_with_a_position() -> None:
    faust_fixes.apply()
    state = _awaiting_reset()
    state.reset_to(5)
    thread = _LivelockThread(state)
    AIOKafkaConsumerThread.verify_event_path(thread, 0.0, TP("payments", 0))
    assert thread.checked == [TP("payments", 0)]


async def test_the_worker_consumer_long_polls_briefly() -> None:
    faust_fixes.apply()
    app = create_app(Settings(kafka_bootstrap_servers="127.0.0.1:9"), autodiscover=False)
    consumer = app.consumer._thread._create_worker_consumer(app.transport)  # built, never started
    assert consumer._fetch_max_wait_ms == faust_fixes.FETCH_MAX_WAIT_MS == 50
