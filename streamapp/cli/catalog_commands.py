"""Shop admin commands of the automation catalog: rules on/off, wording, preview, admins.

``catalog list|enable|disable|show|set-template|reset-template|variables``,
``preview`` and ``admins add|list|remove``. Changes are records on the compacted
``shop-config`` topic, so running workers pick them up without a restart. Errors
follow :mod:`streamapp.cli.shop_commands`: bad input is one line and exit 2, an unreachable
service one line and exit 1.
"""

from __future__ import annotations

import difflib
import json
from datetime import UTC, datetime
from pathlib import Path

import click
from pydantic import TypeAdapter, ValidationError

from schemas.actions import Action, Lineage
from schemas.config import CatalogTemplate, CatalogToggle, ShopAdmin
from schemas.events import AnyCatalogEvent, CatalogEvent
from streamapp import shop_config
from streamapp.cli import common
from streamapp.errors import ConfigurationError
from streamapp.rules import automation, variables_doc, wording
from streamapp.rules.catalog import BY_KEY, PARTS, CatalogRule, sample_variables
from streamapp.rules.config_store import CatalogShop, ConfigStore
from streamapp.sinks import registry
from streamapp.sinks.base import PreviewContext
from streamapp.templating import TemplateError

_ANY_EVENT = TypeAdapter[CatalogEvent](AnyCatalogEvent)


