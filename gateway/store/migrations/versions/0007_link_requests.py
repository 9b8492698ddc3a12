"""lost-link requests: written the same way for every address, resolved by the email relay

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-09 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "link_requests",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("nonce", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True)),
        sa.Column("sent_at", sa.DateTime(timezone=True)),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text()),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_link_requests_due", "link_requests", ["state", "next_attempt_at"])
    op.create_index("ix_link_requests_address", "link_requests", ["address", "decided_at"])


def downgrade() -> None:
    op.drop_table("link_requests")
