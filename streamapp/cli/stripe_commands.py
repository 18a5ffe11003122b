"""Connecting a shop's Stripe account: ``streamapp stripe connect|disconnect|status``.

The secret key goes to PostgreSQL, sealed with ``STREAMAPP_SECRET_KEY``
(:mod:`streamapp.connections.stripe_account`); only the fact that the shop is connected, with a
display hint of the account, goes to the ``shop-config`` topic, which is what lets the
payment-link rule fire. The key is read from ``STRIPE_SECRET_KEY`` or a hidden prompt, so it
never shows in the process list or the shell history, and it is never printed.
"""

from __future__ import annotations

import click

from schemas.config import StripeConnection
from streamapp import shop_config
from streamapp.cli import common
from streamapp.connections import crypto, stripe_account


@click.group("stripe")
def stripe() -> None:
    """The shop's Stripe account, which payment links are created in."""
    common.quiet_libraries()


@stripe.command("connect")
@common.shop_option
@click.option(
    "--secret-key",
    envvar="STRIPE_SECRET_KEY",
    prompt="Stripe secret key",
    hide_input=True,
    show_envvar=True,
    help="sk_… or a restricted rk_… key; prefer the environment variable or the prompt (not shown, not in history).",
)
def stripe_connect(shop: str, secret_key: str) -> None:
    """Connect Stripe: check the key with Stripe, store it sealed, let payment links be created."""
    creds = stripe_account.StripeCredentials(secret_key.strip())
    stripe_account.validate_credentials(creds)
    settings = common.settings(kafka=True, database=True)
    crypto.check_key(settings)
    account = common.run(stripe_account.verify_credentials(settings, creds))
    common.run(common.query(settings, lambda conn: stripe_account.save_credentials(conn, settings, shop, creds)))
    record = common.build(StripeConnection, shop_id=shop, account_hint=account.hint, updated_at=common.now())
    common.run(shop_config.publish(settings, record))
    click.echo(f"shop {shop} is connected to Stripe account {record.account_hint}")


@stripe.command("disconnect")
@common.shop_option
def stripe_disconnect(shop: str) -> None:
    """Disconnect Stripe: payment links stop, and the stored key is deleted."""
    settings = common.settings(kafka=True, database=True)
    connected = common.run(shop_config.load(settings)).stripe_connection(shop) is not None
    if connected:  # first stop new payment-link actions, then forget the key
        common.run(shop_config.delete(settings, f"stripe_connection:{shop}:{shop}"))
    deleted = common.run(common.query(settings, lambda conn: stripe_account.delete_credentials(conn, shop)))
    if not connected and not deleted:
        click.echo(f"shop {shop} is not connected to Stripe; nothing changed")
        return
    click.echo(f"shop {shop} is disconnected from Stripe; its key is deleted")


_PAYMENT_LINKS = """
SELECT status, count(*) AS n FROM deliveries WHERE shop_id = $1 AND channel = 'payment_link'
GROUP BY status ORDER BY status
"""


@stripe.command("status")
@common.shop_option
def stripe_status(shop: str) -> None:
    """Whether the shop is connected, to which account, and how its payment links went."""
    settings = common.settings(kafka=True, database=True)
    connection = common.run(shop_config.load(settings)).stripe_connection(shop)
    counts = common.run(common.query(settings, lambda conn: conn.fetch(_PAYMENT_LINKS, shop)))
    if connection is None:
        click.echo(f"shop {shop} is not connected to Stripe")
    else:
        since = common.when(connection.updated_at)
        click.echo(f"shop {shop} is connected to Stripe since {since}: account {connection.account_hint}")
    links = ", ".join(f"{row['n']} {row['status']}" for row in counts) or "none yet"
    click.echo(f"payment links: {links}")


def register(cli: click.Group) -> None:
    """Add the Stripe commands to the main ``streamapp`` group."""
    cli.add_command(stripe)
