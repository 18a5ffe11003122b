"""Poison input drawn from the contract: Hypothesis strategies of valid events and of every kind
of bad message (each with the reason it must be dead-lettered with), and the checks of a dead letter.

The contract is the committed JSON Schemas in ``schemas/json/`` and the examples in
``schemas/examples/``. Shared by ``tests/unit/test_poison_decode.py`` (the decode path alone)
and ``tests/reliability/test_poison_input.py`` (the real pipeline).
"""

from __future__ import annotations

import base64
import copy
import json
import re
import string
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from functools import cache
from pathlib import Path
from typing import Any, get_args

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from schemas.deadletter import DeadLetter, Reason
from schemas.events import JobStatusEvent, OrdersEvent, PaymentsEvent
from streamapp.decode import (
    DEAD_LETTER_MAX_BYTES,
    MAX_DEPTH,
    MAX_MESSAGE_BYTES,
    dead_letter_key,
    decode,
)

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "schemas" / "examples"
REASONS = frozenset(get_args(Reason))
#: Hypothesis settings of these tests: no example database in the repository, no deadline
#: (a megabyte-sized example takes a while), and large generated data is the point.
POISON = settings(
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)


# -- the contract, from the committed schemas --------------------------------------------------
@dataclass(frozen=True, eq=False)
class Contract:
    """One input topic's contract: its JSON Schema, the model that decodes it, and examples."""

    topic: str
    adapter: TypeAdapter[Any]
    schema: dict[str, Any]

    @property
    def types(self) -> frozenset[str]:
        return frozenset(self.schema["discriminator"]["mapping"])

    def definition(self, event_type: str) -> dict[str, Any]:
        return self.resolve({"$ref": self.schema["discriminator"]["mapping"][event_type]})

    def resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            node = self.schema["$defs"][node["$ref"].rsplit("/", 1)[1]]
        return node

    @property
    def examples(self) -> list[dict[str, Any]]:
        return [_example(event_type) for event_type in sorted(self.types) if (EXAMPLES / f"{event_type}.json").exists()]


@cache
def _example(event_type: str) -> dict[str, Any]:
    example: dict[str, Any] = json.loads((EXAMPLES / f"{event_type}.json").read_text())
    return example


def _contract(topic: str, union: Any) -> Contract:
    schema = json.loads((REPO / "schemas" / "json" / f"{topic}.schema.json").read_text())
    return Contract(topic, TypeAdapter(union), schema)


CONTRACTS = {
    "orders": _contract("orders", OrdersEvent),
    "job-status": _contract("job-status", JobStatusEvent),
    "payments": _contract("payments", PaymentsEvent),
}
ALL_TYPES = frozenset().union(*(contract.types for contract in CONTRACTS.values()))


@dataclass(frozen=True)
class Poison:
    """A bad message and the reason it must be dead-lettered with."""

    kind: str
    key: bytes | None
    value: bytes | None
    reason: Reason


def decode_as(contract: Contract, key: bytes | None, value: bytes | None) -> Any:
    return decode(
        contract.adapter, contract.types, key=key, value=value, topic=f"t.{contract.topic}", partition=3, offset=42
    )


# -- strategies: pieces --------------------------------------------------------------------------
IDENT = r"[A-Za-z0-9_.@+\-]{1,64}"
identifiers = st.from_regex(IDENT, fullmatch=True)
#: Unicode without lone surrogates (JSON text cannot carry them) and without NUL (refused).
_UNICODE = st.characters(exclude_categories=("Cs",), exclude_characters="\x00")
#: Characters that end a line somewhere: an email header refuses them in a display name.
_LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"  # what str.splitlines() splits at


@cache
def names(*, mail_safe: bool = False) -> st.SearchStrategy[str]:
    """Valid ``Name`` values, odd ones included: RTL marks, zero-width joiners, emoji, 200 characters."""
    alphabet = st.characters(
        exclude_categories=("Cs",), exclude_characters="\x00" + (_LINE_BREAKS if mail_safe else "")
    )
    odd = st.sampled_from(
        ["\u202eevil\u202c", "a\u200db", "Zoë 😀", "\u0301\u0301", "x" * 200, "\ufeffBOM", "<b>&amp;"]
    )
    return st.one_of(odd, st.text(alphabet, min_size=1, max_size=200)).filter(lambda s: bool(s.strip()))


