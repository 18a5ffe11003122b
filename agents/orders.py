"""Consumes ``orders``: the print-shop automation catalog (order received, reorder, new lead).

``concurrency=1`` (faust-streaming #606, see ``agents/actions.py``). Each event is judged where it
arrives (:func:`streamapp.agent_steps.judge_catalog_event`): the catalog keeps no table.
"""

from __future__ import annotations

from faust import StreamT
from pydantic import TypeAdapter

from schemas.events import CatalogEvent, OrdersEvent
from streamapp.agent_steps import judge_each
from streamapp.app import app, runtime

_orders = TypeAdapter[CatalogEvent](OrdersEvent)
ORDER_TYPES = frozenset({"order.submitted", "reorder.requested", "lead.created"})


@app.agent(runtime.topics.orders, concurrency=1)
async def react_to_orders(stream: StreamT[bytes]) -> None:
    await judge_each(stream, _orders, ORDER_TYPES)
