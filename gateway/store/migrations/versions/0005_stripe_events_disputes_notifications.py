"""every received Stripe event with its payload and outcome; charges, tax and discounts of
payments; disputes; notifications to the seller

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27 13:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("webhook_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("payload", sa.Text()))
        batch_op.add_column(
            sa.Column("outcome", sa.String(length=32), nullable=False, server_default="applied")
        )
        batch_op.add_column(sa.Column("detail", sa.Text()))
        batch_op.add_column(
            sa.Column("deliveries", sa.Integer(), nullable=False, server_default="1")
        )
        batch_op.add_column(sa.Column("last_received_at", sa.DateTime(timezone=True)))
        batch_op.create_index("ix_webhook_events_job_id", ["job_id"])
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("stripe_charge_id", sa.String(length=255)))
        batch_op.add_column(
            sa.Column("tax_cents", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("discount_cents", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.create_index("ix_payments_stripe_charge_id", ["stripe_charge_id"])
    op.create_table(
        "disputes",
        sa.Column("id", sa.String(length=255), primary_key=True),
        sa.Column("job_id", sa.String(length=64), sa.ForeignKey("jobs.id"), nullable=False),
        sa.Column("stripe_charge_id", sa.String(length=255)),
        sa.Column("amount_cents", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("job_status_before", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_disputes_job_id", "disputes", ["job_id"])
    op.create_table(
        "notifications",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(length=255), nullable=False, unique=True),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("job_id", sa.String(length=64)),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True)),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True)),
        sa.Column("last_error", sa.Text()),
    )
    op.create_index("ix_notifications_due", "notifications", ["sent_at", "next_attempt_at"])
    op.create_index("ix_notifications_job_id", "notifications", ["job_id"])


def downgrade() -> None:
    op.drop_table("notifications")
    op.drop_table("disputes")
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.drop_index("ix_payments_stripe_charge_id")
        batch_op.drop_column("discount_cents")
        batch_op.drop_column("tax_cents")
        batch_op.drop_column("stripe_charge_id")
    with op.batch_alter_table("webhook_events", schema=None) as batch_op:
        batch_op.drop_index("ix_webhook_events_job_id")
        batch_op.drop_column("last_received_at")
        batch_op.drop_column("deliveries")
        batch_op.drop_column("detail")
        batch_op.drop_column("outcome")
        batch_op.drop_column("payload")