@cache
def keys() -> st.SearchStrategy[bytes | None]:
    """Message keys, right and wrong: the contract says a wrong key costs at most a hop."""
    return st.one_of(
        st.none(),
        st.just(b""),
        st.builds(lambda shop, who: f"{shop}:{who}".encode(), identifiers, identifiers),
        st.text(max_size=40).map(lambda text: text.encode("utf-8", "surrogatepass")),
        st.binary(max_size=40),
    )


_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(_UNICODE | st.just("\x00"), max_size=20),
)
#: JSON values a valid event may carry in fields nobody reads (NUL included: ignored fields are ignored).
json_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(_UNICODE, max_size=8), inner, max_size=3),
    max_leaves=8,
)


def _offsets() -> st.SearchStrategy[timezone]:
    return st.integers(-14 * 60, 14 * 60).map(lambda minutes: timezone(timedelta(minutes=minutes)))


def _in_utc(moment: datetime) -> bool:
    try:
        moment.astimezone(UTC)
    except OverflowError:
        return False
    return True


def _aware() -> st.SearchStrategy[datetime]:
    ends = st.one_of(st.datetimes(min_value=datetime(9999, 12, 30)), st.datetimes(max_value=datetime(1, 1, 2)))
    return st.builds(lambda moment, zone: moment.replace(tzinfo=zone), st.one_of(st.datetimes(), ends), _offsets())


@cache
def moments() -> st.SearchStrategy[str]:
    """RFC 3339 timestamps with an offset, from year 1 to 9999 in UTC, the ends of the calendar included."""
    return _aware().filter(_in_utc).map(datetime.isoformat)


def dumps(value: Any, *, ascii_only: bool) -> bytes:
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


# -- strategies: valid events ----------------------------------------------------------------------
@cache
def valid_events(
    contract: Contract, *, types: tuple[str, ...] = (), mail_safe: bool = False
) -> st.SearchStrategy[dict[str, Any]]:
    """Valid events of ``contract`` (of one of ``types``, if given): examples with other ids, odd
    names, any amount, unknown fields. ``mail_safe``: no line break in a name (an email header refuses it)."""
    return _valid_events(contract, types, mail_safe)


@st.composite
def _valid_events(draw: st.DrawFn, contract: Contract, types: tuple[str, ...], mail_safe: bool) -> dict[str, Any]:
    examples = [example for example in contract.examples if not types or example["type"] in types]
    event = copy.deepcopy(draw(st.sampled_from(examples)))
    event["event_id"] = draw(identifiers)
    event["occurred_at"] = draw(moments())
    for holder, definition in (("customer", "Customer"), ("lead", "Lead")):
        if holder in event:
            event[holder]["name"] = draw(names(mail_safe=mail_safe))
            event[holder].update(draw(_extras(contract, definition)))
    for cents in ("amount_cents", "total_cents", "amount_paid_cents"):
        if cents in event:
            event[cents] = draw(st.integers(0, 10**40))  # no maximum in the contract: past int64 too
    if "invoice" in event and "total_due_cents" in event["invoice"]:
        event["invoice"]["total_due_cents"] = draw(st.integers(0, 10**40))
    event.update(draw(_extras(contract, event["type"])))
    return event


@cache
def _extras(contract: Contract, definition: str) -> st.SearchStrategy[dict[str, Any]]:
    node = contract.definition(definition) if definition in contract.types else contract.schema["$defs"][definition]
    known = set(node["properties"])
    return st.dictionaries(
        st.text(_UNICODE, max_size=10).filter(lambda name: name not in known), json_values, max_size=3
    )