def catalog_rule(key: str) -> CatalogRule:
    """The rule with ``key``; ConfigurationError naming the closest keys otherwise."""
    rule = BY_KEY.get(key)
    if rule is None:
        close = difflib.get_close_matches(key, BY_KEY, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else "; `streamapp catalog list` shows them all"
        raise ConfigurationError(f"no catalog rule {key!r}{hint}")
    return rule


def trigger_label(rule: CatalogRule) -> str:
    trigger = rule.trigger
    label = f"{trigger.key} -> {trigger.to_status}" if trigger.to_status else trigger.key
    return f"{label} (scheduled)" if trigger.scheduled else label


def state_label(rule: CatalogRule, state: automation.RuleState, shop: CatalogShop) -> str:
    if not state.enabled:
        return "off"
    if rule.trigger.needs == "stripe" and not shop.stripe_connected:
        return "on (Stripe not connected)"
    if rule.channel == "sms" and not shop.sms_connected:
        return "on (Twilio not connected)"
    return "on"


rule_argument = click.argument("rule_key", metavar="RULE")


@click.group("catalog")
def catalog() -> None:
    """The print-shop automation catalog: 24 rules, per-shop state and wording."""
    common.quiet_libraries()


@catalog.command("list")
@common.shop_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
def catalog_list(shop: str, as_json: bool) -> None:
    """Every rule with its trigger, channel, state for the shop, and whether its wording is customised."""
    view = ConfigStore.catalog_view(common.run(shop_config.load(common.settings(kafka=True))), shop)
    rows = []
    for rule, state in automation.rules_by_state(view):
        rows.append(
            {
                "rule": rule.key,
                "trigger": trigger_label(rule),
                "channel": rule.channel,
                "state": state_label(rule, state, view),
                "default": "on" if rule.on_by_default else "off",
                "wording": "customised" if state.customised else "default",
            }
        )
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    common.table(["RULE", "TRIGGER", "CHANNEL", "STATE", "DEFAULT", "WORDING"], [list(row.values()) for row in rows])


def _toggle(shop: str, rule_key: str, enabled: bool) -> None:
    rule = catalog_rule(rule_key)
    settings = common.settings(kafka=True)
    view = ConfigStore.catalog_view(common.run(shop_config.load(settings)), shop)
    if enabled and rule.channel == "sms" and not view.sms_connected:
        raise ConfigurationError(
            f"{rule.key} sends SMS, and shop {shop} has not connected Twilio: "
            f"run `streamapp twilio connect --shop {shop} ...` first"
        )
    if enabled and rule.trigger.needs == "stripe" and not view.stripe_connected:
        raise ConfigurationError(
            f"{rule.key} sends Stripe payment links, and shop {shop} has not connected Stripe: "
            f"run `streamapp stripe connect --shop {shop}` first"
        )
    state = "on" if enabled else "off"
    if automation.rule_state(rule, view).enabled == enabled:
        click.echo(f"{rule.key} is already {state} for shop {shop}; nothing changed")
        return
    moment = common.now()
    common.run(
        shop_config.publish(settings, CatalogToggle(shop_id=shop, rule=rule.key, enabled=enabled, updated_at=moment))
    )
    since = f" (fires for events from {common.when(moment)})" if enabled else ""
    click.echo(f"{rule.key} is {state} for shop {shop}{since}")


@catalog.command("enable")
@common.shop_option
@rule_argument
def catalog_enable(shop: str, rule_key: str) -> None:
    """Switch a rule on for the shop; it fires for events from now on, never retroactively."""
    _toggle(shop, rule_key, enabled=True)


@catalog.command("disable")
@common.shop_option
@rule_argument
def catalog_disable(shop: str, rule_key: str) -> None:
    """Switch a rule off for the shop."""
    _toggle(shop, rule_key, enabled=False)


@catalog.command("show")
@common.shop_option
@rule_argument
def catalog_show(shop: str, rule_key: str) -> None:
    """Print the rule's templates as the shop has them (its own wording, else the default)."""
    rule = catalog_rule(rule_key)
    override = common.run(shop_config.load(common.settings(kafka=True))).catalog_templates(shop).get(rule.key)
    for part, source in wording.sources(rule, override).items():
        origin = "customised" if override is not None and part in override.parts else "default"
        click.echo(f"----- {part} ({origin}) -----")
        click.echo(source, nl=not source.endswith("\n"))


def _split(option: str, value: str) -> tuple[str, str]:
    part, sep, rest = value.partition("=")
    if not sep or not part:
        raise ConfigurationError(f"{option} {value!r}: expected PART=VALUE, e.g. {option} subject=...")
    return part.strip(), rest


def _read(option: str, part: str, path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigurationError(f"{option} {part}={path}: not UTF-8 text") from None
    except OSError as exc:
        raise ConfigurationError(f"{option} {part}={path}: {exc.strerror or exc}") from None


@catalog.command("set-template")
@common.shop_option
@click.option("--rule", "rule_key", required=True, metavar="RULE", help="Catalog rule key.")
@click.option("--part", "inline", multiple=True, metavar="PART=TEXT", help="A part's template, inline.")
@click.option("--part-file", "files", multiple=True, metavar="PART=PATH", help="A part's template, from a file.")
def catalog_set_template(shop: str, rule_key: str, inline: tuple[str, ...], files: tuple[str, ...]) -> None:
    """Customise the wording of a rule: one or more parts (email: subject, body.html, body.txt;
    SMS: text; notification and toast: title, text). Parts not given keep their current wording.

    The wording is rendered in the sandbox with the rule's variables before it is saved;
    an unknown variable, a syntax error, a sandbox violation or an over-size template is
    refused with the part and the line. `streamapp catalog variables --rule RULE` lists them.
    """
    rule = catalog_rule(rule_key)
    given = dict(_split("--part", value) for value in inline)
    for value in files:
        part, path = _split("--part-file", value)
        given[part] = _read("--part-file", part, path)
    if not given:
        raise ConfigurationError(f"give at least one --part or --part-file (parts of {rule.key}: {_parts(rule)})")
    settings = common.settings(kafka=True)
    current = common.run(shop_config.load(settings)).catalog_templates(shop).get(rule.key)
    parts: dict[str, str] = {str(part): text for part, text in current.parts.items()} if current else {}
    parts |= given
    try:
        wording.validate_override(rule, parts)
    except TemplateError as exc:
        raise ConfigurationError(f"wording refused: {exc}") from None
    record = common.build(CatalogTemplate, shop_id=shop, rule=rule.key, parts=parts, updated_at=common.now())
    common.run(shop_config.publish(settings, record))
    click.echo(f"{rule.key}: wording of {', '.join(sorted(given))} saved for shop {shop}")


def _parts(rule: CatalogRule) -> str:
    return ", ".join(PARTS[rule.channel])


@catalog.command("reset-template")
@common.shop_option
@click.option("--rule", "rule_key", required=True, metavar="RULE", help="Catalog rule key.")
def catalog_reset_template(shop: str, rule_key: str) -> None:
    """Go back to the default wording of a rule."""
    rule = catalog_rule(rule_key)
    settings = common.settings(kafka=True)
    current = common.run(shop_config.load(settings)).catalog_templates(shop).get(rule.key)
    if current is None:
        click.echo(f"{rule.key} already has the default wording for shop {shop}; nothing changed")
        return
    common.run(shop_config.delete(settings, f"catalog_template:{shop}:{rule.key}"))
    click.echo(f"{rule.key}: wording reset to the default for shop {shop}")


@catalog.command("variables")
@click.option("--rule", "rule_key", default=None, metavar="RULE", help="Only this rule's trigger and variables.")
def catalog_variables(rule_key: str | None) -> None:
    """Every trigger and the variables its templates may use, with a description and an example."""
    click.echo(variables_doc.variables_text(rule_key), nl=False)


# -- preview -----------------------------------------------------------------------------------
def _load_event(path: str) -> CatalogEvent:
    try:
        raw = json.loads(Path(path).read_bytes())
    except OSError as exc:
        raise ConfigurationError(f"--event {path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigurationError(f"--event {path}: not JSON: {exc}") from None
    try:
        return _ANY_EVENT.validate_python(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"][1:]) or "event"
        raise ConfigurationError(f"--event {path}: {where}: {error['msg']}") from None


def preview_action(
    store: ConfigStore, shop: str, rule: CatalogRule, event: CatalogEvent | None, *, toast_ttl: int
) -> tuple[Action, str | None]:
    """The action the pipeline would publish for ``rule`` at ``shop`` (same code path), and,
    for a given event, why it would not fire now (None: it would)."""
    view = store.catalog_view(shop)
    if event is None:
        variables = sample_variables(rule)
        recipient = automation.sample_recipient(rule)
        lineage = Lineage(event_id="preview", topic="preview", partition=0, offset=0)
        origin = automation.Origin("preview", datetime.now(UTC), lineage)
        return automation.build_action(rule, view, variables, recipient, origin, toast_ttl=toast_ttl), None
    if event.shop_id != shop:
        raise ConfigurationError(f"the event is for shop {event.shop_id}, not {shop}")
    if rule not in automation.matching_rules(event):
        fired = ", ".join(r.key for r in automation.matching_rules(event)) or "no rule"
        raise ConfigurationError(f"a {event.type} event does not trigger {rule.key}; it triggers {fired}")
    recipient = automation.recipient_of(event)
    if rule.channel == "sms" and recipient.phone is None:
        raise ConfigurationError(f"{rule.key} texts the customer, and the event's customer has no phone")
    payment = automation.payment_of(event) if rule.trigger.needs == "stripe" else None
    available = wording.event_variables(event, view)
    if payment is not None:
        available["payment_link"] = wording.LINK_PLACEHOLDER
    variables = wording.rule_variables(rule, available)
    lineage = Lineage(event_id=event.event_id, topic="preview", partition=0, offset=0)
    origin = automation.Origin(event.event_id, event.occurred_at, lineage)
    action = automation.build_action(rule, view, variables, recipient, origin, toast_ttl=toast_ttl, payment=payment)
    return action, automation.skip_reason(rule, view, event)


def describe(action: Action, *, sender: str, sms_sender: str | None) -> str:
    """What the sink would send for ``action``, as text for a person (the sink of its channel says)."""
    kind = registry.sink_class(action.effect.channel)
    text = kind.preview(action, PreviewContext(email_sender=sender, sms_sender=sms_sender)) if kind else None
    if text is None:
        raise AssertionError(f"catalog actions have no {action.effect.channel} effect")
    return text


_WHY = {
    "off": "the rule is off for this shop",
    "not_yet_on": "the event occurred before the rule was switched on",
    "twilio_not_connected": "the shop has not connected Twilio",
    "no_phone": "the customer has no phone number",
    "stripe_not_connected": "the shop has not connected Stripe",
    "nothing_due": "the invoice has nothing due",
}


@click.command("preview")
@common.shop_option
@click.option("--rule", "rule_key", required=True, metavar="RULE", help="Catalog rule key.")
@click.option("--event", "event_file", default=None, metavar="FILE", help="A JSON event to render (default: samples).")
@click.option("--json", "as_json", is_flag=True, help="Print the action as the actions topic would carry it.")
def preview(shop: str, rule_key: str, event_file: str | None, as_json: bool) -> None:
    """Render a rule's message exactly as the sink would send it, from sample data or an event."""
    common.quiet_libraries()
    rule = catalog_rule(rule_key)
    event = _load_event(event_file) if event_file else None
    settings = common.settings(kafka=True)
    store = common.run(shop_config.load(settings))
    try:
        action, skip = preview_action(store, shop, rule, event, toast_ttl=settings.toast_ttl_seconds)
    except TemplateError as exc:
        raise ConfigurationError(f"the shop's wording does not render: {exc}") from None
    if as_json:
        click.echo(action.model_dump_json(indent=2))
        return
    connection = store.sms_connection(shop)
    click.echo(describe(action, sender=settings.smtp_from, sms_sender=connection.sender_hint if connection else None))
    if skip is not None:
        click.echo(f"Note: not sent for this event: {_WHY[skip]}.")


# -- admins ------------------------------------------------------------------------------------
@click.group("admins")
def admins() -> None:
    """The shop's admins: "notify all admins" notifies each of them."""
    common.quiet_libraries()


@admins.command("add")
@common.shop_option
@click.option("--admin", "admin_id", type=common.ID, required=True, help="Admin id.")
@click.option("--name", required=True, help="The admin's name.")
@click.option("--email", required=True, help="The admin's email address.")
def admins_add(shop: str, admin_id: str, name: str, email: str) -> None:
    """Add an admin to the shop (or update one)."""
    record = common.build(ShopAdmin, shop_id=shop, admin_id=admin_id, name=name, email=email, updated_at=common.now())
    common.run(shop_config.publish(common.settings(kafka=True), record))
    click.echo(f"admin {admin_id} of shop {shop} saved")


@admins.command("list")
@common.shop_option
def admins_list(shop: str) -> None:
    """The shop's admins."""
    found = common.run(shop_config.load(common.settings(kafka=True))).admins(shop)
    if not found:
        click.echo(f"shop {shop} has no admins")
        return
    common.table(["ADMIN", "NAME", "EMAIL"], [[a.admin_id, a.name, a.email] for a in found])


@admins.command("remove")
@common.shop_option
@click.option("--admin", "admin_id", type=common.ID, required=True, help="Admin id.")
def admins_remove(shop: str, admin_id: str) -> None:
    """Remove an admin: later notifications are not addressed to them."""
    settings = common.settings(kafka=True)
    if admin_id not in {a.admin_id for a in common.run(shop_config.load(settings)).admins(shop)}:
        raise ConfigurationError(f"shop {shop} has no admin {admin_id}")
    common.run(shop_config.delete(settings, f"admin:{shop}:{admin_id}"))
    click.echo(f"admin {admin_id} removed from shop {shop}")


def register(cli: click.Group) -> None:
    """Add the catalog commands to the main ``streamapp`` group."""
    for command in (catalog, preview, admins):
        cli.add_command(command)
