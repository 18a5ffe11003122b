"""Dead letters: input that could not be processed, the values of the ``dead-letters`` topic.

Message key: the original message's key, unchanged.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, Field

from schemas.common import Outgoing

#: ``effect_failed``: a valid action whose provider refused it for good (a Stripe payment link);
#: the reason is also in the action's ``deliveries`` row.
Reason = Literal["invalid_json", "invalid_event", "unknown_type", "not_an_object", "too_large", "effect_failed"]


class DeadLetter(Outgoing):
    """One rejected message: why, where it was, and its exact bytes (base64)."""

    reason: Reason
    detail: str = Field(max_length=4000, description="Human-readable explanation, e.g. the failing field.")
    topic: str
    partition: int = Field(ge=0)
    offset: int = Field(ge=0)
    key_b64: str | None = Field(description="The original key, base64 (its first MiB); null if the message had none.")
    value_b64: str | None = Field(
        description="The original value, base64; null for a tombstone. A too_large message keeps its "
        "first MiB (key first); the detail gives the sizes and the value's SHA-256."
    )
    rejected_at: AwareDatetime
