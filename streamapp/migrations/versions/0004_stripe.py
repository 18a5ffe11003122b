"""Stripe payment links: a shop's sealed Stripe key, and the Checkout Session a delivery created.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A shop's Stripe secret (or restricted) key, sealed with STREAMAPP_SECRET_KEY
    # (never stored or logged in the clear), like sms_credentials.
    op.execute(
        """
        CREATE TABLE stripe_credentials (
            shop_id     text        PRIMARY KEY,
            sealed      bytea       NOT NULL,
            updated_at  timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    # A payment-link delivery has two provider legs: the Checkout Session (Stripe) and the
    # email (SMTP). provider_message_id keeps the SMTP reply, as for every email; the session
    # is kept apart, so that a redelivery after a failed email reuses it instead of asking
    # Stripe again (Stripe forgets an idempotency key after 24 hours).
    op.execute("ALTER TABLE deliveries ADD COLUMN provider_ref text NULL")
    op.execute("ALTER TABLE deliveries ADD COLUMN provider_url text NULL")
    op.execute("COMMENT ON COLUMN deliveries.provider_ref IS 'payment_link: the Stripe Checkout Session id'")
    op.execute("COMMENT ON COLUMN deliveries.provider_url IS 'payment_link: the Checkout Session URL that was emailed'")


def downgrade() -> None:
    op.execute("ALTER TABLE deliveries DROP COLUMN provider_url")
    op.execute("ALTER TABLE deliveries DROP COLUMN provider_ref")
    op.execute("DROP TABLE stripe_credentials")
