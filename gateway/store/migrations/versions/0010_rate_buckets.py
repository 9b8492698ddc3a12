"""rate_buckets: the rate limits' token buckets, shared by every gateway on PostgreSQL

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 15:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rate_buckets",
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("tokens", sa.Float(), nullable=False),
        sa.Column("stamp", sa.Float(), nullable=False),
        sa.Column("full_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_index("ix_rate_buckets_full_at", "rate_buckets", ["full_at"])


def downgrade() -> None:
    op.drop_index("ix_rate_buckets_full_at", table_name="rate_buckets")
    op.drop_table("rate_buckets")
