"""Workarounds for faust-streaming bugs that lose or hold back messages; applied once by the app factory.

The first seven concern how a worker (re)starts consuming its stream partitions after a
rebalance; the eighth, how a crashed worker stops; the ninth, how long a message can wait to be
fetched. The first three were found by ``tests/integration/test_worker_crash.py``: a worker
replacing a SIGKILLed one skipped a dozen actions per partition. Faust's consumer advances its
``_read_offset`` for a message even when it did not deliver it (flow suspended), and then drops
any re-fetched message below that offset ("DROPPED MESSAGE ROFF", logged only at dev level).
Related upstream reports: faust-streaming #216 and #221, whose fixes do not cover these paths.

**1. Stream partitions fetched before recovery starts.**
On a rebalance, ``Consumer.on_partitions_assigned`` marks every assigned partition
*active* (fetchable); the app pauses them only later, after several awaits, and
resumes stream partitions once table recovery has sought them to their committed
offsets. In that window the fetcher pulls stream partitions from wherever aiokafka
positioned them. That stale batch is still being drained when the recovery seek
resets ``_read_offset``; draining it pushes ``_read_offset`` forward again, and the
messages re-fetched after the seek fall below it and are dropped.

The fix: newly assigned partitions start paused. Nothing is fetched for them until
recovery resumes them: changelogs to rebuild tables, stream partitions at the end
(``tests/integration/test_assigned_partitions_paused.py``).

**2. Stream partitions resumed before the seek and before flow resumes.**
``Recovery.on_recovery_completed`` and ``Recovery._resume_streams`` resume the
stream partitions, *then* seek them to their committed offsets, *then* resume the
flow. What is fetched in between meets a suspended flow: not delivered, yet counted
as read. The fix: those two methods run as they are, except that resuming stream
partitions is held back until they return, after the seek and after the flow is on.
Each call holds its own resumes, and a call that is cancelled, fails, or returns after a
new rebalance began drops them: a worker frozen mid-recovery (a zombie) wakes with the old
generation's call still running beside the new generation's recovery, and the first
version of this fix, one hold shared by both, let a call lift the other's hold before
its seek. (It was suspected of the zombie test's lost payments; those turned out to be
fix 4's, below.)

**3. A fetch that drains partitions which are no longer active.**
Faust hands its *live* set of active partitions to the consumer thread
(``Consumer._wait_next_records`` -> ``ThreadDelegateConsumer._getmany`` ->
``AIOKafkaConsumerThread._fetch_records``, queued to another thread and event loop),
and aiokafka's ``Fetcher.fetched_records`` waits up to a second for data, then drains
``if partitions and tp not in partitions``: an *empty* set means every partition.
When table recovery ends it pauses the changelogs while a fetch issued for them is
still waiting; the set is then empty (stream partitions stay paused until the seek
to committed offsets is done, see 1 and 2), and the next data to arrive drains every
prefetched stream partition: aiokafka's position moves past all of it. Back in
``Consumer.getmany`` those records belong to no active partition and are skipped
without a trace. The seek that follows repairs only partitions that have a committed
offset and were not drained mid-seek; any other partition resumes at its end of
log. ``tests/integration/test_worker_crash.py`` showed both: a replacing worker
that started ``actions`` at the end of every partition (the dead worker had
committed none there), and one that, drained after the seek, got messages of one
partition only and then nothing at all.

The fix: the consumer thread gets a snapshot of the active set, taken when the fetch
is issued, so a fetch drains only partitions that were active then; records of
partitions paused later stay in aiokafka's buffer, at their position. (The same
holds for partitions ``on_buffer_full`` takes out of the active set.)

**4. The seek to committed offsets skips partitions the group never committed.**
Every fix above ends in Faust's seek to the committed offsets (``Consumer.perform_seek``),
which is also what repairs a fetch Faust discarded (a batch that arrives after a rebalance
stopped the flow, a record of a partition no longer active: skipped without a trace, while
aiokafka's position moved past it). But aiokafka's ``seek_to_committed`` moves a partition
only ``if offset and offset > 0``: a partition with no committed offset (nothing committed
there yet: a new topic, the first seconds of a run, a partition whose messages all arrived
since the last commit) keeps the position the discarded fetch left, and the records it
skipped are never read. The reliability suite lost the first message of a partition that
way in 3 of 12 zombie and provider-fault runs (twice a payment, so a credit was never
decided); a worker's log showed ``payments`` offset 0 fetched while its partition was
inactive, then offsets 1 and on, never 0.

The fix: after the seek, every stream partition with no committed offset (or 0) is sought
to its beginning, which is what ``auto_offset_reset=earliest`` means for a group that
committed nothing there. Changelog partitions are left alone (recovery positions them).
Anything read twice this way is a redelivery, which every agent already takes.

**5. A recovery pass outlived by a rebalance seeks to offsets it never built.**
Faust recovers tables in one loop, a pass per rebalance. A rebalance that begins during a
pass registers its changelog partitions at once, with offset ``None`` until the next pass
builds them, and signals the loop; but the running pass does not look at the signal before
its next seek, and seeks to ``None``: aiokafka raises ``ValueError("Offset must be a positive
integer")``, the recovery service crashes and the worker exits. The zombie test hit it once
in about 40 runs: a worker frozen in recovery woke into a new rebalance and died.

The fix: a seek that finds an offset not built raises Faust's own ``RebalanceAgain``, which
the loop takes as "another rebalance started": it drops the stale pass and starts the next.

**6. A fetch begun before a rebalance drains partitions after it.**
aiokafka's ``Fetcher.fetched_records`` waits out a rebalance (``wait_for_assignment``) and then
drains the *new* assignment's records, still for the partition set it was given before; aiokafka
prefetches every assigned partition, whatever Faust paused, so among them are changelogs it
reset to their start. Back in ``Consumer.getmany`` the batch meets a stopped flow (recovery has
not resumed it yet) and is discarded; the seek to committed offsets that follows leaves changelogs
alone (nothing is committed there). If that drain came after recovery had sought the changelog to
its start, recovery waits for records the consumer has already passed, and never ends: the
under-load SIGTERM test hit it twice in about 30 runs (``No event received for active tp ... since
recovery start`` for two minutes); with logging added, 5 of 51 runs showed such a discard of
changelogs drained from offset 0, 0 to 38 ms before recovery's seek. The stalled partitions
were always those that had been standbys, read right up to the rebalance, so the last fetch of the
old generation still named them.

The fix: a fetch whose assignment changed while it waited returns nothing and puts back what it
drained, seeking each partition to its first drained offset, in the consumer thread, before
anything else there can move it. The records are read again under the new generation's rules.

**7. The livelock detector crashes the worker on a partition that has no position yet.**
Every ``commit_interval * 2.5`` seconds outside a rebalance, Faust's ``_commit_livelock_detector``
calls ``AIOKafkaConsumerThread.verify_event_path`` for each assigned partition, which reads
aiokafka's ``TopicPartitionState.position``; that property *asserts* a position, and a partition
awaiting an offset reset has none until the fetcher has looked it up. Fix 4 puts never-committed
stream partitions in exactly that state (sought to their beginning) right after recovery. The
SIGTERM-under-load test hit it once in about ten runs of the suite: ``Consumer: Crashed
reason=AssertionError()`` 0.7 s after "Seek stream partitions to committed offsets", and the
worker stopped.

The fix: a partition without a valid position is skipped by that check (there is nothing to
verify yet: nothing has been fetched for it); every other partition is checked as before.

**8. A crashed worker hangs in its last commit instead of exiting.**
``App.crash`` marks every service crashed, the consumer thread included, which then ends its event
loop (aiokafka leaves the group). ``App.stop`` meanwhile commits (``Consumer.wait_empty`` ->
``AIOKafkaConsumerThread.commit``), a call queued to that thread: if it ended first, nothing
answers, and the worker hangs after "Wait for streams..." until killed. The actions agent crashes
the app on purpose when a sink raises a bug; ``test_an_action_that_crashes_its_sink_...`` hung
so in 2 of 12 runs on a loaded machine (a stack dump: main thread idle, no consumer thread left).
The fix: once the consumer thread has crashed, a commit is skipped (logged), not queued. Nothing
is lost: the next owner reprocesses from the last commit, and the sinks drop the duplicates.

**9. A message waits out a fetch's long poll (1.5 s, hard-coded by Faust).** aiokafka keeps one
fetch in flight per broker, for the partitions with nothing buffered; a partition drained meanwhile
waits for that long poll to end before it is fetched again, and so does a message arriving there
(the pipeline bench: p99 about 1.6 s from payment to action at any rate). The fix: the worker's
consumer long-polls :data:`FETCH_MAX_WAIT_MS` (an idle worker fetches that often per broker).

The guard (versions and signatures) is :mod:`streamapp.faust_guard`'s.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import IllegalStateError
from faust.tables.recovery import RebalanceAgain, Recovery
from faust.transport.consumer import Consumer, ThreadDelegateConsumer
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.types import TP

from streamapp.errors import UnverifiedDependencyError
from streamapp.faust_guard import OVERRIDE, Method, patch, version_mismatches

logger = logging.getLogger(__name__)


def start_assigned_partitions_paused() -> None:
    """Make ``Consumer.on_partitions_assigned`` leave newly assigned partitions paused (idempotent)."""

    def wrap(original: Method) -> Method:
        async def on_partitions_assigned(self: Consumer, assigned: Any, *args: Any, **kwargs: Any) -> None:
            # Paused before the original computes the active set (assigned minus paused).
            self._paused_partitions.update(assigned)
            await original(self, assigned, *args, **kwargs)

        return on_partitions_assigned

    what = "assigned partitions start paused"
    patch(Consumer, "on_partitions_assigned", wrap, what, "async (self, assigned, generation_id)")


#: The stream-partition resumes held back by the recovery call running in this context (task).
_held: ContextVar[list[set[Any]] | None] = ContextVar("streamapp_held_resumes", default=None)


def _install_hold(consumer: Any) -> None:
    """Shadow ``consumer.resume_partitions``: inside a held recovery call it records, elsewhere it resumes."""
    if "resume_partitions" in consumer.__dict__:
        return
    resume = type(consumer).resume_partitions.__get__(consumer)

    def resume_partitions(tps: Any) -> None:
        held = _held.get()
        if held is None:
            resume(tps)
        else:
            held.append(set(tps))

    consumer.resume_partitions = resume_partitions


def hold_stream_resumes(original: Method) -> Method:
    """Wrap a recovery call so the stream-partition resumes it makes happen after it returns, or never
    (if it was cancelled, failed, or a new rebalance began meanwhile)."""

    async def wrapper(self: Recovery, *args: Any, **kwargs: Any) -> None:
        consumer = self.app.consumer
        _install_hold(consumer)
        # Each call holds its own resumes (a context variable, not a shared attribute): a worker
        # frozen mid-recovery wakes with the old generation's call still running beside the
        # new generation's, and neither may release the other's.
        generation = self.app.consumer_generation_id
        token = _held.set([])
        try:
            await original(self, *args, **kwargs)
        except BaseException:
            # Cancelled or failed (a new rebalance): its seek may not have happened, so what it
            # held is dropped; the next recovery resumes the partitions after its own seek.
            _held.reset(token)
            raise
        held = _held.get() or []
        _held.reset(token)
        if self.app.consumer_generation_id != generation:
            # A new generation began meanwhile: its recovery paused these partitions and will
            # resume them after its own seek; resuming them now would fetch before that seek.
            logger.info("recovery of generation %s ended after a new rebalance: its resumes dropped", generation)
            return
        for tps in held:
            consumer.resume_partitions(tps)

    return wrapper


def resume_streams_after_seek_and_flow() -> None:
    """Hold back stream-partition resumes in recovery until seek and flow are done (idempotent)."""
    for name in ("on_recovery_completed", "_resume_streams"):
        what = f"{name} resumes stream partitions after its seek"
        patch(Recovery, name, hold_stream_resumes, what, "async (self, generation_id)")


def fetch_only_partitions_active_when_issued() -> None:
    """Give the consumer thread a snapshot of the active partitions, not the live set (idempotent)."""

    def wrap(original: Method) -> Method:
        async def _getmany(self: ThreadDelegateConsumer, active_partitions: Any, timeout: float) -> Any:
            if active_partitions is None:  # a client-only app: every partition, as before
                return await original(self, None, timeout)
            snapshot = frozenset(active_partitions)
            if not snapshot:
                return {}  # aiokafka would read an empty set as "every partition"
            return await original(self, snapshot, timeout)

        return _getmany

    what = "fetches drain only partitions active when issued"
    patch(ThreadDelegateConsumer, "_getmany", wrap, what, "async (self, active_partitions, timeout)")


def seek_uncommitted_stream_partitions_to_start() -> None:
    """Make the seek to committed offsets also move never-committed stream partitions to their start
    (idempotent)."""

    def wrap(original: Method) -> Method:
        async def seek_to_committed(self: ThreadDelegateConsumer) -> Any:
            committed = await original(self)
            is_changelog = self._is_changelog_tp
            unstarted = [tp for tp, offset in committed.items() if not offset and not is_changelog(TP(*tp))]
            if unstarted:
                try:
                    await self._thread.seek_to_beginning(*unstarted)
                except IllegalStateError as exc:  # revoked meanwhile: the rebalance under way seeks it again
                    logger.info("seek to the start of never-committed partitions abandoned: %s", exc)
            return committed

        return seek_to_committed

    what = "never-committed stream partitions sought to start"
    patch(ThreadDelegateConsumer, "seek_to_committed", wrap, what, "async (self)")


def restart_recovery_passes_outlived_by_a_rebalance() -> None:
    """Make a recovery seek to offsets a newer rebalance registered but never built restart the pass
    (idempotent)."""

    def wrap(original: Method) -> Method:
        async def _seek_offsets(self: Recovery, consumer: Any, tps: Any, offsets: Any, title: str) -> None:
            unbuilt = sorted(tp for tp in tps if offsets.get(tp, 0) is None)
            if unbuilt:
                logger.info("%s recovery outlived by a rebalance (%s not built yet): next pass", title, unbuilt)
                raise RebalanceAgain()
            await original(self, consumer, tps, offsets, title)

        return _seek_offsets

    what = "a recovery pass outlived by a rebalance restarts"
    patch(Recovery, "_seek_offsets", wrap, what, "async (self, consumer, tps, offsets, title)")


def put_back_fetches_that_outlived_their_assignment() -> None:
    """Make a fetch whose assignment changed while it waited return nothing and put back what it
    drained (idempotent)."""

    def wrap(original: Method) -> Method:
        async def _fetch_records(self: AIOKafkaConsumerThread, consumer: Any, *args: Any, **kwargs: Any) -> Any:
            subscriptions = consumer._fetcher._subscriptions
            issued_under = _assignment(subscriptions)
            records = await original(self, consumer, *args, **kwargs)
            if not records or _assignment(subscriptions) is issued_under:
                return records
            # Runs in the consumer thread with no await since the drain: nothing has moved these
            # positions, and every drained partition is still assigned.
            for tp, batch in records.items():
                consumer.seek(tp, batch[0].offset)
            logger.info(
                "a fetch begun before a rebalance drained %d records of %d partitions after it: put back",
                sum(len(batch) for batch in records.values()),
                len(records),
            )
            return {}

        return _fetch_records

    what = "fetches that outlived their assignment put back"
    expected = "async (self, consumer, active_partitions, timeout, max_records)"
    patch(AIOKafkaConsumerThread, "_fetch_records", wrap, what, expected)


def skip_event_path_checks_of_partitions_without_a_position() -> None:
    """Make the livelock detector's ``verify_event_path`` skip a partition awaiting its offset reset
    instead of crashing on aiokafka's position assertion (idempotent)."""

    def wrap(original: Method) -> Method:
        def verify_event_path(self: AIOKafkaConsumerThread, now: float, tp: TP) -> None:
            assignment = _assignment(self._ensure_consumer()._fetcher._subscriptions)
            state = None if assignment is None else assignment.state_value(TopicPartition(tp.topic, tp.partition))
            if state is not None and not state.has_valid_position:
                return None  # awaiting an offset reset: nothing fetched yet, nothing to verify
            original(self, now, tp)
            return None

        return verify_event_path

    what = "the livelock check skips partitions without a position"
    patch(AIOKafkaConsumerThread, "verify_event_path", wrap, what, "(self, now, tp)")


