"""A shop's provider credentials at rest: sealed for that shop, stored one row per shop.

Twilio's and Stripe's credentials are kept the same way: the fields are sealed together
with the shop's id and a layout version (:mod:`streamapp.connections.crypto`), so a value copied onto
another shop's row, or written by a version with another layout, is refused instead of
used; the sealed bytes live in a table ``(shop_id primary key, sealed, updated_at)``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Literal

from streamapp.connections.crypto import seal, unseal
from streamapp.errors import ConfigurationError
from streamapp.queries import Queryable
from streamapp.settings import Settings

#: Version of the sealed payload's layout.
PAYLOAD_VERSION = 1

#: The tables that hold sealed credentials (names are never taken from input).
Table = Literal["sms_credentials", "stripe_credentials"]


def seal_for_shop(settings: Settings, shop_id: str, fields: Mapping[str, str]) -> bytes:
    """``fields`` sealed with STREAMAPP_SECRET_KEY, bound to ``shop_id``."""
    payload = {"v": PAYLOAD_VERSION, "shop_id": shop_id, **fields}
    return seal(settings, json.dumps(payload, separators=(",", ":")).encode())


def unseal_for_shop(
    settings: Settings, shop_id: str, sealed: bytes, names: Sequence[str], *, what: str, plural: bool
) -> dict[str, str]:
    """The fields ``names`` that :func:`seal_for_shop` sealed for ``shop_id``.

    ConfigurationError naming ``what`` (e.g. "Twilio credentials") if the key does not open
    them, or if they were sealed for another shop or in a layout this version does not know.
    """
    unreadable = ConfigurationError(
        f"the sealed {what} of shop {shop_id} {'are' if plural else 'is'} not readable by this version"
    )
    try:
        payload = json.loads(unseal(settings, sealed))
    except ValueError:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise unreadable from None
    if not isinstance(payload, dict) or payload.get("v") != PAYLOAD_VERSION:
        raise unreadable
    if payload.get("shop_id") != shop_id:
        belongs = "belong" if plural else "belongs"
        raise ConfigurationError(f"the sealed {what} stored for shop {shop_id} {belongs} to another shop")
    fields = {name: payload.get(name) for name in names}
    if not all(isinstance(value, str) for value in fields.values()):
        raise unreadable
    return {name: str(value) for name, value in fields.items()}


async def store(conn: Queryable, table: Table, shop_id: str, sealed: bytes) -> None:
    """Store ``sealed`` as ``shop_id``'s row of ``table``, replacing any earlier one."""
    await conn.fetchval(
        f"INSERT INTO {table} (shop_id, sealed) VALUES ($1, $2) "  # noqa: S608 - table is a Literal
        "ON CONFLICT (shop_id) DO UPDATE SET sealed = EXCLUDED.sealed, updated_at = now() RETURNING shop_id",
        shop_id,
        sealed,
    )


async def fetch(conn: Queryable, table: Table, shop_id: str) -> bytes | None:
    """``shop_id``'s sealed bytes in ``table``; None if it has none."""
    sealed = await conn.fetchval(f"SELECT sealed FROM {table} WHERE shop_id = $1", shop_id)  # noqa: S608
    return None if sealed is None else bytes(sealed)


async def delete(conn: Queryable, table: Table, shop_id: str) -> bool:
    """Delete ``shop_id``'s row of ``table``; whether there was one."""
    deleted = await conn.fetchval(f"DELETE FROM {table} WHERE shop_id = $1 RETURNING shop_id", shop_id)  # noqa: S608
    return deleted is not None
