"""the buyer's language (their emails, the payment page), the model they chose, and when
the stored images were deleted

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("language", sa.String(length=8), nullable=False, server_default="en")
        )
        batch_op.add_column(
            sa.Column(
                "model", sa.String(length=64), nullable=False, server_default="RealESRGAN_x4plus"
            )
        )
        batch_op.add_column(sa.Column("source_deleted_at", sa.DateTime(timezone=True)))
        batch_op.add_column(sa.Column("result_deleted_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("result_deleted_at")
        batch_op.drop_column("source_deleted_at")
        batch_op.drop_column("model")
        batch_op.drop_column("language")