def skip_commits_of_a_crashed_consumer_thread() -> None:
    """Make ``AIOKafkaConsumerThread.commit`` return False, without queueing the call to the consumer
    thread, once that thread's service has crashed (idempotent): see fix 8."""

    def wrap(original: Method) -> Method:
        async def commit(self: AIOKafkaConsumerThread, offsets: Any) -> bool:
            if self._crashed.is_set():
                logger.warning("commit of %d partition(s) skipped: the consumer thread crashed", len(offsets))
                return False
            return bool(await original(self, offsets))

        return commit

    what = "commits skipped once the consumer thread crashed"
    patch(AIOKafkaConsumerThread, "commit", wrap, what, "async (self, offsets)")


#: How long a worker's fetch waits at the broker for data (fix 9); Faust's hard-coded value is 1500.
FETCH_MAX_WAIT_MS = 50


def shorten_the_fetch_long_poll() -> None:
    """Make ``AIOKafkaConsumerThread._create_worker_consumer`` give the consumer it creates a
    long poll of :data:`FETCH_MAX_WAIT_MS` (idempotent): see fix 9."""

    def wrap(original: Method) -> Method:
        def create(self: AIOKafkaConsumerThread, transport: Any) -> Any:
            consumer = original(self, transport)
            consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read when it starts: its fetcher is built then
            return consumer

        return create

    what = f"a fetch long-polls {FETCH_MAX_WAIT_MS} ms, not 1500"
    patch(AIOKafkaConsumerThread, "_create_worker_consumer", wrap, what, "(self, transport)")


