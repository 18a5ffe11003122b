"""Poison input, property-based, without Kafka: whatever arrives, the decode path answers.

:func:`streamapp.decode.decode` never raises: every message becomes either a valid event or a
dead letter with its reason and the exact original bytes, small enough for the dead-letter
topic. The bad messages are drawn from the contract itself (the committed JSON Schemas in
``schemas/json/`` and the examples in ``schemas/examples/``), so each carries the reason it
must be refused with; valid events with odd text, unknown fields, wrong keys and huge
amounts must be accepted, and what the worker then decides from them must not raise either.

The strategies live in ``tests/harness/poison.py``, shared with
``tests/reliability/test_poison_input.py``, which sends what they draw through the real pipeline.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.actions import Action, Lineage
from schemas.config import CatalogToggle
from schemas.deadletter import DeadLetter
from schemas.events import CatalogEvent, InvoiceEvent
from streamapp.decode import (
    DEAD_LETTER_MAX_BYTES,
    MAX_MESSAGE_BYTES,
    dead_letter,
)
from streamapp.rules import automation, invoice_schedule
from streamapp.rules.catalog import RULES
from streamapp.rules.config_store import CatalogShop
from streamapp.rules.money import format_money
from tests.harness.poison import (
    CONTRACTS,
    POISON,
    Contract,
    assert_answers,
    decode_as,
    dumps,
    fields_of,
    json_values,
    kept,
    keys,
    mutate,
    poison,
    poison_kinds,
    record_size,
    unbase64,
    valid_events,
)


# -- the properties ----------------------------------------------------------------------------------
def test_the_contracts_are_the_ones_the_worker_decodes_with() -> None:
    from agents.job_status import JOB_STATUS_TYPES  # noqa: PLC0415 - builds the worker's app
    from agents.orders import ORDER_TYPES  # noqa: PLC0415
    from agents.payments import PAYMENT_TYPES  # noqa: PLC0415

    assert CONTRACTS["orders"].types == ORDER_TYPES
    assert CONTRACTS["job-status"].types == JOB_STATUS_TYPES
    assert CONTRACTS["payments"].types == PAYMENT_TYPES
    for contract in CONTRACTS.values():
        for example in contract.examples:
            assert not isinstance(decode_as(contract, None, json.dumps(example).encode()), DeadLetter), example["type"]


@settings(POISON, max_examples=600)
@given(st.sampled_from(sorted(CONTRACTS)), st.data())
def test_every_kind_of_poison_is_dead_lettered_with_its_reason_and_its_bytes(topic: str, data: st.DataObject) -> None:
    contract = CONTRACTS[topic]
    bad = data.draw(poison(contract, large=False), label="poison")  # the megabytes: see below
    outcome = decode_as(contract, bad.key, bad.value)
    assert isinstance(outcome, DeadLetter), f"{bad.kind} was accepted: {outcome!r}"
    assert (outcome.reason, bad.kind) == (bad.reason, bad.kind), outcome.detail
    assert_answers(outcome, bad.key, bad.value, f"t.{topic}", 3, 42)


@settings(POISON, max_examples=800)
@given(
    st.sampled_from(sorted(CONTRACTS)),
    keys(),
    st.one_of(st.none(), st.binary(max_size=3000), json_values.map(lambda v: json.dumps(v).encode())),
)
def test_any_bytes_at_all_are_answered_never_raised(topic: str, key: bytes | None, value: bytes | None) -> None:
    contract = CONTRACTS[topic]
    outcome = decode_as(contract, key, value)
    if isinstance(outcome, DeadLetter):
        assert_answers(outcome, key, value, f"t.{topic}", 3, 42)
    else:
        assert outcome.type in contract.types


@settings(POISON, max_examples=250)
@given(st.sampled_from(sorted(CONTRACTS)), st.data(), keys(), st.booleans())
def test_valid_events_are_accepted_whatever_their_key_text_amounts_and_unknown_fields(
    topic: str, data: st.DataObject, key: bytes | None, ascii_only: bool
) -> None:
    contract = CONTRACTS[topic]
    event = data.draw(valid_events(contract), label="event")
    outcome = decode_as(contract, key, dumps(event, ascii_only=ascii_only))
    assert not isinstance(outcome, DeadLetter), outcome.detail
    assert (outcome.type, outcome.event_id) == (event["type"], event["event_id"])
    # Unknown fields are ignored: without them, the same event.
    node = contract.definition(event["type"])
    known = {name: value for name, value in event.items() if name in node["properties"]}
    for holder in ("customer", "lead"):
        if holder in known:
            fields = contract.schema["$defs"]["Customer" if holder == "customer" else "Lead"]["properties"]
            known[holder] = {name: value for name, value in known[holder].items() if name in fields}
    assert decode_as(contract, None, json.dumps(known).encode()) == outcome
    # And what the worker passes on (re-keyed, routed) decodes to the same event again.
    assert decode_as(contract, None, contract.adapter.dump_json(outcome)) == outcome


@settings(POISON, max_examples=25)
@given(st.sampled_from(sorted(CONTRACTS)), st.data())
def test_dead_letters_at_the_size_limits_fit_the_dead_letter_topic(topic: str, data: st.DataObject) -> None:
    contract = CONTRACTS[topic]
    kind = data.draw(st.sampled_from(["near_limit", "too_large"]))
    bad = data.draw(poison_kinds(contract)[kind])
    outcome = decode_as(contract, bad.key, bad.value)
    assert isinstance(outcome, DeadLetter) and outcome.reason == bad.reason
    assert_answers(outcome, bad.key, bad.value, f"t.{topic}", 3, 42)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (b"k" * MAX_MESSAGE_BYTES, b""),  # all key
        (None, b"\x01" * MAX_MESSAGE_BYTES),  # all value
        (b"k" * (MAX_MESSAGE_BYTES // 2), b"v" * (MAX_MESSAGE_BYTES // 2)),
        (b"k" * (5 * MAX_MESSAGE_BYTES), b"v" * (5 * MAX_MESSAGE_BYTES)),  # too large, both
    ],
    ids=["key", "value", "half-half", "oversized"],
)
def test_the_largest_dead_letters_with_the_longest_detail_still_fit(key: bytes | None, value: bytes) -> None:
    detail = "\x01" * 10_000  # escaped as \u0001: six bytes each in the JSON
    letter = dead_letter("invalid_event", detail, key=key, value=value, topic="t" * 249, partition=0, offset=2**63 - 1)
    assert record_size(letter, key) <= DEAD_LETTER_MAX_BYTES
    assert (unbase64(letter.key_b64), unbase64(letter.value_b64)) == kept(key, value)


# -- what follows a valid event must not raise either ----------------------------------------------
LINEAGE = Lineage(event_id="e", topic="t", partition=0, offset=0)


def _everything_on(shop_id: str, zone: str) -> CatalogShop:
    on = {
        rule.key: CatalogToggle(shop_id=shop_id, rule=rule.key, enabled=True, updated_at=datetime(1, 1, 1, tzinfo=UTC))
        for rule in RULES
    }
    return CatalogShop(
        shop_id=shop_id,
        shop_name="Acme Print Co.",
        time_zone=ZoneInfo(zone),
        toggles=on,
        admin_ids=("maria", "sam"),
        sms_connected=True,
        stripe_connected=True,
    )


@st.composite
def _long_events(draw: st.DrawFn, contract: Contract) -> dict[str, Any]:
    """Valid events with every text at its longest and a megabyte of tracking numbers."""
    event = draw(valid_events(contract))
    longest = {"Name": 200, "Text": 4000}
    for path, prop, _required in fields_of(contract, contract.definition(event["type"]), event):
        node = contract.resolve(prop)
        limit = node.get("maxLength") or next(
            (o.get("maxLength") for o in node.get("anyOf", []) if "maxLength" in o), None
        )
        if limit in longest.values() and draw(st.booleans()):
            event = mutate(event, path, draw(st.sampled_from(["W", "<", "&", "\u202e", "😀"])) * limit)
    if event["type"] == "job.tracking_added" and draw(st.booleans()):
        event["tracking_numbers"] = [f"1Z{n:062d}" for n in range(draw(st.integers(1, 16_000)))]
        while len(json.dumps(event).encode()) > MAX_MESSAGE_BYTES:  # over it, an event is too_large, not valid
            del event["tracking_numbers"][-100:]
    if event["type"] == "job.status_changed" and draw(st.booleans()):
        event["to_status"] = draw(st.sampled_from(["Art Approval Sent", "Completed Order", "In Production"]))
        event["review_url"] = "https://acme.example/art/" + "r" * 1900
        event["invoice"] = {"invoice_number": "N" * 200, "invoice_url": "https://acme.example/i/" + "i" * 1900}
    return event


@settings(POISON, max_examples=150)
@given(st.sampled_from(sorted(CONTRACTS)), st.data())
def test_the_catalog_and_the_invoice_schedule_take_any_valid_event_without_raising(
    topic: str, data: st.DataObject
) -> None:
    contract = CONTRACTS[topic]
    outcome = decode_as(contract, None, json.dumps(data.draw(_long_events(contract), label="event")).encode())
    assert not isinstance(outcome, DeadLetter), outcome.detail
    zone = data.draw(st.sampled_from(["Pacific/Kiritimati", "Etc/GMT+12", "UTC"]), label="zone")
    if isinstance(outcome, CatalogEvent):
        shop = _everything_on(outcome.shop_id, zone)
        ttl = data.draw(st.sampled_from([1, 600, 86400]), label="toast_ttl")
        for action in automation.decide(outcome, shop, LINEAGE, toast_ttl=ttl).actions:
            assert Action.model_validate_json(action.model_dump_json()) == action
    if isinstance(outcome, InvoiceEvent):
        state = invoice_schedule.apply_event(None, outcome, partition=0, zone=ZoneInfo(zone))
        if state is not None:
            on = {rule: None for rule in (*invoice_schedule.CUSTOMER_STEPS, invoice_schedule.ADMIN_STEP)}
            for now in (datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC)):
                invoice_schedule.due_steps(state, now, ZoneInfo(zone), enabled_since=on)


@settings(POISON, max_examples=300)
@given(
    st.one_of(st.dates(), st.dates(min_value=date(9999, 9, 1)), st.dates(max_value=date(1, 3, 1))), st.integers(0, 60)
)
def test_an_invoice_schedule_exists_for_any_due_date(due: date, due_soon_days: int) -> None:
    steps = invoice_schedule.schedule(due, ZoneInfo("Pacific/Kiritimati"), due_soon_days)
    assert [step.at for step in steps] == sorted(step.at for step in steps)
    assert {step.rule for step in steps} <= {*invoice_schedule.CUSTOMER_STEPS, invoice_schedule.ADMIN_STEP}


@settings(POISON, max_examples=300)
@given(st.integers(-(10**400), 10**400), st.sampled_from(["USD", "EUR"]))
def test_any_amount_is_formatted_exactly(cents: int, currency: str) -> None:
    text = format_money(cents, currency)
    sign = "-" if cents < 0 else ""
    assert text.startswith(f"${sign}" if currency == "USD" else sign)
    assert int(re.sub(r"[^0-9]", "", text)) == abs(cents)
    assert text.endswith(f".{abs(cents) % 100:02d}" + ("" if currency == "USD" else f" {currency}"))
