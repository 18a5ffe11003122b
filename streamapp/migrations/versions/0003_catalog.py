"""The print-shop catalog: admin notifications and toasts, SMS credentials and opt-outs.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A lead has no customer yet: catalog actions may carry none.
    op.execute("ALTER TABLE alerts ALTER COLUMN customer_id DROP NOT NULL")
    op.execute("ALTER TABLE deliveries ALTER COLUMN customer_id DROP NOT NULL")
    # An SMS to a number that opted out (Twilio 21610) is neither sent nor failed.
    op.execute("ALTER TABLE deliveries DROP CONSTRAINT deliveries_status_check")
    op.execute(
        "ALTER TABLE deliveries ADD CONSTRAINT deliveries_status_check "
        "CHECK (status IN ('pending', 'sent', 'failed', 'opted_out'))"
    )
    # One row per (action, admin); admin_id NULL: addressed to the whole shop (toasts, and
    # notifications of a shop without admins). NULLS NOT DISTINCT keeps that one row too.
    op.execute(
        """
        CREATE TABLE notifications (
            notification_id bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            action_id       text        NOT NULL,
            shop_id         text        NOT NULL,
            admin_id        text        NULL,
            kind            text        NOT NULL CHECK (kind IN ('notification', 'toast')),
            rule_key        text        NOT NULL,
            title           text        NOT NULL,
            text            text        NOT NULL,
            occurred_at     timestamptz NOT NULL,
            created_at      timestamptz NOT NULL DEFAULT now(),
            expires_at      timestamptz NULL,
            read_at         timestamptz NULL,
            CONSTRAINT notifications_once UNIQUE NULLS NOT DISTINCT (action_id, admin_id)
        )
        """
    )
    op.execute("CREATE INDEX notifications_by_admin ON notifications (shop_id, admin_id, created_at)")
    # A shop's Twilio connection: account SID, auth token and sender, sealed with
    # STREAMAPP_SECRET_KEY (never stored or logged in the clear).
    op.execute(
        """
        CREATE TABLE sms_credentials (
            shop_id     text        PRIMARY KEY,
            sealed      bytea       NOT NULL,
            updated_at  timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute(
        """
        CREATE TABLE sms_opt_outs (
            shop_id     text        NOT NULL,
            phone       text        NOT NULL,
            action_id   text        NOT NULL,
            error       text        NOT NULL,
            recorded_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (shop_id, phone)
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE sms_opt_outs")
    op.execute("DROP TABLE sms_credentials")
    op.execute("DROP TABLE notifications")
    op.execute("DELETE FROM deliveries WHERE status = 'opted_out'")
    op.execute("ALTER TABLE deliveries DROP CONSTRAINT deliveries_status_check")
    op.execute(
        "ALTER TABLE deliveries ADD CONSTRAINT deliveries_status_check CHECK (status IN ('pending', 'sent', 'failed'))"
    )
