"""The alert sink: one dashboard alert per alert action."""

from __future__ import annotations

import logging
from typing import ClassVar

from schemas.actions import Action, AlertEffect
from streamapp.sinks.base import Outcome, Sink, effect_of

logger = logging.getLogger(__name__)

_INSERT = """
INSERT INTO alerts (action_id, shop_id, customer_id, rule_id, text, occurred_at)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (action_id) DO NOTHING
RETURNING alert_id
"""


class AlertSink(Sink):
    """Shows an alert on the shop's dashboard: inserts it unless one exists for the action_id.

    Never returns ``"failed"``; a database error propagates.
    """

    channel: ClassVar[str] = "alert"

    async def deliver(self, action: Action) -> Outcome:
        effect = effect_of(action, AlertEffect)
        alert_id = await self.pool.fetchval(
            _INSERT,
            action.action_id,
            action.shop_id,
            action.customer_id,
            action.rule_id,
            effect.text,
            action.occurred_at,
        )
        if alert_id is None:
            logger.info("alert %s already shown", action.action_id)
            return "duplicate"
        logger.info("alert %s shown to shop %s", action.action_id, action.shop_id)
        return "applied"
