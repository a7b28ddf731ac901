"""Migration 0002: the `key_usage` table (per key and UTC day: answers, tokens, estimated cost)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "key_usage",
        sa.Column("key_id", sa.String(16), primary_key=True),
        sa.Column("day", sa.Date(), primary_key=True),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger(), nullable=False),
        sa.Column("completion_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=False),
        sa.Column("reference_cost_usd", sa.Float(), nullable=False),
    )
    # An admin's report reads every key's days in a range.
    op.create_index("ix_key_usage_day", "key_usage", ["day"])


def downgrade() -> None:
    op.drop_index("ix_key_usage_day", table_name="key_usage")
    op.drop_table("key_usage")
