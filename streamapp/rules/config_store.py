"""The configuration of every shop as the decisions read it, built from ``shop-config`` records.

Pure: the Kafka follower that feeds it lives in :mod:`streamapp.shop_config`.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from pydantic import TypeAdapter, ValidationError

from schemas.config import (
    CatalogTemplate,
    CatalogToggle,
    ConfigRecord,
    EmailTemplate,
    OrderCountRule,
    Record,
    ShopAdmin,
    ShopProfile,
    SmsConnection,
    StripeConnection,
    config_key,
)
from streamapp.rules.order_count import ShopView

logger = logging.getLogger(__name__)

_RECORD = TypeAdapter[Record](ConfigRecord)


class ConfigStore:
    """The current configuration of every shop, built by applying log records in order."""

    def __init__(self) -> None:
        self._by_shop: dict[str, dict[str, Record]] = defaultdict(dict)
        #: Grows with every record applied: what was derived from an older version may be stale.
        self.version = 0

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """Apply one record of the log (a null value deletes its key). Bad records are skipped, logged."""
        self.version += 1
        if key is None:
            logger.error("shop-config record without a key skipped")
            return
        text = key.decode("utf-8", errors="replace")
        parts = text.split(":")
        if len(parts) != 3:
            logger.error("shop-config key %r is not <kind>:<shop>:<id>; skipped", text)
            return
        shop = parts[1]
        if value is None:
            self._by_shop[shop].pop(text, None)
            return
        try:
            record = _RECORD.validate_json(value)
        except ValidationError as exc:
            logger.error("shop-config record %s is invalid, skipped: %s", text, exc.errors()[0]["msg"])
            return
        self._by_shop[record.shop_id][config_key(record)] = record

    def rules(self, shop_id: str) -> list[OrderCountRule]:
        return sorted(
            (r for r in self._by_shop.get(shop_id, {}).values() if isinstance(r, OrderCountRule)),
            key=lambda rule: (rule.orders, rule.name, rule.rule_id),
        )

    def rule(self, shop_id: str, rule_id: str) -> OrderCountRule | None:
        record = self._by_shop.get(shop_id, {}).get(f"order_count_rule:{shop_id}:{rule_id}")
        return record if isinstance(record, OrderCountRule) else None

    def templates(self, shop_id: str) -> dict[str, EmailTemplate]:
        return {r.key: r for r in self._by_shop.get(shop_id, {}).values() if isinstance(r, EmailTemplate)}

    def shop_name(self, shop_id: str) -> str:
        profile = self._by_shop.get(shop_id, {}).get(f"shop:{shop_id}:{shop_id}")
        return profile.name if isinstance(profile, ShopProfile) else shop_id

    def profile(self, shop_id: str) -> ShopProfile | None:
        profile = self._by_shop.get(shop_id, {}).get(f"shop:{shop_id}:{shop_id}")
        return profile if isinstance(profile, ShopProfile) else None

    def catalog_toggles(self, shop_id: str) -> dict[str, CatalogToggle]:
        """The shop's catalog on/off states, by rule key."""
        return {r.rule: r for r in self._by_shop.get(shop_id, {}).values() if isinstance(r, CatalogToggle)}

    def catalog_templates(self, shop_id: str) -> dict[str, CatalogTemplate]:
        """The shop's wording overrides, by rule key."""
        return {r.rule: r for r in self._by_shop.get(shop_id, {}).values() if isinstance(r, CatalogTemplate)}

    def admins(self, shop_id: str) -> list[ShopAdmin]:
        """The shop's admins, by id."""
        found = (r for r in self._by_shop.get(shop_id, {}).values() if isinstance(r, ShopAdmin))
        return sorted(found, key=lambda admin: admin.admin_id)

    def sms_connection(self, shop_id: str) -> SmsConnection | None:
        record = self._by_shop.get(shop_id, {}).get(f"sms_connection:{shop_id}:{shop_id}")
        return record if isinstance(record, SmsConnection) else None

    def stripe_connection(self, shop_id: str) -> StripeConnection | None:
        record = self._by_shop.get(shop_id, {}).get(f"stripe_connection:{shop_id}:{shop_id}")
        return record if isinstance(record, StripeConnection) else None

    def view(self, shop_id: str) -> ShopView:
        """What the order-count decision needs of ``shop_id``."""
        return ShopView(shop_name=self.shop_name(shop_id), rules=self.rules(shop_id), templates=self.templates(shop_id))

    def catalog_view(self, shop_id: str) -> CatalogShop:
        """``shop_id``'s catalog configuration as the store has it now."""
        profile = self.profile(shop_id)
        return CatalogShop(
            shop_id=shop_id,
            shop_name=profile.name if profile else shop_id,
            time_zone=ZoneInfo(profile.time_zone if profile else "UTC"),
            toggles=self.catalog_toggles(shop_id),
            templates=self.catalog_templates(shop_id),
            admin_ids=tuple(admin.admin_id for admin in self.admins(shop_id)),
            sms_connected=self.sms_connection(shop_id) is not None,
            stripe_connected=self.stripe_connection(shop_id) is not None,
        )


@dataclass(frozen=True)
class CatalogShop:
    """What the catalog needs of one shop's configuration."""

    shop_id: str
    shop_name: str
    time_zone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    toggles: Mapping[str, CatalogToggle] = field(default_factory=dict)
    templates: Mapping[str, CatalogTemplate] = field(default_factory=dict)
    admin_ids: tuple[str, ...] = ()
    sms_connected: bool = False
    stripe_connected: bool = False
