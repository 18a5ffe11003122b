"""Turning raw topic messages into events, or into dead letters that say why not.

Pure and total: :func:`decode` never raises on any key or value; every rejection is a
:class:`~schemas.deadletter.DeadLetter` with its reason and the original bytes. The
contract it enforces is the one the committed JSON Schemas describe, read strictly:

- the value is UTF-8 (no byte-order mark, no UTF-16/32) and RFC 8259 JSON: no ``NaN`` or
  ``Infinity``, no name twice in one object (parsers disagree on which one wins, so the
  value would mean different things to different readers), at most :data:`MAX_DEPTH` deep;
- JSON types are not coerced: ``"12"`` or ``true`` is not an integer, ``1700000000`` not a
  timestamp;
- no string of the event contains U+0000, which PostgreSQL's text cannot store;
- every moment (``occurred_at``) is one in UTC's calendar too: ``0001-01-01T00:00:00+14:00``
  is a valid RFC 3339 timestamp, but in UTC it falls in year 0, which neither Python nor the
  database driver can represent.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import TypeAdapter, ValidationError

from schemas.deadletter import DeadLetter, Reason

T = TypeVar("T")

#: A message whose key and value together are larger is refused before parsing (Kafka's
#: default message limit is 1 MiB). Its dead letter keeps only this many of its first bytes.
MAX_MESSAGE_BYTES = 1_048_576
#: The largest dead letter :func:`dead_letter` makes, record overhead included: its key
#: (at most :data:`MAX_MESSAGE_BYTES`), the base64 of key and value (at most 4/3 of it) and
#: the envelope (under 32 KiB, a 4000-character detail escaped included) stay below 3 MiB.
#: The ``dead-letters`` topic and the worker's producer accept messages this large.
DEAD_LETTER_MAX_BYTES = 3 * MAX_MESSAGE_BYTES
#: Deeper JSON is refused: events are four levels deep, and a fixed limit answers the same
#: in every process, unlike Python's recursion limit.
MAX_DEPTH = 64


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
    """A dead letter for one message: the reason, where it was, and its exact bytes.

    A message over :data:`MAX_MESSAGE_BYTES` (key and value together) keeps only its first
    :data:`MAX_MESSAGE_BYTES` (the key first); the detail then says so and gives the value's
    size and SHA-256, and the whole message stays at ``topic``/``partition``/``offset``.
    Either way the dead letter fits in :data:`DEAD_LETTER_MAX_BYTES`; send it keyed by
    :func:`dead_letter_key`.
    """
    size = len(key or b"") + len(value or b"")
    if size > MAX_MESSAGE_BYTES:
        kept_key = dead_letter_key(key)
        kept_value = None if value is None else value[: MAX_MESSAGE_BYTES - len(kept_key or b"")]
        kept = len(kept_key or b"") + len(kept_value or b"")
        digest = hashlib.sha256(value or b"").hexdigest()
        note = (
            f"key_b64 and value_b64 keep the first {kept} of {size} bytes (key {len(key or b'')}, value "
            f"{len(value or b'')} with sha256 {digest}); the whole message is at {topic}[{partition}]@{offset}"
        )
        detail = f"{detail[: 3900 - len(note)]}; {note}"
        key, value = kept_key, kept_value
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


def dead_letter_key(key: bytes | None) -> bytes | None:
    """The key of the dead letter of a message keyed ``key``: the same, cut at :data:`MAX_MESSAGE_BYTES`."""
    return None if key is None else key[:MAX_MESSAGE_BYTES]


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(part) for part in error["loc"]) or "value"
        parts.append(f"{where}: {error['msg']}")
    more = f" (+{exc.error_count() - 5} more)" if exc.error_count() > 5 else ""
    return "; ".join(parts) + more


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for name, item in pairs:
        if name in found:
            raise ValueError(f"duplicate name {name[:100]!r} in an object")
        found[name] = item
    return found


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _too_deep(raw: Any) -> bool:
    stack: list[tuple[Any, int]] = [(raw, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        for child in children:
            if isinstance(child, dict | list):
                if depth + 1 > MAX_DEPTH:
                    return True
                stack.append((child, depth + 1))
    return False


def _first_unstorable(item: Any) -> tuple[str, str] | None:
    """Where the first leaf of ``item`` that PostgreSQL or the UTC calendar cannot hold is (a dotted
    path, ``value`` for ``item`` itself), and why; None if every leaf can be stored."""
    found = _unstorable_below(item)
    if found is None:
        return None
    parts, problem = found
    return ".".join(reversed(parts)) or "value", problem


def _unstorable_below(item: Any) -> tuple[list[str], str] | None:
    # The path is built only for a leaf that fails, innermost part first: most events have none.
    if isinstance(item, dict):
        children: Iterable[tuple[Any, Any]] = item.items()
    elif isinstance(item, list | tuple):
        children = enumerate(item)
    else:
        problem = _unstorable(item)
        return None if problem is None else ([], problem)
    for name, child in children:
        found = _unstorable_below(child)
        if found is not None:
            found[0].append(str(name))
            return found
    return None


def _unstorable(leaf: Any) -> str | None:
    if isinstance(leaf, str) and "\x00" in leaf:
        return "contains U+0000 (NUL)"
    if isinstance(leaf, datetime):
        try:
            leaf.astimezone(UTC)
        except OverflowError:
            return f"{leaf.isoformat()} is outside the calendar in UTC (years 1 to 9999)"
    return None


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
    """The event in ``value``, or a DeadLetter carrying the reason and the original bytes; never raises."""

    def reject(reason: Reason, detail: str) -> DeadLetter:
        return dead_letter(
            reason, detail, key=key, value=value, topic=topic, partition=partition, offset=offset, now=now
        )

    if value is None:
        return reject("invalid_json", "empty value (tombstone) on an event topic")
    size = len(key or b"") + len(value)
    if size > MAX_MESSAGE_BYTES:
        return reject("too_large", f"key and value are {size} bytes; the limit is {MAX_MESSAGE_BYTES}")
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        return reject("invalid_json", f"not UTF-8: {exc}")
    try:
        raw: Any = json.loads(text, object_pairs_hook=_object, parse_constant=_no_constant)
    except RecursionError:
        return reject("invalid_json", f"JSON nested more than {MAX_DEPTH} deep")
    except ValueError as exc:  # JSONDecodeError, a duplicate name, NaN, an integer of over 4300 digits
        return reject("invalid_json", f"not JSON: {exc}")
    if _too_deep(raw):
        return reject("invalid_json", f"JSON nested more than {MAX_DEPTH} deep")
    if not isinstance(raw, dict):
        return reject("not_an_object", f"expected a JSON object, got {type(raw).__name__}")
    event_type = raw.get("type")
    if not isinstance(event_type, str) or event_type not in known_types:
        known = ", ".join(sorted(known_types))
        shown = event_type[:200] if isinstance(event_type, str) else event_type
        return reject("unknown_type", f"type {shown!r:.300} is not one of: {known}")
    try:
        # Strict: JSON types as the JSON Schemas say them, never coerced (see the module docstring).
        event = adapter.validate_json(text, strict=True)
    except ValidationError as exc:
        # pydantic's own parser refuses what json.loads let through (a lone surrogate escape).
        unparsable = any(error["type"] == "json_invalid" for error in exc.errors())
        return reject("invalid_json" if unparsable else "invalid_event", f"{event_type}: {_describe(exc)}")
    unstorable = _first_unstorable(adapter.dump_python(event))
    if unstorable is not None:
        where, problem = unstorable
        return reject("invalid_event", f"{event_type}: {where[:200]}: {problem}")
    return event
