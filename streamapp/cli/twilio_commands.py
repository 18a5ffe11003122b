"""Connecting a shop's Twilio account: ``streamapp twilio connect|disconnect|status`` and ``secret-key``.

The credentials go to PostgreSQL, sealed with ``STREAMAPP_SECRET_KEY``
(:mod:`streamapp.connections.twilio_account`); only the fact that the shop is connected, with a masked
sender, goes to the ``shop-config`` topic, which is what lets SMS rules be switched on.
The auth token is read from ``TWILIO_AUTH_TOKEN`` or a hidden prompt, so it never
shows in the process list or the shell history, and it is never printed.
"""

from __future__ import annotations

import click

from schemas.config import SmsConnection
from streamapp import shop_config
from streamapp.cli import common
from streamapp.connections import crypto, twilio_account
from streamapp.errors import ConfigurationError


def mask(sender: str) -> str:
    """A sender for display: ``+15551234567`` -> ``+1555•••4567``; a messaging service -> ``MG•••abcd``."""
    if sender.startswith("MG"):
        return f"MG•••{sender[-4:]}"
    return f"{sender[:5]}•••{sender[-4:]}"


@click.group("twilio")
def twilio() -> None:
    """The shop's Twilio connection, which its SMS rules send through."""
    common.quiet_libraries()


@twilio.command("connect")
@common.shop_option
@click.option("--account-sid", required=True, metavar="AC…", help="The Twilio account SID.")
@click.option(
    "--auth-token",
    envvar="TWILIO_AUTH_TOKEN",
    prompt="Twilio auth token",
    hide_input=True,
    show_envvar=True,
    help="The auth token; prefer the environment variable or the prompt (not shown, not in shell history).",
)
@click.option("--from", "from_number", default=None, metavar="+E164", help="Send from this Twilio phone number.")
@click.option("--messaging-service", default=None, metavar="MG…", help="Or send through this messaging service.")
def twilio_connect(
    shop: str, account_sid: str, auth_token: str, from_number: str | None, messaging_service: str | None
) -> None:
    """Connect Twilio: check the credentials with Twilio, store them sealed, let SMS rules be switched on."""
    if (from_number is None) == (messaging_service is None):
        raise ConfigurationError("give exactly one of --from NUMBER and --messaging-service SID")
    creds = twilio_account.TwilioCredentials(
        account_sid=account_sid.strip(),
        auth_token=auth_token.strip(),
        sender=(from_number or messaging_service or "").strip(),
    )
    twilio_account.validate_credentials(creds)
    settings = common.settings(kafka=True, database=True)
    crypto.check_key(settings)
    common.run(twilio_account.verify_credentials(settings, creds))
    common.run(common.query(settings, lambda conn: twilio_account.save_credentials(conn, settings, shop, creds)))
    record = common.build(SmsConnection, shop_id=shop, sender_hint=mask(creds.sender), updated_at=common.now())
    common.run(shop_config.publish(settings, record))
    click.echo(f"shop {shop} is connected to Twilio account {account_sid}, sending as {record.sender_hint}")


@twilio.command("disconnect")
@common.shop_option
def twilio_disconnect(shop: str) -> None:
    """Disconnect Twilio: SMS rules stop firing and the stored credentials are deleted."""
    settings = common.settings(kafka=True, database=True)
    connected = common.run(shop_config.load(settings)).sms_connection(shop) is not None
    if connected:  # first stop new SMS actions, then forget the credentials
        common.run(shop_config.delete(settings, f"sms_connection:{shop}:{shop}"))
    deleted = common.run(common.query(settings, lambda conn: twilio_account.delete_credentials(conn, shop)))
    if not connected and not deleted:
        click.echo(f"shop {shop} is not connected to Twilio; nothing changed")
        return
    click.echo(f"shop {shop} is disconnected from Twilio; its credentials are deleted")


@twilio.command("status")
@common.shop_option
def twilio_status(shop: str) -> None:
    """Whether the shop is connected, its sender, and how many customers opted out of its SMS."""
    settings = common.settings(kafka=True, database=True)
    connection = common.run(shop_config.load(settings)).sms_connection(shop)
    opted_out = common.run(
        common.query(settings, lambda conn: conn.fetchval("SELECT count(*) FROM sms_opt_outs WHERE shop_id = $1", shop))
    )
    if connection is None:
        click.echo(f"shop {shop} is not connected to Twilio")
    else:
        since = common.when(connection.updated_at)
        click.echo(f"shop {shop} is connected to Twilio since {since}, sending as {connection.sender_hint}")
    click.echo(f"opted out: {opted_out} number{'s' if opted_out != 1 else ''}")


@click.command("secret-key")
def secret_key() -> None:
    """Print a new random key for STREAMAPP_SECRET_KEY (it seals provider credentials at rest)."""
    click.echo(crypto.generate_key())


def register(cli: click.Group) -> None:
    """Add the Twilio commands to the main ``streamapp`` group."""
    for command in (twilio, secret_key):
        cli.add_command(command)