# -- strategies: poison, one per way a message can be bad -------------------------------------------
@cache
def _bad_utf8(contract: Contract) -> st.SearchStrategy[bytes]:
    text_of = valid_events(contract).map(lambda event: json.dumps(event, ensure_ascii=False))
    # Never valid UTF-8, whatever stands around them: 0xFF, an overlong form, an encoded
    # surrogate, a code point past U+10FFFF.
    junk = st.sampled_from([b"\xff", b"\xfe", b"\xc0\xaf", b"\xc1\xbf", b"\xed\xa0\x80", b"\xf5\x80\x80\x80"])
    return st.one_of(
        st.builds(lambda text, encoding: text.encode(encoding), text_of, st.sampled_from(["utf-16", "utf-32"])),
        st.builds(
            lambda data, at, bad: data[:at] + bad + data[at:],
            st.one_of(st.binary(max_size=300), text_of.map(str.encode)),
            st.integers(0, 300),
            junk,
        ),
    )


@cache
def _not_json(contract: Contract) -> st.SearchStrategy[bytes]:
    data = valid_events(contract).map(lambda event: json.dumps(event).encode())
    return st.one_of(
        st.just(b""),
        st.sampled_from([b" ", b"{", b"nul", b"{'type': 'x'}", b'{"type": "x",}', b"\xef\xbb\xbf{}"]),
        st.text(_UNICODE, min_size=1, max_size=100).filter(_unparsable).map(str.encode),
        data.flatmap(lambda d: st.integers(1, len(d) - 1).map(lambda cut: d[:cut])),  # truncated
        data.map(lambda d: d + b" x"),  # trailing garbage
        data.map(lambda d: b"\xef\xbb\xbf" + d),  # a UTF-8 byte-order mark
        st.builds(  # a raw control character inside a string (JSON wants it escaped)
            lambda d, char: d.replace(b'"event_id": "', b'"event_id": "' + char, 1),
            data,
            st.sampled_from([b"\x00", b"\n", b"\t", b"\x1f"]),
        ),
    )


def _unparsable(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return True
    return False


def _with_text(contract: Contract, fragment: Callable[[str], str]) -> st.SearchStrategy[bytes]:
    """A valid event of ``contract`` with one more member whose JSON text is ``fragment``'s."""
    return st.builds(
        lambda event, name, value: (json.dumps(event)[:-1] + f", {json.dumps(name)}: {fragment(value)}}}").encode(),
        valid_events(contract),
        st.sampled_from(["extra", "amount_cents", "notes"]),
        st.text(max_size=5),
    )


@cache
def _constants(contract: Contract) -> st.SearchStrategy[bytes]:
    return st.sampled_from(["NaN", "Infinity", "-Infinity", "[1, NaN]", '{"x": Infinity}']).flatmap(
        lambda literal: _with_text(contract, lambda _: literal)
    )


@cache
def _duplicates(contract: Contract) -> st.SearchStrategy[bytes]:
    def twice(event: dict[str, Any], which: int, nested: bool) -> bytes:
        holder = event.get("customer") or event.get("lead") if nested else event
        name = sorted(holder)[which % len(holder)]
        holder_text = json.dumps(holder)[:-1] + f", {json.dumps(name)}: {json.dumps(holder[name])}}}"
        if holder is event:
            return holder_text.encode()
        key = "customer" if "customer" in event else "lead"
        rest = {k: v for k, v in event.items() if k != key}
        return (json.dumps(rest)[:-1] + f", {json.dumps(key)}: {holder_text}}}").encode()

    return st.builds(twice, valid_events(contract), st.integers(0, 30), st.booleans())


@cache
def _deep(contract: Contract) -> st.SearchStrategy[bytes]:
    def nest(depth: int, brackets: str) -> str:
        return brackets[0] * depth + brackets[1] * depth

    depth = st.one_of(st.integers(MAX_DEPTH + 1, 2_000), st.just(100_000))
    pair = st.sampled_from(["[]", "{}"])
    arrays = st.builds(lambda d: nest(d, "[]").encode(), depth)
    objects = st.builds(lambda d: ('{"a":' * d + "1" + "}" * d).encode(), depth)
    inside = st.tuples(depth, pair).flatmap(
        lambda dp: _with_text(
            contract,
            lambda _: nest(dp[0] - 1, "[]") if dp[1] == "[]" else '{"a":' * (dp[0] - 1) + "1" + "}" * (dp[0] - 1),
        )
    )
    return st.one_of(arrays, objects, inside)


@cache
def _huge_ints(contract: Contract) -> st.SearchStrategy[bytes]:
    return st.integers(4_301, 20_000).flatmap(lambda digits: _with_text(contract, lambda _: "9" * digits))


@cache
def _not_objects(contract: Contract) -> st.SearchStrategy[bytes]:
    top = json_values.filter(lambda value: not isinstance(value, dict))
    return st.builds(dumps, top, ascii_only=st.booleans())


@cache
def _unknown_types(contract: Contract) -> st.SearchStrategy[bytes]:
    others = sorted(ALL_TYPES - contract.types)
    wrong = st.one_of(
        st.sampled_from(others),
        st.sampled_from(sorted(contract.types)).map(str.upper),
        st.sampled_from(sorted(contract.types)).map(lambda t: f" {t}"),
        st.text(_UNICODE, max_size=30).filter(lambda t: t not in contract.types),
        json_values.filter(lambda value: not isinstance(value, str)),
    )

    def retype(event: dict[str, Any], new_type: Any, drop: bool) -> bytes:
        changed = {k: v for k, v in event.items() if k != "type"}
        if not drop:
            changed["type"] = new_type
        return json.dumps(changed).encode()

    return st.builds(retype, valid_events(contract), wrong, st.booleans())


def _json_types(contract: Contract, node: dict[str, Any]) -> set[str]:
    node = contract.resolve(node)
    if "anyOf" in node:
        return set().union(*(_json_types(contract, option) for option in node["anyOf"]))
    kind = node.get("type", "object")
    return {"integer", "number"} if kind == "number" else {kind}


_OF_TYPE: dict[str, st.SearchStrategy[Any]] = {
    "string": st.text(string.ascii_letters, max_size=10),
    "integer": st.integers(),
    "number": st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: not x.is_integer()),
    "boolean": st.booleans(),
    "null": st.none(),
    "array": st.lists(st.integers(), max_size=3),
    "object": st.dictionaries(st.text(string.ascii_letters, max_size=5), st.integers(), max_size=3),
}
#: Pattern violations are drawn from printable ASCII without line breaks, where Python's and
#: pydantic's regular expressions agree (``\s``, ``$``), and never padded with spaces (a Name
#: or Email is stripped before it is checked).
_PRINTABLE = string.ascii_letters + string.digits + string.punctuation + " "


