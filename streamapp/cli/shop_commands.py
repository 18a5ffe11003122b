"""Shop administration commands: order-count rules, email templates, shop profiles, ledger, alerts.

Configuration commands write records to the compacted ``shop-config`` topic (running
workers pick them up without a restart); ``ledger`` and ``alerts`` read PostgreSQL.
Bad input raises ConfigurationError (one line, exit 2); an unreachable service raises
RetryableError (one line, exit 1). Results go to stdout, errors to stderr.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import click

from schemas.config import ORDER_COUNT_ACTIONS, EmailTemplate, OrderCountRule, ShopProfile
from streamapp import queries, shop_config
from streamapp.cli import common
from streamapp.errors import ConfigurationError
from streamapp.rules.money import format_money
from streamapp.rules.order_count import SAMPLE_VARIABLES
from streamapp.templating import TemplateError, render_email


# -- rules -------------------------------------------------------------------------------------
@click.group()
def rules() -> None:
    """Order Count Events: when a customer reaches N paid orders, email, credit or alert."""
    common.quiet_libraries()


def _check_action_options(action: str, template: str | None, amount: str | None) -> None:
    """Refuse option combinations the action does not take, naming the option."""
    if action == "email" and template is None:
        raise ConfigurationError("an email rule needs --template KEY")
    if action == "credit" and amount is None:
        raise ConfigurationError("a credit rule needs --amount DOLLARS")
    if action != "email" and template is not None:
        raise ConfigurationError(f"--template is only for email rules, not {action}")
    if action != "credit" and amount is not None:
        raise ConfigurationError(f"--amount is only for credit rules, not {action}")


@rules.command("add-order-count")
@common.shop_option
@click.option("--name", required=True, help="Name shown to admins (and to templates as rule_name).")
@click.option("--orders", required=True, type=click.IntRange(1, 1_000_000), help="Paid orders that trigger it.")
@click.option("--action", required=True, type=click.Choice(ORDER_COUNT_ACTIONS), help="What happens.")
@click.option("--template", type=common.ID, default=None, metavar="KEY", help="Email template key (email rules only).")
@click.option("--amount", default=None, metavar="DOLLARS", help="Credit in dollars, e.g. 20.50 (credit rules only).")
@click.option("--disabled", is_flag=True, help="Create it switched off.")
def rules_add(
    *, shop: str, name: str, orders: int, action: str, template: str | None, amount: str | None, disabled: bool
) -> None:
    """Create a rule and print its id. It fires only for payments from now on, never retroactively."""
    _check_action_options(action, template, amount)
    moment = common.now()
    rule = common.build(
        OrderCountRule,
        shop_id=shop,
        rule_id=secrets.token_hex(6),
        name=name,
        orders=orders,
        action=action,
        template_key=template,
        amount_cents=None if amount is None else common.parse_amount(amount),
        enabled=not disabled,
        effective_at=moment,
        updated_at=moment,
    )
    settings = common.settings(kafka=True)
    if template is not None and template not in common.run(shop_config.load(settings)).templates(shop):
        raise ConfigurationError(f"shop {shop} has no email template {template} (add it with `templates add`)")
    common.run(shop_config.publish(settings, rule))
    click.echo(rule.rule_id)


def _detail(rule: OrderCountRule) -> str:
    if rule.action == "email":
        return rule.template_key or ""
    if rule.action == "credit":
        return format_money(rule.amount_cents or 0, rule.currency)
    return "-"


@rules.command("list")
@common.shop_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of the rule records.")
def rules_list(shop: str, as_json: bool) -> None:
    """The shop's rules, by order count."""
    found = common.run(shop_config.load(common.settings(kafka=True))).rules(shop)
    if as_json:
        click.echo(json.dumps([rule.model_dump(mode="json") for rule in found], indent=2))
        return
    if not found:
        click.echo(f"shop {shop} has no rules")
        return
    rows = [
        [
            r.rule_id,
            r.name,
            str(r.orders),
            r.action,
            _detail(r),
            "on" if r.enabled else "off",
            common.when(r.effective_at),
        ]
        for r in found
    ]
    common.table(["ID", "NAME", "ORDERS", "ACTION", "DETAIL", "STATE", "EFFECTIVE SINCE"], rows)


def _switch(shop: str, rule_id: str, enabled: bool) -> None:
    """Republish the rule with ``enabled`` set; switching on makes it effective from now (not retroactive)."""
    settings = common.settings(kafka=True)
    rule = common.run(shop_config.load(settings)).rule(shop, rule_id)
    state = "enabled" if enabled else "disabled"
    if rule is None:
        raise ConfigurationError(f"shop {shop} has no rule {rule_id}")
    if rule.enabled == enabled:
        click.echo(f"rule {rule_id} is already {state}; nothing changed")
        return
    moment = common.now()
    changes: dict[str, Any] = {"enabled": enabled, "updated_at": moment}
    if enabled:
        changes["effective_at"] = moment
    common.run(shop_config.publish(settings, rule.model_copy(update=changes)))
    since = f" (fires for payments from {common.when(moment)})" if enabled else ""
    click.echo(f"rule {rule_id} {state}{since}")


@rules.command("enable")
@common.shop_option
@click.argument("rule_id", type=common.ID)
def rules_enable(shop: str, rule_id: str) -> None:
    """Switch a rule on; it fires only for orders counted from now on."""
    _switch(shop, rule_id, enabled=True)


