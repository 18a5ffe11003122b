"""Dashboard alerts and the email (later SMS) delivery log, both unique on action_id.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE alerts (
            alert_id     bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            action_id    text        NOT NULL UNIQUE,
            shop_id      text        NOT NULL,
            customer_id  text        NOT NULL,
            rule_id      text        NOT NULL,
            text         text        NOT NULL,
            occurred_at  timestamptz NOT NULL,
            created_at   timestamptz NOT NULL DEFAULT now(),
            read_at      timestamptz NULL
        )
        """
    )
    op.execute("CREATE INDEX alerts_by_shop ON alerts (shop_id, created_at)")
    # One row per action sent through a provider: the row lock serialises duplicate deliveries,
    # and its status is what makes a redelivery a no-op. No CHECK on channel: 'sms' comes next.
    op.execute(
        """
        CREATE TABLE deliveries (
            action_id           text        PRIMARY KEY,
            channel             text        NOT NULL,
            shop_id             text        NOT NULL,
            customer_id         text        NOT NULL,
            recipient           text        NOT NULL,
            status              text        NOT NULL DEFAULT 'pending'
                                            CHECK (status IN ('pending', 'sent', 'failed')),
            attempts            integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
            last_error          text        NULL,
            provider_message_id text        NULL,
            created_at          timestamptz NOT NULL DEFAULT now(),
            updated_at          timestamptz NOT NULL DEFAULT now()
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE deliveries")
    op.execute("DROP TABLE alerts")
