"""The machinery of every sink that talks to a provider (email, SMS, payment link), once.

Like quixstreams' ``BatchingSink``: :class:`DeliverySink` owns the record, the lock, the
attempts and the backoff; a subclass only performs its effect (:meth:`DeliverySink.perform`).

The ``deliveries`` row of the action is the record, and its row lock the mutex:

1. One transaction inserts the row (``pending``) if it is missing and locks it with
   ``SELECT ... FOR UPDATE``. A concurrent delivery of the same ``action_id`` blocks on
   that row (its uncommitted insert or its lock) until the first transaction ends, then
   reads the status it left.
2. Any status but ``pending`` (``sent``, ``failed``, ``opted_out``): ``"duplicate"``; the
   provider is not contacted.
3. ``pending``: still holding the lock, the sink performs its effect
   (:meth:`DeliverySink.perform`), each request to a provider through
   :meth:`Delivery.attempt`: transient failures are retried up to ``max_attempts`` times
   with :func:`backoff`, then the result is written and the transaction commits.

Guaranteed: two deliveries never perform at the same time, and once the row says anything
but ``pending`` nothing is ever performed again for that ``action_id``.

What a failure does: a permanent failure is written to the row (``failed``, or the status
the sink's judge names) and the outcome is ``"failed"``. When every attempt failed
transiently the ``pending`` row is committed with its ``attempts`` and ``last_error`` and
RetryableError is raised: the caller delivers the action again later. Any other exception
(RetryableError from a sink, a bug, the database) rolls the transaction back: nothing is
recorded. ``attempts`` and ``last_error`` are written in the transaction, so they become
visible when it commits; a crash mid-loop loses only those counters.

Cancellation (a stopping worker hands its action back): a sink with
:attr:`DeliverySink.keeps_interrupted_attempts` records an attempt that is cancelled as
:data:`INTERRUPTED` (the attempt counts: the provider may have seen it), keeps what a
cancelled backoff had recorded, commits, and re-raises the cancellation; any other sink
rolls back, as a crash would.

Costs of holding the lock: a pooled connection, an open transaction and the row lock are
held while talking to the provider, backoff sleeps included, at most about
``max_attempts * timeout`` plus the backoff; a concurrent duplicate waits that long.
"""

from __future__ import annotations

import abc
import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Protocol, Self, TypeVar

import asyncpg

from schemas.actions import Action
from streamapp.errors import RetryableError
from streamapp.settings import Settings
from streamapp.sinks.base import Outcome, Sink

logger = logging.getLogger(__name__)

#: The backoff: 0.5 s before the second attempt, doubling, never more than 30 s.
FIRST_DELAY = 0.5
MAX_DELAY = 30.0

Sleep = Callable[[float], Awaitable[None]]

#: ``last_error`` of an attempt cut short because the worker stopped (see the module docstring).
INTERRUPTED = "interrupted: the worker stopped during this attempt"

_CLAIM = """
INSERT INTO deliveries (action_id, channel, shop_id, customer_id, recipient)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (action_id) DO NOTHING
"""
_LOCK = "SELECT status, provider_ref, provider_url FROM deliveries WHERE action_id = $1 FOR UPDATE"
# clock_timestamp(), not now(): now() is the start of the transaction, which spans the retries.
_SENT = """
UPDATE deliveries SET status = 'sent', attempts = attempts + 1, provider_message_id = $2,
    updated_at = clock_timestamp()
WHERE action_id = $1
"""
_SENT_CLEARED = """
UPDATE deliveries SET status = 'sent', attempts = attempts + 1, provider_message_id = $2,
    last_error = NULL, updated_at = clock_timestamp()
WHERE action_id = $1
"""
_PROGRESS = """
UPDATE deliveries SET attempts = attempts + 1, provider_ref = $2, provider_url = $3, last_error = NULL,
    updated_at = clock_timestamp()
WHERE action_id = $1
"""
_ERROR = """
UPDATE deliveries SET status = $2, attempts = attempts + $3, last_error = $4, updated_at = clock_timestamp()
WHERE action_id = $1
"""