def fields_of(
    contract: Contract, node: dict[str, Any], value: dict[str, Any], path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], dict[str, Any], bool]]:
    """(path, property schema, required) of every property of ``value`` and of the objects in it."""
    node = contract.resolve(node)
    for name, prop in node.get("properties", {}).items():
        if name == "type":
            continue
        yield (*path, name), prop, name in node.get("required", [])
        inner = value.get(name)
        if isinstance(inner, dict):
            target = next((o for o in contract.resolve(prop).get("anyOf", []) if "$ref" in o), prop)
            yield from fields_of(contract, target, inner, (*path, name))


def _violations(contract: Contract, prop: dict[str, Any], required: bool) -> st.SearchStrategy[Any]:
    """Values (or deletion) that the JSON Schema refuses for ``prop``."""
    node = contract.resolve(prop)
    options = [node] if "anyOf" not in node else [contract.resolve(o) for o in node["anyOf"]]
    allowed = _json_types(contract, prop)
    found: list[st.SearchStrategy[Any]] = [
        st.sampled_from([k for k in _OF_TYPE if k not in allowed]).flatmap(_OF_TYPE.__getitem__)
    ]
    if required:
        found.append(st.just(_DELETE))
    for option in options:
        if "minimum" in option:
            found.append(st.integers(max_value=option["minimum"] - 1))
        if "maxLength" in option:
            found.append(
                st.text(string.ascii_letters, min_size=option["maxLength"] + 1, max_size=option["maxLength"] + 20)
            )
        if option.get("minLength", 0) >= 1:
            found.append(st.just(""))
        if "pattern" in option:
            pattern = option["pattern"]
            found.append(
                st.text(_PRINTABLE, max_size=30).filter(lambda s, p=pattern: s == s.strip() and re.search(p, s) is None)
            )
        if "enum" in option:
            found.append(st.text(string.ascii_letters, max_size=10).filter(lambda s, e=option["enum"]: s not in e))
        if option.get("format") == "date-time":
            found.append(st.datetimes().map(datetime.isoformat))  # no offset
        if option.get("format") == "date":
            found.append(st.sampled_from(["2026-02-30", "2026-13-01", "2026-12-1", "December 1, 2026"]))
    return st.one_of(found)


