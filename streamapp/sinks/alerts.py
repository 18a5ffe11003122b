"""The alert sink: one dashboard alert per alert action."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import ClassVar

from schemas.actions import Action, AlertEffect
from streamapp.sinks.base import BatchSink, Outcome, effect_of, outcomes_of

logger = logging.getLogger(__name__)

_INSERT = """
INSERT INTO alerts (action_id, shop_id, customer_id, rule_id, text, occurred_at)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[])
ON CONFLICT (action_id) DO NOTHING
RETURNING action_id
"""


class AlertSink(BatchSink):
    """Shows alerts on the shop's dashboard: inserts one per action unless one exists for its action_id.

    Never returns ``"failed"``; a database error propagates.
    """

    channel: ClassVar[str] = "alert"

    async def deliver_many(self, actions: Sequence[Action]) -> list[Outcome]:
        effects = [effect_of(action, AlertEffect) for action in actions]
        rows = await self.pool.fetch(
            _INSERT,
            [action.action_id for action in actions],
            [action.shop_id for action in actions],
            [action.customer_id for action in actions],
            [action.rule_id for action in actions],
            [effect.text for effect in effects],
            [action.occurred_at for action in actions],
        )
        outcomes = outcomes_of(actions, {row["action_id"] for row in rows})
        logger.info("showed %d of %d alerts (the others were already shown)", len(rows), len(actions))
        return outcomes