@rules.command("disable")
@common.shop_option
@click.argument("rule_id", type=common.ID)
def rules_disable(shop: str, rule_id: str) -> None:
    """Switch a rule off."""
    _switch(shop, rule_id, enabled=False)


# -- templates ---------------------------------------------------------------------------------
@click.group()
def templates() -> None:
    """Email templates (jinja2, rendered in a sandbox)."""
    common.quiet_libraries()


def _read_body(path: str) -> str:
    """The UTF-8 text of ``path``; ConfigurationError naming the file if it cannot be read."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigurationError(f"--body-file {path}: not UTF-8 text") from None
    except OSError as exc:
        raise ConfigurationError(f"--body-file {path}: {exc.strerror or exc}") from None


@templates.command("add")
@common.shop_option
@click.option("--key", type=common.ID, required=True, help="Template key, referenced by email rules.")
@click.option("--subject", required=True, help="Subject line (a template too).")
@click.option("--body-file", required=True, metavar="PATH", help="File with the HTML body template.")
def templates_add(shop: str, key: str, subject: str, body_file: str) -> None:
    """Add or replace a template, after rendering it with sample variables.

    Variables: shop_name, customer_name, customer_email, customer_id, order_count,
    order_id, rule_name, credit_amount, credit_amount_cents.
    """
    record = common.build(
        EmailTemplate, shop_id=shop, key=key, subject=subject, body=_read_body(body_file), updated_at=common.now()
    )
    try:
        render_email(record.subject, record.body, SAMPLE_VARIABLES)
    except TemplateError as exc:
        raise ConfigurationError(f"template refused: {exc}") from None
    common.run(shop_config.publish(common.settings(kafka=True), record))
    click.echo(f"template {key} saved for shop {shop}")


@templates.command("list")
@common.shop_option
def templates_list(shop: str) -> None:
    """The shop's templates: key and subject."""
    found = common.run(shop_config.load(common.settings(kafka=True))).templates(shop)
    if not found:
        click.echo(f"shop {shop} has no email templates")
        return
    common.table(["KEY", "SUBJECT"], [[key, found[key].subject] for key in sorted(found)])


@templates.command("show")
@common.shop_option
@click.option("--key", type=common.ID, required=True, help="Template key.")
def templates_show(shop: str, key: str) -> None:
    """Print a template's subject and body."""
    template = common.run(shop_config.load(common.settings(kafka=True))).templates(shop).get(key)
    if template is None:
        raise ConfigurationError(f"shop {shop} has no email template {key}")
    click.echo(f"Subject: {template.subject}\n")
    click.echo(template.body, nl=not template.body.endswith("\n"))


# -- shops -------------------------------------------------------------------------------------
@click.group()
def shops() -> None:
    """Shop profiles."""
    common.quiet_libraries()


@shops.command("set")
@common.shop_option
@click.option("--name", default=None, help="Display name, shown to customers as shop_name.")
@click.option("--time-zone", default=None, metavar="ZONE", help="IANA time zone of dates in messages (default UTC).")
@click.option(
    "--due-soon-days",
    type=click.IntRange(1, 60),
    default=None,
    help="Days before an invoice's due date of the due-soon reminder (default 3).",
)
def shops_set(shop: str, name: str | None, time_zone: str | None, due_soon_days: int | None) -> None:
    """Set the shop's display name, time zone and due-soon days (what is not given stays as it is)."""
    if name is None and time_zone is None and due_soon_days is None:
        raise ConfigurationError("give --name, --time-zone or --due-soon-days")
    settings = common.settings(kafka=True)
    current = common.run(shop_config.load(settings)).profile(shop)
    record = common.build(
        ShopProfile,
        shop_id=shop,
        name=name if name is not None else current.name if current else shop,
        time_zone=time_zone if time_zone is not None else current.time_zone if current else "UTC",
        due_soon_days=due_soon_days if due_soon_days is not None else current.due_soon_days if current else 3,
        updated_at=common.now(),
    )
    common.run(shop_config.publish(settings, record))
    click.echo(f"shop {shop} is named {record.name!r}, time zone {record.time_zone}")


@click.group()
def ledger() -> None:
    """Customer credit ledger."""
    common.quiet_libraries()


@ledger.command("balance")
@common.shop_option
@click.option("--customer", type=common.ID, required=True, help="Customer id.")
def ledger_balance(shop: str, customer: str) -> None:
    """Print the customer's credit balance, e.g. $20.00 (the shop's ledger is assumed to be in USD)."""
    settings = common.settings(database=True)
    cents = common.run(common.query(settings, lambda conn: queries.ledger_balance(conn, shop, customer)))
    click.echo(format_money(cents, "USD"))


@click.group()
def alerts() -> None:
    """Alerts on the shop's dashboard."""
    common.quiet_libraries()


@alerts.command("list")
@common.shop_option
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True, help="Newest N alerts.")
def alerts_list(shop: str, limit: int) -> None:
    """The shop's latest alerts, newest first: time raised, customer, text."""
    settings = common.settings(database=True)
    found = common.run(common.query(settings, lambda conn: queries.list_alerts(conn, shop, limit)))
    if not found:
        click.echo(f"shop {shop} has no alerts")
        return
    common.table(
        ["TIME", "CUSTOMER", "TEXT"], [[common.when(a.created_at), a.customer_id or "-", a.text] for a in found]
    )


def register(cli: click.Group) -> None:
    """Add the administration groups to the main ``streamapp`` group."""
    for group in (rules, templates, shops, ledger, alerts):
        cli.add_command(group)
