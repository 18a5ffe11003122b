"""The credit sink: one append-only ledger entry per credit action."""

from __future__ import annotations

import logging
from typing import ClassVar

from schemas.actions import Action, CreditEffect
from streamapp.sinks.base import Outcome, Sink, effect_of

logger = logging.getLogger(__name__)

_INSERT = """
INSERT INTO ledger_entries (action_id, shop_id, customer_id, amount_cents, currency, reason)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (action_id) DO NOTHING
RETURNING entry_id
"""


class LedgerSink(Sink):
    """Credits a customer: inserts a ledger entry unless one exists for the action_id.

    The unique ``action_id`` makes a redelivery (even a concurrent one) a no-op, so
    this sink never returns ``"failed"``; a database error propagates (a bug or an
    outage for the caller to handle).
    """

    channel: ClassVar[str] = "credit"

    async def deliver(self, action: Action) -> Outcome:
        effect = effect_of(action, CreditEffect)
        entry_id = await self.pool.fetchval(
            _INSERT,
            action.action_id,
            action.shop_id,
            action.customer_id,
            effect.amount_cents,
            effect.currency,
            effect.reason,
        )
        if entry_id is None:
            logger.info("credit %s already in the ledger", action.action_id)
            return "duplicate"
        logger.info("credited %s: shop %s customer %s", action.action_id, action.shop_id, action.customer_id)
        return "applied"
