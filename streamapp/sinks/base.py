"""The sink contract: perform one action's effect, exactly once per ``action_id``.

When it runs: the caller (the agent consuming the ``actions`` topic) calls
:meth:`Sink.deliver` once per delivery of an action, after dispatching on
``action.effect.channel`` to the sink of that channel. Kafka delivers at least once,
so the same ``action_id`` can arrive several times, one after the other or at the
same moment from two workers during a rebalance. Every sink is idempotent on
``action_id``: only the first successful delivery has an effect.

What it returns (:data:`Outcome`):

* ``"applied"``: the effect happened during this call;
* ``"duplicate"``: it had already been done (or permanently failed) for this
  ``action_id``; nothing happened now;
* ``"failed"``: the effect failed permanently; the failure is recorded with its
  reason and the action will not be tried again.

After any of the three the caller may commit the action's offset.

What an exception means: :class:`~streamapp.errors.RetryableError` escaping
``deliver`` means "not done, try later": the caller must not commit the offset
and should deliver the action again. A :class:`ValueError` means the caller
dispatched an action of another channel. Any other exception is a bug, with one
caveat: a database outage surfaces as asyncpg's own exceptions, not as RetryableError.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal, Self, TypeVar

import asyncpg

from schemas.actions import Action
from schemas.common import Outgoing
from streamapp.settings import Settings

Outcome = Literal["applied", "duplicate", "failed"]

_E = TypeVar("_E", bound=Outgoing)


@dataclass(frozen=True)
class PreviewContext:
    """What a preview needs besides the action: the senders the worker would use."""

    #: The From of emails (``STREAMAPP_SMTP_FROM``).
    email_sender: str
    #: The shop's Twilio sender, as its connection names it; None when it has not connected Twilio.
    sms_sender: str | None


class Sink(abc.ABC):
    """Performs the effects of one channel; see the module docstring for the contract."""

    #: The ``effect.channel`` this sink performs; the caller dispatches on it.
    channel: ClassVar[str]
    #: Whether a ``"failed"`` outcome also goes to the dead-letter topic (an operator must act:
    #: a payment link Stripe refused). An opted-out SMS or a bounced email is an answer, not an error.
    dead_letters_failures: ClassVar[bool] = False

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @classmethod
    def build(cls, pool: asyncpg.Pool, settings: Settings) -> Self:
        """The sink a worker runs (this default: a sink that needs nothing but PostgreSQL)."""
        return cls(pool)

    @classmethod
    def preview(cls, action: Action, context: PreviewContext) -> str | None:
        """What this sink would send for ``action``, as text for a person (``streamapp preview``);
        None when the channel has no preview (this default). Performs nothing."""
        return None

    @abc.abstractmethod
    async def deliver(self, action: Action) -> Outcome:
        """Perform ``action``'s effect unless it was already done for its ``action_id``."""

    async def close(self) -> None:  # noqa: B027  # most sinks hold nothing to close
        """Release what the sink holds (an HTTP connection pool); a later delivery opens it again."""


class BatchSink(Sink):
    """A sink that performs many actions of its channel in one statement (:meth:`deliver_many`):
    what the actions agent uses for a run of consecutive actions of that channel."""

    @abc.abstractmethod
    async def deliver_many(self, actions: Sequence[Action]) -> list[Outcome]:
        """:meth:`deliver` of each of ``actions`` in one statement (so one transaction): their outcomes,
        in order. An ``action_id`` twice in ``actions`` is applied once, at its first place."""

    async def deliver(self, action: Action) -> Outcome:
        return (await self.deliver_many([action]))[0]


def outcomes_of(actions: Sequence[Action], applied: set[str]) -> list[Outcome]:
    """The outcome of each of ``actions`` when the ids in ``applied`` were written now (each once, at
    its first place in ``actions``) and every other one already had been."""
    outcomes: list[Outcome] = []
    for action in actions:
        if action.action_id in applied:
            applied.discard(action.action_id)
            outcomes.append("applied")
        else:
            outcomes.append("duplicate")
    return outcomes


def effect_of(action: Action, kind: type[_E]) -> _E:
    """``action.effect`` as ``kind``; a ValueError if the caller dispatched another channel."""
    effect = action.effect
    if not isinstance(effect, kind):
        raise ValueError(f"action {action.action_id} has channel {effect.channel!r}, not {kind.__name__}")
    return effect