_DELETE = object()


def mutate(event: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(event)
    holder = changed
    for name in path[:-1]:
        holder = holder[name]
    if value is _DELETE:
        holder.pop(path[-1], None)
    else:
        holder[path[-1]] = value
    return changed


def _strings_of(contract: Contract, event: dict[str, Any]) -> list[tuple[str, ...]]:
    found = []
    for path, _prop, _required in fields_of(contract, contract.definition(event["type"]), event):
        holder: Any = event
        for name in path:
            holder = holder.get(name) if isinstance(holder, dict) else None
        if isinstance(holder, str):
            found.append(path)
    return found


@st.composite
def _schema_violations(draw: st.DrawFn, contract: Contract) -> bytes:
    event = draw(valid_events(contract))
    fields = list(fields_of(contract, contract.definition(event["type"]), event))
    path, prop, required = draw(st.sampled_from(fields))
    return dumps(mutate(event, path, draw(_violations(contract, prop, required))), ascii_only=draw(st.booleans()))


@cache
def _outside_utc(contract: Contract) -> st.SearchStrategy[bytes]:
    """``occurred_at`` valid as RFC 3339 but in year 0 or 10000 in UTC."""
    first = st.builds(
        lambda minutes, offset: (
            datetime(1, 1, 1, tzinfo=timezone(timedelta(minutes=offset))) + timedelta(minutes=minutes)
        ),
        st.integers(0, 14 * 60 - 1),
        st.integers(1, 14 * 60),
    ).filter(lambda moment: not _in_utc(moment))
    last = st.builds(
        lambda minutes, offset: (
            datetime(9999, 12, 31, 23, 59, tzinfo=timezone(-timedelta(minutes=offset))) - timedelta(minutes=minutes)
        ),
        st.integers(0, 14 * 60 - 1),
        st.integers(1, 14 * 60),
    ).filter(lambda moment: not _in_utc(moment))
    return st.builds(
        lambda event, moment: json.dumps(event | {"occurred_at": moment.isoformat()}).encode(),
        valid_events(contract),
        st.one_of(first, last),
    )


@st.composite
def _nul_in_text(draw: st.DrawFn, contract: Contract) -> bytes:
    event = draw(valid_events(contract))
    path = draw(st.sampled_from(_strings_of(contract, event)))
    holder: Any = event
    for name in path:
        holder = holder[name]
    at = draw(st.integers(0, len(holder)))
    return dumps(mutate(event, path, holder[:at] + "\x00" + holder[at:]), ascii_only=draw(st.booleans()))


@st.composite
def _lone_surrogates(draw: st.DrawFn, contract: Contract) -> bytes:
    event = draw(valid_events(contract))
    path = draw(st.sampled_from(_strings_of(contract, event)))
    lone = draw(st.characters(categories=("Cs",)))
    return dumps(mutate(event, path, f"a{lone}b"), ascii_only=True)


@cache
def _near_limit(contract: Contract) -> st.SearchStrategy[bytes]:
    """Almost 1 MiB: a valid event without its ``customer``/``lead``, padded with an unknown field."""

    def padded(event: dict[str, Any], size: int) -> bytes:
        event = {k: v for k, v in event.items() if k not in ("customer", "lead")}
        head = json.dumps(event)[:-1] + ', "pad": "'
        return (head + "p" * (size - len(head) - 2) + '"}').encode()

    size = st.integers(MAX_MESSAGE_BYTES - 64 * 1024, MAX_MESSAGE_BYTES - 64)
    return st.builds(padded, valid_events(contract), size)


@st.composite
def _oversized(draw: st.DrawFn, contract: Contract) -> tuple[bytes | None, bytes]:
    """Over the limit by a byte or by megabytes, in the value or in the key; even a valid event."""
    total = draw(st.one_of(st.just(MAX_MESSAGE_BYTES + 1), st.integers(MAX_MESSAGE_BYTES + 2, 3 * MAX_MESSAGE_BYTES)))
    key_size = draw(st.one_of(st.just(0), st.integers(1, 100), st.integers(0, total)))
    event = json.dumps(draw(valid_events(contract)))
    body = event[:-1] + ', "pad": "'
    value_size = max(total - key_size, len(body) + 2)
    value = (body + "p" * (value_size - len(body) - 2) + '"}').encode()
    key = b"k" * (total - len(value)) if total > len(value) else draw(st.one_of(st.none(), st.just(b"")))
    return key, value


@cache
def poison(contract: Contract, *, large: bool = True) -> st.SearchStrategy[Poison]:
    """Every kind of bad message for ``contract``'s topic, each with its reason."""
    return st.one_of(*poison_kinds(contract, large=large).values())


@cache
def poison_kinds(contract: Contract, *, large: bool = True) -> dict[str, st.SearchStrategy[Poison]]:
    """Kind -> bad messages of that kind for ``contract``'s topic, with any key; ``large``: with
    the megabyte-sized kinds too."""
    values: dict[str, tuple[st.SearchStrategy[bytes | None], Reason]] = {
        "not_utf8": (_bad_utf8(contract), "invalid_json"),
        "not_json": (_not_json(contract), "invalid_json"),
        "tombstone": (st.none(), "invalid_json"),
        "nan_infinity": (_constants(contract), "invalid_json"),
        "duplicate_names": (_duplicates(contract), "invalid_json"),
        "deep": (_deep(contract), "invalid_json"),
        "huge_int": (_huge_ints(contract), "invalid_json"),
        "lone_surrogate": (_lone_surrogates(contract), "invalid_json"),
        "not_an_object": (_not_objects(contract), "not_an_object"),
        "unknown_type": (_unknown_types(contract), "unknown_type"),
        "schema_violation": (_schema_violations(contract), "invalid_event"),
        "nul_in_text": (_nul_in_text(contract), "invalid_event"),
        "outside_utc": (_outside_utc(contract), "invalid_event"),
    }
    if large:
        values["near_limit"] = (_near_limit(contract), "invalid_event")
    kinds = {
        name: st.builds(Poison, st.just(name), keys(), bad, st.just(reason)) for name, (bad, reason) in values.items()
    }
    if large:
        kinds["too_large"] = _oversized(contract).map(lambda kv: Poison("too_large", kv[0], kv[1], "too_large"))
    return kinds


# -- checks shared with the pipeline test ----------------------------------------------------------
def kept(key: bytes | None, value: bytes | None) -> tuple[bytes | None, bytes | None]:
    """The bytes a dead letter of (``key``, ``value``) must carry: all of them, or the first
    MAX_MESSAGE_BYTES of an oversized message, key first."""
    if len(key or b"") + len(value or b"") <= MAX_MESSAGE_BYTES:
        return key, value
    cut_key = None if key is None else key[:MAX_MESSAGE_BYTES]
    room = MAX_MESSAGE_BYTES - len(cut_key or b"")
    return cut_key, None if value is None else value[:room]


def unbase64(data: str | None) -> bytes | None:
    return None if data is None else base64.b64decode(data, validate=True)


def record_size(letter: DeadLetter, key: bytes | None) -> int:
    """Bytes of the dead letter's record as the producer counts them (key, value, overhead)."""
    return len(dead_letter_key(key) or b"") + len(letter.model_dump_json().encode()) + 128


def assert_answers(
    letter: DeadLetter, key: bytes | None, value: bytes | None, topic: str, partition: int, offset: int
) -> None:
    assert letter.reason in REASONS
    assert (letter.topic, letter.partition, letter.offset) == (topic, partition, offset)
    assert (unbase64(letter.key_b64), unbase64(letter.value_b64)) == kept(key, value)
    assert 0 < len(letter.detail) <= 4000
    assert record_size(letter, key) <= DEAD_LETTER_MAX_BYTES
