"""The contract of every delivery sink (email, SMS, payment link), written once.

Like faststream's ``tests/brokers/base/``: :class:`SinkContract` holds the tests, a sink's
test module subclasses it (``class TestEmailSinkContract(SinkContract)``) and overrides the
``double`` fixture with a :class:`SinkDouble`: its sink, its action, and the provider it talks
to (the real SMTP server, Twilio's contract, Stripe's), with faults to play. The contract:

* idempotent on ``action_id``: delivered twice, performed once, recorded ``sent``;
* the row lock: two concurrent deliveries perform once, the second waiting on the lock
  (also when the row exists already, from an earlier delivery that ran out of attempts);
* transient failures are retried with the backoff (0.5 s, then doubling);
* exhausted attempts raise RetryableError and leave the row ``pending``; a redelivery performs;
* a permanent failure is recorded ``failed``, never retried, and a redelivery is a duplicate;
* an action of another channel is refused with a ValueError.
"""

from __future__ import annotations

import abc
import asyncio
from typing import Any, ClassVar

import asyncpg
import pytest

from schemas.actions import Action
from streamapp.errors import RetryableError
from streamapp.queries import get_delivery
from streamapp.sinks.base import Sink
from tests.harness.waits import Sleeps, eventually


class SinkDouble(abc.ABC):
    """One sink under test and the provider behind it, for one test."""

    #: The sink's channel, as recorded in ``deliveries``.
    channel: ClassVar[str]
    #: The ``last_error`` of the pending row an earlier delivery left (the pending-row case).
    earlier_error: ClassVar[str]
    #: Requests to providers one successful delivery makes (each counts one attempt).
    requests_per_delivery: ClassVar[int] = 1
    #: Found in the RetryableError and the ``last_error`` of a transient failure.
    transient_error: ClassVar[str]
    #: Each found in the ``last_error`` of a permanent failure.
    permanent_error: ClassVar[tuple[str, ...]]
    #: A channel the sink refuses, and an effect of it.
    foreign_channel: ClassVar[str]

    @abc.abstractmethod
    def action(self) -> Action:
        """A new action of the sink's channel, with a fresh ``action_id``."""

    @abc.abstractmethod
    def foreign_effect(self) -> Any:
        """An effect of :attr:`foreign_channel`."""

    @abc.abstractmethod
    def sink(self, *, sleeps: Sleeps | None = None, max_attempts: int = 5) -> Sink:
        """The sink, talking to the double's provider (closed at teardown)."""

    @abc.abstractmethod
    def fail_transiently(self, count: int) -> None:
        """The next ``count`` requests fail in a way worth retrying."""

    @abc.abstractmethod
    def fail_permanently(self) -> None:
        """The next request is refused for good."""

    @abc.abstractmethod
    def hold(self) -> None:
        """Hold every request (the effect's) until :meth:`release`."""

    @abc.abstractmethod
    def holding(self) -> bool:
        """Whether a request is being held."""

    @abc.abstractmethod
    def release(self) -> None:
        """Let the held requests go."""

    @abc.abstractmethod
    def requests(self) -> int:
        """Requests that reached the provider for the effect (the first leg of a payment link)."""

    @abc.abstractmethod
    def performed(self) -> int:
        """Effects that happened (messages that left)."""


async def _waiting_on_a_lock(pool: asyncpg.Pool) -> Any:
    return await pool.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )


