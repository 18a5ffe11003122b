"""Channels are data: the catalog's parts and effects come from the Effect union, previews from the sinks."""

from __future__ import annotations

import inspect
from datetime import UTC, datetime
from typing import get_args

import pytest

from schemas.actions import RENDERED, Addressing, Effect, EmailEffect, SmsEffect
from streamapp.rules.catalog import PARTS, RULES
from streamapp.sinks.base import Sink
from streamapp.sinks.registry import SINKS, sink_class

NOBODY = Addressing(name="Ann Lee", email=None, phone=None, admin_ids=(), expires_at=datetime(2026, 1, 1, tzinfo=UTC))


def test_the_template_parts_of_each_channel_are_its_effects() -> None:
    assert PARTS == {
        "email": ("subject", "body.html", "body.txt"),
        "sms": ("text",),
        "notification": ("title", "text"),
        "toast": ("title", "text"),
    }
    assert list(PARTS) == list(RENDERED)


def test_every_channel_of_the_effect_union_has_exactly_one_sink() -> None:
    members, _discriminator = get_args(Effect)
    channels = [kind.model_fields["channel"].default for kind in get_args(members)]
    assert sorted(kind.channel for kind in SINKS) == sorted(channels)


@pytest.mark.parametrize("channel", sorted({rule.channel for rule in RULES} | {"payment_link"}))
def test_every_catalog_channel_has_a_preview(channel: str) -> None:
    kind = sink_class(channel)
    assert kind is not None
    assert inspect.getattr_static(kind, "preview") is not inspect.getattr_static(Sink, "preview")


def test_an_effect_without_its_address_is_refused_with_the_rule_key() -> None:
    with pytest.raises(ValueError, match=r"^r1: the event has no email address to send to$"):
        EmailEffect.from_parts("r1", {"subject": "s", "body.html": "h", "body.txt": "t"}, NOBODY)
    with pytest.raises(ValueError, match=r"^r1: the event has no phone number to text$"):
        SmsEffect.from_parts("r1", {"text": "t"}, NOBODY)
