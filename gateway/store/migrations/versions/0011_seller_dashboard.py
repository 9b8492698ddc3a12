"""seller dashboard: accounts, sessions, sign-in failures, reconciliation checks; the
indexes its searches and sums need

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-08 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "seller_accounts",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("password_is_temporary", sa.Boolean(), nullable=False),
        sa.Column("created_at", WHEN, nullable=False),
        sa.Column("password_changed_at", WHEN, nullable=False),
        sa.Column("last_sign_in_at", WHEN, nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("email"),
    )
    op.create_table(
        "seller_sessions",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("account_id", ID, nullable=False),
        sa.Column("created_at", WHEN, nullable=False),
        sa.Column("last_seen_at", WHEN, nullable=False),
        sa.Column("expires_at", WHEN, nullable=False),
        sa.Column("ended_at", WHEN, nullable=True),
        sa.Column("address", sa.String(length=64), nullable=False),
        sa.Column("user_agent", sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["seller_accounts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_seller_sessions_account_id", "seller_sessions", ["account_id"])
    op.create_table(
        "sign_in_failures",
        sa.Column("key", sa.String(length=400), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("first_at", WHEN, nullable=False),
        sa.Column("locked_until", WHEN, nullable=True),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_table(
        "reconciliation_checks",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("checked_at", WHEN, nullable=False),
        sa.Column("checked_by", sa.String(length=255), nullable=False),
        sa.Column("report", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_reconciliation_checks_checked_at", "reconciliation_checks", ["checked_at"])
    op.create_index("ix_jobs_created_at", "jobs", ["created_at", "id"])
    op.create_index("ix_jobs_status_created_at", "jobs", ["status", "created_at", "id"])
    op.create_index("ix_jobs_customer_email_lower", "jobs", [sa.text("lower(customer_email)")])
    # On PostgreSQL the overview's sums are read from these three alone (index-only scans).
    op.create_index(
        "ix_jobs_paid_at",
        "jobs",
        ["paid_at"],
        postgresql_include=["currency", "model", "width", "height"],
    )
    op.create_index(
        "ix_jobs_finished_at", "jobs", ["finished_at"], postgresql_include=["status", "paid_at"]
    )
    op.create_index(
        "ix_payments_created_at",
        "payments",
        ["created_at"],
        postgresql_include=["currency", "amount_cents"],
    )
    op.create_index("ix_refunds_status_updated_at", "refunds", ["status", "updated_at"])
    op.create_index("ix_audit_to_status_at", "audit", ["to_status", "at"])


def downgrade() -> None:
    op.drop_index("ix_audit_to_status_at", table_name="audit")
    op.drop_index("ix_refunds_status_updated_at", table_name="refunds")
    op.drop_index("ix_payments_created_at", table_name="payments")
    op.drop_index("ix_jobs_finished_at", table_name="jobs")
    op.drop_index("ix_jobs_paid_at", table_name="jobs")
    op.drop_index("ix_jobs_customer_email_lower", table_name="jobs")
    op.drop_index("ix_jobs_status_created_at", table_name="jobs")
    op.drop_index("ix_jobs_created_at", table_name="jobs")
    op.drop_index("ix_reconciliation_checks_checked_at", table_name="reconciliation_checks")
    op.drop_table("reconciliation_checks")
    op.drop_table("sign_in_failures")
    op.drop_index("ix_seller_sessions_account_id", table_name="seller_sessions")
    op.drop_table("seller_sessions")
    op.drop_table("seller_accounts")