class SinkContract:
    """The tests every delivery sink passes; subclass it and override :meth:`double`."""

    @pytest.fixture
    def double(self) -> SinkDouble:
        raise NotImplementedError("a sink's contract class overrides the double fixture")

    async def test_delivered_twice_is_performed_once(self, pool: asyncpg.Pool, double: SinkDouble) -> None:
        sink = double.sink()
        action = double.action()

        assert await sink.deliver(action) == "applied"
        assert await sink.deliver(action) == "duplicate"

        assert (double.requests(), double.performed()) == (1, 1)
        delivery = await get_delivery(pool, action.action_id)
        assert delivery is not None
        assert (delivery.channel, delivery.status, delivery.attempts, delivery.recipient, delivery.last_error) == (
            double.channel,
            "sent",
            double.requests_per_delivery,
            getattr(action.effect, "to", None),
            None,
        )

    @pytest.mark.parametrize("earlier_attempt", [False, True], ids=["first-delivery", "pending-row"])
    async def test_concurrent_deliveries_perform_once(
        self, pool: asyncpg.Pool, double: SinkDouble, earlier_attempt: bool
    ) -> None:
        sink = double.sink()
        action = double.action()
        # The row exists already (an earlier delivery ran out of attempts): only the lock serialises.
        if earlier_attempt:
            await pool.execute(
                "INSERT INTO deliveries (action_id, channel, shop_id, customer_id, recipient, attempts, last_error) "
                "VALUES ($1, $2, $3, $4, $5, 1, $6)",
                action.action_id,
                double.channel,
                action.shop_id,
                action.customer_id,
                getattr(action.effect, "to", None),
                double.earlier_error,
            )
        double.hold()

        both = asyncio.gather(sink.deliver(action), sink.deliver(action))
        try:
            # One delivery is inside its request while the other waits on the row lock, not on the provider.
            await eventually(double.holding, what="the first delivery to reach the provider")
            await eventually(lambda: _waiting_on_a_lock(pool), what="the second delivery to wait on the row lock")
        finally:
            double.release()
            outcomes = await asyncio.wait_for(both, 20)

        assert sorted(outcomes) == ["applied", "duplicate"]
        assert (double.requests(), double.performed()) == (1, 1)
        delivery = await get_delivery(pool, action.action_id)
        assert delivery is not None
        assert (delivery.status, delivery.attempts) == ("sent", double.requests_per_delivery + earlier_attempt)

    async def test_transient_failures_are_retried_with_backoff(self, pool: asyncpg.Pool, double: SinkDouble) -> None:
        double.fail_transiently(2)
        sleeps = Sleeps()
        action = double.action()
        sink = double.sink(sleeps=sleeps)

        assert await sink.deliver(action) == "applied"

        assert sleeps.delays == [0.5, 1.0]
        assert (double.requests(), double.performed()) == (3, 1)
        delivery = await get_delivery(pool, action.action_id)
        assert delivery is not None
        assert (delivery.status, delivery.attempts) == ("sent", 2 + double.requests_per_delivery)
        if getattr(sink, "sent_clears_error", True):
            assert delivery.last_error is None
        else:  # the email sink keeps what the attempts before it met
            assert delivery.last_error is not None and double.transient_error in delivery.last_error

    async def test_exhausted_attempts_raise_retryable_leave_the_row_pending_and_a_redelivery_performs(
        self, pool: asyncpg.Pool, double: SinkDouble
    ) -> None:
        double.fail_transiently(3)
        sleeps = Sleeps()
        action = double.action()

        with pytest.raises(RetryableError, match=double.transient_error):
            await double.sink(sleeps=sleeps, max_attempts=3).deliver(action)

        assert sleeps.delays == [0.5, 1.0]
        assert (double.requests(), double.performed()) == (3, 0)
        delivery = await get_delivery(pool, action.action_id)
        assert delivery is not None and (delivery.status, delivery.attempts) == ("pending", 3)
        assert delivery.last_error is not None and double.transient_error in delivery.last_error

        assert await double.sink(sleeps=sleeps).deliver(action) == "applied"
        assert (double.requests(), double.performed()) == (4, 1)
        delivery = await get_delivery(pool, action.action_id)
        assert delivery is not None
        assert (delivery.status, delivery.attempts) == ("sent", 3 + double.requests_per_delivery)

    async def test_a_permanent_failure_is_recorded_and_never_retried(
        self, pool: asyncpg.Pool, double: SinkDouble
    ) -> None:
        double.fail_permanently()
        sleeps = Sleeps()
        action = double.action()

        assert await double.sink(sleeps=sleeps).deliver(action) == "failed"

        assert sleeps.delays == [] and (double.requests(), double.performed()) == (1, 0)
        delivery = await get_delivery(pool, action.action_id)
        assert delivery is not None and (delivery.status, delivery.attempts) == ("failed", 1)
        assert delivery.last_error is not None
        for part in double.permanent_error:
            assert part in delivery.last_error

        # The redelivery reads the row and stops; it never reaches the provider.
        assert await double.sink(sleeps=sleeps).deliver(action) == "duplicate"
        assert double.requests() == 1

    async def test_an_action_of_another_channel_is_refused(self, double: SinkDouble) -> None:
        action = double.action().model_copy(update={"effect": double.foreign_effect()})
        with pytest.raises(ValueError, match=double.foreign_channel):
            await double.sink().deliver(action)