T = TypeVar("T")
E = TypeVar("E", bound="Addressed")


class Addressed(Protocol):
    """An effect a delivery sink performs: it has a recipient (an address, a number, a URL)."""

    @property
    def to(self) -> str: ...


def backoff(attempt: int) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
    return min(FIRST_DELAY * 2.0 ** (attempt - 1), MAX_DELAY)


@dataclass(frozen=True)
class Verdict:
    """A judge's reading of a failed request: ``error`` for ``last_error``; ``final`` gives up with
    ``status`` (``failed``, or a sink's own such as ``opted_out``), else the request is retried."""

    error: str
    final: bool = False
    status: str = "failed"


#: Reads an exception of a request: a Verdict, or None when it is not the provider's (it propagates).
Judge = Callable[[Exception], Awaitable[Verdict | None]]


class _Settled(Exception):
    """The row is written (``failed`` or the like): leave the loop, commit, answer ``"failed"``."""


class _Exhausted(Exception):
    """Every attempt failed transiently: commit the counters, then raise RetryableError."""


class _Interrupted(Exception):
    """Cancelled: commit what was recorded, then re-raise ``cancel``."""

    def __init__(self, cancel: asyncio.CancelledError) -> None:
        super().__init__("cancelled")
        self.cancel = cancel


class Delivery:
    """One delivery holding its row's lock: the record of what happened, and the attempt loop."""

    def __init__(self, sink: DeliverySink[Any], conn: asyncpg.Connection, action: Action, row: asyncpg.Record) -> None:
        self.conn = conn
        self.action_id = action.action_id
        #: What an earlier delivery recorded (a payment link's session): ``provider_ref``, ``provider_url``.
        self.provider_ref: str | None = row["provider_ref"]
        self.provider_url: str | None = row["provider_url"]
        self._label = sink.label
        self._sleep = sink.sleep
        self._max_attempts = sink.max_attempts
        self._keep_interrupted = sink.keeps_interrupted_attempts
        self._sent = _SENT_CLEARED if sink.sent_clears_error else _SENT

    async def attempt(self, request: Callable[[], Awaitable[T]], judge: Judge, what: str = "") -> T:
        """``request``'s answer, retrying what ``judge`` calls transient with the backoff.

        Every failed request is written to the row (one attempt each). A final verdict ends the
        delivery as ``"failed"``; the last transient failure ends it with RetryableError.
        """
        for attempt in range(1, self._max_attempts + 1):
            try:
                answer = await request()
            except asyncio.CancelledError as cancel:
                if self._keep_interrupted:
                    await self.record("pending", 1, INTERRUPTED)
                    raise _Interrupted(cancel) from None
                raise
            except Exception as exc:
                verdict = await judge(exc)
                if verdict is None:
                    raise
                if verdict.final:
                    await self.fail(verdict.error, attempts=1, status=verdict.status)
                    raise _Settled from None
                await self.record("pending", 1, verdict.error)
                logger.info("%s %s attempt %d failed: %s", self._label, self.action_id, attempt, verdict.error)
                if attempt == self._max_attempts:
                    raise _Exhausted(verdict.error) from None
                try:
                    await self._sleep(backoff(attempt))
                except asyncio.CancelledError as cancel:
                    if self._keep_interrupted:
                        raise _Interrupted(cancel) from None
                    raise
            else:
                logger.info("%s %s: %s succeeded on attempt %d", self._label, self.action_id, what or "sent", attempt)
                return answer
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def sent(self, provider_message_id: str) -> Outcome:
        """Record the effect done (one more attempt, the provider's id): ``"applied"``."""
        await self.conn.execute(self._sent, self.action_id, provider_message_id)
        return "applied"

    async def progress(self, provider_ref: str, provider_url: str) -> None:
        """Record a first leg done (one more attempt, the provider's reference and URL); still pending."""
        await self.conn.execute(_PROGRESS, self.action_id, provider_ref, provider_url)
        self.provider_ref, self.provider_url = provider_ref, provider_url

    async def fail(self, error: str, *, attempts: int = 0, status: str = "failed") -> Outcome:
        """Record a permanent failure (never tried again): ``"failed"``."""
        await self.record(status, attempts, error)
        if status == "failed":
            logger.warning("%s %s failed: %s", self._label, self.action_id, error)
        else:
            logger.info("%s %s %s: %s", self._label, self.action_id, status, error)
        return "failed"

    async def record(self, status: str, attempts: int, error: str) -> None:
        """Write ``status``, ``attempts`` more and ``last_error`` to the row."""
        await self.conn.execute(_ERROR, self.action_id, status, attempts, error)


