"""The committed JSON Schemas match the models, and the models accept and refuse what they should."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from pydantic import TypeAdapter, ValidationError

from schemas.config import OrderCountRule
from schemas.events import PaymentsEvent, PaymentSucceeded
from schemas.export import generated

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def test_committed_json_schemas_match_the_models() -> None:
    for path, text in generated().items():
        assert path.exists(), f"{path.name} missing: run python -m schemas.export"
        assert path.read_text() == text, f"{path.name} is stale: run python -m schemas.export"


def payment(**overrides: object) -> dict[str, object]:
    value: dict[str, object] = {
        "type": "payment.succeeded",
        "event_id": "e1",
        "shop_id": "shop-1",
        "occurred_at": "2026-11-23T10:00:00Z",
        "customer": {"customer_id": "c1", "name": "Ann Lee", "email": "ann@example.com"},
        "order_id": "o1",
        "payment_id": "p1",
        "amount_cents": 1250,
    }
    value.update(overrides)
    return value


def test_payment_event_parses_with_unknown_fields_ignored() -> None:
    event = TypeAdapter(PaymentsEvent).validate_json(json.dumps(payment(extra_field=1)))
    assert isinstance(event, PaymentSucceeded)
    assert event.customer.email == "ann@example.com"
    assert event.currency == "USD"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"occurred_at": "2026-11-23T10:00:00"}, "occurred_at"),  # no offset: ambiguous
        ({"shop_id": "a:b"}, "shop_id"),  # ':' is the key separator
        ({"amount_cents": -1}, "amount_cents"),
        ({"customer": {"customer_id": "c1", "name": "", "email": "ann@example.com"}}, "name"),
    ],
)
def test_invalid_payments_name_the_field(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        TypeAdapter(PaymentsEvent).validate_json(json.dumps(payment(**overrides)))
    assert field in str(info.value)


def test_unknown_event_type_is_refused_by_the_discriminator() -> None:
    with pytest.raises(ValidationError, match="union_tag_invalid"):
        TypeAdapter(PaymentsEvent).validate_json(json.dumps(payment(type="payment.refunded")))


def rule(**overrides: object) -> OrderCountRule:
    values: dict[str, object] = {
        "shop_id": "s",
        "rule_id": "r1",
        "name": "Email after 5",
        "orders": 5,
        "action": "email",
        "template_key": "thanks",
        "effective_at": NOW,
        "updated_at": NOW,
    }
    values.update(overrides)
    return OrderCountRule.model_validate(values)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"template_key": None}, "an email rule needs template_key"),
        ({"action": "credit", "template_key": None}, "a credit rule needs amount_cents"),
        ({"action": "alert"}, "template_key is only for email rules, not alert"),
        ({"action": "alert", "template_key": None, "amount_cents": 100}, "amount_cents is only for credit rules"),
        ({"orders": 0}, "greater than or equal to 1"),
    ],
)
def test_order_count_rule_needs_the_fields_of_its_action(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        rule(**overrides)
