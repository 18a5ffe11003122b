"""The first step of every input agent: a raw message becomes an event, or a dead letter."""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol, TypeVar

from aiokafka.errors import KafkaError
from faust.exceptions import ProducerSendError
from faust.types import Message
from pydantic import TypeAdapter

from schemas.actions import Lineage
from schemas.deadletter import DeadLetter
from streamapp.app import runtime
from streamapp.decode import dead_letter_key, decode
from streamapp.sinks.email import backoff

logger = logging.getLogger(__name__)


class _Event(Protocol):
    @property
    def event_id(self) -> str: ...

    @property
    def type(self) -> str: ...


_E = TypeVar("_E", bound=_Event)


async def decode_or_dead_letter(
    message: Message, adapter: TypeAdapter[_E], known_types: frozenset[str]
) -> tuple[_E, Lineage] | None:
    """The event in ``message`` with its lineage; None after sending bad input to ``dead-letters``.

    Bad input is never dropped silently: the dead letter carries the reason and the
    original bytes, the metric counts it by reason, and the log says where it was. Returns
    only once the broker has the dead letter (see :func:`send_dead_letter`).
    """
    outcome = decode(
        adapter,
        known_types,
        key=message.key,
        value=message.value,
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
    )
    if isinstance(outcome, DeadLetter):
        runtime.metrics.dead_letters.labels(message.topic, outcome.reason).inc()
        logger.warning(
            "dead-lettered topic=%s partition=%s offset=%s reason=%s: %s",
            message.topic,
            message.partition,
            message.offset,
            outcome.reason,
            outcome.detail,
        )
        await send_dead_letter(message, outcome)
        return None
    runtime.metrics.events.labels(message.topic, outcome.type).inc()
    lineage = Lineage(
        event_id=outcome.event_id, topic=message.topic, partition=message.partition, offset=message.offset
    )
    return outcome, lineage


async def send_dead_letter(message: Message, letter: DeadLetter) -> None:
    """Write ``letter``, the dead letter of ``message``, and wait until the broker has it.

    A failed send is retried with capped backoff, never raised: Faust acks the message of
    an agent that raises, so raising would commit the bad message without its dead letter.
    Meanwhile the partition waits, and its lag and the log say so.
    """
    key = dead_letter_key(message.key)
    value = letter.model_dump_json().encode()
    attempt = 0
    while True:
        try:
            await (await runtime.topics.dead_letters.send(key=key, value=value))
        except (KafkaError, ProducerSendError) as exc:
            attempt += 1
            logger.warning(
                "dead letter of topic=%s partition=%s offset=%s not written (attempt %d), retrying: %r",
                message.topic,
                message.partition,
                message.offset,
                attempt,
                exc,
            )
            await asyncio.sleep(backoff(attempt))
        else:
            return