def _assignment(subscriptions: Any) -> Any:
    subscription = subscriptions.subscription
    return None if subscription is None else subscription.assignment


def apply(*, allow_unverified: bool = False) -> None:
    """Apply every workaround in this module (idempotent); the app factory calls it before building the app.

    Raises UnverifiedDependencyError (a ConfigurationError: the CLI prints one line) if faust-streaming,
    mode-streaming or aiokafka is not at its verified version, unless ``allow_unverified``: then each
    mismatch is logged as a WARNING and the workarounds are applied all the same. A wrapped method
    whose signature changed is refused whatever ``allow_unverified`` says.
    """
    mismatches = version_mismatches()
    if mismatches and not allow_unverified:
        raise UnverifiedDependencyError(
            "the Faust workarounds (streamapp/faust_fixes.py) were verified with other versions: "
            f"{'; '.join(mismatches)}. Install the versions of constraints.txt, or set {OVERRIDE}=1 "
            "to start anyway while testing an upgrade"
        )
    for mismatch in mismatches:
        logger.warning(
            "%s is set: Faust workarounds applied to a version they were NOT verified with: %s", OVERRIDE, mismatch
        )
    start_assigned_partitions_paused()
    resume_streams_after_seek_and_flow()
    fetch_only_partitions_active_when_issued()
    seek_uncommitted_stream_partitions_to_start()
    restart_recovery_passes_outlived_by_a_rebalance()
    put_back_fetches_that_outlived_their_assignment()
    skip_event_path_checks_of_partitions_without_a_position()
    skip_commits_of_a_crashed_consumer_thread()
    shorten_the_fetch_long_poll()
