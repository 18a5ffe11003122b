"""Turning raw topic messages into events, or into dead letters that say why not."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import TypeAdapter, ValidationError

from schemas.deadletter import DeadLetter, Reason

T = TypeVar("T")

#: Larger values are refused before parsing (Kafka's default message limit is 1 MiB).
MAX_VALUE_BYTES = 1_048_576


def _b64(data: bytes | None) -> str | None:
    return base64.b64encode(data).decode("ascii") if data is not None else None


def dead_letter(
    reason: Reason,
    detail: str,
    *,
    key: bytes | None,
    value: bytes | None,
    topic: str,
    partition: int,
    offset: int,
    now: datetime | None = None,
) -> DeadLetter:
    """A dead letter for one message: the reason, where it was, and its exact bytes."""
    return DeadLetter(
        reason=reason,
        detail=detail[:4000],
        topic=topic,
        partition=partition,
        offset=offset,
        key_b64=_b64(key),
        value_b64=_b64(value),
        rejected_at=now or datetime.now(UTC),
    )


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(part) for part in error["loc"]) or "value"
        parts.append(f"{where}: {error['msg']}")
    more = f" (+{exc.error_count() - 5} more)" if exc.error_count() > 5 else ""
    return "; ".join(parts) + more


def decode(  # noqa: PLR0911 - one return per rejection reason
    adapter: TypeAdapter[T],
    known_types: frozenset[str],
    *,
    key: bytes | None,
    value: bytes | None,
    topic: str,
    partition: int,
    offset: int,
    now: datetime | None = None,
) -> T | DeadLetter:
    """The event in ``value``, or a DeadLetter carrying the reason and the original bytes."""

    def reject(reason: Reason, detail: str) -> DeadLetter:
        return dead_letter(
            reason, detail, key=key, value=value, topic=topic, partition=partition, offset=offset, now=now
        )

    if value is None:
        return reject("invalid_json", "empty value (tombstone) on an event topic")
    if len(value) > MAX_VALUE_BYTES:
        return reject("too_large", f"value is {len(value)} bytes; the limit is {MAX_VALUE_BYTES}")
    try:
        raw: Any = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return reject("invalid_json", f"not JSON: {exc}")
    except RecursionError:
        return reject("invalid_json", "JSON nested too deeply")
    if not isinstance(raw, dict):
        return reject("not_an_object", f"expected a JSON object, got {type(raw).__name__}")
    event_type = raw.get("type")
    if event_type not in known_types:
        known = ", ".join(sorted(known_types))
        return reject("unknown_type", f"type {event_type!r} is not one of: {known}")
    try:
        return adapter.validate_python(raw)
    except ValidationError as exc:
        return reject("invalid_event", f"{event_type}: {_describe(exc)}")
