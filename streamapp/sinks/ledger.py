"""The credit sink: one append-only ledger entry per credit action."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import ClassVar

from schemas.actions import Action, CreditEffect
from streamapp.sinks.base import BatchSink, Outcome, effect_of, outcomes_of

logger = logging.getLogger(__name__)

_INSERT = """
INSERT INTO ledger_entries (action_id, shop_id, customer_id, amount_cents, currency, reason)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[])
ON CONFLICT (action_id) DO NOTHING
RETURNING action_id
"""


class LedgerSink(BatchSink):
    """Credits customers: inserts a ledger entry per action unless one exists for its action_id.

    The unique ``action_id`` makes a redelivery (even a concurrent one) a no-op, so
    this sink never returns ``"failed"``; a database error propagates (a bug or an
    outage for the caller to handle).
    """

    channel: ClassVar[str] = "credit"

    async def deliver_many(self, actions: Sequence[Action]) -> list[Outcome]:
        effects = [effect_of(action, CreditEffect) for action in actions]
        rows = await self.pool.fetch(
            _INSERT,
            [action.action_id for action in actions],
            [action.shop_id for action in actions],
            [action.customer_id for action in actions],
            [effect.amount_cents for effect in effects],
            [effect.currency for effect in effects],
            [effect.reason for effect in effects],
        )
        outcomes = outcomes_of(actions, {row["action_id"] for row in rows})
        logger.info("credited %d of %d actions (the others were already in the ledger)", len(rows), len(actions))
        return outcomes