class DeliverySink(Sink, Generic[E]):
    """A sink whose effect goes through a provider, recorded in ``deliveries`` (see the module docstring).

    ``sleep`` waits between attempts (inject a recorder in tests); ``timeout`` bounds each
    request to the provider, in seconds.
    """

    #: The effect model this sink performs.
    effect_type: type[E]
    #: How logs and errors name the channel.
    label: ClassVar[str]
    #: Whether a cancelled attempt is committed as INTERRUPTED (else the transaction rolls back).
    keeps_interrupted_attempts: ClassVar[bool] = False
    #: Whether ``sent`` clears the ``last_error`` of earlier attempts.
    sent_clears_error: ClassVar[bool] = True

    def __init__(
        self,
        pool: asyncpg.Pool,
        settings: Settings,
        *,
        sleep: Sleep = asyncio.sleep,
        max_attempts: int = 5,
        timeout: float = 30.0,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.pool = pool
        self.settings = settings
        self.sleep = sleep
        self.max_attempts = max_attempts
        self.timeout = timeout

    @classmethod
    def build(cls, pool: asyncpg.Pool, settings: Settings) -> Self:
        """The sink a worker runs: the settings' provider timeout, real sleeps, five attempts."""
        return cls(pool, settings, timeout=settings.provider_timeout_seconds)

    def effect(self, action: Action) -> E:
        """``action.effect`` as this sink's model; a ValueError if the caller dispatched another channel."""
        effect = action.effect
        if not isinstance(effect, self.effect_type):
            raise ValueError(
                f"action {action.action_id} has channel {effect.channel!r}, not {self.effect_type.__name__}"
            )
        return effect

    async def deliver(self, action: Action) -> Outcome:
        effect = self.effect(action)
        cancelled: asyncio.CancelledError | None = None
        exhausted: str | None = None
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(_CLAIM, action.action_id, self.channel, action.shop_id, action.customer_id, effect.to)
            row = await conn.fetchrow(_LOCK, action.action_id)
            if row["status"] != "pending":
                logger.info("%s %s already %s", self.label, action.action_id, row["status"])
                return "duplicate"
            try:
                return await self.perform(Delivery(self, conn, action, row), action, effect)
            except _Settled:
                return "failed"
            except _Exhausted as exc:
                exhausted = str(exc)  # leaving the block normally commits the counters
            except _Interrupted as exc:
                cancelled = exc.cancel
        if cancelled is not None:
            logger.info("%s %s: delivery cancelled, attempts so far recorded", self.label, action.action_id)
            raise cancelled
        raise RetryableError(
            f"{self.label} {action.action_id} not done after {self.max_attempts} attempts: {exhausted}"
        )

    @abc.abstractmethod
    async def perform(self, delivery: Delivery, action: Action, effect: E) -> Outcome:
        """Perform ``effect``, holding the row's lock: each request through :meth:`Delivery.attempt`,
        the result through :meth:`Delivery.sent` or :meth:`Delivery.fail`."""
