"""Append-only credit ledger, unique on action_id.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE ledger_entries (
            entry_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            action_id    text        NOT NULL UNIQUE,
            shop_id      text        NOT NULL,
            customer_id  text        NOT NULL,
            amount_cents bigint      NOT NULL,
            currency     char(3)     NOT NULL DEFAULT 'USD',
            reason       text        NOT NULL,
            created_at   timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute("CREATE INDEX ledger_entries_by_customer ON ledger_entries (shop_id, customer_id)")
    # The ledger is evidence: corrections are new entries, never edits.
    op.execute(
        """
        CREATE FUNCTION ledger_entries_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'ledger_entries is append-only (% refused)', TG_OP;
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER ledger_entries_append_only BEFORE UPDATE OR DELETE ON ledger_entries "
        "FOR EACH ROW EXECUTE FUNCTION ledger_entries_append_only()"
    )


def downgrade() -> None:
    op.execute("DROP TABLE ledger_entries")
    op.execute("DROP FUNCTION ledger_entries_append_only()")
